// builder/filesystem_probe: libblkid on real filesystems made by their own mkfs tools into temp files,
// alone and at an offset inside a partitioned disk image, plus the damaged cases inspect must name.
#include "disk/filesystem_probe.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

void sh(const std::string& command) {
  auto r = test::run(command);
  INFO(command);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
}

bool have(const std::string& tool) { return test::run("command -v " + tool + " >/dev/null 2>&1").exit_code == 0; }

std::string q(const fs::path& path) { return "'" + path.string() + "'"; }

}  // namespace

TEST_CASE("filesystem probe: ext2, ext3, ext4 with their UUID and label", "[filesystem_probe]") {
  test::TempDir dir;
  for (const std::string type : {"ext2", "ext3", "ext4"}) {
    fs::path image = dir / (type + ".img");
    sh("truncate -s 16M " + q(image) + " && mkfs." + type + " -q -F -L root-" + type +
       " -U 8a438930-e8a5-4a6f-8bd6-5452574f0002 " + q(image));
    ProbedFilesystem probed = probe_filesystem(image, 0, 0);
    CHECK(probed.type == type);
    CHECK(probed.uuid == "8a438930-e8a5-4a6f-8bd6-5452574f0002");
    CHECK(probed.label == "root-" + type);
    CHECK(probed.ambiguous_types.empty());
    CHECK_FALSE(probed.bad_checksum);
  }
}

TEST_CASE("filesystem probe: FAT32 and FAT16 report vfat with the FAT size as version and the volume id", "[filesystem_probe]") {
  test::TempDir dir;
  fs::path fat32 = dir / "fat32.img";
  sh("truncate -s 40M " + q(fat32) + " && mkfs.vfat -F 32 -s 1 -n BOOTFS -i B007F5A7 " + q(fat32) + " >/dev/null");
  ProbedFilesystem probed = probe_filesystem(fat32, 0, 0);
  CHECK(probed.type == "vfat");
  CHECK(probed.version == "FAT32");
  CHECK(probed.uuid == "B007-F5A7");
  CHECK(probed.label == "BOOTFS");

  fs::path fat16 = dir / "fat16.img";
  sh("truncate -s 16M " + q(fat16) + " && mkfs.vfat -F 16 -n SMALL -i 12345678 " + q(fat16) + " >/dev/null");
  probed = probe_filesystem(fat16, 0, 0);
  CHECK(probed.type == "vfat");
  CHECK(probed.version == "FAT16");
  CHECK(probed.uuid == "1234-5678");
  CHECK(probed.label == "SMALL");
}

TEST_CASE("filesystem probe: xfs and squashfs, formats the hand-written probes did not know", "[filesystem_probe]") {
  test::TempDir dir;
  if (have("mkfs.xfs")) {
    fs::path xfs = dir / "xfs.img";
    // xfsprogs 6 refuses filesystems under 300 MiB; the file stays sparse.
    sh("truncate -s 320M " + q(xfs) + " && mkfs.xfs -q -L data -m uuid=0b2e5d0e-4a32-4d7e-9c49-3f3a2d1e5c77 " + q(xfs));
    ProbedFilesystem probed = probe_filesystem(xfs, 0, 0);
    CHECK(probed.type == "xfs");
    CHECK(probed.uuid == "0b2e5d0e-4a32-4d7e-9c49-3f3a2d1e5c77");
    CHECK(probed.label == "data");
  } else {
    WARN("mkfs.xfs not installed (xfsprogs): xfs not probed");
  }
  REQUIRE(have("mksquashfs"));
  fs::create_directories(dir / "tree");
  test::write_file(dir / "tree" / "hello", "hello\n");
  fs::path squash = dir / "tree.squashfs";
  sh("mksquashfs " + q(dir / "tree") + " " + q(squash) + " -quiet -no-progress >/dev/null");
  ProbedFilesystem probed = probe_filesystem(squash, 0, 0);
  CHECK(probed.type == "squashfs");
  CHECK(probed.label.empty());
}

TEST_CASE("filesystem probe: ranges of a partitioned disk image, and blkid's PARTUUIDs", "[filesystem_probe]") {
  test::TempDir dir;
  fs::path disk = dir / "disk.img";
  fs::path boot = dir / "boot.img";
  fs::path root = dir / "root.img";
  // MBR like Raspberry Pi OS: FAT32 at 8 MiB, ext4 right after it.
  sh("truncate -s 40M " + q(boot) + " && mkfs.vfat -F 32 -s 1 -n bootfs -i B007F5A7 " + q(boot) + " >/dev/null");
  sh("truncate -s 24M " + q(root) + " && mkfs.ext4 -q -F -L rootfs " + q(root));
  sh("truncate -s 72M " + q(disk) + " && printf 'label: dos\\nlabel-id: 0x5452574f\\nstart=16384, size=81920, type=c\\n"
     "start=98304, size=49152, type=83\\n' | sfdisk -q " + q(disk) +
     " && dd if=" + q(boot) + " of=" + q(disk) + " bs=1M seek=8 conv=notrunc,sparse status=none" +
     " && dd if=" + q(root) + " of=" + q(disk) + " bs=1M seek=48 conv=notrunc,sparse status=none");

  ProbedFilesystem first = probe_filesystem(disk, 8 << 20, 40 << 20);
  CHECK(first.type == "vfat");
  CHECK(first.label == "bootfs");
  ProbedFilesystem second = probe_filesystem(disk, 48 << 20, 24 << 20);
  CHECK(second.type == "ext4");
  CHECK(second.label == "rootfs");
  // The same ranges shifted by a sector hold nothing recognisable.
  CHECK_FALSE(probe_filesystem(disk, (48 << 20) + 512, (24 << 20) - 512).found());
  // The whole disk is a partition table, not a filesystem (the superblock chain alone is asked).
  CHECK_FALSE(probe_filesystem(disk, 0, 0).found());

  auto partitions = probe_partitions(disk);
  REQUIRE(partitions.size() == 2);
  CHECK(partitions[0].number == 1);
  CHECK(partitions[0].start_bytes == 8u << 20);
  CHECK(partitions[0].size_bytes == 40u << 20);
  CHECK(partitions[0].partuuid == "5452574f-01");
  CHECK(partitions[1].partuuid == "5452574f-02");

  fs::path gpt = dir / "gpt.img";
  sh("truncate -s 16M " + q(gpt) + " && printf 'label: gpt\\nstart=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, "
     "uuid=6A1F4C2E-0D47-4B7B-9E3C-1D2F3A4B5C6D\\n' | sfdisk -q " + q(gpt));
  auto gpt_partitions = probe_partitions(gpt);
  REQUIRE(gpt_partitions.size() == 1);
  CHECK(gpt_partitions[0].partuuid == "6a1f4c2e-0d47-4b7b-9e3c-1d2f3a4b5c6d");
  CHECK(gpt_partitions[0].start_bytes == 2048u * 512);

  CHECK(probe_partitions(root).empty());
}

TEST_CASE("filesystem probe: nothing, two signatures, a range past the end, a missing file", "[filesystem_probe]") {
  test::TempDir dir;
  fs::path zeros = dir / "zeros.img";
  sh("truncate -s 4M " + q(zeros));
  ProbedFilesystem nothing = probe_filesystem(zeros, 0, 0);
  CHECK_FALSE(nothing.found());
  CHECK(nothing.ambiguous_types.empty());

  // An ISO 9660 volume descriptor inside an ext4 filesystem: libblkid (and mount) will not choose.
  fs::path both = dir / "both.img";
  sh("truncate -s 16M " + q(both) + " && mkfs.ext4 -q -F " + q(both) +
     " && printf '\\001CD001' | dd of=" + q(both) + " bs=1 seek=32768 conv=notrunc status=none");
  ProbedFilesystem ambiguous = probe_filesystem(both, 0, 0);
  CHECK_FALSE(ambiguous.found());
  CHECK(ambiguous.ambiguous_types.find("ext4") != std::string::npos);
  CHECK(ambiguous.ambiguous_types.find("iso9660") != std::string::npos);

  try {
    probe_filesystem(zeros, 2 << 20, 4 << 20);
    FAIL("no error for a range past the end of the file");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("zeros.img (bytes 2097152+4194304)") != std::string::npos);
  }
  try {
    probe_filesystem(dir / "missing.img", 0, 0);
    FAIL("no error for a missing file");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("missing.img") != std::string::npos);
  }
}
