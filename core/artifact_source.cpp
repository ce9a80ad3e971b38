#include "core/artifact_source.hpp"

#include <algorithm>
#include <cctype>

namespace aggrik8s {

bool ArtifactSource::is_download() const {
  return location.starts_with("http://") || location.starts_with("https://");
}

std::string ArtifactSource::file_name() const {
  // From the shown location: a URL with no path ("http://user:pw@host?file=x") ends in its authority,
  // which must not show its password (progress lines, messages).
  std::string s = shown();
  if (auto q = s.find_first_of("?#"); q != std::string::npos && s.find("://") != std::string::npos) s.resize(q);
  while (!s.empty() && s.back() == '/') s.pop_back();
  auto slash = s.rfind('/');
  return slash == std::string::npos ? s : s.substr(slash + 1);
}

bool is_supported_location(const std::string& location, std::string* why) {
  auto scheme_end = location.find("://");
  if (scheme_end == std::string::npos) return true;  // a path
  std::string scheme = location.substr(0, scheme_end);
  if (scheme == "http" || scheme == "https" || scheme == "file") return true;
  if (why != nullptr) *why = "unsupported URL scheme '" + scheme + "' (expected http, https, file or a path)";
  return false;
}

std::optional<ArtifactSource> read_artifact_source(ConfigMapReader& parent, std::string_view key, bool required,
                                                   ChecksumPolicy policy) {
  auto reader = parent.map(key, required);
  if (!reader) return std::nullopt;
  auto url = reader->string("url");
  auto path = reader->path_value("path");
  auto sha = reader->string("sha256");
  std::optional<ArtifactSource> result;
  if (url.has_value() == path.has_value()) {
    reader->error("'" + reader->path() + "' must have exactly one of 'url' or 'path'");
  } else if (url) {
    // Schemes are case-insensitive (RFC 3986 3.1): HTTP://host/x is http://host/x, as curl takes it.
    if (auto end = url->find("://"); end != std::string::npos) {
      for (std::size_t i = 0; i < end; ++i) (*url)[i] = static_cast<char>(std::tolower(static_cast<unsigned char>((*url)[i])));
    }
    std::string why;
    const bool blank = std::any_of(url->begin(), url->end(), [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; });
    if (blank) {
      reader->error_at("url", "'" + reader->key_path("url") + "' holds a space or control character: write it "
                              "percent-encoded (%20 for a space), as a URL has none");
    } else if (!is_supported_location(*url, &why)) {
      reader->error_at("url", "'" + reader->key_path("url") + "': " + why);
    } else if (url->find("://") == std::string::npos) {
      reader->error_at("url", "'" + reader->key_path("url") + "' must be a URL (http://, https:// or file://); use 'path' for local files");
    } else {
      result = ArtifactSource{*url, std::nullopt, reader->location()};
    }
  } else {
    result = ArtifactSource{path->string(), std::nullopt, reader->location()};
  }
  if (sha) {
    auto digest = Sha256Digest::parse(*sha);
    if (!digest) {
      reader->error_at("sha256", "'" + reader->key_path("sha256") + "' must be 64 hexadecimal characters, got '" + *sha + "'");
      result.reset();
    } else if (result) {
      result->sha256 = digest;
    }
  } else if (result && policy == ChecksumPolicy::required && result->is_download()) {
    reader->error("'" + reader->path() + "' downloads from a URL and needs a 'sha256' to pin it");
    result.reset();
  }
  reader->finish();
  return result;
}

std::string redact_url_credentials(std::string_view url) {
  std::size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  std::size_t authority = scheme + 3;
  std::size_t end = url.find_first_of("/?#", authority);
  std::string_view host_part = url.substr(authority, end == std::string_view::npos ? std::string_view::npos : end - authority);
  std::size_t at = host_part.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  std::string_view userinfo = host_part.substr(0, at);
  // "user:password" keeps the user; a lone userinfo is as often a token ("https://TOKEN@host/") as a name.
  std::size_t colon = userinfo.find(':');
  std::string shown_user = colon == std::string_view::npos ? "***" : std::string(userinfo.substr(0, colon)) + ":***";
  return std::string(url.substr(0, authority)) + shown_user + std::string(url.substr(authority + at));
}

std::string ArtifactSource::shown() const { return redact_url_credentials(location); }

}  // namespace aggrik8s
