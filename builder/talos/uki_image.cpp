#include "builder/talos/uki_image.hpp"

#include <algorithm>

#include "builder/talos/pe_image.hpp"
#include "builder/talos/talos_kernel_args.hpp"
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

void append_to_uki_initrd(std::span<const std::uint8_t> uki, std::string_view append, std::vector<std::uint8_t>& out,
                          std::vector<std::uint8_t>& initrd) {
  PeLayout layout = parse_pe(uki);
  std::vector<std::size_t> initrds = sections_named(layout, ".initrd");
  if (initrds.size() != 1) {
    throw Error("UKI: expected one .initrd section to append to, found " + std::to_string(initrds.size()));
  }
  const PeSection& section = layout.sections[initrds.front()];
  // The kernel unpacks concatenated initramfs archives and skips zero padding between them; newc
  // archives start 4-byte aligned. Built in one buffer of its final size (no regrowth).
  std::size_t aligned = (std::size_t{section.virtual_size} + 3) / 4 * 4;
  std::size_t raw = std::min(section.virtual_size, section.raw_size);
  if (std::size_t{section.raw_offset} + raw > uki.size()) throw Error("UKI: .initrd raw data runs past the end of the file");
  // Every byte written once (no zero fill first), and every byte set: the scratch's old content never
  // shows through.
  initrd.clear();
  reserve_on_huge_pages(initrd, aligned + append.size());
  std::span<const std::uint8_t> contents = uki.subspan(section.raw_offset, raw);
  initrd.insert(initrd.end(), contents.begin(), contents.end());
  initrd.resize(aligned, 0);
  initrd.insert(initrd.end(), append.begin(), append.end());
  replace_pe_section(uki, initrds.front(), initrd, out);
}

}  // namespace aggrik8s::builder
