#include "disk/partition_table.hpp"

#include <catch2/catch.hpp>

#include "disk/block_device.hpp"
#include "core/endian.hpp"
#include "core/error.hpp"

using aggrik8s::Error;
using aggrik8s::Guid;
using aggrik8s::MemoryBlockDevice;
using aggrik8s::PartitionEntry;
using aggrik8s::PartitionTable;
using aggrik8s::PartitionTableKind;
using Catch::Matchers::Contains;

namespace {

constexpr std::uint64_t mib = 1024 * 1024;
constexpr std::uint64_t sectors_per_mib = mib / 512;

PartitionEntry mbr_entry(std::uint32_t index, std::uint8_t type, std::uint64_t first, std::uint64_t count,
                         bool bootable = false) {
  PartitionEntry entry;
  entry.index = index;
  entry.mbr_type = type;
  entry.first_lba = first;
  entry.sector_count = count;
  entry.bootable = bootable;
  return entry;
}

// The layout of a Raspberry Pi OS image: FAT32 at 8 MiB, ext4 right after it.
PartitionTable pi_like_mbr(std::uint64_t disk_bytes = 64 * mib) {
  auto table = PartitionTable::new_mbr(disk_bytes, 0xa1b2c3d4, "pi.img");
  table.add_partition(mbr_entry(1, 0x0c, 8 * sectors_per_mib, 16 * sectors_per_mib, true));
  table.add_partition(mbr_entry(2, 0x83, 24 * sectors_per_mib, 16 * sectors_per_mib));
  return table;
}

void store_raw_mbr_entry(std::vector<std::uint8_t>& disk, int slot, std::uint8_t status, std::uint8_t type,
                         std::uint32_t first, std::uint32_t count) {
  std::size_t at = 446 + static_cast<std::size_t>(slot) * 16;
  disk[at] = status;
  disk[at + 4] = type;
  aggrik8s::store_le32(disk, at + 8, first);
  aggrik8s::store_le32(disk, at + 12, count);
}

const Guid efi_system_type = *Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
const Guid linux_data_type = *Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de4");

PartitionTable two_partition_gpt(std::uint64_t disk_bytes) {
  auto table = PartitionTable::new_gpt(disk_bytes, *Guid::parse("11111111-2222-3333-4444-555555555555"), "gpt.img");
  PartitionEntry boot;
  boot.index = 1;
  boot.gpt_type = efi_system_type;
  boot.gpt_unique = *Guid::parse("AAAAAAAA-0000-0000-0000-000000000001");
  boot.gpt_name = "bootfs";
  boot.first_lba = 2048;
  boot.sector_count = 8 * sectors_per_mib;
  PartitionEntry root;
  root.index = 2;
  root.gpt_type = linux_data_type;
  root.gpt_unique = *Guid::parse("bbbbbbbb-0000-0000-0000-000000000002");
  root.gpt_name = "rootfs";
  root.first_lba = 2048 + 8 * sectors_per_mib;
  root.sector_count = 8 * sectors_per_mib;
  table.add_partition(boot);
  table.add_partition(root);
  return table;
}

}  // namespace

TEST_CASE("partition table: crc32 matches the IEEE check value", "[partition]") {
  std::string text = "123456789";
  CHECK(aggrik8s::crc32(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()),
                                                      text.size())) == 0xcbf43926U);
}

TEST_CASE("partition table: GUID text form is mixed-endian and lowercase", "[partition]") {
  auto guid = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
  REQUIRE(guid);
  CHECK(guid->bytes[0] == 0x28);
  CHECK(guid->bytes[3] == 0xc1);
  CHECK(guid->bytes[4] == 0x1f);
  CHECK(guid->bytes[8] == 0xba);
  CHECK(guid->to_string() == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
  CHECK_FALSE(Guid::parse("c12a7328f81f11d2ba4b00a0c93ec93b"));
  CHECK_FALSE(Guid::parse("g12a7328-f81f-11d2-ba4b-00a0c93ec93b"));
  auto random = Guid::random();
  CHECK(random.to_string()[14] == '4');
  CHECK(Guid::parse(random.to_string()) == random);
}

TEST_CASE("partition table: MBR round trip keeps ids, types, flags and boot code", "[partition]") {
  MemoryBlockDevice disk(64 * mib, "pi.img");
  disk.bytes()[0] = 0xfa;  // boot code must survive a rewrite
  auto table = pi_like_mbr();
  // new_mbr starts with zero boot code; write once, put boot code in, re-read, and write again.
  aggrik8s::write_partition_table(disk, table);
  disk.bytes()[0] = 0xfa;
  auto read = aggrik8s::read_partition_table(disk);
  aggrik8s::write_partition_table(disk, read);
  CHECK(disk.bytes()[0] == 0xfa);
  CHECK(disk.bytes()[510] == 0x55);
  CHECK(disk.bytes()[511] == 0xaa);
  CHECK(aggrik8s::load_le32(disk.bytes(), 440) == 0xa1b2c3d4);

  read = aggrik8s::read_partition_table(disk);
  CHECK(read.kind() == PartitionTableKind::mbr);
  CHECK(read.disk_identifier() == "a1b2c3d4");
  REQUIRE(read.partitions().size() == 2);
  CHECK(read.partition(1).mbr_type == 0x0c);
  CHECK(read.partition(1).bootable);
  CHECK(read.partition(1).first_lba == 8 * sectors_per_mib);
  CHECK(read.partition(1).byte_offset() == 8 * mib);
  CHECK(read.partition(2).mbr_type == 0x83);
  CHECK_FALSE(read.partition(2).bootable);
  CHECK(read.partuuid(1) == "a1b2c3d4-01");
  CHECK(read.partuuid(2) == "a1b2c3d4-02");
  CHECK_THROWS_WITH(read.partition(3), Contains("pi.img: no partition 3") && Contains("present: 1, 2"));
}

TEST_CASE("partition table: MBR disk id change and partition growth are written back", "[partition]") {
  MemoryBlockDevice disk(64 * mib, "pi.img");
  aggrik8s::write_partition_table(disk, pi_like_mbr());
  auto table = aggrik8s::read_partition_table(disk);
  table.set_disk_identifier("0xDEADBEEF");
  table.resize_partition(2, 20 * sectors_per_mib);
  aggrik8s::write_partition_table(disk, table);

  auto read = aggrik8s::read_partition_table(disk);
  CHECK(read.disk_identifier() == "deadbeef");
  CHECK(read.partuuid(2) == "deadbeef-02");
  CHECK(read.partition(2).sector_count == 20 * sectors_per_mib);

  read.grow_partition_to_fill(2);
  CHECK(read.partition(2).end_lba() == 64 * sectors_per_mib);
  aggrik8s::write_partition_table(disk, read);
  CHECK(aggrik8s::read_partition_table(disk).partition(2).end_lba() == 64 * sectors_per_mib);

  CHECK_THROWS_WITH(read.set_disk_identifier("xyz"), Contains("'xyz' is not 1 to 8 hex digits"));
}

TEST_CASE("partition table: growing into a neighbour or past the disk end is refused", "[partition]") {
  auto table = pi_like_mbr();
  CHECK_THROWS_WITH(table.resize_partition(1, 17 * sectors_per_mib),
                    Contains("pi.img: partition 1") && Contains("overlap partition 2") &&
                        Contains("starts at sector 49152"));
  CHECK_THROWS_WITH(table.resize_partition(2, 41 * sectors_per_mib),
                    Contains("pi.img: partition 2") && Contains("would end at sector 133120") &&
                        Contains("past the last usable sector 131071"));
  CHECK_THROWS_WITH(table.resize_partition(2, 0), Contains("0 sectors"));
  // Nothing changed after the refusals.
  CHECK(table.partition(1).sector_count == 16 * sectors_per_mib);
  CHECK(table.partition(2).sector_count == 16 * sectors_per_mib);
  // growing the first partition to fill stops at the second
  table.grow_partition_to_fill(1);
  CHECK(table.partition(1).end_lba() == table.partition(2).first_lba);
}

TEST_CASE("partition table: the table must match the device size when written", "[partition]") {
  MemoryBlockDevice disk(64 * mib, "pi.img");
  aggrik8s::write_partition_table(disk, pi_like_mbr());
  disk.resize(128 * mib);
  auto table = aggrik8s::read_partition_table(disk);
  CHECK(table.disk_sectors() == 128 * sectors_per_mib);
  table.grow_partition_to_fill(2);
  aggrik8s::write_partition_table(disk, table);
  CHECK(aggrik8s::read_partition_table(disk).partition(2).end_lba() == 128 * sectors_per_mib);

  disk.resize(256 * mib);
  CHECK_THROWS_WITH(aggrik8s::write_partition_table(disk, table), Contains("call set_disk_size"));
  CHECK_THROWS_WITH(table.set_disk_size(100 * mib), Contains("partition 2: ends at sector 262144"));
  CHECK_THROWS_WITH(table.set_disk_size(1000), Contains("not a multiple of 512"));
}

TEST_CASE("partition table: corrupt MBRs are rejected with the value and the limit", "[partition]") {
  SECTION("missing boot signature") {
    MemoryBlockDevice disk(1 * mib, "blank.img");
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                      Contains("blank.img: no partition table") && Contains("0000, expected 55aa"));
  }
  SECTION("tiny device") {
    MemoryBlockDevice disk(100, "tiny.img");
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk), Contains("tiny.img: 100 bytes is too small"));
  }
  std::vector<std::uint8_t> bytes(64 * mib, 0);
  bytes[510] = 0x55;
  bytes[511] = 0xaa;
  SECTION("partition past the end of the disk") {
    store_raw_mbr_entry(bytes, 0, 0x80, 0x0c, 8192, 16384);
    store_raw_mbr_entry(bytes, 1, 0x00, 0x83, 24576, 200000);
    MemoryBlockDevice disk(std::move(bytes), "short.img");
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                      Contains("short.img: partition 2: ends at sector 224576") &&
                          Contains("past the last usable sector 131071") && Contains("131072 sectors"));
  }
  SECTION("overlapping partitions") {
    store_raw_mbr_entry(bytes, 0, 0x00, 0x0c, 8192, 20000);
    store_raw_mbr_entry(bytes, 1, 0x00, 0x83, 24576, 1000);
    MemoryBlockDevice disk(std::move(bytes), "overlap.img");
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                      Contains("overlap.img: partition 1: sectors 8192..28191 overlap partition 2") &&
                          Contains("24576..25575"));
  }
  SECTION("partition starting in the MBR sector") {
    store_raw_mbr_entry(bytes, 0, 0x00, 0x0c, 0, 20000);
    MemoryBlockDevice disk(std::move(bytes), "zero.img");
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                      Contains("zero.img: partition 1: starts at sector 0, before the first usable sector 1"));
  }
  SECTION("invalid status byte (a FAT boot sector, not an MBR)") {
    store_raw_mbr_entry(bytes, 2, 0x12, 0x83, 2048, 1000);
    MemoryBlockDevice disk(std::move(bytes), "fat.img");
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                      Contains("fat.img: partition 3: status byte 0x12 is neither 0x00 nor 0x80"));
  }
  SECTION("empty entries are skipped") {
    store_raw_mbr_entry(bytes, 3, 0x00, 0x83, 2048, 1000);
    MemoryBlockDevice disk(std::move(bytes), "sparse.img");
    auto table = aggrik8s::read_partition_table(disk);
    REQUIRE(table.partitions().size() == 1);
    CHECK(table.partitions()[0].index == 4);
  }
}

TEST_CASE("partition table: GPT round trip with both headers and CRCs", "[partition]") {
  MemoryBlockDevice disk(64 * mib, "gpt.img");
  aggrik8s::write_partition_table(disk, two_partition_gpt(64 * mib));
  const auto& bytes = disk.bytes();
  // protective MBR
  CHECK(bytes[446 + 4] == 0xee);
  CHECK(aggrik8s::load_le32(bytes, 446 + 12) == 64 * sectors_per_mib - 1);
  // primary and backup header signatures
  CHECK(std::string(bytes.begin() + 512, bytes.begin() + 520) == "EFI PART");
  const std::size_t backup = (64 * mib) - 512;
  CHECK(std::string(bytes.begin() + static_cast<std::ptrdiff_t>(backup),
                    bytes.begin() + static_cast<std::ptrdiff_t>(backup + 8)) == "EFI PART");
  CHECK(aggrik8s::load_le64(bytes, backup + 24) == 64 * sectors_per_mib - 1);
  CHECK(aggrik8s::load_le64(bytes, backup + 32) == 1);
  CHECK(aggrik8s::load_le64(bytes, backup + 72) == 64 * sectors_per_mib - 33);

  auto table = aggrik8s::read_partition_table(disk);
  CHECK(table.kind() == PartitionTableKind::gpt);
  CHECK(table.disk_identifier() == "11111111-2222-3333-4444-555555555555");
  CHECK(table.first_usable_lba() == 34);
  CHECK(table.last_usable_lba() == 64 * sectors_per_mib - 34);
  REQUIRE(table.partitions().size() == 2);
  CHECK(table.partition(1).gpt_type == efi_system_type);
  CHECK(table.partition(1).gpt_name == "bootfs");
  CHECK(table.partuuid(1) == "aaaaaaaa-0000-0000-0000-000000000001");
  CHECK(table.partition(2).gpt_type == linux_data_type);
  CHECK(table.partition(2).first_lba == 2048 + 8 * sectors_per_mib);
  CHECK(table.partition(2).sector_count == 8 * sectors_per_mib);
}

TEST_CASE("partition table: GPT survives image growth (backup moves to the new end)", "[partition]") {
  MemoryBlockDevice disk(64 * mib, "gpt.img");
  aggrik8s::write_partition_table(disk, two_partition_gpt(64 * mib));
  disk.resize(96 * mib);
  // The backup header is no longer at the end; that is what a grown image looks like and is accepted.
  auto table = aggrik8s::read_partition_table(disk);
  CHECK(table.last_usable_lba() == 64 * sectors_per_mib - 34);
  CHECK_THROWS_WITH(table.resize_partition(2, 60 * sectors_per_mib), Contains("past the last usable sector"));
  table.set_disk_size(disk.size());
  aggrik8s::write_partition_table(disk, table);
  // The stale backup header is cleared while no partition covers it...
  CHECK(disk.bytes()[64 * mib - 512] == 0);
  disk.bytes()[64 * mib - 512] = 'E';
  table = aggrik8s::read_partition_table(disk);
  table.set_gpt_disk_guid(*Guid::parse("99999999-8888-7777-6666-555555555555"));
  table.grow_partition_to_fill(2);
  aggrik8s::write_partition_table(disk, table);
  // ...but never once a partition covers it: the caller may already have put data there.
  CHECK(disk.bytes()[64 * mib - 512] == 'E');

  auto read = aggrik8s::read_partition_table(disk);
  CHECK(read.last_usable_lba() == 96 * sectors_per_mib - 34);
  CHECK(read.partition(2).end_lba() == 96 * sectors_per_mib - 33);
  CHECK(read.disk_identifier() == "99999999-8888-7777-6666-555555555555");
  CHECK(std::string(disk.bytes().end() - 512, disk.bytes().end() - 504) == "EFI PART");
}

TEST_CASE("partition table: corrupt GPTs are rejected", "[partition]") {
  MemoryBlockDevice disk(64 * mib, "gpt.img");
  aggrik8s::write_partition_table(disk, two_partition_gpt(64 * mib));
  SECTION("header CRC") {
    disk.bytes()[512 + 40] ^= 1;
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                      Contains("gpt.img: GPT header at sector 1: header CRC32 is"));
  }
  SECTION("entry array CRC") {
    disk.bytes()[1024 + 40] ^= 1;
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk), Contains("gpt.img: GPT entry array CRC32"));
  }
  SECTION("signature") {
    disk.bytes()[512] = 'X';
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk), Contains("signature is not \"EFI PART\""));
  }
  SECTION("image truncated below the backup header") {
    disk.resize(32 * mib);
    CHECK_THROWS_WITH(aggrik8s::read_partition_table(disk),
                      Contains("backup header sector 131071 is outside the disk (65536 sectors)"));
  }
  SECTION("partition past the usable area (entries rewritten with valid CRCs)") {
    auto table = aggrik8s::read_partition_table(disk);
    auto grown = PartitionTable::new_gpt(64 * mib, table.gpt_disk_guid(), "gpt.img");
    PartitionEntry huge = table.partition(2);
    huge.sector_count = 200000;
    CHECK_THROWS_WITH(grown.add_partition(huge), Contains("gpt.img: partition 2: ends at sector 218432") &&
                                                     Contains("past the last usable sector 131038"));
  }
}

TEST_CASE("partition table: little-endian helpers and partition views check their bounds", "[partition]") {
  std::vector<std::uint8_t> bytes(10, 0);
  aggrik8s::store_le16(bytes, 0, 0x1234);
  aggrik8s::store_le32(bytes, 2, 0xa1b2c3d4);
  CHECK(bytes[0] == 0x34);
  CHECK(bytes[2] == 0xd4);
  CHECK(aggrik8s::load_le16(bytes, 0) == 0x1234);
  CHECK(aggrik8s::load_le32(bytes, 2) == 0xa1b2c3d4);
  aggrik8s::store_le64(bytes, 2, 0x0102030405060708ULL);
  CHECK(aggrik8s::load_le64(bytes, 2) == 0x0102030405060708ULL);
  CHECK(aggrik8s::load_le64(bytes.data() + 2) == 0x0102030405060708ULL);
  // volatile: GCC 12 otherwise warns (-Warray-bounds) about the access the check prevents.
  volatile std::size_t near_end = 7;
  CHECK_THROWS_AS(aggrik8s::load_le32(bytes, near_end), std::out_of_range);
  CHECK_THROWS_AS(aggrik8s::store_le16(bytes, near_end + 2, 1), std::out_of_range);

  MemoryBlockDevice disk(64 * mib, "pi.img");
  aggrik8s::write_partition_table(disk, pi_like_mbr());
  auto table = aggrik8s::read_partition_table(disk);
  auto root = aggrik8s::open_partition(disk, table, 2);
  CHECK(root.name() == "pi.img partition 2");
  CHECK(root.size() == 16 * mib);
  std::vector<std::uint8_t> marker{1, 2, 3};
  root.write_at(0, marker);
  CHECK(disk.bytes()[24 * mib + 1] == 2);
  CHECK_THROWS_WITH(root.write_at(16 * mib - 2, marker),
                    Contains("pi.img partition 2: write of 3 bytes at offset 16777214 goes past the end"));
  CHECK_THROWS_WITH(aggrik8s::SubrangeBlockDevice(disk, 60 * mib, 8 * mib, "p"), Contains("does not fit in pi.img"));
}
