#pragma once
// What a disk image file is stored as, told by its first bytes (magic numbers); the file name only
// sharpens the error when a ".xz" turns out not to be xz (a saved HTML error page is the usual culprit).
#include <cstdint>
#include <filesystem>
#include <span>

namespace aggrik8s {

enum class ImageInputFormat { raw, xz, zstd, gzip, bzip2, zip };
const char* to_string(ImageInputFormat format);

// How many first bytes image_input_format_of looks at.
inline constexpr std::size_t image_format_magic_size = 6;

// `first_bytes` are the file's first bytes (fewer only when the file is shorter). Throws
// ImageInputError naming `input` when its name promises a compression format (.xz, .zst, .gz, .bz2,
// .zip) the content does not have.
ImageInputFormat image_input_format_of(std::span<const std::uint8_t> first_bytes, const std::filesystem::path& input);

}  // namespace aggrik8s
