#pragma once
// The initramfs of an ephemeral (RAM-only, rebuilt-on-reboot) Raspberry Pi node: a newc cpio (gzip'd
// by default) holding
//   /init                     builder/rpi/ephemeral_init.sh: network up, root squashfs over HTTP into
//                             RAM, sha256 check, tmpfs overlay, the node's identity tar, switch_root
//   /etc/udhcpc.script        builder/rpi/ephemeral_udhcpc.sh
//   /bin/busybox + the applet symlinks those scripts use
//   /lib/modules/<release>/   the kernel modules they need, from the image's own /lib/modules, with
//                             their dependencies (modules.dep), uncompressed, and aggrik8s.modules:
//                             the load order for insmod
//   /dev/console (char 5:1)   so the kernel has a console for /init before devtmpfs is mounted
//   /proc /sys /dev /run /newroot /root
// The kernel command line that drives /init is documented in ephemeral_init.sh and docs/netboot.md.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/sha256.hpp"

namespace aggrik8s {
class Ext4Filesystem;
}

namespace aggrik8s::builder {

enum class InitramfsCompression { none, gzip };

struct EphemeralInitramfsOptions {
  // `uname -r` of the kernel that will boot it (disk/linux_kernel_image.hpp: read_kernel_release).
  std::string kernel_release;
  // Missing from the kernel (neither modular nor built in): an Error. Pi 5: its Ethernet MAC (macb)
  // and PHY (broadcom: BCM54213PE); the root's squashfs, loop device and overlayfs.
  std::vector<std::string> required_modules{"squashfs", "loop", "overlay", "macb", "broadcom"};
  // Taken when the kernel has them: what an emulated node (QEMU virt) needs, and AF_PACKET for udhcpc.
  std::vector<std::string> optional_modules{"virtio_net", "virtio_pci", "virtio_mmio", "af_packet"};
  // The profile's own additions; required.
  std::vector<std::string> extra_modules;
  // A static arm64 busybox binary or busybox-static_*_arm64.deb; absent: the image's own busybox.
  std::optional<std::filesystem::path> busybox;
  // The mtime of every entry (SOURCE_DATE_EPOCH).
  std::int64_t fixed_time = 0;
  InitramfsCompression compression = InitramfsCompression::gzip;
};

struct InitramfsModule {
  std::string name;  // normalised (kernel_module_name)
  bool built_in = false;
  // In the initramfs, relative to /lib/modules/<release>/ ("kernel/fs/squashfs/squashfs.ko"); empty
  // when built in.
  std::string path;
  // Asked for (required, optional or extra) rather than pulled in as a dependency.
  bool requested = false;
};

struct BuiltInitramfs {
  std::filesystem::path path;
  std::uint64_t bytes = 0;
  Sha256Digest sha256;
  // Modules loaded by /init in load order, then the requested built-in ones.
  std::vector<InitramfsModule> modules;
  // Optional modules the kernel has neither as a module nor built in.
  std::vector<std::string> absent_optional_modules;
  std::string busybox_source;
  // Whether /boot/config-<release> was found in the root and checked (ephemeral_kernel_config_problems
  // and initramfs_kernel_config_problems).
  bool kernel_config_checked = false;
};

// The busybox applets /init and the udhcpc script run (as /bin/<applet> symlinks).
const std::vector<std::string>& ephemeral_initramfs_applets();

// What a kernel config (/boot/config-<release>, as Debian and Raspberry Pi OS kernel packages install
// it) lacks for this initramfs beyond what the root needs (ephemeral_root_plan.hpp:
// ephemeral_kernel_config_problems): unpacking it, and AF_PACKET for udhcpc. One message per option,
// in the same form ("CONFIG_RD_GZIP is not set (needs y): the initramfs is gzip'd"); empty when all
// is there.
std::vector<std::string> initramfs_kernel_config_problems(std::string_view config, InitramfsCompression compression);

// Reads modules, busybox and kernel config from `root` (the image's root filesystem), writes the
// initramfs to `output` (through <output>.partial, renamed into place) and describes it. Deterministic:
// the same root and options give the same bytes. Throws Error: a missing required module ("missing
// module: ..."), no usable busybox, a kernel config lacking what the boot needs, no
// /lib/modules/<release>/modules.dep.
BuiltInitramfs write_ephemeral_initramfs(const Ext4Filesystem& root, const EphemeralInitramfsOptions& options,
                                         const std::filesystem::path& output);

}  // namespace aggrik8s::builder
