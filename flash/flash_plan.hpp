#pragma once
// The flash policy: what `aggrik8s-image flash SOURCE DEVICE` decides around the write pipeline
// (flash/image_flasher): which target may be written, where the image and its block map come from,
// when the user must confirm, and what is written to and read back from the boot partition. The CLI
// turns options into a FlashRequest, asks the user when the plan says so, and prints the outcome.
//
// The phases, in this order:
//  1. check_flash_target: the target is a whole disk that nothing uses (non-removable only with
//     force), or a regular file. First, because refusing costs nothing and a download first would
//     waste minutes.
//  2. plan_flash then resolves the source (a local file as is; a URL or a pinned file through the
//     fetch cache; never the target itself), finds its block map and opens its decoder, so that an
//     unreadable image is refused before anyone is asked.
//  3. The confirmation, when needs_overwrite_confirmation says so (the CLI asks overwrite_question).
//  4. write_flash_plan: flash_image writes and verifies; the boot partition is customized before the
//     commit and read back after it.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "builder/rpi/boot_partition_customization.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/sha256.hpp"
#include "disk/bmap.hpp"
#include "disk/image_stream.hpp"
#include "flash/attached_disks.hpp"
#include "flash/image_flasher.hpp"

namespace aggrik8s {

// What the user asked for, options already parsed.
struct FlashRequest {
  std::string source;  // a path, or an http(s):// or file:// URL
  std::filesystem::path target;
  bool force = false;  // non-removable disks may be written (and listed)
  bool verify = true;
  std::optional<std::string> bmap;  // a block map path or URL; none: look beside the source
  bool look_for_bmap = true;        // false: use no block map at all
  std::optional<Sha256Digest> sha256;  // what the source must hash to as stored (e.g. compressed)
  FetchOptions fetch;
  builder::BootPartitionCustomization customization;
  std::chrono::milliseconds test_delay_per_buffer{0};  // see FlashOptions
};

// What is mounted, swapped on and holding / on this machine, from /proc.
struct SystemDiskUse {
  std::vector<MountEntry> mounts;
  std::vector<std::string> swaps;
  std::vector<std::string> system_disks;  // the disks under /
};
SystemDiskUse read_system_disk_use();

// `flash --list`: one line per disk that may be offered (removable ones, every one with `all`), the
// disks under / marked.
std::vector<std::string> flash_candidate_lines(const std::vector<AttachedDisk>& disks, const SystemDiskUse& use,
                                               bool all);

enum class FlashTargetKind { block_device, regular_file, new_file };

// From what stat(2) said about `target` (nullopt: it does not exist). Throws Error for anything that
// is neither a block device nor a regular file, for a missing /dev node (a typo must not create a
// file under /dev, whether named /dev/sdzz, sdzz from /dev, or through a link to a missing node), and
// for a dangling symlink.
FlashTargetKind classify_flash_target(const std::filesystem::path& target, std::optional<mode_t> mode);

// The whole disk behind the block device node `node` (device number `device`). Throws Error when the
// node is a partition, or when the disk is mounted, in use, holds / or is read-only, or is not
// removable and `force` is false.
AttachedDisk check_flash_target_disk(const std::filesystem::path& node, DeviceNumber device, const SystemDiskUse& use,
                                     bool force, const std::filesystem::path& sys = "/sys");

struct FileIdentity {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  friend bool operator==(const FileIdentity&, const FileIdentity&) = default;
};

struct CheckedFlashTarget {
  std::filesystem::path path;
  FlashTargetKind kind = FlashTargetKind::new_file;
  std::optional<FileIdentity> identity;  // when it exists
  std::optional<AttachedDisk> disk;      // for a block device
};

// Phase 1 on the real machine.
CheckedFlashTarget check_flash_target(const std::filesystem::path& target, bool force);

// Where a block map for `image` may lie, in the order bmaptool looks: image.img.xz.bmap, then
// image.img.bmap, then image.bmap.
std::vector<std::filesystem::path> bmap_candidates_beside(const std::filesystem::path& image);

// AGGRIK8S_FLASH_TEST_DELAY_MS's value (null when unset); anything but a count of milliseconds is 0.
std::chrono::milliseconds parse_flash_test_delay(const char* text);

struct FlashPlan {
  FlashRequest request;
  CheckedFlashTarget target;
  std::filesystem::path image;  // the local file written (in the fetch cache for a URL)
  std::optional<Bmap> bmap;
  std::unique_ptr<ImageStream> stream;
};

// Phases 1 and 2. Throws Error before anything is written; a source that does not have the pinned
// sha256 is reported as a source checksum mismatch.
FlashPlan plan_flash(FlashRequest request);

// Overwriting a disk needs the user's yes (or `assume_yes`); a regular file does not.
bool needs_overwrite_confirmation(const CheckedFlashTarget& target, bool assume_yes);
// "About to overwrite /dev/sdb (29.7 GiB, usb, Ultra) with pi.img.\nEverything on it will be lost."
std::string overwrite_question(const CheckedFlashTarget& target, const std::string& source);

struct FlashOutcome {
  FlashResult result;
  builder::BootPartitionFiles boot_files;  // customized, read back after the commit
};

// Phase 4.
FlashOutcome write_flash_plan(FlashPlan& plan);

}  // namespace aggrik8s
