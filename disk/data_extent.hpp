#pragma once
// Byte ranges of a file: the data extents the filesystem reports (bmap), or the ranges an editor wrote
// (ext4, FAT), which a build uses to hash again only what a node's edits changed.
#include <algorithm>
#include <cstdint>
#include <vector>

namespace aggrik8s {

// [offset, offset + length) of a file.
struct DataExtent {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  friend bool operator==(const DataExtent&, const DataExtent&) = default;
};

// Sorted, with overlapping and touching extents joined and empty ones dropped.
inline std::vector<DataExtent> merge_extents(std::vector<DataExtent> extents) {
  std::erase_if(extents, [](const DataExtent& e) { return e.length == 0; });
  std::sort(extents.begin(), extents.end(), [](const DataExtent& a, const DataExtent& b) { return a.offset < b.offset; });
  std::vector<DataExtent> merged;
  for (const auto& e : extents) {
    if (!merged.empty() && e.offset <= merged.back().offset + merged.back().length) {
      merged.back().length = std::max(merged.back().offset + merged.back().length, e.offset + e.length) - merged.back().offset;
    } else {
      merged.push_back(e);
    }
  }
  return merged;
}

// The bytes of `extents` outside `removed`, sorted and merged (either list in any order).
inline std::vector<DataExtent> subtract_extents(const std::vector<DataExtent>& extents, const std::vector<DataExtent>& removed) {
  const std::vector<DataExtent> cut = merge_extents(removed);
  std::vector<DataExtent> left;
  for (const DataExtent& extent : merge_extents(extents)) {
    std::uint64_t at = extent.offset;
    const std::uint64_t end = extent.offset + extent.length;
    auto next = std::lower_bound(cut.begin(), cut.end(), at,
                                 [](const DataExtent& e, std::uint64_t x) { return e.offset + e.length <= x; });
    for (; next != cut.end() && next->offset < end; ++next) {
      if (next->offset > at) left.push_back({at, next->offset - at});
      at = std::max(at, next->offset + next->length);
    }
    if (at < end) left.push_back({at, end - at});
  }
  return left;
}

}  // namespace aggrik8s
