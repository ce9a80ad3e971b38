#pragma once
// Bmap range checksums of the chunks of an image that are verbatim copies of files known by their
// SHA-256 (a Pi build's image archives, copied into the image as CopiedFiles, and its base: shared
// with a reflinked base, or found equal to the cached base by comparing bytes), kept in the download
// cache so that the next build from the same files does not hash those bytes into bmap ranges
// again: 512 MiB of archives are 0.3 s of one core's SHA-256 on this project's VMs, on the path of a
// build whose two cores are both hashing (docs/benchmarks.md). The image's whole-file SHA-256 still
// reads and hashes every byte; only the per-range digests come from here.
//
// A chunk's ranges depend only on its bytes (see KnownChunkRanges), so an entry is keyed by the
// file's SHA-256 (or a key derived from one, for a decompressed base), the chunk's offset and length
// in the file, the block size and the split size. A store is one text file per such file
// (`<dir>/<key>.b<block size>.s<split blocks>`), written
// under a temporary name and renamed, ending with the SHA-256 of its own text: a torn or edited
// store is ignored (and written again), never believed.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/file_descriptor.hpp"
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

  // Chunks outside the copied ranges whose bytes may still be `file`'s at the same offsets: an image
  // copied from it and then edited where nobody lists (e2fsck and resize2fs among others), as a
  // build's prepared image is from its base where the filesystem cannot reflink. Such a chunk's
  // bytes are compared with the file's before its ranges are taken from, or kept in, the store
  // named by `content_sha256` (the hex SHA-256 of the file's bytes, or a key derived from one).
  // Comparing 4 MiB costs a tenth of hashing it into ranges. Called once, before the hashing starts;
  // throws Error naming the file if it cannot be opened (or if a file is already being compared).
  void compare_with(const std::filesystem::path& file, const std::string& content_sha256);

  std::optional<std::vector<BmapRange>> find(std::uint64_t offset, std::span<const std::uint8_t> bytes) override;
  void hashed(std::uint64_t offset, std::uint64_t length, const std::vector<BmapRange>& ranges) override;
  // Only a compared chunk's bytes are looked at: a chunk inside one copied range is named by where it
  // was copied from.
  bool needs_bytes(std::uint64_t offset, std::uint64_t length) const override { return !locate(offset, length); }
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
  bool same_as_reference(std::uint64_t offset, std::span<const std::uint8_t> bytes);
  std::filesystem::path store_path(std::size_t file) const;
  // Reads file's store, if it has a key and the store is intact.
  void load_store(std::size_t file);

  std::filesystem::path dir_;
  std::vector<CopiedRange> ranges_;  // sorted
  std::vector<std::string> keys_;
  std::uint64_t block_size_;
  std::uint64_t split_blocks_;
  mutable std::mutex mutex_;
  std::vector<ChunkRangeEntries> entries_;  // per file
  std::vector<bool> changed_;
  std::uint64_t found_bytes_ = 0;

  // compare_with's file: its index in entries_ and keys_, and what its chunks are compared through.
  struct Reference {
    std::size_t file;
    std::string name;
    FileDescriptor fd;
    std::uint64_t size;
    std::vector<std::uint8_t> buffer;  // read in pieces: a mismatch stops early, and the piece stays in cache
    std::mutex mutex;                  // for the buffer
  };
  std::unique_ptr<Reference> reference_;
  // Chunks found equal to the reference's bytes that the store did not have: hashed() keeps them.
  // By offset and length only, which is why one of these serves the hashing of one image at a time
  // (KnownChunkRanges).
  std::set<std::pair<std::uint64_t, std::uint64_t>> same_as_reference_;
};

}  // namespace aggrik8s
