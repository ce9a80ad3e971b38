#pragma once
// Bmap range checksums of the chunks of an image that are verbatim copies of files known by their
// SHA-256 (a Pi build's image archives, copied into the image as CopiedFiles), kept in the download
// cache so that the next build from the same archives does not hash those bytes into bmap ranges
// again: 512 MiB of archives are 0.3 s of one core's SHA-256 on this project's VMs, on the path of a
// build whose two cores are both hashing (docs/benchmarks.md). The image's whole-file SHA-256 still
// reads and hashes every byte; only the per-range digests come from here.
//
// A chunk's ranges depend only on its bytes (see KnownChunkRanges), so an entry is keyed by the
// file's SHA-256, the chunk's offset and length in the file, the block size and the split size. A
// store is one text file per archive (`<dir>/<sha256>.b<block size>.s<split blocks>`), written
// under a temporary name and renamed, ending with the SHA-256 of its own text: a torn or edited
// store is ignored (and written again), never believed.
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "disk/bmap.hpp"
#include "disk/copied_ranges.hpp"

namespace aggrik8s {

// One file's chunks: file offset and length -> ranges, in blocks counted from the chunk's start.
struct ChunkRangeEntries {
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<BmapRange>> chunks;
};
// The store's text, and back. parse returns nullopt for anything but a complete, intact store made
// with these sizes (`name` is only for the debug line saying why).
std::string format_chunk_ranges(const ChunkRangeEntries& entries, std::uint64_t block_size, std::uint64_t split_blocks);
std::optional<ChunkRangeEntries> parse_chunk_ranges(const std::string& text, std::uint64_t block_size,
                                                    std::uint64_t split_blocks, const std::string& name);

class CopiedChunkRanges final : public KnownChunkRanges {
 public:
  // `content_sha256[i]`: the hex SHA-256 of copied.paths[i]'s bytes, or empty where it is not known
  // (those chunks are always hashed). Reads the stores that exist under `dir`.
  CopiedChunkRanges(std::filesystem::path dir, const CopiedFiles& copied, std::vector<std::string> content_sha256,
                    std::uint64_t block_size, std::uint64_t split_blocks);

  std::optional<std::vector<BmapRange>> find(std::uint64_t offset, std::uint64_t length) override;
  void hashed(std::uint64_t offset, std::uint64_t length, const std::vector<BmapRange>& ranges) override;
  std::uint64_t block_size() const override { return block_size_; }
  std::uint64_t range_split_blocks() const override { return split_blocks_; }

  // Writes the stores that gained chunks. A cache that cannot be written costs the next build time,
  // not this one its images: failures are logged as warnings.
  void save();
  std::uint64_t found_bytes() const;

 private:
  struct Location {
    std::size_t file;
    std::uint64_t file_offset;
  };
  // Where the chunk's bytes come from when one copied range holds all of them.
  std::optional<Location> locate(std::uint64_t offset, std::uint64_t length) const;
  std::filesystem::path store_path(std::size_t file) const;

  std::filesystem::path dir_;
  std::vector<CopiedRange> ranges_;  // sorted
  std::vector<std::string> keys_;
  std::uint64_t block_size_;
  std::uint64_t split_blocks_;
  mutable std::mutex mutex_;
  std::vector<ChunkRangeEntries> entries_;  // per file
  std::vector<bool> changed_;
  std::uint64_t found_bytes_ = 0;
};

}  // namespace aggrik8s
