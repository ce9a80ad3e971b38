#pragma once
// Last stage of a build: the finished raw image becomes the file users download and flash
// (`pi5.img.zst` or `pi5.img.xz`), compressed on every core.
//
// Reproducible: the same image and options give byte-identical output whatever the thread count.
//  - zstd: multithreaded mode (nbWorkers >= 1) cuts the input into jobs whose size depends on the
//    level and window, not on the number of workers, so any nbWorkers >= 1 gives the same bytes. (It
//    differs from single-threaded nbWorkers = 0 output; we never use that mode.) The frame records the
//    image size and an xxhash64 content checksum.
//  - xz: the multithreaded encoder cuts the input into blocks of a fixed size (by default 3x the
//    dictionary, 24 MiB at preset 6) and compresses each independently; the block size, not the thread
//    count, shapes the output. Every block header records its sizes, which is what lets liblzma (our
//    ImageDecompressor, `xz -T0`) decode the blocks in parallel.
// Both are verified by tests (threads 1 vs 2 vs 4).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "core/sha256.hpp"

namespace aggrik8s {

enum class ImageCompressionFormat { zstd, xz };
// ".zst" or ".xz", as appended to "pi5.img".
const char* file_extension(ImageCompressionFormat format);

struct ImageCompressionOptions {
  ImageCompressionFormat format = ImageCompressionFormat::zstd;
  // zstd 1..19 (default 3, as `zstd` itself); xz 0..9 (default 6, as `xz`). Out of range: Error.
  std::optional<int> level;
  unsigned threads = 0;  // 0: one per core. Does not change the output.
  // xz only; 0: liblzma's default (3x the preset's dictionary, at least 1 MiB). Changes the output.
  std::uint64_t xz_block_size = 0;
  // The compressed copy of an image that holds secrets (a join token) must not be readable by others.
  unsigned file_permissions = 0644;
};

struct CompressedImage {
  std::uint64_t image_size = 0;
  std::uint64_t compressed_size = 0;
  Sha256Digest sha256;  // of the compressed file, computed while writing it
};

class ImageCompressor {
 public:
  explicit ImageCompressor(ImageCompressionOptions options = {});

  // Reads `image` (holes are fed to the encoder as zeros without reading them), writes
  // `<output>.partial` and renames it to `output` when complete. On failure the partial file is
  // removed and Error names the file at fault.
  CompressedImage compress(const std::filesystem::path& image, const std::filesystem::path& output) const;
  // Writes `file` itself, for a caller that owns the temporary name and renames it with the rest of
  // its outputs (a build publishes a node's files together). Progress and errors call it `shown_as`,
  // the name it will have: a user who runs out of space reads "cannot write pi5.img.zst", not the
  // temporary name. The caller removes `file` on failure.
  CompressedImage compress_unpublished(const std::filesystem::path& image, const std::filesystem::path& file,
                                       const std::filesystem::path& shown_as) const;

 private:
  ImageCompressionOptions options_;
};

}  // namespace aggrik8s
