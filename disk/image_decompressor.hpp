#pragma once
// First stage of a build: the base image as downloaded (.img, .img.xz, .img.zst, .img.gz, .img.bz2,
// .zip) becomes a raw image file we can partition and write into. The output is sparse: every
// all-zero 4 KiB block is left as a hole, so a 2.6 GiB Raspberry Pi OS image takes the disk space of
// its data only, and the bmap made later from it maps only data.
//
// The format is recognised by its first bytes; the file name only sharpens the error message when a
// ".xz" turns out not to be xz (a saved HTML error page is the usual culprit).
//
// Decoders: xz with liblzma's multithreaded decoder (parallel for files written in several blocks, as
// `xz -T0` and our ImageCompressor write them; single-block files decode in one thread either way);
// zstd with libzstd's streaming decoder (zstd decoding is single-threaded and fast anyway); gzip and
// bzip2 with libarchive's raw-format filters; zip with libarchive's zip reader.
#include <cstdint>
#include <filesystem>
#include <string>

namespace aggrik8s {

enum class ImageInputFormat { raw, xz, zstd, gzip, bzip2, zip };
const char* to_string(ImageInputFormat format);

// Reads the first bytes of `input`. Throws Error when the name promises a compression format (.xz,
// .zst, .gz, .bz2, .zip) the content does not have, or the file cannot be read.
ImageInputFormat detect_image_input_format(const std::filesystem::path& input);

struct ImageDecompressionOptions {
  unsigned threads = 0;  // for xz; 0: one per core
};

struct DecompressedImage {
  ImageInputFormat format = ImageInputFormat::raw;
  std::uint64_t size = 0;           // bytes of the raw image
  std::uint64_t written_bytes = 0;  // bytes that were not zero, i.e. what the output occupies
};

class ImageDecompressor {
 public:
  explicit ImageDecompressor(ImageDecompressionOptions options = {}) : options_(options) {}

  // Writes `<output>.partial` beside `output` and renames it to `output` only when the whole input
  // decoded cleanly, so `output` is never a half image. On failure the partial file is removed and
  // Error says which file was at fault: the input (truncated, corrupt, with the decoder's own words)
  // or the output (e.g. "No space left on device").
  // A zip must hold exactly one .img entry.
  DecompressedImage decompress(const std::filesystem::path& input, const std::filesystem::path& output) const;

 private:
  ImageDecompressionOptions options_;
};

}  // namespace aggrik8s
