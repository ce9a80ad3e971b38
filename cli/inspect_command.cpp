// `aggrik8s-image inspect IMAGE`: the facts of a disk image, as text for people or --json for scripts.
// Reading happens in builder/image_inspector; this file only presents the result and picks the exit
// status.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "inspect/boot_ramdisk_inspector.hpp"
#include "inspect/image_inspector.hpp"
#include "inspect/talos_iso_inspector.hpp"
#include "cli/commands.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/byte_size.hpp"

namespace aggrik8s::cli {
namespace {

using namespace aggrik8s::builder;

std::string octal(std::uint16_t permissions) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(permissions));
  return text;
}

nlohmann::json optional_json(const std::optional<std::string>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json file_json(const InspectedFile& f) {
  nlohmann::json out{{"path", f.path}, {"present", f.present}};
  if (f.present) {
    out["type"] = f.type;
    out["mode"] = octal(f.permissions);
    out["uid"] = f.uid;
    out["gid"] = f.gid;
    out["size"] = f.size;
    if (f.type == "symlink") out["target"] = f.link_target;
  }
  return out;
}

nlohmann::json inspection_json(const ImageInspection& r) {
  nlohmann::json out;
  out["image"] = {{"path", r.path.string()}, {"input_format", r.input_format}, {"size", r.image_bytes}};
  out["partition_table"] = {{"kind", r.table_kind}, {"disk_identifier", r.disk_identifier}};
  out["partitions"] = nlohmann::json::array();
  for (const auto& p : r.partitions) {
    nlohmann::json entry{{"index", p.index},       {"type", p.type},         {"type_name", p.type_name},
                         {"first_lba", p.first_lba}, {"sectors", p.sector_count}, {"start", p.start_bytes},
                         {"size", p.size_bytes},   {"partuuid", p.partuuid}, {"bootable", p.bootable},
                         {"filesystem", p.filesystem.empty() ? nlohmann::json(nullptr) : nlohmann::json(p.filesystem)},
                         {"label", p.label},       {"uuid", p.uuid}};
    entry["filesystem_size"] = p.filesystem_bytes ? nlohmann::json(*p.filesystem_bytes) : nlohmann::json(nullptr);
    entry["free"] = p.free_bytes ? nlohmann::json(*p.free_bytes) : nlohmann::json(nullptr);
    out["partitions"].push_back(entry);
  }
  out["boot"] = nullptr;
  if (r.boot) {
    const auto& b = *r.boot;
    bool matches = b.root_partition && r.root_partition && *b.root_partition == *r.root_partition;
    out["boot"] = {{"partition", b.partition},
                   {"cmdline", b.has_cmdline ? nlohmann::json(b.cmdline) : nlohmann::json(nullptr)},
                   {"cmdline_single_line", b.cmdline_single_line},
                   {"root_partuuid", optional_json(b.root_partuuid)},
                   {"root_partition", b.root_partition ? nlohmann::json(*b.root_partition) : nlohmann::json(nullptr)},
                   {"root_partuuid_matches", matches},
                   {"cgroup_memory_enabled", b.cgroup_memory_enabled},
                   {"config_txt",
                    {{"present", b.has_config_txt},
                     {"managed_block", b.has_managed_block},
                     {"managed_lines", b.managed_config_lines},
                     {"kernel", optional_json(b.config_kernel)}}},
                   {"kernel8_img", b.has_kernel8},
                   {"kernel_2712_img", b.has_kernel_2712}};
  }
  out["first_boot"] = nullptr;
  if (r.first_boot) {
    const auto& f = *r.first_boot;
    out["first_boot"] = {{"format", to_string(f.format)},
                         {"files", f.files},
                         {"started_by_cmdline", f.started_by_cmdline},
                         {"hostname", optional_json(f.hostname)},
                         {"instance_id", optional_json(f.instance_id)},
                         {"cmdline_instance_id", optional_json(f.cmdline_instance_id)}};
  }
  out["root"] = nullptr;
  if (r.root) {
    out["root"] = {{"partition", r.root->partition},
                   {"hostname", optional_json(r.root->hostname)},
                   {"os", optional_json(r.root->os)},
                   {"cloud_init", r.root->has_cloud_init}};
  }
  out["root_error"] = optional_json(r.root_error);
  out["boot_error"] = optional_json(r.boot_error);
  const auto& k = r.rke2;
  // Unknown (null), not false, when the root filesystem could not be read.
  nlohmann::json rke2{{"present", r.root_error ? nlohmann::json(nullptr) : nlohmann::json(k.present)}};
  if (k.present) {
    rke2["version"] = k.version.empty() ? nlohmann::json(nullptr) : nlohmann::json(k.version);
    rke2["version_source"] = k.version_source.empty() ? nlohmann::json(nullptr) : nlohmann::json(k.version_source);
    rke2["role"] = k.role.empty() ? nlohmann::json(nullptr) : nlohmann::json(k.role);
    rke2["enabled_units"] = nlohmann::json::array();
    for (const auto& u : k.enabled_units) rke2["enabled_units"].push_back(file_json(u));
    rke2["binary"] = file_json(k.binary);
    rke2["image_archives"] = nlohmann::json::array();
    for (const auto& a : k.image_archives) {
      rke2["image_archives"].push_back({{"name", a.name}, {"size", a.size}, {"sha256", optional_json(a.recorded_sha256)}});
    }
    // Keys only: the values include the join token.
    nlohmann::json config = file_json(k.config);
    config["keys"] = k.config_keys;
    config["token"] = k.token_set ? "set" : "not set";
    config["node_name"] = optional_json(k.node_name);
    rke2["config"] = config;
    rke2["registries"] = file_json(k.registries);
    rke2["preload_record"] = {{"path", preload_record_path},
                              {"present", k.has_preload_record},
                              {"node", optional_json(k.recorded_node)},
                              {"role", optional_json(k.recorded_role)},
                              {"tool_version", optional_json(k.recorded_tool_version)}};
  }
  out["rke2"] = rke2;
  out["unreadable"] = nlohmann::json::array();
  for (const auto& u : r.unreadable) {
    out["unreadable"].push_back({{"partition", u.partition}, {"path", u.path}, {"reason", u.reason}});
  }
  out["warnings"] = r.warnings;
  if (r.deep) {
    const auto& d = *r.deep;
    nlohmann::json deep{{"backend", d.backend}, {"seconds", d.seconds}, {"all_agree", d.all_agree()}, {"fsck_clean", d.all_clean()}};
    deep["fsck"] = nlohmann::json::array();
    for (const auto& f : d.fsck) {
      deep["fsck"].push_back({{"partition", f.partition},
                              {"filesystem", f.filesystem},
                              {"tool", f.tool},
                              {"exit_code", f.exit_code},
                              {"clean", f.clean},
                              {"output", f.output}});
    }
    deep["comparisons"] = nlohmann::json::array();
    for (const auto& c : d.comparisons) {
      deep["comparisons"].push_back(
          {{"fact", c.fact}, {"in_process", c.in_process}, {"guestfs", c.guestfs}, {"agree", c.agree()}});
    }
    out["deep"] = deep;
  }
  return out;
}

// Values compared in the deep check may be whole files: shown on one line.
std::string one_line(std::string text) {
  for (auto pos = text.find('\n'); pos != std::string::npos; pos = text.find('\n', pos + 2)) text.replace(pos, 1, "\\n");
  return text;
}

// "  label      value" with the labels of one section padded to one width.
class Section {
 public:
  explicit Section(std::string title) : title_(std::move(title)) {}
  void add(std::string label, std::string value) { rows_.push_back({std::move(label), std::move(value)}); }
  void print() const {
    std::printf("%s\n", title_.c_str());
    std::size_t width = 0;
    for (const auto& row : rows_) width = std::max(width, row.first.size());
    for (const auto& row : rows_) {
      std::string label = row.first;
      label.resize(width, ' ');
      std::printf("  %s  %s\n", label.c_str(), row.second.c_str());
    }
  }

 private:
  std::string title_;
  std::vector<std::pair<std::string, std::string>> rows_;
};

std::string file_summary(const InspectedFile& f) {
  if (!f.present) return "absent";
  std::string owner = f.uid == 0 && f.gid == 0 ? "root:root" : std::to_string(f.uid) + ":" + std::to_string(f.gid);
  return f.type + " " + octal(f.permissions) + " " + owner + ", " + std::to_string(f.size) + " bytes";
}

// "unreadable (REASON)" when the report could not read path, else fallback.
std::string unreadable_or(const ImageInspection& r, std::uint32_t partition, const std::string& path, const std::string& fallback) {
  for (const auto& u : r.unreadable) {
    if (u.partition == partition && u.path == path) return "unreadable (" + u.reason + ")";
  }
  return fallback;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line = " ";
    for (std::size_t i = 0; i < row.size(); ++i) {
      std::string cell = row[i];
      if (i + 1 < row.size()) cell.resize(widths[i], ' ');
      line += " " + cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

void print_warnings(const std::vector<std::string>& warnings) {
  std::printf("\n");
  if (warnings.empty()) {
    std::printf("warnings: none\n");
  } else {
    std::printf("warnings (%zu)\n", warnings.size());
    for (const auto& w : warnings) std::printf("  - %s\n", w.c_str());
  }
}

void print_text(const ImageInspection& r) {
  Section image("image");
  image.add("file", r.path.string());
  image.add("format", r.input_format + (r.input_format == "raw" ? "" : " (decompressed to a scratch file for reading)"));
  image.add("size", format_byte_size(r.image_bytes));
  image.add("partition table", r.table_kind + ", disk identifier " + r.disk_identifier);
  image.print();

  std::printf("\npartitions\n");
  std::vector<std::vector<std::string>> rows{{"#", "type", "start", "size", "PARTUUID", "filesystem", "label", "UUID", "free"}};
  for (const auto& p : r.partitions) {
    rows.push_back({std::to_string(p.index), p.type + (p.type_name.empty() ? "" : " " + p.type_name),
                    format_byte_size(p.start_bytes), format_byte_size(p.size_bytes), p.partuuid,
                    p.filesystem.empty() ? "-" : p.filesystem, p.label.empty() ? "-" : p.label,
                    p.uuid.empty() ? "-" : p.uuid, p.free_bytes ? format_byte_size(*p.free_bytes) : "-"});
  }
  print_table(rows);

  if (r.boot) {
    const auto& b = *r.boot;
    std::printf("\n");
    Section boot("boot partition (" + std::to_string(b.partition) + ")");
    std::string cmdline = b.cmdline;
    while (!cmdline.empty() && cmdline.back() == '\n') cmdline.pop_back();
    boot.add("cmdline.txt", b.has_cmdline ? cmdline : unreadable_or(r, b.partition, "/cmdline.txt", "absent"));
    if (b.root_partuuid) {
      std::string verdict = !b.root_partition ? "no partition has it"
                            : r.root_partition && *b.root_partition == *r.root_partition
                                ? "partition " + std::to_string(*b.root_partition) + ", the root filesystem: matches"
                                : "partition " + std::to_string(*b.root_partition) + ", not the ext4 root";
      boot.add("root", "PARTUUID=" + *b.root_partuuid + " (" + verdict + ")");
    } else if (b.has_cmdline) {
      boot.add("root", "not given as root=PARTUUID=");
    }
    boot.add("memory cgroup", b.cgroup_memory_enabled ? "cgroup_enable=memory present" : "cgroup_enable=memory missing");
    std::string kernels;
    if (b.has_kernel_2712) kernels += "kernel_2712.img";
    if (b.has_kernel8) kernels += std::string(kernels.empty() ? "" : ", ") + "kernel8.img";
    boot.add("kernels", kernels.empty() ? "none" : kernels);
    if (b.config_kernel) boot.add("config.txt kernel", *b.config_kernel);
    if (!b.has_config_txt) {
      boot.add("config.txt", unreadable_or(r, b.partition, "/config.txt", "absent"));
    } else if (!b.has_managed_block) {
      boot.add("config.txt", "no aggrik8s-image block");
    } else {
      std::string lines;
      for (const auto& line : b.managed_config_lines) lines += (lines.empty() ? "" : " | ") + line;
      boot.add("config.txt block", lines);
    }
    boot.print();
  }

  if (r.first_boot) {
    const auto& f = *r.first_boot;
    std::printf("\n");
    Section first_boot("first boot");
    first_boot.add("format", to_string(f.format));
    if (f.format != InspectedFirstBoot::none) {
      std::string files;
      for (const auto& name : f.files) files += (files.empty() ? "" : ", ") + name;
      first_boot.add("files", files);
      first_boot.add("started by cmdline", f.started_by_cmdline ? "yes" : "no");
      first_boot.add("hostname", f.hostname.value_or("not set"));
      if (f.instance_id) first_boot.add("instance id", *f.instance_id);
    }
    first_boot.print();
  }

  if (r.root) {
    std::printf("\n");
    Section root("root filesystem (partition " + std::to_string(r.root->partition) + ")");
    root.add("os", r.root->os.value_or("unknown"));
    root.add("/etc/hostname", r.root->hostname ? *r.root->hostname : unreadable_or(r, r.root->partition, "/etc/hostname", "absent"));
    root.add("cloud-init", r.root->has_cloud_init ? "installed" : "not installed");
    root.print();
  }

  std::printf("\n");
  const auto& k = r.rke2;
  Section rke2("RKE2 preload");
  if (r.root_error) {
    rke2.add("state", "unknown (the root filesystem cannot be read; see warnings)");
  } else if (!k.present) {
    rke2.add("state", "none (no RKE2 preload found)");
  } else {
    rke2.add("version", k.version.empty() ? "unknown" : k.version + " (from " + k.version_source + ")");
    std::string role = k.role.empty() ? "none (no rke2 unit enabled)" : k.role;
    for (const auto& u : k.enabled_units) role += ", " + u.path.substr(u.path.rfind('/') + 1) + " -> " + u.link_target;
    rke2.add("role", role);
    rke2.add("node name", k.node_name.value_or("not set in config.yaml"));
    rke2.add("binary", file_summary(k.binary));
    if (k.image_archives.empty()) rke2.add("image archives", "none");
    for (const auto& a : k.image_archives) {
      rke2.add("image archive", a.name + "  " + format_byte_size(a.size) +
                                    (a.recorded_sha256 ? "  sha256 " + a.recorded_sha256->substr(0, 16) + "..." : ""));
    }
    std::string config = file_summary(k.config);
    if (k.config.present) {
      std::string keys;
      for (const auto& key : k.config_keys) {
        keys += (keys.empty() ? "" : ", ") + key + (key == "token" || key == "agent-token" ? " (set)" : "");
      }
      config += "; keys: " + (keys.empty() ? "none" : keys);
    }
    rke2.add("config.yaml", config);
    rke2.add("registries.yaml", file_summary(k.registries));
    rke2.add("preload.json", k.has_preload_record
                                 ? "present (written by aggrik8s-image " + k.recorded_tool_version.value_or("?") + ")"
                                 : unreadable_or(r, r.root ? r.root->partition : 0, preload_record_path, "absent") +
                                       " (facts read from the files)");
  }
  rke2.print();

  if (!r.unreadable.empty()) {
    std::printf("\nunreadable files (the rest of the report does not depend on them)\n");
    std::vector<std::vector<std::string>> unreadable_rows;
    for (const auto& u : r.unreadable) unreadable_rows.push_back({"partition " + std::to_string(u.partition), u.path, u.reason});
    print_table(unreadable_rows);
  }

  if (r.deep) {
    const auto& d = *r.deep;
    std::printf("\ndeep check (libguestfs, %s backend, %.0f s)\n", d.backend.c_str(), d.seconds);
    std::vector<std::vector<std::string>> fsck_rows;
    for (const auto& f : d.fsck) {
      fsck_rows.push_back({"fsck", "partition " + std::to_string(f.partition), f.filesystem, f.tool,
                           f.clean ? "clean" : "NOT CLEAN (exit " + std::to_string(f.exit_code) + ")"});
    }
    print_table(fsck_rows);
    std::vector<std::vector<std::string>> comparison_rows;
    for (const auto& c : d.comparisons) {
      comparison_rows.push_back({c.agree() ? "agree" : "DISAGREE", c.fact,
                                 c.agree() ? one_line(c.in_process)
                                           : "in-process: " + one_line(c.in_process) + " / guestfs: " + one_line(c.guestfs)});
    }
    print_table(comparison_rows);
    for (const auto& f : d.fsck) {
      if (!f.clean && !f.output.empty()) std::printf("\nfsck of partition %u said:\n%s\n", f.partition, f.output.c_str());
    }
  }

  print_warnings(r.warnings);
}

// ---- boot.img (Pi 5 HTTP boot ramdisk) ----

nlohmann::json boot_ramdisk_json(const BootRamdiskInspection& r) {
  nlohmann::json out;
  out["image"] = {{"path", r.path.string()}, {"kind", "boot.img"}, {"size", r.image_bytes}, {"sha256", r.sha256}};
  out["filesystem"] = {{"type", r.filesystem}, {"label", r.label}, {"free", r.free_bytes}};
  out["files"] = nlohmann::json::array();
  for (const auto& f : r.files) {
    out["files"].push_back({{"path", f.path}, {"type", f.is_directory ? "directory" : "file"}, {"size", f.size}});
  }
  out["signature"] = nullptr;
  if (r.signature) {
    const auto& s = *r.signature;
    out["signature"] = {{"boot_sig", s.boot_sig.string()},
                        {"public_key", s.public_key.string()},
                        {"public_key_sha256", s.public_key_sha256},
                        {"signed_sha256", optional_json(s.signed_sha256)},
                        {"ts", s.timestamp ? nlohmann::json(*s.timestamp) : nlohmann::json(nullptr)},
                        {"verified", s.verified},
                        {"reason", s.verified ? nlohmann::json(nullptr) : nlohmann::json(s.reason)}};
  }
  return out;
}

void print_boot_ramdisk(const BootRamdiskInspection& r) {
  Section image("boot.img (Pi 5 HTTP boot ramdisk: a FAT image, no partition table)");
  image.add("file", r.path.string());
  image.add("size", format_byte_size(r.image_bytes) + " (" + std::to_string(r.image_bytes) + " bytes)");
  image.add("sha256", r.sha256);
  image.add("filesystem", r.filesystem + (r.label.empty() ? "" : ", label " + r.label) + ", " +
                              format_byte_size(r.free_bytes) + " free");
  image.print();

  std::uint64_t total = 0;
  std::size_t file_count = 0;
  std::vector<std::vector<std::string>> rows;
  for (const auto& f : r.files) {
    if (!f.is_directory) {
      total += f.size;
      ++file_count;
    }
    rows.push_back({f.is_directory ? "dir" : std::to_string(f.size), f.path + (f.is_directory ? "/" : "")});
  }
  std::printf("\nfiles (%zu, %s)\n", file_count, format_byte_size(total).c_str());
  print_table(rows);

  if (r.signature) {
    const auto& s = *r.signature;
    std::printf("\n");
    Section signature("signature");
    signature.add("boot.sig", s.boot_sig.string());
    signature.add("public key", s.public_key.string() + " (sha256:" + s.public_key_sha256 + ")");
    if (s.timestamp) signature.add("ts", std::to_string(*s.timestamp));
    signature.add("result", s.verified ? "verified: the bootloader holding this key accepts this boot.img"
                                       : "NOT VERIFIED: " + s.reason);
    signature.print();
  }
}

// ---- Talos ISO ----

nlohmann::json talos_iso_json(const TalosIsoInspection& r) {
  nlohmann::json out;
  out["image"] = {{"path", r.path.string()}, {"kind", r.config_only ? "talos-config-iso" : "talos-iso"}, {"size", r.image_bytes}};
  out["talos"] = {{"volume_id", r.volume_id}, {"version", optional_json(r.talos_version)}};
  out["boot_entries"] = nlohmann::json::array();
  for (const auto& e : r.entries) {
    out["boot_entries"].push_back({{"where", e.where},
                                   {"command_line", e.command_line},
                                   {"bytes", e.command_line.size()},
                                   {"kernel", e.kernel},
                                   {"kernel_keeps", e.kernel_limit}});
  }
  auto size_or_null = [](const std::optional<std::uint64_t>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  out["config"] = {{"config_yaml_bytes", size_or_null(r.config_yaml_bytes)},
                   {"embedded_config_bytes", size_or_null(r.embedded_config_bytes)}};
  out["warnings"] = r.warnings;
  return out;
}

void print_talos_iso(const TalosIsoInspection& r) {
  Section image(r.config_only ? "Talos config ISO (the metal-iso volume a node boots beside talos-metal-iso.iso)" : "Talos ISO");
  image.add("file", r.path.string());
  image.add("size", format_byte_size(r.image_bytes));
  image.add("volume", r.volume_id);
  if (!r.config_only) image.add("version", r.talos_version.value_or("unknown (the volume id names none)"));
  // Sizes only: the config carries the cluster's PKI.
  image.add("config.yaml", r.config_yaml_bytes ? std::to_string(*r.config_yaml_bytes) + " bytes (read by talos.config=metal-iso)"
                                               : "absent");
  if (!r.config_only) {
    image.add("embedded config", r.embedded_config_bytes
                                     ? std::to_string(*r.embedded_config_bytes) + " bytes (boot/embedded-config.cpio.zst, an initrd)"
                                     : "absent");
  }
  image.print();
  if (!r.config_only) std::printf("\nboot entries (%zu)\n", r.entries.size());
  for (const auto& e : r.entries) {
    std::printf("  %s: %zu bytes, the kernel (%s) keeps %u\n    %s\n", e.where.c_str(), e.command_line.size(),
                e.kernel.c_str(), e.kernel_limit, one_line(e.command_line).c_str());
  }
  print_warnings(r.warnings);
}

}  // namespace

Command inspect_command() {
  CommandSpec spec{
      "inspect",
      "IMAGE",
      "Show partitions, filesystems, boot settings and the RKE2 preload of an image",
      "Reads IMAGE without changing it: a raw .img, or .img.zst/.xz/.gz/.bz2/.zip (decompressed to a\n"
      "scratch file in $TMPDIR, removed afterwards). Reports the partition table, each partition's\n"
      "filesystem, cmdline.txt (and whether root=PARTUUID= names the root partition), config.txt's\n"
      "managed block, the first-boot format, and the RKE2 preload (version, role, image archives,\n"
      "config.yaml's mode, owner and keys; never its values). Problems are listed as warnings; a file\n"
      "that exists but cannot be read (symlink loop, dangling link, directory) is listed as unreadable\n"
      "with its reason, and the rest of the report is unaffected. Filesystems are named by libblkid.\n"
      "\n"
      "--deep re-reads the same facts through libguestfs (the Linux kernel's own FAT and ext4 drivers,\n"
      "in one QEMU appliance, image attached read-only), then fscks both filesystems on the appliance's\n"
      "throwaway overlay, and reports each fact as agree/DISAGREE. It takes 30-40 s under software\n"
      "emulation; LIBGUESTFS_BACKEND defaults to direct.\n"
      "\n"
      "A Talos ISO (an ISO 9660 volume with /boot/vmlinuz and /boot/grub/grub.cfg: Talos' own or a node's\n"
      "from `build`) is recognised: its version (volume id), every boot entry's kernel command line (GRUB\n"
      "menu entries, UKIs in the tree and the EFI partition) against the limit of the kernel it starts,\n"
      "and the sizes of /config.yaml and the embedded-config archive (never their contents); a config\n"
      "ISO (volume metal-iso) with the size of its config.yaml.\n"
      "\n"
      "A Pi 5 HTTP boot image (boot.img: a FAT filesystem with no partition table) is recognised\n"
      "and its files are listed with their sizes. With --boot-sig FILE and --public-key PEM, the\n"
      "check the bootloader makes is made too: boot.img's sha256 against boot.sig's first line, and\n"
      "boot.sig's rsa2048 signature (RSA-2048, PKCS#1 v1.5, SHA-256) against the public key.\n"
      "\n"
      "Exit status: 0 the image was read (warnings are printed, not fatal); 1 the image cannot be\n"
      "read, or --strict and there are warnings, or --deep found a disagreement or an unclean\n"
      "filesystem, or libguestfs could not start, or boot.sig does not verify (the reason is\n"
      "printed); 2 usage error.",
      {{"json", '\0', "", "machine-readable output"},
       {"deep", '\0', "", "also check with libguestfs and fsck (slow: boots an appliance)"},
       {"strict", '\0', "", "exit 1 when there are warnings"},
       {"boot-sig", '\0', "FILE", "boot.img only: verify this boot.sig (needs --public-key)"},
       {"public-key", '\0', "PEM", "boot.img only: the RSA-2048 public key the Pi's EEPROM holds"}},
      1,
      1};
  return {spec, [](const ParsedArguments& args) {
            InterruptCleanup::install();  // Ctrl-C leaves no unfinished outputs behind
            const std::string& image = args.positional.front();
            auto boot_sig = args.value("boot-sig");
            auto public_key = args.value("public-key");
            if (boot_sig.has_value() != public_key.has_value()) {
              throw UsageError("--boot-sig and --public-key go together: a boot.sig is checked against a public key");
            }
            if (std::filesystem::is_regular_file(image) && is_boot_ramdisk_image(image)) {
              std::optional<BootSignatureFiles> signature_files;
              if (boot_sig) signature_files = BootSignatureFiles{*boot_sig, *public_key};
              BootRamdiskInspection report = inspect_boot_ramdisk(image, signature_files);
              if (args.flag("json")) {
                std::printf("%s\n", boot_ramdisk_json(report).dump(2).c_str());
              } else {
                print_boot_ramdisk(report);
              }
              return report.signature && !report.signature->verified ? exit_failure : exit_success;
            }
            if (boot_sig) {
              throw UsageError("--boot-sig applies to a boot.img (a FAT image with no partition table); " + image +
                               " is not one");
            }
            if (is_talos_iso_image(image)) {
              if (args.flag("deep")) throw UsageError("--deep checks a Pi disk image's filesystems; " + image + " is a Talos ISO");
              TalosIsoInspection report = inspect_talos_iso(image);
              if (args.flag("json")) {
                std::printf("%s\n", talos_iso_json(report).dump(2).c_str());
              } else {
                print_talos_iso(report);
              }
              return args.flag("strict") && !report.warnings.empty() ? exit_failure : exit_success;
            }
            InspectOptions options;
            options.deep = args.flag("deep");
            ImageInspection report = inspect_image(image, options);
            if (args.flag("json")) {
              std::printf("%s\n", inspection_json(report).dump(2).c_str());
            } else {
              print_text(report);
            }
            if (report.deep && (!report.deep->all_agree() || !report.deep->all_clean())) return exit_failure;
            if (args.flag("strict") && !report.warnings.empty()) return exit_failure;
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
