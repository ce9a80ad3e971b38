#include "builder/talos/pe_image.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>

#include "core/endian.hpp"
#include "core/error.hpp"
#include "core/huge_pages.hpp"

namespace aggrik8s::builder {

namespace {

constexpr std::size_t section_header_size = 40;
constexpr std::size_t certificate_directory = 4;
constexpr std::size_t base_relocation_directory = 5;
constexpr std::size_t debug_directory = 6;
constexpr std::size_t debug_entry_size = 28;

const char* const directory_names[] = {"export table",   "import table",   "resource table",    "exception table",
                                       "certificate table", "base relocation table", "debug directory",
                                       "architecture",   "global pointer", "TLS table",         "load config table",
                                       "bound import",   "import address table", "delay import descriptor",
                                       "CLR runtime header", "reserved"};

std::string hex(std::uint64_t value) {
  char buffer[24];
  std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(value));
  return buffer;
}

[[noreturn]] void malformed(const std::string& what) { throw Error("PE: " + what); }

std::uint16_t get16(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint16_t>(b[at] | (b[at + 1] << 8));
}
std::uint32_t get32(std::span<const std::uint8_t> b, std::size_t at) {
  return static_cast<std::uint32_t>(b[at]) | (static_cast<std::uint32_t>(b[at + 1]) << 8) |
         (static_cast<std::uint32_t>(b[at + 2]) << 16) | (static_cast<std::uint32_t>(b[at + 3]) << 24);
}
void put32(std::vector<std::uint8_t>& b, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}

void need(std::span<const std::uint8_t> b, std::size_t at, std::size_t length, const std::string& what) {
  if (at > b.size() || length > b.size() - at) {
    malformed(what + " at offset " + hex(at) + " (" + std::to_string(length) + " bytes) runs past the end of the file (" +
              std::to_string(b.size()) + " bytes)");
  }
}

bool power_of_two(std::uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

std::uint64_t align_up(std::uint64_t v, std::uint32_t alignment) { return (v + alignment - 1) / alignment * alignment; }

// How much memory a section takes once loaded (linkers that leave VirtualSize 0 mean the raw size).
std::uint32_t memory_size(const PeSection& s) { return s.virtual_size != 0 ? s.virtual_size : s.raw_size; }

std::string describe(std::size_t index, const PeSection& s) {
  return "section " + std::to_string(index) + " (" + (s.name.empty() ? "unnamed" : s.name) + ")";
}

// Offsets of the optional header fields, the same in PE32 and PE32+ up to the data directories.
constexpr std::size_t opt_size_of_code = 4;
constexpr std::size_t opt_size_of_initialized_data = 8;
constexpr std::size_t opt_entry_point = 16;
constexpr std::size_t opt_section_alignment = 32;
constexpr std::size_t opt_file_alignment = 36;
constexpr std::size_t opt_size_of_image = 56;
constexpr std::size_t opt_size_of_headers = 60;
constexpr std::size_t opt_checksum = 64;

std::size_t directories_offset(const PeLayout& layout) { return layout.optional_offset + (layout.pe32_plus ? 112 : 96); }

// The file offset of an RVA, through the section holding it; nullopt when no section's raw data does.
std::optional<std::size_t> file_offset_of(const PeLayout& layout, std::uint32_t rva) {
  for (const auto& s : layout.sections) {
    if (rva >= s.virtual_address && rva - s.virtual_address < s.raw_size) return s.raw_offset + (rva - s.virtual_address);
  }
  return std::nullopt;
}

void write_checksum(std::vector<std::uint8_t>& image, const PeLayout& layout) {
  put32(image, layout.optional_offset + opt_checksum, 0);
  put32(image, layout.optional_offset + opt_checksum, pe_checksum(image));
}

}  // namespace

PeLayout parse_pe(std::span<const std::uint8_t> b) {
  PeLayout layout;
  need(b, 0, 0x40, "the DOS header");
  if (b[0] != 'M' || b[1] != 'Z') malformed("no \"MZ\" DOS signature at offset 0x0: not a PE/EFI file");
  std::uint32_t lfanew = get32(b, 0x3c);
  need(b, lfanew, 24, "the PE signature and COFF header (e_lfanew at offset 0x3c)");
  if (std::memcmp(&b[lfanew], "PE\0\0", 4) != 0) malformed("no \"PE\\0\\0\" signature at offset " + hex(lfanew) + " (e_lfanew)");
  layout.coff_offset = lfanew;
  std::size_t coff = lfanew + 4;
  std::uint16_t section_count = get16(b, coff + 2);
  std::uint16_t optional_size = get16(b, coff + 16);
  layout.optional_offset = coff + 20;
  need(b, layout.optional_offset, optional_size, "the optional header (SizeOfOptionalHeader at offset " + hex(coff + 16) + ")");
  if (optional_size < 2) malformed("SizeOfOptionalHeader at offset " + hex(coff + 16) + " is " + std::to_string(optional_size));
  std::uint16_t magic = get16(b, layout.optional_offset);
  if (magic == 0x20b) {
    layout.pe32_plus = true;
  } else if (magic != 0x10b) {
    malformed("optional header magic at offset " + hex(layout.optional_offset) + " is " + hex(magic) +
              ", expected 0x10b (PE32) or 0x20b (PE32+)");
  }
  std::size_t fixed = layout.pe32_plus ? 112 : 96;
  if (optional_size < fixed) {
    malformed("SizeOfOptionalHeader at offset " + hex(coff + 16) + " is " + std::to_string(optional_size) + ", at least " +
              std::to_string(fixed) + " expected");
  }
  const std::size_t o = layout.optional_offset;
  layout.entry_point = get32(b, o + opt_entry_point);
  layout.section_alignment = get32(b, o + opt_section_alignment);
  layout.file_alignment = get32(b, o + opt_file_alignment);
  layout.size_of_image = get32(b, o + opt_size_of_image);
  layout.size_of_headers = get32(b, o + opt_size_of_headers);
  layout.checksum = get32(b, o + opt_checksum);
  if (!power_of_two(layout.file_alignment)) {
    malformed("FileAlignment at offset " + hex(o + opt_file_alignment) + " is " + hex(layout.file_alignment) + ", not a power of two");
  }
  if (!power_of_two(layout.section_alignment) || layout.section_alignment < layout.file_alignment) {
    malformed("SectionAlignment at offset " + hex(o + opt_section_alignment) + " is " + hex(layout.section_alignment) +
              ", expected a power of two >= FileAlignment " + hex(layout.file_alignment));
  }
  std::size_t count_at = o + (layout.pe32_plus ? 108 : 92);
  std::uint32_t directory_count = get32(b, count_at);
  if (directory_count > 16 || fixed + std::size_t{directory_count} * 8 > optional_size) {
    malformed("NumberOfRvaAndSizes at offset " + hex(count_at) + " is " + std::to_string(directory_count) +
              ", more than the optional header holds");
  }
  for (std::uint32_t i = 0; i < directory_count; ++i) {
    std::size_t at = o + fixed + std::size_t{i} * 8;
    layout.directories.push_back({get32(b, at), get32(b, at + 4)});
  }
  std::size_t table = layout.optional_offset + optional_size;
  need(b, table, std::size_t{section_count} * section_header_size, "the section table of " + std::to_string(section_count) + " sections");
  if (table + std::size_t{section_count} * section_header_size > layout.size_of_headers || layout.size_of_headers > b.size()) {
    malformed("SizeOfHeaders at offset " + hex(o + opt_size_of_headers) + " is " + hex(layout.size_of_headers) +
              ", which does not cover the section table ending at " + hex(table + std::size_t{section_count} * section_header_size) +
              " or runs past the end of the file");
  }
  for (std::size_t i = 0; i < section_count; ++i) {
    std::size_t at = table + i * section_header_size;
    PeSection s;
    const char* name = reinterpret_cast<const char*>(&b[at]);
    s.name.assign(name, strnlen(name, 8));
    s.virtual_size = get32(b, at + 8);
    s.virtual_address = get32(b, at + 12);
    s.raw_size = get32(b, at + 16);
    s.raw_offset = get32(b, at + 20);
    s.characteristics = get32(b, at + 36);
    s.header_offset = at;
    if (s.raw_size != 0) {
      if (s.raw_offset < layout.size_of_headers) {
        malformed(describe(i, s) + " PointerToRawData at offset " + hex(at + 20) + " is " + hex(s.raw_offset) +
                  ", inside the headers (SizeOfHeaders " + hex(layout.size_of_headers) + ")");
      }
      need(b, s.raw_offset, s.raw_size, describe(i, s) + " raw data (header at " + hex(at) + ")");
    }
    if (std::uint64_t{s.virtual_address} + memory_size(s) > layout.size_of_image) {
      malformed(describe(i, s) + " at RVA " + hex(s.virtual_address) + " (header at " + hex(at) + ") ends past SizeOfImage " +
                hex(layout.size_of_image));
    }
    layout.sections.push_back(std::move(s));
  }
  // Sections must not overlap, in memory or in the file.
  for (std::size_t i = 0; i < layout.sections.size(); ++i) {
    for (std::size_t j = i + 1; j < layout.sections.size(); ++j) {
      const auto& a = layout.sections[i];
      const auto& c = layout.sections[j];
      auto memory_end = [](const PeSection& s) { return std::uint64_t{s.virtual_address} + std::max<std::uint32_t>(memory_size(s), 1); };
      if (a.virtual_address < memory_end(c) && c.virtual_address < memory_end(a)) {
        malformed(describe(i, a) + " and " + describe(j, c) + " overlap in memory (RVA " + hex(a.virtual_address) + " and " +
                  hex(c.virtual_address) + ")");
      }
      if (a.raw_size != 0 && c.raw_size != 0 && a.raw_offset < std::uint64_t{c.raw_offset} + c.raw_size &&
          c.raw_offset < std::uint64_t{a.raw_offset} + a.raw_size) {
        malformed(describe(i, a) + " and " + describe(j, c) + " overlap in the file (offsets " + hex(a.raw_offset) + " and " +
                  hex(c.raw_offset) + ")");
      }
    }
  }
  if (layout.signed_image()) {
    const auto& cert = layout.directories[certificate_directory];
    need(b, cert.address, cert.size, "the certificate table (data directory 4)");
  }
  return layout;
}

std::vector<std::uint8_t> pe_section_contents(std::span<const std::uint8_t> image, const PeSection& section) {
  std::vector<std::uint8_t> out(section.virtual_size, 0);
  std::size_t n = std::min(section.virtual_size, section.raw_size);
  need(image, section.raw_offset, n, "section " + section.name + " raw data");
  std::copy_n(image.begin() + section.raw_offset, static_cast<std::ptrdiff_t>(n), out.begin());
  return out;
}

std::uint64_t pe_word_sum(std::span<const std::uint8_t> bytes) {
  // Summed wide and folded by the caller, which gives the same value as folding after every word (a
  // non-zero sum never folds to zero) without a dependency between iterations: a 47 MiB UKI is summed
  // once per node's ISO. Eight bytes (four words) at a time: two 32-bit lanes of word pairs, emptied
  // into `sum` before they can overflow (each step adds at most 2 * 0xffff to a lane).
  std::uint64_t sum = 0;
  std::size_t i = 0;
  while (i + 8 <= bytes.size()) {
    std::uint64_t lanes = 0;
    std::size_t end = std::min(bytes.size() & ~std::size_t{7}, i + 8 * 16384);
    for (; i < end; i += 8) {
      std::uint64_t x = load_le64(bytes.data() + i);
      lanes += (x & 0x0000ffff0000ffffULL) + ((x >> 16) & 0x0000ffff0000ffffULL);
    }
    sum += (lanes & 0xffffffffULL) + (lanes >> 32);
  }
  for (; i + 1 < bytes.size(); i += 2) sum += static_cast<std::uint32_t>(bytes[i] | (bytes[i + 1] << 8));
  if (i < bytes.size()) sum += bytes[i];
  return sum;
}

std::uint32_t pe_checksum(std::span<const std::uint8_t> image) {
  PeLayout layout = parse_pe(image);
  std::size_t field = layout.optional_offset + opt_checksum;
  // The 16-bit one's complement sum of the little-endian words, the CheckSum field counted as zero.
  std::uint64_t sum = pe_word_sum(image);
  std::size_t even = image.size() & ~std::size_t{1};
  for (std::size_t f = field; f < field + 4 && f < even; f += 2) sum -= static_cast<std::uint32_t>(image[f] | (image[f + 1] << 8));
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint32_t>(sum + image.size());
}

void balance_pe_checksum(std::vector<std::uint8_t>& image, std::size_t word_offset) {
  PeLayout layout = parse_pe(image);
  std::size_t field = layout.optional_offset + opt_checksum;
  if (word_offset % 2 != 0 || word_offset + 2 > image.size() || (word_offset < field + 4 && word_offset + 2 > field)) {
    throw Error("PE: cannot balance the checksum at byte " + std::to_string(word_offset) + ": not an even word of the file outside CheckSum");
  }
  if (image[word_offset] != 0 || image[word_offset + 1] != 0) {
    throw Error("PE: cannot balance the checksum at byte " + std::to_string(word_offset) + ": the word there is not zero");
  }
  // CheckSum = fold(sum of words) + size, so the folded sum is CheckSum - size; adding w to it (one's
  // complement) gives 0xffff when w = 0xffff - folded.
  auto folded = static_cast<std::uint32_t>(get32(image, field) - image.size());
  if (folded > 0xffff) throw Error("PE: cannot balance the checksum: CheckSum does not hold the image's checksum");
  std::uint32_t word = 0xffff - folded;
  image[word_offset] = static_cast<std::uint8_t>(word & 0xff);
  image[word_offset + 1] = static_cast<std::uint8_t>(word >> 8);
  put32(image, field, static_cast<std::uint32_t>(0xffff + image.size()));
}

std::vector<std::uint8_t> remove_pe_signature(std::span<const std::uint8_t> image) {
  PeLayout layout = parse_pe(image);
  std::vector<std::uint8_t> out;
  reserve_on_huge_pages(out, image.size());
  out.assign(image.begin(), image.end());
  if (!layout.signed_image()) return out;
  const auto& cert = layout.directories[certificate_directory];
  std::uint64_t data_end = layout.size_of_headers;
  for (const auto& s : layout.sections) data_end = std::max<std::uint64_t>(data_end, std::uint64_t{s.raw_offset} + s.raw_size);
  if (cert.address < data_end) {
    malformed("the certificate table at offset " + hex(cert.address) + " (data directory 4) lies before the end of the section data " +
              hex(data_end));
  }
  // The table is the last thing in a signed file; anything after it (rare) is kept.
  out.erase(out.begin() + cert.address, out.begin() + cert.address + cert.size);
  std::size_t dir = directories_offset(layout) + certificate_directory * 8;
  put32(out, dir, 0);
  put32(out, dir + 4, 0);
  write_checksum(out, layout);
  return out;
}

std::vector<std::uint8_t> replace_pe_section(std::span<const std::uint8_t> input, std::size_t index,
                                             std::span<const std::uint8_t> contents) {
  std::vector<std::uint8_t> out;
  replace_pe_section(input, index, contents, out);
  return out;
}

void replace_pe_section(std::span<const std::uint8_t> input, std::size_t index, std::span<const std::uint8_t> contents,
                        std::vector<std::uint8_t>& out) {
  // A copy without the signature only when there is one: the input of an unsigned image is used as it is.
  std::vector<std::uint8_t> unsigned_image;
  std::span<const std::uint8_t> image = input;
  if (parse_pe(input).signed_image()) {
    unsigned_image = remove_pe_signature(input);
    image = unsigned_image;
  }
  PeLayout layout = parse_pe(image);
  if (index >= layout.sections.size()) {
    throw Error("PE: no section " + std::to_string(index) + " (the image has " + std::to_string(layout.sections.size()) + ")");
  }
  const PeSection target = layout.sections[index];
  if (contents.size() > 0xffffffffu - layout.section_alignment) malformed("new contents of " + describe(index, target) + " are too large");
  for (std::size_t d = 0; d < layout.directories.size(); ++d) {
    const auto& dir = layout.directories[d];
    if (d == certificate_directory || dir.size == 0) continue;
    if (dir.address >= target.virtual_address && dir.address - target.virtual_address < memory_size(target)) {
      throw Error("PE: cannot replace " + describe(index, target) + ": it holds the " + directory_names[d]);
    }
  }

  const auto new_virtual_size = static_cast<std::uint32_t>(contents.size());
  const auto new_raw_size = static_cast<std::uint32_t>(align_up(contents.size(), layout.file_alignment));
  const std::int64_t file_delta = std::int64_t{new_raw_size} - target.raw_size;

  // Memory: sections after the target move up when it would run into the next one.
  std::uint64_t new_end = std::uint64_t{target.virtual_address} + new_virtual_size;
  std::optional<std::uint32_t> next_address;
  for (const auto& s : layout.sections) {
    if (s.virtual_address > target.virtual_address && (!next_address || s.virtual_address < *next_address)) next_address = s.virtual_address;
  }
  std::uint32_t va_delta = 0;
  if (next_address && new_end > *next_address) va_delta = static_cast<std::uint32_t>(align_up(new_end - *next_address, layout.section_alignment));
  if (va_delta != 0) {
    // What may move: nothing that code refers to by address.
    std::vector<std::uint32_t> relocated_pages;
    if (layout.directories.size() > base_relocation_directory && layout.directories[base_relocation_directory].size != 0) {
      const auto& dir = layout.directories[base_relocation_directory];
      auto at = file_offset_of(layout, dir.address);
      if (!at) malformed("the base relocation table at RVA " + hex(dir.address) + " is in no section's raw data");
      need(image, *at, dir.size, "the base relocation table");
      for (std::size_t p = *at; p + 8 <= *at + dir.size;) {
        std::uint32_t page = get32(image, p);
        std::uint32_t block = get32(image, p + 4);
        if (block < 8) malformed("base relocation block at offset " + hex(p) + " has size " + std::to_string(block));
        relocated_pages.push_back(page);
        p += block;
      }
    }
    for (std::size_t i = 0; i < layout.sections.size(); ++i) {
      const auto& s = layout.sections[i];
      if (s.virtual_address <= target.virtual_address) continue;
      std::uint64_t end = std::uint64_t{s.virtual_address} + memory_size(s);
      auto inside = [&](std::uint64_t rva) { return rva >= s.virtual_address && rva < end; };
      std::string why;
      if (s.characteristics & (pe_section_code | pe_section_execute)) why = "holds code";
      if (why.empty() && inside(layout.entry_point)) why = "holds the entry point";
      for (std::size_t d = 0; why.empty() && d < layout.directories.size(); ++d) {
        if (d != certificate_directory && layout.directories[d].size != 0 && inside(layout.directories[d].address)) {
          why = std::string("holds the ") + directory_names[d];
        }
      }
      for (auto page : relocated_pages) {
        if (why.empty() && (inside(page) || (page < s.virtual_address && page + 0x1000 > s.virtual_address))) why = "has base relocations";
      }
      if (!why.empty()) {
        throw Error("PE: cannot grow " + describe(index, target) + " to " + std::to_string(contents.size()) + " bytes: " +
                    describe(i, s) + " after it at RVA " + hex(s.virtual_address) + " " + why + " and cannot move");
      }
    }
  }

  // File: everything after the target's raw data moves by file_delta.
  out.clear();  // keeps the capacity
  reserve_on_huge_pages(out, static_cast<std::size_t>(static_cast<std::int64_t>(image.size()) + file_delta));
  std::size_t cut = target.raw_size != 0 ? target.raw_offset : static_cast<std::size_t>(align_up(image.size(), layout.file_alignment));
  if (target.raw_size == 0) {
    // A section without file data (never the case for a UKI's) gets it at the end of the file.
    out.assign(image.begin(), image.end());
    out.resize(cut, 0);
  } else {
    out.assign(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(cut));
  }
  out.insert(out.end(), contents.begin(), contents.end());
  out.resize(cut + new_raw_size, 0);
  if (target.raw_size != 0) out.insert(out.end(), image.begin() + static_cast<std::ptrdiff_t>(cut + target.raw_size), image.end());
  const std::size_t old_end = target.raw_offset + target.raw_size;
  auto moved_offset = [&](std::uint32_t offset) {
    return target.raw_size != 0 && offset >= old_end ? static_cast<std::uint32_t>(std::int64_t{offset} + file_delta) : offset;
  };

  std::uint32_t size_of_image = 0;
  for (std::size_t i = 0; i < layout.sections.size(); ++i) {
    const auto& s = layout.sections[i];
    std::uint32_t va = s.virtual_address;
    std::uint32_t vsize = s.virtual_size;
    if (i == index) {
      vsize = new_virtual_size;
      put32(out, s.header_offset + 8, vsize);
      put32(out, s.header_offset + 16, new_raw_size);
      put32(out, s.header_offset + 20, static_cast<std::uint32_t>(cut));
    } else {
      if (va > target.virtual_address) va += va_delta;
      put32(out, s.header_offset + 12, va);
      if (s.raw_size != 0) put32(out, s.header_offset + 20, moved_offset(s.raw_offset));
    }
    std::uint32_t in_memory = vsize != 0 ? vsize : (i == index ? new_raw_size : s.raw_size);
    size_of_image = std::max(size_of_image, static_cast<std::uint32_t>(align_up(std::uint64_t{va} + in_memory, layout.section_alignment)));
  }
  size_of_image = std::max(size_of_image, static_cast<std::uint32_t>(align_up(layout.size_of_headers, layout.section_alignment)));
  const std::size_t o = layout.optional_offset;
  put32(out, o + opt_size_of_image, size_of_image);
  auto adjust = [&](std::size_t field) {
    put32(out, o + field, static_cast<std::uint32_t>(std::int64_t{get32(out, o + field)} + new_raw_size - target.raw_size));
  };
  if (target.characteristics & pe_section_code) adjust(opt_size_of_code);
  else if (target.characteristics & pe_section_initialized_data) adjust(opt_size_of_initialized_data);
  // COFF symbols and debug data are addressed by file offset.
  std::size_t symbols_field = layout.coff_offset + 4 + 8;
  if (std::uint32_t symbols = get32(out, symbols_field); symbols != 0) put32(out, symbols_field, moved_offset(symbols));
  if (layout.directories.size() > debug_directory && layout.directories[debug_directory].size != 0) {
    const auto& dir = layout.directories[debug_directory];
    if (auto at = file_offset_of(parse_pe(out), dir.address)) {
      for (std::size_t e = 0; e + debug_entry_size <= dir.size; e += debug_entry_size) {
        std::size_t field = *at + e + 24;  // PointerToRawData
        if (field + 4 <= out.size()) put32(out, field, moved_offset(get32(out, field)));
      }
    }
  }
  write_checksum(out, layout);
  parse_pe(out);  // the result must itself be well-formed
}

}  // namespace aggrik8s::builder
