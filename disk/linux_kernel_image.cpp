#include "disk/linux_kernel_image.hpp"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <optional>
#include <string_view>
#include <vector>

#include "core/error.hpp"
#include "disk/in_memory_compression.hpp"

namespace aggrik8s::builder {
namespace {

constexpr std::size_t boot_flag_offset = 0x1FE;
constexpr std::size_t header_magic_offset = 0x202;  // "HdrS"
constexpr std::size_t protocol_offset = 0x206;
constexpr std::size_t cmdline_size_offset = 0x238;
constexpr std::size_t arm64_magic_offset = 0x38;  // "ARM\x64"
constexpr std::size_t pe_offset_field = 0x3C;
constexpr std::uint16_t pe_machine_arm64 = 0xAA64;
// arch/arm64/include/uapi/asm/setup.h; the buffer holds the NUL too.
constexpr std::size_t arm64_command_line_size = 2048;

std::uint32_t le(std::span<const std::uint8_t> b, std::size_t at, std::size_t width) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < width; ++i) value |= static_cast<std::uint32_t>(b[at + i]) << (8 * i);
  return value;
}

std::string hex(std::size_t value) {
  char buffer[24];
  std::snprintf(buffer, sizeof buffer, "0x%zX", value);
  return buffer;
}

bool has_bytes(std::span<const std::uint8_t> b, std::size_t at, std::string_view text) {
  if (b.size() < at + text.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (b[at + i] != static_cast<std::uint8_t>(text[i])) return false;
  }
  return true;
}

KernelCommandLineLimit arm64_limit(std::string_view format) {
  return {arm64_command_line_size - 1, std::string(format) + ": arm64 COMMAND_LINE_SIZE 2048 (the image header does not state it)"};
}

KernelCommandLineLimit x86_limit(std::span<const std::uint8_t> b) {
  if (b.size() < protocol_offset + 2) {
    throw Error("bzImage: " + std::to_string(b.size()) + " bytes is too short for the setup header (boot protocol version at " +
                hex(protocol_offset) + ")");
  }
  if (le(b, boot_flag_offset, 2) != 0xAA55) {
    throw Error("bzImage: boot_flag at " + hex(boot_flag_offset) + " is " + hex(le(b, boot_flag_offset, 2)) + ", expected 0xAA55");
  }
  std::uint32_t protocol = le(b, protocol_offset, 2);
  std::string version = std::to_string(protocol >> 8) + "." + (((protocol & 0xff) < 10) ? "0" : "") + std::to_string(protocol & 0xff);
  if (protocol < 0x0200) {
    throw Error("bzImage: boot protocol version " + version + " at " + hex(protocol_offset) + " is older than 2.00 although the header says HdrS");
  }
  if (protocol < 0x0206) {
    // cmdline_size did not exist yet; Documentation/arch/x86/boot.rst: "the maximum size was 255".
    return {255, "boot protocol " + version + " (before 2.06 the limit is 255 bytes)"};
  }
  if (b.size() < cmdline_size_offset + 4) {
    throw Error("bzImage: " + std::to_string(b.size()) + " bytes is too short for cmdline_size at " + hex(cmdline_size_offset) +
                " (boot protocol " + version + ")");
  }
  std::uint32_t size = le(b, cmdline_size_offset, 4);
  if (size == 0) throw Error("bzImage: cmdline_size at " + hex(cmdline_size_offset) + " is 0 (boot protocol " + version + ")");
  return {size, "setup header cmdline_size at 0x238, boot protocol " + version};
}

}  // namespace

KernelCommandLineLimit kernel_command_line_limit(std::span<const std::uint8_t> kernel) {
  // An x86 kernel with an EFI stub also starts with "MZ": the setup header is what says x86.
  if (has_bytes(kernel, header_magic_offset, "HdrS")) return x86_limit(kernel);
  if (has_bytes(kernel, arm64_magic_offset, "ARM\x64")) return arm64_limit("arm64 Image");
  if (has_bytes(kernel, 0, "MZ") && has_bytes(kernel, 4, "zimg")) {
    // EFI zboot (a compressed kernel wrapped in a PE decompressor): the PE machine says which.
    if (kernel.size() < pe_offset_field + 4) throw Error("arm64 zboot: too short for the PE header offset at 0x3C");
    std::size_t pe = le(kernel, pe_offset_field, 4);
    if (pe > kernel.size() || kernel.size() - pe < 6 || !has_bytes(kernel, pe, std::string_view("PE\0\0", 4))) {
      throw Error("EFI zboot image: no PE signature at " + hex(pe) + " (the offset at 0x3C)");
    }
    std::uint32_t machine = le(kernel, pe + 4, 2);
    if (machine == pe_machine_arm64) return arm64_limit("arm64 EFI zboot image");
    throw Error("EFI zboot image for PE machine " + hex(machine) + ": only arm64 (0xAA64) is known here");
  }
  if (kernel.size() < header_magic_offset + 4) {
    throw Error("not a Linux kernel image: " + std::to_string(kernel.size()) + " bytes is too short for a bzImage setup header");
  }
  throw Error("not a Linux kernel image: no x86 bzImage setup header ('HdrS' at 0x202), no arm64 Image magic ('ARM\\x64' at 0x38) "
              "and no EFI zboot header ('zimg' at 4)");
}

KernelFile read_kernel_file(const std::filesystem::path& file, const std::string& where) {
  // The x86 setup header ends before 0x240; arm64 and zboot headers before 0x80 + the PE header.
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("cannot read the kernel " + file.string());
  std::vector<std::uint8_t> head(4096);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(in.gcount()));
  try {
    return {where, kernel_command_line_limit(head)};
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
}

namespace {

// A decompressed arm64 Image is ~30-40 MiB; anything far beyond that is not a kernel.
constexpr std::size_t max_decompressed_kernel_bytes = 256u << 20;

std::optional<std::string> release_in_banner(std::string_view image) {
  constexpr std::string_view banner = "Linux version ";
  for (std::size_t at = image.find(banner); at != std::string_view::npos; at = image.find(banner, at + 1)) {
    std::size_t begin = at + banner.size();
    std::size_t end = begin;
    // A release is printable and has no blank; a format string ("Linux version %s") is not a banner.
    while (end < image.size() && end - begin < 256 && image[end] > ' ' && image[end] < 0x7f && image[end] != '%') ++end;
    if (end > begin && image.substr(end, 2) == " (") return std::string(image.substr(begin, end - begin));
  }
  return std::nullopt;
}

}  // namespace

std::string kernel_release(std::span<const std::uint8_t> kernel) {
  std::string_view bytes(reinterpret_cast<const char*>(kernel.data()), kernel.size());
  std::string decompressed;
  // gzip, xz, zstd magic: Pi kernels are gzip'd; others may be one of the rest.
  if (bytes.starts_with("\x1f\x8b") || bytes.starts_with("\xfd" "7zXZ") || bytes.starts_with("\x28\xb5\x2f\xfd")) {
    decompressed = decompress_in_memory(bytes, max_decompressed_kernel_bytes, "compressed kernel image");
    bytes = decompressed;
  }
  if (auto release = release_in_banner(bytes)) return *release;
  throw Error("no kernel release: no 'Linux version <release> (' banner in " + std::to_string(bytes.size()) +
              (decompressed.empty() ? " bytes" : " decompressed bytes") + " (not a Linux kernel image?)");
}

std::string read_kernel_release(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("cannot read the kernel " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error("cannot read the kernel " + file.string());
  std::string content = std::move(text).str();
  try {
    return kernel_release(std::span(reinterpret_cast<const std::uint8_t*>(content.data()), content.size()));
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
}

}  // namespace aggrik8s::builder
