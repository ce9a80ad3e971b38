#include "disk/fat_format.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <string_view>

#include "core/byte_size.hpp"
#include "core/endian.hpp"
#include "core/error.hpp"

namespace aggrik8s {

namespace {

constexpr std::uint32_t sector_size = 512;
constexpr std::uint64_t MiB = 1ull << 20;
// mkfs.fat switches to FAT32 from here when not told otherwise.
constexpr std::uint64_t fat32_default_from = 512 * MiB;
constexpr std::uint32_t fat16_root_entries = 512;
constexpr std::uint32_t fat32_reserved_sectors = 32;  // boot sector, FSInfo, backups at 6 and 7
constexpr std::uint32_t fsinfo_sector = 1;
constexpr std::uint32_t backup_boot_sector = 6;
constexpr std::uint32_t fat32_root_cluster = 2;
constexpr std::uint32_t fat32_max_clusters = 0x0ffffff5 - 2;
constexpr std::uint8_t media_fixed_disk = 0xf8;
// No geometry exists for an image file; these are what mkfs.fat writes for one of this size class.
constexpr std::uint16_t sectors_per_track = 32;
constexpr std::uint16_t heads = 64;

std::string describe_size(std::uint64_t bytes) {
  if (bytes % MiB == 0) return std::to_string(bytes / MiB) + " MiB";
  return std::to_string(bytes) + " bytes";
}

// Fills in the FAT size and cluster count for the rest of the layout. The FAT is sized for every
// cluster the area could hold without it, so it is always large enough (at most a cluster's worth
// of sectors more than the exact fixed point, as mkfs.fat's estimate).
void size_fats(FatLayout& layout) {
  const std::uint32_t root_sectors = layout.root_entries * 32 / sector_size;
  const std::uint64_t overhead = layout.reserved_sectors + root_sectors;
  if (layout.total_sectors <= overhead) {
    layout.cluster_count = 0;
    return;
  }
  const std::uint64_t area = layout.total_sectors - overhead;
  const std::uint64_t upper_clusters = area / layout.sectors_per_cluster;
  const std::uint64_t entry_bytes = layout.type == FatType::fat32 ? 4 : 2;
  const std::uint64_t fat_bytes = (upper_clusters + 2) * entry_bytes;
  // At most 4 bytes for each of 2^28 clusters: 2^21 sectors, well inside 32 bits.
  layout.fat_sectors = static_cast<std::uint32_t>(round_up((fat_bytes + sector_size - 1) / sector_size, layout.sectors_per_cluster));
  const std::uint64_t both_fats = 2ull * layout.fat_sectors;
  layout.cluster_count = area > both_fats
                             ? static_cast<std::uint32_t>(std::min<std::uint64_t>((area - both_fats) / layout.sectors_per_cluster,
                                                                                  0xffffffffu))
                             : 0;
}

FatLayout layout_with(FatType type, std::uint64_t total_sectors, std::uint32_t sectors_per_cluster) {
  FatLayout layout;
  layout.type = type;
  layout.total_sectors = total_sectors;
  layout.sectors_per_cluster = sectors_per_cluster;
  // Whole clusters before the data area keep every cluster aligned to its size in the image.
  if (type == FatType::fat32) {
    layout.reserved_sectors = static_cast<std::uint32_t>(round_up(fat32_reserved_sectors, sectors_per_cluster));
    layout.root_entries = 0;
  } else {
    layout.reserved_sectors = sectors_per_cluster;
    layout.root_entries =
        static_cast<std::uint32_t>(round_up(fat16_root_entries * 32 / sector_size, sectors_per_cluster) * sector_size / 32);
  }
  size_fats(layout);
  return layout;
}

// The 11 bytes of the boot sector's label field: upper case, space padded; "NO NAME" when empty.
std::array<std::uint8_t, 11> label_field(const std::string& label) {
  if (label.size() > 11) {
    throw Error("FAT volume label '" + label + "': " + std::to_string(label.size()) + " characters, at most 11 allowed");
  }
  std::string text = label.empty() ? "NO NAME" : label;
  std::array<std::uint8_t, 11> field;
  field.fill(' ');
  constexpr std::string_view forbidden = "\"*+,./:;<=>?[\\]|";
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 'a' && c <= 'z') c = static_cast<unsigned char>(c - 'a' + 'A');
    if (c < 0x20 || c >= 0x7f || forbidden.find(static_cast<char>(c)) != std::string_view::npos) {
      throw Error("FAT volume label '" + label + "': character " + std::to_string(i + 1) +
                  " is not allowed (letters, digits, space and !#$%&'()-@^_`{}~ only)");
    }
    field[i] = c;
  }
  return field;
}

std::vector<std::uint8_t> boot_sector(const FatLayout& layout, const FatFormatOptions& options) {
  std::vector<std::uint8_t> sector(sector_size, 0);
  std::uint8_t* s = sector.data();
  const bool fat32 = layout.type == FatType::fat32;
  // Jump over the BPB to boot code that halts: the image is never booted by a PC BIOS.
  const std::uint8_t boot_code_offset = fat32 ? 0x5a : 0x3e;
  s[0] = 0xeb;
  s[1] = static_cast<std::uint8_t>(boot_code_offset - 2);
  s[2] = 0x90;
  std::memcpy(s + 3, "AGGRIK8S", 8);
  store_le16(s + 11, sector_size);
  s[13] = static_cast<std::uint8_t>(layout.sectors_per_cluster);
  store_le16(s + 14, static_cast<std::uint16_t>(layout.reserved_sectors));
  s[16] = 2;
  store_le16(s + 17, static_cast<std::uint16_t>(layout.root_entries));
  const bool small = !fat32 && layout.total_sectors <= 0xffff;
  store_le16(s + 19, small ? static_cast<std::uint16_t>(layout.total_sectors) : 0);
  s[21] = media_fixed_disk;
  store_le16(s + 22, fat32 ? 0 : static_cast<std::uint16_t>(layout.fat_sectors));
  store_le16(s + 24, sectors_per_track);
  store_le16(s + 26, heads);
  store_le32(s + 28, 0);  // hidden sectors: no partition table in front
  store_le32(s + 32, small ? 0 : static_cast<std::uint32_t>(layout.total_sectors));
  std::uint8_t* extended = s + 36;
  if (fat32) {
    store_le32(s + 36, layout.fat_sectors);
    store_le16(s + 40, 0);  // both FATs mirrored
    store_le16(s + 42, 0);  // version 0.0
    store_le32(s + 44, fat32_root_cluster);
    store_le16(s + 48, fsinfo_sector);
    store_le16(s + 50, backup_boot_sector);
    extended = s + 64;
  }
  extended[0] = 0x80;  // drive number: a fixed disk
  extended[2] = 0x29;  // extended boot signature: id, label and type follow
  store_le32(extended + 3, options.volume_id);
  const auto label = label_field(options.label);
  std::memcpy(extended + 7, label.data(), label.size());
  std::memcpy(extended + 18, fat32 ? "FAT32   " : "FAT16   ", 8);
  // cli; hlt; jmp $-1
  const std::uint8_t halt[] = {0xfa, 0xf4, 0xeb, 0xfd};
  std::memcpy(s + boot_code_offset, halt, sizeof halt);
  s[510] = 0x55;
  s[511] = 0xaa;
  return sector;
}

std::vector<std::uint8_t> fsinfo(const FatLayout& layout) {
  std::vector<std::uint8_t> sector(sector_size, 0);
  store_le32(sector.data(), 0x41615252);
  store_le32(sector.data() + 484, 0x61417272);
  store_le32(sector.data() + 488, layout.cluster_count - 1);  // all but the root directory's cluster
  store_le32(sector.data() + 492, fat32_root_cluster + 1);
  store_le32(sector.data() + 508, 0xaa550000);
  return sector;
}

std::vector<std::uint8_t> first_fat_entries(const FatLayout& layout) {
  if (layout.type == FatType::fat32) {
    std::vector<std::uint8_t> bytes(12);
    store_le32(bytes.data(), 0x0fffff00 | media_fixed_disk);
    store_le32(bytes.data() + 4, 0x0fffffff);
    store_le32(bytes.data() + 8, 0x0ffffff8);  // the root directory: one cluster, end of chain
    return bytes;
  }
  std::vector<std::uint8_t> bytes(4);
  store_le16(bytes.data(), 0xff00 | media_fixed_disk);
  store_le16(bytes.data() + 2, 0xffff);
  return bytes;
}

}  // namespace

std::uint64_t FatLayout::data_offset() const {
  return (static_cast<std::uint64_t>(reserved_sectors) + 2ull * fat_sectors + root_entries * 32ull / sector_size) * sector_size;
}

FatLayout plan_fat_layout(std::uint64_t size_bytes, const FatFormatOptions& options) {
  const std::uint64_t total_sectors = size_bytes / sector_size;
  const FatType type = options.type.value_or(size_bytes >= fat32_default_from ? FatType::fat32 : FatType::fat16);
  if (type == FatType::fat12) throw Error("FAT12 is not supported for a new filesystem (FAT16 or FAT32 only)");
  if (total_sectors > 0xffffffffull) {
    throw Error("a FAT filesystem of " + describe_size(size_bytes) + " is larger than FAT's 2 TiB limit");
  }

  if (type == FatType::fat32) {
    const std::uint64_t size_mib = (size_bytes + MiB - 1) / MiB;
    std::uint32_t sectors_per_cluster = size_mib > 32768 ? 64 : size_mib > 16384 ? 32 : size_mib > 8192 ? 16 : size_mib > 260 ? 8 : 1;
    FatLayout layout = layout_with(type, total_sectors, sectors_per_cluster);
    // A FAT32 asked for below mkfs.fat's sizes: smaller clusters until the count is FAT32's.
    while (layout.cluster_count < fat32_min_clusters && sectors_per_cluster > 1) {
      sectors_per_cluster /= 2;
      layout = layout_with(type, total_sectors, sectors_per_cluster);
    }
    if (layout.cluster_count < fat32_min_clusters) {
      throw Error("a FAT32 filesystem of " + describe_size(size_bytes) + " would have " + std::to_string(layout.cluster_count) +
                  " clusters; FAT32 needs at least " + std::to_string(fat32_min_clusters) + " (about 33 MiB)");
    }
    if (layout.cluster_count > fat32_max_clusters) {
      throw Error("a FAT32 filesystem of " + describe_size(size_bytes) + " has too many clusters for FAT32");
    }
    return layout;
  }

  std::uint32_t sectors_per_cluster = 4;
  FatLayout layout = layout_with(type, total_sectors, sectors_per_cluster);
  while (layout.cluster_count > fat16_max_clusters && sectors_per_cluster < 64) {
    sectors_per_cluster *= 2;
    layout = layout_with(type, total_sectors, sectors_per_cluster);
  }
  // Where mkfs.fat would fall back to FAT12, smaller clusters keep it FAT16.
  while (layout.cluster_count < fat16_min_clusters && sectors_per_cluster > 1) {
    sectors_per_cluster /= 2;
    layout = layout_with(type, total_sectors, sectors_per_cluster);
  }
  if (layout.cluster_count > fat16_max_clusters) {
    throw Error("a FAT16 filesystem of " + describe_size(size_bytes) + " would need clusters over 32 KiB; use FAT32 (at most 2 GiB for FAT16)");
  }
  if (layout.cluster_count < fat16_min_clusters) {
    throw Error("a FAT16 filesystem of " + describe_size(size_bytes) + " would have " + std::to_string(layout.cluster_count) +
                " clusters; FAT16 needs at least " + std::to_string(fat16_min_clusters) + " (about 2.2 MiB)");
  }
  return layout;
}

std::vector<FatFormatWrite> empty_fat_structures(const FatLayout& layout, const FatFormatOptions& options) {
  std::vector<FatFormatWrite> writes;
  std::vector<std::uint8_t> boot = boot_sector(layout, options);
  writes.push_back({0, boot});
  if (layout.type == FatType::fat32) {
    std::vector<std::uint8_t> info = fsinfo(layout);
    writes.push_back({fsinfo_sector * sector_size, info});
    writes.push_back({backup_boot_sector * sector_size, boot});
    writes.push_back({(backup_boot_sector + fsinfo_sector) * sector_size, info});
  }
  // The label again as the root directory's first entry: fsck.fat treats a boot-sector label without
  // it as stale and drops it. Its date and time stay 0 (none), so the image does not depend on the clock.
  if (!options.label.empty()) {
    std::vector<std::uint8_t> label_entry(32, 0);
    const auto label = label_field(options.label);
    std::memcpy(label_entry.data(), label.data(), label.size());
    label_entry[11] = 0x08;  // volume label attribute
    const std::uint64_t root_offset =
        layout.type == FatType::fat32 ? layout.data_offset()
                                      : (static_cast<std::uint64_t>(layout.reserved_sectors) + 2ull * layout.fat_sectors) * sector_size;
    writes.push_back({root_offset, label_entry});
  }
  const std::vector<std::uint8_t> entries = first_fat_entries(layout);
  for (std::uint32_t fat = 0; fat < 2; ++fat) {
    const std::uint64_t offset = (static_cast<std::uint64_t>(layout.reserved_sectors) + fat * std::uint64_t{layout.fat_sectors}) * sector_size;
    writes.push_back({offset, entries});
  }
  return writes;
}

std::optional<std::uint64_t> fat_bytes_needed(const std::vector<FatContentItem>& items, const FatLayout& layout) {
  const std::uint64_t cluster = layout.cluster_size();
  auto clusters_of = [&](std::uint64_t bytes) { return (bytes + cluster - 1) / cluster * cluster; };
  // Directory entries per directory: one short entry, plus one long-name entry per 13 UTF-16 units
  // (bytes of UTF-8 are at least as many), for every name.
  std::map<std::string, std::uint64_t> slots_by_directory{{"", 0}};
  std::uint64_t bytes = 0;
  for (const FatContentItem& item : items) {
    const std::size_t slash = item.path.rfind('/');
    const std::string parent = slash == std::string::npos ? "" : item.path.substr(0, slash);
    const std::size_t name_length = item.path.size() - (slash == std::string::npos ? 0 : slash + 1);
    slots_by_directory[parent] += 1 + (name_length + 12) / 13;
    if (item.is_directory) {
      slots_by_directory.try_emplace(item.path, 0);
    } else {
      bytes += clusters_of(item.size);
    }
  }
  for (const auto& [directory, slots] : slots_by_directory) {
    if (directory.empty() && layout.type != FatType::fat32) {
      // The label entry takes one of the fixed root directory's entries.
      if (slots + 1 > layout.root_entries) return std::nullopt;
      continue;
    }
    // "." and ".." (or the root's label) and room for the end marker.
    bytes += clusters_of((slots + 3) * 32);
  }
  return bytes;
}

FatLayout plan_fat_layout_to_fit(const std::vector<FatContentItem>& items, std::uint64_t free_bytes, const FatFormatOptions& options) {
  FatFormatOptions chosen = options;
  std::uint64_t data = 0;
  for (const FatContentItem& item : items) data += item.size;
  // A first guess from the raw sizes, then grown until the layout of that size holds the items; the
  // cluster size (and so the rounding) changes with the size, hence the loop.
  std::uint64_t size = std::max<std::uint64_t>(4 * MiB, (data + free_bytes + MiB - 1) / MiB * MiB);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    if (chosen.type == FatType::fat32) size = std::max<std::uint64_t>(size, 40 * MiB);
    const FatLayout layout = plan_fat_layout(size, chosen);
    const std::optional<std::uint64_t> needed = fat_bytes_needed(items, layout);
    if (!needed) {
      chosen.type = FatType::fat32;  // too many names for FAT16's fixed root directory
      continue;
    }
    if (layout.data_bytes() >= *needed + free_bytes) return layout;
    const std::uint64_t missing = *needed + free_bytes - layout.data_bytes();
    size += std::max<std::uint64_t>(MiB, (missing + MiB - 1) / MiB * MiB);
  }
  throw Error("no FAT layout found for " + std::to_string(items.size()) + " files of " + describe_size(data));
}

FatLayout format_fat(BlockDevice& device, const FatFormatOptions& options) {
  const FatLayout layout = plan_fat_layout(device.size(), options);
  // Reserved sectors, both FATs, the root directory (FAT16's region or FAT32's first cluster): stale
  // bytes there would be read as FAT entries or directory entries.
  std::uint64_t metadata_end = layout.data_offset();
  if (layout.type == FatType::fat32) metadata_end += layout.cluster_size();
  const std::vector<std::uint8_t> zeros(1 << 20, 0);
  for (std::uint64_t offset = 0; offset < metadata_end;) {
    const std::uint64_t length = std::min<std::uint64_t>(zeros.size(), metadata_end - offset);
    device.write_at(offset, std::span<const std::uint8_t>(zeros.data(), length));
    offset += length;
  }
  for (const FatFormatWrite& write : empty_fat_structures(layout, options)) device.write_at(write.offset, write.bytes);
  device.flush();
  return layout;
}

}  // namespace aggrik8s
