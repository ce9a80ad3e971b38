#include "disk/copied_ranges.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "disk/aligned_buffer.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/positional_io.hpp"

namespace aggrik8s {

CopiedRangeReader::CopiedRangeReader(int image_fd, std::string image_name, const CopiedFiles* copied)
    : image_fd_(image_fd), image_name_(std::move(image_name)) {
  if (copied == nullptr || copied->ranges.empty()) return;
  ranges_ = copied->ranges;
  std::sort(ranges_.begin(), ranges_.end(),
            [](const CopiedRange& a, const CopiedRange& b) { return a.image_offset < b.image_offset; });
  for (const auto& path : copied->paths) {
    file_names_.push_back(path.string());
    file_fds_.emplace_back(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!file_fds_.back()) throw_system_error("cannot open " + path.string() + " (copied into " + image_name_ + ")", errno);
  }
  for (const auto& range : ranges_) {
    if (range.file >= file_fds_.size()) {
      throw Error(image_name_ + ": a copied range names file " + std::to_string(range.file) + " of " +
                  std::to_string(file_fds_.size()));
    }
  }
}

void CopiedRangeReader::read(std::uint64_t offset, std::span<std::uint8_t> buffer) const {
  const std::uint64_t end = offset + buffer.size();
  auto range = std::lower_bound(ranges_.begin(), ranges_.end(), offset, [](const CopiedRange& r, std::uint64_t at) {
    return r.image_offset + r.length <= at;
  });
  for (std::uint64_t at = offset; at < end;) {
    std::uint8_t* out = buffer.data() + (at - offset);
    if (range == ranges_.end() || range->image_offset >= end) {
      pread_exactly(image_fd_, at, out, static_cast<std::size_t>(end - at), image_name_);
      return;
    }
    if (range->image_offset > at) {
      pread_exactly(image_fd_, at, out, static_cast<std::size_t>(range->image_offset - at), image_name_);
      at = range->image_offset;
      continue;
    }
    const std::uint64_t to = std::min(end, range->image_offset + range->length);
    auto n = static_cast<std::size_t>(to - at);
    const std::uint64_t within = at - range->image_offset;
    const std::uint64_t from = range->file_offset + within;
    // Short at the copied file's end or the range's data_length: the rest of its last block is zeros.
    const std::size_t wanted =
        static_cast<std::size_t>(std::min<std::uint64_t>(n, range->data_bytes() > within ? range->data_bytes() - within : 0));
    const std::size_t done = wanted == 0 ? 0 : pread_up_to(file_fds_[range->file].get(), from, out, wanted, file_names_[range->file]);
    std::memset(out + done, 0, n - done);
    at = to;
    ++range;
  }
}

std::vector<DataExtent> CopiedFiles::extents() const {
  std::vector<DataExtent> extents;
  for (const auto& r : ranges) extents.push_back({r.image_offset, r.length});
  return merge_extents(std::move(extents));
}

CopiedRangeWriter::CopiedRangeWriter(const std::filesystem::path& image, CopiedFiles copied, Mode mode, DirectWriteProbe probe)
    : image_name_(image.string()),
      copied_(std::move(copied)),
      // Opens the files here, so that a missing one is reported by the constructor.
      reader_(-1, image_name_, &copied_),
      flush_(mode == Mode::durable),
      probe_(probe) {
  bool aligned = true;
  for (const auto& r : copied_.ranges) {
    aligned = aligned && r.image_offset % io_alignment == 0 && r.length % io_alignment == 0;
  }
  if (aligned) {
    image_fd_ = FileDescriptor(::open(image.c_str(), O_WRONLY | O_CLOEXEC | O_DIRECT));
    direct_ = static_cast<bool>(image_fd_);
    // EINVAL: no O_DIRECT on this filesystem (tmpfs before Linux 6.6); anything else fails below too.
    if (!image_fd_ && errno != EINVAL) throw_system_error("cannot open " + image_name_, errno);
  }
  if (!image_fd_ || mode == Mode::cached) {
    FileDescriptor& fd = image_fd_ ? buffered_fd_ : image_fd_;
    fd = FileDescriptor(::open(image.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_system_error("cannot open " + image_name_, errno);
  }
  thread_ = std::thread([this] {
    try {
      run();
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

CopiedRangeWriter::~CopiedRangeWriter() {
  if (thread_.joinable()) thread_.join();
}

void CopiedRangeWriter::wait() {
  if (thread_.joinable()) thread_.join();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void CopiedRangeWriter::run() {
  // Each file mapped: a chunk wholly inside its file is written straight from the file's cached pages
  // (no copy into a buffer, which took the hashing's CPU); only a chunk running past the file's end or
  // the range's data (its last block, zeros after it), or one the O_DIRECT write cannot take from the
  // mapping (a tar member's bytes, at 512-byte offsets), goes through a buffer.
  struct Mapping {
    void* address = MAP_FAILED;
    std::uint64_t size = 0;
  };
  std::vector<Mapping> mappings;
  std::vector<FileDescriptor> fds;  // the files, kept open for FICLONERANGE
  auto unmap = [&] {
    for (auto& m : mappings) {
      if (m.address != MAP_FAILED) ::munmap(m.address, m.size);
    }
  };
  try {
    for (std::size_t i = 0; i < copied_.paths.size(); ++i) {
      FileDescriptor fd(::open(copied_.paths[i].c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) throw_system_error("cannot open " + copied_.paths[i].string(), errno);
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) throw_system_error("cannot stat " + copied_.paths[i].string(), errno);
      Mapping m;
      m.size = static_cast<std::uint64_t>(st.st_size);
      if (m.size > 0) {
        m.address = ::mmap(nullptr, m.size, PROT_READ, MAP_SHARED, fd.get(), 0);
        if (m.address == MAP_FAILED) throw_system_error("cannot map " + copied_.paths[i].string(), errno);
      }
      mappings.push_back(m);
      fds.push_back(std::move(fd));
    }
    constexpr std::size_t chunk_bytes = 8 << 20;
    AlignedBuffer bounce;
    // Mode::cached: the O_DIRECT writes are timed in windows of probe_.bytes; the first window the disk
    // takes slower than probe_.min_rate sends the rest through the page cache. Every window, not only
    // the first: a disk (or a rate limit) with a write cache takes a burst fast, then slows down.
    const bool probing = direct_ && buffered_fd_;
    std::uint64_t window = 0;
    auto window_start = std::chrono::steady_clock::now();
    std::uint64_t written = 0;
    auto after_write = [&](std::size_t length) {
      written += length;
      if (!probing || left_direct_ || (window += length) < probe_.bytes) return;
      const auto now = std::chrono::steady_clock::now();
      const double rate = static_cast<double>(window) / std::max(std::chrono::duration<double>(now - window_start).count(), 1e-9);
      window = 0;
      window_start = now;
      if (rate >= probe_.min_rate) return;
      log::debug(image_name_, ": O_DIRECT writes at ", static_cast<std::uint64_t>(rate / 1e6), " MB/s after ", written >> 20,
                 " MiB; the rest through the page cache (--no-sync)");
      std::swap(image_fd_, buffered_fd_);
      left_direct_ = true;
    };
    // Where the image and a file are on one filesystem that shares extents (XFS, btrfs), a range's
    // whole blocks are cloned (FICLONERANGE): nothing is read or written, the image's blocks are the
    // file's (a Pi build's 512 MiB of image archives, from the cache). Elsewhere they are written. On
    // btrfs an O_DIRECT write of checksummed data goes through the page cache anyway (Linux 6.x):
    // writing 562 MiB of preload cost a 1-node build 1.4-1.9 s of system time on a 2-core VM.
    bool cloning = true;
    auto clone_whole_blocks = [&](const CopiedRange& r) -> std::uint64_t {
      if (!cloning || r.image_offset % io_alignment != 0 || r.file_offset % io_alignment != 0) return 0;
      const std::uint64_t file_size = mappings[r.file].size;
      const std::uint64_t in_file = r.file_offset < file_size ? file_size - r.file_offset : 0;
      const std::uint64_t whole = std::min({r.length, r.data_bytes(), in_file}) / io_alignment * io_alignment;
      if (whole == 0) return 0;
      file_clone_range range{};
      range.src_fd = fds[r.file].get();
      range.src_offset = r.file_offset;
      range.src_length = whole;
      range.dest_offset = r.image_offset;
      if (::ioctl(image_fd_.get(), FICLONERANGE, &range) == 0) return whole;
      // Not a filesystem that clones (ext4, tmpfs: EOPNOTSUPP) or not one filesystem (EXDEV): the
      // rest is written. EINVAL (blocks over 4 KiB, an offset it will not take) fails only this range.
      if (errno != EINVAL) cloning = false;
      return 0;
    };
    for (const auto& r : copied_.ranges) {
      const Mapping& m = mappings[r.file];
      const std::uint64_t cloned = clone_whole_blocks(r);
      cloned_ += cloned;
      for (std::uint64_t at = cloned; at < r.length; at += chunk_bytes) {
        const auto length = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_bytes, r.length - at));
        const std::uint64_t from = r.file_offset + at;
        const void* data = nullptr;
        if (at + length <= r.data_bytes() && from + length <= m.size && (!direct_ || left_direct_ || from % io_alignment == 0)) {
          data = static_cast<const std::uint8_t*>(m.address) + from;
        } else {
          if (!bounce) bounce = allocate_aligned(chunk_bytes, false);  // read() fills every byte
          reader_.read(r.image_offset + at, std::span(bounce.get(), length));
          data = bounce.get();
        }
        pwrite_all(image_fd_.get(), r.image_offset + at, data, length, image_name_);
        after_write(length);
      }
    }
    if (cloned_ != 0) {
      log::debug(image_name_, ": ", cloned_ >> 20, " MiB shared with the files it holds a copy of (FICLONERANGE), ",
                 written >> 20, " MiB written");
    }
    if (flush_ && ::fdatasync(image_fd_.get()) != 0) throw_system_error("cannot flush " + image_name_ + " to disk", errno);
  } catch (...) {
    unmap();
    throw;
  }
  unmap();
}

}  // namespace aggrik8s
