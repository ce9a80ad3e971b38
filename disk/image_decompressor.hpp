#pragma once
// First stage of a build: the base image as downloaded (.img, .img.xz, .img.zst, .img.gz, .img.bz2,
// .zip) becomes a raw image file we can partition and write into. The output is sparse: every
// all-zero 4 KiB block is left as a hole, so a 2.6 GiB Raspberry Pi OS image takes the disk space of
// its data only, and the bmap made later from it maps only data.
//
// The bytes come from an ImageStream (image_stream.hpp): the same format detection and decoders as
// the flasher's, pulled into this writer's buffers.
#include <cstdint>
#include <filesystem>
#include <string>

#include "disk/image_stream.hpp"

namespace aggrik8s {

struct DecompressedImage {
  ImageInputFormat format = ImageInputFormat::raw;
  std::uint64_t size = 0;           // bytes of the raw image
  std::uint64_t written_bytes = 0;  // bytes that were not zero, i.e. what the output occupies
};

class ImageDecompressor {
 public:
  explicit ImageDecompressor(ImageStreamOptions options = {}) : options_(options) {}

  // Writes `<output>.partial` beside `output` and renames it to `output` only when the whole input
  // decoded cleanly, so `output` is never a half image. On failure the partial file is removed and
  // the error's type says which file was at fault: ImageInputError for the input (truncated,
  // corrupt, with the decoder's own words), ImageOutputError for the output (e.g. "No space left on
  // device"); both name the file.
  // A zip must hold exactly one .img entry.
  DecompressedImage decompress(const std::filesystem::path& input, const std::filesystem::path& output) const;

 private:
  ImageStreamOptions options_;
};

}  // namespace aggrik8s
