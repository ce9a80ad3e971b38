#include "builder/rpi/ephemeral_initramfs.hpp"

#include <algorithm>
#include <map>

#include "builder/build_output.hpp"
#include "builder/rpi/ephemeral_init_sh.hpp"
#include "builder/rpi/ephemeral_root_plan.hpp"
#include "builder/rpi/ephemeral_udhcpc_sh.hpp"
#include "builder/rpi/kernel_module_closure.hpp"
#include "builder/rpi/static_busybox.hpp"
#include "core/error.hpp"
#include "disk/cpio_archive.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/in_memory_compression.hpp"

namespace aggrik8s::builder {
namespace {

// A module is at most a few MiB (the largest in Debian's arm64 kernel is ~10 MiB uncompressed).
constexpr std::size_t max_module_bytes = 128u << 20;

// Where Debian and Raspberry Pi OS keep compressed modules: the suffix the stored (plain) file drops.
std::string without_compression_suffix(const std::string& path) {
  for (std::string_view suffix : {".xz", ".zst", ".gz"}) {
    if (path.ends_with(suffix)) return path.substr(0, path.size() - suffix.size());
  }
  return path;
}

std::string modules_directory(const Ext4Filesystem& root, const std::string& release) {
  std::string directory = "/lib/modules/" + release;
  if (root.exists(directory + "/modules.dep")) return directory;
  std::string present;
  if (root.exists("/lib/modules")) {
    for (const auto& entry : root.list_directory("/lib/modules")) present += (present.empty() ? "" : ", ") + entry.name;
  }
  throw Error("the image has no " + directory + "/modules.dep for kernel " + release + " (it has modules for: " +
              (present.empty() ? "none" : present) + "); the kernel release must be the one the image's kernel reports");
}

std::map<std::string, std::string> parse_kernel_config(std::string_view config) {
  std::map<std::string, std::string> values;
  while (!config.empty()) {
    std::size_t end = config.find('\n');
    std::string_view line = config.substr(0, end);
    config = end == std::string_view::npos ? std::string_view() : config.substr(end + 1);
    std::size_t equals = line.find('=');
    if (line.starts_with("CONFIG_") && equals != std::string_view::npos) {
      values[std::string(line.substr(0, equals))] = std::string(line.substr(equals + 1));
    }
  }
  return values;
}

}  // namespace

const std::vector<std::string>& ephemeral_initramfs_applets() {
  static const std::vector<std::string> applets{
      "cat",  "chmod", "cut",  "grep",  "insmod", "ip",          "ls",   "mkdir", "mount", "mv",
      "readlink", "reboot", "rm", "sed", "sh", "sha256sum", "sleep", "stat", "switch_root", "tail", "tar",
      "tr",   "udhcpc", "umount", "uname", "wc", "wget"};
  return applets;
}

std::vector<std::string> initramfs_kernel_config_problems(std::string_view config, InitramfsCompression compression) {
  auto values = parse_kernel_config(config);
  std::vector<std::string> problems;
  auto want = [&](const std::string& name, bool module_will_do, const std::string& why) {
    auto it = values.find("CONFIG_" + name);
    std::string value = it == values.end() ? "" : it->second;
    if (value == "y" || (module_will_do && value == "m")) return;
    problems.push_back("CONFIG_" + name + " is " + (value.empty() ? "not set" : value) +
                       (module_will_do ? " (needs y or m): " : " (needs y): ") + why);
  };
  want("BLK_DEV_INITRD", false, "the kernel must unpack an initramfs");
  if (compression == InitramfsCompression::gzip) want("RD_GZIP", false, "the initramfs is gzip'd");
  want("PACKET", true, "udhcpc sends DHCP through an AF_PACKET socket");
  return problems;
}

BuiltInitramfs write_ephemeral_initramfs(const Ext4Filesystem& root, const EphemeralInitramfsOptions& options,
                                         const std::filesystem::path& output) {
  const std::string& release = options.kernel_release;
  if (release.empty() || release.find('/') != std::string::npos) {
    throw Error("ephemeral initramfs: kernel release '" + release + "' is not a release name (uname -r)");
  }
  BuiltInitramfs built;
  built.path = output;

  std::string config_path = "/boot/config-" + release;
  if (root.exists(config_path)) {
    std::string config = root.read_file(config_path);
    // The root's needs (squashfs, loop, overlay, tmpfs, devtmpfs: /init mounts them) without its
    // compressor, which the root's writer checks; then the initramfs' own.
    auto problems = ephemeral_kernel_config_problems(config, "");
    for (auto& problem : initramfs_kernel_config_problems(config, options.compression)) {
      if (std::find(problems.begin(), problems.end(), problem) == problems.end()) problems.push_back(std::move(problem));
    }
    if (!problems.empty()) {
      std::string text;
      for (const auto& problem : problems) text += "\n  " + problem;
      throw Error("the image's kernel " + release + " cannot boot an ephemeral node (" + config_path + "):" + text);
    }
    built.kernel_config_checked = true;
  }

  std::string modules_dir = modules_directory(root, release);
  std::string builtin_list = root.exists(modules_dir + "/modules.builtin") ? root.read_file(modules_dir + "/modules.builtin") : "";
  std::vector<std::string> required = options.required_modules;
  required.insert(required.end(), options.extra_modules.begin(), options.extra_modules.end());
  KernelModuleClosure closure = resolve_kernel_modules(root.read_file(modules_dir + "/modules.dep"), builtin_list, required,
                                                       options.optional_modules, release);

  StaticBusybox busybox = options.busybox ? busybox_from_file(*options.busybox) : busybox_of_root(root);
  if (auto missing = busybox_missing_applets(busybox.binary, ephemeral_initramfs_applets()); !missing.empty()) {
    std::string names;
    for (const auto& name : missing) names += (names.empty() ? "" : " ") + name;
    throw Error("the busybox from " + busybox.source + " lacks applets the initramfs runs: " + names +
                " (Debian's busybox-static has them all)");
  }
  built.busybox_source = busybox.source;

  std::vector<CpioEntry> entries;
  auto directory = [&](const std::string& path, std::uint32_t permissions = 0755) {
    entries.push_back({path, CpioEntryType::directory, permissions, {}, 0, 0});
  };
  for (const char* path : {"bin", "dev", "etc", "lib", "newroot", "proc", "run", "sys"}) directory(path);
  directory("root", 0700);
  // /dev/console (5:1): the kernel opens it for /init's stdin, stdout and stderr before anything is
  // mounted; without it /init's messages would go nowhere until devtmpfs is up.
  entries.push_back({"dev/console", CpioEntryType::character_device, 0600, {}, 5, 1});
  entries.push_back({"init", CpioEntryType::regular, 0755, std::string(embedded::ephemeral_init_sh), 0, 0});
  entries.push_back({"etc/udhcpc.script", CpioEntryType::regular, 0755, std::string(embedded::ephemeral_udhcpc_sh), 0, 0});
  entries.push_back({"bin/busybox", CpioEntryType::regular, 0755, std::move(busybox.binary), 0, 0});
  for (const auto& applet : ephemeral_initramfs_applets()) {
    entries.push_back({"bin/" + applet, CpioEntryType::symlink, 0777, "busybox", 0, 0});
  }

  std::map<std::string, bool> requested;
  for (const auto& module : closure.requested) requested[module.name] = true;
  std::string load_list = "# Kernel modules for " + release + " in load order (dependencies first), for insmod; written by aggrik8s-image.\n";
  std::string builtin_names;
  for (const auto& module : closure.requested) {
    if (module.built_in) builtin_names += (builtin_names.empty() ? "" : " ") + module.name;
  }
  if (!builtin_names.empty()) load_list += "# built in: " + builtin_names + "\n";
  for (const auto& path : closure.load_order) {
    // The kernel can insmod a compressed module only with CONFIG_MODULE_DECOMPRESS (5.17+, rarely
    // set); stored plain, any kernel loads it, and the initramfs' own gzip compresses it anyway.
    std::string stored = without_compression_suffix(path);
    std::string where = modules_dir + "/" + path;
    std::string content = decompress_in_memory(root.read_file(where), max_module_bytes, where);
    entries.push_back({"lib/modules/" + release + "/" + stored, CpioEntryType::regular, 0644, std::move(content), 0, 0});
    load_list += stored + "\n";
    std::string name = kernel_module_name(path);
    built.modules.push_back({name, false, stored, requested.contains(name)});
  }
  for (const auto& module : closure.requested) {
    if (module.built_in) built.modules.push_back({module.name, true, "", true});
    if (!module.available) built.absent_optional_modules.push_back(module.name);
  }
  entries.push_back({"lib/modules/" + release + "/aggrik8s.modules", CpioEntryType::regular, 0644, load_list, 0, 0});

  std::string archive = write_newc_cpio(std::move(entries), options.fixed_time);
  if (options.compression == InitramfsCompression::gzip) archive = gzip_in_memory(archive, 9);
  write_text_file_atomically(output, archive, FileMode::less_umask(0644));
  built.bytes = archive.size();
  built.sha256 = Sha256::of(archive);
  return built;
}

}  // namespace aggrik8s::builder
