#include "builder/rpi/rpi_image_builder.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "disk/aligned_buffer.hpp"
#include "disk/block_device.hpp"
#include "builder/build_manifest.hpp"
#include "builder/build_output.hpp"
#include "builder/template_store.hpp"
#include "disk/bmap.hpp"
#include "disk/filesystem_used_ranges.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/filesystem_probe.hpp"
#include "disk/image_patch.hpp"
#include "builder/rpi/ephemeral_output.hpp"
#include "builder/rpi/first_boot.hpp"
#include "builder/rpi/node_root_files.hpp"
#include "disk/chunk_range_store.hpp"
#include "disk/copied_ranges.hpp"
#include "disk/image_compressor.hpp"
#include "disk/image_decoder_errors.hpp"
#include "disk/image_decompressor.hpp"
#include "disk/partition_table.hpp"
#include "disk/sparse_file.hpp"
#include "builder/rpi/pi_boot_files.hpp"
#include "builder/rpi/pi_boot_image.hpp"
#include "builder/rpi/rke2_bundle.hpp"
#include "builder/rpi/rke2_node_files.hpp"
#include "builder/rpi/rke2_release.hpp"
#include "builder/rpi/rootfs_overlay.hpp"
#include "core/byte_size.hpp"
#include "core/artifact_fetcher.hpp"
#include "core/error.hpp"
#include "core/interrupt_cleanup.hpp"
#include "core/positional_io.hpp"
#include "core/read_ahead.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"
#include "core/program_build_id.hpp"
#include "core/progress.hpp"

namespace aggrik8s::builder {
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t MiB = 1ull << 20;
constexpr std::uint64_t block_rounding = 4096;
// Node images' bmap ranges stop at every 4 MiB, so that a node's bmap can reuse the prepared image's
// range hashes everywhere its edits (a few dozen blocks of metadata and small files) did not write.
const BmapOptions node_bmap_options{.skip_zero_blocks = true, .range_split_blocks = 1024, .threads = 0};

// Copies an image's data extents into a new file written with O_DIRECT: the bytes go from the
// prepared image's cached pages straight to the disk instead of becoming page-cache pages of a second
// 2.5 GiB file that must then be written back anyway (a default build fdatasyncs every image). On this
// project's 2-core VMs a buffered copy of a node image took 4.6-8.9 s and an O_DIRECT one 1.9-2.0 s
// (docs/benchmarks.md); the cost is that reading the node image back means reading the disk, which is
// why its hashes are taken from the prepared image plus the node's own writes (ImageBase).
// Returns false where O_DIRECT is refused (tmpfs before Linux 6.6; the file may already have been
// created, empty) or the size is not a whole number of 4 KiB blocks; the caller then copies through
// the page cache over it.
bool copy_image_direct(const fs::path& from, const fs::path& to, mode_t permissions, const CopiedFiles& copied) {
  constexpr std::size_t alignment = io_alignment;
  constexpr std::size_t chunk_bytes = 8 * MiB;
  FileDescriptor in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw_system_error("cannot open " + from.string(), errno);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) throw_system_error("cannot stat " + from.string(), errno);
  auto size = static_cast<std::uint64_t>(st.st_size);
  if (size % alignment != 0) return false;
  FileDescriptor out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, permissions));
  if (!out) {
    if (errno == EINVAL) return false;
    throw_system_error("cannot create " + to.string(), errno);
  }
  // Not zeroed: every byte written is read into them first.
  const std::array<AlignedBuffer, 2> buffers{allocate_aligned(chunk_bytes, false), allocate_aligned(chunk_bytes, false)};
  struct Chunk {
    std::uint64_t offset;
    std::size_t length;
  };
  std::vector<Chunk> chunks;
  for (const DataExtent& extent : list_data_extents(in.get(), size, from.string())) {
    // Whole blocks: a filesystem reporting extents finer than 4 KiB just gets a few zeros copied.
    std::uint64_t begin = extent.offset / alignment * alignment;
    std::uint64_t end = std::min(size, round_up(extent.offset + extent.length, alignment));
    if (!chunks.empty() && begin < chunks.back().offset + chunks.back().length) begin = chunks.back().offset + chunks.back().length;
    for (std::uint64_t at = begin; at < end; at += chunk_bytes) {
      chunks.push_back({at, static_cast<std::size_t>(std::min<std::uint64_t>(chunk_bytes, end - at))});
    }
  }
  // The preloaded archives' bytes were written into `from` past the page cache: read from the archives.
  const CopiedRangeReader reader(in.get(), from.string(), &copied);
  auto read_chunk = [&](std::size_t index) {
    reader.read(chunks[index].offset, std::span(buffers[index % 2].get(), chunks[index].length));
  };
  ProgressTask progress("copy " + to.filename().string(), size);
  // The next chunk is read from the page cache while this one is being written to the disk.
  for_each_read_ahead(chunks.size(), read_chunk, [&](std::size_t index) {
    const Chunk& chunk = chunks[index];
    pwrite_all(out.get(), chunk.offset, buffers[index % 2].get(), chunk.length, to.string());
    progress.set_done(chunk.offset + chunk.length);
  });
  if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0) throw_system_error("cannot size " + to.string(), errno);
  progress.finish(true);
  return true;
}

// The image's data reaches the disk before it gets its final name, so a crash never leaves a
// complete-looking image with missing blocks. start_writeback queues the writes without waiting
// (sync_file_range); wait_until_on_disk is the fdatasync that makes it so.
void start_writeback(const fs::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_system_error("cannot open " + path.string(), errno);
  // Only a hint: where sync_file_range is not supported the fdatasync below does all the work.
  ::sync_file_range(fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
}

// While the prepared image is being filled (the base copied in, the filesystem grown, the bundle and
// the image archives written), its dirty pages are handed to the disk every 100 ms instead of once
// when the nodes are customised: on a fast disk the build then writes the image while it computes, as
// `cp` + `sync` does. Without it the 1.28 GiB of the benchmark's 1-node build only started for the
// disk after the preload, and most of it was still queued when the hashing ended (docs/benchmarks.md,
// "quiet machine", 2026-12-05: with this and the early fdatasync in build_node_images, 2.73 -> 1.85 s).
class WritebackPump {
 public:
  explicit WritebackPump(const fs::path& path) : state_(std::make_shared<State>()) {
    state_->fd = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!state_->fd) throw_system_error("cannot open " + path.string(), errno);
    // Detached, and owning what it uses: a sync_file_range in progress when the pump stops can take
    // 0.3 s (the disk's queue is full), and the build must not wait for it (it did, in one build of
    // three on the development VM, between the preload and the hashing).
    std::thread([state = state_] {
      std::unique_lock lock(state->mutex);
      while (!state->stopping) {
        lock.unlock();
        // Only a hint, as in start_writeback: queues what is dirty now without waiting for it.
        ::sync_file_range(state->fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
        lock.lock();
        state->wake.wait_for(lock, std::chrono::milliseconds(100), [&] { return state->stopping; });
      }
    }).detach();
  }
  WritebackPump(const WritebackPump&) = delete;
  WritebackPump& operator=(const WritebackPump&) = delete;
  ~WritebackPump() {
    {
      std::lock_guard lock(state_->mutex);
      state_->stopping = true;
    }
    state_->wake.notify_one();
  }

 private:
  struct State {
    FileDescriptor fd;
    std::mutex mutex;
    std::condition_variable wake;
    bool stopping = false;
  };
  std::shared_ptr<State> state_;
};

void wait_until_on_disk(const fs::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_system_error("cannot open " + path.string(), errno);
  if (::fdatasync(fd.get()) != 0) throw_system_error("cannot flush " + path.string() + " to disk", errno);
}

// `input` decompressed into the cache file `cached` (ImageDecompressor writes `<cached>.partial` and
// renames it when complete), with its stamp (record_cache_file); one already there is used, unless
// it changed since it was written (cut short, edited): decoded again. Throws ImageInputError for an
// input that does not decode, ImageOutputError when the cache cannot hold the file.
void decompress_into_cache(const FetchedArtifact& input, const fs::path& cached) {
  if (fs::exists(cached) && !cache_file_unchanged(cached)) {
    if (fs::exists(cached.string() + ".checked")) {
      log::warning("the decompressed ", input.source.file_name(), " in the cache (", cached.string(),
                   ") changed since it was written: decompressing again");
    }  // else: from a version that kept no stamp; decoded again once to record one
    forget_cache_file(cached);
  }
  if (fs::exists(cached)) return;
  log::info("decompressing ", input.source.file_name(), " into the cache");
  std::error_code ec;
  fs::create_directories(cached.parent_path(), ec);
  if (ec) throw ImageOutputError("cannot create ", cached.parent_path(), ": " + ec.message());
  ImageDecompressor().decompress(input.path, cached);
  try {
    // A local input replaced or written since its sha256 was checked: what was decoded was never
    // verified, and the cache keys it by the pinned sha256 for every later build.
    check_local_input_unchanged(input);
  } catch (...) {
    std::error_code ignored;
    fs::remove(cached, ignored);
    throw;
  }
  record_cache_file(cached);
}

// The RKE2 bundle as a plain tar in the cache (rke2-bundles/<sha256 of the .tar.gz>.tar, with its
// stamp), decompressed there by the first build that needs it: a build sizes the bundle and then
// unpacks it, both before the image's hashing can start, and a release's ~35 MiB .tar.gz takes
// 0.6-0.7 s of one core to decompress each time (gzip -dc of a stand-in of that size here), its
// plain tar almost nothing to read. A cache that cannot hold it costs only that: the .tar.gz then.
fs::path cached_bundle_tar(const FetchedArtifact& bundle, const fs::path& cache_dir) {
  const fs::path tar = cache_dir / "rke2-bundles" / (bundle.sha256.hex() + ".tar");
  try {
    decompress_into_cache(bundle, tar);
    return tar;
  } catch (const ImageInputError& e) {
    // A damaged bundle fails the build. The decoder names the cached download (sha256/<hex>).
    throw Error("RKE2 bundle " + bundle.source.shown() + ": " + e.message_naming_file_as("it"));
  } catch (const ImageOutputError& e) {
    log::warning("cannot keep the RKE2 bundle decompressed in the cache (", e.what(), ")");
    return bundle.path;
  }
}

// ---- the shared image ----

struct ImageLayout {
  std::uint32_t boot_index = 0;
  std::uint32_t root_index = 0;
  std::uint64_t root_offset = 0;
  std::uint64_t root_size = 0;
  std::string root_partuuid;
};

bool is_fat_partition(const PartitionTable& table, const PartitionEntry& p) {
  if (table.kind() == PartitionTableKind::mbr) return p.mbr_type == 0x0b || p.mbr_type == 0x0c || p.mbr_type == 0x0e || p.mbr_type == 0x06;
  return p.gpt_type.to_string() == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" ||
         p.gpt_type.to_string() == "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
}

// The root is the first partition libblkid calls ext4 (what the builder writes into); ext2/ext3 are
// named in the error because they share ext4's superblock and would otherwise look like "no root".
ImageLayout find_layout(const fs::path& image, const PartitionTable& table, const std::string& base_name) {
  ImageLayout layout;
  std::uint32_t old_ext_index = 0;
  for (const auto& p : table.partitions()) {
    if (layout.boot_index == 0 && is_fat_partition(table, p)) layout.boot_index = p.index;
    std::string type = probe_filesystem(image, p.byte_offset(), p.byte_size()).type;
    if (layout.root_index == 0 && type == "ext4") layout.root_index = p.index;
    if (old_ext_index == 0 && (type == "ext2" || type == "ext3")) old_ext_index = p.index;
  }
  if (layout.boot_index == 0) throw Error(base_name + ": no FAT boot partition found; is this a Raspberry Pi OS image?");
  if (layout.root_index == 0 && old_ext_index != 0) {
    throw Error(base_name + ": partition " + std::to_string(old_ext_index) +
                " holds an ext2/ext3 filesystem (no extents feature); expected an ext4 root filesystem");
  }
  if (layout.root_index == 0) {
    throw Error(base_name + ": no ext4 root partition found among its " + std::to_string(table.partitions().size()) +
                " partition(s); is this a Raspberry Pi OS image?");
  }
  const PartitionEntry& root = table.partition(layout.root_index);
  for (const auto& p : table.partitions()) {
    if (p.first_lba > root.first_lba) {
      throw Error(base_name + ": partition " + std::to_string(p.index) + " follows the root partition " +
                  std::to_string(root.index) + ", so the root cannot grow");
    }
  }
  layout.root_offset = root.byte_offset();
  layout.root_size = root.byte_size();
  layout.root_partuuid = table.partuuid(layout.root_index);
  return layout;
}

struct PreparedImage {
  // The grown base in the cache this image was made from, which `copied` may read until the end.
  // First, so it is released last.
  TemplateStore::Lease base_in_use;
  fs::path path;
  ImageLayout layout;
  std::vector<std::string> changes;  // for the manifest
  bool network_manager = false;
  bool rootfs_has_cloud_init = false;
  std::string boot_mount = "/boot/firmware";
  // The image archives' bytes in the image (see prepare_shared_image): until `preload` is waited for,
  // they are read from the archives.
  CopiedFiles copied;
  std::unique_ptr<CopiedRangeWriter> preload;
  // The bmap ranges of the image's chunks that are copies (of the archives, of a reflinked base),
  // kept in the cache by their content's SHA-256 (see disk/chunk_range_store.hpp); set when there
  // are copied ranges.
  std::unique_ptr<CopiedChunkRanges> copied_chunk_ranges;

  // The image file complete: what reads it other than through `copied` waits for this.
  void wait_for_preload() const {
    if (preload) preload->wait();
  }
};

// The base image's bytes as a file in the cache: a compressed base is decompressed into the cache
// (images/<sha256 of the compressed file>.img, sparse, renamed into place when complete) so later
// builds from the same base skip the decoding: on this project's 2-core VMs decoding Raspberry Pi OS
// Lite's 1.15 GiB .xz took 4-6 s of both cores, copying the result 1-2 s (a reflink where the
// filesystem has them). An uncompressed base is the download itself. `key`: what the file's bmap
// ranges are kept under (see prepare_shared_image); the decompressed base's content is a function
// of the compressed file's, so its key is derived from that file's SHA-256 (not the SHA-256 itself,
// which names the compressed bytes' ranges were that file ever an archive).
struct CachedBase {
  fs::path path;
  std::string key;
  TemplateStore::Lease in_use{};  // a grown base (rpi-bases/): held while the build reads it
};

// A cache that cannot be written costs only that saving: the base is then decompressed straight to
// `output`, and nullopt says so.
std::optional<CachedBase> cached_base(const FetchedArtifact& base, const fs::path& cache_dir, const fs::path& output) {
  if (detect_image_input_format(base.path) == ImageInputFormat::raw) return CachedBase{base.path, base.sha256.hex()};
  fs::path cached = cache_dir / "images" / (base.sha256.hex() + ".img");
  try {
    decompress_into_cache(base, cached);
  } catch (const ImageOutputError& e) {
    // A corrupt input (ImageInputError) fails the build as it is; a cache that cannot be written
    // (full, read-only) only means decompressing straight to the work image.
    log::warning("cannot keep the decompressed base in the cache (", e.what(), ")");
    ImageDecompressor().decompress(base.path, output);
    return std::nullopt;
  }
  return CachedBase{cached, Sha256::of("decompressed " + base.sha256.hex()).hex()};
}

// Where the work image's bytes came from: the cached file they are a copy of and the key its bmap
// ranges are kept under; whether the work image is a reflink of it (see same_blocks).
struct BaseCopy {
  fs::path source;
  std::string key;
  bool reflink = false;
  bool deferred = false;  // not copied yet: `output` is empty (see prepare_shared_image)
};

// With `may_defer`, a copy that cannot be a reflink is left for the caller to make later.
BaseCopy copy_cached_base(const CachedBase& cached, const fs::path& output, bool may_defer = false) {
  BaseCopy copy{cached.path, cached.key};
  copy.reflink = clone_file(cached.path, output, 0600);
  copy.deferred = !copy.reflink && may_defer;
  if (!copy.reflink && !copy.deferred) copy_sparse_file(cached.path, output, 0600);
  return copy;
}

// How the base grows to hold the preload: the disk to `image_size`, and with `grow_root` the root
// partition and its filesystem to the end of the disk.
struct BaseGrowth {
  std::uint64_t image_size = 0;
  bool grow_root = true;
};

// Grows the base image at `image` as `growth` says; returns the root partition's new size.
std::uint64_t grow_base_image(const fs::path& image, const ImageLayout& layout, const BaseGrowth& growth,
                              std::optional<std::int64_t> fixed_time) {
  FileBlockDevice device(image, FileBlockDevice::Access::read_write);
  PartitionTable table = read_partition_table(device);
  device.resize(growth.image_size);
  table.set_disk_size(growth.image_size);
  // output.grow_root: false keeps the root partition as it is (only output.image_size grows the disk).
  if (growth.grow_root) table.grow_partition_to_fill(layout.root_index);
  // No flush: whoever needs the image on disk flushes it (a build does, before its rename).
  write_partition_table(device, table);
  const std::uint64_t root_size = table.partition(layout.root_index).byte_size();
  if (root_size != layout.root_size) {
    log::info("growing the root filesystem to ", format_byte_size(root_size));
    grow_ext4_filesystem(image, layout.root_offset, root_size, fixed_time);
  }
  return root_size;
}

// The grown base as a file in the cache, made from `cached` the first time (rpi-bases/<key>.img,
// TemplateStore): on a later build from the same base with the same sizes the work image is a copy of
// it, and e2fsck and resize2fs do not run (0.03-0.05 s with the benchmark's stand-in base, whose root
// holds few files; e2fsck's share grows with the inodes it checks). It also lets the work image's
// copy of the base wait (see prepare_shared_image), which a base grown in the work image cannot. Its key holds what decides its bytes: the base, the sizes, the
// fixed time (none: the current time of the build that made it, as a fresh grow would stamp its own),
// libext2fs's version (e2fsck and resize2fs come with it) and this program's build ID. nullopt where
// the program has no build ID or the cache cannot hold it; the caller grows its own copy then.
std::optional<CachedBase> grown_cached_base(const fs::path& cache_dir, const CachedBase& cached, const ImageLayout& layout,
                                            const BaseGrowth& growth, std::optional<std::int64_t> fixed_time) {
  std::optional<std::string> build_id = program_build_id();
  if (!build_id) return std::nullopt;
  nlohmann::json parts{{"base", cached.key},
                       {"image_size", growth.image_size},
                       {"grow_root", growth.grow_root},
                       {"source_date_epoch", fixed_time ? nlohmann::json(*fixed_time) : nlohmann::json()},
                       {"libext2fs", libext2fs_version()},
                       {"program_build_id", *build_id}};
  const std::string key = Sha256::of("grown base " + parts.dump()).hex();
  // Each about as large as the base's data (less where reflinks share it): two cover a base used
  // with two sizes at once, and its successor while the previous is still in use.
  const TemplateStore store(cache_dir / "rpi-bases", ".img", 2, 1, "the grown base image");
  if (auto found = store.find(key)) return CachedBase{found->path, key, found->in_use};
  bool grow_failed = false;
  try {
    TemplateStore::Found stored = store.store(key, parts, [&](const fs::path& temporary) {
      copy_cached_base(cached, temporary);
      try {
        grow_base_image(temporary, layout, growth, fixed_time);
      } catch (...) {
        grow_failed = true;
        throw;
      }
    });
    return CachedBase{stored.path, key, stored.in_use};
  } catch (const std::exception& e) {
    // A base that cannot be grown (e2fsck finds damage it cannot repair unattended) fails where the
    // caller grows its own copy, with an error that names that copy, not a removed cache file.
    if (!grow_failed) log::warning(e.what());
    return std::nullopt;
  }
}

PreparedImage prepare_shared_image(const Profile& profile, const FetchedArtifact& base, const Rke2Release& release,
                                   const fs::path& work, const fs::path& cache_dir, std::optional<std::int64_t> fixed_time,
                                   bool sync_images) {
  PreparedImage prepared;
  prepared.path = work / "prepared.img";
  // The image archives' non-zero blocks are found on the other core while the base is copied in:
  // placing them below then reads nothing (0.1 s off the build's critical path; Ext4HostFileScan).
  // A root filesystem with another block size reads them again there.
  std::future<std::vector<Ext4HostFileScan>> archive_scans = std::async(std::launch::async, [&release] {
    std::vector<Ext4HostFileScan> scans;
    for (const auto& image : release.images) scans.push_back(scan_host_file(image.path, block_rounding));
    return scans;
  });
  // So is the bundle's layout (rke2_bundle.hpp), read from its tar in the cache.
  std::future<Rke2Bundle> bundle_read = std::async(std::launch::async, [&release, &cache_dir] {
    return read_rke2_bundle(cached_bundle_tar(release.bundle, cache_dir), "/usr/local", block_rounding);
  });
  // Base errors name the input, not the cached download (sha256/<hex>) or decompressed file.
  auto with_base_named = [&base](const auto& step) {
    try {
      return step();
    } catch (const ImageInputError& e) {
      throw Error("base image " + base.source.shown() + ": " + e.message_naming_file_as("it"));
    } catch (const std::exception& e) {
      throw Error("base image " + base.source.shown() + ": " + e.what());
    }
  };
  // The base in the cache, which the sizes are read from before the work image is made (a copy of it,
  // or of the grown base in the cache); nullopt: the base was decompressed into the work image.
  const std::optional<CachedBase> cached = with_base_named([&] { return cached_base(base, cache_dir, prepared.path); });
  const fs::path start = cached ? cached->path : prepared.path;

  std::uint64_t image_size = 0;
  {
    FileBlockDevice device(start, FileBlockDevice::Access::read_only);
    std::optional<PartitionTable> table;
    try {
      table = read_partition_table(device);
    } catch (const std::exception& e) {
      std::string text = e.what();
      if (text.starts_with(start.string())) text.replace(0, start.string().size(), "the decompressed image");
      throw Error("base image " + base.source.shown() + ": " + text + " (expected an MBR or GPT disk image)");
    }
    prepared.layout = find_layout(start, *table, base.source.file_name());
    image_size = device.size();
  }
  ImageLayout& layout = prepared.layout;

  // How much the root filesystem must hold beyond what it has.
  const Rke2Bundle bundle = bundle_read.get();
  std::uint64_t preload = bundle.unpacked_bytes;
  for (const auto& image : release.images) preload += round_up(image.size, block_rounding);
  std::uint64_t overlays = 0;
  for (const auto& node : profile.rpi_nodes) overlays = std::max(overlays, overlay_space_needed(node.overlays));
  std::uint64_t needed_free = preload + overlays + profile.output.root_free_space + 16 * MiB;
  std::uint64_t free_now = 0;
  {
    Ext4Filesystem rootfs = Ext4Filesystem::open(start, layout.root_offset, layout.root_size, Ext4Access::read_only);
    Ext4SpaceUsage usage = rootfs.space_usage();
    std::uint64_t reserved = usage.reserved_blocks * usage.block_size;
    free_now = usage.free_bytes() > reserved ? usage.free_bytes() - reserved : 0;
    std::string fstab = rootfs.exists("/etc/fstab") ? rootfs.read_file("/etc/fstab") : "";
    prepared.boot_mount = boot_mount_point_from_fstab(fstab);
    prepared.network_manager = rootfs.exists("/etc/NetworkManager");
    prepared.rootfs_has_cloud_init = rootfs.exists("/etc/cloud/cloud.cfg") || rootfs.exists("/usr/bin/cloud-init");
  }
  // Checked here as well as when a node's overlays are written: a refused overlay then fails the
  // build before the preload is written, not after.
  for (const auto& node : profile.rpi_nodes) {
    for (const auto& dir : node.overlays) require_outside_boot_mount(read_overlay_tree(dir), dir, prepared.boot_mount);
  }

  std::uint64_t new_root_size = layout.root_size;
  if (free_now < needed_free && !profile.output.grow_root) {
    throw Error(profile.file.string() + ": the root filesystem of " + base.source.file_name() +
                " is too small for the preload with growing disabled (output.grow_root: false): needs " +
                std::to_string(needed_free) + " bytes free (" + format_byte_size(needed_free) + ": preload " +
                format_byte_size(preload + overlays) + " + root_free_space " +
                format_byte_size(profile.output.root_free_space) + " + 16 MiB margin), has " +
                std::to_string(free_now) + " bytes (" + format_byte_size(free_now) + ")");
  }
  if (free_now < needed_free) {
    // Growing ext4 adds block groups whose inode tables and bitmaps take ~2% of the new space.
    std::uint64_t grow = needed_free - free_now;
    new_root_size = round_up(layout.root_size + grow + grow / 32 + 8 * MiB, 4 * MiB);
  }
  std::uint64_t new_image_size = std::max(image_size, round_up(layout.root_offset + new_root_size, MiB));
  if (profile.output.image_size) {
    if (*profile.output.image_size < new_image_size) {
      throw Error(profile.file.string() + ": output.image_size " + format_byte_size(*profile.output.image_size) +
                  " is too small: the base image with the preload and " +
                  format_byte_size(profile.output.root_free_space) + " free needs " + format_byte_size(new_image_size));
    }
    new_image_size = round_up(*profile.output.image_size, MiB);
  }
  const bool grow = new_image_size != image_size || new_root_size != layout.root_size;
  const BaseGrowth growth{new_image_size, profile.output.grow_root};
  std::optional<BaseCopy> base_copy;
  std::optional<std::uint64_t> grown_root_size;
  // Set when the work image is still empty: the base it is to be a copy of (see below).
  std::optional<CachedBase> deferred_base;
  if (cached) {
    std::optional<CachedBase> grown = grow ? grown_cached_base(cache_dir, *cached, layout, growth, fixed_time) : std::nullopt;
    if (grown) {
      log::info("copying the grown ", base.source.file_name(), " from the cache");
    } else if (cached->path != base.path) {
      log::info("copying the decompressed ", base.source.file_name(), " from the cache");
    } else {
      log::info("copying ", base.source.file_name());
    }
    const CachedBase& from = grown ? *grown : *cached;
    prepared.base_in_use = from.in_use;
    // Where there are no reflinks, a base that needs no growing here is not copied in before the
    // preload goes in (below): 0.2 s less before the image's hashing can start.
    base_copy = with_base_named([&] { return copy_cached_base(from, prepared.path, grown || !grow); });
    if (base_copy->deferred) deferred_base = from;
    if (grown) {
      FileBlockDevice device(from.path, FileBlockDevice::Access::read_only);
      grown_root_size = read_partition_table(device).partition(layout.root_index).byte_size();
    }
  }
  std::optional<WritebackPump> writeback;
  if (sync_images) writeback.emplace(prepared.path);
  if (grow) {
    if (!grown_root_size) grown_root_size = grow_base_image(prepared.path, layout, growth, fixed_time);
    new_root_size = *grown_root_size;
    prepared.changes.push_back("image grown from " + format_byte_size(image_size) + " to " +
                               format_byte_size(new_image_size));
    if (new_root_size != layout.root_size) {
      prepared.changes.push_back("root partition " + std::to_string(layout.root_index) + " grown from " +
                                 format_byte_size(layout.root_size) + " to " + format_byte_size(new_root_size));
      layout.root_size = new_root_size;
    }
  }

  // The preload's writes into the root filesystem: into the work image, or with the base not copied
  // in yet, kept in memory over the base's bytes and written out after (see below).
  std::optional<PatchedFileBlockDevice> preload_writes;
  if (deferred_base) {
    if (::truncate(prepared.path.c_str(), static_cast<off_t>(new_image_size)) != 0) {
      throw_system_error("cannot size " + prepared.path.string(), errno);
    }
    preload_writes.emplace(deferred_base->path, prepared.path.string());
  }
  Ext4Filesystem rootfs =
      preload_writes ? Ext4Filesystem::open(*preload_writes, layout.root_offset, layout.root_size, Ext4Access::read_write, fixed_time)
                     : Ext4Filesystem::open(prepared.path, layout.root_offset, layout.root_size, Ext4Access::read_write, fixed_time);
  log::info("installing RKE2 ", release.version, " under /usr/local");
  std::vector<std::string> keys;
  {
    // The tar's bytes are the decompressed .tar.gz's: its key is derived from that file's SHA-256 as
    // the decompressed base's is (cached_base).
    const std::size_t file = prepared.copied.paths.size();
    if (install_rke2_bundle(rootfs, bundle, fixed_time, layout.root_offset, file, prepared.copied.ranges)) {
      prepared.copied.paths.push_back(bundle.tarball);
      keys.push_back(bundle.tarball == release.bundle.path ? release.bundle.sha256.hex()
                                                           : Sha256::of("decompressed " + release.bundle.sha256.hex()).hex());
    }
  }
  prepared.changes.push_back("RKE2 " + release.version + " bundle unpacked under /usr/local");
  const std::string images_dir = "/var/lib/rancher/rke2/agent/images";
  rootfs.create_directories(images_dir);
  // The archives' blocks are allocated here, and their bytes written by a thread of their own (with
  // O_DIRECT unless --no-sync) while the nodes are customised and hashed: written here through the
  // page cache, 512 MiB of archives took 0.6 s of this thread on a quiet 2-core VM, most of it the
  // kernel finding new pages for bytes that were already cached once (as the archive files).
  const std::vector<Ext4HostFileScan> scans = archive_scans.get();
  for (std::size_t i = 0; i < release.images.size(); ++i) {
    const auto& image = release.images[i];
    std::string target = images_dir + "/" + image.source.file_name();
    ProgressTask progress("preload " + image.source.file_name(), image.size);
    const std::size_t file = prepared.copied.paths.size();
    prepared.copied.paths.push_back(image.path);
    keys.push_back(image.sha256.hex());
    for (const Ext4PlacedRun& run : rootfs.place_file_from_host(scans[i], target, {0644, 0, 0, std::nullopt})) {
      prepared.copied.ranges.push_back({layout.root_offset + run.device_offset, run.length, file, run.file_offset});
    }
    progress.set_done(image.size);
    progress.finish();
    prepared.changes.push_back("image archive " + target);
  }
  rootfs.close();
  if (deferred_base) {
    // The blocks the preload wrote (metadata, the bundle's files) go into the empty work image now, in
    // whole 4 KiB blocks with the base's bytes around the writes; the base's other data is a copied
    // range like the archives': the writer below copies it in (past the page cache unless --no-sync)
    // while the nodes are customised and hashed, which read it from the base meanwhile.
    std::vector<DataExtent> written;
    for (const DataExtent& extent : preload_writes->patch().extents()) {
      const std::uint64_t begin = extent.offset / block_rounding * block_rounding;
      written.push_back({begin, std::min(new_image_size, round_up(extent.offset + extent.length, block_rounding)) - begin});
    }
    written = merge_extents(std::move(written));
    {
      // Through a FileBlockDevice, as write_image_patch: all-zero blocks over holes stay holes.
      FileBlockDevice image(prepared.path, FileBlockDevice::Access::read_write);
      std::vector<std::uint8_t> buffer;
      for (const DataExtent& extent : written) {
        for (std::uint64_t done = 0; done < extent.length;) {
          buffer.resize(static_cast<std::size_t>(std::min<std::uint64_t>(extent.length - done, 4 * MiB)));
          preload_writes->read_at(extent.offset + done, buffer);
          image.write_at(extent.offset + done, buffer);
          done += buffer.size();
        }
      }
    }
    std::vector<DataExtent> not_from_base = prepared.copied.extents();
    not_from_base.insert(not_from_base.end(), written.begin(), written.end());
    std::vector<DataExtent> base_data;
    {
      FileDescriptor fd(::open(deferred_base->path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) throw_system_error("cannot open " + deferred_base->path.string(), errno);
      base_data = list_data_extents(fd.get(), new_image_size, deferred_base->path.string());
    }
    const std::size_t file = prepared.copied.paths.size();
    prepared.copied.paths.push_back(deferred_base->path);
    for (const auto& extent : subtract_extents(base_data, not_from_base)) {
      prepared.copied.ranges.push_back({extent.offset, extent.length, file, extent.offset});
    }
    keys.push_back(deferred_base->key);
  }
  // A reflink of the cached base shares its unchanged blocks with it, but not its cached pages: read
  // through the image, they came from the disk (the 1-node build's hashing at 573 MiB/s on XFS,
  // against the page cache's 2-4 GiB/s; docs/benchmarks.md). Those blocks are read from the base
  // instead, as copied ranges no writer writes (they are already there). The archives' ranges are
  // not among them even where the base had allocated zeros: they are about to be written.
  std::vector<DataExtent> unchanged;
  if (base_copy && base_copy->reflink) {
    std::vector<DataExtent> not_from_base = prepared.copied.extents();
    // Past the base's end its reads are zeros, whatever a shared last block holds there.
    const std::uint64_t base_size = fs::file_size(base_copy->source);
    not_from_base.push_back({base_size, std::numeric_limits<std::uint64_t>::max() - base_size});
    unchanged = subtract_extents(same_blocks(prepared.path, base_copy->source), not_from_base);
    std::uint64_t bytes = 0;
    for (const auto& extent : unchanged) bytes += extent.length;
    log::debug("reflinked from the cache: ", bytes >> 20, " MiB of the prepared image read from ", base_copy->source.string());
  }
  if (!prepared.copied.ranges.empty()) {
    FileDescriptor fd(::open(prepared.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_system_error("cannot open " + prepared.path.string(), errno);
    prepared.copied.image_extents = list_data_extents(fd.get(), new_image_size, prepared.path.string());
    prepared.preload = std::make_unique<CopiedRangeWriter>(
        prepared.path, prepared.copied, sync_images ? CopiedRangeWriter::Mode::durable : CopiedRangeWriter::Mode::cached);
  }
  if (!unchanged.empty()) {
    // Added after the writer took its copy of the ranges to write.
    const std::size_t file = prepared.copied.paths.size();
    prepared.copied.paths.push_back(base_copy->source);
    for (const auto& extent : unchanged) prepared.copied.ranges.push_back({extent.offset, extent.length, file, extent.offset});
    keys.push_back(base_copy->key);
  }
  if (!prepared.copied.ranges.empty() || base_copy) {
    prepared.copied_chunk_ranges = std::make_unique<CopiedChunkRanges>(
        cache_dir / "bmap-chunks", prepared.copied, std::move(keys), Bmap{}.block_size, node_bmap_options.range_split_blocks);
    // A plain copy (ext4): which of its chunks e2fsck, resize2fs and the preload left as they were is
    // not known, so each is compared with the base before the base's ranges are used for it. On the
    // benchmark's ext4 that is ~800 MiB whose range hashing shared the cores with the image's SHA-256
    // (docs/benchmarks.md).
    if (base_copy && !base_copy->reflink && !deferred_base) {
      prepared.copied_chunk_ranges->compare_with(base_copy->source, base_copy->key);
    }
  }
  return prepared;
}

// ---- per node ----

std::string read_fat_text(FatFilesystem& boot, const std::string& path) {
  return boot.exists(path) ? boot.read_text_file(path) : std::string();
}

struct NodeResult {
  std::vector<std::string> changes;
  std::string first_boot_format;
  // What the node's edits wrote over the prepared image: everything else is the prepared image's.
  ImagePatch patch;
};

// The node's edits, made on `device`: the prepared image seen through the node's patch (the edits stay
// in memory until its image is written; see build_node_images).
NodeResult customise_node(const Profile& profile, const Rpi5Node& node, const PreparedImage& prepared,
                          const Rke2Release& release, BlockDevice& device, std::optional<std::int64_t> fixed_time) {
  NodeResult result;
  const ImageLayout& layout = prepared.layout;
  const fs::path image = device.name();
  std::map<std::string, Secret> password_hashes = load_user_password_hashes(node);

  {
    Ext4Filesystem rootfs = Ext4Filesystem::open(device, layout.root_offset, layout.root_size, Ext4Access::read_write,
                                                 fixed_time);
    NodeRootContext context{profile, release, prepared.network_manager, prepared.boot_mount, fixed_time};
    for (auto& change : write_node_root_files(rootfs, node, context)) result.changes.push_back(std::move(change));
    rootfs.close();
  }

  PartitionTable table = read_partition_table(device);
  SubrangeBlockDevice boot_partition = open_partition(device, table, layout.boot_index);
  FatFilesystem boot(boot_partition);
  if (fixed_time) boot.set_timestamp(*fixed_time);

  std::string cmdline = read_fat_text(boot, "cmdline.txt");
  if (cmdline.empty()) throw Error(image.string() + ": the boot partition has no cmdline.txt");
  if (auto root = cmdline_root_partuuid(cmdline); root && *root != layout.root_partuuid) {
    throw Error(image.string() + ": cmdline.txt boots root=PARTUUID=" + *root + " but the root partition is " +
                layout.root_partuuid);
  }
  bool nocloud_files = boot.exists("user-data") || boot.exists("meta-data") || boot.exists("network-config");
  FirstBootFormat format = detect_first_boot_format(nocloud_files, prepared.rootfs_has_cloud_init);
  FirstBootPlan plan = plan_first_boot(format, node, password_hashes, prepared.boot_mount);
  for (const auto& [name, content] : plan.boot_files) {
    boot.write_file(name, content);
    result.changes.push_back("boot partition: " + name + " (" + to_string(format) + ")");
  }
  std::vector<std::string> arguments = plan.cmdline_add;
  arguments.insert(arguments.end(), node.boot.cmdline.begin(), node.boot.cmdline.end());
  // Last on the line: the device tree's cgroup_disable=memory comes first, and the kernel takes the
  // later setting.
  arguments.push_back("cgroup_enable=memory");
  std::string new_cmdline = add_cmdline_arguments(remove_cmdline_arguments(cmdline, plan.cmdline_remove), arguments);
  if (auto warning = check_pi_cmdline_length(new_cmdline, "node " + node.name)) log::warning(*warning);
  boot.write_file("cmdline.txt", new_cmdline);
  result.changes.push_back("cmdline.txt: " + std::string(new_cmdline.substr(0, new_cmdline.size() - 1)));

  std::string config_txt = read_fat_text(boot, "config.txt");
  std::string new_config = apply_config_txt(config_txt, node.boot);
  if (new_config != config_txt) {
    boot.write_file("config.txt", new_config);
    for (const auto& line : managed_config_txt_lines(node.boot)) result.changes.push_back("config.txt: " + line);
  }
  if (node.boot.kernel_page_size_kib == 4 && !boot.exists("kernel8.img")) {
    throw Error(image.string() + ": boot.kernel_page_size_kib is 4 but the boot partition has no kernel8.img");
  }

  // Read back through a fresh view of the partition: what a Pi will find, not what we meant to write.
  FatFilesystem reread(boot_partition);
  std::map<std::string, std::string> found;
  for (const auto& [name, content] : plan.boot_files) found[name] = read_fat_text(reread, name);
  auto problems = verify_first_boot(plan, found, read_fat_text(reread, "cmdline.txt"));
  if (!problems.empty()) {
    std::string text;
    for (const auto& p : problems) text += "\n  " + p;
    throw Error(image.string() + ": first-boot settings would not be applied:" + text);
  }
  result.first_boot_format = to_string(format);
  return result;
}

// ---- the build, phase by phase ----

// Step 1's result: the base image and the RKE2 release, and the cache the base is decompressed into.
struct RpiInputs {
  FetchedArtifact base;
  Rke2Release release;
  fs::path cache_dir;
};

RpiInputs fetch_rpi_inputs(const Profile& profile, const Rpi5Node& first_node, const FetchOptions& fetch) {
  ArtifactFetcher fetcher(fetch);
  // The base image and the RKE2 release come from different servers: fetch them at the same time.
  auto base_download = std::async(std::launch::async, [&] { return fetcher.fetch(*profile.base); });
  Rke2Release release = fetch_rke2_release(first_node.rke2, "arm64", fetcher);
  FetchedArtifact base = base_download.get();
  return {std::move(base), std::move(release), fetcher.options().cache_dir};
}

// How a node image became a copy of the prepared image.
enum class NodeImageCopy { reflink, direct, buffered };

// A reflink where the filesystem shares extents (XFS, btrfs): nothing is copied and the node image
// costs the disk only what its patch writes. Elsewhere (ext4, tmpfs) a copy written with O_DIRECT (see
// copy_image_direct), with --no-sync too: its bytes must reach the disk sooner or later, and going
// there directly was the faster way here either way; an ordinary sparse copy where O_DIRECT is
// refused. 0600: the image carries the node's join token (and maybe password hashes) once patched.
NodeImageCopy copy_prepared_image(const fs::path& prepared, const fs::path& to, const CopiedFiles& copied) {
  if (clone_file(prepared, to, 0600)) return NodeImageCopy::reflink;
  if (copy_image_direct(prepared, to, 0600, copied)) return NodeImageCopy::direct;
  copy_sparse_file(prepared, to, 0600);
  return NodeImageCopy::buffered;
}

const char* describe(NodeImageCopy copy) {
  switch (copy) {
    case NodeImageCopy::reflink: return "reflink";
    case NodeImageCopy::direct: return "O_DIRECT copy";
    case NodeImageCopy::buffered: return "copy";
  }
  return "copy";
}

// What steps 5 and 6 share across nodes.
struct RpiNodeBuild {
  const Profile& profile;
  const BuildOptions& options;
  const PreparedImage& prepared;
  const Rke2Release& release;
  PartialOutputs& partial;
  DigestsByInode digests;
  // output.http_boot's signing key, loaded before anything was written.
  const RsaPrivateKey* http_boot_key = nullptr;

  fs::path image_partial(const Rpi5Node& node) const { return options.output_dir / (node.name + ".img.partial"); }
};

// <node>.img.bmap and the compressed copies, under their .partial names (sizes and digests are taken
// once they are renamed).
void write_bmap_and_compressed_copies(RpiNodeBuild& build, const Rpi5Node& node, const fs::path& image_partial,
                                      const ImageHashes& hashes, BuiltNode& built) {
  const fs::path& out = build.options.output_dir;
  if (hashes.bmap) {
    fs::path bmap = out / (node.name + ".img.bmap");
    fs::path bmap_partial = build.partial.track(fs::path(bmap.string() + ".partial"));
    // The bmap maps data; the blocks the image's filesystems use but that are zeros (holes here) are
    // added, so a flash onto a used card writes them (disk/filesystem_used_ranges.hpp).
    write_bmap_file(map_ranges_as_zeros(*hashes.bmap, filesystem_used_ranges(image_partial)), bmap_partial);
    built.bmap = BuiltFile{bmap, 0, {}};
  }
  for (const auto& format : build.profile.output.compress) {
    fs::path compressed = out / (node.name + ".img." + (format == "xz" ? "xz" : "zst"));
    fs::path compressed_partial = build.partial.track(fs::path(compressed.string() + ".partial"));
    ImageCompressionOptions compression;
    compression.format = format == "xz" ? ImageCompressionFormat::xz : ImageCompressionFormat::zstd;
    compression.file_permissions = 0600;
    ImageCompressor(compression).compress_unpublished(image_partial, compressed_partial, compressed);
    built.compressed.push_back(BuiltFile{compressed, 0, {}});
  }
}

// Complete: everything of this node renamed into place, image last (once it is on the disk).
void move_node_outputs_into_place(RpiNodeBuild& build, const fs::path& image_partial, const fs::path& image,
                                  const ImageHashes& hashes, BuiltNode& built) {
  if (built.bmap) {
    build.partial.publish(built.bmap->path.string() + ".partial", built.bmap->path);
    *built.bmap = describe_file(built.bmap->path, build.digests);
  }
  for (auto& c : built.compressed) {
    build.partial.publish(c.path.string() + ".partial", c.path);
    c = describe_file(c.path, build.digests);
  }
  if (build.options.sync_images) wait_until_on_disk(image_partial);
  build.partial.publish(image_partial, image);
  built.image = BuiltFile{image, hashes.size, hashes.sha256};
}

// output.http_boot: <node>.boot.img from the node's customised boot partition, and its boot.sig.
void write_node_http_boot(RpiNodeBuild& build, const Rpi5Node& node, const fs::path& image_partial, BuiltNode& built) {
  log::info("node ", node.name, ": boot.img for HTTP boot");
  FileBlockDevice device(image_partial, FileBlockDevice::Access::read_only);
  PartitionTable table = read_partition_table(device);
  SubrangeBlockDevice boot_partition = open_partition(device, table, build.prepared.layout.boot_index);
  FatFilesystem boot(boot_partition);
  PiBootImageSpec spec;
  spec.node = node.name;
  spec.image_size = build.profile.output.http_boot->image_size;
  spec.timestamp = build.options.source_date_epoch.value_or(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const fs::path& out = build.options.output_dir;
  BuiltPiBoot files = write_pi_boot_files(pi_boot_image_bytes(boot, spec), *build.http_boot_key, spec.timestamp,
                                          out / (node.name + ".boot.img"), out / (node.name + ".boot.sig"), build.partial);
  built.boot_image = files.image;
  built.boot_signature = files.signature;
}

nlohmann::json node_report(const RpiNodeBuild& build, const Rpi5Node& node, const NodeResult& node_result,
                           const BuiltNode& built) {
  const fs::path& out = build.options.output_dir;
  nlohmann::json report{{"name", node.name},
                        {"hostname", node.system.hostname},
                        {"rke2_role", node.rke2.role},
                        {"first_boot", built.first_boot_format},
                        {"image", built_file_json(built.image, out)},
                        {"changes", build.prepared.changes}};
  for (const auto& c : node_result.changes) report["changes"].push_back(c);
  if (built.bmap) report["bmap"] = built_file_json(*built.bmap, out);
  for (const auto& c : built.compressed) report["compressed"].push_back(built_file_json(c, out));
  if (built.boot_image) report["boot_img"] = built_file_json(*built.boot_image, out);
  if (built.boot_signature) report["boot_sig"] = built_file_json(*built.boot_signature, out);
  return report;
}

std::size_t core_count() { return std::max(1u, std::thread::hardware_concurrency()); }

// Runs every task on up to `max_threads` threads (at most one per task), and rethrows the first
// exception once all have stopped.
void run_tasks(const std::vector<std::function<void()>>& tasks, std::size_t max_threads) {
  const std::size_t threads = std::min(tasks.size(), std::max<std::size_t>(1, max_threads));
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto work = [&] {
    for (std::size_t i = next++; i < tasks.size() && !failed; i = next++) {
      try {
        tasks[i]();
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> helpers;
  for (std::size_t i = 1; i < threads; ++i) helpers.emplace_back(work);
  work();
  for (auto& helper : helpers) helper.join();
  if (first_error) std::rethrow_exception(first_error);
}

void keep_copied_chunk_ranges(const PreparedImage& prepared) {
  if (!prepared.copied_chunk_ranges) return;
  log::debug("bmap ranges of ", prepared.copied_chunk_ranges->found_bytes() >> 20, " MiB of copied chunks (image archives, base) taken from the cache");
  prepared.copied_chunk_ranges->save();
}

// The hashes of every node's image, taken from the prepared image and each node's patch (see
// ImagePatch): the prepared image's bmap once, then per node its whole-image sha256 and its bmap
// with only the chunks its patch writes hashed again. The prepared image must not change meanwhile.
std::vector<ImageHashes> hash_node_images(const RpiNodeBuild& build, const std::vector<const Rpi5Node*>& nodes,
                                          const std::vector<NodeResult>& results) {
  const fs::path& prepared = build.prepared.path;
  const bool with_bmap = build.profile.output.bmap;
  std::vector<ImageHashes> hashes(nodes.size());
  if (nodes.size() == 1) {
    // One image: its bmap and sha256 from one read, the bmap on the reading thread and the sha256 on
    // a second (hash_image's way), instead of reading the prepared image once for each.
    hashes[0] = hash_patched_image(prepared, results[0].patch, nodes[0]->name + ".img", with_bmap, node_bmap_options,
                                   &build.prepared.copied, build.prepared.copied_chunk_ranges.get());
    keep_copied_chunk_ranges(build.prepared);
    return hashes;
  }
  // The prepared image's bmap (mostly known from the cache) beside the node images' sha256s.
  std::optional<Bmap> prepared_bmap;
  std::future<void> bmap_task;
  if (with_bmap) {
    bmap_task = std::async(std::launch::async, [&] {
      BmapOptions one_thread = node_bmap_options;
      one_thread.threads = 1;
      prepared_bmap = create_bmap(prepared, one_thread, build.prepared.copied, build.prepared.copied_chunk_ranges.get());
    });
  }
  std::vector<const ImagePatch*> patches;
  for (const auto& result : results) patches.push_back(&result.patch);
  try {
    hashes = hash_patched_images(prepared, patches, std::to_string(nodes.size()) + " node images", &build.prepared.copied,
                                 core_count());
  } catch (...) {
    if (bmap_task.valid()) bmap_task.wait();
    throw;
  }
  if (bmap_task.valid()) bmap_task.get();
  keep_copied_chunk_ranges(build.prepared);
  if (with_bmap) {
    std::vector<std::function<void()>> tasks;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      tasks.emplace_back([&, i] {
        hashes[i].bmap = update_patched_bmap(prepared, *prepared_bmap, results[i].patch, node_bmap_options, &build.prepared.copied);
      });
    }
    run_tasks(tasks, core_count());
  }
  return hashes;
}

// Steps 5 and 6 for every node: each node's edits are made first, in memory, against the prepared
// image (a few hundred KiB each). Then, while the node images are hashed from the prepared image's
// cached pages plus their patches on all cores, the images themselves are made: every node but the
// last gets a reflink or copy of the prepared image with its patch written over it; the last node's
// image is the prepared image itself, renamed and patched once nothing reads it any more. Nothing is
// read back from a node image, and no node's hash waits for another node's copy.
std::vector<BuiltNode> build_node_images(RpiNodeBuild& build, const std::vector<const Rpi5Node*>& nodes,
                                         nlohmann::json& node_reports) {
  const PreparedImage& prepared = build.prepared;
  const fs::path& out = build.options.output_dir;
  // The prepared image's data goes to the disk while the nodes are customised and hashed (it is the
  // last node's image, and what the other nodes' reflinks share). An fdatasync, not only a writeback:
  // on a disk with a write cache (a VM's virtual disk over the host's page cache) the cache flush is
  // what takes the time, and this one overlaps the hashing; the final fdatasync of each image then
  // waits only for its node's patch. Its error is rethrown below: the kernel reports a writeback error
  // to one fdatasync only, so the final one would not see it again.
  std::future<void> early_flush;
  if (build.options.sync_images) {
    early_flush = std::async(std::launch::async, [path = prepared.path] { wait_until_on_disk(path); });
  }
  std::vector<NodeResult> results;
  for (const Rpi5Node* node : nodes) {
    log::info("node ", node->name, ": customising");
    PatchedFileBlockDevice device(prepared.path, build.image_partial(*node).string(), &prepared.copied);
    results.push_back(customise_node(build.profile, *node, prepared, build.release, device, build.options.source_date_epoch));
    results.back().patch = device.take_patch();
  }

  std::vector<fs::path> partials;
  for (const Rpi5Node* node : nodes) partials.push_back(build.partial.track(build.image_partial(*node)));
  std::future<std::vector<ImageHashes>> hashing =
      std::async(std::launch::async, [&] { return hash_node_images(build, nodes, results); });
  try {
    // A reflink, the rename below and the patches written over the archives' blocks (a node's overlay
    // may replace an archive) need the image complete; the hashing meanwhile reads the archives.
    prepared.wait_for_preload();
    for (std::size_t i = 0; i + 1 < nodes.size(); ++i) {
      NodeImageCopy copy = copy_prepared_image(prepared.path, partials[i], prepared.copied);
      log::info("node ", nodes[i]->name, ": image made by ", describe(copy), " of the prepared image");
      write_image_patch(results[i].patch, partials[i]);
      if (build.options.sync_images) start_writeback(partials[i]);
    }
  } catch (...) {
    // The hashing reads the prepared image: it finishes before anything is cleaned up.
    hashing.wait();
    throw;
  }
  std::vector<ImageHashes> hashes = hashing.get();
  // Nobody reads the prepared image any more: it becomes the last node's image, which saves a full
  // copy (the work directory is in the output directory, so this is a rename).
  fs::permissions(prepared.path, fs::perms::owner_read | fs::perms::owner_write);
  fs::rename(prepared.path, partials.back());
  write_image_patch(results.back().patch, partials.back());
  if (build.options.sync_images) start_writeback(partials.back());
  if (early_flush.valid()) early_flush.get();

  std::vector<BuiltNode> built_nodes;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const Rpi5Node& node = *nodes[i];
    BuiltNode built;
    built.name = node.name;
    built.first_boot_format = results[i].first_boot_format;
    if (build.http_boot_key) write_node_http_boot(build, node, partials[i], built);
    write_bmap_and_compressed_copies(build, node, partials[i], hashes[i], built);
    move_node_outputs_into_place(build, partials[i], out / (node.name + ".img"), hashes[i], built);
    node_reports.push_back(node_report(build, node, results[i], built));
    built_nodes.push_back(std::move(built));
  }
  return built_nodes;
}

// SHA256SUMS and manifest.json. A Pi build's are as open as the umask lets them be.
BuildRecord write_rpi_build_record(const Profile& profile, const BuildOptions& options, const RpiInputs& inputs,
                                   const BuildResult& result, const nlohmann::json& node_reports,
                                   const std::optional<BuiltEphemeral>& ephemeral) {
  std::vector<BuiltFile> sums;
  if (ephemeral) sums.insert(sums.end(), ephemeral->files.begin(), ephemeral->files.end());
  for (const auto& n : result.nodes) {
    sums.push_back(n.image);
    if (n.bmap) sums.push_back(*n.bmap);
    sums.insert(sums.end(), n.compressed.begin(), n.compressed.end());
    if (n.boot_image) sums.push_back(*n.boot_image);
    if (n.boot_signature) sums.push_back(*n.boot_signature);
  }
  const Rke2Release& release = inputs.release;
  nlohmann::json input_list = nlohmann::json::array({input_json("base", inputs.base), input_json("rke2-checksums", release.checksums),
                                                     input_json("rke2-bundle", release.bundle)});
  for (const auto& image : release.images) input_list.push_back(input_json("rke2-images", image));
  nlohmann::json manifest = manifest_base(profile, options.source_date_epoch);
  manifest["rke2_version"] = release.version;
  manifest["inputs"] = input_list;
  manifest["nodes"] = node_reports;
  if (ephemeral) manifest["ephemeral"] = ephemeral->report;
  std::vector<std::string> names;
  for (const auto& node : profile.rpi_nodes) names.push_back(node.name);
  if (!options.only_nodes.empty()) keep_unbuilt_nodes(options.output_dir, names, manifest, sums);
  for (const auto& removed : remove_dropped_node_outputs(options.output_dir, names, profile.name)) {
    log::info("removed ", removed.string(), ": the output of a node the profile no longer has");
  }
  return write_build_record(options.output_dir, sums, manifest, FileMode::less_umask(0666));
}

}  // namespace

std::optional<std::int64_t> source_date_epoch_from_environment() {
  const char* value = std::getenv("SOURCE_DATE_EPOCH");
  if (value == nullptr || *value == '\0') return std::nullopt;
  std::int64_t seconds = 0;
  std::string_view text(value);
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (ec != std::errc() || ptr != text.data() + text.size() || seconds < 0) {
    throw Error("SOURCE_DATE_EPOCH must be a number of seconds since 1970, got '" + std::string(text) + "'");
  }
  return seconds;
}

namespace {

// A node's outputs that an earlier build of it wrote and this one did not (the profile no longer asks
// for xz, or for HTTP boot): left there they would sit beside the new image, outside SHA256SUMS and
// the manifest, with the old image's token inside, and `flash` would pair an old .img.zst with the
// new .bmap. Only names this builder writes for the nodes it just built are considered.
void remove_stale_node_outputs(const fs::path& out, const std::vector<BuiltNode>& nodes) {
  for (const auto& node : nodes) {
    std::set<fs::path> written{node.image.path};
    if (node.bmap) written.insert(node.bmap->path);
    for (const auto& c : node.compressed) written.insert(c.path);
    if (node.boot_image) written.insert(node.boot_image->path);
    if (node.boot_signature) written.insert(node.boot_signature->path);
    for (const char* suffix : {".img.bmap", ".img.xz", ".img.zst", ".img.gz", ".boot.img", ".boot.sig"}) {
      fs::path candidate = out / (node.name + suffix);
      std::error_code ec;
      if (written.contains(candidate) || !fs::is_regular_file(fs::symlink_status(candidate, ec))) continue;
      if (fs::remove(candidate, ec)) {
        log::info("removed ", candidate.string(), ": an earlier build's output that this build does not write");
      }
    }
    // Unfinished files of this node from a build that was killed (SIGKILL, a crash: an interrupt
    // removes its own): "<node>.img.partial", "<node>.img.xz.partial.partial", ...
    std::error_code ec;
    for (fs::directory_iterator it(out, ec), end; !ec && it != end; it.increment(ec)) {
      std::string file = it->path().filename().string();
      if (!file.starts_with(node.name + ".img") && !file.starts_with(node.name + ".boot.")) continue;
      if (!file.ends_with(".partial") || !it->is_regular_file()) continue;
      std::error_code removed;
      if (fs::remove(it->path(), removed)) log::info("removed ", it->path().string(), ": left unfinished by an earlier build");
    }
  }
}

}  // namespace

namespace {

// An overlay is copied into every image whole: an output or cache directory inside it would put the
// build's own files into the image (the previous build's node images with their join tokens, a
// `.work-PID` directory that makes no two images alike), growing with every rebuild.
void require_outputs_outside_overlays(const Profile& profile, const std::vector<const Rpi5Node*>& nodes,
                                      const BuildOptions& options) {
  auto inside = [](const fs::path& path, const fs::path& directory) {
    std::error_code ec;
    fs::path dir = fs::canonical(directory, ec);
    if (ec) return false;  // a missing overlay is reported where overlays are read
    fs::path at = fs::weakly_canonical(fs::absolute(path), ec);
    if (ec) return false;
    auto [end, _] = std::mismatch(dir.begin(), dir.end(), at.begin(), at.end());
    return end == dir.end();
  };
  fs::path cache = options.fetch.cache_dir.empty() ? default_cache_dir() : options.fetch.cache_dir;
  for (const Rpi5Node* node : nodes) {
    for (const auto& overlay : node->overlays) {
      for (const auto& [what, path] : {std::pair{"output directory", options.output_dir}, std::pair{"cache directory", cache}}) {
        if (!inside(path, overlay)) continue;
        throw Error(profile.file.string() + ": the " + what + " " + path.string() + " lies inside overlay " +
                    overlay.string() + " of node " + node->name + ": the overlay is copied into the image whole, "
                    "so the build's own files (node images with their join tokens) would be too; build to a "
                    "directory outside it");
      }
    }
  }
}

}  // namespace

BuildResult build_rpi5_images(const Profile& profile, const BuildOptions& options) {
  if (!profile.base) throw Error(profile.file.string() + ": nothing to build: the profile has no base image");
  std::vector<const Rpi5Node*> nodes = select_nodes(profile.rpi_nodes, options.only_nodes, profile.file);
  require_outputs_outside_overlays(profile, nodes, options);
  // A missing or unusable signing key is found before an image is fetched or written.
  std::optional<RsaPrivateKey> http_boot_key;
  if (profile.output.http_boot) {
    const SecretReference& key = profile.output.http_boot->key;
    http_boot_key = load_rsa_private_key(load_secret(key), key.describe());
  }
  // 1. inputs
  RpiInputs inputs = fetch_rpi_inputs(profile, *nodes.front(), options.fetch);
  const OutputDirectoryLock output_lock(options.output_dir);  // and creates it
  WorkDirectory work(options.output_dir, "work");
  PartialOutputs partial;
  // 2-4. the image every node starts from
  PreparedImage prepared = prepare_shared_image(profile, inputs.base, inputs.release, work.path(), inputs.cache_dir,
                                                options.source_date_epoch, options.sync_images);
  // The ephemeral output reads the prepared image, which the last node's image then becomes.
  std::optional<BuiltEphemeral> ephemeral;
  if (profile.output.ephemeral) {
    prepared.wait_for_preload();  // it reads the archives' files from the prepared image
    EphemeralSource source{prepared.path,          prepared.layout.root_offset, prepared.layout.root_size,
                           prepared.layout.boot_index, prepared.boot_mount,  prepared.network_manager,
                           prepared.rootfs_has_cloud_init};
    ephemeral = build_ephemeral_output(profile, nodes, source, inputs.release, options, partial,
                                       http_boot_key ? &*http_boot_key : nullptr);
  }
  // 5-6. per node: its image, bmap and compressed copies
  RpiNodeBuild build{profile, options, prepared, inputs.release, partial, {}, http_boot_key ? &*http_boot_key : nullptr};
  BuildResult result;
  nlohmann::json node_reports = nlohmann::json::array();
  if (profile.output.disk_images) result.nodes = build_node_images(build, nodes, node_reports);
  // SHA256SUMS and manifest.json, the ephemeral build published and the outputs kept: all or nothing if
  // interrupted.
  InterruptCleanup::hold_off([&] {
    BuildRecord record = write_rpi_build_record(profile, options, inputs, result, node_reports, ephemeral);
    result.checksums = record.checksums;
    result.manifest = record.manifest;
    if (ephemeral) {
      publish_ephemeral_build(profile, options, *ephemeral);
      result.ephemeral_build = ephemeral->id;
      result.ephemeral_directory = ephemeral->directory;
    }
    partial.commit();
  });
  remove_stale_node_outputs(options.output_dir, result.nodes);
  return result;
}

}  // namespace aggrik8s::builder
