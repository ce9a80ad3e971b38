#pragma once
// `aggrik8s-image build` for kind rpi5-rke2: one profile + N nodes -> N flashable images.
//
// The order of work, and why:
//   1. fetch the base image and the RKE2 release (cache, checksums),
//   2. decompress the base once into a sparse work image,
//   3. grow the image, the root partition and its ext4 filesystem so the preload fits,
//   4. write the preload every node shares (RKE2 bundle under /usr/local, image archives) — the
//      expensive part, done once,
//   5. per node: copy the prepared image (reflink or sparse copy), then write only what differs
//      (config.yaml with the token, hostname and users via first boot, cmdline.txt, config.txt,
//      overlays), read the first-boot files back and check them,
//   6. per node: bmap, compressed copies, sha256; then SHA256SUMS and manifest.json.
// Every output is written under a ".partial" name and renamed when complete; a failed build removes
// what it wrote, so nothing that looks valid is left behind.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "core/artifact_fetcher.hpp"

namespace aggrik8s::builder {

struct BuildOptions {
  std::filesystem::path output_dir;
  std::vector<std::string> only_nodes;          // empty: all
  std::optional<std::int64_t> source_date_epoch;  // pins every timestamp written
  // Each Pi image is fdatasync'ed before it is renamed into place, so a crash or power cut never leaves
  // a complete-looking image with missing blocks. false (--no-sync) leaves the writeback to the kernel:
  // the build then ends when the images are in the page cache, which on a slow disk is most of the
  // time for several nodes (the disk must still write them; a crash soon after may leave an image
  // that fails `sha256sum -c SHA256SUMS`).
  bool sync_images = true;
  FetchOptions fetch;
};

struct BuiltFile {
  std::filesystem::path path;
  std::uint64_t size = 0;
  Sha256Digest sha256;
};

struct BuiltNode {
  std::string name;
  BuiltFile image;
  std::optional<BuiltFile> bmap;
  std::vector<BuiltFile> compressed;
  std::string first_boot_format;
};

struct BuildResult {
  std::vector<BuiltNode> nodes;
  std::filesystem::path manifest;
  std::filesystem::path checksums;
};

BuildResult build_rpi5_images(const Profile& profile, const BuildOptions& options);

// SOURCE_DATE_EPOCH from the environment; Error if set but not a number.
std::optional<std::int64_t> source_date_epoch_from_environment();

}  // namespace aggrik8s::builder
