#pragma once
// Formatting an empty FAT16 or FAT32 filesystem in-process, as mkfs.fat would, so a build can write a
// FAT image (the Pi 5's HTTP boot.img) without dosfstools, root or a loop device. The filesystem
// starts at byte 0 of the device ("superfloppy": no partition table), which is what the Pi
// bootloader's ramdisk and secure boot's boot.img are. FatFilesystem (disk/fat_filesystem.hpp) then
// writes the files into it.
//
// The layout follows dosfstools' choices so the result looks like what users know: FAT32 from
// 512 MiB up (below that FAT16), FAT32 clusters of 512 bytes up to 260 MiB and 4 KiB above (Microsoft's
// table in fatgen103), FAT16 clusters starting at 2 KiB and doubled until there are at most 65524;
// reserved sectors, the FATs and the FAT16 root directory sized in whole clusters so the data area
// (and so every file) starts cluster-aligned. FAT12 is never written: boot.img holds more than
// FAT12's 32 MiB limit in practice, and one fewer format keeps the reader side simple.
//
// Nothing depends on the clock or the machine: the volume id is given, so the same options give the
// same bytes (reproducible builds).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"

namespace aggrik8s {

struct FatFormatOptions {
  std::string label;                // up to 11 characters valid in a short name; stored upper case; "" -> NO NAME
  std::uint32_t volume_id = 0;      // the serial number; fixed so the image is reproducible
  std::optional<FatType> type;      // fat16 or fat32; default chosen from the size as mkfs.fat does
};

// Where everything of an empty FAT filesystem of a given size goes. Sizes in 512-byte sectors.
struct FatLayout {
  FatType type = FatType::fat16;
  std::uint64_t total_sectors = 0;
  std::uint32_t sectors_per_cluster = 0;
  std::uint32_t reserved_sectors = 0;
  std::uint32_t fat_sectors = 0;        // one FAT; there are two
  std::uint32_t root_entries = 0;       // FAT16's fixed root directory; 0 for FAT32 (root in cluster 2)
  std::uint32_t cluster_count = 0;

  std::uint32_t cluster_size() const { return sectors_per_cluster * 512; }
  std::uint64_t data_offset() const;    // byte offset of cluster 2
  // Bytes available to files and directories (all clusters; FAT32's root directory takes one).
  std::uint64_t data_bytes() const { return static_cast<std::uint64_t>(cluster_count) * cluster_size(); }
};

inline constexpr std::uint32_t fat16_min_clusters = 4085;
inline constexpr std::uint32_t fat16_max_clusters = 65524;
inline constexpr std::uint32_t fat32_min_clusters = 65525;

// The layout mkfs.fat would choose for `size_bytes` (rounded down to whole sectors). Throws Error
// naming the size and the limit when no FAT16/FAT32 filesystem of that size exists (below ~2 MiB, a
// FAT32 asked for below ~33 MiB, FAT16 above 2 GiB).
FatLayout plan_fat_layout(std::uint64_t size_bytes, const FatFormatOptions& options);

// One run of bytes of the empty filesystem; every byte of [0, data_offset()) (plus FAT32's root
// cluster) not covered by one is zero.
struct FatFormatWrite {
  std::uint64_t offset = 0;
  std::vector<std::uint8_t> bytes;
};

// Pure: the non-zero structures of the empty filesystem (boot sector, FSInfo and their FAT32 backups,
// the first FAT entries of both FATs). Throws Error naming the label when it cannot be one.
std::vector<FatFormatWrite> empty_fat_structures(const FatLayout& layout, const FatFormatOptions& options);

// What is to go into a new filesystem, for sizing it before writing: names and sizes only.
struct FatContentItem {
  std::string path;  // '/'-separated from the root
  bool is_directory = false;
  std::uint64_t size = 0;
};

// The clusters (in bytes) `items` take on a filesystem of `layout`: files rounded up to whole
// clusters, every directory (FAT32's root too) sized for its entries as if every name needed long-name
// entries. nullopt when a FAT16 root directory has fewer entries than the root's names need.
std::optional<std::uint64_t> fat_bytes_needed(const std::vector<FatContentItem>& items, const FatLayout& layout);

// The smallest layout (in whole MiB) with room for `items` plus `free_bytes` to spare, chosen as
// plan_fat_layout would for its size (FAT32 when the FAT16 root directory cannot hold the names).
FatLayout plan_fat_layout_to_fit(const std::vector<FatContentItem>& items, std::uint64_t free_bytes, const FatFormatOptions& options);

// Formats the whole device: zeroes the metadata area, then writes empty_fat_structures. The device's
// size is the filesystem's. Returns the layout used.
FatLayout format_fat(BlockDevice& device, const FatFormatOptions& options);

}  // namespace aggrik8s
