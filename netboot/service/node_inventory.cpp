#include "netboot/service/node_inventory.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include <fstream>

#include "core/config_reader.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"
#include "disk/filesystem_probe.hpp"
#include "core/file_descriptor.hpp"
#include "core/identifiers.hpp"
#include "core/permission_detail.hpp"
#include "netboot/service/talos_wipe_cycle.hpp"

namespace aggrik8s::netboot {
namespace fs = std::filesystem;

const char* to_string(BootMode mode) {
  switch (mode) {
    case BootMode::install: return "install";
    case BootMode::local_disk: return "local";
    case BootMode::ephemeral: return "ephemeral";
  }
  return "install";
}

const char* to_string(UnknownNodeAction action) {
  switch (action) {
    case UnknownNodeAction::ignore: return "ignore";
    case UnknownNodeAction::default_profile: return "default";
    case UnknownNodeAction::maintenance: return "maintenance";
  }
  return "ignore";
}

std::map<std::string, fs::path> BootProfile::assets() const {
  std::map<std::string, fs::path> out;
  auto add = [&](const fs::path& path) { out.emplace(path.filename().string(), path); };
  if (const auto* talos = std::get_if<TalosBoot>(&target)) {
    add(talos->kernel);
    add(talos->initramfs);
  } else if (const auto* kernel = std::get_if<KernelBoot>(&target)) {
    add(kernel->kernel);
    for (const auto& initrd : kernel->initrds) add(initrd);
  }
  return out;
}

std::size_t NodeSelector::specificity() const {
  return (mac ? 1U : 0U) + (uuid ? 1U : 0U) + (serial ? 1U : 0U);
}

bool NodeSelector::matches(const NodeFacts& facts) const {
  if (specificity() == 0) return false;
  if (mac && facts.mac != mac) return false;
  if (uuid && facts.uuid != uuid) return false;
  if (serial && facts.serial != serial) return false;
  return true;
}

const InventoryNode* NodeInventory::match(const NodeFacts& facts) const {
  const InventoryNode* best = nullptr;
  for (const auto& node : nodes) {
    if (!node.match.matches(facts)) continue;
    if (best == nullptr || node.match.specificity() > best->match.specificity()) best = &node;
  }
  return best;
}

const InventoryNode* NodeInventory::named_by(const NodeFacts& id) const {
  const InventoryNode* found = nullptr;
  for (const auto& node : nodes) {
    bool named = (id.mac && node.match.mac == id.mac) || (id.uuid && node.match.uuid == id.uuid) ||
                 (id.serial && node.match.serial == id.serial);
    if (!named) continue;
    if (found != nullptr) return nullptr;
    found = &node;
  }
  return found;
}

const InventoryNode* NodeInventory::find(std::string_view name) const {
  for (const auto& node : nodes) {
    if (node.name == name) return &node;
  }
  return nullptr;
}

const BootProfile* NodeInventory::profile_of(const InventoryNode& node) const {
  auto found = profiles.find(node.profile);
  return found == profiles.end() ? nullptr : &found->second;
}

const BootProfile* NodeInventory::unknown_node_profile() const {
  if (unknown_action == UnknownNodeAction::ignore) return nullptr;
  auto found = profiles.find(unknown_profile);
  return found == profiles.end() ? nullptr : &found->second;
}

std::optional<std::string> normalize_pi_serial(std::string_view text) {
  if (text.size() != 8 && text.size() != 16) return std::nullopt;
  std::string out;
  for (char c : text) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  // /proc/cpuinfo shows 16 digits; the bootloader's TFTP directory uses the low 8.
  return out.substr(out.size() - 8);
}

std::optional<std::string> normalize_mac_any(std::string_view text) { return normalize_mac(text); }

namespace {

// A boot.img's sha256, hashed once per file version (device, inode, size, modification time): every
// load (start, SIGHUP, --check) compares it with boot.sig, and hashing each node's ~100 MB boot.img
// again on every reload cost ~50 ms a node.
std::string boot_image_sha256_hex(const fs::path& image) {
  struct stat info {};
  if (::stat(image.c_str(), &info) != 0) return Sha256::of_file(image).hex();  // the hash names the error
  using Key = std::tuple<dev_t, ino_t, off_t, std::int64_t, std::int64_t>;
  const Key key{info.st_dev, info.st_ino, info.st_size, info.st_mtim.tv_sec, info.st_mtim.tv_nsec};
  static std::mutex mutex;
  static std::map<Key, std::string> digests;
  {
    std::lock_guard lock(mutex);
    if (auto found = digests.find(key); found != digests.end()) return found->second;
  }
  std::string digest = Sha256::of_file(image).hex();
  std::lock_guard lock(mutex);
  digests[key] = digest;
  return digest;
}

class InventoryReader {
 public:
  InventoryReader(Diagnostics& diagnostics, bool check_files) : diagnostics_(diagnostics), check_files_(check_files) {}

  // What the Pi bootloader checks first, so a mismatch is found here rather than on the Pi's UART:
  // boot.img is a FAT image (the ramdisk), and boot.sig's first line is its sha256. (The RSA
  // signature needs the key in the Pi's EEPROM; `inspect --boot-sig` checks it.)
  void check_http_boot_pair(ConfigMapReader& reader, const fs::path& image, const fs::path& signature) {
    std::error_code ec;
    if (!fs::is_regular_file(image, ec) || !fs::is_regular_file(signature, ec)) return;  // reported already
    try {
      if (probe_filesystem(image, 0, 0).type != "vfat") {
        reader.error_at("boot_img", "'" + reader.key_path("boot_img") + "': " + image.string() +
                                        " is not a FAT filesystem image (the bootloader loads boot.img as its boot "
                                        "partition; a whole disk image is not one)");
        return;
      }
      std::ifstream in(signature);
      std::string first;
      std::getline(in, first);
      std::string digest = boot_image_sha256_hex(image);
      if (first.size() != 64 || first.find_first_not_of("0123456789abcdef") != std::string::npos) {
        reader.error_at("boot_img", "'" + reader.key_path("boot_img") + "': " + signature.string() +
                                        " is not a boot.sig: its first line must be boot.img's sha256 (64 lowercase hex)");
      } else if (first != digest) {
        reader.error_at("boot_img", "'" + reader.key_path("boot_img") + "': " + signature.string() + " names sha256 " +
                                        first + ", but " + image.string() + " has " + digest +
                                        " (another build's signature?): the bootloader refuses it");
      }
    } catch (const Error& e) {
      reader.error_at("boot_img", "'" + reader.key_path("boot_img") + "': " + e.what());
    }
  }

  void check_file(ConfigMapReader& reader, std::string_view key, const std::optional<fs::path>& path) {
    if (!path || !check_files_) return;
    // Opened, not just looked at: serve may run as its own user (the systemd unit), and a 0600 image
    // or a directory it cannot enter must fail here, naming whose permission is missing.
    const std::string what = "'" + reader.key_path(key) + "': " + path->string();
    struct stat info {};
    if (::stat(path->c_str(), &info) != 0) {
      const int error = errno;
      reader.error_at(key, what + (error == ENOENT ? " does not exist" : " cannot be read: " + std::string(std::strerror(error)) +
                                                                         permission_denied_detail(*path, error)));
      return;
    }
    if (!S_ISREG(info.st_mode)) {
      reader.error_at(key, what + " is not a regular file");
      return;
    }
    FileDescriptor file(::open(path->c_str(), O_RDONLY | O_CLOEXEC));
    if (!file) {
      const int error = errno;
      reader.error_at(key, what + " cannot be read: " + std::strerror(error) +
                               permission_denied_detail(*path, error));
    }
  }

  // A rebuild-on-reboot Talos profile's wipe boot (docs/netboot.md, "Rebuild-on-reboot Talos nodes").
  void read_talos_wipe(ConfigMapReader& talos, BootMode mode, TalosBoot& boot) {
    bool given = talos.has("wipe") || talos.has("wipe_reboot_window_s");
    if (auto wipe = talos.string("wipe")) {
      if (auto problem = check_talos_wipe_argument(*wipe)) {
        talos.error_at("wipe", "'" + talos.key_path("wipe") + "': " + *problem);
      }
      boot.wipe = *wipe;
      if (*wipe == "system") {
        diagnostics_.warning(talos.node("wipe")->location,
                             "'" + talos.key_path("wipe") + "': system wipes the whole system disk, META included: "
                             "Talos is then not installed, and a machine config with machine.install installs and "
                             "reboots on every normal boot, which serve takes for the next power-on (a wipe and "
                             "install loop); system:EPHEMERAL,STATE keeps the installation");
      }
    }
    if (auto window = talos.integer("wipe_reboot_window_s", 10, 86400)) boot.wipe_reboot_window = std::chrono::seconds(*window);
    if (given && mode != BootMode::ephemeral) {
      talos.error("'" + talos.path() + ".wipe' and 'wipe_reboot_window_s' apply only to profiles with mode: ephemeral");
    }
  }

  std::optional<BootProfile> read_profile(const ConfigNode& node, const std::string& name, const std::string& path) {
    ConfigMapReader reader(node, diagnostics_, path);
    if (!reader.valid()) {
      diagnostics_.error(node.location, "'" + path + "' must be a map, got " + node.kind_name());
      return std::nullopt;
    }
    BootProfile profile;
    profile.name = name;
    profile.where = node.location;
    auto mode = reader.one_of("mode", {"install", "local", "ephemeral"});
    if (mode == "local") profile.mode = BootMode::local_disk;
    if (mode == "ephemeral") profile.mode = BootMode::ephemeral;
    int kinds = 0;
    if (auto pi = reader.map("rpi_image")) {
      ++kinds;
      RaspberryPiImageBoot boot;
      auto image = pi->path_value("image", true);
      check_file(*pi, "image", image);
      if (image) boot.image = *image;
      boot.boot_partition = static_cast<std::uint32_t>(pi->integer("boot_partition", 1, 128).value_or(1));
      boot.boot_img = pi->path_value("boot_img");
      check_file(*pi, "boot_img", boot.boot_img);
      boot.boot_sig = pi->path_value("boot_sig");
      if (boot.boot_img && !boot.boot_sig) {
        fs::path sig = *boot.boot_img;
        boot.boot_sig = sig.extension() == ".img" ? sig.replace_extension(".sig") : fs::path(sig.string() + ".sig");
      }
      if (boot.boot_sig && !pi->has("boot_sig")) {
        std::error_code ec;
        if (check_files_ && !fs::is_regular_file(*boot.boot_sig, ec)) {
          pi->error_at("boot_img", "'" + pi->key_path("boot_img") + "': no signature beside it: " + boot.boot_sig->string() +
                                       " (build writes both with output.http_boot; or give boot_sig)");
        }
      } else {
        check_file(*pi, "boot_sig", boot.boot_sig);
      }
      if (boot.boot_sig && !boot.boot_img) pi->error_at("boot_sig", "'" + pi->key_path("boot_sig") + "' needs boot_img");
      if (check_files_ && boot.boot_img && boot.boot_sig) check_http_boot_pair(*pi, *boot.boot_img, *boot.boot_sig);
      pi->finish();
      profile.target = boot;
    }
    if (auto pi = reader.map("rpi_ephemeral")) {
      ++kinds;
      RaspberryPiEphemeralBoot boot;
      if (auto build = pi->path_value("build", true)) boot.build = *build;
      std::error_code ec;
      if (check_files_ && !boot.build.empty() && !fs::is_regular_file(boot.build / "current.json", ec)) {
        pi->error_at("build", "'" + pi->key_path("build") + "': " + boot.build.string() +
                                  " has no current.json (expected OUT/ephemeral/<profile> of a build with output.ephemeral)");
      }
      pi->finish();
      // Nothing of such a node survives a reboot: that is what the profile is for.
      if (mode && *mode != "ephemeral") reader.error_at("mode", "profiles with 'rpi_ephemeral' are always mode: ephemeral");
      profile.mode = BootMode::ephemeral;
      profile.target = boot;
    }
    if (auto talos = reader.map("talos")) {
      ++kinds;
      TalosBoot boot;
      auto kernel = talos->path_value("kernel", true);
      auto initramfs = talos->path_value("initramfs", true);
      check_file(*talos, "kernel", kernel);
      check_file(*talos, "initramfs", initramfs);
      if (kernel) boot.kernel = *kernel;
      if (initramfs) boot.initramfs = *initramfs;
      boot.arguments = talos->string("args").value_or("");
      read_talos_wipe(*talos, profile.mode, boot);
      talos->finish();
      profile.target = boot;
    }
    if (auto kernel_map = reader.map("kernel")) {
      ++kinds;
      KernelBoot boot;
      auto kernel = kernel_map->path_value("kernel", true);
      check_file(*kernel_map, "kernel", kernel);
      if (kernel) boot.kernel = *kernel;
      if (kernel_map->has("initrd")) {
        auto names = kernel_map->string_list("initrd");
        const ConfigNode* list = kernel_map->node("initrd");
        for (std::size_t i = 0; names && i < names->size(); ++i) {
          fs::path initrd((*names)[i]);
          if (initrd.is_relative()) initrd = list->base_directory() / initrd;
          boot.initrds.push_back(initrd.lexically_normal());
          check_file(*kernel_map, "initrd", boot.initrds.back());
        }
      }
      boot.arguments = kernel_map->string("args").value_or("");
      kernel_map->finish();
      profile.target = boot;
    }
    if (kinds == 0 && profile.mode == BootMode::local_disk) {
      profile.target = LocalDiskBoot{};
    } else if (kinds != 1) {
      reader.error("profile '" + name + "' must have exactly one of 'rpi_image', 'rpi_ephemeral', 'talos' and 'kernel'" +
                   (kinds == 0 ? " (or none, with mode: local)" : ""));
    }
    // Asset names are URL path segments: two files with one base name would shadow each other.
    std::set<std::string> names;
    auto assets = profile.assets();
    std::size_t expected = 0;
    if (std::holds_alternative<TalosBoot>(profile.target)) expected = 2;
    if (const auto* k = std::get_if<KernelBoot>(&profile.target)) expected = 1 + k->initrds.size();
    if (kinds == 1 && assets.size() != expected) {
      reader.error("profile '" + name + "' names two files with the same base name; rename one of them");
    }
    reader.finish();
    return profile;
  }

  std::optional<std::string> read_identifier(ConfigMapReader& reader, std::string_view key,
                                             std::optional<std::string> (*normalize)(std::string_view),
                                             const char* form) {
    auto text = reader.string(key);
    if (!text) return std::nullopt;
    auto normalized = normalize(*text);
    if (!normalized) reader.error_at(key, "'" + reader.key_path(key) + "' must be " + form + ", got '" + *text + "'");
    return normalized;
  }

  std::optional<InventoryNode> read_node(const ConfigNode& node, const std::string& path) {
    ConfigMapReader reader(node, diagnostics_, path);
    if (!reader.valid()) {
      diagnostics_.error(node.location, "'" + path + "' must be a map, got " + node.kind_name());
      return std::nullopt;
    }
    InventoryNode out;
    out.where = node.location;
    out.name = reader.string("name", true).value_or("");
    if (!out.name.empty() && !is_dns_label(out.name)) {
      reader.error_at("name", "'" + reader.key_path("name") + "' must be a DNS label (a-z, 0-9, '-'), got '" +
                                  out.name + "'");
    }
    if (auto match = reader.map("match", true)) {
      out.match.mac = read_identifier(*match, "mac", &normalize_mac, "a MAC address like 52:54:00:12:34:56");
      out.match.uuid = read_identifier(*match, "uuid", &normalize_uuid, "an SMBIOS UUID (8-4-4-4-12 hex digits)");
      out.match.serial =
          read_identifier(*match, "serial", &normalize_pi_serial, "a Raspberry Pi serial (8 or 16 hex digits)");
      if (out.match.specificity() == 0 && !diagnostics_.has_errors()) {
        match->error("'" + match->path() + "' needs at least one of mac, uuid and serial");
      }
      match->finish();
    }
    out.profile = reader.string("profile", true).value_or("");
    out.address = reader.string("address");
    if (out.address && !is_ipv4_address(*out.address)) {
      reader.error_at("address", "'" + reader.key_path("address") + "' must be an IPv4 address, got '" + *out.address + "'");
    }
    out.reservation_mac = read_identifier(reader, "reservation_mac", &normalize_mac, "a MAC address like d8:3a:dd:12:34:56");
    if (out.reservation_mac && !out.address) {
      reader.error_at("reservation_mac", "'" + reader.key_path("reservation_mac") + "' needs 'address' (the address it reserves)");
    }
    if (out.reservation_mac && out.match.mac) {
      reader.error_at("reservation_mac", "'" + reader.key_path("reservation_mac") + "': match.mac is the reservation's MAC already");
    }
    out.talos_config = read_secret_reference(reader, "talos_config");
    out.user_data = read_secret_reference(reader, "user_data");
    out.rke2_config = read_secret_reference(reader, "rke2_config");
    if (check_files_) {
      for (const auto* reference : {&out.talos_config, &out.user_data, &out.rke2_config}) {
        if (*reference) check_secret(**reference, diagnostics_);
      }
    }
    reader.finish();
    return out;
  }

  NodeInventory read(const ConfigNode& tree) {
    NodeInventory inventory;
    ConfigMapReader top(tree, diagnostics_, "");
    if (!top.valid()) {
      diagnostics_.error(tree.location, std::string("a nodes file must be a map with 'profiles' and 'nodes', got ") +
                                            tree.kind_name());
      return inventory;
    }
    if (auto profiles = top.map("profiles", true)) {
      const ConfigNode* node = top.node("profiles");
      for (const auto& entry : node->entries) {
        profiles->ignore(entry.key);
        if (auto profile = read_profile(entry.value, entry.key, "profiles." + entry.key)) {
          inventory.profiles.emplace(entry.key, std::move(*profile));
        }
      }
      profiles->finish();
    }
    std::map<std::string, SourceLocation> names;
    top.list("nodes", [&](const ConfigNode& item, const std::string& path) {
      auto node = read_node(item, path);
      if (!node) return;
      if (!node->name.empty()) {
        auto [it, inserted] = names.emplace(node->name, node->where);
        if (!inserted) diagnostics_.error(node->where, "node '" + node->name + "' is already defined at " + it->second.str());
      }
      if (!node->profile.empty() && !inventory.profiles.contains(node->profile)) {
        diagnostics_.error(item.find("profile")->location,
                           "'" + path + ".profile' names profile '" + node->profile + "', which is not defined");
      }
      for (const auto& other : inventory.nodes) {
        // One address pinned to two nodes: full-mode DHCP can reserve it for one MAC only, and the
        // address is how serve tells them apart (their secrets go to the node bound to it).
        if (node->address && other.address == node->address) {
          diagnostics_.error(item.find("address")->location, "'" + path + ".address' " + *node->address +
                                                                 " is already pinned to node '" + other.name + "' (" +
                                                                 other.where.str() + "): each node needs its own address");
        }
        if (other.match.specificity() > 0 && other.match.mac == node->match.mac &&
            other.match.uuid == node->match.uuid && other.match.serial == node->match.serial) {
          diagnostics_.error(node->where, "node '" + node->name + "' has the same selectors as node '" + other.name +
                                              "' (" + other.where.str() + ")");
        }
      }
      inventory.nodes.push_back(std::move(*node));
    });
    if (const ConfigNode* unknown = top.node("unknown_nodes")) {
      if (unknown->is_scalar()) {
        if (unknown->scalar != "ignore") {
          diagnostics_.error(unknown->location, "'unknown_nodes' as a word must be 'ignore'; to boot unknown nodes "
                                                "write {action: default|maintenance, profile: NAME}");
        }
      } else {
        ConfigMapReader reader(*unknown, diagnostics_, "unknown_nodes");
        if (!reader.valid()) {
          diagnostics_.error(unknown->location, "'unknown_nodes' must be 'ignore' or a map");
        } else {
          auto action = reader.one_of("action", {"ignore", "default", "maintenance"}, true).value_or("ignore");
          if (action == "default") inventory.unknown_action = UnknownNodeAction::default_profile;
          if (action == "maintenance") inventory.unknown_action = UnknownNodeAction::maintenance;
          inventory.unknown_profile = reader.string("profile").value_or("");
          if (inventory.unknown_action != UnknownNodeAction::ignore) {
            if (inventory.unknown_profile.empty()) {
              reader.error("'unknown_nodes.action: " + action + "' needs 'unknown_nodes.profile'");
            } else if (!inventory.profiles.contains(inventory.unknown_profile)) {
              reader.error_at("profile", "'unknown_nodes.profile' names profile '" + inventory.unknown_profile +
                                             "', which is not defined");
            }
          }
          reader.finish();
        }
      }
    }
    top.finish();
    return inventory;
  }

 private:
  Diagnostics& diagnostics_;
  bool check_files_;
};

}  // namespace

NodeInventory parse_node_inventory(const ConfigNode& tree, Diagnostics& diagnostics, bool check_files) {
  return InventoryReader(diagnostics, check_files).read(tree);
}

NodeInventory read_node_inventory(const fs::path& file, Diagnostics& diagnostics) {
  ConfigNode tree = load_yaml_file(file, diagnostics);
  if (tree.is_null()) {
    if (!diagnostics.has_errors()) diagnostics.error({file.string(), 1, 1}, "the nodes file is empty");
    return {};
  }
  NodeInventory inventory = parse_node_inventory(tree, diagnostics);
  inventory.file = file;
  return inventory;
}

}  // namespace aggrik8s::netboot
