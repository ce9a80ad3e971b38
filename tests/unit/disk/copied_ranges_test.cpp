#include "disk/copied_ranges.hpp"

#include <fcntl.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/file_descriptor.hpp"
#include "core/sha256.hpp"
#include "disk/bmap.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/image_patch.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

std::string read_range(const CopiedRangeReader& reader, std::uint64_t offset, std::size_t length) {
  std::string bytes(length, '?');
  reader.read(offset, {reinterpret_cast<std::uint8_t*>(bytes.data()), bytes.size()});
  return bytes;
}

// An image with an empty ext4 filesystem of `length` bytes 1 MiB into it (and 1 MiB after it).
// mke2fs gives 1 KiB blocks to a small filesystem and 4 KiB blocks from 512 MiB up (as a Pi image's
// root has).
constexpr std::uint64_t filesystem_offset = 1 << 20;
fs::path make_ext4_image(const fs::path& image, std::uint64_t length) {
  { std::ofstream create(image); }
  fs::resize_file(image, filesystem_offset + length + (1 << 20));
  create_ext4_filesystem(image, filesystem_offset, length, {});
  return image;
}

}  // namespace

TEST_CASE("copied ranges: read from the copied files (zeros past their end), the rest from the image") {
  test::TempDir dir;
  test::write_file(dir / "image.img", std::string(64, 'i'));
  test::write_file(dir / "a", "AAAAAAAA");
  test::write_file(dir / "b", "0123");
  CopiedFiles copied{{dir / "a", dir / "b"}, {{40, 8, 1, 2}, {10, 6, 0, 1}}, {}};  // unsorted on purpose
  FileDescriptor fd(::open((dir / "image.img").c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd);
  const CopiedRangeReader reader(fd.get(), "image.img", &copied);
  CHECK(read_range(reader, 0, 20) == "iiiiiiiiiiAAAAAAiiii");
  // File b from byte 2 holds "23": the rest of the range reads as zeros, as the image's last block does.
  CHECK(read_range(reader, 38, 12) == std::string("ii23") + std::string(6, '\0') + "ii");
  CHECK(read_range(reader, 12, 2) == "AA");
  CHECK(copied.extents() == std::vector<DataExtent>{{10, 6}, {40, 8}});
  const CopiedRangeReader nothing(fd.get(), "image.img", nullptr);
  CHECK(read_range(nothing, 8, 4) == "iiii");

  CopiedFiles missing{{dir / "gone"}, {{0, 4, 0, 0}}, {}};
  CHECK_THROWS_WITH(CopiedRangeReader(fd.get(), "image.img", &missing), Catch::Contains("gone") && Catch::Contains("image.img"));
  CHECK_THROWS_WITH(CopiedRangeWriter(dir / "image.img", missing, CopiedRangeWriter::Mode::cached), Catch::Contains("gone"));
}

// A file placed from the middle of another (a tar member): its range ends its bytes at data_length,
// and the rest of its last block is zeros, not the next member's bytes, for the reader and for the
// writer (both its O_DIRECT and page-cache paths: a member's bytes sit at 512-byte offsets).
TEST_CASE("copied ranges: bytes past a range's data_length are zeros, read and written") {
  const auto mode = GENERATE(CopiedRangeWriter::Mode::durable, CopiedRangeWriter::Mode::cached);
  test::TempDir dir;
  const std::string tar = test::random_bytes(3 * 4096, 9);
  test::write_file(dir / "bundle.tar", tar);
  test::write_file(dir / "image.img", std::string(4 * 4096, 'i'));
  // 5000 bytes of the member at 512 in the tar, placed in two blocks at 4096 of the image.
  CopiedRange member{4096, 8192, 0, 512};
  member.data_length = 5000;
  CopiedFiles copied{{dir / "bundle.tar"}, {member}, {}};
  const std::string expected = std::string(4096, 'i') + tar.substr(512, 5000) + std::string(8192 - 5000, '\0') +
                               std::string(4096, 'i');
  {
    FileDescriptor fd(::open((dir / "image.img").c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    const CopiedRangeReader reader(fd.get(), "image.img", &copied);
    CHECK(read_range(reader, 0, 4 * 4096) == expected);
    CHECK(read_range(reader, 4096 + 4990, 20) == tar.substr(512 + 4990, 10) + std::string(10, '\0'));
    CHECK(read_range(reader, 4096 + 6000, 100) == std::string(100, '\0'));
  }
  CopiedRangeWriter writer(dir / "image.img", copied, mode);
  writer.wait();
  CHECK(test::read_file(dir / "image.img") == expected);
}

TEST_CASE("copied ranges: ranges not in whole 4 KiB blocks are written through the page cache") {
  test::TempDir dir;
  test::write_file(dir / "image.img", std::string(10000, 'i'));
  test::write_file(dir / "src", "hello");
  CopiedRangeWriter writer(dir / "image.img", CopiedFiles{{dir / "src"}, {{100, 7, 0, 0}}, {}},
                           CopiedRangeWriter::Mode::durable);
  CHECK_FALSE(writer.direct());
  writer.wait();
  std::string image = test::read_file(dir / "image.img");
  CHECK(image.substr(98, 11) == std::string("iihello") + std::string(2, '\0') + "ii");
  CHECK(image.size() == 10000);
}

// --no-sync (Mode::cached): O_DIRECT while the disk takes the writes fast enough, the page cache for
// the rest once a window of writes is slow; the same bytes either way, across the switch too (a range at a
// 512-byte offset in its file goes through a buffer under O_DIRECT and straight from the mapping after).
TEST_CASE("copied ranges: a cached writer probes the disk with O_DIRECT and goes on through the page cache when it is slow") {
  struct Case {
    const char* name;
    DirectWriteProbe probe;
    bool leaves_direct;
  };
  const auto c = GENERATE(Case{"fast enough: stays O_DIRECT", {1, 0.0}, false},
                          Case{"too slow: the rest through the page cache", {1, 1e30}, true},
                          Case{"a window longer than the writes", {1ULL << 40, 1e30}, false});
  INFO(c.name);
  test::TempDir dir;
  const std::string source = test::random_bytes(20 << 20, 5);
  test::write_file(dir / "src", source);
  test::write_file(dir / "image.img", std::string(44 << 20, 'i'));
  // 20 MiB at 4096 (three 8 MiB writes), then 12 MiB from offset 512 of the file at 24 MiB.
  CopiedFiles copied{{dir / "src"}, {{4096, 20 << 20, 0, 0}, {24 << 20, 12 << 20, 0, 512}}, {}};
  std::string expected = std::string(44 << 20, 'i');
  expected.replace(4096, 20 << 20, source);
  expected.replace(24 << 20, 12 << 20, source.substr(512, 12 << 20));
  CopiedRangeWriter writer(dir / "image.img", copied, CopiedRangeWriter::Mode::cached, c.probe);
  writer.wait();
  CHECK(test::read_file(dir / "image.img") == expected);
  if (writer.direct()) {
    CHECK(writer.left_direct() == c.leaves_direct);
  } else {
    CHECK_FALSE(writer.left_direct());  // no O_DIRECT here: the page cache all along
  }
}

// How a Pi build preloads its image archives: the file placed in the filesystem, its bytes written by
// a CopiedRangeWriter, and the image hashed through the copied ranges before the write is done.
TEST_CASE("copied ranges: a placed ext4 file written by CopiedRangeWriter gives copy_file_from_host's image, and hashes alike before it is written", "[ext4]") {
  // 1 KiB blocks: runs not in whole 4 KiB blocks, written through the page cache; 4 KiB: O_DIRECT
  // where allowed.
  const std::uint64_t length = GENERATE(std::uint64_t{32} << 20, std::uint64_t{600} << 20);
  INFO("filesystem of " << (length >> 20) << " MiB");
  test::TempDir dir;
  constexpr std::uint64_t offset = filesystem_offset;
  const fs::path copied_image = make_ext4_image(dir / "copied.img", length);
  const fs::path placed_image = dir / "placed.img";
  fs::copy_file(copied_image, placed_image);
  // A sparse host file with a block of zeros in its data and a short last block.
  const fs::path host = dir / "archive.tar.zst";
  {
    std::ofstream out(host, std::ios::binary);
    out << test::random_bytes(3 << 20, 5) << std::string(8192, '\0') << test::random_bytes(10000, 6);
    out.seekp(9 << 20);
    out << test::random_bytes(5000, 7);
  }
  const std::int64_t epoch = 1700000000;
  const std::string target = "/var/lib/rancher/rke2/agent/images/archive.tar.zst";
  {
    auto fs = Ext4Filesystem::open(copied_image, offset, length, Ext4Access::read_write, epoch);
    fs.create_directories("/var/lib/rancher/rke2/agent/images");
    fs.copy_file_from_host(host, target, {0644, 0, 0, {}});
    fs.close();
  }
  CopiedFiles copied{{host}, {}, {}};
  {
    auto fs = Ext4Filesystem::open(placed_image, offset, length, Ext4Access::read_write, epoch);
    fs.create_directories("/var/lib/rancher/rke2/agent/images");
    for (const auto& run : fs.place_file_from_host(host, target, {0644, 0, 0, {}})) {
      CHECK(run.length > 0);
      copied.ranges.push_back({offset + run.device_offset, run.length, 0, run.file_offset});
    }
    fs.close();
  }
  // The zero block and the hole are left unplaced (holes in the file), so the data is in two runs at least.
  CHECK(copied.ranges.size() >= 2);
  const Sha256Digest expected = Sha256::of_file(copied_image);
  CHECK(Sha256::of_file(placed_image) != expected);  // the data is not there yet

  BmapOptions chunked;
  chunked.range_split_blocks = 256;
  ImageHashes through = hash_patched_image(placed_image, ImagePatch{}, "placed.img", true, chunked, &copied);
  CHECK(through.sha256 == expected);
  CHECK(*through.bmap == create_bmap(copied_image, chunked));
  CHECK(create_bmap(placed_image, chunked, copied) == create_bmap(copied_image, chunked));
  // The same with the image's own extents listed up front (as a build does before the writes start,
  // when listing them meanwhile would wait for the writes).
  {
    FileDescriptor fd(::open(placed_image.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    copied.image_extents = list_data_extents(fd.get(), fs::file_size(placed_image), placed_image.string());
  }
  CHECK(hash_patched_image(placed_image, ImagePatch{}, "placed.img", true, chunked, &copied).sha256 == expected);
  CHECK(create_bmap(placed_image, chunked, copied) == create_bmap(copied_image, chunked));
  {
    // A node's edits are made through a patched device that reads the same way.
    PatchedFileBlockDevice device(placed_image, "node.img", &copied);
    auto fs = Ext4Filesystem::open(device, offset, length, Ext4Access::read_only);
    CHECK(fs.read_file(target) == test::read_file(host));
  }

  bool whole_blocks = true;
  for (const auto& r : copied.ranges) whole_blocks = whole_blocks && r.image_offset % 4096 == 0 && r.length % 4096 == 0;
  CHECK(whole_blocks == (length > (512 << 20)));
  // Both ways a build writes them: past the page cache and flushed, or cached (--no-sync).
  const auto mode = GENERATE(CopiedRangeWriter::Mode::durable, CopiedRangeWriter::Mode::cached);
  CopiedRangeWriter writer(placed_image, copied, mode);
  INFO("O_DIRECT: " << writer.direct());
  // Cached: O_DIRECT too while the disk keeps up (the probe), where the ranges allow it.
  if (!whole_blocks) CHECK_FALSE(writer.direct());
  writer.wait();
  CHECK(Sha256::of_file(placed_image) == expected);
  auto check = check_ext4_filesystem(placed_image, offset);
  INFO(check.report);
  CHECK(check.clean);
  auto fs = Ext4Filesystem::open(placed_image, offset, length, Ext4Access::read_only);
  CHECK(fs.read_file(target) == test::read_file(host));
}

// How a Pi build places its archives: scanned for non-zero blocks beforehand (while the base is
// copied in), then placed from the scan without reading them. The blocks, their order and the
// filesystem come out byte for byte as placing from the file; a scan made with another block size
// is not used (the file is read again).
TEST_CASE("copied ranges: a file placed from its scan gets the blocks placing it from the file gets", "[ext4]") {
  const std::uint64_t length = GENERATE(std::uint64_t{32} << 20, std::uint64_t{600} << 20);
  INFO("filesystem of " << (length >> 20) << " MiB");
  test::TempDir dir;
  constexpr std::uint64_t offset = filesystem_offset;
  const fs::path from_file = make_ext4_image(dir / "from-file.img", length);
  const fs::path from_scan = dir / "from-scan.img";
  const fs::path from_other_scan = dir / "from-other-scan.img";
  fs::copy_file(from_file, from_scan);
  fs::copy_file(from_file, from_other_scan);
  // Zero blocks inside the data, a hole, runs longer than a 4 MiB chunk, a short last block.
  const fs::path host = dir / "archive.tar.zst";
  {
    std::ofstream out(host, std::ios::binary);
    out << test::random_bytes(5 << 20, 1) << std::string(3 * 4096, '\0') << test::random_bytes(70000, 2);
    out.seekp(12 << 20);
    out << test::random_bytes(9 << 20, 3) << std::string(4096, '\0') << test::random_bytes(123, 4);
  }
  const std::string target = "/var/lib/rancher/rke2/agent/images/archive.tar.zst";
  // `what`: the host file, or a scan of it.
  auto place = [&](const fs::path& image, const auto& what, const std::string& where) {
    auto filesystem = Ext4Filesystem::open(image, offset, length, Ext4Access::read_write, 1700000000);
    filesystem.create_directories("/var/lib/rancher/rke2/agent/images");
    std::vector<Ext4PlacedRun> placed = filesystem.place_file_from_host(what, where, {0644, 0, 0, {}});
    filesystem.close();
    return placed;
  };
  const std::uint64_t block_size = length < (512u << 20) ? 1024 : 4096;
  // The scan below is made with the filesystem's own block size, so it is the one placing uses.
  CHECK(Ext4Filesystem::open(from_file, offset, length, Ext4Access::read_only).space_usage().block_size == block_size);
  const Ext4HostFileScan scan = scan_host_file(host, block_size);
  CHECK(scan.size == fs::file_size(host));
  CHECK(scan.runs.size() >= 4);  // the zero blocks split the data, and so do the 4 MiB chunks
  const auto expected = place(from_file, host, target);
  const auto placed = place(from_scan, scan, target);
  REQUIRE(placed.size() == expected.size());
  for (std::size_t i = 0; i < placed.size(); ++i) {
    CHECK(placed[i].device_offset == expected[i].device_offset);
    CHECK(placed[i].file_offset == expected[i].file_offset);
    CHECK(placed[i].length == expected[i].length);
  }
  CHECK(Sha256::of_file(from_scan) == Sha256::of_file(from_file));
  const auto other = place(from_other_scan, scan_host_file(host, block_size == 4096 ? 1024 : 4096), target);
  CHECK(other.size() == expected.size());
  CHECK(Sha256::of_file(from_other_scan) == Sha256::of_file(from_file));
  CHECK_THROWS_WITH(scan_host_file(dir / "missing.tar.zst", 4096), Catch::Contains("missing.tar.zst"));

  // An empty file and one that is all hole: no runs, no blocks, the same filesystem either way.
  test::write_file(dir / "empty", "");
  {
    std::ofstream hole(dir / "hole");
  }
  fs::resize_file(dir / "hole", 3 << 20);
  for (const char* name : {"empty", "hole"}) {
    const Ext4HostFileScan nothing = scan_host_file(dir / name, block_size);
    CHECK(nothing.runs.empty());
    const std::string where = std::string("/var/lib/rancher/rke2/agent/images/") + name;
    CHECK(place(from_scan, nothing, where).empty());
    CHECK(place(from_file, dir / name, where).empty());
    CHECK(Sha256::of_file(from_scan) == Sha256::of_file(from_file));
  }

  // A file written after its scan is read again: its blocks are the ones it has now.
  const fs::path small = dir / "small.tar.zst";
  test::write_file(small, test::random_bytes(100000, 10));
  const Ext4HostFileScan stale = scan_host_file(small, block_size);
  {
    std::ofstream grow(small, std::ios::binary | std::ios::app);
    grow << test::random_bytes(50000, 8);
  }
  const std::string grown = "/var/lib/rancher/rke2/agent/images/grown.tar.zst";
  const auto now = place(from_file, small, grown);
  const auto from_stale = place(from_scan, stale, grown);
  REQUIRE(from_stale.size() == now.size());
  CHECK(from_stale.back().file_offset + from_stale.back().length == now.back().file_offset + now.back().length);
  CHECK(Sha256::of_file(from_scan) == Sha256::of_file(from_file));
}
