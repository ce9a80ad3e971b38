#pragma once
// What the file-to-file decompressor (image_decompressor) and the streaming reader used by flash
// (image_stream) say when an input cannot be decoded: one wording, so a corrupt .xz reads the same
// whether it is being built from or flashed.
#include <lzma.h>

#include <string>
#include <string_view>

#include "core/error.hpp"

struct archive;

namespace aggrik8s {

// "cannot decompress INPUT (FORMAT): WHAT"
Error decompression_error(const std::string& input, const char* format, const std::string& what);
// liblzma's return codes in words, with the code itself for searching.
const char* lzma_error_text(lzma_ret ret);
// libarchive's last error on `a`, prefixed "libarchive: ".
std::string libarchive_error_text(archive* a);
// ASCII case-insensitive suffix test (".IMG" inside a zip counts as an image).
bool ends_with_ignoring_case(std::string_view text, std::string_view suffix);

}  // namespace aggrik8s
