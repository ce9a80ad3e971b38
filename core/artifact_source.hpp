#pragma once
// Where an input comes from: a URL (http, https, file) or a local path, and the sha256 it must have.
#include <optional>
#include <string>

#include "core/config_reader.hpp"
#include "core/sha256.hpp"

namespace aggrik8s {

struct ArtifactSource {
  std::string location;  // URL, or an absolute path
  std::optional<Sha256Digest> sha256;
  SourceLocation where;  // where the profile declared it, for error messages

  bool is_download() const;  // http:// or https://
  // The location as messages, logs and manifests show it: a URL's password replaced by "***".
  std::string shown() const;
  // The file name the URL or path ends in, e.g. "raspios-lite-arm64.img.xz".
  std::string file_name() const;
};

enum class ChecksumPolicy { required, optional };

// Reads `key: {url: URL, sha256: HEX}` or `key: {path: PATH, sha256: HEX}`. URLs need a sha256 when
// the policy says so (inputs must be pinned; a mirror serving other bytes is caught).
std::optional<ArtifactSource> read_artifact_source(ConfigMapReader& parent, std::string_view key, bool required,
                                                   ChecksumPolicy policy);
// What may be printed or recorded of a URL: "https://user:pass@host/x" -> "https://user:***@host/x",
// "https://TOKEN@host/x" -> "https://***@host/x" (a download's credentials are secrets: never in a
// log, an error or manifest.json). Anything else is returned as it is.
std::string redact_url_credentials(std::string_view url);
// Classifies a location; nullopt with a message for unsupported schemes.
bool is_supported_location(const std::string& location, std::string* why);

}  // namespace aggrik8s
