#include "disk/image_decoder_errors.hpp"

#include <archive.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "core/permission_detail.hpp"

namespace aggrik8s {

ImageInputError input_system_error(const std::string& doing, const std::filesystem::path& file, int err,
                                   const std::string& where) {
  return ImageInputError(doing + " ", file, where + ": " + std::strerror(err) + permission_denied_detail(file, err));
}

ImageOutputError output_system_error(const std::string& doing, const std::filesystem::path& file, int err,
                                     const std::string& where) {
  return ImageOutputError(doing + " ", file, where + ": " + std::strerror(err) + permission_denied_detail(file, err));
}

ImageInputError decompression_error(const std::filesystem::path& input, const char* format, const std::string& what) {
  return ImageInputError("cannot decompress ", input, std::string(" (") + format + "): " + what);
}

const char* lzma_error_text(lzma_ret ret) {
  switch (ret) {
    case LZMA_DATA_ERROR: return "the compressed data is corrupt (liblzma: LZMA_DATA_ERROR)";
    case LZMA_FORMAT_ERROR: return "not in the .xz format (liblzma: LZMA_FORMAT_ERROR)";
    case LZMA_BUF_ERROR: return "the file is truncated: it ends in the middle of the compressed data (liblzma: LZMA_BUF_ERROR)";
    case LZMA_OPTIONS_ERROR: return "uses options this liblzma does not support (liblzma: LZMA_OPTIONS_ERROR)";
    case LZMA_MEM_ERROR: return "out of memory (liblzma: LZMA_MEM_ERROR)";
    case LZMA_MEMLIMIT_ERROR: return "needs more memory than allowed (liblzma: LZMA_MEMLIMIT_ERROR)";
    case LZMA_UNSUPPORTED_CHECK: return "uses an unsupported integrity check (liblzma: LZMA_UNSUPPORTED_CHECK)";
    case LZMA_PROG_ERROR: return "liblzma reported a programming error (LZMA_PROG_ERROR)";
    default: return "liblzma failed";
  }
}

std::string libarchive_error_text(archive* a) {
  const char* text = archive_error_string(a);
  return std::string("libarchive: ") + (text != nullptr ? text : "unknown error");
}

bool ends_with_ignoring_case(std::string_view text, std::string_view suffix) {
  if (text.size() < suffix.size()) return false;
  return std::equal(suffix.begin(), suffix.end(), text.end() - static_cast<std::ptrdiff_t>(suffix.size()),
                    [](char a, char b) {
                      return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
                    });
}

}  // namespace aggrik8s
