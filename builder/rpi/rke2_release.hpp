#pragma once
// The RKE2 release files a node needs, resolved the way install.sh does it: the release's
// sha256sum-<arch>.txt lists every artifact's checksum, and each file fetched is verified against it.
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "core/artifact_fetcher.hpp"

namespace aggrik8s::builder {

struct ChecksumEntry {
  std::string file_name;
  Sha256Digest sha256;
};

// Parses sha256sum output ("<64 hex>  <name>" or "<64 hex> *<name>"). `name` is used in error messages
// ("sha256sum-arm64.txt:3: ...").
std::vector<ChecksumEntry> parse_sha256sums(const std::string& text, const std::string& name);

struct Rke2Release {
  std::string version;
  std::string architecture;            // arm64
  FetchedArtifact checksums;           // sha256sum-arm64.txt
  FetchedArtifact bundle;              // rke2.linux-arm64.tar.gz
  std::vector<FetchedArtifact> images; // rke2-images*.linux-arm64.tar.zst, in profile order
};

// The sources for one release, before fetching (for `fetch --dry-run` style listings and tests).
std::string rke2_release_file_url(const Rke2Settings& settings, const std::string& file_name);

// Fetches and verifies the whole release. Throws Error naming the missing or mismatching file.
Rke2Release fetch_rke2_release(const Rke2Settings& settings, const std::string& architecture, ArtifactFetcher& fetcher);

}  // namespace aggrik8s::builder
