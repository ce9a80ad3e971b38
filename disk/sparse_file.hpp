#pragma once
// Sparse files: where an open file holds data (SEEK_DATA/SEEK_HOLE), and copies that keep its holes.
// A 2.5 GiB image with 600 MiB of data costs 600 MiB to copy, and the copy is as sparse as the image.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "disk/data_extent.hpp"

namespace aggrik8s {

class ProgressTask;

// The data extents of an open regular file within [begin, end), sorted, disjoint and clipped to the
// range. A filesystem that cannot answer SEEK_DATA yields one extent covering the whole range
// (correct, just not sparse). `name` is for error messages.
std::vector<DataExtent> list_data_extents(int fd, std::uint64_t begin, std::uint64_t end, const std::string& name);

// The same for a whole file of `size` bytes.
inline std::vector<DataExtent> list_data_extents(int fd, std::uint64_t size, const std::string& name) {
  return list_data_extents(fd, 0, size, name);
}

// length bytes at source_offset of source, to destination_offset of destination. Only the source's
// data extents are copied, with copy_file_range (an in-kernel copy, shared extents where the
// filesystem can), through a buffer where the kernel refuses (another filesystem, an old kernel).
struct SparseRangeCopy {
  int source = -1;
  std::string source_name;
  std::uint64_t source_offset = 0;
  int destination = -1;
  std::string destination_name;
  std::uint64_t destination_offset = 0;
  std::uint64_t length = 0;
  // Whether the source's holes are punched into the destination (written as zeros where holes
  // cannot be punched), so the destination range ends up equal to the source range. Without it, the
  // destination range must already read as zeros, as a new or newly extended file does.
  bool punch_holes = false;
  // Told how many bytes of the range are done, when set.
  ProgressTask* progress = nullptr;
};
void copy_sparse_range(const SparseRangeCopy& copy);

// Makes `to` (replaced if it exists, created with `permissions`) a reflink of `from` (FICLONE): the
// two files share every extent until one is written, so the copy costs no data and no disk space.
// Returns false where the filesystem cannot share extents (ext4, tmpfs; or `to` on another
// filesystem), leaving `to` empty; throws Error naming both files for any other failure.
bool clone_file(const std::filesystem::path& from, const std::filesystem::path& to, mode_t permissions);

// The byte ranges at which `file` and `other` are the same physical blocks at the same offsets (what
// clone_file shared and neither has written over since), where their bytes are therefore equal: a
// reader can take them from whichever file's pages are cached. A build reads its reflinked prepared
// image's unchanged blocks from the cached base it was cloned from instead of from the disk. `file`'s
// dirty pages are written out first (FIEMAP_FLAG_SYNC): until then a block written after the clone
// still shows the shared extent. Only what both files report as plain, written extents counts.
// Empty where the filesystem cannot say (no FIEMAP); throws Error naming the file otherwise.
std::vector<DataExtent> same_blocks(const std::filesystem::path& file, const std::filesystem::path& other);

// Copies the file `from` to a new file `to` (replaced if it exists, created with `permissions`) with
// its holes: a reflink where the filesystem can share extents (btrfs, XFS) costs nothing, otherwise
// the data extents are copied, with a progress line.
void copy_sparse_file(const std::filesystem::path& from, const std::filesystem::path& to, mode_t permissions);

}  // namespace aggrik8s
