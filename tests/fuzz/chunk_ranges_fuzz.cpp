// libFuzzer target for the bmap chunk-range store's text (disk/chunk_range_store.hpp), which a build
// reads back from its cache: every input either parses or is ignored, never crashes. What parses is
// consistent (ranges sorted, disjoint and inside their chunk) and formats back to text that parses
// to the same entries. Each input is also tried with its end line resealed, since a mutated store
// almost never keeps a valid seal and the fuzzer would otherwise stop at the checksum.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/sha256.hpp"
#include "disk/chunk_range_store.hpp"

using namespace aggrik8s;

namespace {

void check(const std::string& text) {
  const auto entries = parse_chunk_ranges(text, 4096, 1024, "fuzz");
  if (!entries) return;
  for (const auto& [key, ranges] : entries->chunks) {
    const std::uint64_t blocks = key.second / 4096 + (key.second % 4096 != 0 ? 1 : 0);
    std::uint64_t next = 0;
    for (const auto& range : ranges) {
      if (range.first_block < next || range.first_block > range.last_block || range.last_block >= blocks) std::abort();
      next = range.last_block + 1;
    }
  }
  const auto again = parse_chunk_ranges(format_chunk_ranges(*entries, 4096, 1024), 4096, 1024, "fuzz");
  if (!again || again->chunks != entries->chunks) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check(text);
  const std::size_t end = text.rfind("end ");
  const std::string body = end == std::string::npos ? text : text.substr(0, end);
  if (!body.empty() && body.back() == '\n') check(body + "end " + Sha256::of(body).hex() + "\n");
  return 0;
}
