#include "disk/block_device.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "disk/zero_detection.hpp"
#include "core/error.hpp"
#include "core/permission_detail.hpp"
#include "core/positional_io.hpp"

namespace aggrik8s {

namespace {

// Holes are tracked by filesystems in blocks of this size (ext4, xfs, btrfs, tmpfs all use 4 KiB).
constexpr std::uint64_t hole_granularity = 4096;

}  // namespace

void BlockDevice::resize(std::uint64_t new_size) {
  throw Error(name() + ": cannot be resized (to " + std::to_string(new_size) + " bytes)");
}

void BlockDevice::check_range(const char* operation, std::uint64_t offset, std::uint64_t length) const {
  std::uint64_t device_size = size();
  if (offset > device_size || device_size - offset < length) {
    throw Error(name() + ": " + operation + " of " + std::to_string(length) + " bytes at offset " +
                std::to_string(offset) + " goes past the end of the device (" + std::to_string(device_size) +
                " bytes)");
  }
}

FileBlockDevice::FileBlockDevice(const std::filesystem::path& path, Access access)
    : path_(path), access_(access) {
  int flags = (access == Access::read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  fd_ = FileDescriptor(::open(path.c_str(), flags));
  if (!fd_) throw_file_error("cannot open image " + path.string(), path, errno);
  struct stat info {};
  if (::fstat(fd_.get(), &info) != 0) throw_system_error("cannot stat image " + path.string(), errno);
  if (S_ISBLK(info.st_mode)) {
    off_t end = ::lseek(fd_.get(), 0, SEEK_END);
    if (end < 0) throw_system_error("cannot find the size of " + path.string(), errno);
    size_ = static_cast<std::uint64_t>(end);
  } else {
    size_ = static_cast<std::uint64_t>(info.st_size);
  }
}

void FileBlockDevice::read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) {
  check_range("read", offset, buffer.size());
  pread_exactly(fd_.get(), offset, buffer.data(), buffer.size(), name());
}

void FileBlockDevice::write_fully(std::uint64_t offset, std::span<const std::uint8_t> data) {
  pwrite_all(fd_.get(), offset, data.data(), data.size(), name());
}

void FileBlockDevice::write_at(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (access_ == Access::read_only) throw Error(name() + ": opened read-only, cannot write");
  check_range("write", offset, data.size());
  written_.push_back(DataExtent{offset, data.size()});
  // Walk the data in hole-sized blocks; an all-zero block whose range is still a hole is dropped.
  // Consecutive blocks that must be written are merged into one pwrite.
  const std::uint64_t end = offset + data.size();
  std::uint64_t pending_start = offset;  // start of data not yet written or skipped
  std::uint64_t known_hole_end = 0;      // [.., known_hole_end) is a hole, learned from SEEK_DATA
  bool seek_data_works = true;
  std::uint64_t position = offset;
  auto slice = [&](std::uint64_t from, std::uint64_t to) {
    return data.subspan(static_cast<std::size_t>(from - offset), static_cast<std::size_t>(to - from));
  };
  while (position < end) {
    std::uint64_t block_end = std::min(end, (position / hole_granularity + 1) * hole_granularity);
    bool skip = false;
    if (seek_data_works && is_all_zero(slice(position, block_end))) {
      if (block_end <= known_hole_end) {
        skip = true;
      } else {
        off_t next_data = ::lseek(fd_.get(), static_cast<off_t>(position), SEEK_DATA);
        if (next_data < 0 && errno == ENXIO) {
          known_hole_end = size_;  // no data after position: the rest of the file is a hole
        } else if (next_data < 0) {
          seek_data_works = false;
        } else {
          known_hole_end = static_cast<std::uint64_t>(next_data);
        }
        skip = seek_data_works && block_end <= known_hole_end;
      }
    }
    if (skip) {
      if (pending_start < position) write_fully(pending_start, slice(pending_start, position));
      pending_start = block_end;
    }
    position = block_end;
  }
  if (pending_start < end) write_fully(pending_start, slice(pending_start, end));
}

void FileBlockDevice::resize(std::uint64_t new_size) {
  if (access_ == Access::read_only) throw Error(name() + ": opened read-only, cannot resize");
  if (::ftruncate(fd_.get(), static_cast<off_t>(new_size)) != 0) {
    throw_system_error(name() + ": cannot resize to " + std::to_string(new_size) + " bytes", errno);
  }
  size_ = new_size;
}

void FileBlockDevice::flush() {
  if (access_ == Access::read_only) return;
  if (::fdatasync(fd_.get()) != 0) throw_system_error(name() + ": fdatasync failed", errno);
}

MemoryBlockDevice::MemoryBlockDevice(std::uint64_t size, std::string name)
    : bytes_(static_cast<std::size_t>(size), 0), name_(std::move(name)) {}

MemoryBlockDevice::MemoryBlockDevice(std::vector<std::uint8_t> bytes, std::string name)
    : bytes_(std::move(bytes)), name_(std::move(name)) {}

void MemoryBlockDevice::read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) {
  check_range("read", offset, buffer.size());
  std::copy_n(bytes_.begin() + static_cast<std::ptrdiff_t>(offset), buffer.size(), buffer.begin());
}

void MemoryBlockDevice::write_at(std::uint64_t offset, std::span<const std::uint8_t> data) {
  check_range("write", offset, data.size());
  std::copy(data.begin(), data.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(offset));
}

void MemoryBlockDevice::resize(std::uint64_t new_size) { bytes_.resize(static_cast<std::size_t>(new_size), 0); }

SubrangeBlockDevice::SubrangeBlockDevice(BlockDevice& parent, std::uint64_t offset, std::uint64_t length,
                                         std::string name)
    : parent_(parent), offset_(offset), length_(length), name_(std::move(name)) {
  std::uint64_t parent_size = parent.size();
  if (offset > parent_size || parent_size - offset < length) {
    throw Error(name_ + ": range of " + std::to_string(length) + " bytes at offset " + std::to_string(offset) +
                " does not fit in " + parent.name() + " (" + std::to_string(parent_size) + " bytes)");
  }
}

void SubrangeBlockDevice::read_at(std::uint64_t offset, std::span<std::uint8_t> buffer) {
  check_range("read", offset, buffer.size());
  parent_.read_at(offset_ + offset, buffer);
}

void SubrangeBlockDevice::write_at(std::uint64_t offset, std::span<const std::uint8_t> data) {
  check_range("write", offset, data.size());
  parent_.write_at(offset_ + offset, data);
}

}  // namespace aggrik8s
