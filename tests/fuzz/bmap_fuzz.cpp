// libFuzzer target for the .bmap reader (expat underneath): every input either parses or throws
// aggrik8s::Error naming the file. A bmap that parses is consistent (sorted, disjoint ranges inside
// the image, counts that add up), and formatting it gives a file that parses back to the same bmap.
// A mutated file almost never keeps a valid BmapFileChecksum, which would stop the fuzzer at the
// checksum; so each input is also parsed a second time with its checksum field recomputed, which lets
// the fuzzer reach the checks behind it.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "disk/bmap.hpp"
#include "core/error.hpp"
#include "core/sha256.hpp"

using namespace aggrik8s;

namespace {

void check(std::string_view text) {
  Bmap bmap;
  try {
    bmap = parse_bmap(text, "fuzz.bmap");
  } catch (const Error&) {
    return;
  }
  std::uint64_t previous_end = 0;
  for (const auto& range : bmap.ranges) {
    if (range.first_block > range.last_block || range.last_block >= bmap.blocks_count()) std::abort();
    if (range.first_block < previous_end) std::abort();
    previous_end = range.last_block + 1;
  }
  if (!(parse_bmap(format_bmap(bmap), "formatted.bmap") == bmap)) std::abort();
}

// The text with the 64 characters after "<BmapFileChecksum>" and blanks set to the checksum bmaptool
// would compute; empty when there is no such field.
std::string with_valid_checksum(std::string_view text) {
  const std::string_view tag = "<BmapFileChecksum>";
  std::size_t at = text.find(tag);
  if (at == std::string_view::npos) return {};
  at += tag.size();
  while (at < text.size() && (text[at] == ' ' || text[at] == '\n' || text[at] == '\t')) ++at;
  if (text.size() - at < 64) return {};
  std::string fixed(text);
  fixed.replace(at, 64, std::string(64, '0'));
  fixed.replace(at, 64, Sha256::of(fixed).hex());
  return fixed;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  check(text);
  std::string fixed = with_valid_checksum(text);
  if (!fixed.empty()) check(fixed);
  return 0;
}
