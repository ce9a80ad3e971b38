// Builds the initramfs of an ephemeral Pi node from the root filesystem of a disk image, as the Pi
// build does (builder/rpi/ephemeral_initramfs.hpp), for tests/e2e/ephemeral_initramfs_qemu.sh and
// benchmarks.
//
//   initramfs_tool IMAGE OFFSET LENGTH KERNEL_RELEASE OUT [--busybox FILE] [--extra-module NAME]...
//                  [--uncompressed] [--fixed-time SECONDS]
//   initramfs_tool --kernel-release KERNEL_FILE
//
// IMAGE OFFSET LENGTH: the ext4 root partition (bytes), opened read-only. KERNEL_RELEASE may be
// "@FILE" to read it from a kernel image. Prints what was written, one "key: value" a line.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "builder/rpi/ephemeral_initramfs.hpp"
#include "core/error.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/linux_kernel_image.hpp"

namespace {

int usage() {
  std::cerr << "usage: initramfs_tool IMAGE OFFSET LENGTH KERNEL_RELEASE|@KERNEL_FILE OUT [--busybox FILE]\n"
               "                      [--extra-module NAME]... [--uncompressed] [--fixed-time SECONDS]\n"
               "       initramfs_tool --kernel-release KERNEL_FILE\n";
  return 2;
}

std::uint64_t number(const std::string& text, const char* what) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) throw aggrik8s::Error(std::string(what) + " '" + text + "' is not a number");
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace aggrik8s;
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 2 && args[0] == "--kernel-release") {
      std::cout << builder::read_kernel_release(args[1]) << "\n";
      return 0;
    }
    if (args.size() < 5) return usage();
    builder::EphemeralInitramfsOptions options;
    options.kernel_release = args[3];
    if (options.kernel_release.starts_with("@")) options.kernel_release = builder::read_kernel_release(options.kernel_release.substr(1));
    for (std::size_t i = 5; i < args.size(); ++i) {
      const std::string& option = args[i];
      bool has_value = i + 1 < args.size();
      if (option == "--busybox" && has_value) {
        options.busybox = args[++i];
      } else if (option == "--extra-module" && has_value) {
        options.extra_modules.push_back(args[++i]);
      } else if (option == "--fixed-time" && has_value) {
        options.fixed_time = static_cast<std::int64_t>(number(args[++i], "--fixed-time"));
      } else if (option == "--uncompressed") {
        options.compression = builder::InitramfsCompression::none;
      } else {
        return usage();
      }
    }
    Ext4Filesystem root = Ext4Filesystem::open(args[0], number(args[1], "OFFSET"), number(args[2], "LENGTH"), Ext4Access::read_only);
    builder::BuiltInitramfs built = builder::write_ephemeral_initramfs(root, options, args[4]);
    std::cout << "path: " << built.path.string() << "\nbytes: " << built.bytes << "\nsha256: " << built.sha256.hex()
              << "\nkernel_release: " << options.kernel_release << "\nbusybox: " << built.busybox_source
              << "\nkernel_config_checked: " << (built.kernel_config_checked ? "yes" : "no") << "\n";
    for (const auto& module : built.modules) {
      std::cout << "module: " << module.name << " " << (module.built_in ? "built-in" : module.path)
                << (module.requested ? "" : " (dependency)") << "\n";
    }
    for (const auto& name : built.absent_optional_modules) std::cout << "absent_optional_module: " << name << "\n";
    return 0;
  } catch (const Error& e) {
    std::cerr << "initramfs_tool: " << e.what() << "\n";
    return 1;
  }
}
