#include "builder/talos/read_only_file_mapping.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <utility>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"

namespace aggrik8s::builder {

ReadOnlyFileMapping::ReadOnlyFileMapping(const std::filesystem::path& path, Populate populate) {
  FileDescriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file) throw_system_error("cannot open " + path.string(), errno);
  struct stat st {};
  if (::fstat(file.get(), &st) != 0) throw_system_error("cannot stat " + path.string(), errno);
  if (st.st_size == 0) {
    file_ = std::move(file);
    return;
  }
  auto size = static_cast<std::size_t>(st.st_size);
  // MAP_POPULATE: the pages are in the cache already; map them all in one call instead of one fault each.
  int flags = MAP_PRIVATE | (populate == Populate::all ? MAP_POPULATE : 0);
  void* mapped = ::mmap(nullptr, size, PROT_READ, flags, file.get(), 0);
  if (mapped == MAP_FAILED) throw_system_error("cannot map " + path.string(), errno);
  data_ = static_cast<const std::uint8_t*>(mapped);
  size_ = size;
  file_ = std::move(file);
}

ReadOnlyFileMapping::~ReadOnlyFileMapping() { unmap(); }

ReadOnlyFileMapping::ReadOnlyFileMapping(ReadOnlyFileMapping&& other) noexcept
    : file_(std::move(other.file_)), data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

ReadOnlyFileMapping& ReadOnlyFileMapping::operator=(ReadOnlyFileMapping&& other) noexcept {
  if (this != &other) {
    unmap();
    file_ = std::move(other.file_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void ReadOnlyFileMapping::unmap() {
  if (data_ != nullptr) ::munmap(const_cast<std::uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
  file_ = FileDescriptor();
}

}  // namespace aggrik8s::builder
