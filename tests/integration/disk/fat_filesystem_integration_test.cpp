// FAT written by our code, checked by the reference tools: fsck.fat must find nothing to fix, mtools
// must read back every byte and every long name. Volumes are made by mkfs.fat and filled by mcopy so
// that reading is tested against the real thing too.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <random>
#include <set>

#include "disk/block_device.hpp"
#include "disk/fat_filesystem.hpp"
#include "disk/partition_table.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using aggrik8s::FatFilesystem;
using aggrik8s::FatType;
using aggrik8s::FileBlockDevice;
using aggrik8s::test::run;
using aggrik8s::test::TempDir;
using Catch::Matchers::Contains;

namespace {

std::string random_text(std::size_t size, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::string text(size, '\0');
  for (auto& c : text) c = static_cast<char>(generator());
  return text;
}


std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

// mtools addresses a partition inside an image as image@@byte-offset.
std::string mtools(const std::string& tool, const std::filesystem::path& image, std::uint64_t offset,
                   const std::string& arguments) {
  return "MTOOLS_SKIP_CHECK=1 " + tool + " -i " + quoted(image) + "@@" + std::to_string(offset) + " " + arguments;
}

void require_ok(const aggrik8s::test::CommandResult& result, const std::string& what) {
  INFO(what << " output:\n" << result.output);
  REQUIRE(result.exit_code == 0);
}

// fsck.fat cannot seek to an offset: the partition is copied out first. -n: report only; exit 0 means
// no errors and nothing it would change.
void require_fsck_clean(const std::filesystem::path& image, std::uint64_t offset_sectors, std::uint64_t sectors,
                        const TempDir& dir) {
  auto copy = dir / "fsck-partition.img";
  require_ok(run("dd if=" + quoted(image) + " of=" + quoted(copy) + " bs=512 skip=" + std::to_string(offset_sectors) +
                 " count=" + std::to_string(sectors) + " status=none"),
             "dd");
  auto result = run("fsck.fat -n -V " + quoted(copy));
  INFO("fsck.fat output:\n" << result.output);
  CHECK(result.exit_code == 0);
  CHECK_THAT(result.output, !Contains("differ") && !Contains("Free cluster summary") && !Contains("Orphaned") &&
                                !Contains("Bad short file name") && !Contains("checksum"));
  std::filesystem::remove(copy);
}

struct PiImage {
  std::filesystem::path path;
  std::uint64_t boot_first_sector = 16384;  // 8 MiB, as Raspberry Pi OS since 2025
  std::uint64_t boot_sectors = 0;
};

// truncate + sfdisk + mkfs.fat --offset + mcopy: what a Raspberry Pi OS image looks like.
PiImage make_pi_image(const TempDir& dir, const std::string& fat_bits, std::uint64_t boot_mib, const std::string& type) {
  PiImage image;
  image.path = dir / ("pi-fat" + fat_bits + ".img");
  image.boot_sectors = boot_mib * 2048;
  std::uint64_t root_first = image.boot_first_sector + image.boot_sectors;
  std::uint64_t disk_mib = 8 + boot_mib + 32 + 16;
  require_ok(run("truncate -s " + std::to_string(disk_mib) + "M " + quoted(image.path)), "truncate");
  require_ok(run("printf 'label: dos\\nlabel-id: 0x1234abcd\\nstart=" + std::to_string(image.boot_first_sector) +
                 ", size=" + std::to_string(image.boot_sectors) + ", type=" + type + ", bootable\\nstart=" +
                 std::to_string(root_first) + ", size=65536, type=83\\n' | sfdisk --no-reread --no-tell-kernel " +
                 quoted(image.path)),
             "sfdisk");
  require_ok(run("mkfs.fat -F " + fat_bits + " -n bootfs -s 1 --offset=" + std::to_string(image.boot_first_sector) +
                 " " + quoted(image.path) + " " + std::to_string(boot_mib * 1024)),
             "mkfs.fat");
  auto files = dir / "files";
  std::filesystem::create_directories(files / "overlays");
  aggrik8s::test::write_file(files / "cmdline.txt", "console=serial0,115200 root=PARTUUID=1234abcd-02 rootwait\n");
  aggrik8s::test::write_file(files / "config.txt", "[all]\nauto_initramfs=1\n");
  aggrik8s::test::write_file(files / "issue.txt", "Raspberry Pi reference 2025-05-13\n");
  aggrik8s::test::write_file(files / "bcm2712-rpi-5-b.dtb", random_text(70000, 1));
  aggrik8s::test::write_file(files / "overlays" / "README", "overlays live here\n");
  aggrik8s::test::write_file(files / "overlays" / "vc4-kms-v3d-pi5.dtbo", random_text(3000, 2));
  const std::uint64_t offset = image.boot_first_sector * 512;
  require_ok(run(mtools("mcopy", image.path, offset, "-s " + quoted(files) + "/* ::/")), "mcopy");
  return image;
}

}  // namespace

TEST_CASE("fat integration: read mkfs.fat/mcopy volumes, modify them, fsck.fat and mtools agree", "[fat][integration]") {
  auto [fat_bits, boot_mib, type, expected_type] =
      GENERATE(std::make_tuple(std::string("32"), std::uint64_t{64}, std::string("c"), FatType::fat32),
               std::make_tuple(std::string("16"), std::uint64_t{32}, std::string("e"), FatType::fat16));
  TempDir dir;
  PiImage image = make_pi_image(dir, fat_bits, boot_mib, type);
  const std::uint64_t offset = image.boot_first_sector * 512;
  const std::string kernel = random_text(6 * 1024 * 1024 + 777, 3);
  const std::string long_name = "a long file name with spaces and more than thirteen characters.txt";
  {
    FileBlockDevice disk(image.path, FileBlockDevice::Access::read_write);
    auto table = aggrik8s::read_partition_table(disk);
    auto boot = aggrik8s::open_partition(disk, table, 1);
    FatFilesystem fs(boot);
    CHECK(fs.type() == expected_type);
    CHECK(fs.volume_label() == "bootfs");
    // what mcopy wrote
    CHECK(fs.read_text_file("cmdline.txt") == "console=serial0,115200 root=PARTUUID=1234abcd-02 rootwait\n");
    CHECK(fs.read_text_file("bcm2712-rpi-5-b.dtb") == random_text(70000, 1));
    CHECK(fs.read_text_file("overlays/vc4-kms-v3d-pi5.dtbo") == random_text(3000, 2));
    std::set<std::string> overlay_names;
    for (const auto& entry : fs.list_directory("overlays")) overlay_names.insert(entry.name);
    CHECK(overlay_names == std::set<std::string>{"README", "vc4-kms-v3d-pi5.dtbo"});

    fs.set_timestamp(1700000000);
    fs.write_file("cmdline.txt", "console=serial0,115200 root=PARTUUID=cafef00d-02 rootwait cgroup_enable=memory\n");
    fs.write_file("config.txt", "[all]\nauto_initramfs=1\ndtparam=pciex1\nkernel=kernel8.img\n");
    fs.write_file("firstrun.sh", "#!/bin/bash\nset -e\necho first boot\n");
    fs.write_file("user-data", "#cloud-config\nhostname: node-1\n");
    fs.write_file("meta-data", "instance-id: node-1\n");
    fs.write_file("network-config", "version: 2\n");
    fs.write_file("kernel_2712.img", kernel);
    fs.write_file(long_name, "long\n");
    fs.make_directories("overlays/extra/deeper");
    for (int i = 0; i < 30; ++i) {
      fs.write_file("overlays/generated-overlay-" + std::to_string(i) + ".dtbo", random_text(100 + static_cast<std::size_t>(i), 4));
    }
    fs.write_file("overlays/extra/deeper/note.txt", "deep\n");
    fs.remove("issue.txt");
    fs.remove("overlays/README");
    // a replaced big file shrinking frees its tail
    fs.write_file("bcm2712-rpi-5-b.dtb", "small now\n");
  }

  require_fsck_clean(image.path, image.boot_first_sector, image.boot_sectors, dir);

  auto type_out = run(mtools("mtype", image.path, offset, "::cmdline.txt"));
  require_ok(type_out, "mtype");
  CHECK(type_out.output == "console=serial0,115200 root=PARTUUID=cafef00d-02 rootwait cgroup_enable=memory\n");
  CHECK(run(mtools("mtype", image.path, offset, "::overlays/extra/deeper/note.txt")).output == "deep\n");
  CHECK(run(mtools("mtype", image.path, offset, "'::" + long_name + "'")).output == "long\n");
  CHECK(run(mtools("mtype", image.path, offset, "::/overlays/generated-overlay-29.dtbo")).output == random_text(129, 4));

  auto copied = dir / "kernel-copy.img";
  require_ok(run(mtools("mcopy", image.path, offset, "::kernel_2712.img " + quoted(copied))), "mcopy out");
  CHECK(aggrik8s::test::read_file(copied) == kernel);

  auto listing = run(mtools("mdir", image.path, offset, "-a ::/"));
  require_ok(listing, "mdir");
  CHECK_THAT(listing.output, Contains(long_name) && Contains("firstrun.sh") && Contains("network-config") &&
                                 Contains("user-data") && Contains("kernel_2712.img") && !Contains("issue"));
  auto overlays = run(mtools("mdir", image.path, offset, "-b ::/overlays"));
  CHECK_THAT(overlays.output, Contains("generated-overlay-0.dtbo") && Contains("generated-overlay-29.dtbo") &&
                                  Contains("extra") && !Contains("README"));
  // mdir shows 2023-11-14 for entries written with set_timestamp(1700000000).
  CHECK_THAT(run(mtools("mdir", image.path, offset, "::/user-data")).output, Contains("2023-11-14"));

  // mtools writes again on top of what we wrote, and we read its result.
  aggrik8s::test::write_file(dir / "from-mtools.txt", "written by mcopy\n");
  require_ok(run(mtools("mcopy", image.path, offset, quoted(dir / "from-mtools.txt") + " ::/overlays/extra/")), "mcopy");
  {
    FileBlockDevice disk(image.path, FileBlockDevice::Access::read_only);
    auto table = aggrik8s::read_partition_table(disk);
    auto boot = aggrik8s::open_partition(disk, table, 1);
    FatFilesystem fs(boot);
    CHECK(fs.read_text_file("overlays/extra/from-mtools.txt") == "written by mcopy\n");
    CHECK(fs.read_text_file("KERNEL_2712.IMG") == kernel);
  }
  require_fsck_clean(image.path, image.boot_first_sector, image.boot_sectors, dir);
}

TEST_CASE("fat integration: FAT12 volume made in its own file and dd'd into place", "[fat][integration]") {
  TempDir dir;
  auto volume = dir / "small.fat";
  require_ok(run("mkfs.fat -C -F 12 -n SMALL " + quoted(volume) + " 4096"), "mkfs.fat");
  auto image = dir / "disk.img";
  require_ok(run("truncate -s 16M " + quoted(image)), "truncate");
  require_ok(run("printf 'label: dos\\nstart=2048, size=8192, type=1\\n' | sfdisk --no-reread --no-tell-kernel " +
                 quoted(image)),
             "sfdisk");
  require_ok(run("dd if=" + quoted(volume) + " of=" + quoted(image) + " bs=512 seek=2048 conv=notrunc status=none"), "dd");
  {
    FileBlockDevice disk(image, FileBlockDevice::Access::read_write);
    auto table = aggrik8s::read_partition_table(disk);
    auto partition = aggrik8s::open_partition(disk, table, 1);
    FatFilesystem fs(partition);
    CHECK(fs.type() == FatType::fat12);
    CHECK(fs.volume_label() == "SMALL");
    fs.make_directories("a/b");
    fs.write_file("a/b/Mixed Case Name.TXT", std::string(5000, 'z'));
    fs.write_file("README", "plain 8.3 upper case name\n");
    auto free_before = fs.free_bytes();
    CHECK_THROWS_WITH(fs.write_file("too-big.bin", std::string(static_cast<std::size_t>(free_before) + 1, 'x')),
                      Contains("partition 1: /too-big.bin: no space left"));
  }
  require_fsck_clean(image, 2048, 8192, dir);
  CHECK(run(mtools("mtype", image, 2048 * 512, "'::a/b/Mixed Case Name.TXT'")).output == std::string(5000, 'z'));
  CHECK_THAT(run(mtools("mdir", image, 2048 * 512, "::/")).output, Contains("README"));
}
