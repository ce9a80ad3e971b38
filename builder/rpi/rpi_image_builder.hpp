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

#include "builder/build_output.hpp"
#include "builder/profile.hpp"
#include "core/artifact_fetcher.hpp"

namespace aggrik8s::builder {

struct BuiltNode {
  std::string name;
  BuiltFile image;
  std::optional<BuiltFile> bmap;
  std::vector<BuiltFile> compressed;
  std::string first_boot_format;
  std::optional<BuiltFile> boot_image;      // output.http_boot: <node>.boot.img
  std::optional<BuiltFile> boot_signature;  // and its <node>.boot.sig
};

struct BuildResult {
  std::vector<BuiltNode> nodes;
  std::filesystem::path manifest;
  std::filesystem::path checksums;
  // output.ephemeral: the build's id and directory (OUT/ephemeral/<profile>/<id>)
  std::optional<std::string> ephemeral_build;
  std::filesystem::path ephemeral_directory;
};

BuildResult build_rpi5_images(const Profile& profile, const BuildOptions& options);

// SOURCE_DATE_EPOCH from the environment; Error if set but not a number.
std::optional<std::int64_t> source_date_epoch_from_environment();

}  // namespace aggrik8s::builder
