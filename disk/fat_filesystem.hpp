#pragma once
// FAT12/16/32 with VFAT long names, read and written in-process on a BlockDevice (normally the boot
// partition of an image, via open_partition). No mount, no loop device, no root, no mtools.
//
// What the image builder needs from the Pi boot partition: read and rewrite cmdline.txt/config.txt,
// drop firstrun.sh or cloud-init files, add overlays/*.dtbo, replace kernel images. Every mutating call
// leaves the filesystem consistent on the device when it returns (both FATs, FSInfo, directories), so
// there is no close()/flush() to forget.
//
// Names are looked up case-insensitively (ASCII letters only, as the Pi firmware does). New names that
// are not plain upper-case 8.3 get LFN entries plus a unique "BASE~N.EXT" short name.
// Timestamps are written in UTC from a fixed time set with set_timestamp (SOURCE_DATE_EPOCH for
// reproducible builds) or, by default, the time the filesystem was opened.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/block_device.hpp"
#include "disk/data_extent.hpp"

namespace aggrik8s {

enum class FatType { fat12, fat16, fat32 };

struct FatDirectoryEntry {
  std::string name;        // the long name if there is one, else the 8.3 name ("CONFIG.TXT")
  std::string short_name;  // always the 8.3 name, upper case as stored
  bool is_directory = false;
  std::uint32_t size = 0;
  std::uint32_t first_cluster = 0;
  std::uint8_t attributes = 0;
  std::int64_t modified_time = 0;  // Unix seconds, read as UTC
};

// Throws Error (prefixed by `context`) unless `name` can be one component of a VFAT path: no control
// characters or "*/:<>?\|, not ending in '.' or ' ', at most 255 bytes. What write_file checks, for
// callers that must refuse a name before they write anything (flash --file).
void validate_fat_long_name(std::string_view name, const std::string& context);

class FatFilesystem {
 public:
  // Reads and validates the boot sector and the FAT; throws Error naming the device.
  explicit FatFilesystem(BlockDevice& device);

  FatType type() const { return type_; }
  // Root directory label entry if present, else the boot sector's; trailing spaces removed, "" if none.
  std::string volume_label() const { return volume_label_; }
  std::uint32_t cluster_size() const { return cluster_size_; }
  std::uint64_t free_bytes() const { return static_cast<std::uint64_t>(free_clusters_) * cluster_size_; }
  std::uint64_t total_data_bytes() const { return static_cast<std::uint64_t>(cluster_count_) * cluster_size_; }

  // Used for every entry created or modified from now on.
  void set_timestamp(std::int64_t unix_seconds) { timestamp_ = unix_seconds; }

  // Paths are '/'-separated, relative to the root ("overlays/x.dtbo", "/cmdline.txt" alike).
  std::optional<FatDirectoryEntry> stat(std::string_view path);
  bool exists(std::string_view path) { return stat(path).has_value(); }
  std::vector<std::uint8_t> read_file(std::string_view path);
  // Where a file's bytes lie on the device, in file order: runs of contiguous clusters, the last cut
  // at the file's size (an empty file has none). For callers that patch a few bytes of a file in a
  // copy of the device instead of rewriting the whole file (the Talos build's per-node ISOs).
  struct Extent {
    std::uint64_t file_offset = 0;
    std::uint64_t device_offset = 0;
    std::uint64_t length = 0;
  };
  std::vector<Extent> file_extents(std::string_view path);
  std::string read_text_file(std::string_view path);
  // Entries other than "." and ".." and the volume label, in directory order.
  std::vector<FatDirectoryEntry> list_directory(std::string_view path);

  // Creates or replaces the file; the parent directory must exist.
  void write_file(std::string_view path, std::span<const std::uint8_t> content);
  void write_file(std::string_view path, std::string_view content);
  // Like mkdir -p: existing directories are fine, an existing file in the way is an error.
  void make_directories(std::string_view path);
  // Removes a file or an empty directory.
  void remove(std::string_view path);

  // The byte ranges of the device the filesystem uses (relative to its start): the boot sector,
  // reserved sectors, FATs and FAT12/16 root directory, and every cluster the FAT marks as not free.
  // These must reach a card even where they are all zeros (a free-cluster run in a FAT, an empty
  // directory cluster): the card's old bytes there would be read as allocations.
  std::vector<DataExtent> used_ranges() const;

 private:
  struct Directory;
  struct Located;

  std::string where(std::string_view path) const;
  std::uint64_t cluster_offset(std::uint32_t cluster) const;
  std::uint32_t fat_entry(std::uint32_t cluster) const;
  void set_fat_entry(std::uint32_t cluster, std::uint32_t value);
  bool is_end_of_chain(std::uint32_t value) const;
  std::vector<std::uint32_t> cluster_chain(std::uint32_t first, std::string_view path) const;
  std::vector<std::uint32_t> allocate_clusters(std::uint32_t count, std::string_view path);
  void free_chain(const std::vector<std::uint32_t>& chain);
  void link_chain(const std::vector<std::uint32_t>& chain);
  void write_clusters(const std::vector<std::uint32_t>& chain, std::span<const std::uint8_t> content);
  void commit();

  Directory load_directory(std::uint32_t first_cluster, std::string_view path);
  void store_directory(const Directory& directory);
  void grow_directory(Directory& directory, std::size_t slots_needed);
  Directory open_directory(std::string_view path);
  std::vector<Located> entries_of(const Directory& directory) const;
  std::optional<Located> find_in(const Directory& directory, std::string_view name) const;
  std::optional<Directory> find_directory(const std::vector<std::string>& components);
  std::size_t add_entry(Directory& directory, std::string_view name, std::uint8_t attributes,
                        std::uint32_t first_cluster, std::uint32_t size);

  BlockDevice& device_;
  FatType type_ = FatType::fat32;
  std::uint32_t bytes_per_sector_ = 512;
  std::uint32_t cluster_size_ = 0;
  std::uint32_t reserved_sectors_ = 0;
  std::uint32_t fat_count_ = 0;
  std::uint32_t active_fat_ = 0;
  bool fats_mirrored_ = true;
  std::uint32_t fat_sectors_ = 0;
  std::uint64_t root_directory_offset_ = 0;  // FAT12/16 fixed root region
  std::uint32_t root_directory_entries_ = 0;
  std::uint64_t data_offset_ = 0;
  std::uint32_t cluster_count_ = 0;
  std::uint32_t root_cluster_ = 0;  // FAT32
  std::uint32_t fsinfo_sector_ = 0;  // FAT32; 0 when absent or invalid
  std::string volume_label_;
  std::vector<std::uint8_t> fat_;  // the active FAT, in memory
  std::size_t fat_dirty_begin_ = 0;
  std::size_t fat_dirty_end_ = 0;
  std::uint32_t free_clusters_ = 0;
  std::uint32_t next_free_hint_ = 2;
  std::int64_t timestamp_ = 0;
};

}  // namespace aggrik8s
