#pragma once
// A compressed squashfs image of a whole ext4 tree, written in-process with libsquashfs
// (squashfs-tools-ng): the RAM root of an ephemeral node. No mount, no root, no copy of the tree on
// the host: the ext4 image inside the work disk image is read directly (disk/filesystem_tree) and each
// file's data is streamed into libsquashfs's multi-threaded block processor, which compresses on
// `threads` workers while the next file is read.
//
// Kept as they are in ext4: owners (numeric), the 12 permission bits, mtimes (whole seconds: squashfs
// 4.0 has no sub-second times), symlinks, hard links (one squashfs inode with its link count), device
// nodes, fifos, sockets, sparse files (all-zero blocks become sparse blocks) and extended attributes
// in the user., trusted. and security. namespaces (security.capability on ping survives). squashfs
// has no other namespaces: system.posix_acl_* cannot be stored; see drop_unsupported_xattrs.
//
// Reproducible: the same ext4 tree and options give a byte-identical image whatever the thread count
// (the block processor writes blocks in submission order) — the superblock's mkfs time is fixed_time,
// or the root directory's mtime when none is given, never the wall clock.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "disk/ext4_filesystem.hpp"
#include "disk/filesystem_tree.hpp"

namespace aggrik8s {

struct SquashfsWriteProgress {
  std::uint64_t files_done = 0;
  std::uint64_t file_data_bytes_done = 0;
};

struct SquashfsWriteOptions {
  // "zstd", "xz", "gzip" or "lz4", each at libsquashfs's default level (zstd 15, xz 6, gzip 9): the
  // kernel's squashfs module decompresses all four.
  std::string compressor = "zstd";
  // Its level, where that compressor has levels (zstd 1-22, xz 1-9, gzip 1-9); unset: the default above.
  std::optional<std::uint32_t> level{};
  // A power of two from 4 KiB to 1 MiB.
  std::uint32_t block_size = 128 * 1024;
  // The superblock's modification time (SOURCE_DATE_EPOCH); inode mtimes come from ext4.
  std::optional<std::int64_t> fixed_time{};
  // Compression workers; 0 = the hardware threads.
  unsigned threads = 0;
  FilesystemTreeSelection selection{};
  // Extended attributes squashfs cannot store (system.*, ...) are an error naming the file, unless
  // this is set: then each is left out with a warning and counted in the result.
  bool drop_unsupported_xattrs = false;
  // Called after each regular file, from the calling thread.
  std::function<void(const SquashfsWriteProgress&)> progress{};
};

struct SquashfsWriteResult {
  std::uint64_t bytes_written = 0;  // the image's size (padded to 4 KiB, as mksquashfs does)
  // Of the finished image, read back once it is complete: libsquashfs writes the superblock at
  // offset 0 last, so no hash can be kept while writing. The read comes from the page cache.
  std::string sha256;
  std::uint64_t regular_files = 0;  // inodes, not names
  std::uint64_t directories = 0;
  std::uint64_t symlinks = 0;
  std::uint64_t special_files = 0;  // devices, fifos, sockets
  std::uint64_t hard_links = 0;     // names beyond an inode's first
  std::uint64_t file_data_bytes = 0;  // sizes of the regular files (holes included)
  std::uint64_t dropped_xattrs = 0;
};

// Writes output + ".partial", fdatasyncs it and renames it to output; on failure nothing is left at
// either name. Errors name the ext4 path and what failed.
SquashfsWriteResult write_squashfs(const Ext4Filesystem& root, const std::filesystem::path& output,
                                   const SquashfsWriteOptions& options = {});

// The same kind of image, of entries the caller gives (a Talos system extension's few small files),
// built in memory and returned: no file, no sync, no mksquashfs process. `entries` come in tree-walk
// order: "/" first, each directory before what it holds; regular files' data from read_data. The
// superblock's time is options.fixed_time, or the root's mtime. Errors name the entry's path.
std::string squashfs_image(const std::vector<FilesystemTreeEntry>& entries, const SquashfsWriteOptions& options = {});

// The compressor names write_squashfs accepts, for --help texts and profile validation.
const std::vector<std::string>& squashfs_compressor_names();

}  // namespace aggrik8s
