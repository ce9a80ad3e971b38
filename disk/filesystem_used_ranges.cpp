#include "disk/filesystem_used_ranges.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#include "disk/block_device.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/filesystem_probe.hpp"
#include "disk/partition_table.hpp"
#include "core/error.hpp"

namespace aggrik8s {

namespace {

std::vector<DataExtent> partition_used_ranges(const std::filesystem::path& image, FileBlockDevice& device,
                                              const PartitionTable& table, const PartitionEntry& partition) {
  const std::uint64_t start = partition.byte_offset(), size = partition.byte_size();
  std::string type = probe_filesystem(image, start, size).type;
  try {
    if (type == "vfat") {
      SubrangeBlockDevice sub = open_partition(device, table, partition.index);
      std::vector<DataExtent> ranges = FatFilesystem(sub).used_ranges();
      for (auto& r : ranges) r.offset += start;
      return ranges;
    }
    if (type == "ext4" || type == "ext3" || type == "ext2") {
      return Ext4Filesystem::open(image, start, size, Ext4Access::read_only).used_ranges();
    }
  } catch (const Error&) {
    // Not readable as the filesystem blkid named: every byte of it counts.
  }
  return {{start, size}};
}

// The sha256 of `bytes` zero bytes (at most 4 MiB: map_ranges_as_zeros cuts runs there). Kept for the
// process: the runs repeat a few lengths, image after image.
Sha256Digest zero_run_digest(std::uint64_t bytes) {
  static std::mutex mutex;
  static std::map<std::uint64_t, Sha256Digest> known;
  {
    std::lock_guard lock(mutex);
    if (auto found = known.find(bytes); found != known.end()) return found->second;
  }
  static const std::vector<std::uint8_t> zeros(1 << 20, 0);
  Sha256 hash;
  for (std::uint64_t left = bytes; left > 0;) {
    std::uint64_t n = std::min<std::uint64_t>(left, zeros.size());
    hash.update(std::span<const std::uint8_t>(zeros.data(), n));
    left -= n;
  }
  Sha256Digest digest = hash.finish();
  std::lock_guard lock(mutex);
  known.emplace(bytes, digest);
  return digest;
}

}  // namespace

std::vector<DataExtent> filesystem_used_ranges(const std::filesystem::path& image) {
  FileBlockDevice device(image, FileBlockDevice::Access::read_only);
  const std::uint64_t image_size = device.size();
  std::optional<PartitionTable> table;
  try {
    table = read_partition_table(device);
  } catch (const Error&) {
  }
  if (!table || table->partitions().empty()) return {{0, image_size}};
  std::vector<DataExtent> ranges;
  std::uint64_t first_start = image_size;
  for (const auto& partition : table->partitions()) {
    first_start = std::min(first_start, partition.byte_offset());
    for (const auto& r : partition_used_ranges(image, device, *table, partition)) ranges.push_back(r);
  }
  // The MBR or protective MBR and GPT, and the gap before the first partition (a boot loader may sit
  // there); a GPT's backup header and entries are at the end of the disk.
  ranges.push_back({0, first_start});
  if (table->kind() == PartitionTableKind::gpt) {
    constexpr std::uint64_t backup_bytes = 33 * partition_sector_size;
    ranges.push_back({image_size > backup_bytes ? image_size - backup_bytes : 0, std::min(image_size, backup_bytes)});
  }
  for (auto& r : ranges) r.length = std::min(r.length, r.offset < image_size ? image_size - r.offset : 0);
  return merge_extents(std::move(ranges));
}

Bmap map_ranges_as_zeros(const Bmap& bmap, const std::vector<DataExtent>& ranges) {
  const std::uint64_t block = bmap.block_size, blocks = bmap.blocks_count();
  // The blocks to add: those of `ranges` (rounded out to whole blocks) that no range of the bmap has.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> added;  // first, last block
  auto mapped = bmap.ranges.begin();
  for (const auto& r : merge_extents(ranges)) {
    std::uint64_t first = r.offset / block;
    std::uint64_t end = std::min(blocks, (r.offset + r.length + block - 1) / block);  // exclusive
    while (first < end) {
      while (mapped != bmap.ranges.end() && mapped->last_block < first) ++mapped;
      if (mapped != bmap.ranges.end() && mapped->first_block <= first) {
        first = mapped->last_block + 1;
        continue;
      }
      std::uint64_t stop = mapped != bmap.ranges.end() ? std::min(end, mapped->first_block) : end;
      added.emplace_back(first, stop - 1);
      first = stop;
    }
  }
  if (added.empty()) return bmap;
  Bmap result = bmap;
  // Cut at 4 MiB boundaries, as the build's own ranges are: a run's digest depends on its length only,
  // so a 64 MiB journal of zeros is 16 runs of one length, hashed once (4 MiB, ~2 ms), not 64 MiB.
  const std::uint64_t chunk_blocks = std::max<std::uint64_t>(1, (4ull << 20) / block);
  for (const auto& [first, last] : added) {
    for (std::uint64_t from = first; from <= last;) {
      std::uint64_t to = std::min(last, (from / chunk_blocks + 1) * chunk_blocks - 1);
      std::uint64_t bytes = std::min(bmap.image_size, (to + 1) * block) - from * block;
      result.ranges.push_back({from, to, zero_run_digest(bytes)});
      from = to + 1;
    }
  }
  std::sort(result.ranges.begin(), result.ranges.end(),
            [](const BmapRange& a, const BmapRange& b) { return a.first_block < b.first_block; });
  return result;
}

}  // namespace aggrik8s
