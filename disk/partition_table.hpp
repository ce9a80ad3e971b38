#pragma once
// MBR ("msdos") and GPT partition tables of disk images, read and written in-process.
//
// Raspberry Pi OS base images are MBR with 512-byte sectors; GPT is read and written too (UEFI-booted
// Pi setups, NVMe images). Everything read is validated, because a builder that trusts a broken table
// writes a filesystem over someone else's partition: errors name the image, the partition and the
// offending value next to its limit.
//
// Extended (logical) MBR partitions are listed as their container entry only; their contents are not
// parsed (no Pi image uses them).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "disk/block_device.hpp"

namespace aggrik8s {

inline constexpr std::uint32_t partition_sector_size = 512;

// A GUID as stored in GPT (first three fields little-endian). Text form is lowercase, as Linux shows
// PARTUUIDs for GPT partitions.
struct Guid {
  std::array<std::uint8_t, 16> bytes{};

  // "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", either case; nullopt if malformed.
  static std::optional<Guid> parse(std::string_view text);
  static Guid random();  // version 4
  std::string to_string() const;
  bool is_zero() const;
  friend bool operator==(const Guid&, const Guid&) = default;
};

enum class PartitionTableKind { mbr, gpt };

struct PartitionEntry {
  std::uint32_t index = 0;  // 1-based, as in /dev/sda1 and PARTUUID ...-01
  std::uint8_t mbr_type = 0;  // MBR only: 0x0c FAT32 LBA, 0x83 Linux, ...
  Guid gpt_type;              // GPT only
  Guid gpt_unique;            // GPT only: the partition's PARTUUID
  std::uint64_t gpt_attributes = 0;
  std::string gpt_name;  // GPT only, UTF-8
  std::uint64_t first_lba = 0;
  std::uint64_t sector_count = 0;
  bool bootable = false;  // MBR 0x80 status; GPT "legacy BIOS bootable" attribute (bit 2)

  std::uint64_t end_lba() const { return first_lba + sector_count; }  // exclusive
  std::uint64_t byte_offset() const { return first_lba * partition_sector_size; }
  std::uint64_t byte_size() const { return sector_count * partition_sector_size; }
};

class PartitionTable {
 public:
  // Empty tables for new images. disk_bytes must be a multiple of 512.
  static PartitionTable new_mbr(std::uint64_t disk_bytes, std::uint32_t disk_id, std::string image_name);
  static PartitionTable new_gpt(std::uint64_t disk_bytes, const Guid& disk_guid, std::string image_name);

  PartitionTableKind kind() const { return kind_; }
  const std::string& image_name() const { return image_name_; }
  std::uint64_t disk_sectors() const { return disk_sectors_; }
  const std::vector<PartitionEntry>& partitions() const { return partitions_; }
  // Throws Error naming the image if there is no partition with that index.
  const PartitionEntry& partition(std::uint32_t index) const;

  // MBR: 8 lowercase hex digits of the 32-bit id at offset 440. GPT: the disk GUID.
  std::string disk_identifier() const;
  std::uint32_t mbr_disk_id() const { return mbr_disk_id_; }
  const Guid& gpt_disk_guid() const { return gpt_disk_guid_; }
  // As Linux shows it in /dev/disk/by-partuuid and root=PARTUUID=: MBR "a1b2c3d4-02", GPT the
  // partition's unique GUID.
  std::string partuuid(std::uint32_t index) const;

  // Accepts the text form of the table's kind ("a1b2c3d4" or a GUID); throws Error otherwise.
  void set_disk_identifier(std::string_view text);
  void set_mbr_disk_id(std::uint32_t id);
  void set_gpt_disk_guid(const Guid& guid);

  // Changes the size of partition `index`; throws Error if it would overlap the next partition or run
  // past the last usable sector.
  void resize_partition(std::uint32_t index, std::uint64_t new_sector_count);
  // Grows partition `index` up to the next partition or the end of the usable area.
  void grow_partition_to_fill(std::uint32_t index);
  // After the image file was resized: moves the GPT backup structures to the new end and recomputes
  // the last usable sector. Shrinking below the end of a partition is an error.
  void set_disk_size(std::uint64_t disk_bytes);

  // New tables only need this; inserted in index order. Throws Error on overlap or out-of-range.
  void add_partition(PartitionEntry entry);

  // GPT usable area [first, last]; MBR: [1, disk_sectors - 1].
  std::uint64_t first_usable_lba() const { return first_usable_lba_; }
  std::uint64_t last_usable_lba() const { return last_usable_lba_; }

 private:
  friend PartitionTable read_partition_table(BlockDevice& device);
  friend void write_partition_table(BlockDevice& device, const PartitionTable& table);
  PartitionEntry& mutable_partition(std::uint32_t index);
  void validate() const;
  std::string describe(const PartitionEntry& entry) const;

  PartitionTableKind kind_ = PartitionTableKind::mbr;
  std::string image_name_;
  std::uint64_t disk_sectors_ = 0;
  std::vector<PartitionEntry> partitions_;
  std::uint32_t mbr_disk_id_ = 0;
  // The MBR's first 440 bytes (boot code) are kept as read, so writing back preserves them.
  std::array<std::uint8_t, 440> mbr_boot_code_{};
  Guid gpt_disk_guid_;
  std::uint64_t first_usable_lba_ = 0;
  std::uint64_t last_usable_lba_ = 0;
  std::uint64_t gpt_entries_lba_ = 2;
  std::uint32_t gpt_entry_count_ = 128;
  std::uint32_t gpt_entry_size_ = 128;
  // Where the backup header was when read; cleared on write if it moved and is not inside a partition.
  std::uint64_t gpt_old_backup_lba_ = 0;
};

// Reads and validates the table; errors name device.name().
PartitionTable read_partition_table(BlockDevice& device);
// Writes the MBR (or protective MBR + both GPT copies with fresh CRC32s). The table must describe a
// disk of exactly device.size() bytes (call set_disk_size after resizing the image).
void write_partition_table(BlockDevice& device, const PartitionTable& table);

// A view of one partition, named "<image> partition N" for error messages.
SubrangeBlockDevice open_partition(BlockDevice& device, const PartitionTable& table, std::uint32_t index);

// CRC-32 (IEEE 802.3, as GPT uses it).
std::uint32_t crc32(std::span<const std::uint8_t> data);

}  // namespace aggrik8s
