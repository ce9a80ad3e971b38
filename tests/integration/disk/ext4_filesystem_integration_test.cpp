// A Raspberry Pi OS-shaped disk image (MBR, FAT at 8 MiB, ext4 after it) made with the real tools,
// edited with Ext4Filesystem, then judged by e2fsck and read back with debugfs — tools that know
// nothing about our code. Then partition 2 is enlarged with sfdisk and the filesystem grown.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "disk/ext4_filesystem.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using aggrik8s::Ext4Access;
using aggrik8s::Ext4Filesystem;
using aggrik8s::Ext4FileType;
using aggrik8s::test::random_bytes;
using aggrik8s::test::run;
using aggrik8s::test::TempDir;

namespace {

constexpr std::uint64_t sector = 512;
constexpr std::uint64_t boot_start = 16384;       // 8 MiB
constexpr std::uint64_t boot_sectors = 131072;    // 64 MiB
constexpr std::uint64_t root_start = boot_start + boot_sectors;
constexpr std::uint64_t root_sectors = 163840;    // 80 MiB
constexpr std::uint64_t root_offset = root_start * sector;
constexpr std::uint64_t root_length = root_sectors * sector;

std::string shell_quoted(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

std::string device(const std::filesystem::path& image) {
  return shell_quoted(image.string() + "?offset=" + std::to_string(root_offset));
}

aggrik8s::test::CommandResult must_run(const std::string& command) {
  auto result = run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result;
}

std::string debugfs(const std::filesystem::path& image, const std::string& request) {
  return must_run("debugfs -R " + shell_quoted(request) + " " + device(image)).output;
}

// An 8-byte marker written outside the filesystem (in the boot partition, after the root partition),
// and read back to prove that no ext4 operation touched those bytes.
void write_marker(const std::filesystem::path& image, std::uint64_t offset, const std::string& marker) {
  must_run("printf " + marker + " | dd of=" + shell_quoted(image) + " bs=1 seek=" + std::to_string(offset) +
           " conv=notrunc status=none");
}
std::string read_marker(const std::filesystem::path& image, std::uint64_t offset) {
  return must_run("dd if=" + shell_quoted(image) + " bs=1 skip=" + std::to_string(offset) + " count=8 status=none")
      .output;
}

void write_partition_table(const std::filesystem::path& image, std::uint64_t root_size_sectors) {
  must_run("printf 'label: dos\\nlabel-id: 0x12345678\\nstart=" + std::to_string(boot_start) +
           ", size=" + std::to_string(boot_sectors) + ", type=c\\nstart=" + std::to_string(root_start) +
           ", size=" + std::to_string(root_size_sectors) + ", type=83\\n' | sfdisk -q " + shell_quoted(image));
}

}  // namespace

TEST_CASE("ext4 in partition 2 of a disk image: edited rootless, clean for e2fsck, grown in place",
          "[ext4][integration]") {
  TempDir dir;
  auto image = dir / "pi.img";
  must_run("truncate -s 200M " + shell_quoted(image));
  write_partition_table(image, root_sectors);

  // The base tree, as a distribution image would have it.
  auto tree = dir / "tree";
  aggrik8s::test::write_file(tree / "etc/fstab", "proc /proc proc defaults 0 0\n");
  aggrik8s::test::write_file(tree / "etc/hostname", "raspberrypi\n");
  aggrik8s::test::write_file(tree / "usr/lib/os-release", "ID=debian\n");
  std::filesystem::create_symlink("../usr/lib/os-release", tree / "etc/os-release");
  std::filesystem::create_directories(tree / "etc/systemd/system");
  must_run("E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -L rootfs -E offset=" + std::to_string(root_offset) +
           ",root_owner=0:0 -d " + shell_quoted(tree) + " " + shell_quoted(image) + " " + std::to_string(root_length / 1024) + "k");
  // FAT partition marker: the ext4 code must never write outside its partition.
  write_marker(image, boot_start * sector + 4096, "BOOTMARK");
  REQUIRE(aggrik8s::check_ext4_filesystem(image, root_offset).clean);
  const auto image_size = std::filesystem::file_size(image);

  const std::string unit = "[Unit]\nDescription=Rancher Kubernetes Engine v2 (server)\n[Service]\nExecStart=/usr/local/bin/rke2 server\n";
  const std::string config = "token: not-a-real-token\nwrite-kubeconfig-mode: \"0644\"\n";
  const std::string rke2_binary = random_bytes(3 << 20, 1);
  auto archive = dir / "rke2-images.linux-arm64.tar.zst";
  {
    std::ofstream out(archive, std::ios::binary);
    out << random_bytes(30 << 20, 2);
  }

  {
    auto fs = Ext4Filesystem::open(image, root_offset, root_length, Ext4Access::read_write, 1700000500);
    fs.create_directories("/usr/local/bin", {0755, 0, 0, {}});
    fs.write_file("/usr/local/bin/rke2", rke2_binary, {0755, 0, 0, {}});
    fs.create_directories("/usr/local/lib/systemd/system");
    fs.write_file("/usr/local/lib/systemd/system/rke2-server.service", unit, {0644, 0, 0, {}});
    fs.create_directories("/etc/systemd/system/multi-user.target.wants");
    fs.create_symlink("/etc/systemd/system/multi-user.target.wants/rke2-server.service",
                      "/usr/local/lib/systemd/system/rke2-server.service");
    fs.create_directories("/etc/rancher/rke2", {0755, 0, 0, {}});
    fs.write_file("/etc/rancher/rke2/config.yaml", config, {0600, 0, 0, {}});
    fs.create_directories("/var/lib/rancher/rke2/agent/images");
    auto started = std::chrono::steady_clock::now();
    fs.copy_file_from_host(archive, "/var/lib/rancher/rke2/agent/images/rke2-images.linux-arm64.tar.zst", {0644, 0, 0, {}});
    auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    CHECK(elapsed < 5.0);  // 30 MiB through large extent writes, not block-by-block
    fs.write_file("/etc/hostname", std::string("node-1\n"), {0644, 0, 0, {}});  // replaces the base file
    // Reaches through the relative symlink /etc/os-release -> ../usr/lib/os-release.
    CHECK(fs.read_file("/etc/os-release") == "ID=debian\n");
    fs.close();
  }

  auto check = aggrik8s::check_ext4_filesystem(image, root_offset);
  INFO(check.report);
  REQUIRE(check.clean);
  CHECK(read_marker(image, boot_start * sector + 4096) == "BOOTMARK");

  // Read back with debugfs, which opens "IMAGE?offset=N" (it has no -o offset option; the '?' io
  // options are how every e2fsprogs tool reaches a partition inside a disk image).
  auto out = dir / "out";
  std::filesystem::create_directories(out);
  debugfs(image, "dump /usr/local/bin/rke2 " + (out / "rke2").string());
  CHECK(aggrik8s::test::read_file(out / "rke2") == rke2_binary);
  debugfs(image, "dump /var/lib/rancher/rke2/agent/images/rke2-images.linux-arm64.tar.zst " + (out / "images").string());
  CHECK(aggrik8s::test::read_file(out / "images") == aggrik8s::test::read_file(archive));
  debugfs(image, "dump /etc/rancher/rke2/config.yaml " + (out / "config").string());
  CHECK(aggrik8s::test::read_file(out / "config") == config);
  debugfs(image, "dump /etc/hostname " + (out / "hostname").string());
  CHECK(aggrik8s::test::read_file(out / "hostname") == "node-1\n");

  auto rke2_stat = debugfs(image, "stat /usr/local/bin/rke2");
  CHECK(rke2_stat.find("Mode:  0755") != std::string::npos);
  CHECK(rke2_stat.find("User:     0   Group:     0") != std::string::npos);
  CHECK(rke2_stat.find("EXTENTS") != std::string::npos);
  auto config_stat = debugfs(image, "stat /etc/rancher/rke2/config.yaml");
  CHECK(config_stat.find("Mode:  0600") != std::string::npos);
  CHECK(config_stat.find("User:     0   Group:     0") != std::string::npos);
  CHECK(config_stat.find("mtime: 0x6553f2f4") != std::string::npos);  // 1700000500
  auto link_stat = debugfs(image, "stat /etc/systemd/system/multi-user.target.wants/rke2-server.service");
  CHECK(link_stat.find("Type: symlink") != std::string::npos);
  CHECK(link_stat.find("/usr/local/lib/systemd/system/rke2-server.service") != std::string::npos);
  CHECK(debugfs(image, "ls -l /etc/rancher/rke2").find("config.yaml") != std::string::npos);

  // The archive is one file of 30 MiB in few extents (contiguous allocation).
  auto extents = debugfs(image, "ex /var/lib/rancher/rke2/agent/images/rke2-images.linux-arm64.tar.zst");
  INFO(extents);
  CHECK(std::count(extents.begin(), extents.end(), '\n') < 20);

  // Grow partition 2 to the end of the image, then the filesystem to fill it.
  const std::uint64_t new_root_sectors = 409600 - root_start - 2048;
  write_partition_table(image, new_root_sectors);
  const std::uint64_t tail_marker_at = (root_start + new_root_sectors) * sector + 512;
  write_marker(image, tail_marker_at, "TAILMARK");
  aggrik8s::grow_ext4_filesystem(image, root_offset, new_root_sectors * sector, 1700000600);
  // resize2fs run directly on "IMAGE?offset=N" truncates the image to the filesystem size; this is
  // what the scratch-file detour prevents.
  CHECK(std::filesystem::file_size(image) == image_size);
  CHECK(read_marker(image, tail_marker_at) == "TAILMARK");
  CHECK_FALSE(std::filesystem::exists(dir / ".pi.img.ext4-resize"));
  auto grown = aggrik8s::check_ext4_filesystem(image, root_offset);
  INFO(grown.report);
  REQUIRE(grown.clean);
  auto header = must_run("TZ=UTC dumpe2fs -h " + device(image) + " 2>/dev/null").output;
  auto block_count_line = header.substr(header.find("Block count:"));
  auto block_size_line = header.substr(header.find("Block size:"));
  auto blocks = std::stoull(block_count_line.substr(block_count_line.find(':') + 1));
  auto block_size = std::stoull(block_size_line.substr(block_size_line.find(':') + 1));
  CHECK(blocks * block_size > root_length);
  CHECK(blocks * block_size <= new_root_sectors * sector);
  CHECK(header.find("Last checked:             Tue Nov 14 22:23:20 2023") != std::string::npos);  // E2FSCK_TIME
  CHECK(read_marker(image, boot_start * sector + 4096) == "BOOTMARK");

  {
    auto fs = Ext4Filesystem::open(image, root_offset, new_root_sectors * sector, Ext4Access::read_write);
    CHECK(fs.read_file("/etc/rancher/rke2/config.yaml") == config);
    CHECK(fs.status("/usr/local/bin/rke2").type == Ext4FileType::regular);
    // The new space is usable: more than the old partition could have held.
    fs.write_file("/var/lib/big", random_bytes(60 << 20, 3), {});
  }
  REQUIRE(aggrik8s::check_ext4_filesystem(image, root_offset).clean);

  // Growing to the current size is a no-op; shrinking the region below the filesystem is refused.
  CHECK_NOTHROW(aggrik8s::grow_ext4_filesystem(image, root_offset, blocks * block_size));
  CHECK_THROWS_WITH(aggrik8s::grow_ext4_filesystem(image, root_offset, root_length),
                    Catch::Contains("larger than its partition"));
  CHECK_THROWS_WITH(aggrik8s::grow_ext4_filesystem(image, root_offset, 1ULL << 30), Catch::Contains("beyond"));
}

// Growing by more than the partition's offset (the usual case: a preload of a GiB into a 2 GiB base
// image) is done in place, with the image cut to the new filesystem size while resize2fs runs; what
// lies after the partition must survive, and the grown filesystem must be as good as one grown in a
// scratch file (the case above, which grows by less than the offset).
TEST_CASE("ext4 in partition 2 of a disk image: grown by more than its offset, without a scratch copy",
          "[ext4][integration]") {
  TempDir dir;
  auto image = dir / "pi.img";
  must_run("truncate -s 400M " + shell_quoted(image));
  write_partition_table(image, root_sectors);
  auto tree = dir / "tree";
  aggrik8s::test::write_file(tree / "etc/hostname", "raspberrypi\n");
  aggrik8s::test::write_file(tree / "usr/share/filler", random_bytes(40 << 20, 4));
  must_run("E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -L rootfs -E offset=" + std::to_string(root_offset) +
           ",root_owner=0:0 -d " + shell_quoted(tree) + " " + shell_quoted(image) + " " + std::to_string(root_length / 1024) + "k");
  write_marker(image, boot_start * sector + 4096, "BOOTMARK");
  const auto image_size = std::filesystem::file_size(image);

  const std::uint64_t new_root_sectors = image_size / sector - root_start - 2048;
  REQUIRE((new_root_sectors - root_sectors) * sector > root_offset);
  write_partition_table(image, new_root_sectors);
  // After the partition, like a GPT's backup header.
  const std::uint64_t tail_marker_at = (root_start + new_root_sectors) * sector + 1024;
  write_marker(image, tail_marker_at, "TAILMARK");
  aggrik8s::grow_ext4_filesystem(image, root_offset, new_root_sectors * sector, 1700000600);

  CHECK(std::filesystem::file_size(image) == image_size);
  CHECK(read_marker(image, tail_marker_at) == "TAILMARK");
  CHECK(read_marker(image, boot_start * sector + 4096) == "BOOTMARK");
  CHECK_FALSE(std::filesystem::exists(dir / ".pi.img.ext4-resize"));
  auto grown = aggrik8s::check_ext4_filesystem(image, root_offset);
  INFO(grown.report);
  REQUIRE(grown.clean);
  {
    auto fs = Ext4Filesystem::open(image, root_offset, new_root_sectors * sector, Ext4Access::read_write);
    auto usage = fs.space_usage();
    CHECK(usage.total_bytes() > (new_root_sectors - 8192) * sector);
    CHECK(usage.total_bytes() <= new_root_sectors * sector);
    CHECK(fs.read_file("/usr/share/filler") == random_bytes(40 << 20, 4));
    // The new space, including the end of the partition that lay past the cut, is usable.
    fs.write_file("/big", random_bytes(static_cast<std::size_t>(usage.free_bytes() - (16 << 20)), 5), {});
  }
  auto written = aggrik8s::check_ext4_filesystem(image, root_offset);
  INFO(written.report);
  REQUIRE(written.clean);
  CHECK(read_marker(image, tail_marker_at) == "TAILMARK");
}
