#include "disk/ext4_filesystem.hpp"

// libext2fs and com_err are C headers full of macros; they come in through the pkg-config include
// path of a system prefix (/usr/include), so GCC does not warn about them under our strict flags.
// No pragma is needed with e2fsprogs 1.47.0; if a newer version warns, wrap these includes in
// #pragma GCC diagnostic push / ignored rather than loosening the flags for the whole target.
// com_err.h has no extern "C" guard of its own (ext2fs.h does).
extern "C" {
#include <et/com_err.h>
}
#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "disk/aligned_buffer.hpp"
#include "disk/sparse_file.hpp"
#include "disk/zero_detection.hpp"
#include "core/error.hpp"
#include "core/positional_io.hpp"
#include "core/file_descriptor.hpp"
#include "core/log.hpp"
#include "core/read_ahead.hpp"
#include "core/subprocess.hpp"
#include "disk/block_device.hpp"

namespace aggrik8s {

namespace {

// Data is moved in chunks of this size: big enough that a 1 GiB archive is a few hundred large
// writes, small enough not to matter for memory. A multiple of every ext4 block size.
constexpr std::size_t copy_chunk_bytes = std::size_t{4} << 20;

// Incompatible features this code writes correctly. libext2fs itself supports more (inline_data,
// casefold, encrypt, ea_inode...), but writing files into such a filesystem needs handling we do not
// do (inline data, name folding, encryption policies, xattr inodes), so they are refused by name.
constexpr std::uint32_t writable_incompat_features =
    EXT2_FEATURE_INCOMPAT_FILETYPE | EXT2_FEATURE_INCOMPAT_META_BG | EXT3_FEATURE_INCOMPAT_EXTENTS |
    EXT4_FEATURE_INCOMPAT_64BIT | EXT4_FEATURE_INCOMPAT_FLEX_BG | EXT4_FEATURE_INCOMPAT_CSUM_SEED |
    EXT4_FEATURE_INCOMPAT_LARGEDIR;

struct FeatureName {
  std::uint32_t bit;
  const char* name;
};
constexpr FeatureName incompat_feature_names[] = {
    {EXT2_FEATURE_INCOMPAT_COMPRESSION, "compression"}, {EXT3_FEATURE_INCOMPAT_JOURNAL_DEV, "journal_dev"},
    {EXT4_FEATURE_INCOMPAT_MMP, "mmp"},                 {EXT4_FEATURE_INCOMPAT_EA_INODE, "ea_inode"},
    {EXT4_FEATURE_INCOMPAT_DIRDATA, "dirdata"},         {EXT4_FEATURE_INCOMPAT_INLINE_DATA, "inline_data"},
    {EXT4_FEATURE_INCOMPAT_ENCRYPT, "encrypt"},         {EXT4_FEATURE_INCOMPAT_CASEFOLD, "casefold"},
};
// Read-only-compatible features that make our writes wrong: quota files would not be updated,
// bigalloc allocates clusters, shared_blocks/readonly forbid writing, orphan_present needs e2fsck.
constexpr FeatureName refused_ro_compat_feature_names[] = {
    {EXT4_FEATURE_RO_COMPAT_QUOTA, "quota"},
    {EXT4_FEATURE_RO_COMPAT_BIGALLOC, "bigalloc"},
    {EXT4_FEATURE_RO_COMPAT_READONLY, "read-only"},
    {EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS, "shared_blocks"},
    {EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT, "orphan_present"},
};

void register_error_messages() {
  static std::once_flag once;
  std::call_once(once, [] { initialize_ext2_error_table(); });
}

std::string describe_errcode(errcode_t code) { return error_message(code); }

std::string device_with_offset(const std::filesystem::path& image, std::uint64_t byte_offset) {
  // e2fsprogs splits the device name at the first '?' into file name and io options.
  if (image.string().find('?') != std::string::npos) {
    throw Error("the image path " + image.string() +
                " contains '?', which e2fsprogs tools read as the start of io options; rename it");
  }
  return image.string() + "?offset=" + std::to_string(byte_offset);
}

std::vector<std::string> split_path(const std::string& path) {
  if (path.empty() || path.front() != '/') throw Error("ext4 path '" + path + "' is not absolute");
  std::vector<std::string> components;
  std::size_t start = 1;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string component = path.substr(start, slash - start);
    if (!component.empty() && component != ".") {
      if (component.size() > EXT2_NAME_LEN) {
        throw Error("ext4 path '" + path + "': the name '" + component + "' is longer than 255 bytes");
      }
      components.push_back(std::move(component));
    }
    start = slash + 1;
  }
  return components;
}

std::string join_path(const std::vector<std::string>& components, std::size_t count) {
  std::string path = "/";
  for (std::size_t i = 0; i < count; ++i) {
    if (i > 0) path += '/';
    path += components[i];
  }
  return path;
}

Ext4FileType file_type_of_mode(std::uint16_t mode) {
  switch (mode & 0170000) {
    case 0040000: return Ext4FileType::directory;
    case 0120000: return Ext4FileType::symlink;
    case 0020000: return Ext4FileType::character_device;
    case 0060000: return Ext4FileType::block_device;
    case 0010000: return Ext4FileType::fifo;
    case 0140000: return Ext4FileType::socket;
    default: return Ext4FileType::regular;
  }
}

Ext4FileType file_type_of_dirent(int type) {
  switch (type) {
    case EXT2_FT_DIR: return Ext4FileType::directory;
    case EXT2_FT_SYMLINK: return Ext4FileType::symlink;
    case EXT2_FT_CHRDEV: return Ext4FileType::character_device;
    case EXT2_FT_BLKDEV: return Ext4FileType::block_device;
    case EXT2_FT_FIFO: return Ext4FileType::fifo;
    case EXT2_FT_SOCK: return Ext4FileType::socket;
    default: return Ext4FileType::regular;
  }
}

}  // namespace

std::uint16_t file_type_mode_bits(Ext4FileType type) {
  switch (type) {
    case Ext4FileType::directory: return 0040000;
    case Ext4FileType::symlink: return 0120000;
    case Ext4FileType::character_device: return 0020000;
    case Ext4FileType::block_device: return 0060000;
    case Ext4FileType::fifo: return 0010000;
    case Ext4FileType::socket: return 0140000;
    case Ext4FileType::regular: return 0100000;
  }
  return 0100000;
}

namespace {

// The directory entry type byte for an inode's mode (what ext2fs_link records with the filetype feature).
int dirent_type_of_mode(std::uint16_t mode) {
  switch (mode & 0170000) {
    case 0040000: return EXT2_FT_DIR;
    case 0120000: return EXT2_FT_SYMLINK;
    case 0020000: return EXT2_FT_CHRDEV;
    case 0060000: return EXT2_FT_BLKDEV;
    case 0010000: return EXT2_FT_FIFO;
    case 0140000: return EXT2_FT_SOCK;
    default: return EXT2_FT_REG_FILE;
  }
}

ext2_inode* small(ext2_inode_large& inode) { return reinterpret_cast<ext2_inode*>(&inode); }

// Whether a large-inode field at `field_offset` (of `field_size` bytes) is present in this inode:
// the extra space after the 128-byte base is i_extra_isize bytes long and may predate a field.
bool has_extra_field(const ext2_inode_large& inode, std::size_t field_offset, std::size_t field_size) {
  return inode.i_extra_isize != 0 &&
         EXT2_GOOD_OLD_INODE_SIZE + std::size_t{inode.i_extra_isize} >= field_offset + field_size;
}

// The kernel's encoding (ext4_encode_extra_time): 32 signed bits in the base field, two more epoch
// bits and the nanoseconds in the _extra field.
void encode_time(const Ext4Timestamp& time, __u32& base, __u32* extra) {
  auto low = static_cast<std::uint32_t>(static_cast<std::uint64_t>(time.seconds) & 0xffffffffU);
  base = low;
  if (extra != nullptr) {
    std::int64_t signed_low = static_cast<std::int32_t>(low);
    auto epoch = static_cast<std::uint32_t>(static_cast<std::uint64_t>((time.seconds - signed_low) >> 32) & 3U);
    *extra = epoch | (time.nanoseconds << 2);
  }
}

Ext4Timestamp decode_time(__u32 base, const __u32* extra) {
  Ext4Timestamp time;
  time.seconds = static_cast<std::int32_t>(base);
  if (extra != nullptr) {
    time.seconds += static_cast<std::int64_t>(*extra & 3U) << 32;
    time.nanoseconds = *extra >> 2;
  }
  return time;
}

// The field of a large inode, or nullptr when this inode's extra space does not reach it.
template <typename Inode, typename Field>
auto extra_field(Inode& inode, Field ext2_inode_large::*member) -> decltype(&(inode.*member)) {
  auto offset = static_cast<std::size_t>(reinterpret_cast<const char*>(&(inode.*member)) -
                                         reinterpret_cast<const char*>(&inode));
  return has_extra_field(inode, offset, sizeof(Field)) ? &(inode.*member) : nullptr;
}

void set_atime(ext2_inode_large& inode, const Ext4Timestamp& t) {
  encode_time(t, inode.i_atime, extra_field(inode, &ext2_inode_large::i_atime_extra));
}
void set_mtime(ext2_inode_large& inode, const Ext4Timestamp& t) {
  encode_time(t, inode.i_mtime, extra_field(inode, &ext2_inode_large::i_mtime_extra));
}
void set_ctime(ext2_inode_large& inode, const Ext4Timestamp& t) {
  encode_time(t, inode.i_ctime, extra_field(inode, &ext2_inode_large::i_ctime_extra));
}
void set_crtime(ext2_inode_large& inode, const Ext4Timestamp& t) {
  // crtime exists only in inodes whose extra space reaches it; there is no short form to fall back to.
  if (auto* extra = extra_field(inode, &ext2_inode_large::i_crtime_extra)) encode_time(t, inode.i_crtime, extra);
}

std::uint32_t owner_uid(const ext2_inode_large& inode) {
  return std::uint32_t{inode.i_uid} | (std::uint32_t{inode.osd2.linux2.l_i_uid_high} << 16);
}
std::uint32_t owner_gid(const ext2_inode_large& inode) {
  return std::uint32_t{inode.i_gid} | (std::uint32_t{inode.osd2.linux2.l_i_gid_high} << 16);
}
void set_owner_fields(ext2_inode_large& inode, std::uint32_t uid, std::uint32_t gid) {
  inode.i_uid = static_cast<__u16>(uid & 0xffffU);
  inode.osd2.linux2.l_i_uid_high = static_cast<__u16>(uid >> 16);
  inode.i_gid = static_cast<__u16>(gid & 0xffffU);
  inode.osd2.linux2.l_i_gid_high = static_cast<__u16>(gid >> 16);
}

// Where file content comes from. data_ranges lists the byte ranges that may hold data (everything
// for memory, the non-hole parts for a sparse host file), in ascending order.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual std::uint64_t size() const = 0;
  virtual std::vector<std::pair<std::uint64_t, std::uint64_t>> data_ranges() const = 0;
  // Fills out from offset; returns fewer bytes only at the end of the source.
  virtual std::size_t read(std::uint64_t offset, std::span<std::byte> out) const = 0;
};

class MemoryByteSource final : public ByteSource {
 public:
  explicit MemoryByteSource(std::span<const std::byte> bytes) : bytes_(bytes) {}
  std::uint64_t size() const override { return bytes_.size(); }
  std::vector<std::pair<std::uint64_t, std::uint64_t>> data_ranges() const override {
    if (bytes_.empty()) return {};
    return {{0, bytes_.size()}};
  }
  std::size_t read(std::uint64_t offset, std::span<std::byte> out) const override {
    if (offset >= bytes_.size()) return 0;
    auto n = std::min<std::size_t>(out.size(), bytes_.size() - static_cast<std::size_t>(offset));
    std::memcpy(out.data(), bytes_.data() + offset, n);
    return n;
  }

 private:
  std::span<const std::byte> bytes_;
};

// A host file's bytes, or a window of them: `length` bytes from `offset` (a member of an uncompressed
// tar). A window reports itself as one data range, as MemoryByteSource does, so that placing a file
// from it allocates exactly what writing the same bytes from memory would (holes in the host file
// under the window just read as zeros).
class HostFileByteSource final : public ByteSource {
 public:
  explicit HostFileByteSource(const std::filesystem::path& path, std::uint64_t offset = 0,
                              std::optional<std::uint64_t> length = std::nullopt)
      : path_(path), offset_(offset) {
    fd_ = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_) throw_system_error("cannot open " + path.string(), errno);
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) throw_system_error("cannot stat " + path.string(), errno);
    if (!S_ISREG(st.st_mode)) throw Error(path.string() + " is not a regular file");
    file_size_ = static_cast<std::uint64_t>(st.st_size);
    window_ = length.has_value();
    if (window_ && (offset > file_size_ || *length > file_size_ - offset)) {
      throw Error(path.string() + ": bytes " + std::to_string(offset) + "-" + std::to_string(offset + *length) +
                  " lie past its end (" + std::to_string(file_size_) + " bytes)");
    }
    size_ = length.value_or(file_size_);
  }
  std::uint64_t size() const override { return size_; }
  std::uint64_t file_size() const { return file_size_; }
  std::vector<std::pair<std::uint64_t, std::uint64_t>> data_ranges() const override {
    if (window_) return size_ == 0 ? std::vector<std::pair<std::uint64_t, std::uint64_t>>{} : std::vector{std::pair{std::uint64_t{0}, size_}};
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (const DataExtent& extent : list_data_extents(fd_.get(), size_, path_.string())) {
      ranges.emplace_back(extent.offset, extent.offset + extent.length);
    }
    return ranges;
  }
  std::size_t read(std::uint64_t offset, std::span<std::byte> out) const override {
    if (offset >= size_) return 0;
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), size_ - offset));
    return pread_up_to(fd_.get(), offset_ + offset, out.data(), n, path_.string());
  }

 private:
  std::filesystem::path path_;
  FileDescriptor fd_;
  std::uint64_t offset_ = 0;
  std::uint64_t size_ = 0;
  std::uint64_t file_size_ = 0;
  bool window_ = false;
};

// Calls run(first block, count, their bytes) for every run of non-zero blocks of `source` within
// `ranges` (its data extents), in order; all-zero blocks are left out, as holes. A run never crosses
// a chunk of copy_chunk_bytes counted from its range's start (placing a file replays these calls,
// so they must come out the same however the blocks were found).
template <class Run>
void for_each_nonzero_run(const ByteSource& source, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges,
                          std::uint64_t bs, Run&& run) {
  const std::uint64_t size = source.size();
  const std::uint64_t size_rounded = (size + bs - 1) / bs * bs;
  struct Chunk {
    std::uint64_t position;
    std::size_t length;
  };
  std::vector<Chunk> chunks;
  for (const auto& [range_begin, range_end] : ranges) {
    std::uint64_t position = range_begin / bs * bs;
    std::uint64_t end = std::min(size_rounded, (range_end + bs - 1) / bs * bs);
    for (; position < end; position += copy_chunk_bytes) {
      chunks.push_back({position, static_cast<std::size_t>(std::min<std::uint64_t>(copy_chunk_bytes, end - position))});
    }
  }
  // The next chunk is read on another thread while this one is checked and written: reading a
  // host file and writing the image are each a copy through the page cache, and they then run on
  // two cores. (Sources of one chunk, the usual small file, are read inline.)
  // The buffers are as large as the largest chunk (a small file's are small, from malloc's heap),
  // not zeroed (read_chunk fills every byte of a chunk), and from a MiB up on huge pages: a fresh
  // zeroed 4 MiB buffer per file was 1,024 first-touch faults of 10-30 us each on the development
  // VMs, for every file a Pi build writes (docs/benchmarks.md, Pi build section).
  std::size_t buffer_bytes = 0;
  for (const Chunk& chunk : chunks) buffer_bytes = std::max(buffer_bytes, chunk.length);
  std::array<AlignedBuffer, 2> buffers{allocate_aligned(buffer_bytes, false),
                                       chunks.size() > 1 ? allocate_aligned(buffer_bytes, false) : AlignedBuffer()};
  auto read_chunk = [&source, &chunks, &buffers](std::size_t index) {
    const Chunk& chunk = chunks[index];
    auto* buffer = reinterpret_cast<std::byte*>(buffers[index % 2].get());
    std::size_t got = source.read(chunk.position, std::span(buffer, chunk.length));
    std::fill(buffer + got, buffer + chunk.length, std::byte{0});
  };
  for_each_read_ahead(chunks.size(), read_chunk, [&](std::size_t index) {
    const Chunk& chunk = chunks[index];
    const auto* data = reinterpret_cast<const std::byte*>(buffers[index % 2].get());
    // All-zero blocks are left as holes: reads return zeros for them, and the image stays sparse.
    const std::size_t blocks = chunk.length / bs;
    std::size_t b = 0;
    while (b < blocks) {
      while (b < blocks && is_all_zero(std::span<const std::byte>(data + b * bs, bs))) ++b;
      std::size_t run_start = b;
      while (b < blocks && !is_all_zero(std::span<const std::byte>(data + b * bs, bs))) ++b;
      if (b > run_start) run(chunk.position / bs + run_start, b - run_start, data + run_start * bs);
    }
  });
}

io_manager block_device_io_manager();

// ---- the io manager: libext2fs reads and writes through a BlockDevice, never fsyncs ----
//
// Every byte libext2fs moves goes through the BlockDevice it was opened on (superblock, bitmaps and
// inode tables included, since those are written at close), so a device that records what it was
// asked to write (FileBlockDevice::written_extents) knows which parts of a node's image differ from
// the image it was copied from, with no second log kept here. Buffers are handed to the device as
// they are: one virtual call per transfer, no copy.
//
// libext2fs's unix_io_manager fsyncs the image when it opens it and whenever the filesystem is
// flushed, so opening the freshly decompressed base image waited for 2 GiB to be written back, and
// every node's close for its whole copy. Nothing here needs that: a build fdatasyncs each image once,
// just before renaming it into place, and the image is not a mounted filesystem whose kernel cache
// could disagree with ours. So flushing the channel does not flush the device.
// The device a channel works on, and where it leaves the message of what the device threw: libext2fs
// only passes an errcode_t on, and "Input/output error" would hide "No space left on device".
struct ChannelDevice {
  BlockDevice* device = nullptr;
  std::string* failure = nullptr;
};

struct DeviceChannel {
  ChannelDevice target;
  std::uint64_t offset = 0;  // io option "offset=N": where the filesystem starts on the device
  struct_io_stats stats{};
};

// ext2fs_open2 takes a device name, not a device: Ext4Filesystem::open sets this around the call on
// its own thread, and the manager's open takes the device from here.
thread_local ChannelDevice device_being_opened;

// What the channel returns when the device threw; the exception's message is in target.failure.
constexpr errcode_t device_failure = EIO;

DeviceChannel& device_channel(io_channel channel) { return *static_cast<DeviceChannel*>(channel->private_data); }

std::size_t transfer_size(io_channel channel, int count) {
  // libext2fs's convention: a negative count is a byte count, a positive one a block count.
  return count < 0 ? static_cast<std::size_t>(-static_cast<std::int64_t>(count))
                   : static_cast<std::size_t>(count) * static_cast<std::size_t>(channel->block_size);
}

errcode_t device_io_open(const char* name, int, io_channel* result) {
  if (name == nullptr || device_being_opened.device == nullptr) return EXT2_ET_BAD_DEVICE_NAME;
  auto* channel = static_cast<io_channel>(std::calloc(1, sizeof(struct_io_channel)));
  char* channel_name = ::strdup(name);
  auto* data = new (std::nothrow) DeviceChannel;
  if (channel == nullptr || channel_name == nullptr || data == nullptr) {
    std::free(channel);
    std::free(channel_name);
    delete data;
    return EXT2_ET_NO_MEMORY;
  }
  data->target = device_being_opened;
  channel->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  channel->manager = block_device_io_manager();
  channel->name = channel_name;
  channel->block_size = 1024;
  channel->refcount = 1;
  channel->private_data = data;
  *result = channel;
  return 0;
}

errcode_t device_io_close(io_channel channel) {
  if (--channel->refcount > 0) return 0;
  delete &device_channel(channel);
  std::free(channel->name);
  std::free(channel);
  return 0;
}

errcode_t device_io_set_blksize(io_channel channel, int blksize) {
  channel->block_size = blksize;
  return 0;
}

errcode_t device_io_read(io_channel channel, unsigned long long block, int count, void* buffer) {
  DeviceChannel& data = device_channel(channel);
  std::size_t size = transfer_size(channel, count);
  std::uint64_t at = data.offset + static_cast<std::uint64_t>(block) * static_cast<std::uint64_t>(channel->block_size);
  auto* bytes = static_cast<std::uint8_t*>(buffer);
  // Past the end of the device reads as zeros for libext2fs only through its error hook; say it.
  BlockDevice& device = *data.target.device;
  std::uint64_t device_size = device.size();
  std::size_t available = at >= device_size ? 0 : static_cast<std::size_t>(std::min<std::uint64_t>(size, device_size - at));
  errcode_t error = 0;
  try {
    device.read_at(at, std::span(bytes, available));
  } catch (const std::exception& e) {
    *data.target.failure = e.what();
    error = device_failure;
    available = 0;
  }
  if (error == 0 && available < size) error = EXT2_ET_SHORT_READ;
  if (error != 0) {
    std::memset(bytes + available, 0, size - available);
    if (channel->read_error) {
      return channel->read_error(channel, static_cast<unsigned long>(block), count, buffer, size,
                                 static_cast<int>(available), error);
    }
    return error;
  }
  data.stats.bytes_read += size;
  return 0;
}

errcode_t write_bytes(io_channel channel, std::uint64_t at, const void* buffer, std::size_t size, unsigned long block,
                      int count) {
  DeviceChannel& data = device_channel(channel);
  try {
    data.target.device->write_at(data.offset + at, std::span(static_cast<const std::uint8_t*>(buffer), size));
  } catch (const std::exception& e) {
    *data.target.failure = e.what();
    if (channel->write_error) return channel->write_error(channel, block, count, buffer, size, 0, device_failure);
    return device_failure;
  }
  data.stats.bytes_written += size;
  return 0;
}

errcode_t device_io_write(io_channel channel, unsigned long long block, int count, const void* buffer) {
  return write_bytes(channel, static_cast<std::uint64_t>(block) * static_cast<std::uint64_t>(channel->block_size), buffer,
                     transfer_size(channel, count), static_cast<unsigned long>(block), count);
}

errcode_t device_io_read32(io_channel channel, unsigned long block, int count, void* buffer) {
  return device_io_read(channel, block, count, buffer);
}
errcode_t device_io_write32(io_channel channel, unsigned long block, int count, const void* buffer) {
  return device_io_write(channel, block, count, buffer);
}

errcode_t device_io_write_byte(io_channel channel, unsigned long offset, int size, const void* buffer) {
  if (size < 0) return EXT2_ET_INVALID_ARGUMENT;
  return write_bytes(channel, offset, buffer, static_cast<std::size_t>(size), 0, size);
}

// Not an fsync, and not the device's flush (see above); nothing is buffered here.
errcode_t device_io_flush(io_channel) { return 0; }

errcode_t device_io_set_option(io_channel channel, const char* option, const char* argument) {
  if (std::strcmp(option, "offset") != 0) return EXT2_ET_INVALID_ARGUMENT;
  if (argument == nullptr) return EXT2_ET_INVALID_ARGUMENT;
  std::string_view text(argument);
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return EXT2_ET_INVALID_ARGUMENT;
  device_channel(channel).offset = value;
  return 0;
}

errcode_t device_io_get_stats(io_channel channel, io_stats* stats) {
  if (stats != nullptr) *stats = &device_channel(channel).stats;
  return 0;
}

io_manager block_device_io_manager() {
  static struct_io_manager manager = [] {
    struct_io_manager m{};
    m.magic = EXT2_ET_MAGIC_IO_MANAGER;
    m.name = "aggrik8s block device I/O manager";
    m.open = device_io_open;
    m.close = device_io_close;
    m.set_blksize = device_io_set_blksize;
    m.read_blk = device_io_read32;
    m.write_blk = device_io_write32;
    m.flush = device_io_flush;
    m.write_byte = device_io_write_byte;
    m.set_option = device_io_set_option;
    m.get_stats = device_io_get_stats;
    m.read_blk64 = device_io_read;
    m.write_blk64 = device_io_write;
    return m;
  }();
  return &manager;
}

}  // namespace

namespace {

// libext2fs (1.47.0) translates ext4's compact ACL form back to the xattr form with e_id 0 for the
// entries that have no id (owner, owning group, mask, other); the kernel gives ACL_UNDEFINED_ID
// (0xffffffff) there, as getfattr shows on a mounted filesystem. Set it, so an ACL reads the same from
// the image as from the running system. A value that is not a version-2 ACL is left alone.
void normalize_posix_acl(Ext4ExtendedAttribute& attribute) {
  if (attribute.name != "system.posix_acl_access" && attribute.name != "system.posix_acl_default") return;
  std::string& value = attribute.value;
  if (value.size() < 4 || (value.size() - 4) % 8 != 0 || value.compare(0, 4, std::string("\x02\x00\x00\x00", 4)) != 0) {
    return;
  }
  for (std::size_t entry = 4; entry < value.size(); entry += 8) {
    auto tag = static_cast<std::uint16_t>(static_cast<unsigned char>(value[entry]) |
                                          (static_cast<unsigned char>(value[entry + 1]) << 8));
    constexpr std::uint16_t user_obj = 0x01, group_obj = 0x04, mask = 0x10, other = 0x20;
    if (tag == user_obj || tag == group_obj || tag == mask || tag == other) value.replace(entry + 4, 4, 4, '\xff');
  }
}

}  // namespace

struct Ext4Filesystem::State {
  ext2_filsys fs = nullptr;
  // What libext2fs reads and writes: the caller's device, or one opened on the image path and kept here.
  BlockDevice* device = nullptr;
  std::unique_ptr<BlockDevice> owned_device;
  std::uint64_t byte_offset = 0;
  bool writable = false;
  std::optional<std::int64_t> fixed_time;
  // The message of the last exception the device threw inside libext2fs (see ChannelDevice).
  std::string device_failure_message;

  std::string where() const {
    return "ext4 filesystem at offset " + std::to_string(byte_offset) + " of " + device->name();
  }

  // The device's own message ("out/pi5.img: write at offset N failed: No space left on device") when
  // the device threw, libext2fs's text for the code otherwise.
  std::string describe(errcode_t code) const {
    if (code == device_failure && !device_failure_message.empty()) return device_failure_message;
    return describe_errcode(code);
  }

  [[noreturn]] void fail(const std::string& action, const std::string& path, errcode_t code) const {
    throw Error(where() + ": cannot " + action + " " + path + ": " + describe(code));
  }
  [[noreturn]] void fail(const std::string& action, const std::string& path, const std::string& reason) const {
    throw Error(where() + ": cannot " + action + " " + path + ": " + reason);
  }
  void check(errcode_t code, const std::string& action, const std::string& path) const {
    if (code != 0) fail(action, path, code);
  }

  void require_writable(const std::string& action, const std::string& path) const {
    if (!writable) fail(action, path, "the filesystem was opened read-only");
  }

  Ext4Timestamp now() const {
    if (fixed_time) return {*fixed_time, 0};
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return {static_cast<std::int64_t>(ts.tv_sec), static_cast<std::uint32_t>(ts.tv_nsec)};
  }

  std::uint32_t block_size() const { return fs->blocksize; }

  ext2_inode_large read_inode(ext2_ino_t ino, const std::string& path) const {
    ext2_inode_large inode{};
    check(ext2fs_read_inode_full(fs, ino, reinterpret_cast<ext2_inode*>(&inode), sizeof(inode)), "read the inode of",
          path);
    return inode;
  }
  void write_inode(ext2_ino_t ino, ext2_inode_large& inode, const std::string& path) {
    check(ext2fs_write_inode_full(fs, ino, small(inode), sizeof(inode)), "write the inode of", path);
    ext2fs_mark_super_dirty(fs);
  }

  // Inode of path without following a symlink in the last component; nullopt when it does not exist.
  std::optional<ext2_ino_t> lookup(const std::string& path) const {
    split_path(path);  // validates
    ext2_ino_t ino = 0;
    errcode_t rc = ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path.c_str(), &ino);
    if (rc == EXT2_ET_FILE_NOT_FOUND || rc == EXT2_ET_NO_DIRECTORY) return std::nullopt;
    check(rc, "look up", path);
    return ino;
  }
  ext2_ino_t lookup_existing(const std::string& path) const {
    auto ino = lookup(path);
    if (!ino) fail("find", path, "no such file or directory");
    return *ino;
  }
  ext2_ino_t lookup_following(const std::string& path) const {
    split_path(path);
    ext2_ino_t ino = 0;
    errcode_t rc = ext2fs_namei_follow(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path.c_str(), &ino);
    if (rc == EXT2_ET_FILE_NOT_FOUND || rc == EXT2_ET_NO_DIRECTORY) fail("find", path, "no such file or directory");
    check(rc, "look up", path);
    return ino;
  }
  std::optional<ext2_ino_t> lookup_in(ext2_ino_t dir, const std::string& name, const std::string& path) const {
    ext2_ino_t ino = 0;
    errcode_t rc = ext2fs_lookup(fs, dir, name.c_str(), static_cast<int>(name.size()), nullptr, &ino);
    if (rc == EXT2_ET_FILE_NOT_FOUND) return std::nullopt;
    check(rc, "look up", path);
    return ino;
  }

  // The directory that will hold the last component of path, and that component.
  std::pair<ext2_ino_t, std::string> parent_of(const std::string& path, const std::string& action) const {
    auto components = split_path(path);
    if (components.empty()) fail(action, path, "the root directory cannot be replaced");
    if (components.back() == "..") fail(action, path, "the last component must be a name, not '..'");
    std::string parent_path = join_path(components, components.size() - 1);
    ext2_ino_t parent = 0;
    errcode_t rc = ext2fs_namei_follow(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, parent_path.c_str(), &parent);
    if (rc == EXT2_ET_FILE_NOT_FOUND || rc == EXT2_ET_NO_DIRECTORY) {
      fail(action, path, "the parent directory " + parent_path + " does not exist");
    }
    check(rc, "look up the parent directory of", path);
    if (ext2fs_check_directory(fs, parent) != 0) fail(action, path, parent_path + " is not a directory");
    return {parent, components.back()};
  }

  // Runs an operation that adds a name to dir, growing a linear directory by a block when it is full
  // (libext2fs reports that instead of growing the directory itself). Indexed (htree) directories
  // split their own leaves; when one still reports no space, its tree is at its depth limit and
  // appending a block outside the index would corrupt it, so that is an error.
  errcode_t with_directory_space(ext2_ino_t dir, const std::function<errcode_t()>& add) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      errcode_t rc = add();
      if (rc != EXT2_ET_DIR_NO_SPACE) return rc;
      ext2_inode dir_inode{};
      if (errcode_t read_rc = ext2fs_read_inode(fs, dir, &dir_inode)) return read_rc;
      if ((dir_inode.i_flags & EXT2_INDEX_FL) != 0) return rc;
      if (errcode_t expand_rc = ext2fs_expand_dir(fs, dir)) return expand_rc;
    }
    return EXT2_ET_DIR_NO_SPACE;
  }

  // libext2fs's failure paths (and ours) give an allocated inode back to the bitmap but leave it on
  // disk with a link count, which e2fsck then reports as an unattached inode. Marking it deleted
  // makes it look like any other freed inode.
  void discard_new_inode(ext2_ino_t ino, const std::string& path) noexcept {
    try {
      if (ext2fs_test_inode_bitmap2(fs->inode_map, ino) != 0) return;  // still in use: not ours to clear
      auto inode = read_inode(ino, path);
      inode.i_links_count = 0;
      inode.i_dtime = static_cast<__u32>(static_cast<std::uint64_t>(now().seconds) & 0xffffffffU);
      write_inode(ino, inode, path);
    } catch (const Error& e) {
      log::error("could not clear the unused inode ", ino, ": ", e.what());
    }
  }

  ext2_ino_t allocate_inode(ext2_ino_t parent, int mode, const std::string& path) {
    ext2_ino_t ino = 0;
    check(ext2fs_new_inode(fs, parent, mode, nullptr, &ino), "allocate an inode for", path);
    return ino;
  }

  // A directory gained or lost an entry: the kernel updates its mtime and ctime, and so do we so the
  // result looks like a normally edited tree (and is pinned by fixed_time).
  void touch_directory(ext2_ino_t dir, const std::string& path) {
    auto inode = read_inode(dir, path);
    auto t = now();
    set_mtime(inode, t);
    set_ctime(inode, t);
    write_inode(dir, inode, path);
  }

  void apply_new_attributes(ext2_ino_t ino, const Ext4FileAttributes& attributes, bool keep_mode,
                            const std::string& path) {
    auto inode = read_inode(ino, path);
    if (!keep_mode) {
      inode.i_mode = static_cast<__u16>((inode.i_mode & 0170000) | (attributes.permissions & 07777));
    }
    set_owner_fields(inode, attributes.uid, attributes.gid);
    auto t = now();
    auto mtime = attributes.mtime.value_or(t);
    set_atime(inode, mtime);
    set_mtime(inode, mtime);
    set_ctime(inode, t);
    set_crtime(inode, t);
    write_inode(ino, inode, path);
  }

  std::uint64_t allocated_blocks(const ext2_inode_large& inode) const {
    // i_blocks in 512-byte sectors (ext2fs_get_stat_i_blocks resolves the huge_file encoding).
    blk64_t sectors = ext2fs_get_stat_i_blocks(fs, reinterpret_cast<ext2_inode*>(const_cast<ext2_inode_large*>(&inode)));
    return sectors * 512 / block_size();
  }

  // Drops one name of ino from dir; frees the inode and its blocks when that was the last link.
  void release_entry(ext2_ino_t dir, const std::string& name, ext2_ino_t ino, const std::string& path) {
    check(ext2fs_unlink(fs, dir, name.c_str(), ino, 0), "remove the directory entry of", path);
    auto inode = read_inode(ino, path);
    bool is_directory = LINUX_S_ISDIR(inode.i_mode);
    if (is_directory) {
      auto parent = read_inode(dir, path);
      // With dir_nlink a count of 1 means "too many to count"; it must stay 1.
      if (parent.i_links_count > 2) {
        parent.i_links_count--;
        write_inode(dir, parent, path);
      }
      inode.i_links_count = 0;
    } else if (inode.i_links_count > 0) {
      inode.i_links_count--;
    }
    if (inode.i_links_count > 0) {
      set_ctime(inode, now());
      write_inode(ino, inode, path);
    } else {
      free_inode(ino, inode, is_directory, path);
    }
    touch_directory(dir, path);
  }

  void free_inode(ext2_ino_t ino, ext2_inode_large& inode, bool is_directory, const std::string& path) {
    if (ext2fs_inode_has_valid_blocks2(fs, small(inode)) != 0) {
      check(ext2fs_punch(fs, ino, small(inode), nullptr, 0, ~0ULL), "free the blocks of", path);
    }
    check(ext2fs_free_ext_attr(fs, ino, &inode), "free the extended attributes of", path);
    inode.i_dtime = static_cast<__u32>(static_cast<std::uint64_t>(now().seconds) & 0xffffffffU);
    inode.i_size = 0;
    inode.i_size_high = 0;
    write_inode(ino, inode, path);
    ext2fs_inode_alloc_stats2(fs, ino, -1, is_directory ? 1 : 0);
  }

  void remove_tree(ext2_ino_t dir, const std::string& dir_path) {
    for (const auto& entry : list(dir, dir_path)) {
      std::string child_path = (dir_path == "/" ? "" : dir_path) + "/" + entry.name;
      auto inode = read_inode(entry.inode, child_path);
      if (LINUX_S_ISDIR(inode.i_mode)) remove_tree(entry.inode, child_path);
      release_entry(dir, entry.name, entry.inode, child_path);
    }
  }

  std::vector<Ext4DirectoryEntry> list(ext2_ino_t dir, const std::string& path) const {
    struct Collector {
      std::vector<Ext4DirectoryEntry> entries;
    } collector;
    auto callback = [](ext2_ino_t, int, ext2_dir_entry* dirent, int, int, char*, void* data) -> int {
      auto* c = static_cast<Collector*>(data);
      int length = ext2fs_dirent_name_len(dirent);
      std::string name(dirent->name, static_cast<std::size_t>(length));
      if (name == "." || name == "..") return 0;
      c->entries.push_back({std::move(name), dirent->inode, file_type_of_dirent(ext2fs_dirent_file_type(dirent))});
      return 0;
    };
    if (ext2fs_check_directory(fs, dir) != 0) fail("list", path, "not a directory");
    check(ext2fs_dir_iterate2(fs, dir, 0, nullptr, callback, &collector), "list", path);
    if (!ext2fs_has_feature_filetype(fs->super)) {
      for (auto& entry : collector.entries) entry.type = file_type_of_mode(read_inode(entry.inode, path).i_mode);
    }
    std::sort(collector.entries.begin(), collector.entries.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    return collector.entries;
  }

  // Removes whatever non-directory is at name in parent so a new file or symlink can take its place.
  void clear_for_replacement(ext2_ino_t parent, const std::string& name, const std::string& path,
                             const std::string& action) {
    auto existing = lookup_in(parent, name, path);
    if (!existing) return;
    auto inode = read_inode(*existing, path);
    if (LINUX_S_ISDIR(inode.i_mode)) fail(action, path, "a directory is in the way");
    release_entry(parent, name, *existing, path);
  }

  // With `placed`, data blocks are allocated but not written: where they are is appended to it.
  void write_regular_file(const std::string& path, const ByteSource& source, const Ext4FileAttributes& attributes,
                          std::vector<Ext4PlacedRun>* placed = nullptr,
                          const std::vector<std::pair<std::uint64_t, std::uint64_t>>* runs = nullptr) {
    const std::string action = "write";
    require_writable(action, path);
    const auto [parent, name] = parent_of(path, action);

    const std::uint64_t bs = block_size();
    std::uint64_t data_blocks = 0;
    auto ranges = source.data_ranges();
    for (const auto& [begin, end] : ranges) data_blocks += (end + bs - 1) / bs - begin / bs;

    // Checked before anything is changed, so the common "image too small" case fails with the old
    // file still in place and a message with numbers. Extent tree blocks are not counted; if they
    // are what runs out, the write fails below and the partial file is removed.
    std::uint64_t reclaimable = 0;
    if (auto existing = lookup_in(parent, name, path)) {
      auto old = read_inode(*existing, path);
      if (!LINUX_S_ISDIR(old.i_mode) && old.i_links_count <= 1) reclaimable = allocated_blocks(old);
    }
    std::uint64_t free_blocks = ext2fs_free_blocks_count(fs->super);
    if (data_blocks > free_blocks + reclaimable) {
      fail(action, path,
           "not enough free space: the file needs " + std::to_string(data_blocks * bs) + " bytes, " +
               std::to_string((free_blocks + reclaimable) * bs) + " bytes are free; enlarge the partition");
    }

    clear_for_replacement(parent, name, path, action);

    ext2_ino_t ino = allocate_inode(parent, LINUX_S_IFREG | 0644, path);
    ext2_inode_large inode{};
    inode.i_mode = static_cast<__u16>(LINUX_S_IFREG | (attributes.permissions & 07777));
    inode.i_links_count = 1;
    {
      // An all-zero i_block becomes an empty extent tree root when an extent handle is opened on it
      // (this is how mke2fs -d starts a file).
      ext2_extent_handle_t handle = nullptr;
      check(ext2fs_extent_open2(fs, ino, small(inode), &handle), "start the extent tree of", path);
      ext2fs_extent_free(handle);
    }
    check(ext2fs_write_new_inode(fs, ino, small(inode)), "write the inode of", path);
    ext2fs_inode_alloc_stats2(fs, ino, +1, 0);
    errcode_t rc = with_directory_space(parent, [&, dir = parent, &entry_name = name] {
      return ext2fs_link(fs, dir, entry_name.c_str(), ino, EXT2_FT_REG_FILE);
    });
    if (rc != 0) {
      ext2fs_inode_alloc_stats2(fs, ino, -1, 0);
      discard_new_inode(ino, path);
      fail("add the directory entry for", path, rc);
    }
    touch_directory(parent, path);
    apply_new_attributes(ino, attributes, false, path);

    try {
      inode = read_inode(ino, path);
      check(ext2fs_inode_size_set(fs, small(inode), static_cast<ext2_off64_t>(source.size())), "set the size of", path);
      write_content(ino, inode, source, ranges, path, placed, runs);
      write_inode(ino, inode, path);
    } catch (...) {
      try {
        release_entry(parent, name, ino, path);
      } catch (const Error& cleanup_error) {
        log::error("could not remove the partial file after a failed write: ", cleanup_error.what());
      }
      throw;
    }
  }

  // `runs`: the source's non-zero blocks as scan_host_file found them (then nothing is read here).
  void write_content(ext2_ino_t ino, ext2_inode_large& inode, const ByteSource& source,
                     const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, const std::string& path,
                     std::vector<Ext4PlacedRun>* placed, const std::vector<std::pair<std::uint64_t, std::uint64_t>>* runs) {
    if (runs != nullptr) {
      if (placed == nullptr) fail("write", path, "internal error: a scan only places a file, it cannot write one");
      for (const auto& [first, count] : *runs) write_blocks(ino, inode, first, count, nullptr, path, placed);
      return;
    }
    for_each_nonzero_run(source, ranges, block_size(), [&](std::uint64_t first, std::size_t count, const std::byte* data) {
      write_blocks(ino, inode, first, count, placed ? nullptr : data, path, placed);
    });
  }

  // Allocates logical blocks [first, first + count) as initialised extents (ext2fs_fallocate finds
  // contiguous free ranges and extends the previous extent when it can) and writes their content
  // straight to the physical blocks, one large write per extent. ext2fs_file_write would go through
  // a one-block buffer and an extent lookup per block, which for a 1 GiB archive is 262144 of each.
  // data == nullptr: the blocks are only allocated, and where they are is appended to `placed`.
  void write_blocks(ext2_ino_t ino, ext2_inode_large& inode, blk64_t first, std::size_t count, const std::byte* data,
                    const std::string& path, std::vector<Ext4PlacedRun>* placed = nullptr) {
    check(ext2fs_fallocate(fs, EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_INIT_BEYOND_EOF, ino, small(inode), ~0ULL, first,
                           count),
          "allocate blocks for", path);
    ext2_extent_handle_t handle = nullptr;
    check(ext2fs_extent_open2(fs, ino, small(inode), &handle), "read the extents of", path);
    std::unique_ptr<ext2_extent_handle, void (*)(ext2_extent_handle_t)> guard(handle, ext2fs_extent_free);
    blk64_t logical = first;
    std::size_t remaining = count;
    while (remaining > 0) {
      check(ext2fs_extent_goto(handle, logical), "find the extent of", path);
      ext2fs_extent extent{};
      check(ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &extent), "read the extent of", path);
      if (extent.e_lblk > logical || logical >= extent.e_lblk + extent.e_len ||
          (extent.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0) {
        fail("write", path, "block " + std::to_string(logical) + " was not mapped after allocation");
      }
      auto run = static_cast<std::size_t>(std::min<blk64_t>(remaining, extent.e_lblk + extent.e_len - logical));
      const blk64_t physical = extent.e_pblk + (logical - extent.e_lblk);
      if (data == nullptr) {
        const std::uint64_t bs = block_size();
        if (!placed->empty() && placed->back().device_offset + placed->back().length == physical * bs &&
            placed->back().file_offset + placed->back().length == logical * bs) {
          placed->back().length += run * bs;
        } else {
          placed->push_back({physical * bs, logical * bs, run * bs});
        }
        // Counted as written, as copy_file_from_host's blocks are: the superblock's lifetime writes
        // (s_kbytes_written) come out the same either way.
        io_stats stats = nullptr;
        if (fs->io->manager->get_stats != nullptr && fs->io->manager->get_stats(fs->io, &stats) == 0 && stats != nullptr) {
          stats->bytes_written += run * bs;
        }
      } else {
        check(io_channel_write_blk64(fs->io, physical, static_cast<int>(run), data), "write data blocks of", path);
        data += run * block_size();
      }
      logical += run;
      remaining -= run;
    }
  }

  void fill_status(ext2_ino_t ino, Ext4FileStatus& status, const std::string& path) const {
    auto inode = read_inode(ino, path);
    status.type = file_type_of_mode(inode.i_mode);
    status.inode = ino;
    status.permissions = static_cast<std::uint16_t>(inode.i_mode & 07777);
    status.uid = owner_uid(inode);
    status.gid = owner_gid(inode);
    status.size = EXT2_I_SIZE(&inode);
    status.link_count = inode.i_links_count;
    status.allocated_bytes = allocated_blocks(inode) * block_size();
    status.atime = decode_time(inode.i_atime, extra_field(inode, &ext2_inode_large::i_atime_extra));
    status.mtime = decode_time(inode.i_mtime, extra_field(inode, &ext2_inode_large::i_mtime_extra));
    status.ctime = decode_time(inode.i_ctime, extra_field(inode, &ext2_inode_large::i_ctime_extra));
    if (LINUX_S_ISCHR(inode.i_mode) || LINUX_S_ISBLK(inode.i_mode)) {
      // The kernel's two encodings (ext4_iget): the old 8:8 one in i_block[0] when it is non-zero,
      // otherwise the new 12:20 one in i_block[1] (new_decode_dev).
      if (inode.i_block[0] != 0) {
        status.device_major = (inode.i_block[0] >> 8) & 0xffU;
        status.device_minor = inode.i_block[0] & 0xffU;
      } else {
        std::uint32_t dev = inode.i_block[1];
        status.device_major = (dev & 0xfff00U) >> 8;
        status.device_minor = (dev & 0xffU) | ((dev >> 12) & 0xfff00U);
      }
    }
  }

  std::string symlink_target(ext2_ino_t ino, const std::string& path) const {
    auto inode = read_inode(ino, path);
    if (!LINUX_S_ISLNK(inode.i_mode)) fail("read the symlink", path, "not a symlink");
    if (ext2fs_is_fast_symlink(reinterpret_cast<ext2_inode*>(&inode)) != 0) {
      const auto* bytes = reinterpret_cast<const char*>(inode.i_block);
      return std::string(bytes, static_cast<std::size_t>(EXT2_I_SIZE(&inode)));
    }
    return read_content(ino, path);
  }

  std::vector<Ext4ExtendedAttribute> extended_attributes(ext2_ino_t ino, const std::string& path) const {
    ext2_xattr_handle* handle = nullptr;
    check(ext2fs_xattrs_open(fs, ino, &handle), "open the extended attributes of", path);
    std::unique_ptr<ext2_xattr_handle, void (*)(ext2_xattr_handle*)> guard(
        handle, [](ext2_xattr_handle* h) { ext2fs_xattrs_close(&h); });
    check(ext2fs_xattrs_read(handle), "read the extended attributes of", path);
    std::vector<Ext4ExtendedAttribute> attributes;
    auto collect = [](char* name, char* value, size_t value_length, void* data) -> int {
      // inline_data keeps a file's first bytes under this name; it is content, not an attribute.
      if (std::strcmp(name, "system.data") != 0) {
        auto& collected = *static_cast<std::vector<Ext4ExtendedAttribute>*>(data);
        collected.push_back({name, std::string(value, value_length)});
      }
      return 0;
    };
    check(ext2fs_xattrs_iterate(handle, collect, &attributes), "list the extended attributes of", path);
    // Iterating gives values as stored; ACLs are stored in ext4's compact form, and only
    // ext2fs_xattr_get translates them to the xattr form everything else uses.
    for (auto& attribute : attributes) {
      if (!attribute.name.starts_with("system.posix_acl_")) continue;
      void* value = nullptr;
      size_t value_length = 0;
      check(ext2fs_xattr_get(handle, attribute.name.c_str(), &value, &value_length),
            "read the extended attribute " + attribute.name + " of", path);
      attribute.value.assign(static_cast<const char*>(value), value_length);
      ext2fs_free_mem(&value);
      normalize_posix_acl(attribute);
    }
    std::sort(attributes.begin(), attributes.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    return attributes;
  }

  // A run of a file's logical blocks stored at a physical block, as the extent tree maps it.
  struct MappedRun {
    std::uint64_t logical_block;
    std::uint64_t physical_block;
    std::uint64_t blocks;
  };

  // The initialised extents of an extent-mapped file in logical order, or nullopt for a file without
  // an extent tree (block-mapped or inline data), which is then read through ext2fs_file_read.
  std::optional<std::vector<MappedRun>> mapped_runs(ext2_ino_t ino, ext2_inode_large& inode, const std::string& path) const {
    if ((inode.i_flags & EXT4_EXTENTS_FL) == 0 || (inode.i_flags & EXT4_INLINE_DATA_FL) != 0) return std::nullopt;
    ext2_extent_handle_t handle = nullptr;
    check(ext2fs_extent_open2(fs, ino, small(inode), &handle), "read the extents of", path);
    std::unique_ptr<ext2_extent_handle, void (*)(ext2_extent_handle_t)> guard(handle, ext2fs_extent_free);
    std::vector<MappedRun> runs;
    ext2fs_extent extent{};
    // EXT2_EXTENT_NEXT visits index and leaf entries in tree order (index entries twice); only
    // leaves map data, and unwritten ones read as zeros.
    errcode_t rc = ext2fs_extent_get(handle, EXT2_EXTENT_ROOT, &extent);
    while (rc == 0) {
      if ((extent.e_flags & EXT2_EXTENT_FLAGS_LEAF) != 0 && (extent.e_flags & EXT2_EXTENT_FLAGS_UNINIT) == 0 &&
          extent.e_len > 0) {
        runs.push_back({extent.e_lblk, extent.e_pblk, extent.e_len});
      }
      rc = ext2fs_extent_get(handle, EXT2_EXTENT_NEXT, &extent);
    }
    if (rc != EXT2_ET_EXTENT_NO_NEXT && rc != EXT2_ET_EXTENT_NO_DOWN) check(rc, "read the extents of", path);
    std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.logical_block < b.logical_block; });
    return runs;
  }

  std::vector<DataExtent> data_extents(ext2_ino_t ino, const std::string& path) const {
    auto inode = read_inode(ino, path);
    if (!LINUX_S_ISREG(inode.i_mode)) fail("read the data of", path, "not a regular file");
    const std::uint64_t size = EXT2_I_SIZE(&inode);
    auto runs = mapped_runs(ino, inode, path);
    if (!runs) return size == 0 ? std::vector<DataExtent>{} : std::vector<DataExtent>{{0, size}};
    std::vector<DataExtent> extents;
    for (const auto& run : *runs) {
      std::uint64_t begin = run.logical_block * block_size();
      std::uint64_t end = std::min(size, (run.logical_block + run.blocks) * block_size());
      if (begin < end) extents.push_back({begin, end - begin});
    }
    return merge_extents(std::move(extents));
  }

  void stream_data(ext2_ino_t ino, const Ext4FileDataConsumer& consume, const std::string& path) const {
    auto inode = read_inode(ino, path);
    if (!LINUX_S_ISREG(inode.i_mode)) fail("read the data of", path, "not a regular file");
    const std::uint64_t size = EXT2_I_SIZE(&inode);
    if (size == 0) return;
    const std::uint64_t bs = block_size();
    auto runs = mapped_runs(ino, inode, path);
    if (!runs) {
      ext2_file_t file = nullptr;
      check(ext2fs_file_open(fs, ino, 0, &file), "open", path);
      std::unique_ptr<ext2_file, errcode_t (*)(ext2_file_t)> guard(file, ext2fs_file_close);
      std::vector<std::byte> buffer(static_cast<std::size_t>(std::min<std::uint64_t>(size, copy_chunk_bytes)));
      std::uint64_t done = 0;
      while (done < size) {
        unsigned int got = 0;
        auto want = static_cast<unsigned int>(std::min<std::uint64_t>(size - done, buffer.size()));
        check(ext2fs_file_read(file, buffer.data(), want, &got), "read", path);
        if (got == 0) fail("read", path, "the data ends at byte " + std::to_string(done) + " of " + std::to_string(size));
        consume(done, std::span<const std::byte>(buffer.data(), got));
        done += got;
      }
      return;
    }
    // Each run is read straight from its physical blocks, one large read per chunk: going through
    // ext2fs_file_read would cost a block-sized copy and an extent lookup per block.
    const std::uint64_t size_in_blocks = (size + bs - 1) / bs;
    std::uint64_t largest_run = 0;
    for (const auto& run : *runs) largest_run = std::max(largest_run, run.blocks);
    std::vector<std::byte> buffer(
        static_cast<std::size_t>(std::min<std::uint64_t>(largest_run * bs, copy_chunk_bytes)));
    for (const auto& run : *runs) {
      std::uint64_t end_block = std::min(run.logical_block + run.blocks, size_in_blocks);
      for (std::uint64_t block = run.logical_block; block < end_block;) {
        std::uint64_t count = std::min<std::uint64_t>(end_block - block, buffer.size() / bs);
        check(io_channel_read_blk64(fs->io, run.physical_block + (block - run.logical_block), static_cast<int>(count),
                                    buffer.data()),
              "read the data blocks of", path);
        std::uint64_t offset = block * bs;
        std::uint64_t length = std::min(count * bs, size - offset);
        consume(offset, std::span<const std::byte>(buffer.data(), static_cast<std::size_t>(length)));
        block += count;
      }
    }
  }

  std::string read_content(ext2_ino_t ino, const std::string& path) const {
    ext2_file_t file = nullptr;
    check(ext2fs_file_open(fs, ino, 0, &file), "open", path);
    std::unique_ptr<ext2_file, errcode_t (*)(ext2_file_t)> guard(file, ext2fs_file_close);
    __u64 size = 0;
    check(ext2fs_file_get_lsize(file, &size), "read the size of", path);
    std::string content(static_cast<std::size_t>(size), '\0');
    std::size_t done = 0;
    while (done < content.size()) {
      unsigned int got = 0;
      auto want = static_cast<unsigned int>(std::min<std::size_t>(content.size() - done, copy_chunk_bytes));
      check(ext2fs_file_read(file, content.data() + done, want, &got), "read", path);
      if (got == 0) break;
      done += got;
    }
    content.resize(done);
    return content;
  }
};

Ext4Filesystem::Ext4Filesystem(std::unique_ptr<State> state) : state_(std::move(state)) {}
Ext4Filesystem::Ext4Filesystem(Ext4Filesystem&&) noexcept = default;
Ext4Filesystem& Ext4Filesystem::operator=(Ext4Filesystem&& other) noexcept {
  if (this != &other) {
    try {
      if (state_) close();
    } catch (const Error& e) {
      log::error(e.what());
    }
    state_ = std::move(other.state_);
  }
  return *this;
}

Ext4Filesystem::~Ext4Filesystem() {
  if (!state_ || state_->fs == nullptr) return;
  try {
    close();
  } catch (const Error& e) {
    log::error(e.what());
  }
}

Ext4Filesystem Ext4Filesystem::open(const std::filesystem::path& image, std::uint64_t byte_offset,
                                    std::uint64_t byte_length, Ext4Access access,
                                    std::optional<std::int64_t> fixed_time) {
  auto device = std::make_unique<FileBlockDevice>(
      image, access == Ext4Access::read_write ? FileBlockDevice::Access::read_write : FileBlockDevice::Access::read_only);
  Ext4Filesystem filesystem = open(*device, byte_offset, byte_length, access, fixed_time);
  filesystem.state_->owned_device = std::move(device);
  return filesystem;
}

Ext4Filesystem Ext4Filesystem::open(BlockDevice& device, std::uint64_t byte_offset, std::uint64_t byte_length,
                                    Ext4Access access, std::optional<std::int64_t> fixed_time) {
  register_error_messages();
  auto state = std::make_unique<State>();
  state->device = &device;
  state->byte_offset = byte_offset;
  state->writable = access == Ext4Access::read_write;
  state->fixed_time = fixed_time;

  std::string io_options = "offset=" + std::to_string(byte_offset);
  int flags = EXT2_FLAG_64BITS | (state->writable ? EXT2_FLAG_RW : 0);
  ext2_filsys fs = nullptr;
  device_being_opened = {&device, &state->device_failure_message};
  errcode_t rc = ext2fs_open2(device.name().c_str(), io_options.c_str(), flags, 0, 0, block_device_io_manager(), &fs);
  device_being_opened = {};
  if (rc == EXT2_ET_BAD_MAGIC || rc == EXT2_ET_SB_CSUM_INVALID || rc == EXT2_ET_CORRUPT_SUPERBLOCK) {
    throw Error("no valid ext2/3/4 superblock at offset " + std::to_string(byte_offset) + " of " + device.name() +
                " (" + describe_errcode(rc) + "); is this the right partition?");
  }
  if (rc == EXT2_ET_UNSUPP_FEATURE || rc == EXT2_ET_RO_UNSUPP_FEATURE) {
    throw Error(state->where() + " uses filesystem features that libext2fs " + libext2fs_version() +
                " does not support (" + describe_errcode(rc) + ")");
  }
  if (rc != 0) throw Error("cannot open the " + state->where() + ": " + state->describe(rc));
  state->fs = fs;
  // From here the State owns fs; an Ext4Filesystem takes it so every error below closes it.
  Ext4Filesystem filesystem(std::move(state));
  State& s = *filesystem.state_;

  if (fixed_time) fs->now = static_cast<time_t>(*fixed_time);

  std::uint64_t fs_bytes = ext2fs_blocks_count(fs->super) * std::uint64_t{fs->blocksize};
  if (fs_bytes > byte_length) {
    s.writable = false;  // nothing was changed; do not flush on the way out
    throw Error(s.where() + " is " + std::to_string(fs_bytes) + " bytes long, larger than its partition (" +
                std::to_string(byte_length) + " bytes); refusing to touch it");
  }

  if (s.writable) {
    auto refuse = [&](const std::string& reason) {
      // Closing a filesystem opened read-write writes the superblock; nothing changed, so skip that.
      fs->flags &= ~EXT2_FLAG_DIRTY;
      throw Error("cannot write to the " + s.where() + ": " + reason);
    };
    const std::string fsck_hint =
        "; run `e2fsck -fy '" + device_with_offset(device.name(), byte_offset) + "'` on a copy and retry";
    if (ext2fs_has_feature_journal_needs_recovery(fs->super)) {
      refuse("its journal needs recovery (it was not unmounted cleanly)" + fsck_hint);
    }
    if ((fs->super->s_state & EXT2_ERROR_FS) != 0) refuse("it is marked as having errors" + fsck_hint);
    if ((fs->super->s_state & EXT2_VALID_FS) == 0) refuse("it was not cleanly unmounted" + fsck_hint);
    if (fs->super->s_last_orphan != 0) refuse("it has orphaned inodes pending" + fsck_hint);
    std::string unsupported;
    for (const auto& feature : incompat_feature_names) {
      if ((fs->super->s_feature_incompat & feature.bit) != 0) unsupported += std::string(unsupported.empty() ? "" : ", ") + feature.name;
    }
    for (const auto& feature : refused_ro_compat_feature_names) {
      if ((fs->super->s_feature_ro_compat & feature.bit) != 0) unsupported += std::string(unsupported.empty() ? "" : ", ") + feature.name;
    }
    std::uint32_t unknown_incompat = fs->super->s_feature_incompat & ~writable_incompat_features &
                                     ~static_cast<std::uint32_t>(EXT3_FEATURE_INCOMPAT_RECOVER);
    for (const auto& feature : incompat_feature_names) unknown_incompat &= ~feature.bit;
    if (unknown_incompat != 0) {
      unsupported += std::string(unsupported.empty() ? "" : ", ") + "unknown incompatible features 0x" +
                     [&] {
                       char hex[16];
                       std::snprintf(hex, sizeof(hex), "%x", unknown_incompat);
                       return std::string(hex);
                     }();
    }
    if (!unsupported.empty()) refuse("it uses features this builder cannot write correctly: " + unsupported);
    if (!ext2fs_has_feature_extents(fs->super)) {
      refuse("it has no extent feature (an ext2/ext3 filesystem); only ext4 is supported for writing");
    }
    s.check(ext2fs_read_bitmaps(fs), "read the allocation bitmaps of", "the filesystem");
  }
  return filesystem;
}

void Ext4Filesystem::close() {
  if (!state_ || state_->fs == nullptr) return;
  ext2_filsys fs = std::exchange(state_->fs, nullptr);
  if (!state_->writable) fs->flags &= ~EXT2_FLAG_DIRTY;
  errcode_t rc = ext2fs_close2(fs, 0);
  if (rc != 0) {
    // ext2fs_close2 leaves fs allocated when flushing failed.
    ext2fs_free(fs);
    throw Error("cannot write the superblock and bitmaps of the " + state_->where() + ": " + state_->describe(rc));
  }
}

void Ext4Filesystem::create_directories(const std::string& path, const Ext4FileAttributes& attributes) {
  State& s = *state_;
  s.require_writable("create the directory", path);
  auto components = split_path(path);
  ext2_ino_t current = EXT2_ROOT_INO;
  for (std::size_t i = 0; i < components.size(); ++i) {
    const std::string& name = components[i];
    std::string sub_path = join_path(components, i + 1);
    auto existing = s.lookup_in(current, name, sub_path);
    if (existing) {
      ext2_ino_t ino = *existing;
      auto inode = s.read_inode(ino, sub_path);
      if (LINUX_S_ISLNK(inode.i_mode)) {
        s.check(ext2fs_follow_link(s.fs, EXT2_ROOT_INO, current, ino, &ino), "follow the symlink", sub_path);
        inode = s.read_inode(ino, sub_path);
      }
      if (!LINUX_S_ISDIR(inode.i_mode)) s.fail("create the directory", path, sub_path + " exists and is not a directory");
      current = ino;
      continue;
    }
    if (name == "..") s.fail("create the directory", path, "'..' leads to a missing directory");
    // The inode number is chosen here rather than by ext2fs_mkdir so a failure can be cleaned up.
    ext2_ino_t created = s.allocate_inode(current, LINUX_S_IFDIR | 0755, sub_path);
    errcode_t rc = s.with_directory_space(current, [&] { return ext2fs_mkdir(s.fs, current, created, name.c_str()); });
    if (rc != 0) {
      s.discard_new_inode(created, sub_path);
      s.fail("create the directory", sub_path, rc);
    }
    s.apply_new_attributes(created, attributes, false, sub_path);
    s.touch_directory(current, sub_path);
    current = created;
  }
}

void Ext4Filesystem::write_file(const std::string& path, std::span<const std::byte> content,
                                const Ext4FileAttributes& attributes) {
  MemoryByteSource source(content);
  state_->write_regular_file(path, source, attributes);
}

void Ext4Filesystem::write_file(const std::string& path, const std::string& content,
                                const Ext4FileAttributes& attributes) {
  write_file(path, std::as_bytes(std::span(content.data(), content.size())), attributes);
}

void Ext4Filesystem::copy_file_from_host(const std::filesystem::path& host_file, const std::string& path,
                                         const Ext4FileAttributes& attributes) {
  HostFileByteSource source(host_file);
  state_->write_regular_file(path, source, attributes);
}

std::vector<Ext4PlacedRun> Ext4Filesystem::place_file_from_host(const std::filesystem::path& host_file,
                                                                const std::string& path,
                                                                const Ext4FileAttributes& attributes) {
  HostFileByteSource source(host_file);
  std::vector<Ext4PlacedRun> placed;
  state_->write_regular_file(path, source, attributes, &placed);
  return placed;
}

namespace {

// A file's device, inode and modification time (ns), or nullopt where it cannot be stat'ed.
std::optional<std::tuple<std::uint64_t, std::uint64_t, std::int64_t>> host_file_identity(const std::filesystem::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return std::nullopt;
  return std::tuple(static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
                    static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
}

}  // namespace

Ext4HostFileScan scan_host_file(const std::filesystem::path& host_file, std::uint64_t block_size, std::uint64_t offset,
                                 std::optional<std::uint64_t> length) {
  if (block_size == 0 || copy_chunk_bytes % block_size != 0) {
    throw Error("cannot scan " + host_file.string() + " in blocks of " + std::to_string(block_size) + " bytes");
  }
  HostFileByteSource source(host_file, offset, length);
  Ext4HostFileScan scan;
  scan.path = host_file;
  scan.offset = offset;
  scan.size = source.size();
  scan.file_size = source.file_size();
  if (auto identity = host_file_identity(host_file)) std::tie(scan.device, scan.inode, scan.modified_ns) = *identity;
  scan.block_size = block_size;
  scan.data_ranges = source.data_ranges();
  for_each_nonzero_run(source, scan.data_ranges, block_size,
                       [&](std::uint64_t first, std::size_t count, const std::byte*) { scan.runs.emplace_back(first, count); });
  return scan;
}

std::vector<Ext4PlacedRun> Ext4Filesystem::place_file_from_host(const Ext4HostFileScan& scan, const std::string& path,
                                                                const Ext4FileAttributes& attributes) {
  const auto identity = host_file_identity(scan.path);
  if (scan.block_size != state_->block_size() || !identity || *identity != std::tuple(scan.device, scan.inode, scan.modified_ns) ||
      std::filesystem::file_size(scan.path) != scan.file_size) {
    const bool window = scan.offset != 0 || scan.size != scan.file_size;
    HostFileByteSource source(scan.path, scan.offset, window ? std::optional(scan.size) : std::nullopt);
    std::vector<Ext4PlacedRun> placed;
    state_->write_regular_file(path, source, attributes, &placed);
    return placed;
  }
  // The scan's size and extents stand for the file (its bytes are not read again).
  class Scanned final : public ByteSource {
   public:
    explicit Scanned(const Ext4HostFileScan& scan) : scan_(scan) {}
    std::uint64_t size() const override { return scan_.size; }
    std::vector<std::pair<std::uint64_t, std::uint64_t>> data_ranges() const override { return scan_.data_ranges; }
    std::size_t read(std::uint64_t, std::span<std::byte>) const override {
      throw Error("internal error: " + scan_.path.string() + " is placed from its scan, not read");
    }

   private:
    const Ext4HostFileScan& scan_;
  };
  std::vector<Ext4PlacedRun> placed;
  state_->write_regular_file(path, Scanned(scan), attributes, &placed, &scan.runs);
  return placed;
}

void Ext4Filesystem::create_symlink(const std::string& path, const std::string& target,
                                    const Ext4FileAttributes& attributes) {
  State& s = *state_;
  const std::string action = "create the symlink";
  s.require_writable(action, path);
  if (target.empty()) s.fail(action, path, "the target is empty");
  if (target.find('\0') != std::string::npos) s.fail(action, path, "the target contains a NUL byte");
  if (target.size() >= s.block_size()) {
    s.fail(action, path, "the target is " + std::to_string(target.size()) + " bytes; at most " +
                             std::to_string(s.block_size() - 1) + " fit in a block");
  }
  auto [parent, name] = s.parent_of(path, action);
  s.clear_for_replacement(parent, name, path, action);
  ext2_ino_t ino = s.allocate_inode(parent, LINUX_S_IFLNK | 0777, path);
  errcode_t rc = s.with_directory_space(parent, [&, p = parent, &n = name] {
    return ext2fs_symlink(s.fs, p, ino, n.c_str(), target.c_str());
  });
  if (rc != 0) {
    s.discard_new_inode(ino, path);
    s.fail(action, path, rc);
  }
  s.apply_new_attributes(ino, attributes, true, path);
  s.touch_directory(parent, path);
}

void Ext4Filesystem::create_hard_link(const std::string& path, const std::string& existing) {
  State& s = *state_;
  const std::string action = "create the hard link";
  s.require_writable(action, path);
  ext2_ino_t ino = s.lookup_existing(existing);
  auto inode = s.read_inode(ino, existing);
  if (LINUX_S_ISDIR(inode.i_mode)) s.fail(action, path, existing + " is a directory; directories cannot be hard-linked");
  auto [parent, name] = s.parent_of(path, action);
  if (auto present = s.lookup_in(parent, name, path); present && *present == ino) return;  // already a name of it
  if (inode.i_links_count >= EXT2_LINK_MAX) {
    s.fail(action, path, existing + " already has " + std::to_string(inode.i_links_count) + " links, the most ext4 allows");
  }
  s.clear_for_replacement(parent, name, path, action);
  const int type = dirent_type_of_mode(inode.i_mode);
  errcode_t rc = s.with_directory_space(parent, [&, p = parent, &n = name] {
    return ext2fs_link(s.fs, p, n.c_str(), ino, type);
  });
  if (rc != 0) s.fail(action, path, rc);
  // Read again: replacing the old entry at path may have written inodes.
  inode = s.read_inode(ino, existing);
  inode.i_links_count++;
  set_ctime(inode, s.now());
  s.write_inode(ino, inode, path);
  s.touch_directory(parent, path);
}

std::string Ext4Filesystem::read_file(const std::string& path) const {
  const State& s = *state_;
  ext2_ino_t ino = s.lookup_following(path);
  auto inode = s.read_inode(ino, path);
  if (!LINUX_S_ISREG(inode.i_mode)) s.fail("read", path, "not a regular file");
  return s.read_content(ino, path);
}

std::string Ext4Filesystem::read_symlink(const std::string& path) const {
  return state_->symlink_target(state_->lookup_existing(path), path);
}

std::vector<Ext4ExtendedAttribute> Ext4Filesystem::extended_attributes(const std::string& path) const {
  return state_->extended_attributes(state_->lookup_existing(path), path);
}

void Ext4Filesystem::read_file_data(const std::string& path, const Ext4FileDataConsumer& consume) const {
  state_->stream_data(state_->lookup_following(path), consume, path);
}

std::vector<DataExtent> Ext4Filesystem::file_data_extents(const std::string& path) const {
  return state_->data_extents(state_->lookup_following(path), path);
}

namespace {
std::string inode_name(std::uint32_t inode) { return "inode " + std::to_string(inode); }
}  // namespace

Ext4FileStatus Ext4Filesystem::inode_status(std::uint32_t inode) const {
  Ext4FileStatus result;
  state_->fill_status(inode, result, inode_name(inode));
  return result;
}

std::vector<Ext4DirectoryEntry> Ext4Filesystem::list_directory_inode(std::uint32_t inode) const {
  return state_->list(inode, inode_name(inode));
}

std::string Ext4Filesystem::inode_symlink_target(std::uint32_t inode) const {
  return state_->symlink_target(inode, inode_name(inode));
}

std::vector<Ext4ExtendedAttribute> Ext4Filesystem::inode_extended_attributes(std::uint32_t inode) const {
  return state_->extended_attributes(inode, inode_name(inode));
}

void Ext4Filesystem::read_inode_data(std::uint32_t inode, const Ext4FileDataConsumer& consume) const {
  state_->stream_data(inode, consume, inode_name(inode));
}

std::vector<DataExtent> Ext4Filesystem::inode_data_extents(std::uint32_t inode) const {
  return state_->data_extents(inode, inode_name(inode));
}

bool Ext4Filesystem::exists(const std::string& path) const { return state_->lookup(path).has_value(); }

Ext4FileStatus Ext4Filesystem::status(const std::string& path) const {
  Ext4FileStatus result;
  state_->fill_status(state_->lookup_existing(path), result, path);
  return result;
}

std::vector<Ext4DirectoryEntry> Ext4Filesystem::list_directory(const std::string& path) const {
  return state_->list(state_->lookup_following(path), path);
}

void Ext4Filesystem::remove(const std::string& path, bool recursive) {
  State& s = *state_;
  s.require_writable("remove", path);
  auto [parent, name] = s.parent_of(path, "remove");
  auto ino = s.lookup_in(parent, name, path);
  if (!ino) s.fail("remove", path, "no such file or directory");
  auto inode = s.read_inode(*ino, path);
  if (LINUX_S_ISDIR(inode.i_mode)) {
    if (recursive) {
      s.remove_tree(*ino, path);
    } else if (!s.list(*ino, path).empty()) {
      s.fail("remove", path, "the directory is not empty");
    }
  }
  s.release_entry(parent, name, *ino, path);
}

void Ext4Filesystem::set_permissions(const std::string& path, std::uint16_t permissions) {
  State& s = *state_;
  s.require_writable("change the permissions of", path);
  ext2_ino_t ino = s.lookup_existing(path);
  auto inode = s.read_inode(ino, path);
  inode.i_mode = static_cast<__u16>((inode.i_mode & 0170000) | (permissions & 07777));
  set_ctime(inode, s.now());
  s.write_inode(ino, inode, path);
}

void Ext4Filesystem::set_owner(const std::string& path, std::uint32_t uid, std::uint32_t gid) {
  State& s = *state_;
  s.require_writable("change the owner of", path);
  ext2_ino_t ino = s.lookup_existing(path);
  auto inode = s.read_inode(ino, path);
  set_owner_fields(inode, uid, gid);
  set_ctime(inode, s.now());
  s.write_inode(ino, inode, path);
}

void Ext4Filesystem::set_times(const std::string& path, std::optional<Ext4Timestamp> atime,
                               std::optional<Ext4Timestamp> mtime, std::optional<Ext4Timestamp> ctime) {
  State& s = *state_;
  s.require_writable("set the times of", path);
  ext2_ino_t ino = s.lookup_existing(path);
  auto inode = s.read_inode(ino, path);
  if (atime) set_atime(inode, *atime);
  if (mtime) set_mtime(inode, *mtime);
  set_ctime(inode, ctime.value_or(s.now()));
  s.write_inode(ino, inode, path);
}

Ext4SpaceUsage Ext4Filesystem::space_usage() const {
  auto* super = state_->fs->super;
  Ext4SpaceUsage usage;
  usage.block_size = state_->fs->blocksize;
  usage.total_blocks = ext2fs_blocks_count(super);
  usage.free_blocks = ext2fs_free_blocks_count(super);
  usage.reserved_blocks = ext2fs_r_blocks_count(super);
  usage.total_inodes = super->s_inodes_count;
  usage.free_inodes = super->s_free_inodes_count;
  return usage;
}

std::vector<DataExtent> Ext4Filesystem::used_ranges() const {
  ext2_filsys fs = state_->fs;
  if (fs->block_map == nullptr) {
    // For groups marked BLOCK_UNINIT, libext2fs fills in the group's own metadata blocks.
    if (errcode_t error = ext2fs_read_block_bitmap(fs); error != 0) {
      throw Error(state_->where() + ": cannot read the block bitmap: " + describe_errcode(error));
    }
  }
  const std::uint64_t block_size = fs->blocksize;
  const blk64_t last = ext2fs_blocks_count(fs->super) - 1;
  // Blocks before s_first_data_block (the 1 KiB boot block of a 1 KiB-block filesystem) are in no
  // group's bitmap; the superblock follows them.
  std::vector<DataExtent> ranges{{state_->byte_offset, std::uint64_t{fs->super->s_first_data_block} * block_size}};
  blk64_t at = fs->super->s_first_data_block;
  while (at <= last) {
    blk64_t used = 0;
    if (ext2fs_find_first_set_block_bitmap2(fs->block_map, at, last, &used) != 0) break;  // none left
    blk64_t free = 0;
    blk64_t end = ext2fs_find_first_zero_block_bitmap2(fs->block_map, used, last, &free) == 0 ? free : last + 1;
    ranges.push_back({state_->byte_offset + used * block_size, (end - used) * block_size});
    at = end;
  }
  return merge_extents(std::move(ranges));
}

Ext4Timestamp Ext4Filesystem::now() const { return state_->now(); }

namespace {

// Debian's eatmydata package (multiarch path of this build's architecture).
#if defined(__x86_64__)
constexpr const char* eatmydata_library = "/usr/lib/x86_64-linux-gnu/libeatmydata.so.1";
#elif defined(__aarch64__)
constexpr const char* eatmydata_library = "/usr/lib/aarch64-linux-gnu/libeatmydata.so.1";
#else
constexpr const char* eatmydata_library = "";
#endif

std::vector<std::pair<std::string, std::string>> fixed_time_environment(std::optional<std::int64_t> fixed_time) {
  if (!fixed_time) return {};
  // E2FSCK_TIME is e2fsck's own clock (s_lastcheck, and what "in the future" is judged against);
  // E2FSPROGS_FAKE_TIME becomes fs->now in ext2fs_open2/ext2fs_initialize, i.e. s_wtime, mkfs time and
  // inode times the tools write (resize inode, lost+found, files from mke2fs -d).
  std::string value = std::to_string(*fixed_time);
  return {{"E2FSCK_TIME", value}, {"E2FSPROGS_FAKE_TIME", value}};
}

void require_region_inside_image(const std::filesystem::path& image, std::uint64_t byte_offset,
                                 std::uint64_t byte_length) {
  std::error_code ec;
  auto file_size = std::filesystem::file_size(image, ec);
  if (ec) throw Error("cannot read the size of " + image.string() + ": " + ec.message());
  if (byte_offset + byte_length > file_size) {
    throw Error("the region " + std::to_string(byte_offset) + "+" + std::to_string(byte_length) + " ends beyond " +
                image.string() + " (" + std::to_string(file_size) + " bytes); enlarge the image first");
  }
}

}  // namespace

namespace {

FileDescriptor open_file(const std::filesystem::path& path, int flags, const std::string& what) {
  FileDescriptor fd(::open(path.c_str(), flags | O_CLOEXEC, 0600));
  if (!fd) throw_system_error("cannot open " + path.string() + " for " + what, errno);
  return fd;
}

// A scratch file next to the image (same filesystem, so copy_file_range can share extents), removed
// on every path out.
class ScratchFile {
 public:
  explicit ScratchFile(std::filesystem::path path) : path_(std::move(path)) { std::filesystem::remove(path_); }
  ~ScratchFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void run_fsck_before_resize(const std::string& target, const ProcessOptions& options) {
  // -p (preen) repairs only what is safe to repair unattended and fails otherwise: a base image with
  // real damage must stop the build, not be "fixed" by answering yes to everything.
  auto fsck = run_process({"e2fsck", "-f", "-p", target}, options);
  if (fsck.exit_code == 1) {
    log::warning("e2fsck corrected problems in ", target, " before resizing: ", fsck.standard_output);
  } else if (fsck.exit_code != 0) {
    throw Error("e2fsck found problems it cannot fix unattended in " + target + " (exit code " +
                std::to_string(fsck.exit_code) + "), so it was not resized: " + fsck.standard_output +
                fsck.standard_error);
  }
}


// resize2fs accepts "IMAGE?offset=N", but after resizing a regular file it sets the file's size to
// the filesystem's new size, ignoring the offset (resize/main.c, 1.47.0): it ftruncate()s a file
// that is longer, and writes a byte at the end of one that is shorter. A disk image is longer by the
// offset and whatever follows the partition, so run as-is it would lose its end. The file's size is
// left alone only when it equals the new filesystem size exactly; grow_in_place arranges that.
//
// In place: the image is cut to exactly new_bytes (the new filesystem size, which is less than
// offset + new_bytes), resize2fs runs on "IMAGE?offset=N" and writes past that end as it needs to
// (reads there would fail loudly, never return stale data), and the image is given its size back.
// Sound when the old filesystem lies wholly before the cut and whatever the image holds beyond the
// new filesystem is put back; the cut-off part of the new filesystem's region held nothing the
// filesystem uses yet (it is new space). Cost: the check and the resize, no copy of the data.
// Returns false, having changed nothing, when those conditions do not hold.
bool grow_in_place(const std::filesystem::path& image, std::uint64_t byte_offset, std::uint64_t old_bytes,
                   std::uint64_t new_blocks, std::uint32_t block_size, const ProcessOptions& options) {
  const std::uint64_t new_bytes = new_blocks * block_size;
  const std::uint64_t image_size = std::filesystem::file_size(image);
  const std::uint64_t region_end = byte_offset + new_bytes;
  if (byte_offset + old_bytes > new_bytes || region_end > image_size) return false;
  auto fd = open_file(image, O_RDWR, "growing its filesystem");
  // Data after the filesystem's region (a GPT's backup header, another partition's start): kept in
  // memory across the cut when it is small; otherwise the scratch-file way is taken.
  constexpr std::uint64_t max_kept_tail = std::uint64_t{16} << 20;
  std::vector<std::pair<std::uint64_t, std::vector<char>>> tail;
  std::uint64_t kept = 0;
  for (off_t position = static_cast<off_t>(region_end); position < static_cast<off_t>(image_size);) {
    off_t data = ::lseek(fd.get(), position, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;
    if (data < 0) return false;  // no SEEK_DATA: cannot tell what lies there
    off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) return false;
    hole = std::min(hole, static_cast<off_t>(image_size));
    kept += static_cast<std::uint64_t>(hole - data);
    if (kept > max_kept_tail) return false;
    std::vector<char> bytes(static_cast<std::size_t>(hole - data));
    if (::pread(fd.get(), bytes.data(), bytes.size(), data) != static_cast<ssize_t>(bytes.size())) {
      throw_system_error("cannot read the end of " + image.string(), errno);
    }
    tail.emplace_back(static_cast<std::uint64_t>(data), std::move(bytes));
    position = hole;
  }
  const std::string device = device_with_offset(image, byte_offset);
  run_fsck_before_resize(device, options);
  if (::ftruncate(fd.get(), static_cast<off_t>(new_bytes)) != 0) {
    throw_system_error("cannot cut " + image.string() + " for resizing its filesystem", errno);
  }
  // The image gets its size and its tail back whatever resize2fs did.
  auto restore = [&] {
    if (::ftruncate(fd.get(), static_cast<off_t>(image_size)) != 0) {
      throw_system_error("cannot restore the size of " + image.string(), errno);
    }
    for (const auto& [offset, bytes] : tail) {
      if (::pwrite(fd.get(), bytes.data(), bytes.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(bytes.size())) {
        throw_system_error("cannot restore the end of " + image.string(), errno);
      }
    }
  };
  try {
    run_process_checked({"resize2fs", device, std::to_string(new_blocks)}, options);
  } catch (...) {
    restore();
    throw;
  }
  if (std::filesystem::file_size(image) > image_size) {
    throw Error("resize2fs wrote past the end of " + image.string() + " while growing the filesystem at offset " +
                std::to_string(byte_offset));
  }
  restore();
  log::debug("grew the ext4 filesystem at offset ", byte_offset, " of ", image.string(), " in place");
  return true;
}

// The general way: the filesystem is copied out into a scratch file of its own (sparse, in-kernel
// copies), grown there at offset 0, and copied back with holes punched where the scratch file has
// them. Cost: one pass over the used data each way.
void grow_in_scratch_file(const std::filesystem::path& image, std::uint64_t byte_offset, std::uint64_t old_bytes,
                          std::uint64_t new_blocks, std::uint64_t new_byte_length, const ProcessOptions& options) {
  ScratchFile scratch(image.parent_path() / ("." + image.filename().string() + ".ext4-resize"));
  {
    auto source = open_file(image, O_RDONLY, "reading the filesystem to resize");
    auto destination = open_file(scratch.path(), O_RDWR | O_CREAT | O_EXCL, "resizing");
    if (::ftruncate(destination.get(), static_cast<off_t>(old_bytes)) != 0) {
      throw_system_error("cannot size " + scratch.path().string(), errno);
    }
    copy_sparse_range({.source = source.get(),
                       .source_name = image.string(),
                       .source_offset = byte_offset,
                       .destination = destination.get(),
                       .destination_name = scratch.path().string(),
                       .length = old_bytes});
  }
  run_fsck_before_resize(scratch.path().string(), options);
  run_process_checked({"resize2fs", scratch.path().string(), std::to_string(new_blocks)}, options);
  auto source = open_file(scratch.path(), O_RDONLY, "copying the resized filesystem back");
  auto destination = open_file(image, O_RDWR, "writing the resized filesystem");
  std::uint64_t grown_bytes = std::min<std::uint64_t>(std::filesystem::file_size(scratch.path()), new_byte_length);
  copy_sparse_range({.source = source.get(),
                     .source_name = scratch.path().string(),
                     .destination = destination.get(),
                     .destination_name = image.string(),
                     .destination_offset = byte_offset,
                     .length = grown_bytes,
                     .punch_holes = true});
}

}  // namespace

void grow_ext4_filesystem(const std::filesystem::path& image, std::uint64_t byte_offset, std::uint64_t new_byte_length,
                          std::optional<std::int64_t> fixed_time) {
  require_region_inside_image(image, byte_offset, new_byte_length);
  std::uint32_t block_size = 0;
  std::uint64_t old_blocks = 0;
  {
    auto fs = Ext4Filesystem::open(image, byte_offset, new_byte_length, Ext4Access::read_only);
    auto usage = fs.space_usage();
    block_size = usage.block_size;
    old_blocks = usage.total_blocks;
  }
  const std::uint64_t new_blocks = new_byte_length / block_size;
  if (new_blocks == old_blocks) {
    log::debug("ext4 at offset ", byte_offset, " of ", image.string(), " already fills ", new_byte_length, " bytes");
    return;
  }
  ProcessOptions options;
  options.environment = fixed_time_environment(fixed_time);
  // e2fsck and resize2fs open the image through libext2fs's unix_io_manager, which fsyncs it: right
  // after a build has written the base into its work image that is a wait for ~2 GiB of writeback
  // (0.8 s of e2fsck's 0.81 s here). Nothing needs it: whoever needs this image on disk flushes it
  // (a build does, once, before the rename), like Ext4Filesystem::close. libeatmydata (Debian's
  // eatmydata, which sbuild and pbuilder use for the same reason) makes the tools' fsyncs no-ops.
  if (*eatmydata_library != '\0' && std::filesystem::exists(eatmydata_library)) {
    const char* preload = std::getenv("LD_PRELOAD");
    options.environment.emplace_back("LD_PRELOAD", preload != nullptr && *preload != '\0'
                                                       ? std::string(preload) + ":" + eatmydata_library
                                                       : std::string(eatmydata_library));
  }

  if (byte_offset == 0) {
    run_fsck_before_resize(image.string(), options);
    run_process_checked({"resize2fs", image.string(), std::to_string(new_blocks)}, options);
  } else if (!grow_in_place(image, byte_offset, old_blocks * block_size, new_blocks, block_size, options)) {
    grow_in_scratch_file(image, byte_offset, old_blocks * block_size, new_blocks, new_byte_length, options);
  }

  auto fs = Ext4Filesystem::open(image, byte_offset, new_byte_length, Ext4Access::read_only);
  auto grown = fs.space_usage().total_blocks;
  // resize2fs may leave off a tail too small to hold a block group's metadata; never less than before.
  if (grown <= old_blocks) {
    throw Error("resize2fs did not grow the ext4 filesystem at offset " + std::to_string(byte_offset) + " of " +
                image.string() + " (still " + std::to_string(grown) + " blocks)");
  }
  log::info("grew the ext4 filesystem at offset ", byte_offset, " of ", image.string(), " from ",
            old_blocks * block_size, " to ", grown * block_size, " bytes");
}

std::string libext2fs_version() {
  const char* version = nullptr;
  ext2fs_get_library_version(&version, nullptr);
  return version != nullptr ? version : "";
}

Ext4CheckResult check_ext4_filesystem(const std::filesystem::path& image, std::uint64_t byte_offset) {
  auto result = run_process({"e2fsck", "-f", "-n", device_with_offset(image, byte_offset)});
  Ext4CheckResult check;
  check.exit_code = result.exit_code;
  check.clean = result.exit_code == 0;
  check.report = result.standard_output + result.standard_error;
  if (result.exit_code >= 8) {
    throw Error("e2fsck could not check " + device_with_offset(image, byte_offset) + " (exit code " +
                std::to_string(result.exit_code) + "): " + check.report);
  }
  return check;
}

void create_ext4_filesystem(const std::filesystem::path& image, std::uint64_t byte_offset, std::uint64_t byte_length,
                            const Ext4CreateOptions& options) {
  require_region_inside_image(image, byte_offset, byte_length);
  if (byte_length < 1024 * 1024) throw Error("an ext4 filesystem needs at least 1 MiB, got " + std::to_string(byte_length));
  std::string extended = "offset=" + std::to_string(byte_offset);
  std::vector<std::string> argv = {"mke2fs", "-q", "-F", "-t", "ext4"};
  if (!options.label.empty()) argv.insert(argv.end(), {"-L", options.label});
  if (options.uuid) {
    argv.insert(argv.end(), {"-U", *options.uuid});
    extended += ",hash_seed=" + *options.uuid;
  }
  if (options.populate_from) argv.insert(argv.end(), {"-d", options.populate_from->string()});
  argv.insert(argv.end(), {"-E", extended, image.string(), std::to_string(byte_length / 1024) + "k"});
  ProcessOptions process_options;
  process_options.environment = fixed_time_environment(options.fixed_time);
  run_process_checked(argv, process_options);
}

}  // namespace aggrik8s
