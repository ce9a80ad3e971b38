#pragma once
// A whole file mapped read-only. The first node's ISO is every other node's template: its bytes are
// compared with and hashed into every variant, so they are mapped from the page cache its write left
// them in, instead of being read into a fresh 128 MiB buffer (which cost a zero fill, a copy and
// ~32 000 page faults per build: docs/benchmarks.md, Talos section).
#include <cstdint>
#include <filesystem>
#include <span>

#include "core/file_descriptor.hpp"

namespace aggrik8s::builder {

class ReadOnlyFileMapping {
 public:
  // all: every page mapped up front (MAP_POPULATE), for bytes that are all read (hashed, compared);
  // on_demand: pages mapped as they are touched, for a few reads in a large file.
  enum class Populate { all, on_demand };
  ReadOnlyFileMapping() = default;
  // Throws Error naming the file when it cannot be opened or mapped. An empty file maps to no bytes.
  explicit ReadOnlyFileMapping(const std::filesystem::path& path, Populate populate = Populate::all);
  ~ReadOnlyFileMapping();
  ReadOnlyFileMapping(const ReadOnlyFileMapping&) = delete;
  ReadOnlyFileMapping& operator=(const ReadOnlyFileMapping&) = delete;
  ReadOnlyFileMapping(ReadOnlyFileMapping&& other) noexcept;
  ReadOnlyFileMapping& operator=(ReadOnlyFileMapping&& other) noexcept;

  std::span<const std::uint8_t> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  // The file the bytes were mapped from, kept open: copies of them (copy_file_range) read this inode
  // even if the path is removed or replaced meanwhile, as a cache's file may be by another build.
  int fd() const { return file_.get(); }

 private:
  void unmap();
  FileDescriptor file_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace aggrik8s::builder
