#pragma once
// The busybox an initramfs runs: it has to be a static arm64 executable (the initramfs has no C
// library), either the image's own /usr/bin/busybox or /bin/busybox (Raspberry Pi OS and Debian
// install busybox-static's there) or a file the profile names: the binary itself or Debian's
// busybox-static_*_arm64.deb.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s {
class Ext4Filesystem;
}

namespace aggrik8s::builder {

struct StaticBusybox {
  std::string binary;
  std::string source;  // for messages and build records: "/usr/bin/busybox of the image", "X.deb:./bin/busybox"
};

// nullopt for a 64-bit little-endian ELF executable for EM_AARCH64 without a program interpreter
// (PT_INTERP); otherwise what it is instead ("a dynamically linked executable (PT_INTERP
// /lib/ld-linux-aarch64.so.1)", "an ELF for machine 62 (x86-64)", "not an ELF file").
std::optional<std::string> static_arm64_executable_problem(std::string_view binary);

// The applets of `wanted` that the busybox binary does not have. busybox keeps its applet names as
// one NUL-separated string table (applet_tables.h, applet_names); a name missing from the binary is
// certainly not an applet (a name that is there is assumed to be one).
std::vector<std::string> busybox_missing_applets(std::string_view binary, const std::vector<std::string>& wanted);

// The image's busybox, or Error saying to set the profile's busybox source when it has none or it is
// not a static arm64 executable.
StaticBusybox busybox_of_root(const Ext4Filesystem& root);
// A static busybox binary, or ./bin/busybox (or ./usr/bin/busybox) inside a .deb (ar archive with
// data.tar.*); Error naming the file when it is neither or the binary is not a static arm64 executable.
StaticBusybox busybox_from_file(const std::filesystem::path& source);

}  // namespace aggrik8s::builder
