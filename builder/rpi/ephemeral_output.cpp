#include "builder/rpi/ephemeral_output.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>

#include "builder/rpi/ephemeral_initramfs.hpp"
#include "builder/rpi/ephemeral_root_plan.hpp"
#include "builder/rpi/first_boot.hpp"
#include "builder/rpi/node_root_files.hpp"
#include "builder/rpi/pi_boot_files.hpp"
#include "builder/rpi/pi_boot_image.hpp"
#include "builder/rpi/rootfs_overlay.hpp"
#include "core/byte_size.hpp"
#include "core/ephemeral_boot_arguments.hpp"
#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"
#include "core/positional_io.hpp"
#include "core/sha256.hpp"
#include "disk/block_device.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/fat_tree.hpp"
#include "disk/linux_kernel_image.hpp"
#include "disk/partition_table.hpp"
#include "disk/squashfs_writer.hpp"
#include "disk/tar_writer.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t MiB = 1ull << 20;
const std::string images_directory = "/var/lib/rancher/rke2/agent/images";
// Raspberry Pi OS enables it for the first boot; it deletes every host key and makes new ones.
const std::string regenerate_host_keys_link = "/etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service";
// Boot partition files an ephemeral node does not take from the image: its own config.txt and
// cmdline.txt, our initramfs instead of the image's, and first-boot files (they go into the layer).
const std::set<std::string> node_specific_boot_files{"cmdline.txt", "config.txt", "initramfs8", "initramfs_2712",
                                                     "firstrun.sh", "user-data", "meta-data", "network-config"};

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The initramfs the firmware loads with a kernel when config.txt says auto_initramfs=1 (Raspberry Pi
// OS's default): kernel8.img -> initramfs8, kernel_2712.img -> initramfs_2712.
std::string initramfs_name_for(const std::string& kernel) {
  std::string name = kernel;
  if (name.starts_with("kernel")) name.replace(0, 6, "initramfs");
  if (name.ends_with(".img")) name.resize(name.size() - 4);
  return name;
}

std::string node_kernel(const Rpi5Node& node) { return node.boot.kernel_page_size_kib == 4 ? "kernel8.img" : "kernel_2712.img"; }

void write_binary(const fs::path& path, std::span<const std::uint8_t> bytes, mode_t mode) {
  FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw_system_error("cannot create " + path.string(), errno);
  write_all(fd.get(), bytes.data(), bytes.size(), path.string());
}

// Copies the boot partition's files (all but node_specific_boot_files) into `to`, returning name ->
// sha256 for the manifest. Directories are walked (overlays/).
void copy_boot_files(FatFilesystem& boot, const fs::path& to, nlohmann::json& digests) {
  for (const FatTreeEntry& item : list_fat_tree(boot)) {
    if (item.entry.is_directory) {
      fs::create_directories(to / item.path);
      continue;
    }
    const bool in_root = item.path.find('/') == std::string::npos;
    if (in_root && node_specific_boot_files.contains(lowercase(item.path))) continue;
    std::vector<std::uint8_t> content = boot.read_file(item.path);
    write_binary(to / item.path, content, 0644);
    digests[item.path] = Sha256::of(std::span<const std::uint8_t>(content)).hex();
  }
}

// The uncompressed size of an RKE2 image archive (.tar.zst, .tar.gz or .tar): what containerd
// unpacks. zstd records it in the frame header when the compressor knew the input size (as the
// release's files do); otherwise the archive is decompressed to count.
std::uint64_t uncompressed_archive_size(const fs::path& path, std::uint64_t file_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string());
  std::vector<char> head(18);  // ZSTD_FRAMEHEADERSIZE_MAX (static-linking-only API)
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  std::size_t got = static_cast<std::size_t>(in.gcount());
  if (got >= 4 && static_cast<unsigned char>(head[0]) == 0x28 && static_cast<unsigned char>(head[1]) == 0xb5) {
    unsigned long long size = ZSTD_getFrameContentSize(head.data(), got);
    if (size != ZSTD_CONTENTSIZE_UNKNOWN && size != ZSTD_CONTENTSIZE_ERROR) return size;
    in.clear();
    in.seekg(0);
    std::unique_ptr<ZSTD_DStream, decltype(&ZSTD_freeDStream)> stream(ZSTD_createDStream(), ZSTD_freeDStream);
    std::vector<char> input(ZSTD_DStreamInSize()), output(ZSTD_DStreamOutSize());
    std::uint64_t total = 0;
    while (in.read(input.data(), static_cast<std::streamsize>(input.size())) || in.gcount() > 0) {
      ZSTD_inBuffer source{input.data(), static_cast<std::size_t>(in.gcount()), 0};
      while (source.pos < source.size) {
        ZSTD_outBuffer sink{output.data(), output.size(), 0};
        std::size_t r = ZSTD_decompressStream(stream.get(), &sink, &source);
        if (ZSTD_isError(r)) throw Error(path.string() + ": " + ZSTD_getErrorName(r));
        total += sink.pos;
      }
    }
    return total;
  }
  if (got >= 2 && static_cast<unsigned char>(head[0]) == 0x1f && static_cast<unsigned char>(head[1]) == 0x8b && file_size >= 4) {
    // gzip's trailer: the size modulo 4 GiB. Archives beyond that are counted as their compressed
    // size times four, a generous bound for tar layers.
    in.clear();
    in.seekg(static_cast<std::streamoff>(file_size - 4));
    unsigned char tail[4] = {};
    in.read(reinterpret_cast<char*>(tail), 4);
    std::uint64_t size = tail[0] | (tail[1] << 8) | (tail[2] << 16) | (static_cast<std::uint64_t>(tail[3]) << 24);
    return size >= file_size ? size : file_size * 4;
  }
  return file_size;
}

// Directories in the layer that the shared root already has (as a directory, or as a symlink to one,
// like /lib -> usr/lib) are left out of the tar: unpacking them would reset the root's modes and
// owners, or replace a symlink with a directory.
bool root_has_directory(const Ext4Filesystem& root, const std::string& path) {
  if (!root.exists(path)) return false;
  Ext4FileType type = root.status(path).type;
  return type == Ext4FileType::directory || type == Ext4FileType::symlink;
}

// Where a firstrun.sh base's first-boot script lives on an ephemeral node, and the unit that runs it.
const std::string first_boot_script = "/usr/local/lib/aggrik8s/first-boot.sh";
const std::string first_boot_unit = "/etc/systemd/system/aggrik8s-first-boot.service";

// On a disk image, firstrun.sh runs once through systemd.run= and the node reboots when it is done
// (systemd.run_success_action=reboot). A fresh RAM root would do that on every boot, so an ephemeral
// node runs the same script as an early oneshot unit at every boot instead, without the reboot: before
// sysinit.target, so users, keys, the timezone and the NetworkManager connection are in place before
// NetworkManager, sshd and the gettys start. Raspberry Pi OS's first-user wizard (userconfig.service)
// is masked when the profile names users: it is already queued in the boot the script runs in, so the
// script's `systemctl disable` comes too late for it.
std::string first_boot_unit_text(const std::string& node) {
  return "# Written by aggrik8s-image for ephemeral node " + node +
         ": applies its first-boot settings at every boot\n"
         "# (the disk image runs the same script once, through systemd.run=, and reboots).\n"
         "[Unit]\n"
         "Description=aggrik8s-image first-boot settings of an ephemeral node\n"
         "DefaultDependencies=no\n"
         "After=local-fs.target\n"
         "Before=sysinit.target NetworkManager.service ssh.service getty@tty1.service userconfig.service "
         "systemd-user-sessions.service\n"
         "ConditionPathExists=" + first_boot_script + "\n\n"
         "[Service]\n"
         "Type=oneshot\n"
         "RemainAfterExit=yes\n"
         "ExecStart=/bin/bash " + first_boot_script + "\n\n"
         "[Install]\n"
         "WantedBy=sysinit.target\n";
}

bool has_first_boot_settings(const Rpi5Node& node) {
  const SystemSettings& s = node.system;
  return !s.users.empty() || s.timezone || s.locale || s.keyboard || s.ssh_password_authentication ||
         node.network.mode == NetworkSettings::Mode::static_address;
}

struct LayerResult {
  std::vector<std::string> changes;
  std::vector<std::string> cmdline_add;
  std::string first_boot = "none";
};

// The node's layer: a scratch ext4 (mke2fs, sparse, beside the outputs) that gets exactly what the disk
// image's root gets for this node (write_node_root_files), plus its host name and first-boot files;
// then tar'ed with the shared root's own directories left out.
LayerResult write_node_layer(const Profile& profile, const Rpi5Node& node, const EphemeralSource& source,
                             const Ext4Filesystem& root, FatFilesystem& boot, const Rke2Release& release,
                             std::optional<std::int64_t> fixed_time, const fs::path& scratch, const fs::path& layer) {
  LayerResult result;
  std::uint64_t size = (64 * MiB + overlay_space_needed(node.overlays) + MiB - 1) / MiB * MiB;
  {
    // A sparse file of the size (mke2fs formats the region create_ext4_filesystem gives it).
    FileDescriptor file(::open(scratch.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!file || ::ftruncate(file.get(), static_cast<off_t>(size)) != 0) throw_system_error("cannot create " + scratch.string(), errno);
  }
  create_ext4_filesystem(scratch, 0, size,
                         {"layer", std::nullopt, fixed_time, std::string("61796572-0000-4000-8000-000000000001")});
  {
    Ext4Filesystem fs = Ext4Filesystem::open(scratch, 0, size, Ext4Access::read_write, fixed_time);
    fs.create_directories("/etc");
    fs.write_file("/etc/hostname", node.system.hostname + "\n", {0644, 0, 0, std::nullopt});
    std::string hosts = root.exists("/etc/hosts") ? root.read_file("/etc/hosts") : "127.0.0.1\tlocalhost\n";
    fs.write_file("/etc/hosts", hosts_with_hostname(hosts, node.system.hostname), {0644, 0, 0, std::nullopt});
    result.changes.push_back("/etc/hostname, /etc/hosts: " + node.system.hostname);
    NodeRootContext context{profile, release, source.network_manager, source.boot_mount, fixed_time,
                            profile.output.ephemeral->image_archives == EphemeralSettings::ImageArchives::root};
    for (auto& change : write_node_root_files(fs, node, context)) result.changes.push_back(std::move(change));
    // ssh: true enables the unit as `systemctl enable ssh` would (the disk image's first boot does it).
    for (const char* unit : {"/lib/systemd/system/ssh.service", "/usr/lib/systemd/system/ssh.service"}) {
      if (!node.system.ssh || !root.exists(unit)) continue;
      fs.create_directories("/etc/systemd/system/multi-user.target.wants");
      fs.create_symlink("/etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service");
      fs.create_symlink("/etc/systemd/system/sshd.service", "/lib/systemd/system/ssh.service");
      result.changes.push_back("ssh.service enabled");
      break;
    }
    bool nocloud_files = boot.exists("user-data") || boot.exists("meta-data") || boot.exists("network-config");
    FirstBootFormat format = detect_first_boot_format(nocloud_files, source.rootfs_has_cloud_init);
    if (format == FirstBootFormat::cloud_init) {
      // cloud-init runs at every boot of a fresh root and finds the same seed each time: the same node.
      FirstBootPlan plan = plan_first_boot(format, node, load_user_password_hashes(node), source.boot_mount);
      fs.create_directories(source.boot_mount);
      for (const auto& [name, content] : plan.boot_files) {
        std::uint16_t mode = name == "meta-data" ? 0644 : 0600;
        fs.write_file(source.boot_mount + "/" + name, content, {mode, 0, 0, std::nullopt});
        result.changes.push_back(source.boot_mount + "/" + name + " (cloud-init)");
      }
      result.cmdline_add = plan.cmdline_add;
      result.first_boot = to_string(format);
    } else if (has_first_boot_settings(node)) {
      FirstBootPlan plan = plan_first_boot(format, node, load_user_password_hashes(node), source.boot_mount);
      fs.create_directories("/usr/local/lib/aggrik8s");
      // 0700: it carries password hashes.
      fs.write_file(first_boot_script, plan.boot_files.begin()->second, {0700, 0, 0, std::nullopt});
      fs.create_directories("/etc/systemd/system/sysinit.target.wants");
      fs.write_file(first_boot_unit, first_boot_unit_text(node.name), {0644, 0, 0, std::nullopt});
      fs.create_symlink("/etc/systemd/system/sysinit.target.wants/aggrik8s-first-boot.service", first_boot_unit);
      if (!node.system.users.empty()) fs.create_symlink("/etc/systemd/system/userconfig.service", "/dev/null");
      result.changes.push_back(first_boot_script + " run at every boot by aggrik8s-first-boot.service (firstrun.sh)");
      result.first_boot = "firstrun-unit";
    }
    fs.close();
  }
  Ext4Filesystem fs = Ext4Filesystem::open(scratch, 0, size, Ext4Access::read_only);
  TarWriteOptions tar;
  tar.selection.exclude = {"/lost+found"};
  tar.selection.include = [&](const FilesystemTreeEntry& entry) {
    return entry.path != "/" && !(entry.type == Ext4FileType::directory && root_has_directory(root, entry.path));
  };
  write_tar(fs, layer, tar);
  fs::permissions(layer, fs::perms::owner_read | fs::perms::owner_write);
  return result;
}

// output.http_boot: nodes/<node>/boot.img and boot.sig in the staging directory. The build's boot
// files as they are under boot/ (the partition's minus node_specific_boot_files, plus our initramfs),
// and the node's config.txt and cmdline.txt, which gets the URLs serve would add to a TFTP boot's:
// the bootloader takes boot.img whole, so nothing can be added per request. Returns the manifest's
// "http_boot" entry (node -> boot.img and boot.sig with size and sha256).
nlohmann::json write_http_boot_images(const Profile& profile, const std::vector<const Rpi5Node*>& nodes, FatFilesystem& boot,
                                      const std::map<std::string, BuiltInitramfs>& initramfs_by_kernel,
                                      const std::string& config_txt, const fs::path& staging, const std::string& id,
                                      const nlohmann::json& manifest,
                                      const RsaPrivateKey& key, std::int64_t build_time, PartialOutputs& partial) {
  EphemeralRootLocation urls;
  urls.url_base = manifest["http_boot_url_base"].get<std::string>();
  urls.build_id = id;
  urls.root_file = manifest["root"]["file"].get<std::string>();
  urls.root_sha256 = manifest["root"]["sha256"].get<std::string>();

  // One spec for every node: the initramfs contents (tens of MiB) are read once and only config.txt
  // and cmdline.txt change between nodes.
  PiBootImageSpec spec;
  spec.image_size = profile.output.http_boot->image_size;
  spec.timestamp = build_time;
  spec.omitted_root_files = node_specific_boot_files;
  for (const auto& [kernel, initramfs] : initramfs_by_kernel) {
    const std::string name = initramfs.path.filename().string();
    std::string& content = spec.replaced_files[name];
    content.resize(initramfs.bytes);
    std::ifstream in(initramfs.path, std::ios::binary);
    if (!in.read(content.data(), static_cast<std::streamsize>(content.size()))) throw Error("cannot read " + initramfs.path.string());
    spec.omitted_root_files.erase(lowercase(name));
  }
  spec.omitted_root_files.erase("config.txt");
  spec.omitted_root_files.erase("cmdline.txt");

  nlohmann::json entries = nlohmann::json::object();
  for (const Rpi5Node* node : nodes) {
    log::info("ephemeral: node ", node->name, ": boot.img for HTTP boot");
    const fs::path node_dir = staging / "nodes" / node->name;
    const nlohmann::json& entry = manifest["nodes"][node->name];
    spec.node = node->name;
    spec.replaced_files["config.txt"] = apply_config_txt(config_txt, node->boot);  // as nodes/<node>/config.txt
    spec.replaced_files["cmdline.txt"] = ephemeral_boot_cmdline(entry["cmdline"].get<std::string>(), urls, node->name);
    // The identity URL is last on the line: the first argument a long boot.cmdline pushes past the kernel's limit.
    if (auto warning = check_pi_cmdline_length(spec.replaced_files["cmdline.txt"], "node " + node->name + "'s boot.img")) {
      log::warning(*warning);
    }
    BuiltPiBoot built = write_pi_boot_files(pi_boot_image_bytes(boot, spec), key, build_time, node_dir / "boot.img",
                                            node_dir / "boot.sig", partial);
    entries[node->name] = {{"boot_img", {{"file", "nodes/" + node->name + "/boot.img"}, {"size", built.image.size}, {"sha256", built.image.sha256.hex()}}},
                           {"boot_sig", {{"file", "nodes/" + node->name + "/boot.sig"}, {"size", built.signature.size}, {"sha256", built.signature.sha256.hex()}}},
                           {"url_base", urls.url_base}};
  }
  return entries;
}

}  // namespace

BuiltEphemeral build_ephemeral_output(const Profile& profile, const std::vector<const Rpi5Node*>& nodes,
                                      const EphemeralSource& source, const Rke2Release& release,
                                      const BuildOptions& options, PartialOutputs& partial,
                                      const RsaPrivateKey* http_boot_key) {
  const EphemeralSettings& settings = *profile.output.ephemeral;
  const auto started = std::chrono::steady_clock::now();
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  const std::optional<std::int64_t> fixed_time = options.source_date_epoch;
  const std::int64_t build_time = fixed_time.value_or(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  fs::path profile_dir = options.output_dir / "ephemeral" / profile.name;
  create_output_directories(profile_dir);
  fs::path staging = partial.track(profile_dir / (".partial-" + std::to_string(::getpid())));
  fs::remove_all(staging);
  create_output_directories(staging / "boot");
  create_output_directories(staging / "nodes");
  fs::permissions(staging, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec);

  FileBlockDevice device(source.image, FileBlockDevice::Access::read_only);
  PartitionTable table = read_partition_table(device);
  SubrangeBlockDevice boot_partition = open_partition(device, table, source.boot_index);
  FatFilesystem boot(boot_partition);
  Ext4Filesystem root = Ext4Filesystem::open(source.image, source.root_offset, source.root_size, Ext4Access::read_only);

  nlohmann::json manifest{{"format", 1}, {"profile", profile.name}, {"created", build_time}};
  log::info("ephemeral: boot files");
  nlohmann::json boot_digests = nlohmann::json::object();
  copy_boot_files(boot, staging / "boot", boot_digests);

  // One initramfs per kernel the nodes boot, with that kernel's modules.
  std::map<std::string, BuiltInitramfs> initramfs_by_kernel;
  for (const Rpi5Node* node : nodes) {
    std::string kernel = node_kernel(*node);
    if (initramfs_by_kernel.contains(kernel)) continue;
    if (!boot.exists(kernel)) {
      throw Error(source.image.string() + ": node " + node->name + " boots " + kernel + " but the boot partition has none");
    }
    std::string release_name = kernel_release(boot.read_file(kernel));
    if (root.exists("/boot/config-" + release_name)) {
      auto problems = ephemeral_kernel_config_problems(root.read_file("/boot/config-" + release_name), settings.compression);
      if (!problems.empty()) {
        std::string text;
        for (const auto& p : problems) text += "\n  " + p;
        throw Error(profile.file.string() + ": the kernel " + release_name + " (" + kernel + ", /boot/config-" +
                    release_name + ") cannot boot an ephemeral node:" + text);
      }
    }
    EphemeralInitramfsOptions initramfs;
    initramfs.kernel_release = release_name;
    initramfs.extra_modules = settings.modules;
    initramfs.busybox = settings.busybox;
    initramfs.fixed_time = build_time;
    std::string name = initramfs_name_for(kernel);
    log::info("ephemeral: ", name, " for ", kernel, " (", release_name, ")");
    initramfs_by_kernel.emplace(kernel, write_ephemeral_initramfs(root, initramfs, staging / "boot" / name));
  }

  // The shared root.
  SquashfsWriteOptions squash;
  squash.compressor = settings.compression;
  squash.fixed_time = build_time;
  squash.selection.exclude.push_back(regenerate_host_keys_link);
  if (root.exists("/etc/ssh")) {
    for (const auto& entry : root.list_directory("/etc/ssh")) {
      if (entry.name.starts_with("ssh_host_")) squash.selection.exclude.push_back("/etc/ssh/" + entry.name);
    }
  }
  bool archives_in_root = settings.image_archives == EphemeralSettings::ImageArchives::root;
  if (!archives_in_root) {
    for (const auto& image : release.images) squash.selection.exclude.push_back(images_directory + "/" + image.source.file_name());
  }
  if (root.exists("/etc/fstab")) {
    Ext4FileStatus st = root.status("/etc/fstab");
    squash.selection.replacements["/etc/fstab"] = {ephemeral_fstab(root.read_file("/etc/fstab"), source.boot_mount),
                                                   st.permissions, st.uid, st.gid, st.mtime};
  }
  log::info("ephemeral: root.squashfs (", settings.compression, ")");
  const auto squash_started = std::chrono::steady_clock::now();
  SquashfsWriteResult squashed = write_squashfs(root, staging / "root.squashfs", squash);
  const double squash_seconds = seconds_since(squash_started);

  EphemeralMemoryBudget budget{squashed.bytes_written, 0, settings.runtime_reserve, settings.memory};
  if (archives_in_root) {
    for (const auto& image : release.images) budget.image_archive_bytes += uncompressed_archive_size(image.path, image.size);
  }
  if (!budget.fits()) {
    throw Error(profile.file.string() + ": output.ephemeral: the nodes' root does not fit their memory: " +
                budget.describe() + ". Raise output.ephemeral.memory if the nodes have more, leave the image " +
                "archives out of the root (image_archives: omit, with a registry mirror), or trim the root");
  }
  manifest["root"] = {{"file", "root.squashfs"},
                      {"sha256", squashed.sha256},
                      {"size", squashed.bytes_written},
                      {"compression", settings.compression},
                      {"regular_files", squashed.regular_files},
                      {"directories", squashed.directories},
                      {"symlinks", squashed.symlinks},
                      {"hard_links", squashed.hard_links},
                      {"file_data_bytes", squashed.file_data_bytes},
                      {"image_archives", archives_in_root ? "root" : "omit"}};
  manifest["memory"] = {{"budget", budget.describe()}, {"needed", budget.needed()}, {"memory", budget.memory}};
  manifest["boot_files"] = boot_digests;
  for (const auto& [kernel, built] : initramfs_by_kernel) {
    nlohmann::json modules = nlohmann::json::array();
    for (const auto& m : built.modules) modules.push_back(m.built_in ? m.name + " (built in)" : m.name);
    manifest["initramfs"][built.path.filename().string()] = {
        {"kernel", kernel}, {"sha256", built.sha256.hex()}, {"size", built.bytes}, {"modules", modules},
        {"busybox", built.busybox_source}};
  }

  std::string config_txt = boot.exists("config.txt") ? boot.read_text_file("config.txt") : "";
  std::string cmdline = boot.exists("cmdline.txt") ? boot.read_text_file("cmdline.txt") : "";
  nlohmann::json node_entries = nlohmann::json::object();
  for (const Rpi5Node* node : nodes) {
    log::info("ephemeral: node ", node->name);
    fs::path node_dir = staging / "nodes" / node->name;
    create_output_directories(node_dir);
    fs::path scratch = staging / (".layer-" + node->name + ".ext4");
    LayerResult layer = write_node_layer(profile, *node, source, root, boot, release, fixed_time, scratch, node_dir / "layer.tar");
    fs::remove(scratch);
    std::string node_config = apply_config_txt(config_txt, node->boot);
    write_text_file_atomically(node_dir / "config.txt", node_config, FileMode::exactly(0644));
    std::vector<std::string> arguments = layer.cmdline_add;
    arguments.insert(arguments.end(), node->boot.cmdline.begin(), node->boot.cmdline.end());
    arguments.push_back("cgroup_enable=memory");
    std::string node_cmdline = ephemeral_cmdline(cmdline, arguments);
    write_text_file_atomically(node_dir / "cmdline.txt", node_cmdline, FileMode::exactly(0644));
    node_cmdline.pop_back();  // the newline
    node_entries[node->name] = {{"hostname", node->system.hostname},
                                {"rke2_role", node->rke2.role},
                                {"kernel", node_kernel(*node)},
                                {"initramfs", initramfs_name_for(node_kernel(*node))},
                                {"cmdline", node_cmdline},
                                {"config_txt", "nodes/" + node->name + "/config.txt"},
                                {"config_txt_sha256", Sha256::of(node_config).hex()},
                                {"layer", "nodes/" + node->name + "/layer.tar"},
                                {"layer_sha256", Sha256::of_file(node_dir / "layer.tar").hex()},
                                {"first_boot", layer.first_boot},
                                {"changes", layer.changes}};
  }
  manifest["nodes"] = node_entries;

  // boot.img holds the id, so its digests join the manifest after the id is taken; that there are
  // boot.imgs and where their URLs point are part of it (a build kept because its id exists has them).
  if (http_boot_key) {
    manifest["http_boot_url_base"] = settings.serve_url.value_or("") + "/ephemeral/" + settings.serve_profile.value_or(profile.name);
  }
  // The id: a digest of everything the build holds (each file by its sha256).
  std::string id = Sha256::of(manifest.dump()).hex().substr(0, 16);
  manifest["build"] = id;
  if (http_boot_key) {
    manifest["http_boot"] = write_http_boot_images(profile, nodes, boot, initramfs_by_kernel, config_txt, staging, id,
                                                   manifest, *http_boot_key, build_time, partial);
  }
  write_text_file_atomically(staging / "ephemeral.json", manifest.dump(2) + "\n", FileMode::exactly(0644));

  BuiltEphemeral built;
  built.id = id;
  built.directory = profile_dir / id;
  std::error_code ec;
  if (fs::is_regular_file(built.directory / "ephemeral.json", ec)) {
    // The same inputs again: the build is there already (and may be booting nodes right now).
    log::info("ephemeral: build ", id, " exists already; kept");
    fs::remove_all(staging);
  } else {
    fs::remove_all(built.directory);
    partial.publish(staging, built.directory);
  }
  char timing[160];
  std::snprintf(timing, sizeof timing, "ephemeral: build %s written in %.2f s (root.squashfs %s in %.2f s)", id.c_str(),
                seconds_since(started), format_byte_size(squashed.bytes_written).c_str(), squash_seconds);
  log::info(timing);
  DigestsByInode digests;
  built.files.push_back(describe_file(built.directory / "root.squashfs", digests));
  for (const auto& [kernel, initramfs] : initramfs_by_kernel) {
    built.files.push_back(describe_file(built.directory / "boot" / initramfs.path.filename(), digests));
  }
  for (const Rpi5Node* node : nodes) {
    const fs::path node_dir = built.directory / "nodes" / node->name;
    built.files.push_back(describe_file(node_dir / "layer.tar", digests));
    if (http_boot_key) {
      built.files.push_back(describe_file(node_dir / "boot.img", digests));
      built.files.push_back(describe_file(node_dir / "boot.sig", digests));
    }
  }
  built.report = {{"build", id},
                  {"directory", fs::relative(built.directory, options.output_dir).string()},
                  {"root", manifest["root"]},
                  {"memory", manifest["memory"]},
                  {"initramfs", manifest["initramfs"]},
                  {"nodes", node_entries}};
  return built;
}

void publish_ephemeral_build(const Profile& profile, const BuildOptions& options, const BuiltEphemeral& built) {
  fs::path current = options.output_dir / "ephemeral" / profile.name / "current.json";
  write_text_file_atomically(current, nlohmann::json{{"build", built.id}}.dump() + "\n", FileMode::exactly(0644));
  log::info("ephemeral: ", current.string(), " -> build ", built.id);
}

}  // namespace aggrik8s::builder
