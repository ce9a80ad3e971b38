// Copies that keep holes, on the filesystem the build tree is on (the one image builds use).
#include "disk/sparse_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/file_descriptor.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

std::string q(const fs::path& path) { return "'" + path.string() + "'"; }

void require_run(const std::string& command) {
  auto result = test::run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
}

FileDescriptor open_or_fail(const fs::path& path, int flags) {
  FileDescriptor fd(::open(path.c_str(), flags | O_CLOEXEC));
  REQUIRE(fd);
  return fd;
}

// 16 MiB: data at 1 MiB (2 MiB of random bytes) and at 9 MiB (4 KiB of text), a few bytes in the
// last block, holes everywhere else.
fs::path make_sparse_file(const test::TempDir& dir) {
  auto path = dir / "source.img";
  require_run("truncate -s 16M " + q(path));
  require_run("head -c 2M /dev/urandom | dd of=" + q(path) + " bs=1M seek=1 conv=notrunc status=none");
  require_run("yes 'sparse copy' | head -c 4096 | dd of=" + q(path) + " bs=4096 seek=2304 conv=notrunc status=none");
  require_run("printf 'end' | dd of=" + q(path) + " bs=1 seek=16777200 conv=notrunc status=none");
  return path;
}

std::uint64_t data_bytes(const fs::path& path) {
  auto fd = open_or_fail(path, O_RDONLY);
  std::uint64_t total = 0;
  for (const auto& extent : list_data_extents(fd.get(), fs::file_size(path), path.string())) total += extent.length;
  return total;
}

bool same_bytes(const fs::path& a, std::uint64_t a_offset, const fs::path& b, std::uint64_t b_offset, std::uint64_t length) {
  auto command = "cmp -n " + std::to_string(length) + " " + q(a) + " " + q(b) + " " + std::to_string(a_offset) + " " +
                 std::to_string(b_offset);
  return test::run(command).exit_code == 0;
}

}  // namespace

TEST_CASE("sparse file: data extents within a range are clipped to it") {
  test::TempDir dir;
  auto source = make_sparse_file(dir);
  auto fd = open_or_fail(source, O_RDONLY);
  auto whole = list_data_extents(fd.get(), fs::file_size(source), source.string());
  REQUIRE(!whole.empty());
  CHECK(whole.front().offset <= 1 * MiB);
  CHECK(whole.front().offset + whole.front().length >= 3 * MiB);
  auto inside = list_data_extents(fd.get(), 2 * MiB, 9 * MiB + 100, source.string());
  REQUIRE(!inside.empty());
  CHECK(inside.front().offset == 2 * MiB);
  CHECK(inside.back().offset + inside.back().length == 9 * MiB + 100);
  CHECK(list_data_extents(fd.get(), 4 * MiB, 8 * MiB, source.string()).empty());
}

TEST_CASE("sparse file: a copied file has the same bytes and its holes") {
  test::TempDir dir;
  auto source = make_sparse_file(dir);
  auto copy = dir / "copy.img";
  copy_sparse_file(source, copy, 0600);
  CHECK(fs::file_size(copy) == fs::file_size(source));
  CHECK(same_bytes(source, 0, copy, 0, fs::file_size(source)));
  CHECK(data_bytes(copy) <= data_bytes(source));
  CHECK(data_bytes(copy) < 4 * MiB);
  CHECK((fs::status(copy).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));

  auto replaced = dir / "replaced.img";
  test::write_file(replaced, std::string(20 << 20, 'o'));
  copy_sparse_file(source, replaced, 0600);
  CHECK(fs::file_size(replaced) == fs::file_size(source));
  CHECK(same_bytes(source, 0, replaced, 0, fs::file_size(source)));

  // An empty file (what clone_file leaves where it cannot clone, and what is no longer truncated
  // again) gets the source's bytes.
  auto empty = dir / "empty.img";
  test::write_file(empty, "");
  copy_sparse_file(source, empty, 0600);
  CHECK(fs::file_size(empty) == fs::file_size(source));
  CHECK(same_bytes(source, 0, empty, 0, fs::file_size(source)));
}

TEST_CASE("sparse file: a range copied with holes punched equals the source range, the rest is untouched") {
  test::TempDir dir;
  auto source = make_sparse_file(dir);
  auto destination = dir / "destination.img";
  require_run("head -c 24M /dev/urandom > " + q(destination));
  auto before = dir / "before.img";
  require_run("cp " + q(destination) + " " + q(before));
  {
    auto in = open_or_fail(source, O_RDONLY);
    auto out = open_or_fail(destination, O_RDWR);
    copy_sparse_range({.source = in.get(),
                       .source_name = source.string(),
                       .source_offset = 512 * 1024,
                       .destination = out.get(),
                       .destination_name = destination.string(),
                       .destination_offset = 4 * MiB + 4096,
                       .length = 12 * MiB,
                       .punch_holes = true});
  }
  CHECK(fs::file_size(destination) == 24 * MiB);
  CHECK(same_bytes(source, 512 * 1024, destination, 4 * MiB + 4096, 12 * MiB));
  CHECK(same_bytes(before, 0, destination, 0, 4 * MiB + 4096));
  std::uint64_t after_range = 4 * MiB + 4096 + 12 * MiB;
  CHECK(same_bytes(before, after_range, destination, after_range, 24 * MiB - after_range));
  // The holes of the source range became holes: of 12 MiB, about 2 MiB + 4 KiB is data.
  CHECK(data_bytes(destination) < 24 * MiB - 8 * MiB);
}

TEST_CASE("sparse file: without punching, the source's holes are skipped and the destination's bytes stay") {
  test::TempDir dir;
  auto source = make_sparse_file(dir);
  auto destination = dir / "destination.img";
  require_run("yes x | head -c 16M > " + q(destination));
  {
    auto in = open_or_fail(source, O_RDONLY);
    auto out = open_or_fail(destination, O_RDWR);
    copy_sparse_range({.source = in.get(),
                       .source_name = source.string(),
                       .destination = out.get(),
                       .destination_name = destination.string(),
                       .length = fs::file_size(source)});
  }
  CHECK(same_bytes(source, 1 * MiB, destination, 1 * MiB, 2 * MiB));
  CHECK(same_bytes(source, 9 * MiB, destination, 9 * MiB, 4096));
  CHECK(test::read_file(destination).substr(0, 4) == "x\nx\n");
}

// Where cp --reflink=always can share extents (XFS, btrfs), clone_file must too; where it cannot
// (ext4, tmpfs), clone_file says so and leaves an empty file for the copy that follows. Run on the
// build tree's filesystem, and also in AGGRIK8S_REFLINK_TEST_DIR when set (e.g. a loop-mounted XFS:
// mkfs.xfs needs no root, mounting it does, so the suite cannot make one itself).
TEST_CASE("sparse file: clone_file makes a reflink where the filesystem shares extents, and says so where not") {
  std::vector<fs::path> places;
  test::TempDir dir;
  places.push_back(dir.path());
  const char* reflink_dir = std::getenv("AGGRIK8S_REFLINK_TEST_DIR");
  if (reflink_dir != nullptr && *reflink_dir != '\0') places.push_back(fs::path(reflink_dir) / ("clone-test-" + std::to_string(::getpid())));
  const fs::path made = make_sparse_file(dir);
  for (const auto& place : places) {
    INFO(place.string());
    fs::create_directories(place);
    auto source = place / "original.img";
    fs::copy_file(made, source, fs::copy_options::overwrite_existing);
    bool cp_can = test::run("cp --reflink=always " + q(source) + " " + q(place / "cp.img") + " 2>/dev/null").exit_code == 0;
    auto clone = place / "clone.img";
    test::write_file(clone, "old content");
    bool cloned = clone_file(source, clone, 0600);
    CHECK(cloned == cp_can);
    CHECK((fs::status(clone).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
    if (cloned) {
      CHECK(fs::file_size(clone) == fs::file_size(source));
      CHECK(same_bytes(source, 0, clone, 0, fs::file_size(source)));
      // Writing the clone leaves the source as it was.
      require_run("printf 'node' | dd of=" + q(clone) + " bs=1 seek=1048576 conv=notrunc status=none");
      CHECK_FALSE(same_bytes(source, 0, clone, 0, fs::file_size(source)));
      CHECK(same_bytes(source, 4, clone, 4, 1048572));
    } else {
      CHECK(fs::file_size(clone) == 0);
    }
    CHECK_THROWS_WITH(clone_file(place / "missing.img", clone, 0600), Catch::Contains("missing.img"));
    if (place != dir.path()) fs::remove_all(place);
  }
}

namespace {

void write_random(const fs::path& file, std::uint64_t offset, std::uint64_t length, unsigned seed) {
  std::string bytes(length, '\0');
  std::srand(seed);
  for (auto& byte : bytes) byte = static_cast<char>(std::rand());
  FileDescriptor fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  REQUIRE(fd);
  REQUIRE(::pwrite(fd.get(), bytes.data(), bytes.size(), static_cast<off_t>(offset)) == static_cast<ssize_t>(bytes.size()));
}

}  // namespace

// How a Pi build on XFS reads its reflinked prepared image: the blocks same_blocks reports must be
// byte-equal in both files, and a block written after the clone (still only in the page cache when
// asked) must not be among them.
TEST_CASE("sparse file: same_blocks finds the blocks a reflink still shares, and none that were written or copied") {
  constexpr std::uint64_t MiB = 1 << 20;
  test::TempDir dir;
  {
    // ext4 or tmpfs (the build tree's): a copy shares nothing.
    write_random(dir / "a.img", 0, 2 * MiB, 1);
    fs::copy_file(dir / "a.img", dir / "b.img");
    CHECK(same_blocks(dir / "b.img", dir / "a.img").empty());
  }
  test::ReflinkPlace place(dir.path());
  if (place.path().empty()) {
    WARN("skipping the reflink case: " << place.reason());
    return;
  }
  const fs::path source = place.path() / "base.img";
  write_random(source, 0, 8 * MiB, 2);
  write_random(source, 12 * MiB, 4 * MiB, 3);  // a hole from 8 to 12 MiB
  require_run("sync " + q(source));
  const fs::path clone = place.path() / "clone.img";
  REQUIRE(clone_file(source, clone, 0600));
  CHECK(same_blocks(clone, source) == std::vector<DataExtent>{{0, 8 * MiB}, {12 * MiB, 4 * MiB}});

  // Written after the clone and not flushed: same_blocks writes it out first, so it is not shared.
  write_random(clone, 1 * MiB, 4096, 4);
  const std::vector<DataExtent> same = same_blocks(clone, source);
  std::uint64_t shared = 0;
  for (const auto& extent : same) {
    INFO(extent.offset << "+" << extent.length);
    CHECK((extent.offset + extent.length <= 1 * MiB || extent.offset >= 1 * MiB + 4096));
    CHECK(same_bytes(source, extent.offset, clone, extent.offset, extent.length));
    shared += extent.length;
  }
  CHECK(shared >= 10 * MiB);  // XFS may copy a little more than the written block on write
  CHECK_FALSE(same_bytes(source, 1 * MiB, clone, 1 * MiB, 4096));

  // A plain copy on the same filesystem shares nothing.
  require_run("cp --reflink=never " + q(source) + " " + q(place.path() / "copy.img"));
  CHECK(same_blocks(place.path() / "copy.img", source).empty());
}
