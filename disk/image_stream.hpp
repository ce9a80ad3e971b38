#pragma once
// The one image decoding core: a disk image read front to back as raw bytes, whatever it is stored
// as (.img, .img.xz, .img.zst, .img.gz, .img.bz2, a .zip holding one .img). The flasher pulls bytes
// from it in order and never needs the whole raw image on disk; ImageDecompressor pulls from it too,
// into a sparse file for the builder to edit in place.
//
// The format is recognised by its content (image_input_format_of), never by the name alone.
//
// Decoders: xz with liblzma's multithreaded decoder (parallel for files written in several blocks, as
// `xz -T0` and our ImageCompressor write them; single-block files decode in one thread either way);
// zstd with libzstd's streaming decoder (zstd decoding is single-threaded and fast anyway); gzip and
// bzip2 with libarchive's raw-format filters; zip with libarchive's zip reader.
//
// Failures to read or decode the image are ImageInputError (image_decoder_errors.hpp).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "disk/bmap.hpp"
#include "disk/image_input_format.hpp"

namespace aggrik8s {

class ImageStream {
 public:
  virtual ~ImageStream() = default;
  ImageStream() = default;
  ImageStream(const ImageStream&) = delete;
  ImageStream& operator=(const ImageStream&) = delete;

  // Fills as much of `buffer` as the image has left; returns 0 only at the end of the image.
  // Throws ImageInputError naming the source when it is corrupt or truncated (with the decoder's own
  // words).
  virtual std::size_t read(std::span<std::uint8_t> buffer) = 0;
  // Moves `count` bytes forward without returning them: a seek for raw images, decode-and-discard
  // for compressed ones. Throws ImageInputError if the image ends first.
  virtual void skip(std::uint64_t count);
  // Bytes of raw image consumed so far (read or skipped).
  std::uint64_t position() const { return position_; }

  // The raw image's size when it is known before reading it all (raw files only).
  virtual std::optional<std::uint64_t> known_size() const { return std::nullopt; }
  // Where a raw, sparse file holds data (SEEK_DATA); nullopt when the stream cannot tell, which is
  // the case for every compressed format (the whole image must be decoded and looked at).
  virtual std::optional<std::vector<DataExtent>> data_extents() { return std::nullopt; }
  // Bytes of the stored (compressed) file read so far and its size: the honest progress measure
  // while decoding an image whose raw size is not known yet.
  virtual std::uint64_t input_position() const = 0;
  virtual std::uint64_t input_size() const = 0;

  virtual ImageInputFormat format() const = 0;
  virtual const std::string& name() const = 0;

 protected:
  std::uint64_t position_ = 0;
};

// Reads the first bytes of `input`. Throws ImageInputError when the name promises a compression format
// (.xz, .zst, .gz, .bz2, .zip) the content does not have, or the file cannot be read.
ImageInputFormat detect_image_input_format(const std::filesystem::path& input);

struct ImageStreamOptions {
  unsigned threads = 0;  // for xz; 0: one per core
};

// Opens `path` and picks the decoder by its content. Throws ImageInputError naming the file.
std::unique_ptr<ImageStream> open_image_stream(const std::filesystem::path& path,
                                               const ImageStreamOptions& options = {});

// Reads until `buffer` is full or the image ends; returns the bytes read.
std::size_t read_fully(ImageStream& stream, std::span<std::uint8_t> buffer);

}  // namespace aggrik8s
