#pragma once
// What the image decoders (image_stream, and image_decompressor built on it) say when an image cannot
// be decoded or its decoded bytes cannot be stored: one wording, so a corrupt .xz reads the same
// whether it is being built from or flashed, and one pair of types, so a caller tells a bad input
// from an output it cannot write without reading the message.
#include <lzma.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "core/error.hpp"

struct archive;

namespace aggrik8s {

// A failure blamed on one file. The message is `before + file + after`, the file kept apart so that a
// caller who knows it by another name (the URL a cached download came from) can say that instead.
class ImageFileError : public Error {
 public:
  ImageFileError(const std::string& before, const std::filesystem::path& file, const std::string& after)
      : Error(before + file.string() + after), file_(file), before_(before), after_(after) {}
  const std::filesystem::path& file() const { return file_; }
  // The message with `name` in place of the file's path.
  std::string message_naming_file_as(const std::string& name) const { return before_ + name + after_; }

 private:
  std::filesystem::path file_;
  std::string before_;
  std::string after_;
};

// The image to decode cannot be read, or is not a complete image in its format: corrupt, truncated,
// empty, not what its name says, a zip without exactly one .img. Trying again will not help.
class ImageInputError final : public ImageFileError {
  using ImageFileError::ImageFileError;
};

// The decoded image cannot be stored where it was asked to go (no space, read-only, no such
// directory). The input may be fine: another destination may work.
class ImageOutputError final : public ImageFileError {
  using ImageFileError::ImageFileError;
};

// "<doing> <file><where>: <what errno says>", e.g. ("cannot read", input, EIO, " at offset 4096").
ImageInputError input_system_error(const std::string& doing, const std::filesystem::path& file, int err,
                                   const std::string& where = "");
ImageOutputError output_system_error(const std::string& doing, const std::filesystem::path& file, int err,
                                     const std::string& where = "");

// "cannot decompress INPUT (FORMAT): WHAT"
ImageInputError decompression_error(const std::filesystem::path& input, const char* format, const std::string& what);
// liblzma's return codes in words, with the code itself for searching.
const char* lzma_error_text(lzma_ret ret);
// libarchive's last error on `a`, prefixed "libarchive: ".
std::string libarchive_error_text(archive* a);
// ASCII case-insensitive suffix test (".IMG" inside a zip counts as an image).
bool ends_with_ignoring_case(std::string_view text, std::string_view suffix);

}  // namespace aggrik8s
