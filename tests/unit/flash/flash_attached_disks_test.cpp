// Which disks `flash` may overwrite: mountinfo parsing, device classification, and the refusals,
// on text and on a fake /sys tree (no real disk is looked at); what `flash --list` offers.
#include <catch2/catch.hpp>

#include <filesystem>

#include "flash/attached_disks.hpp"
#include "flash/flash_plan.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

const char* sample_mountinfo =
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "27 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n"
    "40 27 8:17 / /media/user/boot\\040fs rw,nosuid shared:5 master:3 - vfat /dev/sdb1 rw,fmask=0022\n"
    "41 27 0:45 /@home /home rw - btrfs /dev/sdc2 rw,subvol=/@home\n"
    "garbage line\n";

AttachedDisk usb_stick() {
  AttachedDisk disk;
  disk.name = "sdb";
  disk.device_path = "/dev/sdb";
  disk.device = {8, 16};
  disk.size_bytes = 32ull << 30;
  disk.model = "Ultra";
  disk.transport = "usb";
  disk.partitions = {"sdb1", "sdb2"};
  disk.partition_devices = {{8, 17}, {8, 18}};
  return disk;
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  test::write_file(path, text);
}

// sda (SATA, 8:0) whose sda2 holds dm-0, the LVM volume that / is on (see sample_mountinfo); sdb (USB,
// 8:16) with partition sdb1.
fs::path fake_sys(const test::TempDir& dir) {
  fs::path sys = dir / "sys";
  fs::path sda = sys / "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda";
  write(sda / "dev", "8:0\n");
  write(sda / "size", "1000000\n");
  write(sda / "removable", "0\n");
  write(sda / "ro", "0\n");
  write(sda / "device/model", "Samsung SSD     \n");
  write(sda / "sda2/partition", "2\n");
  write(sda / "sda2/dev", "8:2\n");
  fs::create_directories(sda / "sda2/holders/dm-0");
  fs::path sdb = sys / "devices/pci0000:00/0000:00:14.0/usb2/2-1/host4/block/sdb";
  write(sdb / "dev", "8:16\n");
  write(sdb / "size", "62333952\n");
  write(sdb / "removable", "1\n");
  write(sdb / "ro", "0\n");
  write(sdb / "device/model", "Ultra\n");
  write(sdb / "sdb1/partition", "1\n");
  write(sdb / "sdb1/dev", "8:17\n");
  fs::path dm = sys / "devices/virtual/block/dm-0";
  write(dm / "dev", "253:0\n");
  write(dm / "size", "900000\n");
  fs::create_directories(dm / "slaves");
  fs::create_directories(sys / "block");
  fs::create_directories(sys / "dev/block");
  fs::create_directories(sys / "class/block");
  fs::create_directory_symlink(sda, sys / "block/sda");
  fs::create_directory_symlink(sdb, sys / "block/sdb");
  fs::create_directory_symlink(dm, sys / "block/dm-0");
  fs::create_directory_symlink(sda / "sda2", dm / "slaves/sda2");
  fs::create_directory_symlink(sda / "sda2", sys / "class/block/sda2");
  fs::create_directory_symlink(sda, sys / "dev/block/8:0");
  fs::create_directory_symlink(sda / "sda2", sys / "dev/block/8:2");
  fs::create_directory_symlink(sdb, sys / "dev/block/8:16");
  fs::create_directory_symlink(sdb / "sdb1", sys / "dev/block/8:17");
  fs::create_directory_symlink(dm, sys / "dev/block/253:0");
  return sys;
}

}  // namespace

TEST_CASE("flash: mountinfo lines are parsed, escapes decoded, garbage skipped", "[flash]") {
  auto mounts = parse_mountinfo(sample_mountinfo);
  REQUIRE(mounts.size() == 4);
  CHECK(mounts[1].mount_point == "/");
  CHECK(mounts[1].device == DeviceNumber{253, 0});
  CHECK(mounts[1].source == "/dev/mapper/vg-root");
  CHECK(mounts[2].mount_point == "/media/user/boot fs");
  CHECK(mounts[2].filesystem_type == "vfat");
  CHECK(mounts[2].source == "/dev/sdb1");
  CHECK(parse_swaps("Filename Type Size Used Priority\n/dev/sdb2 partition 1024 0 -2\n/swapfile file 10 0 -3\n") ==
        std::vector<std::string>{"/dev/sdb2", "/swapfile"});
}

TEST_CASE("flash: uses of a disk are found by device number, by source name, and in swap", "[flash]") {
  auto mounts = parse_mountinfo(sample_mountinfo);
  auto uses = uses_of_disk(usb_stick(), mounts, {"/dev/sdb2"});
  REQUIRE(uses.size() == 2);
  CHECK(uses[0] == "mounted at /media/user/boot fs (sdb1)");
  CHECK(uses[1] == "in use as swap (sdb2)");
  // btrfs: anonymous device number 0:45, but the source names sdc2.
  AttachedDisk sdc = usb_stick();
  sdc.name = "sdc";
  sdc.device_path = "/dev/sdc";
  sdc.device = {8, 32};
  sdc.partitions = {"sdc1", "sdc2"};
  sdc.partition_devices = {{8, 33}, {8, 34}};
  CHECK(uses_of_disk(sdc, mounts, {}) == std::vector<std::string>{"mounted at /home (sdc2)"});
  AttachedDisk idle = sdc;
  idle.name = "sdd";
  idle.partitions = {"sdd1"};
  idle.partition_devices = {{8, 49}};
  idle.device = {8, 48};
  CHECK(uses_of_disk(idle, mounts, {}).empty());
}

TEST_CASE("flash: refusals: mounted, system disk, holders, read-only, non-removable needs --force", "[flash]") {
  AttachedDisk stick = usb_stick();
  CHECK(assess_flash_target(stick, {}, {"sda"}).allowed(false));

  auto mounted = assess_flash_target(stick, {"mounted at /media/x (sdb1)"}, {});
  CHECK_FALSE(mounted.allowed(true));
  REQUIRE(mounted.refusals.size() == 1);
  CHECK(mounted.refusals[0].find("/dev/sdb is mounted at /media/x (sdb1)") != std::string::npos);

  auto system = assess_flash_target(stick, {}, {"sdb"});
  CHECK_FALSE(system.allowed(true));
  CHECK(system.refusals[0].find("root filesystem") != std::string::npos);

  AttachedDisk held = stick;
  held.holders = {"dm-0"};
  CHECK_FALSE(assess_flash_target(held, {}, {}).allowed(true));

  AttachedDisk locked = stick;
  locked.read_only = true;
  CHECK(assess_flash_target(locked, {}, {}).refusals[0].find("write-protect") != std::string::npos);

  AttachedDisk nvme = stick;
  nvme.name = "nvme0n1";
  nvme.device_path = "/dev/nvme0n1";
  nvme.transport = "nvme";
  auto fixed = assess_flash_target(nvme, {}, {});
  CHECK(fixed.refusals.empty());
  CHECK_FALSE(fixed.allowed(false));
  CHECK(fixed.allowed(true));
  CHECK(fixed.needs_force.find("--force") != std::string::npos);

  // SD readers usually report removable=0; the bus makes them removable. Loop devices are files.
  AttachedDisk card = stick;
  card.transport = "mmc";
  CHECK(card.is_removable());
  card.transport = "loop";
  CHECK(card.is_removable());
  card.transport = "sata";
  CHECK_FALSE(card.is_removable());
  card.removable_flag = true;
  CHECK(card.is_removable());
}

TEST_CASE("flash: transport from the sysfs path", "[flash]") {
  CHECK(transport_of("sdb", "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host4/target4:0:0/4:0:0:0/block/sdb") == "usb");
  CHECK(transport_of("sda", "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda") == "sata");
  CHECK(transport_of("nvme0n1", "/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1") == "nvme");
  CHECK(transport_of("mmcblk0", "/sys/devices/platform/mmc0/block/mmcblk0") == "mmc");
  CHECK(transport_of("loop3", "/sys/devices/virtual/block/loop3") == "loop");
  CHECK(transport_of("vda", "/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda") == "virtio");
}

TEST_CASE("flash: a fake sysfs: disks, partitions, and / on LVM resolved to its disk", "[flash]") {
  test::TempDir dir;
  fs::path sys = fake_sys(dir);

  auto disks = list_attached_disks(sys);
  REQUIRE(disks.size() == 2);  // dm-0 is not a disk of its own
  CHECK(disks[0].name == "sda");
  CHECK(disks[0].model == "Samsung SSD");
  CHECK(disks[0].transport == "sata");
  CHECK(disks[0].holders == std::vector<std::string>{"dm-0"});
  CHECK(disks[1].name == "sdb");
  CHECK(disks[1].size_bytes == 62333952ull * 512);
  CHECK(disks[1].is_removable());
  CHECK(disks[1].transport == "usb");
  CHECK(disks[1].partitions == std::vector<std::string>{"sdb1"});
  CHECK(disks[1].partition_devices == std::vector<DeviceNumber>{{8, 17}});

  auto partition = resolve_block_device({8, 17}, sys);
  REQUIRE(partition);
  CHECK(partition->disk_name == "sdb");
  CHECK(partition->partition_name == "sdb1");
  CHECK_FALSE(resolve_block_device({8, 16}, sys)->partition_name);

  auto mounts = parse_mountinfo(sample_mountinfo);
  CHECK(disks_under_mount(mounts, "/", sys) == std::vector<std::string>{"sda"});
  CHECK(disks_under_mount(mounts, "/proc", sys).empty());
  auto line = describe_attached_disk(disks[1], uses_of_disk(disks[1], mounts, {}));
  CHECK(line.find("/dev/sdb") == 0);
  CHECK(line.find("usb") != std::string::npos);
  CHECK(line.find("mounted at /media/user/boot fs (sdb1)") != std::string::npos);
}

TEST_CASE("flash plan: a partition, a mounted disk and the system disk are refused, by the node's name", "[flash]") {
  test::TempDir dir;
  fs::path sys = fake_sys(dir);
  SystemDiskUse idle;
  idle.system_disks = {"sda"};

  AttachedDisk stick = check_flash_target_disk("/dev/sdb", {8, 16}, idle, false, sys);
  CHECK(stick.name == "sdb");
  CHECK(stick.transport == "usb");

  CHECK_THROWS_WITH(check_flash_target_disk("/dev/sdb1", {8, 17}, idle, false, sys),
                    "/dev/sdb1 is partition sdb1 of /dev/sdb; flash the whole disk (/dev/sdb)");
  CHECK_THROWS_WITH(check_flash_target_disk("/dev/sdq", {8, 99}, idle, false, sys),
                    Catch::Contains("not found in /sys/dev/block"));

  SystemDiskUse mounted = idle;
  mounted.mounts = parse_mountinfo("40 27 8:17 / /media/user/bootfs rw - vfat /dev/sdb1 rw\n");
  CHECK_THROWS_WITH(check_flash_target_disk("/dev/sdb", {8, 16}, mounted, true, sys),
                    Catch::StartsWith("refusing to write /dev/sdb:\n  ") &&
                        Catch::Contains("mounted at /media/user/bootfs (sdb1)"));
  CHECK_THROWS_WITH(check_flash_target_disk("/dev/sda", {8, 0}, idle, true, sys), Catch::Contains("root filesystem"));
}

TEST_CASE("flash plan: --list offers removable disks, every disk with --force, marks the one holding /", "[flash]") {
  test::TempDir dir;
  auto disks = list_attached_disks(fake_sys(dir));
  REQUIRE(disks.size() == 2);
  SystemDiskUse use;
  use.system_disks = {"sda"};
  auto removable = flash_candidate_lines(disks, use, false);
  REQUIRE(removable.size() == 1);
  CHECK(removable[0].starts_with("/dev/sdb"));
  auto all = flash_candidate_lines(disks, use, true);
  REQUIRE(all.size() == 2);
  CHECK(all[0].starts_with("/dev/sda"));
  CHECK(all[0].ends_with(", holds /"));
  CHECK_FALSE(all[1].ends_with(", holds /"));
}
