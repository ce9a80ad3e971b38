#include "builder/rpi/rke2_release.hpp"

#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace aggrik8s::builder {

std::vector<ChecksumEntry> parse_sha256sums(const std::string& text, const std::string& name) {
  std::vector<ChecksumEntry> entries;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.front() == '#') continue;
    auto digest = line.size() > 66 ? Sha256Digest::parse(line.substr(0, 64)) : std::nullopt;
    if (!digest || line[64] != ' ' || (line[65] != ' ' && line[65] != '*')) {
      throw Error(name + ":" + std::to_string(number) + ": expected '<64 hex digits>  <file name>', got '" +
                  line.substr(0, 80) + "'");
    }
    entries.push_back({line.substr(66), *digest});
  }
  return entries;
}

std::string rke2_release_file_url(const Rke2Settings& settings, const std::string& file_name) {
  std::string base = settings.release;
  if (!base.empty() && base.back() != '/') base += '/';
  return base + file_name;
}

Rke2Release fetch_rke2_release(const Rke2Settings& settings, const std::string& architecture, ArtifactFetcher& fetcher) {
  Rke2Release release;
  release.version = settings.version;
  release.architecture = architecture;
  const std::string sums_name = "sha256sum-" + architecture + ".txt";
  release.checksums = fetcher.fetch({rke2_release_file_url(settings, sums_name), settings.checksums_sha256, settings.where});

  std::ifstream in(release.checksums.path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  auto entries = parse_sha256sums(text.str(), sums_name);
  auto source_for = [&](const std::string& file_name) {
    for (const auto& e : entries) {
      if (e.file_name == file_name) return ArtifactSource{rke2_release_file_url(settings, file_name), e.sha256, settings.where};
    }
    throw Error(settings.where.str() + ": RKE2 " + settings.version + " (" + redact_url_credentials(settings.release) + "): " + sums_name +
                " does not list " + file_name + "; is '" + architecture + "' built for this release, and is the "
                "image archive name right?");
  };
  std::vector<ArtifactSource> sources{source_for("rke2.linux-" + architecture + ".tar.gz")};
  for (const auto& image : settings.images) sources.push_back(source_for(image + ".linux-" + architecture + ".tar.zst"));
  auto fetched = fetcher.fetch_all(sources);
  release.bundle = fetched.front();
  release.images.assign(fetched.begin() + 1, fetched.end());
  return release;
}

}  // namespace aggrik8s::builder
