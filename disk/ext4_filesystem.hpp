#pragma once
// The ext4 root filesystem of a Raspberry Pi OS image, edited in place inside the image file with
// libext2fs: no mount, no loop device, no root. Ownership (root:root, 0600 secrets) is whatever we
// write into the inode, not what the kernel lets an unprivileged user do — that is why this is done
// in-process rather than by copying files onto a mounted filesystem.
//
// Paths are absolute paths inside the filesystem. Symbolic links in the directory part of a path are
// followed relative to the filesystem's own root (so /lib -> usr/lib in a merged-/usr image works);
// the last component is never followed except by read_file.
//
// Reproducibility (SOURCE_DATE_EPOCH): what changes when an ext4 filesystem is written, and what we pin:
//   - inode times (atime/ctime/mtime/crtime) of new and changed inodes, and of directories that gain
//     or lose entries: taken from Ext4Filesystem::now(), which is the fixed time when one is given to
//     open() (it also becomes libext2fs's fs->now) and the wall clock otherwise;
//   - superblock s_wtime: written by ext2fs_close from fs->now, so the fixed time pins it too. s_mtime
//     (last mount) and s_lastcheck (last e2fsck) are not touched by libext2fs; the external-tool
//     functions below pass E2FSCK_TIME / E2FSPROGS_FAKE_TIME so e2fsck/resize2fs pin them;
//   - s_kbytes_written grows by what this process wrote: deterministic for the same sequence of
//     operations on the same base image;
//   - block and inode allocation in libext2fs is first-fit from a goal, with no randomness: the same
//     operations in the same order on the same base give the same layout;
//   - the filesystem UUID, s_hash_seed (directory hash order), the journal UUID and the metadata
//     checksum seed are set by mke2fs and never changed here; the base image fixes them. Directory
//     entries are added to linear directories in first-fit order and to htree directories by the
//     base's hash seed, both deterministic. i_generation of new inodes is 0 (the kernel would
//     randomise it; libext2fs does not).
// libext2fs 1.47.0 also reads E2FSPROGS_FAKE_TIME in ext2fs_open2 (openfs.c) and uses it as fs->now,
// so setting that variable has the same effect; an explicit fixed time given to open() wins.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "disk/data_extent.hpp"

namespace aggrik8s {

class BlockDevice;

enum class Ext4FileType { regular, directory, symlink, character_device, block_device, fifo, socket };
// The file type bits of a mode (S_IFREG, S_IFDIR, ...: the same values in stat(2), ext4, tar, cpio and
// squashfs modes).
std::uint16_t file_type_mode_bits(Ext4FileType type);

// Seconds since the Unix epoch plus nanoseconds, as ext4 stores them (large inodes keep nanoseconds
// and two extra epoch bits; 128-byte inodes keep 32-bit seconds only).
struct Ext4Timestamp {
  std::int64_t seconds = 0;
  std::uint32_t nanoseconds = 0;
  friend bool operator==(const Ext4Timestamp&, const Ext4Timestamp&) = default;
};

// What a created file, directory or symlink gets. permissions are the low 12 mode bits
// (setuid/setgid/sticky included); for symlinks they are ignored (always 0777).
struct Ext4FileAttributes {
  std::uint16_t permissions = 0644;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  // When absent, Ext4Filesystem::now().
  std::optional<Ext4Timestamp> mtime;
};

struct Ext4FileStatus {
  Ext4FileType type = Ext4FileType::regular;
  std::uint32_t inode = 0;
  std::uint16_t permissions = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;
  std::uint32_t link_count = 0;
  // Bytes of data and metadata blocks allocated to the file (what du reports); smaller than size for
  // sparse files.
  std::uint64_t allocated_bytes = 0;
  Ext4Timestamp atime;
  Ext4Timestamp mtime;
  Ext4Timestamp ctime;
  // Character and block devices only (Linux's major/minor split, as stat(2)'s st_rdev decodes it).
  std::uint32_t device_major = 0;
  std::uint32_t device_minor = 0;
};

// One extended attribute: the full name with its namespace ("security.capability", "user.comment",
// "trusted.overlay.opaque", "system.posix_acl_access") and the value's bytes. POSIX ACLs are given in
// the format getfattr and setxattr(2) use (libext2fs translates ext4's compact on-disk form), which is
// also what tar's SCHILY.xattr and squashfs store.
struct Ext4ExtendedAttribute {
  std::string name;
  std::string value;
  friend bool operator==(const Ext4ExtendedAttribute&, const Ext4ExtendedAttribute&) = default;
};

// A piece of a regular file's data: bytes [offset, offset + data.size()). The span is valid only during
// the call it is passed to.
using Ext4FileDataConsumer = std::function<void(std::uint64_t offset, std::span<const std::byte> data)>;

struct Ext4DirectoryEntry {
  std::string name;
  std::uint32_t inode = 0;
  Ext4FileType type = Ext4FileType::regular;
};

struct Ext4SpaceUsage {
  std::uint32_t block_size = 0;
  std::uint64_t total_blocks = 0;
  std::uint64_t free_blocks = 0;
  // Blocks only root may use on a mounted system. Writes made here ignore the reservation (the
  // kernel lets root use it too), but a builder should leave it free for the running node.
  std::uint64_t reserved_blocks = 0;
  std::uint64_t total_inodes = 0;
  std::uint64_t free_inodes = 0;
  std::uint64_t free_bytes() const { return free_blocks * block_size; }
  std::uint64_t total_bytes() const { return total_blocks * block_size; }
};

enum class Ext4Access { read_only, read_write };

// Where place_file_from_host put a file's data: `length` bytes at `device_offset` of the filesystem's
// device are to hold the host file's bytes from `file_offset` (whole blocks: past the host file's end,
// the last block's bytes are zeros). For a scan of a window of a host file, `file_offset` counts from
// the window's start and the bytes past the window's end are the zeros.
struct Ext4PlacedRun {
  std::uint64_t device_offset = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t length = 0;
};

// A host file's non-zero blocks, found before a filesystem places it (place_file_from_host): reading
// the file for them is all that placing it costs (512 MiB of image archives: 0.1 s on this project's
// VMs) and needs no filesystem, so a build scans its archives while it copies its base image in.
struct Ext4HostFileScan {
  std::filesystem::path path;
  // The bytes scanned: `size` bytes from `offset` (the whole file, or a window such as an uncompressed
  // tar's member, whose file is then placed as if those bytes were all of it).
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::uint64_t file_size = 0;  // the host file's, when scanned
  std::uint64_t block_size = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> data_ranges;  // byte ranges (SEEK_DATA)
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;         // non-zero blocks: first, count
  // Which file, as it was when scanned: placing from a file that changed since reads it again.
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::int64_t modified_ns = 0;
};
// Throws Error naming the file if it cannot be read (or the window lies past its end). A window is
// scanned as one data range (holes under it are found by reading zeros), so that placing it gives
// the blocks write_file gives the same bytes.
Ext4HostFileScan scan_host_file(const std::filesystem::path& host_file, std::uint64_t block_size, std::uint64_t offset = 0,
                                std::optional<std::uint64_t> length = std::nullopt);

class Ext4Filesystem {
 public:
  // Opens the filesystem stored at byte_offset in image (a disk image file, or a plain filesystem
  // image with offset 0). byte_length is the size of the region (the partition); a filesystem that
  // claims to be larger is refused, because writing would then damage whatever follows it.
  // Refused for writing: unsupported incompatible features, a journal that needs recovery, a
  // filesystem marked with errors, orphan inodes pending — each with a message saying what to do.
  // fixed_time pins every timestamp this object writes (see the reproducibility notes above).
  static Ext4Filesystem open(const std::filesystem::path& image, std::uint64_t byte_offset,
                             std::uint64_t byte_length, Ext4Access access,
                             std::optional<std::int64_t> fixed_time = std::nullopt);
  // The same on a device that holds the filesystem at byte_offset (a whole disk image, or a
  // partition's SubrangeBlockDevice with offset 0): every read and write libext2fs makes, closing's
  // included, goes through device, so a device that records what was written
  // (FileBlockDevice::written_extents) knows every byte an edit changed. device must outlive the
  // filesystem; its flush() is never called here (see close()).
  static Ext4Filesystem open(BlockDevice& device, std::uint64_t byte_offset, std::uint64_t byte_length,
                             Ext4Access access, std::optional<std::int64_t> fixed_time = std::nullopt);

  Ext4Filesystem(Ext4Filesystem&&) noexcept;
  Ext4Filesystem& operator=(Ext4Filesystem&&) noexcept;
  Ext4Filesystem(const Ext4Filesystem&) = delete;
  Ext4Filesystem& operator=(const Ext4Filesystem&) = delete;
  // Flushes like close() but only logs a failure: bitmaps live in memory until then, and leaving
  // them unwritten after inodes were written would make the filesystem inconsistent.
  ~Ext4Filesystem();

  // Writes bitmaps, group descriptors and the superblock and closes the image. Throws on failure.
  // Does not fsync: whoever needs the image on disk flushes it (a build does, once per image).
  void close();

  // Creates path and any missing parents with attributes (existing directories are left as they
  // are). An existing non-directory in the way is an Error.
  void create_directories(const std::string& path, const Ext4FileAttributes& attributes = {0755, 0, 0, {}});

  // Writes a regular file. The parent directory must exist. An existing file, symlink or special
  // file at path is removed first and its blocks freed (a new inode replaces it, as install(1) does;
  // other hard links keep the old content). If writing fails (e.g. the filesystem is full) the
  // partial file is removed again, so the filesystem stays consistent — but the old file is gone.
  // All-zero blocks are not stored (the file becomes sparse), as mke2fs -d does.
  void write_file(const std::string& path, std::span<const std::byte> content,
                  const Ext4FileAttributes& attributes);
  void write_file(const std::string& path, const std::string& content, const Ext4FileAttributes& attributes);
  // Streams host_file in large chunks; holes in the host file (SEEK_HOLE) stay holes.
  void copy_file_from_host(const std::filesystem::path& host_file, const std::string& path,
                           const Ext4FileAttributes& attributes);
  // copy_file_from_host without the copy: the file is created with its blocks allocated (all-zero
  // blocks left as holes, as there) and returned, but its data is not written. The caller writes it
  // (a build: with O_DIRECT, past the page cache); until then the file reads as what its blocks held.
  std::vector<Ext4PlacedRun> place_file_from_host(const std::filesystem::path& host_file, const std::string& path,
                                                  const Ext4FileAttributes& attributes);
  // The same from a scan of the file (made with this filesystem's block size): the same blocks,
  // allocated in the same order. A scan made with another block size, or of a file that has since
  // been replaced or written (another inode, size or modification time), is not used: the file is
  // read again.
  std::vector<Ext4PlacedRun> place_file_from_host(const Ext4HostFileScan& scan, const std::string& path,
                                                  const Ext4FileAttributes& attributes);

  // Creates a symlink (replacing a non-directory at path). Targets shorter than 60 bytes are stored
  // in the inode ("fast"), longer ones in a data block; at most block size - 1 bytes.
  void create_symlink(const std::string& path, const std::string& target, const Ext4FileAttributes& attributes = {0777, 0, 0, {}});

  // Adds path as another name of the existing non-directory `existing` (not followed if it is a
  // symlink), as link(2) does: one inode, its link count raised by one. A non-directory at path is
  // replaced; path already naming that inode is left alone.
  void create_hard_link(const std::string& path, const std::string& existing);

  // Contents of a regular file; symlinks are followed.
  std::string read_file(const std::string& path) const;
  std::string read_symlink(const std::string& path) const;

  bool exists(const std::string& path) const;
  // Does not follow a symlink in the last component (lstat).
  Ext4FileStatus status(const std::string& path) const;
  // Entries other than "." and "..", sorted by name.
  std::vector<Ext4DirectoryEntry> list_directory(const std::string& path) const;

  // Removes a file, symlink or empty directory; recursive removes a directory tree.
  void remove(const std::string& path, bool recursive = false);

  void set_permissions(const std::string& path, std::uint16_t permissions);
  void set_owner(const std::string& path, std::uint32_t uid, std::uint32_t gid);
  // Absent fields are left unchanged.
  void set_times(const std::string& path, std::optional<Ext4Timestamp> atime, std::optional<Ext4Timestamp> mtime,
                 std::optional<Ext4Timestamp> ctime);

  // Extended attributes of path (not followed if it is a symlink), sorted by name. The inode's
  // system.data entry (where inline_data keeps file content) is not an attribute and is left out.
  std::vector<Ext4ExtendedAttribute> extended_attributes(const std::string& path) const;

  // Streams a regular file's data to consume in ascending offsets, at most 4 MiB a call, without
  // holding the file in memory. Holes and unwritten (preallocated) extents are not passed: the gaps
  // between calls read as zeros, so a sparse file stays sparse for whoever writes it out. A file
  // without extents (ext2/ext3 block maps, inline data) is passed whole, in chunks.
  void read_file_data(const std::string& path, const Ext4FileDataConsumer& consume) const;
  // The byte ranges read_file_data would pass, without reading them (what du counts as data).
  std::vector<DataExtent> file_data_extents(const std::string& path) const;

  // The same by inode number (Ext4FileStatus::inode, Ext4DirectoryEntry::inode), for walking a whole
  // tree: a path lookup per file would scan every directory on the way linearly (libext2fs's lookup
  // does not use the htree index), which for a directory of thousands of entries is quadratic.
  // Messages name the inode; the walker adds the path.
  Ext4FileStatus inode_status(std::uint32_t inode) const;
  std::vector<Ext4DirectoryEntry> list_directory_inode(std::uint32_t inode) const;
  std::string inode_symlink_target(std::uint32_t inode) const;
  std::vector<Ext4ExtendedAttribute> inode_extended_attributes(std::uint32_t inode) const;
  void read_inode_data(std::uint32_t inode, const Ext4FileDataConsumer& consume) const;
  std::vector<DataExtent> inode_data_extents(std::uint32_t inode) const;

  Ext4SpaceUsage space_usage() const;
  // The byte ranges of the image (byte_offset included) of every block the block bitmap marks in use:
  // superblocks, group descriptors, bitmaps, inode tables, the journal, files' and directories'
  // blocks. They must reach a card even where they are all zeros; the filesystem's free blocks need not.
  std::vector<DataExtent> used_ranges() const;
  // The time written into inodes created or changed now: the fixed time, or the wall clock.
  Ext4Timestamp now() const;

 private:
  struct State;
  explicit Ext4Filesystem(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// e2fsprogs' own tools, run on "IMAGE?offset=N": every e2fsprogs program passes the part after '?'
// to the unix I/O manager as io options, so they work on a partition inside a disk image without a
// loop device. Verified with e2fsprogs 1.47.0 for e2fsck, resize2fs, debugfs and dumpe2fs.

// Grows the filesystem at byte_offset to new_byte_length after its partition has been enlarged.
// libext2fs has no public resize API (resizing lives in resize2fs's own resize2fs.c, not in the
// library), so this runs `e2fsck -fp` (resize2fs refuses a filesystem not checked since its last
// mount) and `resize2fs FILE <blocks>` with an explicit block count. resize2fs accepts
// "IMAGE?offset=N", but on a regular file it then sets the file's size to the filesystem's new size,
// ignoring the offset; so the image is cut to exactly that size while resize2fs runs and given its
// size and any data after the partition back afterwards (no copy of the filesystem). When that is
// not possible (the old filesystem reaches past the cut, much data follows the partition, no
// SEEK_DATA) the filesystem is grown in a sparse scratch file next to the image and copied back.
// See the .cpp. fixed_time is passed as E2FSCK_TIME and E2FSPROGS_FAKE_TIME so s_lastcheck, s_wtime
// and the inode times resize2fs writes are pinned. Like Ext4Filesystem::close, this does not fsync
// (with Debian's eatmydata installed the tools' own fsyncs are skipped too): the caller flushes.
void grow_ext4_filesystem(const std::filesystem::path& image, std::uint64_t byte_offset,
                          std::uint64_t new_byte_length, std::optional<std::int64_t> fixed_time = std::nullopt);

// The version of libext2fs this program runs with ("1.47.0"); e2fsck and resize2fs come with it
// (e2fsprogs), so it also names what grow_ext4_filesystem writes.
std::string libext2fs_version();

struct Ext4CheckResult {
  bool clean = false;
  int exit_code = -1;
  std::string report;  // e2fsck's output
};
// Read-only full check (`e2fsck -fn`): for tests and the post-build self-check. Never modifies the
// image.
Ext4CheckResult check_ext4_filesystem(const std::filesystem::path& image, std::uint64_t byte_offset);

// Makes a fresh ext4 filesystem in [byte_offset, byte_offset + byte_length) with `mke2fs -t ext4
// -E offset=N`, optionally populated from a host directory (-d). For tests and future use; the
// production path edits the filesystem of a base image.
struct Ext4CreateOptions {
  std::string label;
  std::optional<std::filesystem::path> populate_from;
  std::optional<std::int64_t> fixed_time;
  // Pins the filesystem UUID and the directory hash seed for reproducible output.
  std::optional<std::string> uuid;
};
void create_ext4_filesystem(const std::filesystem::path& image, std::uint64_t byte_offset,
                            std::uint64_t byte_length, const Ext4CreateOptions& options = {});

}  // namespace aggrik8s
