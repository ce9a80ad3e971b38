#pragma once
// The decisions that turn a node of an rpi5-rke2 profile into an ephemeral one (netbooted, running
// from RAM, fresh on every boot), as pure functions so they are unit-tested without images:
//   - what the kernel must offer to mount a squashfs root under an overlay (checked against the
//     kernel's own config file, /boot/config-<release> in the image, when it has one);
//   - which fstab lines go: the root and the boot partition are not on a disk any more, and a
//     missing device in fstab sends systemd to emergency mode;
//   - which kernel arguments go: the disk image's root=, init= (Raspberry Pi OS's firstboot resizes
//     the disk and reboots), systemd.run= (firstrun.sh reboots when done, an ephemeral node would
//     do so on every boot), fsck and resize requests;
//   - whether the root, and what the node unpacks into RAM from it, fits the node's memory.
// docs/profiles.md ("Ephemeral output") explains them to users.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s::builder {

// Problems with a kernel config (the text of /boot/config-<release>) for an ephemeral boot whose root
// squashfs is compressed with `compression` (zstd, xz, gzip, lz4). Empty when it can boot.
std::vector<std::string> ephemeral_kernel_config_problems(std::string_view config, std::string_view compression);

// The fstab of the ephemeral root: the entries for "/" and for boot_mount are commented out, with a
// note saying why; every other line is kept byte for byte.
std::string ephemeral_fstab(std::string_view fstab, std::string_view boot_mount);

// Kernel arguments of the disk image that an ephemeral boot must not carry.
const std::vector<std::string>& ephemeral_cmdline_removed_keys();
// The image's cmdline.txt without those, with `add` added (add_cmdline_arguments' rules).
std::string ephemeral_cmdline(std::string_view cmdline, const std::vector<std::string>& add);

// The cmdline.txt baked into an ephemeral node's HTTP boot.img: core/ephemeral_boot_arguments.hpp.

// /etc/hosts with the 127.0.1.1 line naming `hostname` (replaced where there is one, else appended),
// as Debian's installer and Raspberry Pi OS's hostname tools write it.
std::string hosts_with_hostname(std::string_view hosts, std::string_view hostname);

// What a node holds in RAM: the root squashfs (downloaded into a tmpfs), and what containerd unpacks
// from the preloaded image archives into the overlay's tmpfs (their blobs in its content store and
// the unpacked layers in its snapshots: twice the archives' uncompressed size), and what the running
// system needs (runtime_reserve).
struct EphemeralMemoryBudget {
  std::uint64_t root_bytes = 0;
  std::uint64_t image_archive_bytes = 0;  // uncompressed
  std::uint64_t runtime_reserve = 0;
  std::uint64_t memory = 0;
  std::uint64_t needed() const { return root_bytes + 2 * image_archive_bytes + runtime_reserve; }
  bool fits() const { return needed() <= memory; }
  // "root 1.2 GiB + image archives unpacked 2 x 800 MiB + runtime reserve 1 GiB = 3.8 GiB of 4 GiB"
  std::string describe() const;
};

}  // namespace aggrik8s::builder
