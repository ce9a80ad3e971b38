// The command line limit read from a kernel image (disk/linux_kernel_image.hpp): the x86 setup
// header's cmdline_size, the arm64 constant, and malformed or truncated images refused with the field.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "disk/linux_kernel_image.hpp"
#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

void put(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t value, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) b[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
}

void put(std::vector<std::uint8_t>& b, std::size_t at, std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) b[at + i] = static_cast<std::uint8_t>(text[i]);
}

// The first 0x240 bytes of a bzImage: boot_flag, "HdrS", protocol version, cmdline_size.
std::vector<std::uint8_t> bzimage(std::uint16_t protocol, std::uint32_t cmdline_size) {
  std::vector<std::uint8_t> b(0x240, 0);
  put(b, 0, "MZ");  // an EFI stub kernel starts like a PE file too
  put(b, 0x1FE, 0xAA55, 2);
  put(b, 0x202, "HdrS");
  put(b, 0x206, protocol, 2);
  put(b, 0x238, cmdline_size, 4);
  return b;
}

std::string failure(const std::vector<std::uint8_t>& image) {
  try {
    kernel_command_line_limit(image);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("kernel image: an x86 bzImage states its limit in the setup header", "[talos][kernel]") {
  auto limit = kernel_command_line_limit(bzimage(0x020F, 2047));
  CHECK(limit.max_bytes == 2047);
  CHECK(limit.basis == "setup header cmdline_size at 0x238, boot protocol 2.15");
  CHECK(kernel_command_line_limit(bzimage(0x0206, 4095)).max_bytes == 4095);
  // Before protocol 2.06 there is no cmdline_size field: 255 bytes, whatever 0x238 holds.
  auto old = kernel_command_line_limit(bzimage(0x0205, 2047));
  CHECK(old.max_bytes == 255);
  CHECK(old.basis.find("boot protocol 2.05") != std::string::npos);
}

TEST_CASE("kernel image: malformed and truncated x86 headers are refused with the field", "[talos][kernel]") {
  auto no_flag = bzimage(0x020F, 2047);
  put(no_flag, 0x1FE, 0, 2);
  CHECK_THAT(failure(no_flag), Catch::Contains("boot_flag at 0x1FE is 0x0, expected 0xAA55"));
  CHECK_THAT(failure(bzimage(0x020F, 0)), Catch::Contains("cmdline_size at 0x238 is 0"));
  CHECK_THAT(failure(bzimage(0x0105, 2047)), Catch::Contains("older than 2.00"));
  auto cut = bzimage(0x020F, 2047);
  cut.resize(0x238 + 2);
  CHECK_THAT(failure(cut), Catch::Contains("too short for cmdline_size at 0x238 (boot protocol 2.15)"));
  cut.resize(0x204);
  CHECK_THAT(failure(cut), Catch::Contains("too short"));
  // Every prefix of a valid header is either read or refused, never read past its end.
  auto full = bzimage(0x020F, 2047);
  for (std::size_t n = 0; n <= full.size(); ++n) {
    std::vector<std::uint8_t> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    std::size_t kept = 0;
    try {
      kept = kernel_command_line_limit(prefix).max_bytes;
    } catch (const Error&) {
      kept = 0;
    }
    INFO(n);
    CHECK(kept == (n >= 0x23C ? 2047u : 0u));
  }
}

TEST_CASE("kernel image: arm64 Image and zboot images keep COMMAND_LINE_SIZE - 1", "[talos][kernel]") {
  std::vector<std::uint8_t> image(0x40, 0);
  put(image, 0x38, std::string_view("ARM\x64", 4));
  auto limit = kernel_command_line_limit(image);
  CHECK(limit.max_bytes == 2047);
  CHECK(limit.basis.find("arm64 COMMAND_LINE_SIZE 2048") != std::string::npos);

  std::vector<std::uint8_t> zboot(0x80, 0);
  put(zboot, 0, "MZ");
  put(zboot, 4, "zimg");
  put(zboot, 0x3C, 0x40, 4);
  put(zboot, 0x40, std::string_view("PE\0\0", 4));
  put(zboot, 0x44, 0xAA64, 2);
  CHECK(kernel_command_line_limit(zboot).max_bytes == 2047);
  put(zboot, 0x44, 0x5064, 2);  // riscv64
  CHECK_THAT(failure(zboot), Catch::Contains("PE machine 0x5064"));
  put(zboot, 0x3C, 0x7FFFFFF0, 4);
  CHECK_THAT(failure(zboot), Catch::Contains("no PE signature at 0x7FFFFFF0"));
}

TEST_CASE("kernel image: other bytes are not a kernel", "[talos][kernel]") {
  CHECK_THAT(failure({}), Catch::Contains("not a Linux kernel image"));
  CHECK_THAT(failure(std::vector<std::uint8_t>(4096, 0xFF)), Catch::Contains("no x86 bzImage setup header ('HdrS' at 0x202)"));
}

TEST_CASE("kernel image: Debian's amd64 kernel states 2047", "[talos][kernel]") {
  // The stand-in Talos ISO boots this kernel (tests/fixtures/make-talos-iso).
  std::filesystem::path kernel;
  for (const auto& entry : std::filesystem::directory_iterator("/boot")) {
    std::string name = entry.path().filename().string();
    if (name.starts_with("vmlinuz-") && name.ends_with("-amd64")) kernel = entry.path();
  }
  if (kernel.empty()) {
    WARN("no /boot/vmlinuz-*-amd64 to read");
    return;
  }
  std::ifstream in(kernel, std::ios::binary);
  std::vector<std::uint8_t> head(4096);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  CHECK(kernel_command_line_limit(head).max_bytes == 2047);
}
