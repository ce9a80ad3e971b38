// Partition tables made by sfdisk, read and changed by our code, checked by sfdisk and sgdisk.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <regex>

#include "disk/block_device.hpp"
#include "disk/partition_table.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using aggrik8s::FileBlockDevice;
using aggrik8s::PartitionTableKind;
using aggrik8s::test::run;
using aggrik8s::test::TempDir;
using Catch::Matchers::Contains;

namespace {

std::string quoted(const std::filesystem::path& path) { return "'" + path.string() + "'"; }

std::string require_ok(const aggrik8s::test::CommandResult& result, const std::string& what) {
  INFO(what << " output:\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

// "img2 : start=      147456, size=      131072, type=83" -> {147456, 131072}
std::pair<std::uint64_t, std::uint64_t> sfdisk_dump_partition(const std::string& dump, int index) {
  std::regex line("img" + std::to_string(index) + R"( : start=\s*(\d+), size=\s*(\d+))");
  std::smatch match;
  REQUIRE(std::regex_search(dump, match, line));
  return {std::stoull(match[1].str()), std::stoull(match[2].str())};
}

std::uint64_t allocated_bytes(const std::filesystem::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return static_cast<std::uint64_t>(info.st_blocks) * 512;
}

}  // namespace

TEST_CASE("partition integration: MBR from sfdisk: read, change disk id, grow, verify with sfdisk", "[partition][integration]") {
  TempDir dir;
  auto image = dir / "img";
  require_ok(run("truncate -s 100M " + quoted(image)), "truncate");
  require_ok(run("printf 'label: dos\\nlabel-id: 0x1234abcd\\nstart=16384, size=131072, type=c, bootable\\n"
                 "start=147456, size=32768, type=83\\n' | sfdisk --no-reread --no-tell-kernel " + quoted(image)),
             "sfdisk");
  {
    FileBlockDevice disk(image, FileBlockDevice::Access::read_write);
    auto table = aggrik8s::read_partition_table(disk);
    CHECK(table.kind() == PartitionTableKind::mbr);
    CHECK(table.disk_identifier() == "1234abcd");
    CHECK(table.partuuid(1) == "1234abcd-01");
    CHECK(table.partuuid(2) == "1234abcd-02");
    CHECK(table.partition(1).mbr_type == 0x0c);
    CHECK(table.partition(1).bootable);
    CHECK(table.partition(2).mbr_type == 0x83);
    CHECK(table.partition(2).first_lba == 147456);
    CHECK(table.partition(2).sector_count == 32768);
    CHECK_THROWS_WITH(table.resize_partition(1, 131073), Contains("overlap partition 2"));
    table.set_disk_identifier("cafef00d");
    table.grow_partition_to_fill(2);
    aggrik8s::write_partition_table(disk, table);
  }
  std::string dump = require_ok(run("cd " + quoted(dir.path()) + " && sfdisk -d img"), "sfdisk -d");
  CHECK_THAT(dump, Contains("label-id: 0xcafef00d"));
  CHECK(sfdisk_dump_partition(dump, 1) == std::make_pair(std::uint64_t{16384}, std::uint64_t{131072}));
  CHECK(sfdisk_dump_partition(dump, 2) == std::make_pair(std::uint64_t{147456}, std::uint64_t{204800 - 147456}));
  CHECK_THAT(dump, Contains("type=c, bootable"));
  require_ok(run("sfdisk --verify " + quoted(image)), "sfdisk --verify");
  CHECK_THAT(require_ok(run("sfdisk --json " + quoted(image)), "sfdisk --json"), Contains("\"id\": \"0xcafef00d\""));

  // The image grows (as a builder does to make room for the root filesystem); partition 2 follows.
  require_ok(run("truncate -s 200M " + quoted(image)), "truncate");
  {
    FileBlockDevice disk(image, FileBlockDevice::Access::read_write);
    auto table = aggrik8s::read_partition_table(disk);
    table.grow_partition_to_fill(2);
    aggrik8s::write_partition_table(disk, table);
  }
  dump = require_ok(run("cd " + quoted(dir.path()) + " && sfdisk -d img"), "sfdisk -d");
  CHECK(sfdisk_dump_partition(dump, 2) == std::make_pair(std::uint64_t{147456}, std::uint64_t{409600 - 147456}));
  require_ok(run("sfdisk --verify " + quoted(image)), "sfdisk --verify");
}

TEST_CASE("partition integration: GPT from sfdisk: read, change GUID, grow image and partition, sgdisk -v clean",
          "[partition][integration]") {
  TempDir dir;
  auto image = dir / "img";
  require_ok(run("truncate -s 64M " + quoted(image)), "truncate");
  require_ok(run("printf 'label: gpt\\nlabel-id: 01234567-89AB-CDEF-0123-456789ABCDEF\\n"
                 "start=2048, size=32768, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=AAAAAAAA-1111-2222-3333-444444444444, name=bootfs\\n"
                 "start=34816, size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=BBBBBBBB-1111-2222-3333-444444444444\\n'"
                 " | sfdisk --no-reread --no-tell-kernel " + quoted(image)),
             "sfdisk");
  {
    FileBlockDevice disk(image, FileBlockDevice::Access::read_only);
    auto table = aggrik8s::read_partition_table(disk);
    CHECK(table.kind() == PartitionTableKind::gpt);
    CHECK(table.disk_identifier() == "01234567-89ab-cdef-0123-456789abcdef");
    CHECK(table.partuuid(1) == "aaaaaaaa-1111-2222-3333-444444444444");
    CHECK(table.partuuid(2) == "bbbbbbbb-1111-2222-3333-444444444444");
    CHECK(table.partition(1).gpt_name == "bootfs");
    CHECK(table.partition(1).gpt_type.to_string() == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    CHECK(table.last_usable_lba() == 131038);
  }
  require_ok(run("truncate -s 128M " + quoted(image)), "truncate");
  {
    FileBlockDevice disk(image, FileBlockDevice::Access::read_write);
    auto table = aggrik8s::read_partition_table(disk);
    table.set_disk_size(disk.size());
    table.set_disk_identifier("fedcba98-7654-3210-fedc-ba9876543210");
    table.grow_partition_to_fill(2);
    aggrik8s::write_partition_table(disk, table);
  }
  auto verify = run("sgdisk -v " + quoted(image));
  INFO(verify.output);
  CHECK(verify.exit_code == 0);
  CHECK_THAT(verify.output, Contains("No problems found"));
  require_ok(run("sfdisk --verify " + quoted(image)), "sfdisk --verify");
  std::string dump = require_ok(run("cd " + quoted(dir.path()) + " && sfdisk -d img"), "sfdisk -d");
  CHECK_THAT(dump, Contains("label-id: FEDCBA98-7654-3210-FEDC-BA9876543210"));
  CHECK_THAT(dump, Contains("last-lba: 262110"));
  CHECK(sfdisk_dump_partition(dump, 2) == std::make_pair(std::uint64_t{34816}, std::uint64_t{262111 - 34816}));
  CHECK_THAT(dump, Contains("uuid=BBBBBBBB-1111-2222-3333-444444444444"));
}

TEST_CASE("partition integration: damaged images are refused with the image named", "[partition][integration]") {
  TempDir dir;
  auto image = dir / "img";
  require_ok(run("truncate -s 64M " + quoted(image)), "truncate");
  {
    FileBlockDevice disk(image, FileBlockDevice::Access::read_only);
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk), Contains(image.string() + ": no partition table"));
  }
  require_ok(run("printf 'label: dos\\nstart=2048, size=100000, type=83\\n' | sfdisk --no-reread --no-tell-kernel " +
                 quoted(image)),
             "sfdisk");
  require_ok(run("truncate -s 32M " + quoted(image)), "truncate");  // partition now runs past the end
  FileBlockDevice disk(image, FileBlockDevice::Access::read_only);
  CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                    Contains(image.string() + ": partition 1: ends at sector 102048") &&
                        Contains("past the last usable sector 65535"));
  CHECK_THROWS_AS(aggrik8s::FileBlockDevice(dir / "missing.img", FileBlockDevice::Access::read_only), aggrik8s::Error);
}

TEST_CASE("partition image file: FileBlockDevice keeps holes when writing zeros", "[partition][integration]") {
  TempDir dir;
  auto image = dir / "sparse.img";
  require_ok(run("truncate -s 64M " + quoted(image)), "truncate");
  FileBlockDevice disk(image, FileBlockDevice::Access::read_write);
  std::vector<std::uint8_t> zeros(8 * 1024 * 1024, 0);
  disk.write_at(4096, zeros);
  disk.flush();
  CHECK(allocated_bytes(image) == 0);
  std::vector<std::uint8_t> data(10000, 0);
  data[0] = 1;
  data[9999] = 2;
  disk.write_at(1 << 20, data);
  disk.flush();
  CHECK(allocated_bytes(image) <= 16384);
  std::vector<std::uint8_t> back(10000);
  disk.read_at(1 << 20, back);
  CHECK(back == data);
  // zeros over existing data are written, not skipped
  std::vector<std::uint8_t> clear(10000, 0);
  disk.write_at(1 << 20, clear);
  disk.read_at(1 << 20, back);
  CHECK(back == clear);
  CHECK_THROWS_WITH(disk.write_at(64 * 1024 * 1024 - 10, clear), Contains("goes past the end of the device"));
  disk.resize(128 * 1024 * 1024);
  CHECK(disk.size() == 128 * 1024 * 1024);
  CHECK(std::filesystem::file_size(image) == 128 * 1024 * 1024);
}
