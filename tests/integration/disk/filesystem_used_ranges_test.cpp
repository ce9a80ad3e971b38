// The blocks of an image's filesystems that must reach a card even where they are zeros: a FAT's
// tables (free-cluster entries are zeros), ext4's in-use blocks; and a bmap that maps them.
#include "disk/filesystem_used_ranges.hpp"

#include <catch2/catch.hpp>

#include <algorithm>

#include "disk/block_device.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/fat_format.hpp"
#include "disk/partition_table.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;

namespace {

constexpr std::uint64_t mib = 1 << 20;

bool covered(const std::vector<DataExtent>& ranges, std::uint64_t offset, std::uint64_t length) {
  for (const auto& r : ranges) {
    if (r.offset <= offset && offset + length <= r.offset + r.length) return true;
  }
  return false;
}

bool block_mapped(const Bmap& bmap, std::uint64_t block) {
  for (const auto& r : bmap.ranges) {
    if (r.first_block <= block && block <= r.last_block) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("filesystem used ranges: FAT tables and ext4 metadata are mapped even where they are holes", "[disk][integration]") {
  test::TempDir dir;
  const auto image = dir / "pi.img";
  const std::uint64_t disk_bytes = 96 * mib;
  test::run("truncate -s " + std::to_string(disk_bytes) + " '" + image.string() + "'");
  auto table = PartitionTable::new_mbr(disk_bytes, 0xa1b2c3d4, "pi.img");
  PartitionEntry boot;
  boot.index = 1, boot.mbr_type = 0x0c, boot.first_lba = 8 * mib / 512, boot.sector_count = 40 * mib / 512;
  PartitionEntry root;
  root.index = 2, root.mbr_type = 0x83, root.first_lba = 48 * mib / 512, root.sector_count = 48 * mib / 512;
  table.add_partition(boot);
  table.add_partition(root);
  std::uint64_t fat_data_offset = 0;
  {
    FileBlockDevice device(image, FileBlockDevice::Access::read_write);
    write_partition_table(device, table);
    SubrangeBlockDevice part = open_partition(device, table, 1);
    FatFormatOptions options;
    options.type = FatType::fat32;
    FatLayout layout = format_fat(part, options);
    fat_data_offset = (std::uint64_t{layout.reserved_sectors} + 2ull * layout.fat_sectors) * 512;
    FatFilesystem fat(part);
    fat.write_file("config.txt", std::string("arm_64bit=1\n"));
  }
  create_ext4_filesystem(image, root.byte_offset(), root.byte_size(), {});

  auto used = filesystem_used_ranges(image);
  // The partition table and the gap before the first partition; the FAT's system area; ext4's superblock.
  CHECK(covered(used, 0, boot.byte_offset()));
  CHECK(covered(used, boot.byte_offset(), fat_data_offset));
  CHECK(covered(used, root.byte_offset(), 4096));
  // Free space is not: the end of the FAT's data region, and most of the ext4 partition.
  CHECK_FALSE(covered(used, boot.byte_offset() + boot.byte_size() - 4096, 4096));
  std::uint64_t used_in_root = 0;
  for (const auto& r : used) {
    if (r.offset >= root.byte_offset()) used_in_root += r.length;
  }
  CHECK(used_in_root < root.byte_size() / 2);

  // The FAT region is mostly zeros: its data-only bmap leaves those blocks out; the mapped one has them
  // all, as zero ranges bmaptool can verify.
  Bmap data_only = create_bmap(image);
  const std::uint64_t fat_zero_block = (boot.byte_offset() + fat_data_offset) / 4096 - 1;  // the second FAT's end
  CHECK_FALSE(block_mapped(data_only, fat_zero_block));
  Bmap mapped = map_ranges_as_zeros(data_only, used);
  CHECK(block_mapped(mapped, fat_zero_block));
  for (std::uint64_t b = 0; b < boot.byte_offset() / 4096; ++b) REQUIRE(block_mapped(mapped, b));
  CHECK(mapped.mapped_blocks_count() > data_only.mapped_blocks_count());
  for (std::size_t i = 1; i < mapped.ranges.size(); ++i) REQUIRE(mapped.ranges[i - 1].last_block < mapped.ranges[i].first_block);
  // The added runs of zeros stay within 4 MiB chunks (1024 blocks), as the build's own ranges do.
  for (const auto& r : mapped.ranges) {
    if (std::find(data_only.ranges.begin(), data_only.ranges.end(), r) == data_only.ranges.end()) {
      REQUIRE(r.first_block / 1024 == r.last_block / 1024);
    }
  }
  write_bmap_file(mapped, dir / "pi.img.bmap");
  auto copy = test::run("bmaptool copy --bmap '" + (dir / "pi.img.bmap").string() + "' '" + image.string() + "' '" +
                        (dir / "copy.img").string() + "' 2>&1");
  INFO(copy.output);
  CHECK(copy.exit_code == 0);  // bmaptool checks every range's sha256, the zero ones included
}
