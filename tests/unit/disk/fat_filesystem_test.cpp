#include "disk/fat_filesystem.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <set>

#include "disk/block_device.hpp"
#include "core/endian.hpp"
#include "core/error.hpp"

using aggrik8s::Error;
using aggrik8s::FatFilesystem;
using aggrik8s::FatType;
using aggrik8s::MemoryBlockDevice;
using Catch::Matchers::Contains;

namespace {

constexpr std::uint64_t mib = 1024 * 1024;

struct FormatOptions {
  FatType type = FatType::fat32;
  std::uint64_t bytes = 64 * mib;
  std::uint8_t sectors_per_cluster = 1;
  std::uint16_t root_entries = 512;  // FAT12/16 only
};

// A minimal but complete FAT volume as mkfs.fat lays it out (2 FATs, FSInfo on FAT32, label in the
// boot sector), so the unit tests need no external tool. The integration tests use real mkfs.fat.
MemoryBlockDevice format(const FormatOptions& options) {
  MemoryBlockDevice device(options.bytes, "boot.fat");
  auto& b = device.bytes();
  const bool fat32 = options.type == FatType::fat32;
  const std::uint32_t total = static_cast<std::uint32_t>(options.bytes / 512);
  const std::uint32_t reserved = fat32 ? 32 : 1;
  const std::uint32_t root_entries = fat32 ? 0 : options.root_entries;
  const std::uint32_t root_sectors = (root_entries * 32 + 511) / 512;
  const std::uint32_t bits = options.type == FatType::fat12 ? 12 : options.type == FatType::fat16 ? 16 : 32;
  std::uint32_t fat_sectors = 1;
  for (int i = 0; i < 10; ++i) {
    std::uint32_t clusters = (total - reserved - 2 * fat_sectors - root_sectors) / options.sectors_per_cluster;
    fat_sectors = ((clusters + 2) * bits / 8 + 511) / 512 + 1;
  }
  b[0] = 0xeb;
  b[1] = 0x58;
  b[2] = 0x90;
  std::copy_n("mkfs.fat", 8, b.begin() + 3);
  aggrik8s::store_le16(b, 11, 512);
  b[13] = options.sectors_per_cluster;
  aggrik8s::store_le16(b, 14, static_cast<std::uint16_t>(reserved));
  b[16] = 2;
  aggrik8s::store_le16(b, 17, static_cast<std::uint16_t>(root_entries));
  if (total < 65536 && !fat32) {
    aggrik8s::store_le16(b, 19, static_cast<std::uint16_t>(total));
  } else {
    aggrik8s::store_le32(b, 32, total);
  }
  b[21] = 0xf8;
  if (fat32) {
    aggrik8s::store_le32(b, 36, fat_sectors);
    aggrik8s::store_le32(b, 44, 2);  // root cluster
    aggrik8s::store_le16(b, 48, 1);  // FSInfo
    aggrik8s::store_le16(b, 50, 6);  // backup boot sector
    b[66] = 0x29;
    std::copy_n("TESTVOL    FAT32   ", 19, b.begin() + 71);
  } else {
    aggrik8s::store_le16(b, 22, static_cast<std::uint16_t>(fat_sectors));
    b[38] = 0x29;
    std::copy_n("TESTVOL    FAT     ", 19, b.begin() + 43);
  }
  b[510] = 0x55;
  b[511] = 0xaa;
  for (std::uint32_t copy = 0; copy < 2; ++copy) {
    std::size_t fat = (reserved + copy * fat_sectors) * 512;
    if (options.type == FatType::fat12) {
      b[fat] = 0xf8;
      b[fat + 1] = 0xff;
      b[fat + 2] = 0xff;
    } else if (options.type == FatType::fat16) {
      aggrik8s::store_le16(b, fat, 0xfff8);
      aggrik8s::store_le16(b, fat + 2, 0xffff);
    } else {
      aggrik8s::store_le32(b, fat, 0x0ffffff8);
      aggrik8s::store_le32(b, fat + 4, 0x0fffffff);
      aggrik8s::store_le32(b, fat + 8, 0x0fffffff);  // root directory
    }
  }
  if (fat32) {
    std::uint32_t clusters = (total - reserved - 2 * fat_sectors) / options.sectors_per_cluster;
    aggrik8s::store_le32(b, 512, 0x41615252);
    aggrik8s::store_le32(b, 512 + 484, 0x61417272);
    aggrik8s::store_le32(b, 512 + 488, clusters - 1);
    aggrik8s::store_le32(b, 512 + 492, 3);
    aggrik8s::store_le32(b, 512 + 508, 0xaa550000);
  }
  return device;
}

std::vector<std::uint8_t> pseudo_random_bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::uint8_t> bytes(size);
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(generator());
  return bytes;
}

std::uint32_t fsinfo_free_count(MemoryBlockDevice& device) { return aggrik8s::load_le32(device.bytes(), 512 + 488); }

std::set<std::string> names_in(FatFilesystem& fs, std::string_view path) {
  std::set<std::string> names;
  for (const auto& entry : fs.list_directory(path)) names.insert(entry.name);
  return names;
}

}  // namespace

TEST_CASE("fat: opens FAT12, FAT16 and FAT32 and reports type, label and space", "[fat]") {
  auto [type, bytes, spc] = GENERATE(std::make_tuple(FatType::fat12, 2 * mib, std::uint8_t{4}),
                                     std::make_tuple(FatType::fat16, 32 * mib, std::uint8_t{4}),
                                     std::make_tuple(FatType::fat32, 64 * mib, std::uint8_t{1}));
  auto device = format({type, bytes, spc, 512});
  FatFilesystem fs(device);
  CHECK(fs.type() == type);
  CHECK(fs.volume_label() == "TESTVOL");
  CHECK(fs.cluster_size() == 512U * spc);
  CHECK(fs.free_bytes() > 0);
  CHECK(fs.free_bytes() <= fs.total_data_bytes());
  CHECK(fs.list_directory("/").empty());
}

TEST_CASE("fat: files round trip, case-insensitively, with long and short names", "[fat]") {
  auto [type, bytes, spc] = GENERATE(std::make_tuple(FatType::fat12, 2 * mib, std::uint8_t{4}),
                                     std::make_tuple(FatType::fat16, 32 * mib, std::uint8_t{4}),
                                     std::make_tuple(FatType::fat32, 64 * mib, std::uint8_t{1}));
  auto device = format({type, bytes, spc, 512});
  {
    FatFilesystem fs(device);
    fs.write_file("cmdline.txt", "console=serial0,115200 root=PARTUUID=a1b2c3d4-02 rootwait\n");
    fs.write_file("/CONFIG.TXT", "dtparam=pciex1\n");
    fs.write_file("a very long file name with spaces.conf", "x");
    fs.write_file("empty", "");
  }
  FatFilesystem fs(device);  // everything must be on the device, not only in the object
  CHECK(fs.read_text_file("CMDLINE.TXT") == "console=serial0,115200 root=PARTUUID=a1b2c3d4-02 rootwait\n");
  CHECK(fs.read_text_file("config.txt") == "dtparam=pciex1\n");
  CHECK(fs.read_text_file("A Very Long File Name With Spaces.conf") == "x");
  CHECK(fs.read_text_file("empty").empty());
  auto entries = fs.list_directory("");
  REQUIRE(entries.size() == 4);
  CHECK(entries[0].name == "cmdline.txt");
  CHECK(entries[0].short_name == "CMDLINE.TXT");
  CHECK(entries[1].name == "CONFIG.TXT");
  CHECK(entries[2].name == "a very long file name with spaces.conf");
  CHECK(entries[2].short_name == "AVERYL~1.CON");
  CHECK(entries[3].size == 0);
  CHECK(entries[3].first_cluster == 0);
  // The short name works as a path too, as on any FAT.
  CHECK(fs.read_text_file("averyl~1.con") == "x");
}

TEST_CASE("fat: short names are unique within a directory", "[fat]") {
  auto device = format({});
  FatFilesystem fs(device);
  fs.write_file("kernel_2712.img", "a");
  fs.write_file("kernel_2712-old.img", "b");
  fs.write_file("kernel_2712.img.bak", "c");
  fs.write_file("Kernel8.img", "d");
  fs.write_file("kernel8.IMG", "e");  // same name, other case: replaces
  fs.write_file("héllo wörld.txt", "f");
  fs.write_file(".hidden-dotfile", "g");
  std::set<std::string> short_names;
  for (const auto& entry : fs.list_directory("/")) short_names.insert(entry.short_name);
  CHECK(short_names == std::set<std::string>{"KERNEL~1.IMG", "KERNEL~2.IMG", "KERNEL~1.BAK", "KERNEL8.IMG",
                                              "H_LLOW~1.TXT", "HIDDEN~1"});
  CHECK(fs.read_text_file("KERNEL8.IMG") == "e");
  CHECK(fs.read_text_file("héllo wörld.txt") == "f");
  CHECK(names_in(fs, "/").count("Kernel8.img") == 1);  // the existing name is kept on replace
}

TEST_CASE("fat: replacing files frees and reuses clusters, FSInfo stays exact", "[fat]") {
  auto device = format({});
  FatFilesystem fs(device);
  const auto free_at_start = fs.free_bytes();
  CHECK(fsinfo_free_count(device) * 512ULL == free_at_start);
  auto big = pseudo_random_bytes(3 * mib + 123, 1);
  fs.write_file("kernel8.img", big);
  CHECK(fs.free_bytes() == free_at_start - (3 * mib + 512));
  CHECK(fsinfo_free_count(device) * 512ULL == fs.free_bytes());
  CHECK(fs.read_file("kernel8.img") == big);

  auto small = pseudo_random_bytes(1000, 2);
  fs.write_file("kernel8.img", small);
  CHECK(fs.free_bytes() == free_at_start - 1024);
  CHECK(fs.read_file("kernel8.img") == small);

  auto bigger = pseudo_random_bytes(5 * mib, 3);
  fs.write_file("kernel8.img", bigger);
  CHECK(fs.read_file("kernel8.img") == bigger);
  CHECK(fs.free_bytes() == free_at_start - 5 * mib);

  fs.remove("kernel8.img");
  CHECK(fs.free_bytes() == free_at_start);
  CHECK(fsinfo_free_count(device) * 512ULL == free_at_start);
  CHECK_FALSE(fs.exists("kernel8.img"));
  CHECK(FatFilesystem(device).free_bytes() == free_at_start);
}

TEST_CASE("fat: both FATs are kept identical", "[fat]") {
  auto device = format({FatType::fat16, 32 * mib, 4, 512});
  FatFilesystem fs(device);
  fs.make_directories("overlays");
  fs.write_file("overlays/disable-bt.dtbo", pseudo_random_bytes(5000, 4));
  fs.write_file("start.elf", pseudo_random_bytes(70000, 5));
  const std::uint32_t fat_sectors = aggrik8s::load_le16(device.bytes(), 22);
  auto first = device.bytes().begin() + 512;
  auto second = first + fat_sectors * 512;
  CHECK(std::equal(first, second, second));
}

TEST_CASE("fat: directories: mkdir -p, nested files, growth past one cluster, removal", "[fat]") {
  auto [type, bytes, spc] = GENERATE(std::make_tuple(FatType::fat16, 32 * mib, std::uint8_t{1}),
                                     std::make_tuple(FatType::fat32, 64 * mib, std::uint8_t{1}));
  auto device = format({type, bytes, spc, 512});
  FatFilesystem fs(device);
  fs.make_directories("/overlays/extra/deeper");
  fs.make_directories("overlays/extra");  // existing: fine
  CHECK(fs.stat("OVERLAYS/Extra")->is_directory);
  // 40 long names need 80+ slots: far more than one 512-byte cluster (16 slots).
  for (int i = 0; i < 40; ++i) {
    fs.write_file("overlays/overlay-number-" + std::to_string(i) + ".dtbo", "dtbo " + std::to_string(i));
  }
  FatFilesystem reopened(device);
  auto names = names_in(reopened, "overlays");
  CHECK(names.size() == 41);
  CHECK(names.count("extra") == 1);
  CHECK(names.count("overlay-number-39.dtbo") == 1);
  CHECK(reopened.read_text_file("overlays/overlay-number-17.dtbo") == "dtbo 17");

  CHECK_THROWS_WITH(reopened.remove("overlays/extra"), Contains("boot.fat: /overlays/extra: directory is not empty"));
  reopened.remove("overlays/extra/deeper");
  reopened.remove("overlays/extra");
  CHECK_FALSE(reopened.exists("overlays/extra"));
  // A freed slot run is reused.
  reopened.write_file("overlays/reused.dtbo", "r");
  CHECK(reopened.read_text_file("overlays/reused.dtbo") == "r");

  CHECK_THROWS_WITH(reopened.make_directories("overlays/reused.dtbo/x"),
                    Contains("/overlays/reused.dtbo: exists and is not a directory"));
  CHECK_THROWS_WITH(reopened.write_file("overlays", "x"), Contains("/overlays: is a directory"));
  CHECK_THROWS_WITH(reopened.write_file("missing/dir/file.txt", "x"),
                    Contains("boot.fat: /missing/dir/file.txt: parent directory /missing/dir does not exist"));
  CHECK_THROWS_WITH(reopened.read_file("overlays/none.dtbo"), Contains("boot.fat: /overlays/none.dtbo: no such file"));
  CHECK_THROWS_WITH(reopened.list_directory("nope"), Contains("boot.fat: /nope: no such directory"));
  CHECK_THROWS_WITH(reopened.write_file("bad:name", "x"), Contains("character ':' is not allowed"));
  CHECK_THROWS_WITH(reopened.write_file("../escape", "x"), Contains("contains '..'"));
}

TEST_CASE("fat: a full FAT12/16 root directory is reported, not overrun", "[fat]") {
  auto device = format({FatType::fat12, 2 * mib, 4, 16});
  FatFilesystem fs(device);
  for (int i = 0; i < 16; ++i) fs.write_file("F" + std::to_string(i), "x");
  CHECK_THROWS_WITH(fs.write_file("F16", "x"), Contains("root directory is full (16 entries"));
  CHECK(fs.list_directory("/").size() == 16);
}

TEST_CASE("fat: running out of space fails cleanly and names the path", "[fat]") {
  auto device = format({FatType::fat12, 2 * mib, 4, 512});
  FatFilesystem fs(device);
  fs.write_file("keep.txt", "keep");
  const auto free_before = fs.free_bytes();
  auto too_big = pseudo_random_bytes(static_cast<std::size_t>(free_before) + 1, 6);
  CHECK_THROWS_WITH(fs.write_file("kernel_2712.img", too_big),
                    Contains("boot.fat: /kernel_2712.img: no space left") && Contains("only"));
  CHECK(fs.free_bytes() == free_before);
  CHECK_FALSE(fs.exists("kernel_2712.img"));
  FatFilesystem reopened(device);
  CHECK(reopened.free_bytes() == free_before);
  // Exactly the free space fits.
  auto exact = pseudo_random_bytes(static_cast<std::size_t>(free_before), 7);
  reopened.write_file("kernel_2712.img", exact);
  CHECK(reopened.free_bytes() == 0);
  CHECK(reopened.read_file("kernel_2712.img") == exact);
}

TEST_CASE("fat: timestamps come from set_timestamp (SOURCE_DATE_EPOCH)", "[fat]") {
  auto device = format({});
  FatFilesystem fs(device);
  fs.set_timestamp(1700000000);  // 2023-11-14 22:13:20 UTC
  fs.write_file("user-data", "#cloud-config\n");
  fs.make_directories("dir");
  auto entry = fs.stat("user-data");
  REQUIRE(entry);
  CHECK(entry->modified_time == 1700000000);
  CHECK(fs.stat("dir")->modified_time == 1700000000);
  fs.set_timestamp(1700000001);  // odd seconds round down to FAT's 2-second steps
  fs.write_file("user-data", "#cloud-config\nhostname: x\n");
  CHECK(fs.stat("user-data")->modified_time == 1700000000);
  fs.set_timestamp(0);  // before 1980: clamped
  fs.write_file("old", "");
  CHECK(fs.stat("old")->modified_time == 315532800);
}

TEST_CASE("fat: two builds with the same inputs give identical bytes", "[fat]") {
  auto build = [] {
    auto device = format({});
    FatFilesystem fs(device);
    fs.set_timestamp(1700000000);
    fs.write_file("cmdline.txt", "a");
    fs.make_directories("overlays");
    fs.write_file("overlays/x.dtbo", pseudo_random_bytes(10000, 8));
    return device.bytes();
  };
  CHECK(build() == build());
}

TEST_CASE("fat: corrupt volumes are rejected with what is wrong", "[fat]") {
  SECTION("not FAT at all") {
    MemoryBlockDevice device(1 * mib, "zero.fat");
    CHECK_THROWS_WITH(FatFilesystem(device), Contains("zero.fat: not a FAT filesystem: boot sector signature"));
  }
  SECTION("bad bytes per sector") {
    auto device = format({});
    aggrik8s::store_le16(device.bytes(), 11, 500);
    CHECK_THROWS_WITH(FatFilesystem(device), Contains("bytes per sector is 500"));
  }
  SECTION("bad sectors per cluster") {
    auto device = format({});
    device.bytes()[13] = 3;
    CHECK_THROWS_WITH(FatFilesystem(device), Contains("sectors per cluster is 3"));
  }
  SECTION("filesystem larger than its partition") {
    auto device = format({});
    device.resize(32 * mib);
    CHECK_THROWS_WITH(FatFilesystem(device), Contains("says 131072 sectors (67108864 bytes) but the device has only 33554432"));
  }
  SECTION("cluster chain loop") {
    auto device = format({});
    {
      FatFilesystem fs(device);
      fs.write_file("loop.bin", pseudo_random_bytes(2048, 9));
    }
    auto entry = FatFilesystem(device).stat("loop.bin");
    REQUIRE(entry);
    // Make the file's last cluster point back to its first one, in the FAT the reader uses.
    const std::size_t fat = 32 * 512;
    aggrik8s::store_le32(device.bytes(), fat + (entry->first_cluster + 3) * 4, entry->first_cluster);
    FatFilesystem fs(device);
    CHECK_THROWS_WITH(fs.read_file("loop.bin"), Contains("boot.fat: /loop.bin: corrupt FAT") && Contains("loops"));
  }
  SECTION("chain into a free cluster") {
    auto device = format({});
    {
      FatFilesystem fs(device);
      fs.write_file("cut.bin", pseudo_random_bytes(2048, 10));
    }
    auto entry = FatFilesystem(device).stat("cut.bin");
    const std::size_t fat = 32 * 512;
    aggrik8s::store_le32(device.bytes(), fat + (entry->first_cluster + 1) * 4, 0);
    FatFilesystem fs(device);
    CHECK_THROWS_WITH(fs.read_file("cut.bin"), Contains("/cut.bin: corrupt FAT: cluster") && Contains("(a free cluster)"));
  }
  SECTION("file larger than its chain") {
    auto device = format({});
    {
      FatFilesystem fs(device);
      fs.write_file("short.bin", pseudo_random_bytes(1000, 11));
    }
    // size field of the first root entry (root directory is cluster 2, the first data cluster)
    std::size_t root = static_cast<std::size_t>(32 + 2 * aggrik8s::load_le32(device.bytes(), 36)) * 512;
    std::size_t slot = root;
    while ((device.bytes()[slot + 11] & 0x3f) == 0x0f) slot += 32;
    aggrik8s::store_le32(device.bytes(), slot + 28, 5000);
    FatFilesystem fs(device);
    CHECK_THROWS_WITH(fs.read_file("short.bin"), Contains("file size is 5000 bytes but its 2 clusters hold only 1024"));
    CHECK_THROWS_WITH(fs.file_extents("short.bin"), Contains("file size is 5000 bytes but its 2 clusters hold only 1024"));
  }
  SECTION("a size of 4 GiB is checked before memory is reserved for it") {
    // Found by the fat_filesystem fuzz target (tests/fuzz/regressions/fat_filesystem/): read_file
    // allocated and zeroed the size the entry claims before it looked at the cluster chain.
    auto device = format({});
    {
      FatFilesystem fs(device);
      fs.write_file("huge.bin", pseudo_random_bytes(1000, 12));
    }
    std::size_t root = static_cast<std::size_t>(32 + 2 * aggrik8s::load_le32(device.bytes(), 36)) * 512;
    std::size_t slot = root;
    while ((device.bytes()[slot + 11] & 0x3f) == 0x0f) slot += 32;
    aggrik8s::store_le32(device.bytes(), slot + 28, 0xffffffff);
    FatFilesystem fs(device);
    CHECK_THROWS_WITH(fs.read_file("huge.bin"), Contains("file size is 4294967295 bytes but its 2 clusters hold only 1024"));
  }
}

TEST_CASE("fat: a file's extents say where each of its bytes lies on the device, fragmented or not", "[fat]") {
  auto device = format({});
  FatFilesystem fs(device);
  const std::uint64_t cluster = fs.cluster_size();
  fs.write_file("a.bin", pseudo_random_bytes(20 * cluster, 4));
  fs.write_file("b.bin", pseudo_random_bytes(3000, 5));
  fs.remove("a.bin");
  // All but a.bin's clusters and two more filled, so c.bin takes the last two clusters of the volume,
  // then wraps round to those a.bin freed: two runs, the second before the first on the device.
  fs.write_file("filler.bin", pseudo_random_bytes(static_cast<std::size_t>(fs.free_bytes() - 22 * cluster), 7));
  auto c = pseudo_random_bytes(static_cast<std::size_t>(21 * cluster + 1), 6);
  fs.write_file("c.bin", c);
  auto extents = fs.file_extents("c.bin");
  REQUIRE(extents.size() == 2);
  CHECK(extents[1].device_offset < extents[0].device_offset);
  std::uint64_t position = 0;
  for (const auto& e : extents) {
    CHECK(e.file_offset == position);
    std::vector<std::uint8_t> on_device(device.bytes().begin() + static_cast<std::ptrdiff_t>(e.device_offset),
                                        device.bytes().begin() + static_cast<std::ptrdiff_t>(e.device_offset + e.length));
    CHECK(on_device == std::vector<std::uint8_t>(c.begin() + static_cast<std::ptrdiff_t>(e.file_offset),
                                                 c.begin() + static_cast<std::ptrdiff_t>(e.file_offset + e.length)));
    position += e.length;
  }
  CHECK(position == c.size());
  fs.write_file("empty", std::string_view());
  CHECK(fs.file_extents("empty").empty());
  CHECK_THROWS_WITH(fs.file_extents("none"), Contains("boot.fat: /none: no such file"));
}
