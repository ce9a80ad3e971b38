// The layout choices of the in-process FAT formatter (the bytes are checked against fsck.fat and
// mtools in tests/integration/disk/fat_format_integration_test.cpp).
#include <catch2/catch.hpp>

#include "core/endian.hpp"
#include "core/error.hpp"
#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/fat_format.hpp"

using aggrik8s::Error;
using aggrik8s::FatFilesystem;
using aggrik8s::FatFormatOptions;
using aggrik8s::FatType;
using aggrik8s::MemoryBlockDevice;
using aggrik8s::plan_fat_layout;
using Catch::Matchers::Contains;

namespace {
constexpr std::uint64_t MiB = 1ull << 20;
}

TEST_CASE("FAT layouts follow mkfs.fat's type and cluster size", "[fat_format]") {
  FatFormatOptions options;
  // mkfs.fat: 16 MiB..100 MiB FAT16 with 4 sectors/cluster, 200..256 MiB 8, 300..511 MiB 16, FAT32 8 from 512 MiB.
  CHECK(plan_fat_layout(16 * MiB, options).sectors_per_cluster == 4);
  CHECK(plan_fat_layout(100 * MiB, options).sectors_per_cluster == 4);
  CHECK(plan_fat_layout(200 * MiB, options).sectors_per_cluster == 8);
  CHECK(plan_fat_layout(300 * MiB, options).sectors_per_cluster == 16);
  auto large16 = plan_fat_layout(511 * MiB, options);
  CHECK(large16.type == FatType::fat16);
  CHECK(large16.sectors_per_cluster == 16);
  auto fat32 = plan_fat_layout(512 * MiB, options);
  CHECK(fat32.type == FatType::fat32);
  CHECK(fat32.sectors_per_cluster == 8);
  CHECK(fat32.reserved_sectors == 32);
  // Where mkfs.fat makes FAT12 (8 MiB), smaller clusters keep it FAT16.
  auto small = plan_fat_layout(8 * MiB, options);
  CHECK(small.type == FatType::fat16);
  CHECK(small.cluster_count >= aggrik8s::fat16_min_clusters);
}

TEST_CASE("FAT layouts are consistent for every size", "[fat_format]") {
  for (std::uint64_t size = 3 * MiB; size <= 1024 * MiB; size = size * 5 / 4 + 512) {
    for (auto type : {std::optional<FatType>{}, std::optional<FatType>{FatType::fat32}}) {
      if (type && size < 40 * MiB) continue;
      FatFormatOptions options;
      options.type = type;
      auto layout = plan_fat_layout(size, options);
      INFO("size " << size << " type " << static_cast<int>(layout.type));
      const std::uint64_t entry_bytes = layout.type == FatType::fat32 ? 4 : 2;
      CHECK(std::uint64_t{layout.fat_sectors} * 512 >= (std::uint64_t{layout.cluster_count} + 2) * entry_bytes);
      CHECK(layout.data_offset() + layout.data_bytes() <= size);
      CHECK(layout.data_offset() % layout.cluster_size() == 0);
      if (layout.type == FatType::fat16) {
        CHECK(layout.cluster_count >= aggrik8s::fat16_min_clusters);
        CHECK(layout.cluster_count <= aggrik8s::fat16_max_clusters);
      } else {
        CHECK(layout.cluster_count >= aggrik8s::fat32_min_clusters);
      }
    }
  }
}

TEST_CASE("an impossible FAT size or label is refused, naming it", "[fat_format]") {
  FatFormatOptions options;
  CHECK_THROWS_WITH(plan_fat_layout(1 * MiB, options), Contains("1 MiB") && Contains("at least 4085"));
  options.type = FatType::fat32;
  CHECK_THROWS_WITH(plan_fat_layout(16 * MiB, options), Contains("FAT32 filesystem of 16 MiB") && Contains("65525"));
  options.type = FatType::fat16;
  CHECK_THROWS_WITH(plan_fat_layout(4096 * MiB, options), Contains("use FAT32"));
  options.type.reset();
  options.label = "TWELVE CHARS";
  CHECK_THROWS_WITH(aggrik8s::empty_fat_structures(plan_fat_layout(16 * MiB, options), options),
                    Contains("TWELVE CHARS") && Contains("at most 11"));
  options.label = "a/b";
  CHECK_THROWS_WITH(aggrik8s::empty_fat_structures(plan_fat_layout(16 * MiB, options), options),
                    Contains("'a/b'") && Contains("character 2"));
}

TEST_CASE("a formatted FAT opens empty, takes files and is the same bytes each time", "[fat_format]") {
  for (std::uint64_t size : {8 * MiB, 64 * MiB, 600 * MiB}) {
    FatFormatOptions options;
    options.label = "boot";
    options.volume_id = 0x12345678;
    MemoryBlockDevice device(size);
    auto layout = aggrik8s::format_fat(device, options);
    MemoryBlockDevice again(size);
    aggrik8s::format_fat(again, options);
    CHECK(device.bytes() == again.bytes());
    CHECK(aggrik8s::load_le32(device.bytes().data() + (layout.type == FatType::fat32 ? 67 : 39)) == 0x12345678);

    FatFilesystem fat(device);
    CHECK(fat.type() == layout.type);
    CHECK(fat.volume_label() == "BOOT");
    CHECK(fat.cluster_size() == layout.cluster_size());
    CHECK(fat.list_directory("").empty());
    CHECK(fat.free_bytes() == layout.data_bytes() - (layout.type == FatType::fat32 ? layout.cluster_size() : 0));
    fat.set_timestamp(1700000000);
    fat.make_directories("overlays");
    fat.write_file("overlays/disable-bt.dtbo", std::string(5000, 'x'));
    fat.write_file("cmdline.txt", std::string("console=serial0,115200\n"));
    FatFilesystem reopened(device);
    CHECK(reopened.read_text_file("cmdline.txt") == "console=serial0,115200\n");
    CHECK(reopened.read_file("overlays/disable-bt.dtbo").size() == 5000);
  }
}
