#include "disk/fat_filesystem.hpp"

#include <algorithm>
#include <array>
#include <ctime>

#include "core/endian.hpp"
#include "core/error.hpp"
#include "core/huge_pages.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t entry_size = 32;
constexpr std::uint8_t attribute_read_only = 0x01;
constexpr std::uint8_t attribute_hidden = 0x02;
constexpr std::uint8_t attribute_system = 0x04;
constexpr std::uint8_t attribute_volume_label = 0x08;
constexpr std::uint8_t attribute_directory = 0x10;
constexpr std::uint8_t attribute_archive = 0x20;
constexpr std::uint8_t attribute_long_name = attribute_read_only | attribute_hidden | attribute_system |
                                             attribute_volume_label;
constexpr std::uint8_t deleted_marker = 0xe5;
constexpr std::uint8_t last_long_entry_flag = 0x40;
constexpr std::size_t long_name_units_per_entry = 13;
constexpr std::size_t max_long_name_units = 255;
// Where the 13 UTF-16 units of a long-name entry sit inside its 32 bytes.
constexpr std::array<std::size_t, 13> long_name_unit_offsets{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
// FAT32 entries are 28 bits; the top 4 are reserved and must be preserved on write.
constexpr std::uint32_t fat32_mask = 0x0fffffff;

using ShortName = std::array<std::uint8_t, 11>;

std::uint8_t short_name_checksum(const std::uint8_t* name) {
  std::uint8_t sum = 0;
  for (int i = 0; i < 11; ++i) sum = static_cast<std::uint8_t>(((sum & 1) << 7) + (sum >> 1) + name[i]);
  return sum;
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string ascii_lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
  return out;
}

std::string trim_trailing_spaces(std::string text) {
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

// UTF-8 <-> UTF-16, for long names. Invalid UTF-8 in a name is the caller's bug or bad input: Error.
std::vector<std::uint16_t> utf8_to_utf16(std::string_view text, const std::string& context) {
  std::vector<std::uint16_t> out;
  for (std::size_t i = 0; i < text.size();) {
    auto lead = static_cast<unsigned char>(text[i]);
    std::uint32_t code = 0;
    std::size_t length = 0;
    if (lead < 0x80) {
      code = lead;
      length = 1;
    } else if ((lead & 0xe0) == 0xc0) {
      code = lead & 0x1fU;
      length = 2;
    } else if ((lead & 0xf0) == 0xe0) {
      code = lead & 0x0fU;
      length = 3;
    } else if ((lead & 0xf8) == 0xf0) {
      code = lead & 0x07U;
      length = 4;
    } else {
      throw Error(context + ": name is not valid UTF-8");
    }
    if (i + length > text.size()) throw Error(context + ": name is not valid UTF-8");
    for (std::size_t k = 1; k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) throw Error(context + ": name is not valid UTF-8");
      code = (code << 6) | (next & 0x3fU);
    }
    if (code >= 0x10000) {
      code -= 0x10000;
      out.push_back(static_cast<std::uint16_t>(0xd800 + (code >> 10)));
      out.push_back(static_cast<std::uint16_t>(0xdc00 + (code & 0x3ff)));
    } else {
      out.push_back(static_cast<std::uint16_t>(code));
    }
    i += length;
  }
  return out;
}

std::string utf16_to_utf8(const std::vector<std::uint16_t>& units) {
  std::string out;
  for (std::size_t i = 0; i < units.size(); ++i) {
    std::uint32_t code = units[i];
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < units.size() && units[i + 1] >= 0xdc00 &&
        units[i + 1] <= 0xdfff) {
      code = 0x10000 + ((code - 0xd800) << 10) + (units[i + 1] - 0xdc00U);
      ++i;
    }
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xc0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xe0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    }
  }
  return out;
}

// Characters allowed in a short name besides A-Z and 0-9. Bytes >= 0x80 are legal but mean different
// letters in different OEM code pages, so they are never generated.
bool is_short_name_char(char c) {
  if ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'()-@^_`{}~").find(c) != std::string_view::npos;
}

// "CONFIG.TXT" as stored: 8 + 3 bytes, space padded. Only names that are already exactly a short name
// (upper case) qualify; anything else gets a long name entry.
std::optional<ShortName> exact_short_name(std::string_view name) {
  std::size_t dot = name.find('.');
  std::string_view base = name.substr(0, dot);
  std::string_view extension = dot == std::string_view::npos ? std::string_view() : name.substr(dot + 1);
  if (base.empty() || base.size() > 8 || extension.size() > 3) return std::nullopt;
  if (dot != std::string_view::npos && extension.empty()) return std::nullopt;
  if (!std::all_of(base.begin(), base.end(), is_short_name_char) ||
      !std::all_of(extension.begin(), extension.end(), is_short_name_char)) {
    return std::nullopt;
  }
  ShortName stored;
  stored.fill(' ');
  std::copy(base.begin(), base.end(), stored.begin());
  std::copy(extension.begin(), extension.end(), stored.begin() + 8);
  return stored;
}

std::string short_name_to_string(const std::uint8_t* raw, std::uint8_t case_flags) {
  auto part = [](const std::uint8_t* bytes, std::size_t length, bool lower) {
    std::string text;
    for (std::size_t i = 0; i < length; ++i) {
      std::uint8_t byte = bytes[i];
      if (i == 0 && byte == 0x05) byte = deleted_marker;  // 0x05 escapes a real 0xe5 first byte
      char c = byte < 0x80 ? static_cast<char>(byte) : '?';
      text += lower ? ascii_lower(c) : c;
    }
    return trim_trailing_spaces(text);
  };
  // NT and Linux record all-lower-case base/extension in these bits instead of a long name.
  std::string base = part(raw, 8, (case_flags & 0x08) != 0);
  std::string extension = part(raw + 8, 3, (case_flags & 0x10) != 0);
  return extension.empty() ? base : base + "." + extension;
}

// Proleptic Gregorian conversions (H. Hinnant's algorithms): no dependence on the TZ environment.
std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day) {
  year -= month <= 2 ? 1 : 0;
  const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
  const auto year_of_era = static_cast<unsigned>(year - era * 400);
  const unsigned day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const unsigned day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + static_cast<std::int64_t>(day_of_era) - 719468;
}

struct CivilDate {
  std::int64_t year;
  unsigned month;
  unsigned day;
};

CivilDate civil_from_days(std::int64_t days) {
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto day_of_era = static_cast<unsigned>(days - era * 146097);
  const unsigned year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const unsigned day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const unsigned mp = (5 * day_of_year + 2) / 153;
  const unsigned day = day_of_year - (153 * mp + 2) / 5 + 1;
  const unsigned month = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(year_of_era) + era * 400 + (month <= 2 ? 1 : 0), month, day};
}

struct DosTimestamp {
  std::uint16_t date;
  std::uint16_t time;
  std::uint8_t tenths;  // creation time only: 10 ms units, 0..199
};

// FAT can express 1980-01-01 .. 2107-12-31 in 2-second steps; times outside are clamped.
DosTimestamp to_dos_timestamp(std::int64_t unix_seconds) {
  const std::int64_t earliest = days_from_civil(1980, 1, 1) * 86400;
  const std::int64_t latest = days_from_civil(2107, 12, 31) * 86400 + 86399;
  unix_seconds = std::clamp(unix_seconds, earliest, latest);
  std::int64_t days = unix_seconds / 86400;
  auto seconds_of_day = static_cast<unsigned>(unix_seconds % 86400);
  CivilDate date = civil_from_days(days);
  DosTimestamp stamp{};
  stamp.date = static_cast<std::uint16_t>(((date.year - 1980) << 9) | (date.month << 5) | date.day);
  stamp.time = static_cast<std::uint16_t>(((seconds_of_day / 3600) << 11) | (((seconds_of_day / 60) % 60) << 5) |
                                          ((seconds_of_day % 60) / 2));
  stamp.tenths = static_cast<std::uint8_t>((seconds_of_day % 2) * 100);
  return stamp;
}

std::int64_t from_dos_timestamp(std::uint16_t date, std::uint16_t time) {
  unsigned day = date & 0x1fU;
  unsigned month = (date >> 5) & 0x0fU;
  std::int64_t year = 1980 + (date >> 9);
  if (day == 0 || month == 0 || month > 12) return 0;
  std::int64_t seconds = (time >> 11) * 3600 + ((time >> 5) & 0x3f) * 60 + (time & 0x1f) * 2;
  return days_from_civil(year, month, day) * 86400 + seconds;
}

std::vector<std::string> split_path(std::string_view path, const std::string& device_name) {
  std::vector<std::string> components;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (part == "..") throw Error(device_name + ": path '" + std::string(path) + "' contains '..'");
    if (!part.empty() && part != ".") components.emplace_back(part);
    start = slash + 1;
  }
  return components;
}

std::string join_path(const std::vector<std::string>& components, std::size_t count) {
  std::string text;
  for (std::size_t i = 0; i < count; ++i) text += "/" + components[i];
  return text.empty() ? "/" : text;
}

}  // namespace

void validate_fat_long_name(std::string_view name, const std::string& context) {
  if (name.empty()) throw Error(context + ": empty name");
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || std::string_view("\"*/:<>?\\|").find(c) != std::string_view::npos) {
      throw Error(context + ": character '" + std::string(1, c) + "' is not allowed in FAT names");
    }
  }
  if (name.back() == '.' || name.back() == ' ') {
    throw Error(context + ": FAT names cannot end with '.' or ' '");
  }
  // VFAT long names hold 255 UTF-16 units; a UTF-8 name of at most 255 bytes always fits.
  if (name.size() > 255) throw Error(context + ": FAT names are at most 255 characters");
}

struct FatFilesystem::Directory {
  std::string path;  // for messages
  bool is_root = false;
  bool fixed_region = false;  // FAT12/16 root: a fixed number of entries, cannot grow
  std::uint32_t first_cluster = 0;
  std::vector<std::uint32_t> clusters;
  std::vector<std::uint8_t> bytes;
  std::size_t slot_count() const { return bytes.size() / entry_size; }
  std::uint8_t* slot(std::size_t index) { return bytes.data() + index * entry_size; }
  const std::uint8_t* slot(std::size_t index) const { return bytes.data() + index * entry_size; }
};

struct FatFilesystem::Located {
  std::size_t first_slot = 0;  // first long-name entry, or the short entry when there is none
  std::size_t entry_slot = 0;  // the short (8.3) entry that holds cluster, size and times
  FatDirectoryEntry entry;
};

// ---- opening ----

FatFilesystem::FatFilesystem(BlockDevice& device) : device_(device), timestamp_(std::time(nullptr)) {
  const std::string& name = device.name();
  if (device.size() < 512) throw Error(name + ": " + std::to_string(device.size()) + " bytes is too small for FAT");
  std::vector<std::uint8_t> boot(512);
  device.read_at(0, boot);
  if (load_le16(boot, 510) != 0xaa55) {
    throw Error(name + ": not a FAT filesystem: boot sector signature is missing (offset 510)");
  }
  bytes_per_sector_ = load_le16(boot, 11);
  if (bytes_per_sector_ != 512 && bytes_per_sector_ != 1024 && bytes_per_sector_ != 2048 && bytes_per_sector_ != 4096) {
    throw Error(name + ": not a FAT filesystem: bytes per sector is " + std::to_string(bytes_per_sector_) +
                " (expected 512, 1024, 2048 or 4096)");
  }
  std::uint32_t sectors_per_cluster = boot[13];
  if (sectors_per_cluster == 0 || (sectors_per_cluster & (sectors_per_cluster - 1)) != 0) {
    throw Error(name + ": not a FAT filesystem: sectors per cluster is " + std::to_string(sectors_per_cluster) +
                " (expected a power of two from 1 to 128)");
  }
  cluster_size_ = sectors_per_cluster * bytes_per_sector_;
  reserved_sectors_ = load_le16(boot, 14);
  fat_count_ = boot[16];
  root_directory_entries_ = load_le16(boot, 17);
  std::uint64_t total_sectors = load_le16(boot, 19);
  if (total_sectors == 0) total_sectors = load_le32(boot, 32);
  std::uint32_t fat16_sectors = load_le16(boot, 22);
  fat_sectors_ = fat16_sectors != 0 ? fat16_sectors : load_le32(boot, 36);
  if (reserved_sectors_ == 0 || fat_count_ == 0 || fat_sectors_ == 0 || total_sectors == 0) {
    throw Error(name + ": not a FAT filesystem: reserved sectors " + std::to_string(reserved_sectors_) +
                ", FAT count " + std::to_string(fat_count_) + ", FAT size " + std::to_string(fat_sectors_) +
                ", total sectors " + std::to_string(total_sectors) + " (none may be 0)");
  }
  if (total_sectors * bytes_per_sector_ > device.size()) {
    throw Error(name + ": FAT boot sector says " + std::to_string(total_sectors) + " sectors (" +
                std::to_string(total_sectors * bytes_per_sector_) + " bytes) but the device has only " +
                std::to_string(device.size()) + " bytes");
  }
  const bool is_fat32 = fat16_sectors == 0;
  const std::uint64_t root_directory_sectors =
      (static_cast<std::uint64_t>(root_directory_entries_) * entry_size + bytes_per_sector_ - 1) / bytes_per_sector_;
  const std::uint64_t first_data_sector =
      reserved_sectors_ + static_cast<std::uint64_t>(fat_count_) * fat_sectors_ + root_directory_sectors;
  if (first_data_sector >= total_sectors) {
    throw Error(name + ": FAT metadata ends at sector " + std::to_string(first_data_sector) +
                ", beyond the filesystem's " + std::to_string(total_sectors) + " sectors");
  }
  cluster_count_ = static_cast<std::uint32_t>(
      std::min<std::uint64_t>((total_sectors - first_data_sector) / sectors_per_cluster, 0x0ffffff5));
  if (is_fat32) {
    type_ = FatType::fat32;
    if (root_directory_entries_ != 0) {
      throw Error(name + ": FAT32 boot sector has " + std::to_string(root_directory_entries_) +
                  " fixed root entries (must be 0)");
    }
  } else if (cluster_count_ < 4085) {
    type_ = FatType::fat12;
  } else if (cluster_count_ < 65525) {
    type_ = FatType::fat16;
  } else {
    throw Error(name + ": " + std::to_string(cluster_count_) +
                " clusters is too many for FAT12/16 but the boot sector is not FAT32");
  }
  const std::uint64_t entries = static_cast<std::uint64_t>(cluster_count_) + 2;
  const std::uint64_t fat_bytes_needed = type_ == FatType::fat12   ? (entries * 3 + 1) / 2
                                         : type_ == FatType::fat16 ? entries * 2
                                                                   : entries * 4;
  const std::uint64_t fat_bytes = static_cast<std::uint64_t>(fat_sectors_) * bytes_per_sector_;
  if (fat_bytes_needed > fat_bytes) {
    throw Error(name + ": FAT of " + std::to_string(fat_bytes) + " bytes cannot map " + std::to_string(cluster_count_) +
                " clusters (needs " + std::to_string(fat_bytes_needed) + " bytes)");
  }
  root_directory_offset_ = (reserved_sectors_ + static_cast<std::uint64_t>(fat_count_) * fat_sectors_) * bytes_per_sector_;
  data_offset_ = first_data_sector * bytes_per_sector_;

  std::size_t label_offset = 43;
  std::size_t extended_signature_offset = 38;
  if (is_fat32) {
    std::uint16_t extended_flags = load_le16(boot, 40);
    // Bit 7: only the FAT numbered in bits 0-3 is in use (no mirroring).
    fats_mirrored_ = (extended_flags & 0x80) == 0;
    active_fat_ = fats_mirrored_ ? 0 : (extended_flags & 0x0fU);
    if (active_fat_ >= fat_count_) {
      throw Error(name + ": active FAT " + std::to_string(active_fat_) + " does not exist (" +
                  std::to_string(fat_count_) + " FATs)");
    }
    root_cluster_ = load_le32(boot, 44);
    if (root_cluster_ < 2 || root_cluster_ > cluster_count_ + 1) {
      throw Error(name + ": FAT32 root directory cluster " + std::to_string(root_cluster_) + " is outside 2.." +
                  std::to_string(cluster_count_ + 1));
    }
    fsinfo_sector_ = load_le16(boot, 48);
    label_offset = 71;
    extended_signature_offset = 66;
  }
  if (boot[extended_signature_offset] == 0x29) {
    volume_label_ = trim_trailing_spaces(std::string(boot.begin() + static_cast<std::ptrdiff_t>(label_offset),
                                                     boot.begin() + static_cast<std::ptrdiff_t>(label_offset + 11)));
    if (volume_label_ == "NO NAME") volume_label_.clear();
  }

  fat_.resize(static_cast<std::size_t>((fat_bytes_needed + bytes_per_sector_ - 1) / bytes_per_sector_ * bytes_per_sector_));
  device.read_at(static_cast<std::uint64_t>(reserved_sectors_) * bytes_per_sector_ + active_fat_ * fat_bytes, fat_);
  for (std::uint32_t cluster = 2; cluster <= cluster_count_ + 1; ++cluster) {
    if (fat_entry(cluster) == 0) ++free_clusters_;
  }

  if (is_fat32) {
    std::vector<std::uint8_t> fsinfo(512);
    bool valid = fsinfo_sector_ >= 1 && fsinfo_sector_ < reserved_sectors_;
    if (valid) {
      device.read_at(static_cast<std::uint64_t>(fsinfo_sector_) * bytes_per_sector_, fsinfo);
      valid = load_le32(fsinfo, 0) == 0x41615252 && load_le32(fsinfo, 484) == 0x61417272;
    }
    if (!valid) {
      fsinfo_sector_ = 0;  // never write into a sector that is not an FSInfo
    } else {
      std::uint32_t hint = load_le32(fsinfo, 492);
      if (hint >= 2 && hint <= cluster_count_ + 1) next_free_hint_ = hint;
    }
  }

  Directory root = load_directory(is_fat32 ? root_cluster_ : 0, "/");
  for (std::size_t i = 0; i < root.slot_count(); ++i) {
    const std::uint8_t* raw = root.slot(i);
    if (raw[0] == 0) break;
    if (raw[0] == deleted_marker || (raw[11] & 0x3f) == attribute_long_name) continue;
    if ((raw[11] & (attribute_volume_label | attribute_directory)) == attribute_volume_label) {
      volume_label_ = trim_trailing_spaces(std::string(raw, raw + 11));
      break;
    }
  }
}

std::string FatFilesystem::where(std::string_view path) const {
  std::string normalized = std::string(path);
  if (normalized.empty() || normalized.front() != '/') normalized.insert(0, "/");
  return device_.name() + ": " + normalized;
}

// ---- the FAT ----

std::uint64_t FatFilesystem::cluster_offset(std::uint32_t cluster) const {
  return data_offset_ + static_cast<std::uint64_t>(cluster - 2) * cluster_size_;
}

std::vector<DataExtent> FatFilesystem::used_ranges() const {
  std::vector<DataExtent> ranges{{0, data_offset_}};
  for (std::uint32_t cluster = 2; cluster < cluster_count_ + 2;) {
    if (fat_entry(cluster) == 0) {
      ++cluster;
      continue;
    }
    std::uint32_t end = cluster + 1;
    while (end < cluster_count_ + 2 && fat_entry(end) != 0) ++end;
    ranges.push_back({cluster_offset(cluster), std::uint64_t{end - cluster} * cluster_size_});
    cluster = end;
  }
  return merge_extents(std::move(ranges));
}

std::uint32_t FatFilesystem::fat_entry(std::uint32_t cluster) const {
  switch (type_) {
    case FatType::fat12: {
      std::uint32_t value = load_le16(fat_, cluster + cluster / 2);
      return (cluster & 1) != 0 ? value >> 4 : value & 0x0fff;
    }
    case FatType::fat16:
      return load_le16(fat_, std::size_t{cluster} * 2);
    case FatType::fat32:
      return load_le32(fat_, std::size_t{cluster} * 4) & fat32_mask;
  }
  return 0;
}

void FatFilesystem::set_fat_entry(std::uint32_t cluster, std::uint32_t value) {
  std::size_t offset = 0;
  switch (type_) {
    case FatType::fat12: {
      offset = cluster + cluster / 2;
      std::uint16_t word = load_le16(fat_, offset);
      if ((cluster & 1) != 0) {
        word = static_cast<std::uint16_t>((word & 0x000f) | ((value & 0x0fff) << 4));
      } else {
        word = static_cast<std::uint16_t>((word & 0xf000) | (value & 0x0fff));
      }
      store_le16(fat_, offset, word);
      break;
    }
    case FatType::fat16:
      offset = std::size_t{cluster} * 2;
      store_le16(fat_, offset, static_cast<std::uint16_t>(value));
      break;
    case FatType::fat32: {
      offset = std::size_t{cluster} * 4;
      std::uint32_t reserved_bits = load_le32(fat_, offset) & ~fat32_mask;
      store_le32(fat_, offset, reserved_bits | (value & fat32_mask));
      break;
    }
  }
  if (fat_dirty_begin_ == fat_dirty_end_) {
    fat_dirty_begin_ = offset;
    fat_dirty_end_ = offset + 4;
  } else {
    fat_dirty_begin_ = std::min(fat_dirty_begin_, offset);
    fat_dirty_end_ = std::max(fat_dirty_end_, offset + 4);
  }
  fat_dirty_end_ = std::min(fat_dirty_end_, fat_.size());
}

bool FatFilesystem::is_end_of_chain(std::uint32_t value) const {
  switch (type_) {
    case FatType::fat12:
      return value >= 0x0ff8;
    case FatType::fat16:
      return value >= 0xfff8;
    case FatType::fat32:
      return value >= 0x0ffffff8;
  }
  return true;
}

std::vector<std::uint32_t> FatFilesystem::cluster_chain(std::uint32_t first, std::string_view path) const {
  const std::uint32_t last_cluster = cluster_count_ + 1;
  if (first < 2 || first > last_cluster) {
    throw Error(where(path) + ": first cluster " + std::to_string(first) + " is outside 2.." +
                std::to_string(last_cluster));
  }
  std::vector<std::uint32_t> chain;
  std::uint32_t current = first;
  while (true) {
    chain.push_back(current);
    // A chain cannot be longer than the filesystem has clusters: longer means it loops.
    if (chain.size() > cluster_count_) {
      throw Error(where(path) + ": corrupt FAT: cluster chain starting at " + std::to_string(first) +
                  " loops (more than " + std::to_string(cluster_count_) + " clusters)");
    }
    std::uint32_t next = fat_entry(current);
    if (is_end_of_chain(next)) break;
    if (next < 2 || next > last_cluster) {
      throw Error(where(path) + ": corrupt FAT: cluster " + std::to_string(current) + " points to " +
                  std::to_string(next) + ", outside 2.." + std::to_string(last_cluster) +
                  (next == 0 ? " (a free cluster)" : ""));
    }
    current = next;
  }
  return chain;
}

std::vector<std::uint32_t> FatFilesystem::allocate_clusters(std::uint32_t count, std::string_view path) {
  if (count > free_clusters_) {
    throw Error(where(path) + ": no space left: needs " + std::to_string(count) + " more clusters (" +
                std::to_string(static_cast<std::uint64_t>(count) * cluster_size_) + " bytes), only " +
                std::to_string(free_clusters_) + " free (" + std::to_string(free_bytes()) + " bytes)");
  }
  std::vector<std::uint32_t> clusters;
  clusters.reserve(count);
  const std::uint32_t last_cluster = cluster_count_ + 1;
  std::uint32_t candidate = next_free_hint_ >= 2 && next_free_hint_ <= last_cluster ? next_free_hint_ : 2;
  for (std::uint32_t scanned = 0; clusters.size() < count && scanned < cluster_count_; ++scanned) {
    if (fat_entry(candidate) == 0) {
      set_fat_entry(candidate, 0x0fffffff);  // reserve it now, linked by link_chain
      clusters.push_back(candidate);
    }
    candidate = candidate == last_cluster ? 2 : candidate + 1;
  }
  if (clusters.size() < count) {
    throw Error(where(path) + ": FAT free count is wrong: expected " + std::to_string(count) +
                " free clusters but found " + std::to_string(clusters.size()));
  }
  free_clusters_ -= count;
  next_free_hint_ = candidate;
  return clusters;
}

void FatFilesystem::free_chain(const std::vector<std::uint32_t>& chain) {
  for (std::uint32_t cluster : chain) set_fat_entry(cluster, 0);
  free_clusters_ += static_cast<std::uint32_t>(chain.size());
}

void FatFilesystem::link_chain(const std::vector<std::uint32_t>& chain) {
  for (std::size_t i = 0; i < chain.size(); ++i) {
    set_fat_entry(chain[i], i + 1 < chain.size() ? chain[i + 1] : 0x0fffffff);
  }
}

void FatFilesystem::write_clusters(const std::vector<std::uint32_t>& chain, std::span<const std::uint8_t> content) {
  // Runs of consecutive clusters become single writes: kernel images are several MiB.
  std::size_t position = 0;
  for (std::size_t i = 0; i < chain.size();) {
    std::size_t run = 1;
    while (i + run < chain.size() && chain[i + run] == chain[i] + run) ++run;
    std::uint64_t run_bytes = static_cast<std::uint64_t>(run) * cluster_size_;
    std::size_t data_bytes = static_cast<std::size_t>(std::min<std::uint64_t>(run_bytes, content.size() - position));
    device_.write_at(cluster_offset(chain[i]), content.subspan(position, data_bytes));
    if (data_bytes < run_bytes) {
      // The slack after the end of the file is zeroed, so images do not carry stale data and
      // rebuilding gives identical bytes.
      std::vector<std::uint8_t> zeros(static_cast<std::size_t>(run_bytes - data_bytes), 0);
      device_.write_at(cluster_offset(chain[i]) + data_bytes, zeros);
    }
    position += data_bytes;
    i += run;
  }
}

void FatFilesystem::commit() {
  if (fat_dirty_begin_ < fat_dirty_end_) {
    const std::uint64_t fat_bytes = static_cast<std::uint64_t>(fat_sectors_) * bytes_per_sector_;
    const std::uint64_t first_fat = static_cast<std::uint64_t>(reserved_sectors_) * bytes_per_sector_;
    std::span<const std::uint8_t> dirty(fat_.data() + fat_dirty_begin_, fat_dirty_end_ - fat_dirty_begin_);
    for (std::uint32_t copy = 0; copy < fat_count_; ++copy) {
      if (!fats_mirrored_ && copy != active_fat_) continue;
      device_.write_at(first_fat + copy * fat_bytes + fat_dirty_begin_, dirty);
    }
    fat_dirty_begin_ = fat_dirty_end_ = 0;
  }
  if (fsinfo_sector_ != 0) {
    std::vector<std::uint8_t> fsinfo(512);
    const std::uint64_t offset = static_cast<std::uint64_t>(fsinfo_sector_) * bytes_per_sector_;
    device_.read_at(offset, fsinfo);
    store_le32(fsinfo, 488, free_clusters_);
    store_le32(fsinfo, 492, next_free_hint_);
    device_.write_at(offset, fsinfo);
  }
}

// ---- directories ----

FatFilesystem::Directory FatFilesystem::load_directory(std::uint32_t first_cluster, std::string_view path) {
  Directory directory;
  directory.path = std::string(path);
  directory.first_cluster = first_cluster;
  directory.is_root = type_ == FatType::fat32 ? first_cluster == root_cluster_ : first_cluster == 0;
  if (first_cluster == 0) {
    if (type_ == FatType::fat32) throw Error(where(path) + ": directory has no clusters");
    directory.fixed_region = true;
    directory.bytes.resize(std::size_t{root_directory_entries_} * entry_size);
    device_.read_at(root_directory_offset_, directory.bytes);
    return directory;
  }
  directory.clusters = cluster_chain(first_cluster, path);
  directory.bytes.resize(directory.clusters.size() * cluster_size_);
  for (std::size_t i = 0; i < directory.clusters.size(); ++i) {
    device_.read_at(cluster_offset(directory.clusters[i]),
                    std::span<std::uint8_t>(directory.bytes.data() + i * cluster_size_, cluster_size_));
  }
  return directory;
}

void FatFilesystem::store_directory(const Directory& directory) {
  if (directory.fixed_region) {
    device_.write_at(root_directory_offset_, directory.bytes);
    return;
  }
  for (std::size_t i = 0; i < directory.clusters.size(); ++i) {
    device_.write_at(cluster_offset(directory.clusters[i]),
                     std::span<const std::uint8_t>(directory.bytes.data() + i * cluster_size_, cluster_size_));
  }
}

void FatFilesystem::grow_directory(Directory& directory, std::size_t slots_needed) {
  if (directory.fixed_region) {
    throw Error(where(directory.path) + ": root directory is full (" + std::to_string(root_directory_entries_) +
                " entries, FAT12/16 roots cannot grow)");
  }
  const std::size_t slots_per_cluster = cluster_size_ / entry_size;
  auto count = static_cast<std::uint32_t>((slots_needed + slots_per_cluster - 1) / slots_per_cluster);
  // FAT limits a directory to 65536 entries (the ".." and hash-free lookup rely on 16-bit indexes).
  if (directory.slot_count() + std::size_t{count} * slots_per_cluster > 65536) {
    throw Error(where(directory.path) + ": directory would exceed 65536 entries");
  }
  auto added = allocate_clusters(count, directory.path);
  directory.clusters.insert(directory.clusters.end(), added.begin(), added.end());
  link_chain(directory.clusters);
  directory.bytes.resize(directory.clusters.size() * cluster_size_, 0);
}

std::vector<FatFilesystem::Located> FatFilesystem::entries_of(const Directory& directory) const {
  std::vector<Located> found;
  std::vector<std::uint16_t> long_name;
  std::size_t long_name_start = 0;
  std::uint8_t long_name_checksum = 0;
  std::size_t next_ordinal = 0;  // 0: no long name being assembled
  bool long_name_complete = false;
  for (std::size_t i = 0; i < directory.slot_count(); ++i) {
    const std::uint8_t* raw = directory.slot(i);
    if (raw[0] == 0) break;
    if (raw[0] == deleted_marker) {
      next_ordinal = 0;
      long_name_complete = false;
      continue;
    }
    if ((raw[11] & 0x3f) == attribute_long_name) {
      std::size_t ordinal = raw[0] & 0x1fU;
      if ((raw[0] & last_long_entry_flag) != 0 && ordinal >= 1 && ordinal <= 20) {
        long_name.assign(ordinal * long_name_units_per_entry, 0xffff);
        long_name_start = i;
        long_name_checksum = raw[13];
        next_ordinal = ordinal;
        long_name_complete = false;
      } else if (next_ordinal == 0 || ordinal != next_ordinal || raw[13] != long_name_checksum) {
        next_ordinal = 0;  // orphaned or out-of-order piece: ignore the long name
        long_name_complete = false;
        continue;
      }
      for (std::size_t k = 0; k < long_name_units_per_entry; ++k) {
        long_name[(ordinal - 1) * long_name_units_per_entry + k] = load_le16(raw + long_name_unit_offsets[k]);
      }
      --next_ordinal;
      long_name_complete = next_ordinal == 0;
      continue;
    }
    bool has_long_name = long_name_complete && short_name_checksum(raw) == long_name_checksum;
    std::size_t start = has_long_name ? long_name_start : i;
    long_name_complete = false;
    next_ordinal = 0;
    if ((raw[11] & attribute_volume_label) != 0) continue;
    if (raw[0] == '.' && (raw[1] == ' ' || (raw[1] == '.' && raw[2] == ' '))) continue;
    Located located;
    located.first_slot = start;
    located.entry_slot = i;
    FatDirectoryEntry& entry = located.entry;
    entry.short_name = short_name_to_string(raw, 0);
    if (has_long_name) {
      auto end = std::find(long_name.begin(), long_name.end(), std::uint16_t{0});
      entry.name = utf16_to_utf8(std::vector<std::uint16_t>(long_name.begin(), end));
    } else {
      entry.name = short_name_to_string(raw, raw[12]);
    }
    entry.attributes = raw[11];
    entry.is_directory = (raw[11] & attribute_directory) != 0;
    entry.size = load_le32(raw + 28);
    entry.first_cluster = load_le16(raw + 26);
    // FAT12/16 keep an unrelated OS/2 field in the high cluster word; only FAT32 uses it.
    if (type_ == FatType::fat32) entry.first_cluster |= static_cast<std::uint32_t>(load_le16(raw + 20)) << 16;
    entry.modified_time = from_dos_timestamp(load_le16(raw + 24), load_le16(raw + 22));
    found.push_back(std::move(located));
  }
  return found;
}

std::optional<FatFilesystem::Located> FatFilesystem::find_in(const Directory& directory, std::string_view name) const {
  const std::string wanted = ascii_lowercase(name);
  for (auto& located : entries_of(directory)) {
    if (ascii_lowercase(located.entry.name) == wanted || ascii_lowercase(located.entry.short_name) == wanted) {
      return located;
    }
  }
  return std::nullopt;
}

std::optional<FatFilesystem::Directory> FatFilesystem::find_directory(const std::vector<std::string>& components) {
  Directory directory = load_directory(type_ == FatType::fat32 ? root_cluster_ : 0, "/");
  for (std::size_t i = 0; i < components.size(); ++i) {
    auto located = find_in(directory, components[i]);
    if (!located || !located->entry.is_directory) return std::nullopt;
    std::string path = join_path(components, i + 1);
    if (located->entry.first_cluster == 0) {
      throw Error(where(path) + ": corrupt directory entry: a subdirectory with no clusters");
    }
    directory = load_directory(located->entry.first_cluster, path);
  }
  return directory;
}

FatFilesystem::Directory FatFilesystem::open_directory(std::string_view path) {
  auto directory = find_directory(split_path(path, device_.name()));
  if (!directory) throw Error(where(path) + ": no such directory");
  return std::move(*directory);
}

std::size_t FatFilesystem::add_entry(Directory& directory, std::string_view name, std::uint8_t attributes,
                                     std::uint32_t first_cluster, std::uint32_t size) {
  const std::string context = where((directory.path == "/" ? "" : directory.path) + "/" + std::string(name));
  validate_fat_long_name(name, context);
  if (name == "." || name == "..") throw Error(context + ": reserved name");

  std::vector<ShortName> taken;
  for (std::size_t i = 0; i < directory.slot_count(); ++i) {
    const std::uint8_t* raw = directory.slot(i);
    if (raw[0] == 0) break;
    if (raw[0] == deleted_marker || (raw[11] & 0x3f) == attribute_long_name) continue;
    ShortName existing;
    std::copy_n(raw, 11, existing.begin());
    taken.push_back(existing);
  }
  auto is_taken = [&taken](const ShortName& candidate) {
    return std::find(taken.begin(), taken.end(), candidate) != taken.end();
  };

  std::vector<std::uint16_t> long_name;
  std::optional<ShortName> short_name = exact_short_name(name);
  if (short_name && is_taken(*short_name)) short_name.reset();
  if (!short_name) {
    long_name = utf8_to_utf16(name, context);
    if (long_name.size() > max_long_name_units) {
      throw Error(context + ": name is " + std::to_string(long_name.size()) + " UTF-16 units long (at most " +
                  std::to_string(max_long_name_units) + ")");
    }
    // Short name: upper case, invalid characters become '_', base from before the last dot.
    std::string stripped;
    for (char c : name) {
      if (c != ' ') stripped += c;
    }
    while (!stripped.empty() && stripped.front() == '.') stripped.erase(0, 1);
    std::size_t last_dot = stripped.rfind('.');
    std::string base_source = stripped.substr(0, last_dot);
    std::string extension_source = last_dot == std::string::npos ? std::string() : stripped.substr(last_dot + 1);
    bool lossy = stripped.size() != name.size();
    auto convert = [&lossy](const std::string& source, std::size_t limit) {
      std::string out;
      for (std::size_t i = 0; i < source.size(); ++i) {
        auto byte = static_cast<unsigned char>(source[i]);
        char c = static_cast<char>(byte);
        if (byte >= 0x80) {
          while (i + 1 < source.size() && (static_cast<unsigned char>(source[i + 1]) & 0xc0) == 0x80) ++i;
          c = '_';
          lossy = true;
        } else if (c >= 'a' && c <= 'z') {
          c = static_cast<char>(c - 'a' + 'A');
        } else if (!is_short_name_char(c)) {
          c = '_';
          lossy = true;
        }
        out += c;
      }
      if (out.size() > limit) {
        out.resize(limit);
        lossy = true;
      }
      return out;
    };
    std::string base = convert(base_source, 8);
    std::string extension = convert(extension_source, 3);
    if (base.empty()) {
      base = "_";
      lossy = true;
    }
    auto make = [&extension](const std::string& stem) {
      ShortName candidate;
      candidate.fill(' ');
      std::copy(stem.begin(), stem.end(), candidate.begin());
      std::copy(extension.begin(), extension.end(), candidate.begin() + 8);
      return candidate;
    };
    if (!lossy && !is_taken(make(base))) {
      short_name = make(base);
    } else {
      for (std::uint32_t n = 1; n < 1000000 && !short_name; ++n) {
        std::string tail = "~" + std::to_string(n);
        ShortName candidate = make(base.substr(0, 8 - tail.size()) + tail);
        if (!is_taken(candidate)) short_name = candidate;
      }
      if (!short_name) throw Error(context + ": no unique short name left");
    }
  }

  const std::size_t long_entries = (long_name.size() + long_name_units_per_entry - 1) / long_name_units_per_entry;
  const std::size_t slots_needed = long_entries + 1;

  // Find a run of free slots; slots from the end marker on are all free.
  std::size_t end_marker = directory.slot_count();
  for (std::size_t i = 0; i < directory.slot_count(); ++i) {
    if (directory.slot(i)[0] == 0) {
      end_marker = i;
      break;
    }
  }
  std::size_t run_start = 0;
  std::size_t run_length = 0;
  for (std::size_t i = 0; i < directory.slot_count() && run_length < slots_needed; ++i) {
    std::uint8_t first = directory.slot(i)[0];
    if (i >= end_marker || first == deleted_marker) {
      if (run_length == 0) run_start = i;
      ++run_length;
    } else {
      run_length = 0;
    }
  }
  if (run_length < slots_needed) {
    if (run_length == 0) run_start = directory.slot_count();
    grow_directory(directory, slots_needed - run_length);
  }

  const DosTimestamp stamp = to_dos_timestamp(timestamp_);
  const std::uint8_t checksum = short_name_checksum(short_name->data());
  for (std::size_t k = 0; k < long_entries; ++k) {
    // Physically first is the last piece of the name (highest ordinal, flagged 0x40).
    std::size_t ordinal = long_entries - k;
    std::uint8_t* raw = directory.slot(run_start + k);
    std::fill(raw, raw + entry_size, 0);
    raw[0] = static_cast<std::uint8_t>(ordinal | (k == 0 ? last_long_entry_flag : 0));
    raw[11] = attribute_long_name;
    raw[13] = checksum;
    for (std::size_t u = 0; u < long_name_units_per_entry; ++u) {
      std::size_t index = (ordinal - 1) * long_name_units_per_entry + u;
      // The name ends with one 0x0000 if there is room, then 0xffff padding.
      std::uint16_t unit = index < long_name.size() ? long_name[index] : index == long_name.size() ? 0x0000 : 0xffff;
      store_le16(raw + long_name_unit_offsets[u], unit);
    }
  }
  const std::size_t entry_slot = run_start + long_entries;
  std::uint8_t* raw = directory.slot(entry_slot);
  std::fill(raw, raw + entry_size, 0);
  std::copy(short_name->begin(), short_name->end(), raw);
  raw[11] = attributes;
  raw[13] = stamp.tenths;
  store_le16(raw + 14, stamp.time);
  store_le16(raw + 16, stamp.date);
  store_le16(raw + 18, stamp.date);
  store_le16(raw + 20, type_ == FatType::fat32 ? static_cast<std::uint16_t>(first_cluster >> 16) : 0);
  store_le16(raw + 22, stamp.time);
  store_le16(raw + 24, stamp.date);
  store_le16(raw + 26, static_cast<std::uint16_t>(first_cluster));
  store_le32(raw + 28, size);
  // Slots past the old end marker may hold garbage; keep the end marker right after the new entry.
  if (entry_slot + 1 < directory.slot_count() && entry_slot + 1 >= end_marker) directory.slot(entry_slot + 1)[0] = 0;
  return entry_slot;
}

// ---- public operations ----

std::optional<FatDirectoryEntry> FatFilesystem::stat(std::string_view path) {
  auto components = split_path(path, device_.name());
  if (components.empty()) {
    FatDirectoryEntry root;
    root.name = "/";
    root.is_directory = true;
    root.attributes = attribute_directory;
    root.first_cluster = type_ == FatType::fat32 ? root_cluster_ : 0;
    return root;
  }
  std::string leaf = components.back();
  components.pop_back();
  auto directory = find_directory(components);
  if (!directory) return std::nullopt;
  auto located = find_in(*directory, leaf);
  if (!located) return std::nullopt;
  return located->entry;
}

// The same walk as read_file's, kept apart from it so that read_file, which the fat_filesystem fuzz
// target has run 10 M times (docs/testing.md), stays the code that was fuzzed.
std::vector<FatFilesystem::Extent> FatFilesystem::file_extents(std::string_view path) {
  auto entry = stat(path);
  if (!entry) throw Error(where(path) + ": no such file");
  if (entry->is_directory) throw Error(where(path) + ": is a directory, not a file");
  if (entry->size == 0) return {};
  auto chain = cluster_chain(entry->first_cluster, path);
  std::uint64_t capacity = static_cast<std::uint64_t>(chain.size()) * cluster_size_;
  if (capacity < entry->size) {  // a corrupt entry: the extents would claim clusters the file lacks
    throw Error(where(path) + ": corrupt: file size is " + std::to_string(entry->size) + " bytes but its " +
                std::to_string(chain.size()) + " clusters hold only " + std::to_string(capacity));
  }
  std::vector<Extent> extents;
  std::uint64_t position = 0;
  for (std::size_t i = 0; i < chain.size() && position < entry->size;) {
    std::size_t run = 1;
    while (i + run < chain.size() && chain[i + run] == chain[i] + run) ++run;
    std::uint64_t bytes = std::min<std::uint64_t>(static_cast<std::uint64_t>(run) * cluster_size_, entry->size - position);
    extents.push_back({position, cluster_offset(chain[i]), bytes});
    position += bytes;
    i += run;
  }
  return extents;
}

std::vector<std::uint8_t> FatFilesystem::read_file(std::string_view path) {
  auto entry = stat(path);
  if (!entry) throw Error(where(path) + ": no such file");
  if (entry->is_directory) throw Error(where(path) + ": is a directory, not a file");
  if (entry->size == 0) return {};
  // The size is checked against the clusters the file really has before any memory is reserved for
  // it: a corrupt entry may claim up to 4 GiB.
  auto chain = cluster_chain(entry->first_cluster, path);
  std::uint64_t capacity = static_cast<std::uint64_t>(chain.size()) * cluster_size_;
  if (capacity < entry->size) {
    throw Error(where(path) + ": corrupt: file size is " + std::to_string(entry->size) + " bytes but its " +
                std::to_string(chain.size()) + " clusters hold only " + std::to_string(capacity));
  }
  // A UKI in an EFI partition is ~40 MiB: on huge pages its first touch is ~20 faults, not ~10 000
  // (0.1 s on the development VMs; docs/benchmarks.md, Talos).
  std::vector<std::uint8_t> content;
  reserve_on_huge_pages(content, entry->size);
  content.resize(entry->size);
  std::size_t position = 0;
  for (std::size_t i = 0; i < chain.size() && position < content.size();) {
    std::size_t run = 1;
    while (i + run < chain.size() && chain[i + run] == chain[i] + run) ++run;
    std::size_t bytes = static_cast<std::size_t>(
        std::min<std::uint64_t>(static_cast<std::uint64_t>(run) * cluster_size_, content.size() - position));
    device_.read_at(cluster_offset(chain[i]), std::span<std::uint8_t>(content.data() + position, bytes));
    position += bytes;
    i += run;
  }
  return content;
}

std::string FatFilesystem::read_text_file(std::string_view path) {
  auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

std::vector<FatDirectoryEntry> FatFilesystem::list_directory(std::string_view path) {
  Directory directory = open_directory(path);
  std::vector<FatDirectoryEntry> entries;
  for (auto& located : entries_of(directory)) {
    entries.push_back(std::move(located.entry));
  }
  return entries;
}

void FatFilesystem::write_file(std::string_view path, std::string_view content) {
  write_file(path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(content.data()), content.size()));
}

void FatFilesystem::write_file(std::string_view path, std::span<const std::uint8_t> content) {
  if (content.size() > 0xffffffffULL) {
    throw Error(where(path) + ": " + std::to_string(content.size()) + " bytes is more than a FAT file can hold (4 GiB - 1)");
  }
  auto components = split_path(path, device_.name());
  if (components.empty()) throw Error(where(path) + ": is the root directory, not a file");
  const std::string leaf = components.back();
  components.pop_back();
  auto parent = find_directory(components);
  if (!parent) throw Error(where(path) + ": parent directory " + join_path(components, components.size()) + " does not exist");

  // The in-memory FAT is only written by commit(); on failure it is put back so this object stays
  // consistent with the device (clusters written but never linked are still free on disk).
  auto saved_fat = fat_;
  auto saved_free = free_clusters_;
  auto saved_hint = next_free_hint_;
  auto saved_dirty = std::make_pair(fat_dirty_begin_, fat_dirty_end_);
  try {
    auto existing = find_in(*parent, leaf);
    const auto size = static_cast<std::uint32_t>(content.size());
    const auto needed = static_cast<std::uint32_t>((content.size() + cluster_size_ - 1) / cluster_size_);
    if (existing && existing->entry.is_directory) throw Error(where(path) + ": is a directory, not a file");
    std::vector<std::uint32_t> chain;
    if (existing && existing->entry.first_cluster != 0) chain = cluster_chain(existing->entry.first_cluster, path);
    // Reusing the old chain keeps a replaced kernel image in place and needs no extra space.
    if (chain.size() > needed) {
      free_chain(std::vector<std::uint32_t>(chain.begin() + needed, chain.end()));
      chain.resize(needed);
    } else if (chain.size() < needed) {
      auto added = allocate_clusters(needed - static_cast<std::uint32_t>(chain.size()), path);
      chain.insert(chain.end(), added.begin(), added.end());
    }
    link_chain(chain);
    const std::uint32_t first_cluster = chain.empty() ? 0 : chain.front();
    if (existing) {
      const DosTimestamp stamp = to_dos_timestamp(timestamp_);
      std::uint8_t* raw = parent->slot(existing->entry_slot);
      raw[11] = static_cast<std::uint8_t>(raw[11] | attribute_archive);
      store_le16(raw + 18, stamp.date);
      store_le16(raw + 20, type_ == FatType::fat32 ? static_cast<std::uint16_t>(first_cluster >> 16) : 0);
      store_le16(raw + 22, stamp.time);
      store_le16(raw + 24, stamp.date);
      store_le16(raw + 26, static_cast<std::uint16_t>(first_cluster));
      store_le32(raw + 28, size);
    } else {
      add_entry(*parent, leaf, attribute_archive, first_cluster, size);
    }
    write_clusters(chain, content);
    commit();
    store_directory(*parent);
  } catch (...) {
    fat_ = std::move(saved_fat);
    free_clusters_ = saved_free;
    next_free_hint_ = saved_hint;
    std::tie(fat_dirty_begin_, fat_dirty_end_) = saved_dirty;
    throw;
  }
}

void FatFilesystem::make_directories(std::string_view path) {
  auto components = split_path(path, device_.name());
  Directory directory = load_directory(type_ == FatType::fat32 ? root_cluster_ : 0, "/");
  for (std::size_t i = 0; i < components.size(); ++i) {
    const std::string sub_path = join_path(components, i + 1);
    if (auto located = find_in(directory, components[i])) {
      if (!located->entry.is_directory) throw Error(where(sub_path) + ": exists and is not a directory");
      if (located->entry.first_cluster == 0) {
        throw Error(where(sub_path) + ": corrupt directory entry: a subdirectory with no clusters");
      }
      directory = load_directory(located->entry.first_cluster, sub_path);
      continue;
    }
    auto saved_fat = fat_;
    auto saved_free = free_clusters_;
    auto saved_hint = next_free_hint_;
    auto saved_dirty = std::make_pair(fat_dirty_begin_, fat_dirty_end_);
    try {
      const std::uint32_t cluster = allocate_clusters(1, sub_path).front();
      link_chain({cluster});
      const std::size_t entry_slot = add_entry(directory, components[i], attribute_directory, cluster, 0);
      const std::uint8_t* created_entry = directory.slot(entry_slot);

      Directory created;
      created.path = sub_path;
      created.first_cluster = cluster;
      created.clusters = {cluster};
      created.bytes.assign(cluster_size_, 0);
      // "." and ".." copy the new entry's times; ".." of a root child is cluster 0, even on FAT32.
      const std::uint32_t parent_cluster = directory.is_root ? 0 : directory.first_cluster;
      for (std::size_t dot = 0; dot < 2; ++dot) {
        std::uint8_t* raw = created.slot(dot);
        std::copy_n(created_entry, entry_size, raw);
        std::fill(raw, raw + 11, ' ');
        raw[0] = '.';
        if (dot == 1) raw[1] = '.';
        std::uint32_t target = dot == 0 ? cluster : parent_cluster;
        store_le16(raw + 20, type_ == FatType::fat32 ? static_cast<std::uint16_t>(target >> 16) : 0);
        store_le16(raw + 26, static_cast<std::uint16_t>(target));
      }
      store_directory(created);
      commit();
      store_directory(directory);
      directory = std::move(created);
    } catch (...) {
      fat_ = std::move(saved_fat);
      free_clusters_ = saved_free;
      next_free_hint_ = saved_hint;
      std::tie(fat_dirty_begin_, fat_dirty_end_) = saved_dirty;
      throw;
    }
  }
}

void FatFilesystem::remove(std::string_view path) {
  auto components = split_path(path, device_.name());
  if (components.empty()) throw Error(where(path) + ": cannot remove the root directory");
  const std::string leaf = components.back();
  components.pop_back();
  auto parent = find_directory(components);
  if (!parent) throw Error(where(path) + ": no such file or directory");
  auto located = find_in(*parent, leaf);
  if (!located) throw Error(where(path) + ": no such file or directory");
  std::vector<std::uint32_t> chain;
  if (located->entry.first_cluster != 0) chain = cluster_chain(located->entry.first_cluster, path);
  if (located->entry.is_directory) {
    if (located->entry.first_cluster == 0) {
      throw Error(where(path) + ": corrupt directory entry: a subdirectory with no clusters");
    }
    Directory directory = load_directory(located->entry.first_cluster, path);
    if (!entries_of(directory).empty()) throw Error(where(path) + ": directory is not empty");
  }
  free_chain(chain);
  for (std::size_t slot = located->first_slot; slot <= located->entry_slot; ++slot) {
    parent->slot(slot)[0] = deleted_marker;
  }
  commit();
  store_directory(*parent);
}

}  // namespace aggrik8s
