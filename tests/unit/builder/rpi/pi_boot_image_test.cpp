// boot.img from a boot partition: the same files byte for byte, replacements in place, sizes and the
// signature written beside it.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "builder/rpi/pi_boot_image.hpp"
#include "core/error.hpp"
#include "disk/block_device.hpp"
#include "disk/fat_format.hpp"
#include "disk/fat_tree.hpp"
#include "tests/test_support.hpp"

using aggrik8s::FatFilesystem;
using aggrik8s::MemoryBlockDevice;
using aggrik8s::builder::PiBootImageSpec;
using aggrik8s::builder::pi_boot_image_bytes;
using Catch::Matchers::Contains;

namespace {

constexpr std::uint64_t MiB = 1ull << 20;

// A boot partition like Raspberry Pi OS's (which is 512 MiB): FAT32, a few large files, overlays/.
struct SourcePartition {
  MemoryBlockDevice device{64 * MiB};
  SourcePartition() {
    aggrik8s::FatFormatOptions options;
    options.label = "bootfs";
    options.type = aggrik8s::FatType::fat32;
    aggrik8s::format_fat(device, options);
    FatFilesystem fat(device);
    fat.set_timestamp(1600000000);
    fat.write_file("kernel_2712.img", aggrik8s::test::random_bytes(9 * MiB + 17, 1));
    fat.write_file("initramfs_2712", aggrik8s::test::random_bytes(12 * MiB, 2));
    fat.write_file("bcm2712-rpi-5-b.dtb", aggrik8s::test::random_bytes(80000, 3));
    fat.write_file("config.txt", std::string("auto_initramfs=1\n"));
    fat.write_file("cmdline.txt", std::string("console=serial0,115200 root=PARTUUID=1234-02\n"));
    fat.write_file("firstrun.sh", std::string("#!/bin/bash\necho secret-hash\n"));
    fat.make_directories("overlays");
    for (unsigned i = 0; i < 40; ++i) {
      fat.write_file("overlays/overlay-number-" + std::to_string(i) + ".dtbo", aggrik8s::test::random_bytes(3000 + i, 10 + i));
    }
  }
};

}  // namespace

TEST_CASE("boot.img holds the boot partition's files byte for byte and is reproducible", "[pi_boot_image]") {
  SourcePartition source;
  FatFilesystem fat(source.device);
  PiBootImageSpec spec;
  spec.node = "n1";
  spec.timestamp = 1700000000;
  std::vector<std::uint8_t> image = pi_boot_image_bytes(fat, spec);
  // Sized to fit: the ~21.3 MiB of files plus the margin, in whole MiB, well below the partition.
  CHECK(image.size() % MiB == 0);
  CHECK(image.size() >= 23 * MiB);
  CHECK(image.size() <= 26 * MiB);

  MemoryBlockDevice image_device(image, "boot.img");
  FatFilesystem boot(image_device);
  CHECK(boot.volume_label() == "BOOTFS");
  CHECK(boot.free_bytes() >= aggrik8s::builder::pi_boot_image_margin);
  auto source_tree = aggrik8s::list_fat_tree(fat);
  auto image_tree = aggrik8s::list_fat_tree(boot);
  REQUIRE(source_tree.size() == image_tree.size());
  for (std::size_t i = 0; i < source_tree.size(); ++i) {
    INFO(source_tree[i].path);
    CHECK(image_tree[i].path == source_tree[i].path);
    CHECK(image_tree[i].entry.modified_time == 1700000000);
    if (!source_tree[i].entry.is_directory) CHECK(boot.read_file(image_tree[i].path) == fat.read_file(source_tree[i].path));
  }
  CHECK(pi_boot_image_bytes(fat, spec) == image);
  spec.node = "n2";
  CHECK(pi_boot_image_bytes(fat, spec) != image);  // another volume id
}

TEST_CASE("boot.img replaces, adds and omits files as asked", "[pi_boot_image]") {
  SourcePartition source;
  FatFilesystem fat(source.device);
  PiBootImageSpec spec;
  spec.node = "n1";
  spec.omitted_root_files = {"firstrun.sh", "initramfs_2712"};
  spec.replaced_files = {{"CMDLINE.TXT", "console=tty1 aggrik8s.root=http://x/root.squashfs\n"}, {"initramfs8", "new initramfs"}};
  std::vector<std::uint8_t> image = pi_boot_image_bytes(fat, spec);
  CHECK(image.size() <= 12 * MiB);
  MemoryBlockDevice image_device(image, "boot.img");
  FatFilesystem boot(image_device);
  CHECK_FALSE(boot.exists("firstrun.sh"));
  CHECK_FALSE(boot.exists("initramfs_2712"));
  CHECK(boot.read_text_file("cmdline.txt") == "console=tty1 aggrik8s.root=http://x/root.squashfs\n");
  CHECK(boot.stat("cmdline.txt")->name == "cmdline.txt");  // the partition's name and place, not the key's case
  CHECK(boot.read_text_file("initramfs8") == "new initramfs");
  CHECK(boot.read_text_file("config.txt") == "auto_initramfs=1\n");
}

TEST_CASE("boot.img of a fixed size: the size asked, or an error naming both sizes", "[pi_boot_image]") {
  SourcePartition source;
  FatFilesystem fat(source.device);
  PiBootImageSpec spec;
  spec.node = "n1";
  spec.image_size = 64 * MiB;
  CHECK(pi_boot_image_bytes(fat, spec).size() == 64 * MiB);
  spec.image_size = 16 * MiB;
  CHECK_THROWS_WITH(pi_boot_image_bytes(fat, spec),
                    Contains("node n1") && Contains("image_size is 16.0 MiB") && Contains("need a boot.img of 2"));
}

TEST_CASE("boot.img is written 0600 and boot.sig verifies it", "[pi_boot_image]") {
  aggrik8s::test::TempDir dir;
  SourcePartition source;
  FatFilesystem fat(source.device);
  PiBootImageSpec spec;
  spec.node = "n1";
  std::vector<std::uint8_t> image = pi_boot_image_bytes(fat, spec);
  auto key = aggrik8s::builder::generate_pi_boot_key();
  aggrik8s::builder::PartialOutputs partial;
  auto built = aggrik8s::builder::write_pi_boot_files(image, key, 1700000000, dir / "n1.boot.img", dir / "n1.boot.sig", partial);
  partial.commit();
  struct stat st {};
  REQUIRE(::stat((dir / "n1.boot.img").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(built.image.size == image.size());
  CHECK(built.image.sha256 == aggrik8s::Sha256::of_file(dir / "n1.boot.img"));
  CHECK_FALSE(std::filesystem::exists(dir / "n1.boot.img.partial"));
  const std::string text = aggrik8s::test::read_file(dir / "n1.boot.sig");
  auto signature = aggrik8s::builder::parse_boot_signature(text, "n1.boot.sig");
  CHECK(signature.timestamp == 1700000000);
  CHECK(aggrik8s::builder::verify_boot_signature(image, signature, key.public_key()).ok);
}
