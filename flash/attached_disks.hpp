#pragma once
// The disks attached to this machine, as far as choosing a flash target goes: what each one is
// (size, model, transport, removable or not), whether anything on it is in use, and whether writing
// an image over it is allowed.
//
// Facts come from sysfs (/sys/block, /sys/dev/block) and /proc/self/mountinfo, never from lsblk's
// text, and the decision (assess_flash_target) is a pure function of those facts so every refusal is
// unit-tested. The sysfs root is a parameter so tests can hand in a fake tree.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aggrik8s {

struct DeviceNumber {
  unsigned major = 0;
  unsigned minor = 0;
  friend bool operator==(const DeviceNumber&, const DeviceNumber&) = default;
};

struct MountEntry {
  DeviceNumber device;
  std::string mount_point;  // octal escapes (\040 for a space) decoded
  std::string source;       // "/dev/sdb1", "tmpfs", ...
  std::string filesystem_type;
};

// /proc/self/mountinfo (proc(5)); malformed lines are skipped.
std::vector<MountEntry> parse_mountinfo(std::string_view text);
// /proc/swaps: the device or file column of every active swap area.
std::vector<std::string> parse_swaps(std::string_view text);

struct AttachedDisk {
  std::string name;  // "sdb", "mmcblk0", "nvme0n1", "loop3"
  std::string device_path;  // "/dev/sdb"
  DeviceNumber device;
  std::uint64_t size_bytes = 0;
  bool removable_flag = false;  // /sys/block/NAME/removable (SD readers often say 0: see is_removable)
  bool read_only = false;
  std::string model;
  std::string transport;  // "usb", "mmc", "nvme", "sata", "virtio", "loop", or "" when unknown
  std::vector<std::string> partitions;  // "sdb1", ...
  std::vector<DeviceNumber> partition_devices;
  std::vector<std::string> holders;  // device-mapper/md devices built on it or its partitions

  // What a user would unplug: flagged removable, or on a USB or SD/MMC bus. Loop devices count too:
  // they are files, and the test suite and `--list` users flash them.
  bool is_removable() const;
};

// "usb" when the sysfs device path goes through a USB controller, etc. `device_path` is the resolved
// /sys/block/NAME symlink target.
std::string transport_of(const std::string& name, const std::string& device_path);

// Reads /sys/block/NAME. Throws Error if it does not exist.
AttachedDisk read_attached_disk(const std::string& name, const std::filesystem::path& sys = "/sys");
// Every disk in /sys/block, except RAM disks, zram, device-mapper/md devices and unattached loops.
std::vector<AttachedDisk> list_attached_disks(const std::filesystem::path& sys = "/sys");

// What a device node is, resolved through sysfs: the whole disk it belongs to and whether the node
// is a partition of it.
struct ResolvedDevice {
  std::string disk_name;
  std::optional<std::string> partition_name;
};
std::optional<ResolvedDevice> resolve_block_device(DeviceNumber device, const std::filesystem::path& sys = "/sys");

// The disks under the filesystem mounted at `mount_point` ("/"), through device-mapper and md
// layers (LVM, LUKS, RAID): their names, empty if it is not on a disk (overlayfs, tmpfs, NFS).
std::vector<std::string> disks_under_mount(const std::vector<MountEntry>& mounts, const std::string& mount_point,
                                           const std::filesystem::path& sys = "/sys");

// Where the disk or one of its partitions is mounted or used as swap ("/media/u/bootfs (sdb1)").
std::vector<std::string> uses_of_disk(const AttachedDisk& disk, const std::vector<MountEntry>& mounts,
                                      const std::vector<std::string>& swaps);

struct FlashTargetAssessment {
  // Reasons that cannot be overridden (mounted, holds the running system, read-only, in use).
  std::vector<std::string> refusals;
  // A reason --force overrides (not removable); empty when none.
  std::string needs_force;
  bool allowed(bool force) const { return refusals.empty() && (force || needs_force.empty()); }
};

FlashTargetAssessment assess_flash_target(const AttachedDisk& disk, const std::vector<std::string>& uses,
                                          const std::vector<std::string>& system_disks);

// One line of `flash --list`: "/dev/sdb  29.7 GiB  usb  SanDisk Ultra  not mounted".
std::string describe_attached_disk(const AttachedDisk& disk, const std::vector<std::string>& uses);

}  // namespace aggrik8s
