#pragma once
// What of a whole-disk image must reach a card for its filesystems to be what the image holds: the
// partition table and what precedes the first partition, and in each FAT or ext4 partition the
// blocks that filesystem uses (FatFilesystem::used_ranges, Ext4Filesystem::used_ranges). Everything
// else is free space, which a card may keep its old bytes in.
//
// Why it matters: an image's all-zero blocks are holes (a decompressed base, zero-skipping copies),
// and a bmap maps data, not holes. A FAT's free-cluster entries, an ext4 resize inode's zero block, a
// file's run of zeros are in use and zero: left out of the bmap, a used card keeps its old bytes there
// (FATs that differ, "illegal blocks", files with garbage), and a read-back of the mapped ranges passes.
#include <filesystem>
#include <vector>

#include "disk/bmap.hpp"
#include "disk/data_extent.hpp"

namespace aggrik8s {

// Sorted, joined byte ranges. A partition whose filesystem is neither FAT nor ext2/3/4 (or that
// cannot be read as one) is used whole. No partition table: the whole image. Throws Error naming the
// image when it cannot be read.
std::vector<DataExtent> filesystem_used_ranges(const std::filesystem::path& image);

// `bmap` with every block of `ranges` mapped: the blocks it leaves out are zero in the image (holes
// and skipped zero blocks), so each added run is a range of zeros with the digest of that many zero
// bytes. Ranges are clipped to the image. Pure: the image is not read.
Bmap map_ranges_as_zeros(const Bmap& bmap, const std::vector<DataExtent>& ranges);

}  // namespace aggrik8s
