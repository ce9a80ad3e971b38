#include "builder/rpi/boot_partition_customization.hpp"

#include <yaml-cpp/yaml.h>

#include <sstream>

#include "builder/rpi/first_boot.hpp"
#include "core/identifiers.hpp"
#include "disk/partition_table.hpp"
#include "builder/rpi/pi_boot_files.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {

namespace {

constexpr const char* keys_terminator = "AGGRIK8S_KEYS";

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines, bool trailing_newline) {
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    out += lines[i];
    if (i + 1 < lines.size() || trailing_newline) out += "\n";
  }
  return out;
}

std::string text_of(FatFilesystem& fat, const std::string& path) {
  return fat.exists(path) ? fat.read_text_file(path) : std::string();
}

// The boot partition is partition 1 in every Pi image (and in ours).
constexpr std::uint32_t boot_partition_index = 1;

}  // namespace

std::string set_firstrun_hostname(const std::string& script, const std::string& hostname) {
  std::vector<std::string> lines = split_lines(script);
  bool found = false;
  for (auto& line : lines) {
    if (line.starts_with("NEW_HOSTNAME=")) {
      line = "NEW_HOSTNAME=" + shell_quote(hostname);
      found = true;
    }
  }
  if (!found) throw Error("firstrun.sh has no NEW_HOSTNAME= line (it was not written by aggrik8s-image); cannot set the hostname");
  return join_lines(lines, script.ends_with("\n"));
}

std::string add_firstrun_ssh_keys(const std::string& script, const std::vector<std::string>& keys) {
  std::vector<std::string> lines = split_lines(script);
  std::vector<std::string> out;
  for (const auto& key : keys) {
    // Checked where the keys are read too; here because a line that is not a key could end the
    // here-document and run as root at first boot.
    if (!is_ssh_public_key_line(key)) throw Error("not an SSH public key line: '" + key.substr(0, 40) + "'");
  }
  bool in_keys = false;
  int blocks = 0;
  for (const auto& line : lines) {
    if (in_keys && line == keys_terminator) {
      for (const auto& key : keys) {
        if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
      }
      in_keys = false;
      ++blocks;
    }
    out.push_back(line);
    if (line.find(std::string("<<'") + keys_terminator + "'") != std::string::npos) in_keys = true;
  }
  if (blocks == 0) {
    throw Error("firstrun.sh writes no authorized_keys (the profile configures no user with SSH keys); "
                "cannot add SSH keys to it");
  }
  return join_lines(out, script.ends_with("\n"));
}

std::string edit_cloud_init_user_data(const std::string& user_data, const std::optional<std::string>& hostname,
                                      const std::vector<std::string>& keys) {
  YAML::Node root;
  try {
    root = YAML::Load(user_data);
  } catch (const YAML::Exception& e) {
    throw Error(std::string("user-data on the boot partition is not valid YAML: ") + e.what());
  }
  // A base image's user-data may be comments only (Raspberry Pi OS ships it so): an empty map.
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw Error("user-data on the boot partition is not a #cloud-config map");
  if (hostname) {
    root["hostname"] = *hostname;
    // Without these cloud-init resets the hostname on every boot (raspi-config#297).
    root["manage_etc_hosts"] = true;
    root["preserve_hostname"] = false;
  }
  if (!keys.empty()) {
    bool added = false;
    if (root["users"] && root["users"].IsSequence()) {
      for (auto user : root["users"]) {
        if (!user.IsMap() || !user["name"]) continue;
        YAML::Node list = user["ssh_authorized_keys"];
        if (!list || !list.IsSequence()) {
          user["ssh_authorized_keys"] = YAML::Node(YAML::NodeType::Sequence);
          list = user["ssh_authorized_keys"];
        }
        for (const auto& key : keys) {
          bool present = false;
          for (const auto& existing : list) present = present || existing.as<std::string>() == key;
          if (!present) list.push_back(key);
        }
        added = true;
      }
    }
    if (!added) {
      // No named user: cloud-init gives top-level keys to the image's default user.
      YAML::Node list = root["ssh_authorized_keys"];
      if (!list || !list.IsSequence()) {
        root["ssh_authorized_keys"] = YAML::Node(YAML::NodeType::Sequence);
        list = root["ssh_authorized_keys"];
      }
      for (const auto& key : keys) list.push_back(key);
    }
  }
  YAML::Emitter out;
  out << root;
  // The first line is how cloud-init recognises the format; comments are not kept by a re-emit.
  return std::string("#cloud-config\n# Edited by aggrik8s-image flash.\n") + out.c_str() + "\n";
}

std::string cloud_init_instance_id(const std::string& hostname, const std::string& user_data,
                                   const std::string& network_config) {
  Sha256 h;
  h.update(user_data);
  h.update(network_config);
  return "aggrik8s-" + hostname + "-" + h.finish().hex().substr(0, 12);
}

std::string set_meta_data(const std::string& meta_data, const std::string& instance_id,
                          const std::optional<std::string>& hostname) {
  std::vector<std::string> lines = split_lines(meta_data);
  bool has_id = false;
  bool has_hostname = false;
  for (auto& line : lines) {
    if (line.starts_with("instance-id:")) {
      line = "instance-id: " + instance_id;
      has_id = true;
    } else if (hostname && line.starts_with("local-hostname:")) {
      line = "local-hostname: " + *hostname;
      has_hostname = true;
    }
  }
  if (!has_id) lines.insert(lines.begin(), "instance-id: " + instance_id);
  if (hostname && !has_hostname) lines.push_back("local-hostname: " + *hostname);
  return join_lines(lines, true);
}

BootPartitionFiles apply_boot_partition_customization(BlockDevice& image, const BootPartitionCustomization& customization) {
  BootPartitionFiles written;
  if (customization.empty()) return written;
  PartitionTable table = read_partition_table(image);
  SubrangeBlockDevice boot = open_partition(image, table, boot_partition_index);
  std::optional<FatFilesystem> opened;
  try {
    opened.emplace(boot);
  } catch (const Error& e) {
    throw Error(std::string("the image's partition 1 is not a FAT boot partition, so --hostname, --ssh-key and --file "
                            "cannot be applied: ") + e.what());
  }
  FatFilesystem& fat = *opened;
  auto write = [&](const std::string& path, const std::string& content) {
    std::string directory = path.find('/') == std::string::npos ? "" : path.substr(0, path.rfind('/'));
    if (!directory.empty()) fat.make_directories(directory);
    fat.write_file(path, content);
    written[path] = content;
  };

  if (customization.hostname || !customization.ssh_keys.empty()) {
    if (fat.exists("firstrun.sh")) {
      std::string script = fat.read_text_file("firstrun.sh");
      if (customization.hostname) script = set_firstrun_hostname(script, *customization.hostname);
      if (!customization.ssh_keys.empty()) script = add_firstrun_ssh_keys(script, customization.ssh_keys);
      write("firstrun.sh", script);
    } else if (fat.exists("user-data")) {
      std::string user_data =
          edit_cloud_init_user_data(fat.read_text_file("user-data"), customization.hostname, customization.ssh_keys);
      std::string network_config = text_of(fat, "network-config");
      YAML::Node parsed = YAML::Load(user_data);
      std::string name = customization.hostname.value_or(parsed["hostname"] ? parsed["hostname"].as<std::string>() : "node");
      std::string id = cloud_init_instance_id(name, user_data, network_config);
      write("user-data", user_data);
      write("meta-data", set_meta_data(text_of(fat, "meta-data"), id, customization.hostname));
      std::string cmdline = text_of(fat, "cmdline.txt");
      bool has_ds = false;
      for (const auto& argument : split_cmdline(cmdline)) has_ds = has_ds || argument.starts_with("ds=");
      if (has_ds) write("cmdline.txt", add_cmdline_arguments(cmdline, {"ds=nocloud;i=" + id}));
    } else {
      throw Error("the image's boot partition has neither firstrun.sh nor cloud-init user-data, so there is "
                  "nothing that would apply --hostname or --ssh-key at first boot (build the image with a profile "
                  "that sets system settings)");
    }
  }
  for (const auto& [path, content] : customization.files) write(path, content);
  return written;
}

void check_boot_partition_files(BlockDevice& image, const BootPartitionFiles& expected) {
  if (expected.empty()) return;
  PartitionTable table = read_partition_table(image);
  SubrangeBlockDevice boot = open_partition(image, table, boot_partition_index);
  FatFilesystem fat(boot);
  std::vector<std::string> problems;
  for (const auto& [path, content] : expected) {
    if (!fat.exists(path)) {
      problems.push_back(path + " is missing");
    } else if (fat.read_text_file(path) != content) {
      problems.push_back(path + " differs from what was written");
    }
  }
  if (auto cmdline = expected.find("cmdline.txt"); cmdline != expected.end()) {
    if (cmdline->second.find('\n') != cmdline->second.size() - 1) problems.push_back("cmdline.txt is not a single line");
  }
  if (!problems.empty()) {
    std::string text;
    for (const auto& p : problems) text += "\n  " + p;
    throw Error("the boot partition read back from " + image.name() + " is not what was written:" + text);
  }
}

}  // namespace aggrik8s::builder
