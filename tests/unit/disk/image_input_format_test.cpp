#include "disk/image_input_format.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "disk/image_decoder_errors.hpp"

using namespace aggrik8s;

namespace {

ImageInputFormat format_of(std::vector<std::uint8_t> first_bytes, const std::string& name = "download.bin") {
  return image_input_format_of(first_bytes, "/cache/" + name);
}

}  // namespace

TEST_CASE("image input format: told by the magic bytes, whatever the name") {
  CHECK(format_of({0xFD, '7', 'z', 'X', 'Z', 0x00}) == ImageInputFormat::xz);
  CHECK(format_of({0x28, 0xB5, 0x2F, 0xFD, 0x04}) == ImageInputFormat::zstd);
  CHECK(format_of({0x5E, 0x2A, 0x4D, 0x18, 0x00, 0x00}, "x.img.zst") == ImageInputFormat::zstd);  // skippable frame
  CHECK(format_of({0x1F, 0x8B, 0x08}, "x.img") == ImageInputFormat::gzip);
  CHECK(format_of({'B', 'Z', 'h', '9'}) == ImageInputFormat::bzip2);
  CHECK(format_of({'P', 'K', 0x03, 0x04, 0x14, 0x00}) == ImageInputFormat::zip);
  CHECK(format_of({'P', 'K', 0x05, 0x06}) == ImageInputFormat::zip);
  CHECK(format_of({0xFA, 0xB8, 0x00, 0x10, 0x8E, 0xD0}, "x.img") == ImageInputFormat::raw);
  CHECK(format_of({}, "x.img") == ImageInputFormat::raw);
  // Only the first bytes count: an xz magic cut short is not xz.
  CHECK(format_of({0xFD, '7', 'z', 'X', 'Z'}) == ImageInputFormat::raw);
}

TEST_CASE("image input format: a compressed name without the content is an input error naming the file") {
  try {
    format_of({'<', 'h', 't', 'm', 'l', '>', '4', '0', '4'}, "os.img.XZ");
    FAIL("no error");
  } catch (const ImageInputError& e) {
    CHECK(e.file() == "/cache/os.img.XZ");
    CHECK_THAT(e.what(), Catch::StartsWith("/cache/os.img.XZ: the name ends in .xz but the content is not in that format") &&
                             Catch::Contains("it starts with bytes 3c 68 74 6d 6c 3e)") &&
                             Catch::Contains("HTML error page"));
    CHECK_THAT(e.message_naming_file_as("it"), Catch::StartsWith("it: the name ends in .xz"));
  }
  CHECK_THROWS_WITH(format_of({}, "os.img.zst"), Catch::Contains("(the file is empty)"));
  for (const char* name : {"a.gz", "a.bz2", "a.zip", "a.zstd"}) {
    INFO(name);
    CHECK_THROWS_AS(format_of({0, 0, 0, 0, 0, 0}, name), ImageInputError);
  }
}

TEST_CASE("image input format: lz4, lzip and 7-Zip are refused by name, not written as a raw image") {
  // flash wrote an .img.lz4's compressed bytes to the card and called it verified.
  for (const auto& [bytes, name] : std::vector<std::pair<std::vector<std::uint8_t>, std::string>>{
           {{0x04, 0x22, 0x4D, 0x18, 0x64, 0x40}, "lz4"}, {{'L', 'Z', 'I', 'P', 0x01}, "lzip"},
           {{'7', 'z', 0xBC, 0xAF, 0x27, 0x1C}, "7-Zip"}}) {
    INFO(name);
    try {
      format_of(bytes, "os.img");
      FAIL("no error");
    } catch (const ImageInputError& e) {
      CHECK(std::string(e.what()).find("is " + name + "-compressed, which is not read here") != std::string::npos);
    }
  }
}
