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

}  // namespace aggrik8s
