#pragma once
// What filesystem a byte range of an image file holds, asked of libblkid (util-linux): the same prober
// mount(8), udev and fsck use, so every format a user may feed `inspect` or `build` is named the way
// Linux names it ("ext4", "vfat", "xfs", "squashfs", "swap", "crypto_LUKS", ...), with its UUID and
// label. The build picks the root partition by it and inspect reports it; neither reads superblocks
// by hand any more.
//
// The probe reads only: the image is opened O_RDONLY and no cache (blkid.tab) is used or written.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace aggrik8s {

struct ProbedFilesystem {
  std::string type;     // blkid TYPE ("ext4", "vfat", ...); "" when no known signature was found
  std::string version;  // blkid VERSION where the format has one: "FAT32", "FAT16", "1.0", ...
  std::string uuid;     // blkid UUID: "8a438930-e8a5-..." (ext*, xfs), "B007-F5A7" (FAT volume id)
  std::string label;    // blkid LABEL
  // Set when more than one signature matched and blkid refused to choose (e.g. a FAT boot sector left
  // over inside an ext4 partition): the types found, "ext4, vfat". type is then "".
  std::string ambiguous_types;
  // The format's superblock checksum does not match (ext4 metadata_csum, xfs v5, ...): the fields
  // above were read from a damaged superblock.
  bool bad_checksum = false;
  bool found() const { return !type.empty(); }
};

// Probes [offset, offset + length) of image. length 0 means "to the end of the file".
// Throws Error (naming the file and range) when the file cannot be opened or read; an unknown or
// empty range is not an error (type "").
ProbedFilesystem probe_filesystem(const std::filesystem::path& image, std::uint64_t offset, std::uint64_t length);

struct ProbedPartition {
  std::uint32_t number = 0;  // 1-based, as Linux numbers them (sda1)
  std::uint64_t start_bytes = 0;
  std::uint64_t size_bytes = 0;
  std::string partuuid;  // blkid PART_ENTRY_UUID: GPT's partition GUID, or MBR "<disk id>-<nn>"
};

// The partitions libblkid sees in a whole-disk image (MBR or GPT), for their PARTUUIDs. Empty when it
// finds no partition table. Throws Error when the file cannot be read.
std::vector<ProbedPartition> probe_partitions(const std::filesystem::path& image);

}  // namespace aggrik8s
