#include "disk/sparse_file.hpp"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "core/permission_detail.hpp"
#include "core/positional_io.hpp"
#include "core/progress.hpp"
#include "disk/aligned_buffer.hpp"

namespace aggrik8s {

namespace {

constexpr std::size_t buffered_copy_bytes = std::size_t{8} << 20;

// Moves bytes between two files with copy_file_range, and through a buffer from the first refusal on:
// the source may be on another filesystem than the destination (EXDEV), or the kernel too old.
class DataCopier {
 public:
  explicit DataCopier(const SparseRangeCopy& copy) : copy_(copy) {}

  // Copies [from, to) of the source to the same place, shifted, in the destination.
  void copy(std::uint64_t from, std::uint64_t to) {
    while (from < to) {
      std::size_t want = static_cast<std::size_t>(to - from);
      ssize_t n = kernel_copy_ ? copy_in_kernel(from, want) : copy_through_buffer(from, want);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && kernel_copy_ && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
        kernel_copy_ = false;
        continue;
      }
      if (n < 0) throw_system_error("cannot copy " + copy_.source_name + " to " + copy_.destination_name, errno);
      if (n == 0) throw Error(copy_.source_name + " shrank while it was being copied");
      from += static_cast<std::uint64_t>(n);
    }
  }

 private:
  std::uint64_t destination_offset(std::uint64_t source_offset) const {
    return copy_.destination_offset + (source_offset - copy_.source_offset);
  }

  ssize_t copy_in_kernel(std::uint64_t from, std::size_t length) {
    auto in = static_cast<off_t>(from);
    auto out = static_cast<off_t>(destination_offset(from));
    return ::copy_file_range(copy_.source, &in, copy_.destination, &out, length, 0);
  }

  ssize_t copy_through_buffer(std::uint64_t from, std::size_t length) {
    // On huge pages and not zeroed (only bytes read into it are written), made on the first use.
    if (!buffer_) buffer_ = allocate_aligned(buffered_copy_bytes, false);
    ssize_t n = ::pread(copy_.source, buffer_.get(), std::min(buffered_copy_bytes, length), static_cast<off_t>(from));
    if (n > 0) {
      pwrite_all(copy_.destination, destination_offset(from), buffer_.get(), static_cast<std::size_t>(n),
                 copy_.destination_name);
    }
    return n;
  }

  const SparseRangeCopy& copy_;
  bool kernel_copy_ = true;
  AlignedBuffer buffer_;
};

// Makes [offset, offset + length) of fd read as zeros without allocating it where the filesystem can.
void punch_hole(int fd, std::uint64_t offset, std::uint64_t length, const std::string& name) {
  if (length == 0) return;
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) {
    return;
  }
  if (errno != EOPNOTSUPP && errno != ENOSYS) {
    throw_system_error(name + ": cannot punch a hole at offset " + std::to_string(offset), errno);
  }
  const std::vector<char> zeros(static_cast<std::size_t>(std::min<std::uint64_t>(length, buffered_copy_bytes)), 0);
  for (std::uint64_t done = 0; done < length;) {
    auto n = static_cast<std::size_t>(std::min<std::uint64_t>(length - done, zeros.size()));
    pwrite_all(fd, offset + done, zeros.data(), n, name);
    done += n;
  }
}

}  // namespace

std::vector<DataExtent> list_data_extents(int fd, std::uint64_t begin, std::uint64_t end, const std::string& name) {
  std::vector<DataExtent> extents;
  std::uint64_t position = begin;
  while (position < end) {
    off_t data = ::lseek(fd, static_cast<off_t>(position), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole from here to the end
      if (errno == EINVAL || errno == EOPNOTSUPP) return {DataExtent{begin, end - begin}};
      throw_system_error(name + ": cannot look for data (SEEK_DATA) at offset " + std::to_string(position), errno);
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) throw_system_error(name + ": cannot look for holes (SEEK_HOLE)", errno);
    std::uint64_t extent_begin = static_cast<std::uint64_t>(data);
    std::uint64_t extent_end = std::min(end, static_cast<std::uint64_t>(hole));
    if (extent_begin >= extent_end) break;
    extents.push_back(DataExtent{extent_begin, extent_end - extent_begin});
    position = extent_end;
  }
  return extents;
}

void copy_sparse_range(const SparseRangeCopy& copy) {
  const std::uint64_t end = copy.source_offset + copy.length;
  auto to_destination = [&](std::uint64_t source_offset) { return copy.destination_offset + (source_offset - copy.source_offset); };
  DataCopier copier(copy);
  std::uint64_t position = copy.source_offset;
  for (const DataExtent& extent : list_data_extents(copy.source, copy.source_offset, end, copy.source_name)) {
    if (copy.punch_holes) punch_hole(copy.destination, to_destination(position), extent.offset - position, copy.destination_name);
    copier.copy(extent.offset, extent.offset + extent.length);
    position = extent.offset + extent.length;
    if (copy.progress != nullptr) copy.progress->set_done(position - copy.source_offset);
  }
  if (copy.punch_holes) punch_hole(copy.destination, to_destination(position), end - position, copy.destination_name);
}

bool clone_file(const std::filesystem::path& from, const std::filesystem::path& to, mode_t permissions) {
  FileDescriptor in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw_file_error("cannot open " + from.string(), from, errno);
  FileDescriptor out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, permissions));
  if (!out) throw_system_error("cannot create " + to.string(), errno);
  // O_CREAT's mode applies only to a new file: a file replaced here gets `permissions` too (a node
  // image carries secrets once patched); and a symlink of that name is refused, not followed.
  if (::fchmod(out.get(), permissions) != 0) throw_system_error("cannot set the mode of " + to.string(), errno);
  if (::ioctl(out.get(), FICLONE, in.get()) == 0) return true;
  // EOPNOTSUPP: no shared extents here (ext4, tmpfs); EXDEV: another filesystem; EINVAL/ENOTTY: the
  // filesystem or kernel does not know the ioctl.
  if (errno == EOPNOTSUPP || errno == EXDEV || errno == EINVAL || errno == ENOTTY || errno == ENOSYS) return false;
  throw_system_error("cannot reflink " + from.string() + " to " + to.string(), errno);
}

namespace {

struct PhysicalExtent {
  std::uint64_t logical;
  std::uint64_t physical;
  std::uint64_t length;
};

// The file's extents that are plainly on the disk (not delayed, unwritten, inline, encoded or of
// unknown location); nullopt where the filesystem has no FIEMAP.
std::optional<std::vector<PhysicalExtent>> physical_extents(const std::filesystem::path& path, bool sync) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_file_error("cannot open " + path.string(), path, errno);
  constexpr std::uint32_t batch = 256;
  constexpr std::uint32_t unusable = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED |
                                     FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED |
                                     FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_UNWRITTEN;
  std::vector<std::uint64_t> buffer((sizeof(fiemap) + batch * sizeof(fiemap_extent)) / sizeof(std::uint64_t) + 1);
  std::vector<PhysicalExtent> extents;
  for (std::uint64_t start = 0;;) {
    std::fill(buffer.begin(), buffer.end(), 0);
    auto* map = reinterpret_cast<fiemap*>(buffer.data());
    map->fm_start = start;
    map->fm_length = FIEMAP_MAX_OFFSET - start;
    map->fm_flags = sync ? FIEMAP_FLAG_SYNC : 0;
    map->fm_extent_count = batch;
    if (::ioctl(fd.get(), FS_IOC_FIEMAP, map) != 0) {
      if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL) return std::nullopt;
      throw_system_error("cannot list the extents of " + path.string(), errno);
    }
    sync = false;  // the first call wrote the whole file's dirty pages
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    for (std::uint32_t i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& extent = map->fm_extents[i];
      if ((extent.fe_flags & unusable) == 0 && extent.fe_length != 0) {
        extents.push_back({extent.fe_logical, extent.fe_physical, extent.fe_length});
      }
      last = last || (extent.fe_flags & FIEMAP_EXTENT_LAST) != 0;
      start = extent.fe_logical + extent.fe_length;
    }
    if (last) break;
  }
  return extents;
}

}  // namespace

std::vector<DataExtent> same_blocks(const std::filesystem::path& file, const std::filesystem::path& other) {
  const auto mine = physical_extents(file, true);
  if (!mine || mine->empty()) return {};
  const auto theirs = physical_extents(other, false);
  if (!theirs) return {};
  // Both lists are in logical order: walk them together and keep the overlaps where a byte's
  // physical address is the same in both files.
  std::vector<DataExtent> same;
  auto a = mine->begin();
  auto b = theirs->begin();
  while (a != mine->end() && b != theirs->end()) {
    const std::uint64_t begin = std::max(a->logical, b->logical);
    const std::uint64_t end = std::min(a->logical + a->length, b->logical + b->length);
    if (begin < end && a->physical + (begin - a->logical) == b->physical + (begin - b->logical)) {
      same.push_back({begin, end - begin});
    }
    if (a->logical + a->length <= b->logical + b->length) {
      ++a;
    } else {
      ++b;
    }
  }
  return merge_extents(std::move(same));
}

void copy_sparse_file(const std::filesystem::path& from, const std::filesystem::path& to, mode_t permissions) {
  FileDescriptor in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw_file_error("cannot open " + from.string(), from, errno);
  // No O_TRUNC on an empty file (clone_file leaves `to` so where it cannot clone): ext4 writes a file
  // truncated to zero and then rewritten back to the disk when it is closed (its auto_da_alloc guard
  // for replace-by-truncate), and the close of a build's 800 MiB base copy waited 0.35 s for that.
  // Where the file has bytes to drop it is truncated as before.
  FileDescriptor out(::open(to.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, permissions));
  if (!out) throw_system_error("cannot create " + to.string(), errno);
  struct stat existing {};
  if (::fstat(out.get(), &existing) != 0) throw_system_error("cannot stat " + to.string(), errno);
  if (existing.st_size != 0 && ::ftruncate(out.get(), 0) != 0) throw_system_error("cannot truncate " + to.string(), errno);
  if (::ioctl(out.get(), FICLONE, in.get()) == 0) return;
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) throw_system_error("cannot stat " + from.string(), errno);
  auto size = static_cast<std::uint64_t>(st.st_size);
  ProgressTask progress("copy " + to.filename().string(), size);
  copy_sparse_range({.source = in.get(),
                     .source_name = from.string(),
                     .destination = out.get(),
                     .destination_name = to.string(),
                     .length = size,
                     .progress = &progress});
  if (::ftruncate(out.get(), static_cast<off_t>(size)) != 0) throw_system_error("cannot size " + to.string(), errno);
  progress.finish(true);
}

}  // namespace aggrik8s
