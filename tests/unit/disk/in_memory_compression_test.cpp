// Whole-buffer gzip and decompression, and the kernel release read through them.
#include "disk/in_memory_compression.hpp"

#include <catch2/catch.hpp>

#include <string>

#include "core/error.hpp"
#include "disk/linux_kernel_image.hpp"
#include "tests/test_support.hpp"

using aggrik8s::decompress_in_memory;
using aggrik8s::gzip_in_memory;
using Catch::Matchers::Contains;

namespace {

std::span<const std::uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST_CASE("in-memory gzip: no name, no time stamp, the same bytes every time, and gzip reads it", "[compression]") {
  std::string input = aggrik8s::test::random_bytes(100000, 7) + std::string(100000, 'a');
  std::string gz = gzip_in_memory(input);
  REQUIRE(gz.size() > 10);
  CHECK(static_cast<unsigned char>(gz[0]) == 0x1f);
  CHECK(static_cast<unsigned char>(gz[1]) == 0x8b);
  CHECK(gz[3] == 0);                               // FLG: no FNAME
  CHECK(gz.substr(4, 4) == std::string(4, '\0'));  // MTIME 0
  CHECK(gz == gzip_in_memory(input));
  CHECK(decompress_in_memory(gz, input.size(), "test") == input);
  aggrik8s::test::TempDir dir;
  aggrik8s::test::write_file(dir / "x.gz", gz);
  aggrik8s::test::write_file(dir / "x", input);
  auto r = aggrik8s::test::run("cd '" + dir.path().string() + "' && gzip -t x.gz && gzip -dc x.gz | cmp - x && echo same");
  CHECK(r.output == "same\n");
}

TEST_CASE("in-memory decompression: xz and zstd from their tools, plain input as is, limits and corruption", "[compression]") {
  aggrik8s::test::TempDir dir;
  std::string input = std::string(5000, 'm') + "module";
  aggrik8s::test::write_file(dir / "m.ko", input);
  auto r = aggrik8s::test::run("cd '" + dir.path().string() + "' && xz -k --check=crc32 m.ko && zstd -q -k m.ko");
  REQUIRE(r.exit_code == 0);
  CHECK(decompress_in_memory(aggrik8s::test::read_file(dir / "m.ko.xz"), 1 << 20, "m.ko.xz") == input);
  CHECK(decompress_in_memory(aggrik8s::test::read_file(dir / "m.ko.zst"), 1 << 20, "m.ko.zst") == input);
  CHECK(decompress_in_memory(input, 1 << 20, "m.ko") == input);
  CHECK(decompress_in_memory("", 1 << 20, "empty").empty());
  CHECK_THROWS_WITH(decompress_in_memory(gzip_in_memory(input), 100, "big.gz"), Contains("big.gz: decompresses to more than 100 bytes"));
  std::string cut = gzip_in_memory(aggrik8s::test::random_bytes(50000, 3));
  cut.resize(cut.size() / 2);
  CHECK_THROWS_WITH(decompress_in_memory(cut, 1 << 20, "cut.gz"), Contains("cut.gz: "));
}

TEST_CASE("kernel release: from the banner of a plain or gzip'd Image, format strings are not banners", "[kernel]") {
  std::string image = std::string(0x38, '\0') + "ARM\x64" + std::string(1000, '\0') + "Linux version %s (%s)\n" +
                      std::string(100, 'x') + "Linux version 6.6.51+rpt-rpi-2712 (serge@raspberrypi.com) (gcc) #1 SMP PREEMPT\n";
  CHECK(aggrik8s::builder::kernel_release(bytes_of(image)) == "6.6.51+rpt-rpi-2712");
  std::string gz = gzip_in_memory(image);
  CHECK(aggrik8s::builder::kernel_release(bytes_of(gz)) == "6.6.51+rpt-rpi-2712");
  CHECK_THROWS_WITH(aggrik8s::builder::kernel_release(bytes_of(std::string(4096, 'k'))),
                    Contains("no 'Linux version <release> (' banner in 4096 bytes"));
  CHECK_THROWS_WITH(aggrik8s::builder::kernel_release(bytes_of(gzip_in_memory("Linux version 6.1 without builder"))),
                    Contains("decompressed bytes"));
}
