#pragma once
// Edits to an image held in memory instead of written into a file: how a build customises N node
// images that differ from one prepared image by a few hundred KiB each. Every node's edits are made
// first, against the prepared image; their hashes (whole-image sha256, bmap) are then taken from the
// prepared image's cached pages plus the patch, on all cores at once, while the node images are being
// copied (or reflinked) and the patches written into them. Nothing is read back from a node image.
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "disk/block_device.hpp"
#include "disk/copied_ranges.hpp"
#include "disk/data_extent.hpp"

namespace aggrik8s {

// Bytes to be written over an image: disjoint runs, each at least one byte from the next (touching
// writes are joined). A later write wins where writes overlap.
class ImagePatch {
 public:
  void write(std::uint64_t offset, std::span<const std::uint8_t> data);
  // Copies the patch's bytes over `buffer`, which holds the image's bytes at `offset`.
  void apply(std::uint64_t offset, std::span<std::uint8_t> buffer) const;
  // The runs' byte ranges, sorted and merged.
  std::vector<DataExtent> extents() const;
  const std::map<std::uint64_t, std::vector<std::uint8_t>>& runs() const { return runs_; }
  bool empty() const { return runs_.empty(); }

 private:
  std::map<std::uint64_t, std::vector<std::uint8_t>> runs_;  // offset -> bytes
};

// An image file seen through a patch: reads give the file's bytes with the patch over them, writes go
// into the patch and never reach the file (opened read-only).
class PatchedFileBlockDevice final : public BlockDevice {
 public:
  // `name` is what errors call the device (the node image the patch is for). With `copied`, base's
  // bytes in its ranges are read from the files they are a copy of (see CopiedFiles).
  PatchedFileBlockDevice(const std::filesystem::path& base, std::string name, const CopiedFiles* copied = nullptr);

  std::uint64_t size() const override { return base_.size(); }
  void read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) override;
  void write_at(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  std::string name() const override { return name_; }

  const ImagePatch& patch() const { return patch_; }
  ImagePatch take_patch() { return std::move(patch_); }

 private:
  FileBlockDevice base_;
  std::string name_;
  ImagePatch patch_;
  CopiedRangeReader reader_;  // base_'s bytes, its copied ranges from the files they are a copy of
};

// Writes the patch into `image` (a copy of the file the patch was made against) through a
// FileBlockDevice, so all-zero blocks over holes stay holes as they do when edits are written directly.
void write_image_patch(const ImagePatch& patch, const std::filesystem::path& image);

}  // namespace aggrik8s
