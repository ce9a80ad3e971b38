#pragma once
// bmaptool's block map (format 2.0): which 4 KiB blocks of an image hold data, with a sha256 per run of
// blocks, so `bmaptool copy` (and our own flash) writes only those and verifies them while reading.
//
// What counts as mapped: the data extents the filesystem reports (SEEK_DATA/SEEK_HOLE, which is what
// bmaptool itself uses), minus every all-zero 4 KiB block inside them. bmaptool keeps zero blocks that
// happen to be allocated; we drop them because an unmapped block is simply not written, exactly like a
// hole, and every block we leave out is zero in the image; less is written (ext4 zeroes whole inode
// tables and journals, a decompressed base image is full of allocated zeros). BmapOptions::
// skip_zero_blocks turns this off. A card keeps its old bytes where nothing is written, so the bmap a
// build publishes adds back, as ranges of zeros, every block the image's filesystems use
// (disk/filesystem_used_ranges.hpp): only their free space stays unmapped.
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/copied_ranges.hpp"
#include "disk/data_extent.hpp"
#include "disk/sparse_file.hpp"  // list_data_extents: what the filesystem reports as data
#include "core/sha256.hpp"

namespace aggrik8s {

class ImagePatch;  // disk/image_patch.hpp

// Blocks first..last, inclusive (as the XML writes them).
struct BmapRange {
  std::uint64_t first_block = 0;
  std::uint64_t last_block = 0;
  // Over the range's bytes (the last block of the image may be short). bmaptool omits it when run
  // with --no-checksum; our generator always writes it.
  std::optional<Sha256Digest> sha256;
  std::uint64_t block_count() const { return last_block - first_block + 1; }
  friend bool operator==(const BmapRange&, const BmapRange&) = default;
};

struct Bmap {
  std::uint64_t image_size = 0;
  std::uint32_t block_size = 4096;
  std::vector<BmapRange> ranges;  // sorted, disjoint

  // Rounded up without (image_size + block_size - 1), which wraps for sizes near 2^64 that a damaged
  // or hostile .bmap can state.
  std::uint64_t blocks_count() const { return image_size / block_size + (image_size % block_size != 0 ? 1 : 0); }
  std::uint64_t mapped_blocks_count() const;
  friend bool operator==(const Bmap&, const Bmap&) = default;
};

struct BmapOptions {
  bool skip_zero_blocks = true;
  // When not 0, no range crosses a multiple of this many blocks: a range is also cut where such a
  // chunk ends. That costs a few more lines in the bmap, and lets update_bmap hash again only the
  // chunks an edit touched. 0: ranges run as far as the data does (bmaptool's way).
  std::uint64_t range_split_blocks = 0;
  // Ranges are hashed in parallel, one range per thread at a time (a range's hash is sequential).
  // 0: one thread per core.
  unsigned threads = 0;
};

// Bmap ranges of some chunks of an image known without hashing them: chunks that are verbatim copies of
// files whose ranges were hashed before (a Pi build's image archives and base; disk/chunk_range_store.hpp).
// The hashing asks for each chunk it reads and reports the ones it had to hash. A chunk's ranges
// depend only on its bytes when zero blocks are skipped and ranges are split at multiples of a
// size that divides the chunk size; the hashing uses this only then, and only for chunks no patch
// touches. Called from either hashing thread, for one image at a time: hashed() reports a chunk that
// the last find() for the same offset and length did not know.
class KnownChunkRanges {
 public:
  virtual ~KnownChunkRanges() = default;
  // The ranges (image block numbers) of the chunk [offset, offset + length), if known. `bytes`: the
  // chunk's bytes as they are hashed, for a source that must compare them with a file's first.
  virtual std::optional<std::vector<BmapRange>> find(std::uint64_t offset, std::span<const std::uint8_t> bytes) = 0;
  // Whether find() for the chunk looks at its bytes: where it does not, a hashing that needs the
  // bytes for nothing else (a bmap without the image's sha256) asks before it reads them.
  virtual bool needs_bytes(std::uint64_t /*offset*/, std::uint64_t /*length*/) const { return true; }
  virtual void hashed(std::uint64_t offset, std::uint64_t length, const std::vector<BmapRange>& ranges) = 0;
  // What the ranges were made with: the hashing ignores a source made for other options.
  virtual std::uint64_t block_size() const = 0;
  virtual std::uint64_t range_split_blocks() const = 0;
};

// Reads the image's data extents once: zero checks and range hashes happen in the same pass.
// Throws Error naming the image on read failure or for an empty image (bmaptool refuses those too).
Bmap create_bmap(const std::filesystem::path& image, const BmapOptions& options = {});
// The bmap of `image` with `copied`'s ranges read from the file they were copied from (see
// CopiedFiles): equal to create_bmap(image, options) once the copy is on the disk. `known`: as for
// hash_patched_image.
Bmap create_bmap(const std::filesystem::path& image, const BmapOptions& options, const CopiedFiles& copied,
                 KnownChunkRanges* known = nullptr);

// What a build records about each image it writes: its sha256 (for SHA256SUMS and the manifest) and,
// when asked, its bmap. Both come from one read of the image's data extents: one thread reads each
// chunk and hashes it into the bmap's ranges while a second thread hashes the same buffer into the
// whole-image digest (in file order, with holes hashed as the zeros they read as), so the image is
// read once and both cores hash. The digest equals Sha256::of_file(image) and the bmap equals
// create_bmap(image, options); options.threads == 1 does all of it on the calling thread.
struct ImageHashes {
  std::uint64_t size = 0;
  Sha256Digest sha256;
  std::optional<Bmap> bmap;
};
// Throws Error naming the image on read failure, and (with_bmap) for an empty image.
ImageHashes hash_image(const std::filesystem::path& image, bool with_bmap, const BmapOptions& options = {});

// The hashes of the image `patch` makes of the file `base` (base's bytes with the patch's written over
// them), equal to hash_image of such a file, without writing it: how a build hashes a node's image
// from the prepared image's cached pages and the node's edits. `image_name` is for progress lines.
// With `copied`, base's bytes in its ranges are read from the file they are a copy of; with `known`,
// the bmap ranges of chunks it knows are taken from it (see KnownChunkRanges).
ImageHashes hash_patched_image(const std::filesystem::path& base, const ImagePatch& patch, const std::string& image_name,
                               bool with_bmap, const BmapOptions& options = {}, const CopiedFiles* copied = nullptr,
                               KnownChunkRanges* known = nullptr);

// The sizes and sha256s (no bmaps) of the images `patches` make of `base`, each equal to
// hash_patched_image's, on `threads` threads: how a build hashes its node images. With more images
// than threads, some are hashed two to a thread (core/sha256_lane.hpp) and the pairs change as they
// go, so that all end together: they pair up afresh every `round_bytes`. Base's bytes are read once
// for all images where they can be: up to `kept_chunks` chunks of 4 MiB are kept for the images
// that have not got there yet (the rotating chains of 3 images on 2 cores kept at most 13-14).
// `label` is for the progress line. (Tests make the rounds and the chunks kept few.)
std::vector<ImageHashes> hash_patched_images(const std::filesystem::path& base, const std::vector<const ImagePatch*>& patches,
                                             const std::string& label, const CopiedFiles* copied, std::size_t threads,
                                             std::uint64_t round_bytes = 64 << 20, std::size_t kept_chunks = 24);

// The bmap of `image`, given `base`: the bmap (made with `options`) of an image of the same size whose
// bytes were the same as image's everywhere outside `changed`. Only the chunks of
// options.range_split_blocks blocks that `changed` touches are read and hashed again; the other
// ranges are base's. The result equals create_bmap(image, options). How a build hashes N node images
// cut from one prepared image without hashing N times what they share. Requires
// options.range_split_blocks and options.skip_zero_blocks (with zero blocks kept, a hole and an
// allocated zero block would differ, and a copy does not promise to keep which is which); throws
// Error naming the image when the sizes or options do not fit.
Bmap update_bmap(const std::filesystem::path& image, const Bmap& base, const std::vector<DataExtent>& changed,
                 const BmapOptions& options);

// update_bmap for the image `patch` makes of `base_image`, whose bmap is `base`: only the chunks the
// patch writes are hashed again, from base_image's bytes with the patch over them.
Bmap update_patched_bmap(const std::filesystem::path& base_image, const Bmap& base, const ImagePatch& patch,
                         const BmapOptions& options, const CopiedFiles* copied = nullptr);

// The file bmaptool 3.x writes for the same ranges, byte for byte: its comments, its whitespace, and
// BmapFileChecksum = sha256 of the text with that field set to 64 '0' characters.
std::string format_bmap(const Bmap& bmap);
// Written to `<path>.partial` and renamed into place.
void write_bmap_file(const Bmap& bmap, const std::filesystem::path& path);

// Accepts bmaptool's format 2.0 (and 1.4, its identical mistaken number) with sha256 checksums.
// Verifies BmapFileChecksum and the consistency of sizes, counts and ranges; throws Error naming
// `source_name` and what is wrong.
Bmap parse_bmap(std::string_view text, const std::string& source_name);
Bmap read_bmap_file(const std::filesystem::path& path);

}  // namespace aggrik8s
