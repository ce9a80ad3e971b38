#include "disk/image_patch.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>

#include "core/huge_pages.hpp"

namespace aggrik8s {

void ImagePatch::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.empty()) return;
  const std::uint64_t end = offset + data.size();
  // Runs that overlap or touch [offset, end) become one run with the new bytes over them. Their union
  // with the new range is contiguous, so the new run has no gap that is not the new data.
  auto first = runs_.upper_bound(offset);
  if (first != runs_.begin()) {
    auto before = std::prev(first);
    if (before->first + before->second.size() >= offset) first = before;
  }
  auto last = first;
  std::uint64_t begin = offset;
  std::uint64_t new_end = end;
  while (last != runs_.end() && last->first <= end) {
    begin = std::min(begin, last->first);
    new_end = std::max(new_end, last->first + last->second.size());
    ++last;
  }
  if (first == last) {
    std::vector<std::uint8_t> bytes;
    reserve_on_huge_pages(bytes, data.size());
    bytes.assign(data.begin(), data.end());
    runs_.emplace(offset, std::move(bytes));
    return;
  }
  if (std::next(first) == last && first->first <= offset && new_end == first->first + first->second.size()) {
    // Inside one run (libext2fs rewriting a bitmap or inode table block): overwrite in place.
    std::memcpy(first->second.data() + (offset - first->first), data.data(), data.size());
    return;
  }
  if (first->first == begin) {
    // The first run grows into the joined one (libext2fs writing a file's data block after block
    // appends to one run): its bytes stay where they are and its capacity grows geometrically, on
    // huge pages once large (core/huge_pages.hpp: fresh 4 KiB pages fault in at 10-30 us on the
    // project's VMs), so N appends copy O(N) bytes instead of a new run of all of them each time.
    std::vector<std::uint8_t>& joined = first->second;
    const auto joined_size = static_cast<std::size_t>(new_end - begin);
    if (joined.capacity() < joined_size) reserve_on_huge_pages(joined, std::max(joined_size, 2 * joined.capacity()));
    joined.resize(joined_size);
    for (auto run = std::next(first); run != last; ++run) {
      std::memcpy(joined.data() + (run->first - begin), run->second.data(), run->second.size());
    }
    std::memcpy(joined.data() + (offset - begin), data.data(), data.size());
    runs_.erase(std::next(first), last);
    return;
  }
  std::vector<std::uint8_t> joined(static_cast<std::size_t>(new_end - begin));
  for (auto run = first; run != last; ++run) {
    std::memcpy(joined.data() + (run->first - begin), run->second.data(), run->second.size());
  }
  std::memcpy(joined.data() + (offset - begin), data.data(), data.size());
  runs_.erase(first, last);
  runs_.emplace(begin, std::move(joined));
}

void ImagePatch::apply(std::uint64_t offset, std::span<std::uint8_t> buffer) const {
  const std::uint64_t end = offset + buffer.size();
  auto run = runs_.upper_bound(offset);
  if (run != runs_.begin()) --run;
  for (; run != runs_.end() && run->first < end; ++run) {
    const std::uint64_t from = std::max(offset, run->first);
    const std::uint64_t to = std::min(end, run->first + run->second.size());
    if (from >= to) continue;
    std::memcpy(buffer.data() + (from - offset), run->second.data() + (from - run->first), static_cast<std::size_t>(to - from));
  }
}

std::vector<DataExtent> ImagePatch::extents() const {
  std::vector<DataExtent> extents;
  extents.reserve(runs_.size());
  for (const auto& [offset, bytes] : runs_) extents.push_back(DataExtent{offset, bytes.size()});
  return merge_extents(std::move(extents));
}

PatchedFileBlockDevice::PatchedFileBlockDevice(const std::filesystem::path& base, std::string name,
                                               const CopiedFiles* copied)
    : base_(base, FileBlockDevice::Access::read_only), name_(std::move(name)), reader_(base_.fd(), base.string(), copied) {}

void PatchedFileBlockDevice::read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) {
  check_range("read", offset, buffer.size());
  reader_.read(offset, buffer);
  patch_.apply(offset, buffer);
}

void PatchedFileBlockDevice::write_at(std::uint64_t offset, std::span<const std::uint8_t> data) {
  check_range("write", offset, data.size());
  patch_.write(offset, data);
}

void write_image_patch(const ImagePatch& patch, const std::filesystem::path& image) {
  FileBlockDevice device(image, FileBlockDevice::Access::read_write);
  for (const auto& [offset, bytes] : patch.runs()) device.write_at(offset, bytes);
}

}  // namespace aggrik8s
