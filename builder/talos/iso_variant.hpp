#pragma once
// Per-node ISOs as variants of the first node's. Every node's ISO holds the same files as the others
// but a few (its config, the embedded-config archive, grub.cfg, the UKIs and the EFI partition that
// carry its command line). libisofs lays files out in a fixed order, each in whole 2048-byte blocks,
// so while each of those files needs as many blocks as in the first node's ISO, remastering the node's
// ISO from scratch would give the first one's bytes everywhere except: the files' data (zero-padded to
// their last block), the size fields of the directory records naming them (ISO 9660 tree and Joliet
// tree), and the appended EFI partition. A variant is written as exactly those patches over a copy of
// the first ISO, which costs a copy instead of a libisoburn run (docs/benchmarks.md, Talos section).
// When a file needs another block count the caller remasters that node from scratch.
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/sha256.hpp"

namespace aggrik8s::builder {

// Where a regular file of an ISO 9660 image sits.
struct IsoFilePlacement {
  std::string path;                           // as asked: "boot/grub/grub.cfg"
  std::uint64_t data_offset = 0;              // bytes from the image start
  std::uint64_t size = 0;                     // bytes, as the directory records say
  std::vector<std::uint64_t> record_offsets;  // every directory record pointing at the data (all trees)
};

// Pure: finds `paths` in `image` (the whole image). Names are matched by their Rock Ridge NM where the
// primary tree has one, else by the ISO 9660 name (case-insensitive, ";1" and a trailing '.' dropped).
// Records of every tree (primary, Joliet) whose extent is the file's are listed. Throws Error naming a
// path that is missing, is a directory, is empty, spans several extents, or whose records disagree on
// its size.
std::vector<IsoFilePlacement> locate_iso_files(std::span<const std::uint8_t> image, const std::vector<std::string>& paths);

// The bytes of `placement` in `image` (as locate_iso_files found it there). Throws Error when the
// directory records put them past the end of the image.
std::span<const std::uint8_t> iso_file_bytes(std::span<const std::uint8_t> image, const IsoFilePlacement& placement);

// One piece of a variant: bytes written at `offset` instead of the template's.
struct IsoBytePatch {
  std::uint64_t offset = 0;
  std::span<const std::uint8_t> borrowed;  // the caller's bytes (a file's new content), or
  std::vector<std::uint8_t> owned;         // the plan's own (a size field, zero padding)
  std::span<const std::uint8_t> bytes() const { return owned.empty() ? borrowed : std::span<const std::uint8_t>(owned); }
};

struct IsoFileReplacement {
  std::string path;  // one of the placements' paths
  std::span<const std::uint8_t> content;
};
struct IsoRegionReplacement {
  std::uint64_t offset = 0;  // e.g. the appended EFI partition, the same size as the template's
  std::span<const std::uint8_t> content;
};

// Pure: the patches (sorted, not overlapping) that turn the template into the variant with these
// files and regions, or nullopt when a file's new content needs a different number of blocks than
// the template gave it (or is empty: libisofs gives an empty file no block), so the variant's layout
// would differ. Throws Error for a path with no placement, a region outside the image, or overlaps.
std::optional<std::vector<IsoBytePatch>> plan_iso_variant(std::uint64_t template_size,
                                                          const std::vector<IsoFilePlacement>& placements,
                                                          const std::vector<IsoFileReplacement>& files,
                                                          const std::vector<IsoRegionReplacement>& regions);

// Pure: the SHA-256 of `template_bytes` with `patches` (sorted, not overlapping) applied, taken from
// memory, so a variant is never read back to be hashed.
Sha256Digest hash_iso_variant(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches);

// The template's SHA-256 state every `interval` bytes, kept while the template itself is hashed. A
// variant is the template's bytes up to its first patched byte that differs, so its hash can go on from
// the last checkpoint at or before that byte instead of starting at byte 0: the nodes' ISOs share
// everything but a few files and the EFI partition, and hashing every node's whole ISO was the largest
// cost of a many-node build (docs/benchmarks.md, Talos section).
struct IsoHashCheckpoint {
  std::uint64_t offset = 0;
  Sha256 state;  // after `offset` bytes of the template
};
using IsoHashCheckpoints = std::vector<IsoHashCheckpoint>;

// Pure: the template's SHA-256; `checkpoints` gets the state at 0, interval, 2 * interval, ...
// (`interval` a multiple of 64 bytes, SHA-256's block, so a checkpoint holds no partial block).
Sha256Digest hash_iso_template(std::span<const std::uint8_t> template_bytes, IsoHashCheckpoints& checkpoints,
                               std::size_t interval = std::size_t{1} << 20);

// Pure: the offset of the first byte at which the template with `patches` applied differs from the
// template (the template's size when no patched byte differs).
std::uint64_t first_patched_difference(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches);

// Pure: hash_iso_variant(template_bytes, patches), hashed from the last of `checkpoints` (taken by
// hash_iso_template over the same bytes) at or before first_patched_difference.
Sha256Digest hash_iso_variant(std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches,
                              const IsoHashCheckpoints& checkpoints);

// Writes `output` (created with `mode` before the first byte, replacing any file of that name): the
// template's bytes with `patches` applied. The unpatched ranges are copied file to file with
// copy_file_range (a reflink on XFS/btrfs, an in-kernel copy elsewhere), the patches written from
// memory. `template_bytes` is the template's content, already in memory (read or mapped). Returns the
// output's SHA-256 (hash_iso_variant), taken on a second thread while this one writes: hashing 128 MiB
// costs about as much CPU as copying it, and the two need not wait for each other.
Sha256Digest write_iso_variant(const std::filesystem::path& template_path, std::span<const std::uint8_t> template_bytes,
                               const std::vector<IsoBytePatch>& patches, const std::filesystem::path& output, mode_t mode);
// write_iso_variant without the hash, for a caller that takes it elsewhere (hash_iso_variant on a
// thread that may outlast this call: the Talos build overlaps it with the next node's edits).
void copy_iso_variant(const std::filesystem::path& template_path, std::span<const std::uint8_t> template_bytes,
                      const std::vector<IsoBytePatch>& patches, const std::filesystem::path& output, mode_t mode);
// The same from a template already open (`template_fd`, the file `template_bytes` were read or mapped
// from): the copy reads that file whatever its path names meanwhile.
void copy_iso_variant(int template_fd, std::span<const std::uint8_t> template_bytes, const std::vector<IsoBytePatch>& patches,
                      const std::filesystem::path& output, mode_t mode);

}  // namespace aggrik8s::builder
