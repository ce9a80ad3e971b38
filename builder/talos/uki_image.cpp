#include "builder/talos/uki_image.hpp"

#include <algorithm>
#include <bit>

#include "builder/talos/pe_image.hpp"
#include "builder/talos_kernel_args.hpp"
#include "core/error.hpp"
#include "core/huge_pages.hpp"

namespace aggrik8s::builder {

namespace {

std::string trimmed_text(const std::vector<std::uint8_t>& bytes) {
  std::string text(bytes.begin(), bytes.end());
  if (auto nul = text.find('\0'); nul != std::string::npos) text.resize(nul);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\t' || text.back() == '\r')) text.pop_back();
  return text;
}

std::vector<std::size_t> sections_named(const PeLayout& layout, const std::string& name) {
  std::vector<std::size_t> found;
  for (std::size_t i = 0; i < layout.sections.size(); ++i) {
    if (layout.sections[i].name == name) found.push_back(i);
  }
  return found;
}

}  // namespace

std::string uki_command_line_with(const std::string& command_line, const std::vector<std::string>& add_args) {
  // The input's text is kept as it is (quoting, spacing); only missing arguments are appended.
  std::string line = command_line;
  std::vector<std::string> present = split_kernel_args(line);
  for (const auto& arg : add_args) {
    if (std::find(present.begin(), present.end(), arg) != present.end()) continue;
    line += (line.empty() ? "" : " ") + arg;
    present.push_back(arg);
  }
  return line;
}

std::vector<std::string> uki_command_lines(std::span<const std::uint8_t> uki) {
  PeLayout layout = parse_pe(uki);
  std::vector<std::string> lines;
  for (std::size_t i : sections_named(layout, ".cmdline")) lines.push_back(trimmed_text(pe_section_contents(uki, layout.sections[i])));
  if (lines.empty()) throw Error("UKI: no .cmdline section: its kernel command line cannot be edited");
  return lines;
}

EditedUki edit_uki(std::span<const std::uint8_t> uki, const UkiEdit& edit) {
  EditedUki result;
  result.signature_removed = parse_pe(uki).signed_image();
  result.image = remove_pe_signature(uki);
  PeLayout layout = parse_pe(result.image);
  std::vector<std::size_t> cmdlines = sections_named(layout, ".cmdline");
  if (cmdlines.empty()) throw Error("UKI: no .cmdline section: its kernel command line cannot be edited");
  // Section indices stay the same across replacements; only addresses and offsets move.
  for (std::size_t index : cmdlines) {
    std::vector<std::uint8_t> old = pe_section_contents(result.image, parse_pe(result.image).sections[index]);
    std::string line = uki_command_line_with(trimmed_text(old), edit.add_args);
    std::vector<std::uint8_t> bytes(line.begin(), line.end());
    // Keep the terminator convention of the input (ukify writes none, some tools a NUL).
    if (!old.empty() && old.back() == '\0') bytes.push_back('\0');
    result.image = replace_pe_section(result.image, index, bytes);
    result.command_lines.push_back(line);
  }
  if (!edit.append_to_initrd.empty()) result.image = append_to_uki_initrd(result.image, edit.append_to_initrd);
  return result;
}

std::vector<std::uint8_t> append_to_uki_initrd(std::span<const std::uint8_t> uki, std::string_view append) {
  std::vector<std::uint8_t> out;
  std::vector<std::uint8_t> initrd;
  append_to_uki_initrd(uki, append, out, initrd);
  return out;
}

namespace {

// The one .initrd section an archive is appended to.
std::size_t initrd_section(const PeLayout& layout) {
  std::vector<std::size_t> initrds = sections_named(layout, ".initrd");
  if (initrds.size() != 1) {
    throw Error("UKI: expected one .initrd section to append to, found " + std::to_string(initrds.size()));
  }
  return initrds.front();
}

// The .initrd section's sizes with `append_size` bytes appended. The kernel unpacks concatenated
// initramfs archives and skips zero padding between them; newc archives start 4-byte aligned. The new
// section is zero-padded so that its size, and so the UKI's layout, is the same for every archive that
// ends in the same 4 KiB (per-node archives differ by a few bytes), ending 4 bytes short of a whole
// unit: its raw data, padded to FileAlignment, then has 4 bytes past VirtualSize, which the loader never
// reads, for the word that balances the checksum (balance_pe_checksum). So two nodes' UKIs differ only
// in their archives and that word, and each node's ISO hash can start from the template's state at the
// archive (iso_variant.hpp).
struct InitrdAppendSizes {
  std::size_t aligned = 0;  // where the archive starts in the section
  std::size_t padded = 0;   // the new VirtualSize
  std::size_t raw = 0;      // the new SizeOfRawData (padded rounded up to FileAlignment)
};
InitrdAppendSizes initrd_append_sizes(const PeLayout& layout, const PeSection& section, std::size_t append_size) {
  InitrdAppendSizes sizes;
  sizes.aligned = (std::size_t{section.virtual_size} + 3) / 4 * 4;
  std::size_t alignment = std::max<std::uint32_t>(layout.file_alignment, 1);
  std::size_t unit = std::max<std::size_t>(4096, std::bit_ceil(alignment));
  sizes.padded = (sizes.aligned + append_size + 4 + unit - 1) / unit * unit - 4;
  sizes.raw = (sizes.padded + alignment - 1) / alignment * alignment;
  return sizes;
}

// Room past VirtualSize for the balancing word (not with a FileAlignment that breaks the PE rules).
bool can_balance(const PeSection& section, const InitrdAppendSizes& sizes) {
  return sizes.raw >= sizes.padded + 4 && section.raw_offset % 2 == 0;
}

}  // namespace

void append_to_uki_initrd(std::span<const std::uint8_t> uki, std::string_view append, std::vector<std::uint8_t>& out,
                          std::vector<std::uint8_t>& initrd) {
  PeLayout layout = parse_pe(uki);
  std::size_t index = initrd_section(layout);
  const PeSection& section = layout.sections[index];
  std::size_t raw = std::min(section.virtual_size, section.raw_size);
  if (std::size_t{section.raw_offset} + raw > uki.size()) throw Error("UKI: .initrd raw data runs past the end of the file");
  InitrdAppendSizes sizes = initrd_append_sizes(layout, section, append.size());
  // Built in one buffer of its final size (no regrowth). Every byte written once (no zero fill
  // first), and every byte set: the scratch's old content never shows through.
  initrd.clear();
  reserve_on_huge_pages(initrd, sizes.padded);
  std::span<const std::uint8_t> contents = uki.subspan(section.raw_offset, raw);
  initrd.insert(initrd.end(), contents.begin(), contents.end());
  initrd.resize(sizes.aligned, 0);
  initrd.insert(initrd.end(), append.begin(), append.end());
  initrd.resize(sizes.padded, 0);
  replace_pe_section(uki, index, initrd, out);
  // The section keeps its file offset (replace_pe_section), so the word sits where uki_append_slot says.
  if (can_balance(section, sizes)) balance_pe_checksum(out, section.raw_offset + sizes.padded + 2);
}

std::optional<UkiAppendSlot> uki_append_slot(std::span<const std::uint8_t> base, std::size_t append_size) {
  PeLayout layout = parse_pe(base);
  const PeSection& section = layout.sections[initrd_section(layout)];
  InitrdAppendSizes sizes = initrd_append_sizes(layout, section, append_size);
  if (!can_balance(section, sizes) || section.raw_size == 0) return std::nullopt;
  UkiAppendSlot slot;
  slot.archive_offset = section.raw_offset + sizes.aligned;
  slot.length = sizes.padded - sizes.aligned;
  slot.balance_offset = section.raw_offset + sizes.padded + 2;
  slot.image_size = base.size() - section.raw_size + sizes.raw;
  return slot;
}

UkiSlotBytes uki_slot_bytes(const UkiAppendSlot& slot, std::span<const std::uint8_t> edited_region,
                            std::span<const std::uint8_t, 2> edited_balance, std::string_view append) {
  if (edited_region.size() != slot.length || append.size() > slot.length || slot.archive_offset % 2 != 0) {
    throw Error("internal: a UKI archive of " + std::to_string(append.size()) + " bytes does not fit the slot of " +
                std::to_string(slot.length));
  }
  UkiSlotBytes out;
  out.region.assign(append.begin(), append.end());
  out.region.resize(slot.length, 0);
  // Both UKIs' word sums are 0 modulo 0xffff (balance_pe_checksum), so the new word is the old one plus
  // what the region loses, minus what it gains, modulo 0xffff, in [0, 0xfffe] as balancing writes it.
  constexpr std::uint64_t m = 0xffff;
  std::uint64_t old_word = edited_balance[0] | (std::uint64_t{edited_balance[1]} << 8);
  std::uint64_t word = (old_word % m + pe_word_sum(edited_region) % m + m - pe_word_sum(out.region) % m) % m;
  out.balance = {static_cast<std::uint8_t>(word & 0xff), static_cast<std::uint8_t>(word >> 8)};
  return out;
}

}  // namespace aggrik8s::builder
