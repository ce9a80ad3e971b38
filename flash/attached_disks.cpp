#include "flash/attached_disks.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include "core/byte_size.hpp"
#include "core/error.hpp"

namespace aggrik8s {

namespace fs = std::filesystem;

namespace {

std::string read_sysfs_text(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::ostringstream text;
  text << in.rdbuf();
  std::string value = text.str();
  while (!value.empty() && (value.back() == '\n' || value.back() == ' ' || value.back() == '\t')) value.pop_back();
  std::size_t start = value.find_first_not_of(" \t");
  return start == std::string::npos ? "" : value.substr(start);
}

std::optional<std::uint64_t> parse_unsigned(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::optional<DeviceNumber> parse_device_number(std::string_view text) {
  std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto major = parse_unsigned(text.substr(0, colon));
  auto minor = parse_unsigned(text.substr(colon + 1));
  if (!major || !minor) return std::nullopt;
  return DeviceNumber{static_cast<unsigned>(*major), static_cast<unsigned>(*minor)};
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_octal(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size() &&
        std::all_of(text.begin() + static_cast<std::ptrdiff_t>(i) + 1, text.begin() + static_cast<std::ptrdiff_t>(i) + 4,
                    [](char c) { return c >= '0' && c <= '7'; })) {
      out.push_back(static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 + (text[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::vector<std::string_view> split_spaces(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t at = 0;
  while (at < line.size()) {
    std::size_t start = line.find_first_not_of(" \t", at);
    if (start == std::string_view::npos) break;
    std::size_t end = line.find_first_of(" \t", start);
    if (end == std::string_view::npos) end = line.size();
    fields.push_back(line.substr(start, end - start));
    at = end;
  }
  return fields;
}

std::vector<std::string> directory_names(const fs::path& directory) {
  std::vector<std::string> names;
  std::error_code error;
  for (fs::directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    names.push_back(it->path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool is_whole_disk_of_interest(const std::string& name) {
  for (const char* skipped : {"ram", "zram", "dm-", "md", "sr", "fd", "nbd"}) {
    if (name.starts_with(skipped)) return false;
  }
  return true;
}

}  // namespace

std::vector<MountEntry> parse_mountinfo(std::string_view text) {
  std::vector<MountEntry> mounts;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    auto fields = split_spaces(text.substr(at, end - at));
    at = end + 1;
    // id parent major:minor root mount-point options [optional...] - type source super-options
    auto separator = std::find(fields.begin(), fields.end(), std::string_view("-"));
    if (fields.size() < 7 || separator == fields.end() || separator - fields.begin() < 6 || fields.end() - separator < 3) {
      continue;
    }
    auto device = parse_device_number(fields[2]);
    if (!device) continue;
    mounts.push_back({*device, unescape_octal(fields[4]), unescape_octal(*(separator + 2)), std::string(*(separator + 1))});
  }
  return mounts;
}

std::vector<std::string> parse_swaps(std::string_view text) {
  std::vector<std::string> swaps;
  std::size_t at = 0;
  bool header = true;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    auto fields = split_spaces(text.substr(at, end - at));
    at = end + 1;
    if (header) {
      header = false;
      continue;
    }
    if (!fields.empty()) swaps.push_back(unescape_octal(fields[0]));
  }
  return swaps;
}

bool AttachedDisk::is_removable() const {
  return removable_flag || transport == "usb" || transport == "mmc" || transport == "loop";
}

std::string transport_of(const std::string& name, const std::string& device_path) {
  if (name.starts_with("loop")) return "loop";
  if (name.starts_with("mmcblk")) return "mmc";
  // An NVMe drive in a USB enclosure is an sdX under a USB controller: usb wins.
  if (device_path.find("/usb") != std::string::npos) return "usb";
  if (name.starts_with("nvme")) return "nvme";
  if (device_path.find("/ata") != std::string::npos) return "sata";
  if (device_path.find("/virtio") != std::string::npos) return "virtio";
  return "";
}

AttachedDisk read_attached_disk(const std::string& name, const fs::path& sys) {
  fs::path dir = sys / "block" / name;
  std::error_code error;
  if (!fs::exists(dir, error)) throw Error("no disk named " + name + " (" + dir.string() + " does not exist)");
  AttachedDisk disk;
  disk.name = name;
  disk.device_path = "/dev/" + name;
  disk.device = parse_device_number(read_sysfs_text(dir / "dev")).value_or(DeviceNumber{});
  // sysfs sizes are in 512-byte units whatever the device's sector size.
  disk.size_bytes = parse_unsigned(read_sysfs_text(dir / "size")).value_or(0) * 512;
  disk.removable_flag = read_sysfs_text(dir / "removable") == "1";
  disk.read_only = read_sysfs_text(dir / "ro") == "1";
  disk.model = read_sysfs_text(dir / "device" / "model");
  if (disk.model.empty()) disk.model = read_sysfs_text(dir / "device" / "name");  // mmc cards
  if (name.starts_with("loop")) {
    std::string backing = read_sysfs_text(dir / "loop" / "backing_file");
    if (!backing.empty()) disk.model = backing;
  }
  disk.transport = transport_of(name, fs::weakly_canonical(dir, error).string());
  for (const auto& entry : directory_names(dir)) {
    if (entry.starts_with(name) && fs::exists(dir / entry / "partition", error)) {
      disk.partitions.push_back(entry);
      disk.partition_devices.push_back(parse_device_number(read_sysfs_text(dir / entry / "dev")).value_or(DeviceNumber{}));
      for (const auto& holder : directory_names(dir / entry / "holders")) disk.holders.push_back(holder);
    }
  }
  for (const auto& holder : directory_names(dir / "holders")) disk.holders.push_back(holder);
  return disk;
}

std::vector<AttachedDisk> list_attached_disks(const fs::path& sys) {
  std::vector<AttachedDisk> disks;
  for (const auto& name : directory_names(sys / "block")) {
    if (!is_whole_disk_of_interest(name)) continue;
    AttachedDisk disk = read_attached_disk(name, sys);
    if (disk.size_bytes == 0) continue;  // unattached loop devices, empty card readers
    disks.push_back(std::move(disk));
  }
  return disks;
}

std::optional<ResolvedDevice> resolve_block_device(DeviceNumber device, const fs::path& sys) {
  std::error_code error;
  fs::path link = sys / "dev" / "block" / (std::to_string(device.major) + ":" + std::to_string(device.minor));
  fs::path resolved = fs::canonical(link, error);
  if (error) return std::nullopt;
  if (fs::exists(resolved / "partition", error)) {
    return ResolvedDevice{resolved.parent_path().filename().string(), resolved.filename().string()};
  }
  return ResolvedDevice{resolved.filename().string(), std::nullopt};
}

std::vector<std::string> disks_under_mount(const std::vector<MountEntry>& mounts, const std::string& mount_point,
                                           const fs::path& sys) {
  std::vector<std::string> disks;
  // The last entry for a mount point is the one in effect (later mounts stack on earlier ones).
  auto it = std::find_if(mounts.rbegin(), mounts.rend(), [&](const MountEntry& m) { return m.mount_point == mount_point; });
  if (it == mounts.rend()) return disks;
  auto start = resolve_block_device(it->device, sys);
  if (!start) return disks;
  std::vector<std::string> pending{start->disk_name};
  std::vector<std::string> seen;
  while (!pending.empty()) {
    std::string name = pending.back();
    pending.pop_back();
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) continue;
    seen.push_back(name);
    std::vector<std::string> slaves = directory_names(sys / "block" / name / "slaves");
    if (slaves.empty()) {
      disks.push_back(name);
      continue;
    }
    for (const auto& slave : slaves) {
      // A slave is a partition (sda2) or a whole device (md0's members): map partitions to disks.
      auto number = parse_device_number(read_sysfs_text(sys / "class" / "block" / slave / "dev"));
      auto slave_disk = number ? resolve_block_device(*number, sys) : std::nullopt;
      pending.push_back(slave_disk ? slave_disk->disk_name : slave);
    }
  }
  std::sort(disks.begin(), disks.end());
  return disks;
}

std::vector<std::string> uses_of_disk(const AttachedDisk& disk, const std::vector<MountEntry>& mounts,
                                      const std::vector<std::string>& swaps) {
  std::vector<std::string> uses;
  auto describe = [&](const std::string& what, const std::string& node) {
    std::string text = what + " (" + node + ")";
    if (std::find(uses.begin(), uses.end(), text) == uses.end()) uses.push_back(text);
  };
  std::vector<std::pair<std::string, DeviceNumber>> nodes{{disk.name, disk.device}};
  for (std::size_t i = 0; i < disk.partitions.size(); ++i) {
    nodes.emplace_back(disk.partitions[i], i < disk.partition_devices.size() ? disk.partition_devices[i] : DeviceNumber{});
  }
  for (const auto& mount : mounts) {
    for (const auto& [node, number] : nodes) {
      // btrfs reports an anonymous device number for subvolumes; the source still names the node.
      if ((number.major != 0 && mount.device == number) || mount.source == "/dev/" + node) {
        describe("mounted at " + mount.mount_point, node);
      }
    }
  }
  for (const auto& swap : swaps) {
    for (const auto& [node, number] : nodes) {
      if (swap == "/dev/" + node) describe("in use as swap", node);
    }
  }
  return uses;
}

FlashTargetAssessment assess_flash_target(const AttachedDisk& disk, const std::vector<std::string>& uses,
                                          const std::vector<std::string>& system_disks) {
  FlashTargetAssessment assessment;
  if (std::find(system_disks.begin(), system_disks.end(), disk.name) != system_disks.end()) {
    assessment.refusals.push_back(disk.device_path + " holds the running system's root filesystem (/)");
  }
  for (const auto& use : uses) {
    assessment.refusals.push_back(disk.device_path + " is " + use + "; unmount it first (umount, or eject it in the desktop)");
  }
  if (!disk.holders.empty()) {
    std::string names;
    for (const auto& h : disk.holders) names += (names.empty() ? "" : ", ") + h;
    assessment.refusals.push_back(disk.device_path + " is in use by " + names + " (LVM, LUKS or RAID); release it first");
  }
  if (disk.read_only) {
    assessment.refusals.push_back(disk.device_path + " is read-only (is the write-protect switch of the card or its adapter set?)");
  }
  if (!disk.is_removable()) {
    assessment.needs_force = disk.device_path + " (" + (disk.model.empty() ? "unknown model" : disk.model) + ", " +
                             (disk.transport.empty() ? "unknown bus" : disk.transport) +
                             ") is not a removable disk; pass --force if you really mean to overwrite it";
  }
  return assessment;
}

std::string describe_attached_disk(const AttachedDisk& disk, const std::vector<std::string>& uses) {
  auto pad = [](std::string text, std::size_t width) {
    if (text.size() < width) text.resize(width, ' ');
    return text + "  ";
  };
  std::string state;
  if (uses.empty()) {
    state = "not mounted";
  } else {
    for (const auto& use : uses) state += (state.empty() ? "" : ", ") + use;
  }
  if (!disk.is_removable()) state += ", not removable";
  return pad(disk.device_path, 14) + pad(format_byte_size(disk.size_bytes), 10) +
         pad(disk.transport.empty() ? "-" : disk.transport, 6) + pad(disk.model.empty() ? "-" : disk.model, 24) + state;
}

}  // namespace aggrik8s
