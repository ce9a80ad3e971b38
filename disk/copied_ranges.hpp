#pragma once
// Ranges of an image file whose bytes are a copy of other files' (the image archives a Pi build
// preloads), written there past the page cache (O_DIRECT). Whoever reads the image meanwhile (its
// hashes, a copy of it for another node) reads those ranges from the files instead: their pages are
// cached, the image's are not, and the write may still be in flight.
#include <cstdint>
#include <exception>
#include <filesystem>
#include <limits>
#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "disk/data_extent.hpp"
#include "core/file_descriptor.hpp"

namespace aggrik8s {

// `length` bytes of the image at `image_offset` are file number `file`'s bytes at `file_offset`; past
// `data_length` of them, or where the file ends first (its last, partial block), they are zeros. A
// data_length shorter than the range is a file placed from the middle of another (a member of an
// uncompressed tar) whose last block ends before the next member's bytes.
struct CopiedRange {
  std::uint64_t image_offset = 0;
  std::uint64_t length = 0;
  std::size_t file = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t data_length = std::numeric_limits<std::uint64_t>::max();

  // The range's bytes that are the file's (the rest are zeros), up to the file's end.
  std::uint64_t data_bytes() const { return std::min(length, data_length); }
};

struct CopiedFiles {
  std::vector<std::filesystem::path> paths;
  std::vector<CopiedRange> ranges;  // disjoint
  // The image's own data extents (SEEK_DATA) as listed before the writes started, for readers that
  // need them meanwhile: ext4 holds the image's inode lock through each O_DIRECT write that allocates
  // blocks, and SEEK_DATA waits for it (0.5 s of a 1-node Pi build's hashing, 61 lseek calls).
  // Not set: list them from the image.
  std::optional<std::vector<DataExtent>> image_extents;

  // The ranges as image extents, sorted and merged (data, whether or not the image has them yet).
  std::vector<DataExtent> extents() const;
};

// Reads an image's bytes, taking the copied ranges from the copied file and the rest from `image_fd`.
class CopiedRangeReader {
 public:
  // `copied` may be null: everything is then read from the image.
  CopiedRangeReader(int image_fd, std::string image_name, const CopiedFiles* copied);
  void read(std::uint64_t offset, std::span<std::uint8_t> buffer) const;

 private:
  int image_fd_;
  std::string image_name_;
  std::vector<CopiedRange> ranges_;  // sorted
  std::vector<std::string> file_names_;
  std::vector<FileDescriptor> file_fds_;
};

// CopiedRangeWriter::Mode::cached: the writes go with O_DIRECT (where it can be used), timed every
// `bytes`; once the disk takes such a window at less than `min_rate` bytes a second, the rest goes
// through the page cache.
struct DirectWriteProbe {
  std::uint64_t bytes = 16 << 20;
  double min_rate = 1e9;
};

// Writes copied ranges into the image on a thread of its own, with O_DIRECT where the image's
// filesystem allows it and every range is in whole 4 KiB blocks (otherwise, or in Mode::cached on a
// slow disk, through the page cache):
// the bytes go from the files' cached pages to the disk without becoming a second set of page-cache
// pages (new pages cost this project's VMs 0.4-1.0 s of system time per 512 MiB; docs/benchmarks.md),
// and the build goes on meanwhile. Where the image and a file share a filesystem that clones (XFS,
// btrfs), a range's whole blocks are not written at all but cloned from the file (FICLONERANGE).
// Readers of the image use CopiedRangeReader until wait() returns.
class CopiedRangeWriter {
 public:
  // How a writer ends: `durable`, its writes go past the page cache where they can (O_DIRECT) and the
  // image is then fdatasync'ed on the same thread (its final fdatasync has nothing left to wait for).
  // `cached` (a build with --no-sync) waits for no disk, so it takes whichever path hands the bytes
  // over sooner: O_DIRECT while the disk keeps up (see DirectWriteProbe), else the page cache. On a
  // 100 MB/s disk, waiting for 512 MiB of O_DIRECT writes made a 1-node build 3.5 s instead of
  // 1.6 s; on a fast one, the page-cache pages (1.3 GiB: 2.4 s of system time on a 2-core VM, beside
  // the image's SHA-256) made it 1.9-2.7 s instead of 1.0 s (docs/benchmarks.md).
  enum class Mode { durable, cached };
  // Starts writing `copied.ranges` of `image`, which must exist.
  CopiedRangeWriter(const std::filesystem::path& image, CopiedFiles copied, Mode mode, DirectWriteProbe probe = {});
  CopiedRangeWriter(const CopiedRangeWriter&) = delete;
  CopiedRangeWriter& operator=(const CopiedRangeWriter&) = delete;
  // Waits for the thread; an error it met is dropped (wait() is where errors are reported).
  ~CopiedRangeWriter();
  // Waits until every range is written (not flushed: the image's fdatasync does that); rethrows the
  // thread's error, naming the image or the file.
  void wait();
  // Whether the writes start with O_DIRECT.
  bool direct() const { return direct_; }
  // After wait(): whether a slow window (Mode::cached) sent the rest of the writes through the page cache.
  bool left_direct() const { return left_direct_; }
  // After wait(): the bytes cloned from the files (FICLONERANGE) instead of written.
  std::uint64_t cloned_bytes() const { return cloned_; }

 private:
  void run();

  std::string image_name_;
  CopiedFiles copied_;
  CopiedRangeReader reader_;  // copied_'s files, for chunks running past a file's end
  FileDescriptor image_fd_;     // O_DIRECT where direct_, until left_direct_
  FileDescriptor buffered_fd_;  // Mode::cached with direct_: where the writes go once the disk is slow
  bool direct_ = false;
  bool left_direct_ = false;  // set by the thread, read after it is joined
  std::uint64_t cloned_ = 0;  // likewise
  bool flush_ = false;
  DirectWriteProbe probe_;
  std::thread thread_;
  std::exception_ptr error_;
};

}  // namespace aggrik8s
