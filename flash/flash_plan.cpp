#include "flash/flash_plan.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>
#include <array>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string_view>

#include "core/byte_size.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "disk/image_patch.hpp"

namespace aggrik8s {

namespace {

namespace fs = std::filesystem;

std::optional<std::string> read_whole_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool is_url(const std::string& text) {
  return text.starts_with("http://") || text.starts_with("https://") || text.starts_with("file://");
}

// Fetches through the cache, which is opened only when something must be fetched: flashing a local
// file needs no cache directory.
class FlashFetcher {
 public:
  explicit FlashFetcher(const FetchOptions& options) : options_(options) {}
  fs::path fetch(const std::string& location, std::optional<Sha256Digest> sha256) {
    if (!fetcher_) fetcher_.emplace(options_);
    ArtifactSource source;
    source.location = is_url(location) ? location : fs::absolute(location).string();
    source.sha256 = sha256;
    return fetcher_->fetch(source).path;
  }

 private:
  const FetchOptions& options_;
  std::optional<ArtifactFetcher> fetcher_;
};

fs::path resolve_flash_source(const FlashRequest& request, const CheckedFlashTarget& target, FlashFetcher& fetcher) {
  fs::path image = request.source;
  if (is_url(request.source) || request.sha256) {
    try {
      image = fetcher.fetch(request.source, request.sha256);
    } catch (const ChecksumMismatchError& e) {
      throw Error(std::string("source checksum mismatch: ") + e.what() + "; nothing was written");
    }
  }
  struct stat image_info {};
  if (::stat(image.c_str(), &image_info) != 0) throw Error(request.source + ": no such file");
  if (target.identity && *target.identity == FileIdentity{image_info.st_dev, image_info.st_ino}) {
    throw Error(target.path.string() + " is the source image itself");
  }
  return image;
}

std::optional<Bmap> find_flash_bmap(const FlashRequest& request, FlashFetcher& fetcher) {
  if (request.bmap) {
    return read_bmap_file(is_url(*request.bmap) ? fetcher.fetch(*request.bmap, std::nullopt) : fs::path(*request.bmap));
  }
  if (!request.look_for_bmap) return std::nullopt;
  if (is_url(request.source)) {
    // A URL's bmap is optional: a server that has none is no reason not to flash.
    try {
      return read_bmap_file(fetcher.fetch(request.source + ".bmap", std::nullopt));
    } catch (const Error& e) {
      log::debug("no bmap beside ", request.source, ": ", e.what());
      return std::nullopt;
    }
  }
  for (const auto& candidate : bmap_candidates_beside(request.source)) {
    std::error_code error;
    if (fs::is_regular_file(candidate, error)) {
      auto bmap = read_bmap_file(candidate);
      log::info("using the block map ", candidate.string());
      return bmap;
    }
  }
  return std::nullopt;
}

}  // namespace

SystemDiskUse read_system_disk_use() {
  SystemDiskUse use;
  auto mountinfo = read_whole_file("/proc/self/mountinfo");
  if (!mountinfo) throw Error("cannot read mount table /proc/self/mountinfo");
  use.mounts = parse_mountinfo(*mountinfo);
  if (auto swaps = read_whole_file("/proc/swaps")) use.swaps = parse_swaps(*swaps);
  use.system_disks = disks_under_mount(use.mounts, "/");
  return use;
}

std::vector<std::string> flash_candidate_lines(const std::vector<AttachedDisk>& disks, const SystemDiskUse& use,
                                               bool all) {
  std::vector<std::string> lines;
  for (const auto& disk : disks) {
    if (!all && !disk.is_removable()) continue;
    std::string line = describe_attached_disk(disk, uses_of_disk(disk, use.mounts, use.swaps));
    if (std::find(use.system_disks.begin(), use.system_disks.end(), disk.name) != use.system_disks.end()) {
      line += ", holds /";
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

FlashTargetKind classify_flash_target(const fs::path& target, std::optional<mode_t> mode) {
  if (mode && S_ISBLK(*mode)) return FlashTargetKind::block_device;
  if (mode && S_ISREG(*mode)) return FlashTargetKind::regular_file;
  if (mode) throw Error(target.string() + " is neither a block device nor a regular file");
  // A mistyped device name must not become a new regular file in /dev: also when it is given relative
  // to /dev ("sdzz" there) or as a link to a device node that is not there (a stale /dev/disk/by-id name).
  struct stat link {};
  if (::lstat(target.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
    throw Error(target.string() + " is a symbolic link to something that does not exist (is the card inserted?); "
                "refusing to create a file through it");
  }
  std::error_code ignored;
  if (target.lexically_normal().string().starts_with("/dev/") ||
      fs::weakly_canonical(fs::absolute(target, ignored), ignored).string().starts_with("/dev/")) {
    throw Error(target.string() + ": no such device ('aggrik8s-image flash --list' shows the candidates)");
  }
  return FlashTargetKind::new_file;
}

AttachedDisk check_flash_target_disk(const fs::path& node, DeviceNumber device, const SystemDiskUse& use, bool force,
                                     const fs::path& sys) {
  auto resolved = resolve_block_device(device, sys);
  if (!resolved) throw Error(node.string() + ": not found in /sys/dev/block; is it a block device of this machine?");
  if (resolved->partition_name) {
    throw Error(node.string() + " is partition " + *resolved->partition_name + " of /dev/" + resolved->disk_name +
                "; flash the whole disk (/dev/" + resolved->disk_name + ")");
  }
  AttachedDisk disk = read_attached_disk(resolved->disk_name, sys);
  auto assessment = assess_flash_target(disk, uses_of_disk(disk, use.mounts, use.swaps), use.system_disks);
  if (!assessment.refusals.empty()) {
    std::string text = "refusing to write " + node.string() + ":";
    for (const auto& reason : assessment.refusals) text += "\n  " + reason;
    throw Error(text);
  }
  if (!assessment.allowed(force)) throw Error("refusing to write: " + assessment.needs_force);
  return disk;
}

namespace {

// A regular file attached to a loop device whose filesystem is mounted (a disk image being looked
// into, a VM's disk): writing it under the mounted filesystem corrupts it, as writing the device
// would. Found through each loop device's backing_file, compared as files (device and inode).
void refuse_mounted_loop_backing(const fs::path& target, const struct stat& info) {
  std::error_code ec;
  std::optional<SystemDiskUse> use;
  for (fs::directory_iterator it("/sys/block", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("loop")) continue;
    std::ifstream backing_file(it->path() / "loop" / "backing_file");
    std::string backing;
    if (!backing_file || !std::getline(backing_file, backing) || backing.empty()) continue;
    struct stat backing_info {};
    if (::stat(backing.c_str(), &backing_info) != 0 || backing_info.st_dev != info.st_dev ||
        backing_info.st_ino != info.st_ino) {
      continue;
    }
    if (!use) use = read_system_disk_use();
    AttachedDisk disk = read_attached_disk(name);
    auto uses = uses_of_disk(disk, use->mounts, use->swaps);
    if (uses.empty()) continue;
    std::string text = "refusing to write " + target.string() + ": it is the backing file of /dev/" + name + ", which is in use:";
    for (const auto& u : uses) text += "\n  " + u;
    throw Error(text + "\n  unmount it (and losetup -d /dev/" + name + ") first");
  }
}

}  // namespace

CheckedFlashTarget check_flash_target(const fs::path& target, bool force) {
  CheckedFlashTarget checked;
  checked.path = target;
  struct stat info {};
  std::optional<mode_t> mode;
  if (::stat(target.c_str(), &info) == 0) {
    mode = info.st_mode;
    checked.identity = FileIdentity{info.st_dev, info.st_ino};
  }
  checked.kind = classify_flash_target(target, mode);
  if (checked.kind == FlashTargetKind::regular_file) refuse_mounted_loop_backing(target, info);
  if (checked.kind == FlashTargetKind::block_device) {
    DeviceNumber number{major(info.st_rdev), minor(info.st_rdev)};
    checked.disk = check_flash_target_disk(target, number, read_system_disk_use(), force);
  }
  return checked;
}

std::vector<fs::path> bmap_candidates_beside(const fs::path& image) {
  std::string name = image.string();
  std::vector<fs::path> candidates{name + ".bmap"};
  for (const char* suffix : {".xz", ".zst", ".zstd", ".gz", ".bz2", ".zip"}) {
    if (name.ends_with(suffix)) {
      name.resize(name.size() - std::string_view(suffix).size());
      candidates.emplace_back(name + ".bmap");
      break;
    }
  }
  if (name.ends_with(".img")) candidates.emplace_back(name.substr(0, name.size() - 4) + ".bmap");
  return candidates;
}

std::chrono::milliseconds parse_flash_test_delay(const char* text) {
  if (text == nullptr) return std::chrono::milliseconds(0);
  long value = 0;
  auto [end, error] = std::from_chars(text, text + std::string_view(text).size(), value);
  if (error != std::errc() || value < 0) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(value);
}

namespace {

// The customisation applied to a throwaway view of a raw source image before anything is written: an
// image without first-boot files, or a --file the boot partition has no room for, fails here instead of
// after the card was overwritten. A compressed source is not decoded twice for it: there the same
// errors come after the data is written (the card is then left without a partition table).
void rehearse_customization(const FlashPlan& plan) {
  const builder::BootPartitionCustomization& customization = plan.request.customization;
  if (customization.empty() || !plan.stream || plan.stream->format() != ImageInputFormat::raw) return;
  PatchedFileBlockDevice view(plan.image, plan.request.source);
  builder::apply_boot_partition_customization(view, customization);
}

// A tar archive (image.tar.gz, as some vendors ship images) decodes to a tar stream, not a disk: written
// as it is, the card got a tar header where its partition table belongs, and "verified". The ustar
// magic at offset 257 of the first 512-byte header tells (POSIX and GNU tar both write it).
void refuse_tar_archive(const fs::path& image, const std::string& shown) {
  auto stream = open_image_stream(image);
  std::array<std::uint8_t, 512> header{};
  if (read_fully(*stream, header) < header.size()) return;
  if (std::memcmp(header.data() + 257, "ustar", 5) != 0) return;
  throw Error(shown + " is a tar archive, not a disk image: extract the image from it first (tar -xf), then flash that");
}

}  // namespace

FlashPlan plan_flash(FlashRequest request) {
  FlashPlan plan;
  plan.request = std::move(request);
  plan.target = check_flash_target(plan.request.target, plan.request.force);
  FlashFetcher fetcher(plan.request.fetch);
  plan.image = resolve_flash_source(plan.request, plan.target, fetcher);
  plan.bmap = find_flash_bmap(plan.request, fetcher);
  refuse_tar_archive(plan.image, plan.request.source);
  plan.stream = open_image_stream(plan.image);
  rehearse_customization(plan);
  return plan;
}

bool needs_overwrite_confirmation(const CheckedFlashTarget& target, bool assume_yes) {
  return target.kind == FlashTargetKind::block_device && !assume_yes;
}

std::string overwrite_question(const CheckedFlashTarget& target, const std::string& source) {
  std::string about = target.path.string();
  if (target.disk) {
    const AttachedDisk& disk = *target.disk;
    about += " (" + format_byte_size(disk.size_bytes) + (disk.transport.empty() ? "" : ", " + disk.transport) +
             (disk.model.empty() ? "" : ", " + disk.model) + ")";
  }
  return "About to overwrite " + about + " with " + source + ".\nEverything on it will be lost.";
}

FlashOutcome write_flash_plan(FlashPlan& plan) {
  FlashOutcome outcome;
  FlashOptions options;
  options.verify = plan.request.verify;
  options.test_delay_per_buffer = plan.request.test_delay_per_buffer;
  const builder::BootPartitionCustomization& customization = plan.request.customization;
  if (!customization.empty()) {
    options.customize = [&](BlockDevice& staged) {
      outcome.boot_files = builder::apply_boot_partition_customization(staged, customization);
    };
    options.check_customization = [&](BlockDevice& written) {
      builder::check_boot_partition_files(written, outcome.boot_files);
    };
  }
  outcome.result = flash_image(*plan.stream, plan.bmap ? &*plan.bmap : nullptr, plan.target.path, options);
  return outcome;
}

}  // namespace aggrik8s
