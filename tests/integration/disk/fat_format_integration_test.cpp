// FAT filesystems made by our formatter, checked by the reference tools: fsck.fat finds nothing to fix,
// `file` and minfo read the type, cluster size and serial we chose, and files written by FatFilesystem
// come back byte for byte through mtools.
#include <catch2/catch.hpp>


#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/fat_format.hpp"
#include "tests/test_support.hpp"

using aggrik8s::FatFilesystem;
using aggrik8s::FatFormatOptions;
using aggrik8s::FatType;
using aggrik8s::FileBlockDevice;
using aggrik8s::test::run;
using aggrik8s::test::TempDir;
using Catch::Matchers::Contains;

namespace {

constexpr std::uint64_t MiB = 1ull << 20;

std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

std::string checked_output(const std::string& command) {
  auto result = run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

}  // namespace

TEST_CASE("formatted FAT16 and FAT32 images pass fsck.fat and read back through mtools", "[fat_format][integration]") {
  TempDir dir;
  struct Case {
    std::uint64_t size;
    std::optional<FatType> type;
  };
  for (const Case& c : {Case{8 * MiB, {}}, Case{33 * MiB, {}}, Case{100 * MiB, {}}, Case{300 * MiB, {}},
                        Case{511 * MiB, {}}, Case{64 * MiB, FatType::fat32}, Case{512 * MiB, {}}, Case{1024 * MiB, {}}}) {
    auto image = dir / "fat.img";
    std::filesystem::remove(image);
    checked_output("truncate -s " + std::to_string(c.size) + " " + quoted(image));
    FatFormatOptions options;
    options.label = "bootfs";
    options.volume_id = 0xa1b2c3d4;
    options.type = c.type;
    aggrik8s::FatLayout layout;
    const std::string payload = aggrik8s::test::random_bytes(300000, 7);
    {
      FileBlockDevice device(image, FileBlockDevice::Access::read_write);
      layout = aggrik8s::format_fat(device, options);
      FatFilesystem fat(device);
      fat.set_timestamp(1700000000);
      fat.make_directories("overlays");
      fat.write_file("overlays/vc4-kms-v3d-pi5.dtbo", payload);
      fat.write_file("config.txt", std::string("auto_initramfs=1\n"));
    }
    const bool fat32 = layout.type == FatType::fat32;
    INFO("size " << c.size / MiB << " MiB, FAT" << (fat32 ? 32 : 16));
    CHECK((c.size >= 512 * MiB || c.type) == fat32);

    auto fsck = run("fsck.fat -n -V " + quoted(image));
    INFO("fsck.fat:\n" << fsck.output);
    CHECK(fsck.exit_code == 0);
    CHECK_THAT(fsck.output, !Contains("differ") && !Contains("Free cluster summary") && !Contains("Orphaned"));

    const std::string file = checked_output("file -b " + quoted(image));
    CHECK_THAT(file, Contains(fat32 ? "FAT (32 bit)" : "FAT (16 bit)") && Contains("serial number 0xa1b2c3d4") &&
                         Contains("label: \"BOOTFS     \""));
    // `file` leaves out a cluster of one sector.
    if (layout.sectors_per_cluster > 1) CHECK_THAT(file, Contains("sectors/cluster " + std::to_string(layout.sectors_per_cluster)));

    const std::string info = checked_output("MTOOLS_SKIP_CHECK=1 minfo -i " + quoted(image) + " ::");
    CHECK_THAT(info, Contains("cluster size: " + std::to_string(layout.sectors_per_cluster) + " sectors") &&
                         Contains("serial number: A1B2C3D4") && Contains(fat32 ? "FAT32" : "FAT16"));

    const std::string listing = checked_output("MTOOLS_SKIP_CHECK=1 mdir -i " + quoted(image) + " -/ ::");
    CHECK_THAT(listing, Contains("CONFIG   TXT") && Contains("vc4-kms-v3d-pi5.dtbo") && Contains("Volume in drive : is BOOTFS"));
    auto copied = dir / "copied.dtbo";
    std::filesystem::remove(copied);
    checked_output("MTOOLS_SKIP_CHECK=1 mcopy -i " + quoted(image) + " ::overlays/vc4-kms-v3d-pi5.dtbo " + quoted(copied));
    CHECK(aggrik8s::test::read_file(copied) == payload);
  }
}
