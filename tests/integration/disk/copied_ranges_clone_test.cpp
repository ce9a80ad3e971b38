// Where the image and the files it holds copies of share a filesystem that clones (XFS; btrfs too),
// CopiedRangeWriter clones a range's whole blocks (FICLONERANGE) instead of writing them: the image's
// bytes are what writing gives, its blocks are the file's, and what cannot be cloned (a range's last
// partial block and the zeros after it, a tar member at a 512-byte offset) is still written. On the
// build tree's filesystem (ext4, tmpfs) nothing is cloned and everything is written, as before.
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "disk/copied_ranges.hpp"
#include "disk/sparse_file.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

TEST_CASE("copied ranges: whole blocks are cloned where the filesystem shares extents, written elsewhere") {
  constexpr std::uint64_t MiB = 1 << 20;
  const auto mode = GENERATE(CopiedRangeWriter::Mode::durable, CopiedRangeWriter::Mode::cached);
  test::TempDir dir;
  test::ReflinkPlace reflinks(dir.path());
  if (reflinks.path().empty()) WARN("the cloning case is skipped: " << reflinks.reason());
  std::vector<fs::path> places{dir.path() / "plain"};
  if (!reflinks.path().empty()) places.push_back(reflinks.path());
  for (const auto& place : places) {
    const bool clones = place != dir.path() / "plain";
    INFO(place.string());
    fs::create_directories(place);
    // An image archive placed at the same offset in the image as in its file (so that same_blocks,
    // which compares equal offsets, can tell what is shared), its last 1000 bytes in a partial block;
    // and a tar member at offset 512 of its tar, 10000 bytes in three blocks.
    const std::string archive = test::random_bytes(4 * MiB + 1000, 1);
    const std::string tar = test::random_bytes(16384, 2);
    test::write_file(place / "archive", archive);
    test::write_file(place / "bundle.tar", tar);
    test::write_file(place / "image.img", std::string(8 * MiB, 'i'));
    CopiedRange placed{1 * MiB, 3 * MiB + 4096, 0, 1 * MiB};
    CopiedRange member{6 * MiB, 12288, 1, 512};
    member.data_length = 10000;
    const CopiedFiles copied{{place / "archive", place / "bundle.tar"}, {placed, member}, {}};

    CopiedRangeWriter writer(place / "image.img", copied, mode);
    writer.wait();
    std::string expected(8 * MiB, 'i');
    expected.replace(1 * MiB, 3 * MiB + 1000, archive.substr(1 * MiB));
    expected.replace(4 * MiB + 1000, 4096 - 1000, std::string(4096 - 1000, '\0'));
    expected.replace(6 * MiB, 10000, tar.substr(512, 10000));
    expected.replace(6 * MiB + 10000, 12288 - 10000, std::string(12288 - 10000, '\0'));
    CHECK(test::read_file(place / "image.img") == expected);
    if (!clones) {
      CHECK(writer.cloned_bytes() == 0);
      continue;
    }
    CHECK(writer.cloned_bytes() == 3 * MiB);  // the archive's whole blocks; not its tail, not the member
    std::uint64_t shared = 0;
    for (const auto& extent : same_blocks(place / "image.img", place / "archive")) {
      INFO(extent.offset << "+" << extent.length);
      CHECK(extent.offset >= 1 * MiB);
      CHECK(extent.offset + extent.length <= 4 * MiB);
      shared += extent.length;
    }
    CHECK(shared == 3 * MiB);
  }
}
