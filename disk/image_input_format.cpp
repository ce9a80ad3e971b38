#include "disk/image_input_format.hpp"

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <string>

#include "disk/image_decoder_errors.hpp"

namespace aggrik8s {

const char* to_string(ImageInputFormat format) {
  switch (format) {
    case ImageInputFormat::raw: return "raw image";
    case ImageInputFormat::xz: return "xz";
    case ImageInputFormat::zstd: return "zstd";
    case ImageInputFormat::gzip: return "gzip";
    case ImageInputFormat::bzip2: return "bzip2";
    case ImageInputFormat::zip: return "zip";
  }
  return "unknown";
}

ImageInputFormat image_input_format_of(std::span<const std::uint8_t> first_bytes, const std::filesystem::path& input) {
  auto head = first_bytes.first(std::min(first_bytes.size(), image_format_magic_size));
  auto starts_with = [&](std::initializer_list<std::uint8_t> magic) {
    return head.size() >= magic.size() && std::equal(magic.begin(), magic.end(), head.begin());
  };
  if (starts_with({0xFD, '7', 'z', 'X', 'Z', 0x00})) return ImageInputFormat::xz;
  if (starts_with({0x28, 0xB5, 0x2F, 0xFD})) return ImageInputFormat::zstd;
  // A zstd skippable frame (magic 0x184D2A50..5F, little-endian) may precede the data frames.
  if (head.size() >= 4 && (head[0] & 0xF0) == 0x50 && head[1] == 0x2A && head[2] == 0x4D && head[3] == 0x18) {
    return ImageInputFormat::zstd;
  }
  if (starts_with({0x1F, 0x8B})) return ImageInputFormat::gzip;
  if (starts_with({'B', 'Z', 'h'})) return ImageInputFormat::bzip2;
  if (starts_with({'P', 'K', 0x03, 0x04}) || starts_with({'P', 'K', 0x05, 0x06}) ||
      starts_with({'P', 'K', 0x07, 0x08})) {
    return ImageInputFormat::zip;
  }
  // Compressed formats we do not decode: written as they are, the card would hold the compressed bytes
  // (bmaptool decodes lz4 and lzip; we ask for a format we read instead).
  struct Unsupported {
    std::initializer_list<std::uint8_t> magic;
    const char* name;
  };
  for (const Unsupported& format : {Unsupported{{0x04, 0x22, 0x4D, 0x18}, "lz4"}, Unsupported{{0x02, 0x21, 0x4C, 0x18}, "lz4 (legacy)"},
                                    Unsupported{{'L', 'Z', 'I', 'P'}, "lzip"}, Unsupported{{'7', 'z', 0xBC, 0xAF, 0x27, 0x1C}, "7-Zip"}}) {
    if (starts_with(format.magic)) {
      throw ImageInputError("", input, std::string(": is ") + format.name +
                                           "-compressed, which is not read here: decompress it first, or recompress it "
                                           "as xz, zstd, gzip or bzip2");
    }
  }
  const std::string name = input.filename().string();
  for (const char* suffix : {".xz", ".zst", ".zstd", ".gz", ".bz2", ".zip"}) {
    if (ends_with_ignoring_case(name, suffix)) {
      std::string hex;
      for (std::size_t i = 0; i < head.size(); ++i) {
        char byte[4];
        std::snprintf(byte, sizeof byte, "%02x", head[i]);
        hex += (i > 0 ? " " : "") + std::string(byte);
      }
      throw ImageInputError("", input,
                            ": the name ends in " + std::string(suffix) + " but the content is not in that format (" +
                                (head.empty() ? std::string("the file is empty") : "it starts with bytes " + hex) +
                                "); is it an HTML error page saved by a download?");
    }
  }
  return ImageInputFormat::raw;
}

}  // namespace aggrik8s
