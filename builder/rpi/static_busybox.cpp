#include "builder/rpi/static_busybox.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <memory>

#include "core/error.hpp"
#include "disk/ext4_filesystem.hpp"

namespace aggrik8s::builder {
namespace {

constexpr std::uint16_t elf_machine_aarch64 = 183;  // EM_AARCH64
constexpr std::uint32_t program_header_interpreter = 3;  // PT_INTERP
// A static busybox is 1-3 MiB; a data.tar of busybox-static about as much.
constexpr std::size_t max_busybox_bytes = 64u << 20;

std::uint64_t little_endian(std::string_view bytes, std::size_t at, std::size_t width) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < width; ++i) value |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  return value;
}

struct ArchiveReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadDeleter>;

std::string read_entry_data(archive* a, const std::string& what) {
  std::string data;
  char buffer[1 << 16];
  for (;;) {
    la_ssize_t n = archive_read_data(a, buffer, sizeof buffer);
    if (n < 0) throw Error(what + ": " + archive_error_string(a));
    if (n == 0) return data;
    if (data.size() + static_cast<std::size_t>(n) > max_busybox_bytes) throw Error(what + ": larger than 64 MiB");
    data.append(buffer, static_cast<std::size_t>(n));
  }
}

// The busybox binary in a .deb's data.tar; `found_as` gets its member name.
std::string busybox_in_data_tar(const std::string& data_tar, const std::string& where, std::string& found_as) {
  ArchiveReader tar(archive_read_new());
  archive_read_support_filter_all(tar.get());
  archive_read_support_format_tar(tar.get());
  if (archive_read_open_memory(tar.get(), data_tar.data(), data_tar.size()) != ARCHIVE_OK) {
    throw Error(where + ": " + archive_error_string(tar.get()));
  }
  archive_entry* entry = nullptr;
  for (;;) {
    int status = archive_read_next_header(tar.get(), &entry);
    if (status == ARCHIVE_EOF) break;
    if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw Error(where + ": " + archive_error_string(tar.get()));
    std::string name = archive_entry_pathname(entry) != nullptr ? archive_entry_pathname(entry) : "";
    if ((name == "./bin/busybox" || name == "./usr/bin/busybox") && archive_entry_filetype(entry) == AE_IFREG) {
      found_as = name;
      return read_entry_data(tar.get(), where + ":" + name);
    }
  }
  throw Error(where + " has no ./bin/busybox or ./usr/bin/busybox (is this busybox-static's .deb?)");
}

void require_static_arm64(const std::string& binary, const std::string& where, const std::string& remedy) {
  if (auto problem = static_arm64_executable_problem(binary)) {
    throw Error(where + " is " + *problem + ": the initramfs needs a static arm64 busybox; " + remedy);
  }
}

}  // namespace

std::optional<std::string> static_arm64_executable_problem(std::string_view binary) {
  if (binary.size() < 64 || !binary.starts_with("\x7f" "ELF")) return "not an ELF file";
  if (binary[4] != 2 || binary[5] != 1) return "not a 64-bit little-endian ELF";
  auto machine = static_cast<std::uint16_t>(little_endian(binary, 18, 2));
  if (machine != elf_machine_aarch64) {
    std::string known = machine == 62 ? " (x86-64)" : machine == 40 ? " (32-bit ARM)" : machine == 3 ? " (i386)" : "";
    return "an ELF for machine " + std::to_string(machine) + known + ", not 183 (AArch64)";
  }
  auto type = little_endian(binary, 16, 2);
  if (type != 2 && type != 3) return "an ELF of type " + std::to_string(type) + ", not an executable";
  std::uint64_t offset = little_endian(binary, 32, 8);
  std::uint64_t entry_size = little_endian(binary, 54, 2);
  std::uint64_t count = little_endian(binary, 56, 2);
  if (entry_size < 56 || offset > binary.size() || count > (binary.size() - offset) / entry_size) {
    return "an ELF whose program headers lie outside the file";
  }
  for (std::uint64_t i = 0; i < count; ++i) {
    std::size_t header = offset + i * entry_size;
    if (little_endian(binary, header, 4) != program_header_interpreter) continue;
    std::uint64_t at = little_endian(binary, header + 8, 8);
    std::uint64_t size = little_endian(binary, header + 32, 8);
    std::string interpreter = at < binary.size() && size <= binary.size() - at ? std::string(binary.substr(at, size)) : "";
    while (!interpreter.empty() && interpreter.back() == '\0') interpreter.pop_back();
    return "a dynamically linked executable (PT_INTERP " + interpreter + ")";
  }
  return std::nullopt;
}

std::vector<std::string> busybox_missing_applets(std::string_view binary, const std::vector<std::string>& wanted) {
  std::vector<std::string> missing;
  for (const auto& applet : wanted) {
    std::string needle;
    needle.push_back('\0');
    needle += applet;
    needle.push_back('\0');
    if (binary.find(needle) == std::string_view::npos) missing.push_back(applet);
  }
  return missing;
}

StaticBusybox busybox_of_root(const Ext4Filesystem& root) {
  const std::string remedy = "set the profile's busybox source (a static busybox binary or a busybox-static_*_arm64.deb)";
  for (const char* path : {"/usr/bin/busybox", "/bin/busybox"}) {
    if (!root.exists(path)) continue;
    std::string where = std::string(path) + " of the image";
    std::string binary = root.read_file(path);
    require_static_arm64(binary, where, remedy);
    return {std::move(binary), where};
  }
  throw Error("the image has no /usr/bin/busybox or /bin/busybox for the initramfs: " + remedy);
}

StaticBusybox busybox_from_file(const std::filesystem::path& source) {
  std::ifstream in(source, std::ios::binary);
  if (!in) throw Error("cannot read the busybox source " + source.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error("cannot read the busybox source " + source.string());
  std::string content = std::move(text).str();
  const std::string remedy = "use busybox-static's .deb for arm64 or the bin/busybox it holds";
  if (!content.starts_with("!<arch>\n")) {
    require_static_arm64(content, "the busybox source " + source.string(), remedy);
    return {std::move(content), source.string()};
  }
  // A .deb: an ar archive of debian-binary, control.tar.*, data.tar.{gz,xz,zst}.
  ArchiveReader deb(archive_read_new());
  archive_read_support_format_ar(deb.get());
  if (archive_read_open_memory(deb.get(), content.data(), content.size()) != ARCHIVE_OK) {
    throw Error(source.string() + ": " + archive_error_string(deb.get()));
  }
  archive_entry* entry = nullptr;
  for (;;) {
    int status = archive_read_next_header(deb.get(), &entry);
    if (status == ARCHIVE_EOF) break;
    if (status != ARCHIVE_OK && status != ARCHIVE_WARN) throw Error(source.string() + ": " + archive_error_string(deb.get()));
    std::string name = archive_entry_pathname(entry) != nullptr ? archive_entry_pathname(entry) : "";
    if (!name.starts_with("data.tar")) continue;
    std::string where = source.string() + ":" + name;
    std::string member;
    std::string binary = busybox_in_data_tar(read_entry_data(deb.get(), where), where, member);
    require_static_arm64(binary, where + ":" + member, remedy);
    return {std::move(binary), source.string() + ":" + member};
  }
  throw Error(source.string() + " is an ar archive without data.tar.*: not a .deb");
}

}  // namespace aggrik8s::builder
