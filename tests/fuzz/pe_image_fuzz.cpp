// libFuzzer target for the PE/COFF reader and section editor behind the UKI command-line edit: every
// input either parses or throws aggrik8s::Error (never crashes, never reads past the buffer), and a
// section replaced in a parsed image gives an image that parses again with the new contents.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "builder/talos/pe_image.hpp"
#include "core/error.hpp"

using namespace aggrik8s::builder;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> image(data, size);
  PeLayout layout;
  try {
    layout = parse_pe(image);
  } catch (const aggrik8s::Error&) {
    return 0;
  }
  (void)pe_checksum(image);
  for (std::size_t i = 0; i < layout.sections.size(); ++i) {
    // Sections are loaded zero-filled to their virtual size; keep the fuzzer's memory bounded.
    if (layout.sections[i].virtual_size > (16u << 20)) continue;
    try {
      (void)pe_section_contents(image, layout.sections[i]);
    } catch (const aggrik8s::Error&) {
    }
  }
  try {
    (void)remove_pe_signature(image);
  } catch (const aggrik8s::Error&) {
  }
  if (layout.sections.empty()) return 0;
  const std::string replacement = "talos.platform=metal console=ttyS0 talos.config=metal-iso";
  std::span<const std::uint8_t> contents(reinterpret_cast<const std::uint8_t*>(replacement.data()), replacement.size());
  std::size_t index = size % layout.sections.size();
  std::vector<std::uint8_t> edited;
  try {
    edited = replace_pe_section(image, index, contents);
  } catch (const aggrik8s::Error&) {
    return 0;
  }
  PeLayout again = parse_pe(edited);  // an Error here escapes: the editor wrote a broken image
  if (again.sections.size() != layout.sections.size()) std::abort();
  std::vector<std::uint8_t> read_back = pe_section_contents(edited, again.sections[index]);
  if (read_back.size() != contents.size() || !std::equal(contents.begin(), contents.end(), read_back.begin())) {
    std::abort();
  }
  return 0;
}
