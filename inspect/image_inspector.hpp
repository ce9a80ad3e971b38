#pragma once
// `aggrik8s-image inspect`: what a disk image holds, read without changing a byte of it. The same
// in-process readers the builder writes with (partition table, FAT, libext2fs) read the facts back, so
// a user can check an image before flashing it, and a test can check what the builder wrote.
//
// Facts are reported as found and problems as warnings (a root PARTUUID that no partition has, a
// config.yaml that others can read, a memory cgroup left disabled); the image is never "fixed".
// Secrets stay in the image: config.yaml is read only to list its keys, the token's value is never
// put in a report, and first-boot files are read only for the hostname.
//
// The RKE2 preload is described from /usr/local/share/aggrik8s/preload.json when the builder wrote one
// (version, role, node, archives with their sha256), and otherwise from the files themselves: the
// enabled rke2-*.service link gives the role, the binary's embedded version string the version, the
// images directory the archives. Either way the files are checked against what was recorded.
//
// The deep check boots libguestfs' appliance on the image (read-only: writes go to a throwaway
// overlay) and reads the same facts through the Linux kernel's own FAT and ext4 drivers, plus fsck
// of both filesystems: an independent second opinion on what the in-process readers said. It costs
// ~30-40 s under software emulation, so it is opt-in.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "builder/rpi/rke2_node_files.hpp"  // preload_record_path: the record inspect reads

namespace aggrik8s::builder {


struct InspectedPartition {
  std::uint32_t index = 0;
  std::string type;       // MBR "0x0c", GPT the type GUID
  std::string type_name;  // "FAT32 (LBA)", "Linux", "EFI System", "" when unknown
  std::uint64_t first_lba = 0;
  std::uint64_t sector_count = 0;
  std::uint64_t start_bytes = 0;
  std::uint64_t size_bytes = 0;
  std::string partuuid;
  bool bootable = false;
  // libblkid's name ("ext4", "xfs", "squashfs", ...), FAT as "FAT12"/"FAT16"/"FAT32"; "" when not recognised
  std::string filesystem;
  std::string label;
  std::string uuid;  // ext*: the filesystem UUID; FAT: the volume id ("B007-F5A7")
  std::optional<std::uint64_t> filesystem_bytes;
  std::optional<std::uint64_t> free_bytes;
};

struct InspectedBootFiles {
  std::uint32_t partition = 0;
  bool has_cmdline = false;
  std::string cmdline;  // as stored (no secrets: kernel arguments)
  bool cmdline_single_line = true;
  std::optional<std::string> root_partuuid;          // from root=PARTUUID=
  std::optional<std::uint32_t> root_partition;       // the partition that PARTUUID names, if any
  bool cgroup_memory_enabled = false;                // cgroup_enable=memory on the line
  bool has_config_txt = false;
  std::string config_txt_sha256;
  bool has_managed_block = false;                    // aggrik8s-image's begin/end markers
  std::vector<std::string> managed_config_lines;     // the lines between the markers
  std::optional<std::string> config_kernel;          // kernel= in config.txt
  bool has_kernel8 = false;
  bool has_kernel_2712 = false;
};

enum class InspectedFirstBoot { none, firstrun_script, cloud_init };
const char* to_string(InspectedFirstBoot format);

struct InspectedFirstBootFiles {
  InspectedFirstBoot format = InspectedFirstBoot::none;
  std::vector<std::string> files;  // the first-boot files found on the boot partition
  bool started_by_cmdline = false;  // systemd.run=.../firstrun.sh, or ds=nocloud
  std::optional<std::string> hostname;
  std::optional<std::string> instance_id;          // meta-data's instance-id
  std::optional<std::string> cmdline_instance_id;  // ds=nocloud;i=...
};

struct InspectedFile {
  std::string path;
  bool present = false;
  std::string type;  // "file", "directory", "symlink", ...
  std::uint16_t permissions = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;
  std::string link_target;  // symlinks only
};

struct InspectedImageArchive {
  std::string name;
  std::uint64_t size = 0;
  std::optional<std::string> recorded_sha256;  // from preload.json
  std::optional<std::uint64_t> recorded_size;
};

struct InspectedRke2Preload {
  bool present = false;
  bool has_preload_record = false;
  std::string version;         // "" when not found
  std::string version_source;  // "preload.json", "/usr/local/bin/rke2"
  std::string role;            // server, agent, "" (no unit enabled), "server+agent"
  std::vector<InspectedFile> enabled_units;  // links in multi-user.target.wants
  InspectedFile binary;                      // /usr/local/bin/rke2
  std::vector<InspectedImageArchive> image_archives;
  InspectedFile config;                    // /etc/rancher/rke2/config.yaml
  std::vector<std::string> config_keys;    // top-level keys in file order
  bool token_set = false;
  std::optional<std::string> node_name;    // config.yaml's node-name
  InspectedFile registries;                // /etc/rancher/rke2/registries.yaml
  std::optional<std::string> recorded_node;  // preload.json's node
  std::optional<std::string> recorded_role;
  std::optional<std::string> recorded_tool_version;
  std::string preload_record_sha256;  // of preload.json's bytes, for the deep check
};

struct InspectedRootFilesystem {
  std::uint32_t partition = 0;
  std::optional<std::string> hostname;  // /etc/hostname
  std::optional<std::string> os;        // PRETTY_NAME from /etc/os-release
  bool has_cloud_init = false;
};

// One fact read twice: in-process and through libguestfs.
struct DeepCheckComparison {
  std::string fact;
  std::string in_process;
  std::string guestfs;
  bool agree() const { return in_process == guestfs; }
};

struct DeepCheckFsck {
  std::uint32_t partition = 0;
  std::string filesystem;
  std::string tool;  // what ran: "e2fsck -fn", "fsck.vfat -n", or guestfs_fsck's "fsck -a" (on the overlay)
  int exit_code = -1;
  bool clean = false;
  std::string output;
};

struct DeepCheck {
  std::string backend;
  double seconds = 0;
  std::vector<DeepCheckFsck> fsck;
  std::vector<DeepCheckComparison> comparisons;
  bool all_agree() const;
  bool all_clean() const;
};

// A file the report wanted that exists but cannot be read; the rest of the report is unaffected.
struct UnreadableFile {
  std::uint32_t partition = 0;
  std::string path;    // inside that partition's filesystem: "/etc/hostname", "/cmdline.txt"
  std::string reason;  // "symlink loop: /etc/hostname -> /etc/hostname", "a directory, not a regular file", ...
};

struct ImageInspection {
  std::filesystem::path path;
  std::string input_format;  // "raw", "zstd", ...
  std::uint64_t image_bytes = 0;  // of the raw image (decompressed size for compressed input)
  std::string table_kind;         // "MBR" or "GPT"
  std::string disk_identifier;
  std::vector<InspectedPartition> partitions;
  std::optional<InspectedBootFiles> boot;
  std::optional<InspectedFirstBootFiles> first_boot;
  // The first ext4 partition: where the root is, whether or not its filesystem could be read.
  std::optional<std::uint32_t> root_partition;
  std::optional<InspectedRootFilesystem> root;
  // Set when there is an ext4 partition but its filesystem cannot be opened: root is then absent and
  // the RKE2 preload unknown, not "none".
  std::optional<std::string> root_error;
  std::optional<std::string> boot_error;  // the same for the FAT boot partition
  InspectedRke2Preload rke2;
  std::vector<UnreadableFile> unreadable;
  std::vector<std::string> warnings;  // includes one "unreadable: PATH (REASON)" per unreadable file
  std::optional<DeepCheck> deep;
};

struct InspectOptions {
  bool deep = false;
  // Where a compressed image is decompressed (removed afterwards); default: the system temp dir.
  std::optional<std::filesystem::path> scratch_dir;
};

// Reads the image (raw, or .zst/.xz/.gz/.bz2/.zip decompressed to a scratch file first). Throws Error
// when the image cannot be read at all (no partition table, truncated, not a disk image) or when the
// deep check cannot start libguestfs; everything found wrong inside a readable image is a warning,
// down to the single file: a file that cannot be read is listed in unreadable, not taken for absent.
ImageInspection inspect_image(const std::filesystem::path& image, const InspectOptions& options = {});

}  // namespace aggrik8s::builder
