#include "builder/rpi/ephemeral_root_plan.hpp"

#include <map>
#include <sstream>

#include "builder/rpi/pi_boot_files.hpp"
#include "core/byte_size.hpp"

namespace aggrik8s::builder {

namespace {

// The value of CONFIG_<name> in a kernel config ("y", "m", or "" when unset or absent).
std::string config_value(std::string_view config, std::string_view name) {
  std::string key = "CONFIG_" + std::string(name) + "=";
  std::size_t at = 0;
  while ((at = config.find(key, at)) != std::string_view::npos) {
    if (at == 0 || config[at - 1] == '\n') {
      std::size_t end = config.find('\n', at);
      std::string_view value = config.substr(at + key.size(), end == std::string_view::npos ? end : end - at - key.size());
      return std::string(value);
    }
    at += key.size();
  }
  return "";
}

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    std::size_t end = text.find('\n');
    lines.push_back(text.substr(0, end == std::string_view::npos ? text.size() : end + 1));
    text.remove_prefix(lines.back().size());
  }
  return lines;
}

}  // namespace

std::vector<std::string> ephemeral_kernel_config_problems(std::string_view config, std::string_view compression) {
  std::vector<std::string> problems;
  auto require = [&](std::string_view name, bool module_ok, std::string_view why) {
    std::string value = config_value(config, name);
    if (value == "y" || (module_ok && value == "m")) return;
    problems.push_back("CONFIG_" + std::string(name) + " is " + (value.empty() ? std::string("not set") : value) +
                       (module_ok ? " (needs y or m): " : " (needs y): ") + std::string(why));
  };
  require("BLK_DEV_INITRD", false, "the kernel must unpack the initramfs");
  require("DEVTMPFS", false, "the initramfs mounts /dev as devtmpfs");
  require("SQUASHFS", true, "the root is a squashfs");
  require("BLK_DEV_LOOP", true, "the squashfs file is mounted through a loop device");
  require("OVERLAY_FS", true, "writes go to a tmpfs overlaid on the read-only root");
  require("TMPFS", false, "the root file and the overlay's writes live in tmpfs");
  static const std::map<std::string_view, std::string_view> decompressor{
      {"zstd", "SQUASHFS_ZSTD"}, {"xz", "SQUASHFS_XZ"}, {"gzip", "SQUASHFS_ZLIB"}, {"lz4", "SQUASHFS_LZ4"}};
  if (auto it = decompressor.find(compression); it != decompressor.end()) {
    require(it->second, false,
            "the root is compressed with " + std::string(compression) + " (choose another output.ephemeral.compression)");
  }
  return problems;
}

std::string ephemeral_fstab(std::string_view fstab, std::string_view boot_mount) {
  std::string out;
  for (std::string_view line : lines_of(fstab)) {
    std::istringstream fields{std::string(line)};
    std::string device, mount_point;
    fields >> device >> mount_point;
    bool comment = device.empty() || device.starts_with('#');
    if (!comment && (mount_point == "/" || mount_point == boot_mount)) {
      out += "# aggrik8s-image: ephemeral node (root from RAM, no boot partition): ";
      out += line;
      if (!line.ends_with('\n')) out += '\n';
      continue;
    }
    out += line;
  }
  return out;
}

const std::vector<std::string>& ephemeral_cmdline_removed_keys() {
  static const std::vector<std::string> keys{"root",         "rootfstype", "rootflags", "rootwait",
                                             "rootdelay",    "fsck.repair", "fsck.mode", "resize",
                                             "init",         "systemd.run", "systemd.run_success_action",
                                             "systemd.unit", "ds",          "ro",        "rw"};
  return keys;
}

std::string ephemeral_cmdline(std::string_view cmdline, const std::vector<std::string>& add) {
  return add_cmdline_arguments(remove_cmdline_arguments(cmdline, ephemeral_cmdline_removed_keys()), add);
}

std::string hosts_with_hostname(std::string_view hosts, std::string_view hostname) {
  std::string out;
  bool replaced = false;
  std::string line_for_host = "127.0.1.1\t" + std::string(hostname) + "\n";
  for (std::string_view line : lines_of(hosts)) {
    if (line.starts_with("127.0.1.1") && line.size() > 9 && (line[9] == ' ' || line[9] == '\t')) {
      if (!replaced) out += line_for_host;
      replaced = true;
      continue;
    }
    out += line;
  }
  if (!out.empty() && !out.ends_with('\n')) out += '\n';
  if (!replaced) out += line_for_host;
  return out;
}

std::string EphemeralMemoryBudget::describe() const {
  return "root " + format_byte_size(root_bytes) + " + image archives unpacked 2 x " +
         format_byte_size(image_archive_bytes) + " + runtime reserve " + format_byte_size(runtime_reserve) + " = " +
         format_byte_size(needed()) + " of " + format_byte_size(memory);
}

}  // namespace aggrik8s::builder
