#include "inspect/image_inspector.hpp"

#include <signal.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <mutex>
#include <sstream>
#include <thread>

// libguestfs is a C library; its header is not written for -Wold-style-cast/-Wconversion C++.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wpedantic"
#include <guestfs.h>
#pragma GCC diagnostic pop

#include "disk/block_device.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/filesystem_probe.hpp"
#include "disk/image_decompressor.hpp"
#include "disk/partition_table.hpp"
#include "builder/rpi/pi_boot_files.hpp"
#include "core/endian.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/log.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view managed_block_begin = "# --- aggrik8s-image: begin";
constexpr std::string_view managed_block_end = "# --- aggrik8s-image: end ---";
const std::string images_directory = "/var/lib/rancher/rke2/agent/images";
const std::string units_wanted_directory = "/etc/systemd/system/multi-user.target.wants";
const std::string rke2_config_path = "/etc/rancher/rke2/config.yaml";
const std::string rke2_registries_path = "/etc/rancher/rke2/registries.yaml";
const std::string rke2_binary_path = "/usr/local/bin/rke2";
const std::vector<std::string> nocloud_files = {"meta-data", "user-data", "network-config"};

std::string hex_byte(std::uint8_t value) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", value);
  return text;
}

std::string mbr_type_name(std::uint8_t type) {
  switch (type) {
    case 0x01: return "FAT12";
    case 0x04: case 0x06: return "FAT16";
    case 0x0b: return "FAT32";
    case 0x0c: return "FAT32 (LBA)";
    case 0x0e: return "FAT16 (LBA)";
    case 0x05: case 0x0f: return "Extended";
    case 0x82: return "Linux swap";
    case 0x83: return "Linux";
    case 0x8e: return "Linux LVM";
    case 0xee: return "GPT protective";
    case 0xef: return "EFI System";
    default: return "";
  }
}

std::string gpt_type_name(const std::string& guid) {
  static const std::map<std::string, std::string> names{
      {"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System"},
      {"ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "Microsoft basic data"},
      {"0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"},
      {"b921b045-1df0-41c3-af44-4c6f280d3fae", "Linux root (ARM-64)"},
      {"0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"}};
  auto it = names.find(guid);
  return it == names.end() ? "" : it->second;
}

std::string file_type_name(Ext4FileType type) {
  switch (type) {
    case Ext4FileType::regular: return "file";
    case Ext4FileType::directory: return "directory";
    case Ext4FileType::symlink: return "symlink";
    case Ext4FileType::character_device: return "character device";
    case Ext4FileType::block_device: return "block device";
    case Ext4FileType::fifo: return "fifo";
    case Ext4FileType::socket: return "socket";
  }
  return "other";
}

std::string octal_mode(std::uint16_t permissions) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(permissions));
  return text;
}

std::string trim(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' || text.back() == '\t')) {
    text.pop_back();
  }
  std::size_t start = 0;
  while (start < text.size() && (text[start] == ' ' || text[start] == '\t')) ++start;
  return text.substr(start);
}

std::string unquote(std::string value) {
  if (value.size() >= 2 && (value.front() == '\'' || value.front() == '"') && value.back() == value.front()) {
    return value.substr(1, value.size() - 2);
  }
  return value;
}

// ---- filesystems: named by libblkid, so a partition of the wrong type or an unexpected format is seen too ----

// blkid names every FAT "vfat" and keeps FAT12/16/32 in VERSION; the report has always said "FAT32".
std::string filesystem_name(const ProbedFilesystem& probed) {
  if (probed.type == "vfat") return probed.version.empty() ? "FAT" : probed.version;
  return probed.type;
}

// Type, label and UUID from libblkid; sizes from the filesystem itself where this tool has a reader.
// Returns why that reader could not open it, if it could not.
std::optional<std::string> describe_filesystem(const fs::path& raw, BlockDevice& device, const PartitionTable& table,
                                               InspectedPartition& partition, std::vector<std::string>& warnings) {
  std::string where = "partition " + std::to_string(partition.index);
  ProbedFilesystem probed = probe_filesystem(raw, partition.start_bytes, partition.size_bytes);
  if (!probed.ambiguous_types.empty()) {
    warnings.push_back(where + " carries more than one filesystem signature (" + probed.ambiguous_types +
                       "); libblkid will not choose and neither will Linux's mount");
    return std::nullopt;
  }
  if (!probed.found()) return std::nullopt;
  partition.filesystem = filesystem_name(probed);
  partition.label = probed.label;
  partition.uuid = probed.uuid;
  if (probed.bad_checksum) warnings.push_back(where + ": the " + probed.type + " superblock's checksum does not match (damaged)");
  try {
    if (probed.type == "vfat") {
      SubrangeBlockDevice view = open_partition(device, table, partition.index);
      FatFilesystem fat(view);
      partition.filesystem_bytes = fat.total_data_bytes();
      partition.free_bytes = fat.free_bytes();
    } else if (probed.type == "ext2" || probed.type == "ext3" || probed.type == "ext4") {
      Ext4Filesystem ext = Ext4Filesystem::open(raw, partition.start_bytes, partition.size_bytes, Ext4Access::read_only);
      Ext4SpaceUsage usage = ext.space_usage();
      partition.filesystem_bytes = usage.total_bytes();
      partition.free_bytes = usage.free_bytes();
    }
  } catch (const Error& e) {
    return where + " (" + partition.filesystem + "): the filesystem cannot be opened: " + e.what();
  }
  return std::nullopt;
}

// ---- files read one at a time: one that cannot be read is reported as such, the rest goes on ----

// target of a symlink found at link_path, as the kernel resolves it (relative to the link's directory,
// ".." above the root staying at the root).
std::string resolve_link(const std::string& link_path, const std::string& target) {
  fs::path joined = target.starts_with("/") ? fs::path(target) : fs::path(link_path).parent_path() / target;
  std::string normal = joined.lexically_normal().generic_string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  return normal.empty() ? "/" : normal;
}

// The root filesystem's files as the report reads them. A file that exists but cannot be read (a
// symlink loop, a dangling link, a directory where a file belongs, a damaged inode or directory) is
// recorded in report.unreadable with the reason and answered as "not read"; before this, one such
// file (an ELOOP on /etc/hostname) made the whole root filesystem look absent.
class RootFiles {
 public:
  RootFiles(const Ext4Filesystem& rootfs, std::uint32_t partition, ImageInspection& report)
      : rootfs_(rootfs), partition_(partition), report_(report) {}

  bool exists(const std::string& path) {
    try {
      return rootfs_.exists(path);
    } catch (const Error& e) {
      unreadable(path, e.what());
      return false;
    }
  }

  // Contents of a regular file, following symlinks; nullopt when absent or unreadable.
  std::optional<std::string> read(const std::string& path) {
    if (!exists(path)) return std::nullopt;
    try {
      return rootfs_.read_file(path);
    } catch (const Error& e) {
      unreadable(path, diagnose(path).value_or(e.what()));
      return std::nullopt;
    }
  }

  // Type, mode and owner without following a symlink in the last component.
  InspectedFile inspect(const std::string& path) {
    InspectedFile file;
    file.path = path;
    try {
      if (!rootfs_.exists(path)) return file;
      Ext4FileStatus status = rootfs_.status(path);
      file.present = true;
      file.type = file_type_name(status.type);
      file.permissions = status.permissions;
      file.uid = status.uid;
      file.gid = status.gid;
      file.size = status.size;
      if (status.type == Ext4FileType::symlink) file.link_target = rootfs_.read_symlink(path);
    } catch (const Error& e) {
      unreadable(path, e.what());
    }
    return file;
  }

  std::vector<Ext4DirectoryEntry> list(const std::string& path) {
    try {
      return rootfs_.list_directory(path);
    } catch (const Error& e) {
      unreadable(path, e.what());
      return {};
    }
  }

 private:
  // Why a file that exists cannot be read, in words (libext2fs says "Too many symbolic links
  // encountered" for a loop, whichever link of the chain it is): walks the symlink chain itself.
  // nullopt when the chain looks sound, and libext2fs' own message is the best reason there is.
  std::optional<std::string> diagnose(const std::string& path) const {
    try {
      std::string current = path;
      std::vector<std::string> chain{path};
      // 40 links, as Linux's path walk allows (MAXSYMLINKS).
      for (int hops = 0; hops <= 40; ++hops) {
        if (!rootfs_.exists(current)) return "dangling symlink: " + describe_chain(chain) + " (does not exist)";
        Ext4FileStatus status = rootfs_.status(current);
        if (status.type == Ext4FileType::symlink) {
          current = resolve_link(current, rootfs_.read_symlink(current));
          bool loop = std::find(chain.begin(), chain.end(), current) != chain.end();
          chain.push_back(current);
          if (loop) return "symlink loop: " + describe_chain(chain);
          continue;
        }
        if (status.type == Ext4FileType::regular) return std::nullopt;
        return (hops > 0 ? describe_chain(chain) + ": " : std::string()) + "a " + file_type_name(status.type) +
               ", not a regular file";
      }
      return "too many levels of symbolic links: " + describe_chain(chain);
    } catch (const Error&) {
      return std::nullopt;
    }
  }
  static std::string describe_chain(const std::vector<std::string>& chain) {
    std::string text;
    for (const auto& p : chain) text += (text.empty() ? "" : " -> ") + p;
    return text;
  }
  void unreadable(const std::string& path, const std::string& reason) {
    for (const auto& u : report_.unreadable) {
      if (u.partition == partition_ && u.path == path) return;  // read twice (e.g. exists, then read)
    }
    report_.unreadable.push_back({partition_, path, reason});
  }

  const Ext4Filesystem& rootfs_;
  std::uint32_t partition_;
  ImageInspection& report_;
};

// The boot partition's files: FAT has no links, but a directory can stand where a file belongs and a
// damaged cluster chain makes a file unreadable.
std::optional<std::string> read_boot_file(FatFilesystem& fat, std::uint32_t partition, const std::string& name,
                                          ImageInspection& report) {
  try {
    auto entry = fat.stat(name);
    if (!entry) return std::nullopt;
    if (entry->is_directory) {
      report.unreadable.push_back({partition, "/" + name, "a directory, not a regular file"});
      return std::nullopt;
    }
    return fat.read_text_file(name);
  } catch (const Error& e) {
    report.unreadable.push_back({partition, "/" + name, e.what()});
    return std::nullopt;
  }
}

// ---- boot partition ----

void inspect_boot_files(FatFilesystem& fat, ImageInspection& report, InspectedBootFiles& boot,
                        InspectedFirstBootFiles& first_boot) {
  if (auto cmdline = read_boot_file(fat, boot.partition, "cmdline.txt", report)) {
    boot.has_cmdline = true;
    boot.cmdline = *cmdline;
    std::string line = boot.cmdline;
    if (!line.empty() && line.back() == '\n') line.pop_back();
    boot.cmdline_single_line = line.find('\n') == std::string::npos;
    boot.root_partuuid = cmdline_root_partuuid(boot.cmdline);
    auto args = split_cmdline(boot.cmdline);
    boot.cgroup_memory_enabled = std::find(args.begin(), args.end(), "cgroup_enable=memory") != args.end();
    if (boot.root_partuuid) {
      std::string wanted = *boot.root_partuuid;
      std::transform(wanted.begin(), wanted.end(), wanted.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      for (const auto& p : report.partitions) {
        if (p.partuuid == wanted) boot.root_partition = p.index;
      }
    }
  }
  if (auto config_text = read_boot_file(fat, boot.partition, "config.txt", report)) {
    boot.has_config_txt = true;
    const std::string& config = *config_text;
    Sha256 hash;
    hash.update(std::span(reinterpret_cast<const std::uint8_t*>(config.data()), config.size()));
    boot.config_txt_sha256 = hash.finish().hex();
    std::istringstream in(config);
    std::string line;
    bool inside = false;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.starts_with(managed_block_begin)) {
        inside = true;
        boot.has_managed_block = true;
        continue;
      }
      if (line.starts_with(managed_block_end)) {
        inside = false;
        continue;
      }
      if (inside) boot.managed_config_lines.push_back(line);
      // The last kernel= wins for the firmware (conditional sections aside, which a Pi 5 [all] shares).
      std::string setting = trim(line);
      if (setting.starts_with("kernel=")) boot.config_kernel = setting.substr(7);
    }
  }
  boot.has_kernel8 = fat.exists("kernel8.img");
  boot.has_kernel_2712 = fat.exists("kernel_2712.img");

  auto args = split_cmdline(boot.cmdline);
  if (fat.exists("firstrun.sh")) {
    first_boot.format = InspectedFirstBoot::firstrun_script;
    first_boot.files.push_back("firstrun.sh");
    std::string script = read_boot_file(fat, boot.partition, "firstrun.sh", report).value_or("");
    first_boot.started_by_cmdline = std::any_of(args.begin(), args.end(), [](const std::string& a) {
      return a.starts_with("systemd.run=") && a.ends_with("/firstrun.sh");
    });
    // Our firstrun.sh and rpi-imager's both set NEW_HOSTNAME=... first; the script itself holds
    // password hashes, so only this one line is read from it.
    std::istringstream in(script);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("NEW_HOSTNAME=")) {
        first_boot.hostname = unquote(trim(line.substr(13)));
        break;
      }
    }
  }
  bool any_nocloud = false;
  for (const auto& name : nocloud_files) {
    if (fat.exists(name)) {
      any_nocloud = true;
      first_boot.files.push_back(name);
    }
  }
  for (const auto& a : args) {
    if (a.starts_with("ds=nocloud")) {
      auto i = a.find(";i=");
      if (i != std::string::npos) first_boot.cmdline_instance_id = a.substr(i + 3);
      if (first_boot.format != InspectedFirstBoot::firstrun_script) first_boot.started_by_cmdline = true;
    }
  }
  if (any_nocloud && first_boot.format == InspectedFirstBoot::none) {
    first_boot.format = InspectedFirstBoot::cloud_init;
    if (auto user_data_text = read_boot_file(fat, boot.partition, "user-data", report)) {
      // Only the hostname is taken from user-data: it may carry password hashes.
      try {
        YAML::Node user_data = YAML::Load(*user_data_text);
        if (user_data.IsMap() && user_data["hostname"] && user_data["hostname"].IsScalar()) {
          first_boot.hostname = user_data["hostname"].as<std::string>();
        }
      } catch (const YAML::Exception&) {
        report.warnings.push_back("user-data on the boot partition is not valid YAML");
      }
    }
    if (auto meta_data = read_boot_file(fat, boot.partition, "meta-data", report)) {
      std::istringstream in(*meta_data);
      std::string line;
      while (std::getline(in, line)) {
        if (line.starts_with("instance-id:")) first_boot.instance_id = unquote(trim(line.substr(12)));
        if (line.starts_with("local-hostname:") && !first_boot.hostname) {
          first_boot.hostname = unquote(trim(line.substr(15)));
        }
      }
    }
  }
}

// ---- root filesystem ----

// RKE2's version is linked into its binary as "v1.33.1+rke2r1"; the release tarball carries no version
// file. Scanning for the "+rke2r" marker finds it without running an arm64 program.
std::optional<std::string> version_in_binary(const std::string& binary) {
  for (auto marker = binary.find("+rke2r"); marker != std::string::npos; marker = binary.find("+rke2r", marker + 1)) {
    std::size_t begin = marker;
    while (begin > 0 && (std::isdigit(static_cast<unsigned char>(binary[begin - 1])) || binary[begin - 1] == '.')) --begin;
    if (begin == 0 || binary[begin - 1] != 'v' || begin == marker) continue;
    std::size_t end = marker + 6;
    while (end < binary.size() && std::isdigit(static_cast<unsigned char>(binary[end]))) ++end;
    if (end == marker + 6) continue;
    return binary.substr(begin - 1, end - begin + 1);
  }
  return std::nullopt;
}

void inspect_rke2(RootFiles& rootfs, InspectedRke2Preload& rke2, std::vector<std::string>& warnings) {
  rke2.binary = rootfs.inspect(rke2_binary_path);
  rke2.config = rootfs.inspect(rke2_config_path);
  rke2.registries = rootfs.inspect(rke2_registries_path);

  nlohmann::json record;
  if (auto record_text = rootfs.read(preload_record_path)) {
    const std::string& text = *record_text;
    Sha256 hash;
    hash.update(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    rke2.preload_record_sha256 = hash.finish().hex();
    try {
      record = nlohmann::json::parse(text);
      rke2.has_preload_record = record.is_object();
    } catch (const nlohmann::json::exception&) {
      warnings.push_back(std::string(preload_record_path) + " is not valid JSON");
    }
  }
  auto recorded = [&](const char* key) -> std::optional<std::string> {
    if (rke2.has_preload_record && record.contains(key) && record[key].is_string()) return record[key].get<std::string>();
    return std::nullopt;
  };
  rke2.recorded_node = recorded("node");
  rke2.recorded_role = recorded("role");
  if (rke2.has_preload_record && record.contains("tool") && record["tool"].is_object() &&
      record["tool"].contains("version") && record["tool"]["version"].is_string()) {
    rke2.recorded_tool_version = record["tool"]["version"].get<std::string>();
  }
  if (auto version = recorded("rke2_version")) {
    rke2.version = *version;
    rke2.version_source = "preload.json";
  } else if (rke2.binary.present && rke2.binary.type == "file") {
    if (auto binary = rootfs.read(rke2_binary_path)) {
      if (auto found = version_in_binary(*binary)) {
        rke2.version = *found;
        rke2.version_source = rke2_binary_path;
      }
    }
  }

  // The role is what systemd will start, whatever was recorded.
  if (rootfs.exists(units_wanted_directory)) {
    for (const char* unit : {"rke2-server.service", "rke2-agent.service"}) {
      InspectedFile link = rootfs.inspect(units_wanted_directory + "/" + unit);
      if (link.present) rke2.enabled_units.push_back(link);
    }
  }
  for (const auto& unit : rke2.enabled_units) {
    std::string role = fs::path(unit.path).filename() == "rke2-server.service" ? "server" : "agent";
    rke2.role += (rke2.role.empty() ? "" : "+") + role;
  }

  std::map<std::string, std::pair<std::optional<std::string>, std::optional<std::uint64_t>>> recorded_archives;
  if (rke2.has_preload_record && record.contains("image_archives") && record["image_archives"].is_array()) {
    for (const auto& a : record["image_archives"]) {
      if (!a.is_object() || !a.contains("file") || !a["file"].is_string()) continue;
      std::optional<std::string> sha;
      std::optional<std::uint64_t> size;
      if (a.contains("sha256") && a["sha256"].is_string()) sha = a["sha256"].get<std::string>();
      if (a.contains("size") && a["size"].is_number_unsigned()) size = a["size"].get<std::uint64_t>();
      recorded_archives[a["file"].get<std::string>()] = {sha, size};
    }
  }
  if (rootfs.exists(images_directory)) {
    for (const auto& entry : rootfs.list(images_directory)) {
      if (entry.type != Ext4FileType::regular || entry.name.starts_with(".")) continue;
      InspectedImageArchive archive;
      archive.name = entry.name;
      archive.size = rootfs.inspect(images_directory + "/" + entry.name).size;
      if (auto it = recorded_archives.find(entry.name); it != recorded_archives.end()) {
        archive.recorded_sha256 = it->second.first;
        archive.recorded_size = it->second.second;
        if (archive.recorded_size && *archive.recorded_size != archive.size) {
          warnings.push_back("image archive " + entry.name + " is " + std::to_string(archive.size) +
                             " bytes but preload.json recorded " + std::to_string(*archive.recorded_size));
        }
      }
      rke2.image_archives.push_back(archive);
    }
  }
  for (const auto& [name, facts] : recorded_archives) {
    bool found = std::any_of(rke2.image_archives.begin(), rke2.image_archives.end(),
                             [&](const InspectedImageArchive& a) { return a.name == name; });
    if (!found) warnings.push_back("image archive " + name + " is recorded in preload.json but missing from " + images_directory);
  }

  std::optional<std::string> config_text;
  if (rke2.config.present && rke2.config.type == "file") config_text = rootfs.read(rke2_config_path);
  if (config_text) {
    // Read for its keys only; the text (with the token) goes out of scope here and is never reported.
    try {
      YAML::Node config = YAML::Load(*config_text);
      if (config.IsMap()) {
        for (const auto& item : config) {
          std::string key = item.first.as<std::string>();
          rke2.config_keys.push_back(key);
          if ((key == "token" || key == "token-file") && !item.second.IsNull()) rke2.token_set = true;
          if (key == "node-name" && item.second.IsScalar()) rke2.node_name = item.second.as<std::string>();
        }
      } else if (!config.IsNull()) {
        warnings.push_back(rke2_config_path + " is not a YAML map");
      }
    } catch (const YAML::Exception&) {
      // The parser's message may quote the line, and the line may be the token.
      warnings.push_back(rke2_config_path + " is not valid YAML");
    }
  }

  rke2.present = rke2.binary.present || rke2.config.present || !rke2.enabled_units.empty() ||
                 !rke2.image_archives.empty() || rke2.has_preload_record;
}

void inspect_root_filesystem(const fs::path& image, const InspectedPartition& partition, ImageInspection& report) {
  Ext4Filesystem filesystem =
      Ext4Filesystem::open(image, partition.start_bytes, partition.size_bytes, Ext4Access::read_only);
  RootFiles rootfs(filesystem, partition.index, report);
  InspectedRootFilesystem root;
  root.partition = partition.index;
  if (auto text = rootfs.read("/etc/hostname")) {
    std::string hostname = trim(*text);
    if (!hostname.empty()) root.hostname = hostname;
  }
  for (const char* path : {"/etc/os-release", "/usr/lib/os-release"}) {
    if (root.os) continue;
    auto text = rootfs.read(path);
    if (!text) continue;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("PRETTY_NAME=")) root.os = unquote(trim(line.substr(12)));
    }
  }
  root.has_cloud_init = rootfs.exists("/etc/cloud/cloud.cfg") || rootfs.exists("/usr/bin/cloud-init");
  report.root = root;
  inspect_rke2(rootfs, report.rke2, report.warnings);
}

// ---- warnings: the checks a user would otherwise make by hand before flashing ----

void collect_warnings(ImageInspection& report) {
  auto& w = report.warnings;
  for (const auto& u : report.unreadable) {
    w.push_back("unreadable: " + u.path + " on partition " + std::to_string(u.partition) + " (" + u.reason + ")");
  }
  if (report.boot_error) {
    w.push_back(*report.boot_error);
  } else if (!report.boot) {
    w.push_back("no FAT boot partition found");
  }
  if (report.root_error) {
    w.push_back(*report.root_error);
  } else if (!report.root) {
    // Say what the partitions hold instead, so a damaged or foreign root is told from a missing one.
    std::string held;
    for (const auto& p : report.partitions) {
      if (p.filesystem.starts_with("FAT")) continue;
      held += (held.empty() ? "; " : ", ") + std::string("partition ") + std::to_string(p.index) + " (" + p.type +
              (p.type_name.empty() ? "" : " " + p.type_name) + ") holds " +
              (p.filesystem.empty() ? "no filesystem libblkid recognises" : p.filesystem);
    }
    w.push_back("no ext4 root partition found" + held);
  }
  // What the report could not read is reported once, above, not again as a fact derived from it.
  auto unreadable = [&](std::uint32_t partition, const std::string& path) {
    return std::any_of(report.unreadable.begin(), report.unreadable.end(),
                       [&](const UnreadableFile& u) { return u.partition == partition && u.path == path; });
  };
  bool cmdline_unreadable = report.boot && unreadable(report.boot->partition, "/cmdline.txt");
  if (report.boot) {
    const auto& boot = *report.boot;
    if (!boot.has_cmdline) {
      if (!cmdline_unreadable) w.push_back("the boot partition has no cmdline.txt");
    } else {
      if (!boot.cmdline_single_line) w.push_back("cmdline.txt has more than one line (the firmware reads only the first)");
      if (boot.root_partuuid && !boot.root_partition) {
        w.push_back("cmdline.txt boots root=PARTUUID=" + *boot.root_partuuid + " but no partition has that PARTUUID");
      } else if (boot.root_partition && report.root_partition && *boot.root_partition != *report.root_partition) {
        w.push_back("cmdline.txt boots partition " + std::to_string(*boot.root_partition) +
                    " but the ext4 root filesystem is on partition " + std::to_string(*report.root_partition));
      }
      if (report.rke2.present && !boot.cgroup_memory_enabled) {
        w.push_back("cmdline.txt lacks cgroup_enable=memory: the kubelet will not start (the Pi's device tree disables the memory cgroup)");
      }
    }
    if (boot.config_kernel && *boot.config_kernel == "kernel8.img" && !boot.has_kernel8) {
      w.push_back("config.txt selects kernel=kernel8.img but the boot partition has no kernel8.img");
    }
    if (!boot.has_kernel8 && !boot.has_kernel_2712) w.push_back("the boot partition has neither kernel_2712.img nor kernel8.img");
  }
  if (report.first_boot) {
    const auto& fb = *report.first_boot;
    if (fb.format == InspectedFirstBoot::firstrun_script && !fb.started_by_cmdline && !cmdline_unreadable) {
      w.push_back("firstrun.sh is on the boot partition but cmdline.txt does not start it (systemd.run=)");
    }
    if (fb.format == InspectedFirstBoot::cloud_init) {
      if (!fb.started_by_cmdline && !cmdline_unreadable && !(report.root && report.root->has_cloud_init)) {
        w.push_back("cloud-init files are on the boot partition but neither cmdline.txt (ds=nocloud) nor the root filesystem selects cloud-init");
      }
      if (fb.instance_id && fb.cmdline_instance_id && *fb.instance_id != *fb.cmdline_instance_id) {
        w.push_back("meta-data's instance-id (" + *fb.instance_id + ") differs from cmdline.txt's ds=nocloud;i=" +
                    *fb.cmdline_instance_id);
      }
    }
    if (fb.format == InspectedFirstBoot::firstrun_script &&
        std::any_of(fb.files.begin(), fb.files.end(), [](const std::string& f) { return f == "user-data"; })) {
      w.push_back("both firstrun.sh and cloud-init files are on the boot partition");
    }
  }
  const auto& rke2 = report.rke2;
  if (!rke2.present) return;
  auto check_secret_file = [&](const InspectedFile& f) {
    if (!f.present) return;
    if ((f.permissions & 077) != 0) w.push_back(f.path + " is mode " + octal_mode(f.permissions) + ", not 0600: it may hold secrets");
    if (f.uid != 0 || f.gid != 0) {
      w.push_back(f.path + " is owned by " + std::to_string(f.uid) + ":" + std::to_string(f.gid) + ", not root:root");
    }
  };
  check_secret_file(rke2.config);
  check_secret_file(rke2.registries);
  if (!rke2.binary.present) w.push_back(rke2_binary_path + " is missing");
  if (rke2.enabled_units.empty()) w.push_back("neither rke2-server.service nor rke2-agent.service is enabled");
  if (rke2.enabled_units.size() > 1) w.push_back("both rke2-server.service and rke2-agent.service are enabled (they conflict)");
  if (rke2.recorded_role && !rke2.role.empty() && *rke2.recorded_role != rke2.role) {
    w.push_back("preload.json records role " + *rke2.recorded_role + " but the enabled unit is rke2-" + rke2.role + ".service");
  }
  if (rke2.image_archives.empty()) w.push_back("no image archives in " + images_directory + " (nodes will pull every image)");
  if (!rke2.config.present) w.push_back(rke2_config_path + " is missing");
  if (rke2.role == "agent") {
    bool has_server = std::find(rke2.config_keys.begin(), rke2.config_keys.end(), "server") != rke2.config_keys.end();
    if (!has_server || !rke2.token_set) w.push_back("an agent needs server and token in config.yaml");
  }
}

// ---- compressed input: decompressed to a scratch file that is removed however inspection ends ----

// The scratch image lives in a directory of its own, mode 0700 (mkdtemp): the decompressed image may
// hold a join token or password hashes, and /tmp is shared. An interrupt removes it too
// (core/interrupt_cleanup.hpp).
class ScratchImage {
 public:
  ScratchImage(const fs::path& parent, const std::string& name) {
    std::string pattern = (parent / "aggrik8s-inspect-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw_system_error("cannot create a scratch directory in " + parent.string(), errno);
    directory_ = pattern;
    path_ = directory_ / name;
    on_interrupt_.emplace(directory_);
  }
  ~ScratchImage() {
    std::error_code ec;
    fs::remove_all(directory_, ec);
  }
  ScratchImage(const ScratchImage&) = delete;
  ScratchImage& operator=(const ScratchImage&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path directory_;
  fs::path path_;
  std::optional<RemovedOnInterrupt> on_interrupt_;
};

// ---- the deep check: libguestfs ----

class Guestfs {
 public:
  Guestfs() : handle_(guestfs_create()) {
    if (handle_ == nullptr) throw Error("libguestfs: cannot create a handle (guestfs_create failed)");
    // Errors are collected with guestfs_last_error and reported once, not printed by the library.
    guestfs_set_error_handler(handle_, nullptr, nullptr);
  }
  ~Guestfs() { guestfs_close(handle_); }
  Guestfs(const Guestfs&) = delete;
  Guestfs& operator=(const Guestfs&) = delete;
  guestfs_h* get() const { return handle_; }
  std::string last_error() const {
    const char* message = guestfs_last_error(handle_);
    return message == nullptr ? "unknown error" : message;
  }

 private:
  guestfs_h* handle_;
};

struct GuestString {
  char* text = nullptr;
  ~GuestString() { std::free(text); }
};

void free_string_list(char** list) {
  if (list == nullptr) return;
  for (char** p = list; *p != nullptr; ++p) std::free(*p);
  std::free(list);
}

std::optional<std::string> guest_string(char* text) {
  GuestString owned{text};
  if (text == nullptr) return std::nullopt;
  return std::string(text);
}

struct GuestStatus {
  bool present = false;
  std::string type;
  std::uint16_t permissions = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;
};

GuestStatus guest_lstat(const Guestfs& g, const std::string& path) {
  GuestStatus status;
  if (guestfs_exists(g.get(), path.c_str()) <= 0 && guestfs_is_symlink(g.get(), path.c_str()) <= 0) return status;
  // `struct`: guestfs_statns is also the name of a function.
  struct guestfs_statns* st = guestfs_lstatns(g.get(), path.c_str());
  if (st == nullptr) return status;
  status.present = true;
  auto mode = static_cast<std::uint32_t>(st->st_mode);
  switch (mode & 0170000u) {
    case 0100000u: status.type = "file"; break;
    case 0040000u: status.type = "directory"; break;
    case 0120000u: status.type = "symlink"; break;
    default: status.type = "other";
  }
  status.permissions = static_cast<std::uint16_t>(mode & 07777u);
  status.uid = static_cast<std::uint32_t>(st->st_uid);
  status.gid = static_cast<std::uint32_t>(st->st_gid);
  status.size = static_cast<std::uint64_t>(st->st_size);
  guestfs_free_statns(st);
  return status;
}

std::optional<std::string> guest_read(const Guestfs& g, const std::string& path) {
  std::size_t size = 0;
  char* content = guestfs_read_file(g.get(), path.c_str(), &size);
  if (content == nullptr) return std::nullopt;
  std::string text(content, size);
  std::free(content);
  return text;
}

std::string describe_status(bool present, const std::string& type, std::uint16_t permissions, std::uint32_t uid,
                            std::uint32_t gid) {
  if (!present) return "absent";
  return type + " " + octal_mode(permissions) + " " + std::to_string(uid) + ":" + std::to_string(gid);
}

std::string sha256_of(const std::string& text) {
  Sha256 hash;
  hash.update(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
  return hash.finish().hex();
}

// fsck through libguestfs' own calls, which take the API's device name ("/dev/sda1") and translate it
// to the appliance kernel's name. They are not always the same: Linux (>= 5.6) probes disks in
// parallel, so on a busy host the appliance's own root disk is sometimes probed first and the image
// becomes the kernel's sdb (libguestfs translates through /dev/disk/by-path since 1.42, RHBZ#1804207).
// The check used to run e2fsck in the appliance's debug shell with the API's name: in those launches
// "/dev/sda1" did not exist however long it waited, and --deep failed only under load.
//
// Writes go to the drive's throwaway overlay (the image is attached read-only), so fsck may "repair";
// its exit status says whether anything needed it (fsck(8): 0 clean, 1 corrected, 4 left uncorrected).
// For ext4, `fsck -a` (e2fsck -p) skips a filesystem marked clean, so the overlay's mount count is
// set past a maximum of 1 first: that makes e2fsck -p run its full check, as -f would.
namespace {

// QEMU processes that are children of this process (libguestfs' direct backend forks QEMU itself).
std::vector<pid_t> child_hypervisors() {
  std::vector<pid_t> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces, so parse around the last ')'.
    auto open = line.find('(');
    auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    std::string comm = line.substr(open + 1, close - open - 1);
    std::istringstream rest(line.substr(close + 1));
    char state = 0;
    pid_t parent = 0;
    rest >> state >> parent;
    if (parent == ::getpid() && comm.rfind("qemu-system", 0) == 0) found.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return found;
}

// Kills the appliance's QEMU if a launch (or an fsck) has not finished by the deadline. A /dev/kvm that exists but
// does not really work for this guest can hang the launch instead of failing it (seen on a nested VM
// here: SeaBIOS runs under KVM, the appliance kernel never reports in); libguestfs has no launch
// timeout of its own and its handle may not be touched from another thread, so the watchdog acts on
// the process. The killed launch then fails like any other, and the caller retries without KVM.
class ApplianceWatchdog {
 public:
  explicit ApplianceWatchdog(std::chrono::seconds limit)
      : thread_([this, limit] {
          std::unique_lock lock(mutex_);
          if (done_cv_.wait_for(lock, limit, [this] { return done_; })) return;
          for (pid_t pid : child_hypervisors()) ::kill(pid, SIGKILL);
          fired_ = true;
        }) {}
  ~ApplianceWatchdog() { finish(); }
  ApplianceWatchdog(const ApplianceWatchdog&) = delete;
  ApplianceWatchdog& operator=(const ApplianceWatchdog&) = delete;

  bool finish() {  // returns whether it had to kill the launch
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    done_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    return fired_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  bool fired_ = false;
  std::thread thread_;
};

// Under KVM the appliance is up in a few seconds; software emulation takes 15-35 s and is not limited.
constexpr std::chrono::seconds kvm_launch_limit{45};
// One fsck in the appliance: a healthy 4 GiB ext4 takes well under a minute even under TCG on a busy
// machine.
constexpr std::chrono::seconds fsck_limit{300};

}  // namespace

DeepCheckFsck run_fsck(const Guestfs& g, const InspectedPartition& partition, const std::string& device) {
  DeepCheckFsck check;
  check.partition = partition.index;
  check.filesystem = partition.filesystem;
  bool fat = partition.filesystem.starts_with("FAT");
  bool ext = partition.filesystem == "ext2" || partition.filesystem == "ext3" || partition.filesystem == "ext4";
  std::string fstype = fat ? "vfat" : partition.filesystem;
  if (!fat && !ext) {
    check.tool = "none";
    check.clean = true;
    check.output = "no fsck is run for " + partition.filesystem;
    return check;
  }
  if (ext) {
    check.tool = "e2fsck -p, full check forced (fsck -a -t " + fstype + " on the throwaway overlay)";
    if (guestfs_tune2fs(g.get(), device.c_str(), GUESTFS_TUNE2FS_MAXMOUNTCOUNT, 1, GUESTFS_TUNE2FS_MOUNTCOUNT, 2, -1) != 0) {
      check.output = "tune2fs could not force the full check: " + g.last_error();
      return check;
    }
  } else {
    check.tool = "fsck.vfat -a (fsck -a -t vfat on the throwaway overlay)";
  }
  // A badly damaged FAT keeps fsck.vfat -a repairing for many minutes (over a minute even natively):
  // past the limit the appliance is stopped and the filesystem reported as not clean.
  ApplianceWatchdog watchdog(fsck_limit);
  int status = guestfs_fsck(g.get(), fstype.c_str(), device.c_str());
  if (watchdog.finish()) {
    check.output = "fsck did not finish within " + std::to_string(fsck_limit.count()) +
                   " s and was stopped: a filesystem whose check runs this long is damaged";
    return check;
  }
  if (status < 0) {
    check.output = g.last_error();
    return check;
  }
  check.exit_code = status;
  check.clean = status == 0;
  if (!check.clean) {
    check.output = "fsck exit status " + std::to_string(status) +
                   ((status & 4) != 0   ? ": errors left uncorrected"
                    : (status & 1) != 0 ? ": errors were found (corrected on the overlay only; the image is unchanged)"
                                        : "");
  }
  return check;
}


// ---- the deep check's phases: launch the appliance, identify the image's devices in it, compare
// what it reads with the in-process report, fsck each filesystem ----

// One launch of the appliance with the image as its only drive, read-only; false when it did not come
// up. `backend` is set to what is tried, for the report.
bool try_launch_appliance(Guestfs& handle, const fs::path& raw_image, bool force_tcg, std::string& backend) {
  backend = guest_string(guestfs_get_backend(handle.get())).value_or("?");
  if (force_tcg) {
    char force[] = "force_tcg";
    char* settings[] = {force, nullptr};
    guestfs_set_backend_settings(handle.get(), settings);
    backend += ", TCG";
  }
  if (guestfs_add_drive_opts(handle.get(), raw_image.c_str(), GUESTFS_ADD_DRIVE_OPTS_READONLY, 1,
                             GUESTFS_ADD_DRIVE_OPTS_FORMAT, "raw", -1) != 0) {
    throw Error("libguestfs cannot add " + raw_image.string() + ": " + handle.last_error());
  }
  log::info("deep check: starting the libguestfs appliance (", backend, " backend; ~15-35 s)");
  // Without a usable /dev/kvm libguestfs runs TCG on its own, which may legitimately take long.
  if (force_tcg || ::access("/dev/kvm", R_OK | W_OK) != 0) return guestfs_launch(handle.get()) == 0;
  ApplianceWatchdog watchdog(kvm_launch_limit);
  bool launched = guestfs_launch(handle.get()) == 0;
  if (watchdog.finish()) {
    log::info("deep check: the appliance did not come up within ", kvm_launch_limit.count(),
              " s (a /dev/kvm that hangs this guest?): stopped it");
    return false;
  }
  return launched;
}

// The appliance, up, and the backend it runs on ("direct", "direct, TCG"). Throws Error when it cannot
// be started at all.
std::unique_ptr<Guestfs> launch_appliance(const fs::path& raw_image, std::string& backend) {
  auto g = std::make_unique<Guestfs>();
  if (try_launch_appliance(*g, raw_image, false, backend)) return g;
  std::string first_error = g->last_error();
  first_error.resize(std::min(first_error.size(), first_error.find('\n')));
  // A /dev/kvm that exists but cannot run this CPU model (nested virtualisation) makes QEMU abort
  // ("failed to set MSR"); software emulation is slower but works. Only retried when the user has
  // not chosen backend settings.
  bool retried = false;
  if (std::getenv("LIBGUESTFS_BACKEND_SETTINGS") == nullptr) {
    log::info("deep check: the appliance did not start (", first_error, "); retrying without KVM");
    g = std::make_unique<Guestfs>();
    retried = try_launch_appliance(*g, raw_image, true, backend);
  }
  if (!retried) {
    throw Error("libguestfs could not start its appliance: " + g->last_error() +
                "\n  Install libguestfs and a kernel it can boot (Debian: apt-get install libguestfs-tools "
                "linux-image-amd64),\n  then run `LIBGUESTFS_BACKEND=direct libguestfs-test-tool` to see what is missing.");
  }
  return g;
}

// Partition number -> the device name libguestfs' API uses for it ("/dev/sda1"). Always the API's
// name, which libguestfs translates to the appliance kernel's (see run_fsck: that may be sdb).
using PartitionDevices = std::map<std::uint32_t, std::string>;

PartitionDevices identify_partition_devices(const Guestfs& guest, const fs::path& raw_image) {
  PartitionDevices devices;
  char** partitions = guestfs_list_partitions(guest.get());
  if (partitions == nullptr) throw Error("libguestfs cannot list the partitions of " + raw_image.string() + ": " + guest.last_error());
  for (char** p = partitions; *p != nullptr; ++p) {
    std::string device = *p;
    auto digits = device.find_last_not_of("0123456789");
    if (digits != std::string::npos && digits + 1 < device.size()) {
      devices[static_cast<std::uint32_t>(std::stoul(device.substr(digits + 1)))] = device;
    }
  }
  free_string_list(partitions);
  return devices;
}

void compare(std::vector<DeepCheckComparison>& comparisons, std::string fact, std::string in_process,
             std::string guestfs) {
  comparisons.push_back({std::move(fact), std::move(in_process), std::move(guestfs)});
}

void compare_partitions(const Guestfs& guest, const ImageInspection& report, const PartitionDevices& devices,
                        std::vector<DeepCheckComparison>& comparisons) {
  compare(comparisons, "partitions", std::to_string(report.partitions.size()), std::to_string(devices.size()));
  for (const auto& p : report.partitions) {
    auto device = devices.find(p.index);
    std::string prefix = "partition " + std::to_string(p.index) + " ";
    if (device == devices.end()) {
      compare(comparisons, prefix + "device", "present", "absent");
      continue;
    }
    std::string guest_type = guest_string(guestfs_vfs_type(guest.get(), device->second.c_str())).value_or("");
    std::string our_type = p.filesystem.starts_with("FAT") ? "vfat" : p.filesystem;
    compare(comparisons, prefix + "filesystem", our_type, guest_type);
    if (p.filesystem.empty()) continue;
    compare(comparisons, prefix + "label", p.label,
            guest_string(guestfs_vfs_label(guest.get(), device->second.c_str())).value_or(""));
    std::string guest_uuid = guest_string(guestfs_vfs_uuid(guest.get(), device->second.c_str())).value_or("");
    std::string our_uuid = p.uuid;
    std::transform(our_uuid.begin(), our_uuid.end(), our_uuid.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::transform(guest_uuid.begin(), guest_uuid.end(), guest_uuid.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    compare(comparisons, prefix + "UUID", our_uuid, guest_uuid);
  }
}

void compare_boot_partition(const Guestfs& guest, const ImageInspection& report, const PartitionDevices& devices,
                            std::vector<DeepCheckComparison>& comparisons) {
  if (!report.boot) return;
  const auto& boot = *report.boot;
  const std::string& device = devices.at(boot.partition);
  if (guestfs_mount_ro(guest.get(), device.c_str(), "/") != 0) {
    compare(comparisons, "boot partition mounts read-only", "yes", "no: " + guest.last_error());
    return;
  }
  compare(comparisons, "cmdline.txt", boot.has_cmdline ? boot.cmdline : "absent",
          guest_read(guest, "/cmdline.txt").value_or("absent"));
  auto config = guest_read(guest, "/config.txt");
  compare(comparisons, "config.txt sha256", boot.has_config_txt ? boot.config_txt_sha256 : "absent",
          config ? sha256_of(*config) : "absent");
  std::vector<std::string> names{"kernel8.img", "kernel_2712.img", "firstrun.sh"};
  names.insert(names.end(), nocloud_files.begin(), nocloud_files.end());
  std::vector<std::string> first_boot_files = report.first_boot ? report.first_boot->files : std::vector<std::string>{};
  for (const auto& name : names) {
    bool ours = name == "kernel8.img"       ? boot.has_kernel8
                : name == "kernel_2712.img" ? boot.has_kernel_2712
                                            : std::find(first_boot_files.begin(), first_boot_files.end(), name) !=
                                                  first_boot_files.end();
    compare(comparisons, name + " present", ours ? "yes" : "no",
            guestfs_is_file(guest.get(), ("/" + name).c_str()) > 0 ? "yes" : "no");
  }
  guestfs_umount_all(guest.get());
}

void compare_root_filesystem(const Guestfs& guest, const ImageInspection& report, const PartitionDevices& devices,
                             std::vector<DeepCheckComparison>& comparisons) {
  if (!report.root) return;
  const std::string& device = devices.at(report.root->partition);
  if (guestfs_mount_ro(guest.get(), device.c_str(), "/") != 0) {
    compare(comparisons, "root filesystem mounts read-only", "yes", "no: " + guest.last_error());
    return;
  }
  const auto& rke2 = report.rke2;
  auto compare_file = [&](const InspectedFile& ours) {
    GuestStatus theirs = guest_lstat(guest, ours.path);
    compare(comparisons, ours.path, describe_status(ours.present, ours.type, ours.permissions, ours.uid, ours.gid),
            describe_status(theirs.present, theirs.type, theirs.permissions, theirs.uid, theirs.gid));
  };
  compare_file(rke2.binary);
  compare_file(rke2.config);
  compare_file(rke2.registries);
  for (const char* unit : {"rke2-server.service", "rke2-agent.service"}) {
    std::string path = units_wanted_directory + "/" + unit;
    auto ours = std::find_if(rke2.enabled_units.begin(), rke2.enabled_units.end(),
                             [&](const InspectedFile& f) { return f.path == path; });
    std::string theirs = "absent";
    if (guestfs_is_symlink(guest.get(), path.c_str()) > 0) {
      theirs = "-> " + guest_string(guestfs_readlink(guest.get(), path.c_str())).value_or("?");
    } else if (guestfs_exists(guest.get(), path.c_str()) > 0) {
      theirs = "not a symlink";
    }
    compare(comparisons, path, ours == rke2.enabled_units.end() ? "absent" : "-> " + ours->link_target, theirs);
  }
  std::string our_archives;
  for (const auto& a : rke2.image_archives) our_archives += (our_archives.empty() ? "" : " ") + a.name;
  std::string their_archives;
  if (guestfs_is_dir(guest.get(), images_directory.c_str()) > 0) {
    char** names = guestfs_ls(guest.get(), images_directory.c_str());
    std::vector<std::string> sorted;
    for (char** n = names; names != nullptr && *n != nullptr; ++n) {
      std::string name = *n;
      if (!name.starts_with(".") && guestfs_is_file(guest.get(), (images_directory + "/" + name).c_str()) > 0) {
        sorted.push_back(name);
      }
    }
    free_string_list(names);
    std::sort(sorted.begin(), sorted.end());
    for (const auto& n : sorted) their_archives += (their_archives.empty() ? "" : " ") + n;
  }
  compare(comparisons, images_directory, our_archives, their_archives);
  for (const auto& a : rke2.image_archives) {
    GuestStatus theirs = guest_lstat(guest, images_directory + "/" + a.name);
    compare(comparisons, a.name + " size", std::to_string(a.size),
            theirs.present ? std::to_string(theirs.size) : "absent");
  }
  auto record = guest_read(guest, preload_record_path);
  compare(comparisons, std::string(preload_record_path) + " sha256",
          rke2.preload_record_sha256.empty() ? "absent" : rke2.preload_record_sha256,
          record ? sha256_of(*record) : "absent");
  guestfs_umount_all(guest.get());
}

std::vector<DeepCheckFsck> fsck_filesystems(const Guestfs& guest, const ImageInspection& report,
                                            const PartitionDevices& devices) {
  std::vector<DeepCheckFsck> checks;
  for (const auto& p : report.partitions) {
    auto device = devices.find(p.index);
    if (device != devices.end() && !p.filesystem.empty()) checks.push_back(run_fsck(guest, p, device->second));
  }
  return checks;
}

DeepCheck deep_check(const fs::path& raw_image, const ImageInspection& report) {
  if (std::getenv("LIBGUESTFS_BACKEND") == nullptr) {
    // The default libvirt backend needs a libvirt daemon; the direct backend runs QEMU itself.
    ::setenv("LIBGUESTFS_BACKEND", "direct", 0);
  }
  auto started = std::chrono::steady_clock::now();
  DeepCheck deep;
  std::unique_ptr<Guestfs> guest = launch_appliance(raw_image, deep.backend);
  PartitionDevices devices = identify_partition_devices(*guest, raw_image);
  compare_partitions(*guest, report, devices, deep.comparisons);
  compare_boot_partition(*guest, report, devices, deep.comparisons);
  compare_root_filesystem(*guest, report, devices, deep.comparisons);
  // Last: fsck writes (to the overlay), and every comparison above reads the filesystems as they are.
  deep.fsck = fsck_filesystems(*guest, report, devices);
  guestfs_shutdown(guest->get());
  deep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return deep;
}

}  // namespace

const char* to_string(InspectedFirstBoot format) {
  switch (format) {
    case InspectedFirstBoot::firstrun_script: return "firstrun.sh";
    case InspectedFirstBoot::cloud_init: return "cloud-init NoCloud";
    case InspectedFirstBoot::none: return "none";
  }
  return "none";
}

bool DeepCheck::all_agree() const {
  return std::all_of(comparisons.begin(), comparisons.end(), [](const DeepCheckComparison& c) { return c.agree(); });
}

bool DeepCheck::all_clean() const {
  return std::all_of(fsck.begin(), fsck.end(), [](const DeepCheckFsck& f) { return f.clean; });
}

ImageInspection inspect_image(const fs::path& image, const InspectOptions& options) {
  if (!fs::exists(image)) throw Error(image.string() + ": no such file");
  if (!fs::is_regular_file(image)) throw Error(image.string() + ": not a regular file (inspect reads image files)");
  ImageInspection report;
  report.path = image;
  ImageInputFormat format = detect_image_input_format(image);
  report.input_format = format == ImageInputFormat::raw ? "raw" : to_string(format);
  std::optional<ScratchImage> scratch;
  fs::path raw = image;
  if (format != ImageInputFormat::raw) {
    fs::path dir = options.scratch_dir.value_or(fs::temp_directory_path());
    scratch.emplace(dir, image.filename().string() + ".img");
    log::info("decompressing ", image.filename().string(), " (", report.input_format, ") to ", scratch->path().string());
    ImageDecompressor().decompress(image, scratch->path());
    raw = scratch->path();
  }

  FileBlockDevice device(raw, FileBlockDevice::Access::read_only);
  report.image_bytes = device.size();
  PartitionTable table = [&] {
    try {
      return read_partition_table(device);
    } catch (const Error& e) {
      // The table reader names the image and the offending value; say what that means for inspect.
      throw Error(std::string(e.what()) + " (not a complete disk image: truncated, damaged, or not an image at all)");
    }
  }();
  report.table_kind = table.kind() == PartitionTableKind::mbr ? "MBR" : "GPT";
  report.disk_identifier = table.disk_identifier();
  for (const auto& entry : table.partitions()) {
    InspectedPartition p;
    p.index = entry.index;
    if (table.kind() == PartitionTableKind::mbr) {
      p.type = hex_byte(entry.mbr_type);
      p.type_name = mbr_type_name(entry.mbr_type);
    } else {
      p.type = entry.gpt_type.to_string();
      p.type_name = gpt_type_name(p.type);
    }
    p.first_lba = entry.first_lba;
    p.sector_count = entry.sector_count;
    p.start_bytes = entry.byte_offset();
    p.size_bytes = entry.byte_size();
    p.partuuid = table.partuuid(entry.index);
    p.bootable = entry.bootable;
    if (p.start_bytes + p.size_bytes > device.size()) {
      // read_partition_table accepts a table describing a larger disk only in ways that never reach
      // here; keep the guard so a truncated image is named as such rather than failing a read later.
      throw Error(image.string() + " is truncated: partition " + std::to_string(p.index) + " ends at byte " +
                  std::to_string(p.start_bytes + p.size_bytes) + " but the image has " + std::to_string(device.size()));
    }
    bool is_extended = table.kind() == PartitionTableKind::mbr &&
                       (entry.mbr_type == 0x05 || entry.mbr_type == 0x0f || entry.mbr_type == 0x85);
    if (!is_extended) {
      bool root_found = std::any_of(report.partitions.begin(), report.partitions.end(),
                                    [](const InspectedPartition& q) { return q.filesystem == "ext4"; });
      bool boot_found = std::any_of(report.partitions.begin(), report.partitions.end(),
                                    [](const InspectedPartition& q) { return q.filesystem.starts_with("FAT"); });
      auto open_error = describe_filesystem(raw, device, table, p, report.warnings);
      // The first ext4 is the root and the first FAT the boot partition: their errors are reported
      // once, below, as root_error / boot_error.
      bool reported_below = (p.filesystem == "ext4" && !root_found) || (p.filesystem.starts_with("FAT") && !boot_found);
      if (open_error && !reported_below) report.warnings.push_back(*open_error);
    }
    report.partitions.push_back(p);
  }
  // A second reading of the PARTUUIDs, by libblkid: a table this reader and Linux understand
  // differently would boot something other than what cmdline.txt names.
  for (const auto& probed : probe_partitions(raw)) {
    for (const auto& p : report.partitions) {
      if (p.start_bytes == probed.start_bytes && !probed.partuuid.empty() && probed.partuuid != p.partuuid) {
        report.warnings.push_back("partition " + std::to_string(p.index) + ": PARTUUID read as " + p.partuuid +
                                  " here but libblkid (as Linux) reads " + probed.partuuid);
      }
    }
  }

  const InspectedPartition* boot_partition = nullptr;
  const InspectedPartition* root_partition = nullptr;
  for (const auto& p : report.partitions) {
    if (!boot_partition && p.filesystem.starts_with("FAT")) boot_partition = &p;
    if (!root_partition && p.filesystem == "ext4") root_partition = &p;
  }
  if (boot_partition) {
    try {
      SubrangeBlockDevice view = open_partition(device, table, boot_partition->index);
      FatFilesystem fat(view);
      InspectedBootFiles boot;
      boot.partition = boot_partition->index;
      InspectedFirstBootFiles first_boot;
      inspect_boot_files(fat, report, boot, first_boot);
      report.boot = boot;
      report.first_boot = first_boot;
    } catch (const Error& e) {
      report.boot_error = "the boot filesystem on partition " + std::to_string(boot_partition->index) +
                          " cannot be read: " + e.what();
    }
  }
  if (root_partition) {
    report.root_partition = root_partition->index;
    try {
      inspect_root_filesystem(raw, *root_partition, report);
    } catch (const Error& e) {
      // Only opening the filesystem throws here; single files are recorded in report.unreadable.
      report.root.reset();
      report.root_error = "the root filesystem on partition " + std::to_string(root_partition->index) +
                          " cannot be read: " + e.what();
    }
  }
  collect_warnings(report);
  if (options.deep) report.deep = deep_check(raw, report);
  return report;
}

}  // namespace aggrik8s::builder
