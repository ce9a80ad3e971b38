#pragma once
// A block device for the disk-format fuzz targets: the fuzzer's bytes are the start of a disk of
// `size` bytes that reads as zeros past them. Real images are mostly zeros, and a FAT32 file system or
// a GPT backup header only exist on disks of some size, so a short input can still describe them.
// Writes go to 4 KiB pages kept in memory, so reading back what the parser wrote works as on a disk.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <unordered_map>

#include "disk/block_device.hpp"
#include "core/error.hpp"

namespace aggrik8s::fuzz {

class SparseFuzzDevice final : public BlockDevice {
 public:
  SparseFuzzDevice(const std::uint8_t* data, std::size_t length, std::uint64_t size, std::string name)
      : data_(data), length_(length), size_(std::max<std::uint64_t>(size, length)), name_(std::move(name)) {}

  std::uint64_t size() const override { return size_; }
  std::string name() const override { return name_; }
  void read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) override {
    check(offset, buffer.size());
    for (std::size_t done = 0; done < buffer.size();) {
      std::uint64_t at = offset + done;
      std::uint64_t page = at / page_size;
      std::size_t in_page = static_cast<std::size_t>(at % page_size);
      std::size_t n = std::min(buffer.size() - done, page_size - in_page);
      if (auto written = pages_.find(page); written != pages_.end()) {
        std::memcpy(buffer.data() + done, written->second.data() + in_page, n);
      } else {
        original(at, buffer.data() + done, n);
      }
      done += n;
    }
  }
  void write_at(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    check(offset, data.size());
    for (std::size_t done = 0; done < data.size();) {
      std::uint64_t at = offset + done;
      std::uint64_t page = at / page_size;
      std::size_t in_page = static_cast<std::size_t>(at % page_size);
      std::size_t n = std::min(data.size() - done, page_size - in_page);
      auto [written, inserted] = pages_.try_emplace(page);
      if (inserted) original(page * page_size, written->second.data(), page_size);
      std::memcpy(written->second.data() + in_page, data.data() + done, n);
      done += n;
    }
  }

 private:
  static constexpr std::size_t page_size = 4096;
  void check(std::uint64_t offset, std::size_t length) const {
    // The parsers promise to stay inside the device; a read or write past it is a bug in them.
    if (offset > size_ || length > size_ - offset) __builtin_trap();
  }
  // Reads [at, at + n) of the device as it was before any write (zeros past the input).
  void original(std::uint64_t at, std::uint8_t* out, std::size_t n) const {
    std::memset(out, 0, n);
    if (at >= size_) return;
    n = static_cast<std::size_t>(std::min<std::uint64_t>(n, size_ - at));
    if (at < length_) std::memcpy(out, data_ + at, static_cast<std::size_t>(std::min<std::uint64_t>(n, length_ - at)));
  }

  const std::uint8_t* data_;
  std::size_t length_;
  std::uint64_t size_;
  std::string name_;
  std::unordered_map<std::uint64_t, std::array<std::uint8_t, page_size>> pages_;
};

}  // namespace aggrik8s::fuzz
