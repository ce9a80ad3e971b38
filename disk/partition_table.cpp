#include "disk/partition_table.hpp"

#include <algorithm>
#include <cctype>
#include <utility>
#include <cstdio>
#include <random>

#include "disk/zero_detection.hpp"
#include "core/endian.hpp"
#include "core/error.hpp"

namespace aggrik8s {

namespace {

constexpr std::uint64_t sector = partition_sector_size;
constexpr std::size_t mbr_disk_id_offset = 440;
constexpr std::size_t mbr_entries_offset = 446;
constexpr std::size_t mbr_signature_offset = 510;
constexpr std::uint8_t mbr_type_gpt_protective = 0xee;
constexpr std::uint64_t gpt_header_size = 92;
constexpr std::uint64_t gpt_legacy_bootable_attribute = 1ULL << 2;
constexpr std::uint64_t gpt_max_entry_array_bytes = 1024 * 1024;
constexpr char gpt_signature[] = "EFI PART";

std::string hex8(std::uint32_t value) {
  char text[9];
  std::snprintf(text, sizeof text, "%08x", value);
  return text;
}

std::string hex_byte(std::uint32_t value) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", value);
  return text;
}

// CHS fields are obsolete but still written, in the 255-head/63-sector geometry fdisk and sfdisk use;
// addresses beyond what CHS can express get the conventional "maximum" value.
std::array<std::uint8_t, 3> lba_to_chs(std::uint64_t lba) {
  constexpr std::uint64_t heads = 255;
  constexpr std::uint64_t sectors_per_track = 63;
  if (lba >= 1024 * heads * sectors_per_track) return {0xfe, 0xff, 0xff};
  std::uint64_t cylinder = lba / (heads * sectors_per_track);
  std::uint64_t head = (lba / sectors_per_track) % heads;
  std::uint64_t sector_number = lba % sectors_per_track + 1;
  return {static_cast<std::uint8_t>(head),
          static_cast<std::uint8_t>(sector_number | ((cylinder >> 2) & 0xc0)),
          static_cast<std::uint8_t>(cylinder & 0xff)};
}

std::string utf16le_name_to_utf8(std::span<const std::uint8_t> bytes) {
  std::string out;
  for (std::size_t i = 0; i + 1 < bytes.size(); i += 2) {
    std::uint32_t unit = load_le16(bytes, i);
    if (unit == 0) break;
    if (unit >= 0xd800 && unit <= 0xdbff && i + 3 < bytes.size()) {
      std::uint32_t low = load_le16(bytes, i + 2);
      if (low >= 0xdc00 && low <= 0xdfff) {
        unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
        i += 2;
      }
    }
    if (unit < 0x80) {
      out += static_cast<char>(unit);
    } else if (unit < 0x800) {
      out += static_cast<char>(0xc0 | (unit >> 6));
      out += static_cast<char>(0x80 | (unit & 0x3f));
    } else if (unit < 0x10000) {
      out += static_cast<char>(0xe0 | (unit >> 12));
      out += static_cast<char>(0x80 | ((unit >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (unit & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (unit >> 18));
      out += static_cast<char>(0x80 | ((unit >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((unit >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (unit & 0x3f));
    }
  }
  return out;
}

// GPT names are short labels; non-ASCII is carried over as '?' rather than pulling in a UTF-8 decoder.
void store_gpt_name(std::span<std::uint8_t> field, const std::string& name) {
  std::fill(field.begin(), field.end(), 0);
  std::size_t units = std::min(name.size(), field.size() / 2);
  for (std::size_t i = 0; i < units; ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    store_le16(field, i * 2, c < 0x80 ? c : static_cast<std::uint16_t>('?'));
  }
}

Guid load_guid(std::span<const std::uint8_t> bytes, std::size_t offset) {
  Guid guid;
  std::copy_n(bytes.begin() + static_cast<std::ptrdiff_t>(offset), 16, guid.bytes.begin());
  return guid;
}

void store_guid(std::span<std::uint8_t> bytes, std::size_t offset, const Guid& guid) {
  std::copy(guid.bytes.begin(), guid.bytes.end(), bytes.begin() + static_cast<std::ptrdiff_t>(offset));
}

std::uint64_t gpt_entry_array_sectors(std::uint32_t count, std::uint32_t size) {
  return (static_cast<std::uint64_t>(count) * size + sector - 1) / sector;
}

}  // namespace

std::uint32_t crc32(std::span<const std::uint8_t> data) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320U ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t crc = 0xffffffffU;
  for (std::uint8_t byte : data) crc = table[(crc ^ byte) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffU;
}

// ---- Guid ----

std::optional<Guid> Guid::parse(std::string_view text) {
  if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' || text[23] != '-') {
    return std::nullopt;
  }
  std::array<std::uint8_t, 16> big_endian{};
  std::size_t nibble = 0;
  for (char c : text) {
    if (c == '-') continue;
    int value = 0;
    if (c >= '0' && c <= '9') {
      value = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      value = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      value = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    auto& byte = big_endian[nibble / 2];
    byte = static_cast<std::uint8_t>(byte | (nibble % 2 == 0 ? value << 4 : value));
    ++nibble;
  }
  // The text form is big-endian; GPT stores the first three fields little-endian.
  Guid guid;
  constexpr std::array<std::size_t, 16> order{3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  for (std::size_t i = 0; i < 16; ++i) guid.bytes[i] = big_endian[order[i]];
  return guid;
}

Guid Guid::random() {
  std::random_device device;
  Guid guid;
  for (std::size_t i = 0; i < 16; i += 4) {
    std::uint32_t value = device();
    store_le32(guid.bytes.data() + i, value);
  }
  // Stored byte 7 is the high byte of the third field (version); byte 8 holds the variant.
  guid.bytes[7] = static_cast<std::uint8_t>((guid.bytes[7] & 0x0f) | 0x40);
  guid.bytes[8] = static_cast<std::uint8_t>((guid.bytes[8] & 0x3f) | 0x80);
  return guid;
}

std::string Guid::to_string() const {
  constexpr std::array<std::size_t, 16> order{3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  static constexpr char digits[] = "0123456789abcdef";
  std::string text;
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) text += '-';
    std::uint8_t byte = bytes[order[i]];
    text += digits[byte >> 4];
    text += digits[byte & 0x0f];
  }
  return text;
}

bool Guid::is_zero() const { return is_all_zero(bytes); }

// ---- PartitionTable ----

PartitionTable PartitionTable::new_mbr(std::uint64_t disk_bytes, std::uint32_t disk_id, std::string image_name) {
  PartitionTable table;
  table.kind_ = PartitionTableKind::mbr;
  table.image_name_ = std::move(image_name);
  table.mbr_disk_id_ = disk_id;
  table.set_disk_size(disk_bytes);
  return table;
}

PartitionTable PartitionTable::new_gpt(std::uint64_t disk_bytes, const Guid& disk_guid, std::string image_name) {
  PartitionTable table;
  table.kind_ = PartitionTableKind::gpt;
  table.image_name_ = std::move(image_name);
  table.gpt_disk_guid_ = disk_guid;
  table.first_usable_lba_ = table.gpt_entries_lba_ + gpt_entry_array_sectors(table.gpt_entry_count_,
                                                                              table.gpt_entry_size_);
  table.set_disk_size(disk_bytes);
  table.gpt_old_backup_lba_ = table.disk_sectors_ - 1;
  return table;
}

std::string PartitionTable::describe(const PartitionEntry& entry) const {
  return image_name_ + ": partition " + std::to_string(entry.index);
}

const PartitionEntry& PartitionTable::partition(std::uint32_t index) const {
  for (const auto& entry : partitions_) {
    if (entry.index == index) return entry;
  }
  std::string present;
  for (const auto& entry : partitions_) present += (present.empty() ? "" : ", ") + std::to_string(entry.index);
  throw Error(image_name_ + ": no partition " + std::to_string(index) + " (partitions present: " +
              (present.empty() ? "none" : present) + ")");
}

PartitionEntry& PartitionTable::mutable_partition(std::uint32_t index) {
  return const_cast<PartitionEntry&>(std::as_const(*this).partition(index));
}

std::string PartitionTable::disk_identifier() const {
  return kind_ == PartitionTableKind::mbr ? hex8(mbr_disk_id_) : gpt_disk_guid_.to_string();
}

std::string PartitionTable::partuuid(std::uint32_t index) const {
  const PartitionEntry& entry = partition(index);
  if (kind_ == PartitionTableKind::gpt) return entry.gpt_unique.to_string();
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "-%02x", static_cast<unsigned>(index));
  return hex8(mbr_disk_id_) + suffix;
}

void PartitionTable::set_disk_identifier(std::string_view text) {
  if (kind_ == PartitionTableKind::gpt) {
    auto guid = Guid::parse(text);
    if (!guid) throw Error(image_name_ + ": disk identifier '" + std::string(text) + "' is not a GUID");
    set_gpt_disk_guid(*guid);
    return;
  }
  std::string_view digits = text;
  if (digits.starts_with("0x") || digits.starts_with("0X")) digits.remove_prefix(2);
  bool valid = !digits.empty() && digits.size() <= 8 &&
               std::all_of(digits.begin(), digits.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  if (!valid) {
    throw Error(image_name_ + ": MBR disk identifier '" + std::string(text) + "' is not 1 to 8 hex digits");
  }
  set_mbr_disk_id(static_cast<std::uint32_t>(std::stoul(std::string(digits), nullptr, 16)));
}

void PartitionTable::set_mbr_disk_id(std::uint32_t id) {
  if (kind_ != PartitionTableKind::mbr) throw Error(image_name_ + ": not an MBR partition table");
  mbr_disk_id_ = id;
}

void PartitionTable::set_gpt_disk_guid(const Guid& guid) {
  if (kind_ != PartitionTableKind::gpt) throw Error(image_name_ + ": not a GPT partition table");
  gpt_disk_guid_ = guid;
}

void PartitionTable::resize_partition(std::uint32_t index, std::uint64_t new_sector_count) {
  PartitionEntry& entry = mutable_partition(index);
  if (new_sector_count == 0) throw Error(describe(entry) + ": cannot be resized to 0 sectors");
  if (kind_ == PartitionTableKind::mbr && new_sector_count > 0xffffffffULL) {
    throw Error(describe(entry) + ": " + std::to_string(new_sector_count) +
                " sectors does not fit in an MBR entry (at most 4294967295)");
  }
  std::uint64_t new_end = entry.first_lba + new_sector_count;
  if (new_end > last_usable_lba_ + 1) {
    throw Error(describe(entry) + ": new size of " + std::to_string(new_sector_count) +
                " sectors would end at sector " + std::to_string(new_end) + ", past the last usable sector " +
                std::to_string(last_usable_lba_) + " of the disk");
  }
  for (const auto& other : partitions_) {
    if (other.index == index) continue;
    if (other.first_lba < new_end && entry.first_lba < other.end_lba()) {
      throw Error(describe(entry) + ": new size of " + std::to_string(new_sector_count) +
                  " sectors would end at sector " + std::to_string(new_end) + " and overlap partition " +
                  std::to_string(other.index) + " which starts at sector " + std::to_string(other.first_lba));
    }
  }
  entry.sector_count = new_sector_count;
}

void PartitionTable::grow_partition_to_fill(std::uint32_t index) {
  const PartitionEntry& entry = partition(index);
  std::uint64_t limit = last_usable_lba_ + 1;
  for (const auto& other : partitions_) {
    if (other.index != index && other.first_lba >= entry.end_lba()) limit = std::min(limit, other.first_lba);
  }
  std::uint64_t count = limit - entry.first_lba;
  if (kind_ == PartitionTableKind::mbr) count = std::min<std::uint64_t>(count, 0xffffffffULL);
  resize_partition(index, count);
}

void PartitionTable::set_disk_size(std::uint64_t disk_bytes) {
  if (disk_bytes % sector != 0) {
    throw Error(image_name_ + ": disk size " + std::to_string(disk_bytes) + " is not a multiple of " +
                std::to_string(sector) + " bytes");
  }
  std::uint64_t sectors = disk_bytes / sector;
  std::uint64_t first_usable = 1;
  std::uint64_t last_usable = sectors == 0 ? 0 : sectors - 1;
  if (kind_ == PartitionTableKind::gpt) {
    std::uint64_t array_sectors = gpt_entry_array_sectors(gpt_entry_count_, gpt_entry_size_);
    first_usable = first_usable_lba_;
    // Backup header in the last sector, backup entry array right before it.
    if (sectors < first_usable + array_sectors + 2) {
      throw Error(image_name_ + ": disk of " + std::to_string(sectors) + " sectors is too small for GPT (needs " +
                  std::to_string(first_usable + array_sectors + 2) + ")");
    }
    last_usable = sectors - 2 - array_sectors;
  } else if (sectors < 2) {
    throw Error(image_name_ + ": disk of " + std::to_string(sectors) + " sectors is too small for an MBR");
  }
  for (const auto& entry : partitions_) {
    if (entry.end_lba() > last_usable + 1) {
      throw Error(describe(entry) + ": ends at sector " + std::to_string(entry.end_lba()) +
                  ", past the last usable sector " + std::to_string(last_usable) + " of a disk of " +
                  std::to_string(disk_bytes) + " bytes");
    }
  }
  disk_sectors_ = sectors;
  first_usable_lba_ = first_usable;
  last_usable_lba_ = last_usable;
}

void PartitionTable::add_partition(PartitionEntry entry) {
  std::uint32_t max_index = kind_ == PartitionTableKind::mbr ? 4 : gpt_entry_count_;
  if (entry.index < 1 || entry.index > max_index) {
    throw Error(image_name_ + ": partition index " + std::to_string(entry.index) + " is outside 1.." +
                std::to_string(max_index));
  }
  for (const auto& other : partitions_) {
    if (other.index == entry.index) {
      throw Error(describe(entry) + ": already exists");
    }
  }
  if (kind_ == PartitionTableKind::gpt && entry.gpt_unique.is_zero()) entry.gpt_unique = Guid::random();
  auto saved = partitions_;
  partitions_.push_back(entry);
  std::sort(partitions_.begin(), partitions_.end(),
            [](const PartitionEntry& a, const PartitionEntry& b) { return a.index < b.index; });
  try {
    validate();
  } catch (...) {
    partitions_ = std::move(saved);
    throw;
  }
}

void PartitionTable::validate() const {
  for (const auto& entry : partitions_) {
    if (entry.sector_count == 0) throw Error(describe(entry) + ": has 0 sectors");
    if (kind_ == PartitionTableKind::gpt && entry.gpt_type.is_zero()) {
      throw Error(describe(entry) + ": has no type GUID");
    }
    if (kind_ == PartitionTableKind::mbr && entry.mbr_type == 0) throw Error(describe(entry) + ": has type 0x00");
    if (entry.first_lba < first_usable_lba_) {
      throw Error(describe(entry) + ": starts at sector " + std::to_string(entry.first_lba) +
                  ", before the first usable sector " + std::to_string(first_usable_lba_));
    }
    if (kind_ == PartitionTableKind::mbr && (entry.first_lba > 0xffffffffULL || entry.sector_count > 0xffffffffULL)) {
      throw Error(describe(entry) + ": start " + std::to_string(entry.first_lba) + " or size " +
                  std::to_string(entry.sector_count) + " does not fit in 32 bits");
    }
    if (entry.end_lba() > last_usable_lba_ + 1) {
      throw Error(describe(entry) + ": ends at sector " + std::to_string(entry.end_lba()) + " (start " +
                  std::to_string(entry.first_lba) + " + " + std::to_string(entry.sector_count) +
                  " sectors), past the last usable sector " + std::to_string(last_usable_lba_) +
                  " of the disk (" + std::to_string(disk_sectors_) + " sectors)");
    }
    for (const auto& other : partitions_) {
      if (other.index <= entry.index) continue;
      if (other.first_lba < entry.end_lba() && entry.first_lba < other.end_lba()) {
        throw Error(describe(entry) + ": sectors " + std::to_string(entry.first_lba) + ".." +
                    std::to_string(entry.end_lba() - 1) + " overlap partition " + std::to_string(other.index) +
                    " at sectors " + std::to_string(other.first_lba) + ".." + std::to_string(other.end_lba() - 1));
      }
    }
  }
}

// ---- reading and writing ----

namespace {

std::vector<std::uint8_t> read_sectors(BlockDevice& device, std::uint64_t lba, std::uint64_t count) {
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(count * sector));
  device.read_at(lba * sector, bytes);
  return bytes;
}

struct GptHeader {
  std::uint64_t my_lba = 0;
  std::uint64_t alternate_lba = 0;
  std::uint64_t first_usable = 0;
  std::uint64_t last_usable = 0;
  Guid disk_guid;
  std::uint64_t entries_lba = 0;
  std::uint32_t entry_count = 0;
  std::uint32_t entry_size = 0;
  std::uint32_t entries_crc = 0;
};

GptHeader parse_gpt_header(const std::string& image, std::span<const std::uint8_t> block, std::uint64_t disk_sectors) {
  const std::string where = image + ": GPT header at sector 1";
  if (!std::equal(block.begin(), block.begin() + 8, gpt_signature)) {
    throw Error(where + ": signature is not \"EFI PART\" (the protective MBR promises a GPT)");
  }
  std::uint32_t header_size = load_le32(block, 12);
  if (header_size < gpt_header_size || header_size > sector) {
    throw Error(where + ": header size " + std::to_string(header_size) + " is outside " +
                std::to_string(gpt_header_size) + ".." + std::to_string(sector));
  }
  std::vector<std::uint8_t> copy(block.begin(), block.begin() + header_size);
  std::uint32_t stored_crc = load_le32(copy, 16);
  store_le32(copy, 16, 0);
  std::uint32_t actual_crc = crc32(copy);
  if (stored_crc != actual_crc) {
    throw Error(where + ": header CRC32 is " + hex8(stored_crc) + " but the header hashes to " + hex8(actual_crc));
  }
  GptHeader header;
  header.my_lba = load_le64(block, 24);
  header.alternate_lba = load_le64(block, 32);
  header.first_usable = load_le64(block, 40);
  header.last_usable = load_le64(block, 48);
  header.disk_guid = load_guid(block, 56);
  header.entries_lba = load_le64(block, 72);
  header.entry_count = load_le32(block, 80);
  header.entry_size = load_le32(block, 84);
  header.entries_crc = load_le32(block, 88);
  if (header.my_lba != 1) throw Error(where + ": says it is at sector " + std::to_string(header.my_lba));
  if (header.alternate_lba >= disk_sectors || header.alternate_lba < 2) {
    throw Error(where + ": backup header sector " + std::to_string(header.alternate_lba) +
                " is outside the disk (" + std::to_string(disk_sectors) + " sectors)");
  }
  if (header.entry_size < 128 || header.entry_size % 8 != 0 || header.entry_count == 0 ||
      static_cast<std::uint64_t>(header.entry_count) * header.entry_size > gpt_max_entry_array_bytes) {
    throw Error(where + ": entry array of " + std::to_string(header.entry_count) + " entries of " +
                std::to_string(header.entry_size) + " bytes is not plausible (entries at least 128 bytes, " +
                "array at most " + std::to_string(gpt_max_entry_array_bytes) + " bytes)");
  }
  std::uint64_t array_end = header.entries_lba + gpt_entry_array_sectors(header.entry_count, header.entry_size);
  if (header.entries_lba < 2 || array_end > header.first_usable) {
    throw Error(where + ": entry array at sectors " + std::to_string(header.entries_lba) + ".." +
                std::to_string(array_end - 1) + " is not between the header and the first usable sector " +
                std::to_string(header.first_usable));
  }
  if (header.first_usable > header.last_usable || header.last_usable >= disk_sectors) {
    throw Error(where + ": usable sectors " + std::to_string(header.first_usable) + ".." +
                std::to_string(header.last_usable) + " do not fit in the disk (" + std::to_string(disk_sectors) +
                " sectors)");
  }
  return header;
}

}  // namespace

PartitionTable read_partition_table(BlockDevice& device) {
  PartitionTable table;
  table.image_name_ = device.name();
  const std::string& image = table.image_name_;
  if (device.size() < 2 * sector) {
    throw Error(image + ": " + std::to_string(device.size()) + " bytes is too small to hold a partition table");
  }
  table.disk_sectors_ = device.size() / sector;
  auto mbr = read_sectors(device, 0, 1);
  std::uint16_t signature = load_le16(mbr, mbr_signature_offset);
  if (signature != 0xaa55) {
    throw Error(image + ": no partition table: boot signature at offset 510 is " + hex8(signature).substr(4) +
                ", expected 55aa");
  }
  std::copy_n(mbr.begin(), table.mbr_boot_code_.size(), table.mbr_boot_code_.begin());
  table.mbr_disk_id_ = load_le32(mbr, mbr_disk_id_offset);

  std::vector<PartitionEntry> mbr_entries;
  bool protective = false;
  for (std::uint32_t slot = 0; slot < 4; ++slot) {
    std::size_t at = mbr_entries_offset + slot * 16;
    PartitionEntry entry;
    entry.index = slot + 1;
    std::uint8_t status = mbr[at];
    entry.mbr_type = mbr[at + 4];
    entry.first_lba = load_le32(mbr, at + 8);
    entry.sector_count = load_le32(mbr, at + 12);
    if (entry.mbr_type == 0 || entry.sector_count == 0) continue;
    if (status != 0x00 && status != 0x80) {
      throw Error(image + ": partition " + std::to_string(entry.index) + ": status byte " + hex_byte(status) +
                  " is neither 0x00 nor 0x80 (not an MBR?)");
    }
    entry.bootable = status == 0x80;
    if (entry.mbr_type == mbr_type_gpt_protective) protective = true;
    mbr_entries.push_back(entry);
  }

  if (!protective) {
    table.kind_ = PartitionTableKind::mbr;
    table.first_usable_lba_ = 1;
    table.last_usable_lba_ = table.disk_sectors_ - 1;
    table.partitions_ = std::move(mbr_entries);
    table.validate();
    return table;
  }

  table.kind_ = PartitionTableKind::gpt;
  auto header_block = read_sectors(device, 1, 1);
  GptHeader header = parse_gpt_header(image, header_block, table.disk_sectors_);
  std::uint64_t array_sectors = gpt_entry_array_sectors(header.entry_count, header.entry_size);
  auto array = read_sectors(device, header.entries_lba, array_sectors);
  std::span<const std::uint8_t> entries(array.data(), static_cast<std::size_t>(header.entry_count) * header.entry_size);
  std::uint32_t actual_crc = crc32(entries);
  if (actual_crc != header.entries_crc) {
    throw Error(image + ": GPT entry array CRC32 is " + hex8(header.entries_crc) + " in the header but the array at sector " +
                std::to_string(header.entries_lba) + " hashes to " + hex8(actual_crc));
  }
  table.gpt_disk_guid_ = header.disk_guid;
  table.first_usable_lba_ = header.first_usable;
  table.last_usable_lba_ = header.last_usable;
  table.gpt_entries_lba_ = header.entries_lba;
  table.gpt_entry_count_ = header.entry_count;
  table.gpt_entry_size_ = header.entry_size;
  table.gpt_old_backup_lba_ = header.alternate_lba;
  for (std::uint32_t slot = 0; slot < header.entry_count; ++slot) {
    auto raw = entries.subspan(static_cast<std::size_t>(slot) * header.entry_size, header.entry_size);
    PartitionEntry entry;
    entry.index = slot + 1;
    entry.gpt_type = load_guid(raw, 0);
    if (entry.gpt_type.is_zero()) continue;
    entry.gpt_unique = load_guid(raw, 16);
    entry.first_lba = load_le64(raw, 32);
    std::uint64_t last_lba = load_le64(raw, 40);
    entry.gpt_attributes = load_le64(raw, 48);
    entry.bootable = (entry.gpt_attributes & gpt_legacy_bootable_attribute) != 0;
    entry.gpt_name = utf16le_name_to_utf8(raw.subspan(56, 72));
    if (last_lba < entry.first_lba) {
      throw Error(image + ": partition " + std::to_string(entry.index) + ": last sector " + std::to_string(last_lba) +
                  " is before its first sector " + std::to_string(entry.first_lba));
    }
    entry.sector_count = last_lba - entry.first_lba + 1;
    table.partitions_.push_back(entry);
  }
  table.validate();
  return table;
}

void write_partition_table(BlockDevice& device, const PartitionTable& table) {
  const std::string& image = device.name();
  if (device.size() != table.disk_sectors_ * sector) {
    throw Error(image + ": device is " + std::to_string(device.size()) + " bytes but the partition table describes " +
                std::to_string(table.disk_sectors_ * sector) + " bytes (call set_disk_size after resizing)");
  }
  table.validate();

  std::vector<std::uint8_t> mbr(sector, 0);
  std::copy(table.mbr_boot_code_.begin(), table.mbr_boot_code_.end(), mbr.begin());
  store_le32(mbr, mbr_disk_id_offset, table.kind_ == PartitionTableKind::mbr ? table.mbr_disk_id_ : 0);
  store_le16(mbr, mbr_signature_offset, 0xaa55);
  auto store_mbr_entry = [&mbr](std::uint32_t slot, bool bootable, std::uint8_t type, std::uint64_t first,
                               std::uint64_t count) {
    std::size_t at = mbr_entries_offset + slot * 16;
    mbr[at] = bootable ? 0x80 : 0x00;
    auto chs_first = lba_to_chs(first);
    auto chs_last = lba_to_chs(first + count - 1);
    std::copy(chs_first.begin(), chs_first.end(), mbr.begin() + static_cast<std::ptrdiff_t>(at + 1));
    mbr[at + 4] = type;
    std::copy(chs_last.begin(), chs_last.end(), mbr.begin() + static_cast<std::ptrdiff_t>(at + 5));
    store_le32(mbr, at + 8, static_cast<std::uint32_t>(first));
    store_le32(mbr, at + 12, static_cast<std::uint32_t>(count));
  };

  if (table.kind_ == PartitionTableKind::mbr) {
    for (const auto& entry : table.partitions_) {
      store_mbr_entry(entry.index - 1, entry.bootable, entry.mbr_type, entry.first_lba, entry.sector_count);
    }
    device.write_at(0, mbr);
    return;
  }

  // Protective MBR: one 0xee entry covering the disk (clamped to what 32 bits can say).
  store_mbr_entry(0, false, mbr_type_gpt_protective, 1,
                  std::min<std::uint64_t>(table.disk_sectors_ - 1, 0xffffffffULL));

  const std::uint64_t array_sectors = gpt_entry_array_sectors(table.gpt_entry_count_, table.gpt_entry_size_);
  std::vector<std::uint8_t> array(static_cast<std::size_t>(array_sectors * sector), 0);
  for (const auto& entry : table.partitions_) {
    std::span<std::uint8_t> raw(array.data() + static_cast<std::size_t>(entry.index - 1) * table.gpt_entry_size_,
                                table.gpt_entry_size_);
    store_guid(raw, 0, entry.gpt_type);
    store_guid(raw, 16, entry.gpt_unique);
    store_le64(raw, 32, entry.first_lba);
    store_le64(raw, 40, entry.end_lba() - 1);
    std::uint64_t attributes = entry.gpt_attributes & ~gpt_legacy_bootable_attribute;
    if (entry.bootable) attributes |= gpt_legacy_bootable_attribute;
    store_le64(raw, 48, attributes);
    store_gpt_name(raw.subspan(56, 72), entry.gpt_name);
  }
  std::uint32_t array_crc = crc32(std::span<const std::uint8_t>(
      array.data(), static_cast<std::size_t>(table.gpt_entry_count_) * table.gpt_entry_size_));

  const std::uint64_t backup_header_lba = table.disk_sectors_ - 1;
  const std::uint64_t backup_array_lba = backup_header_lba - array_sectors;
  auto make_header = [&](std::uint64_t my_lba, std::uint64_t alternate_lba, std::uint64_t entries_lba) {
    std::vector<std::uint8_t> header(sector, 0);
    std::copy_n(gpt_signature, 8, header.begin());
    store_le32(header, 8, 0x00010000);  // revision 1.0
    store_le32(header, 12, static_cast<std::uint32_t>(gpt_header_size));
    store_le64(header, 24, my_lba);
    store_le64(header, 32, alternate_lba);
    store_le64(header, 40, table.first_usable_lba_);
    store_le64(header, 48, table.last_usable_lba_);
    store_guid(header, 56, table.gpt_disk_guid_);
    store_le64(header, 72, entries_lba);
    store_le32(header, 80, table.gpt_entry_count_);
    store_le32(header, 84, table.gpt_entry_size_);
    store_le32(header, 88, array_crc);
    store_le32(header, 16, crc32(std::span<const std::uint8_t>(header.data(), gpt_header_size)));
    return header;
  };
  if (backup_array_lba <= table.last_usable_lba_) {
    throw Error(image + ": GPT backup entry array at sector " + std::to_string(backup_array_lba) +
                " would overlap the usable area ending at sector " + std::to_string(table.last_usable_lba_));
  }

  // A stale backup header left behind after the image grew would confuse tools that scan for one; it is
  // only cleared where no partition claims the sector.
  std::uint64_t old_backup = table.gpt_old_backup_lba_;
  bool old_backup_is_free = std::none_of(table.partitions_.begin(), table.partitions_.end(),
                                         [old_backup](const PartitionEntry& e) {
                                           return e.first_lba <= old_backup && old_backup < e.end_lba();
                                         });
  if (old_backup != 0 && old_backup != backup_header_lba && old_backup < table.disk_sectors_ && old_backup_is_free) {
    std::vector<std::uint8_t> zero(sector, 0);
    device.write_at(old_backup * sector, zero);
  }

  device.write_at(backup_array_lba * sector, array);
  device.write_at(backup_header_lba * sector, make_header(backup_header_lba, 1, backup_array_lba));
  device.write_at(table.gpt_entries_lba_ * sector, array);
  device.write_at(1 * sector, make_header(1, backup_header_lba, table.gpt_entries_lba_));
  device.write_at(0, mbr);
}

SubrangeBlockDevice open_partition(BlockDevice& device, const PartitionTable& table, std::uint32_t index) {
  const PartitionEntry& entry = table.partition(index);
  return SubrangeBlockDevice(device, entry.byte_offset(), entry.byte_size(),
                             device.name() + " partition " + std::to_string(index));
}

}  // namespace aggrik8s
