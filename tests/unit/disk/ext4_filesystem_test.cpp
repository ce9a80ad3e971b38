#include "disk/ext4_filesystem.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/sha256.hpp"
#include "disk/block_device.hpp"
#include "tests/test_support.hpp"

using aggrik8s::Error;
using aggrik8s::Ext4Access;
using aggrik8s::Ext4FileAttributes;
using aggrik8s::Ext4Filesystem;
using aggrik8s::Ext4FileType;
using aggrik8s::Ext4Timestamp;
using aggrik8s::test::random_bytes;
using aggrik8s::test::TempDir;

namespace {

// A small filesystem that does not start at byte 0, so every test also exercises the offset path.
constexpr std::uint64_t region_offset = 1 << 20;
constexpr std::uint64_t region_length = 16 << 20;

std::filesystem::path make_image(const TempDir& dir, const std::string& name = "fs.img",
                                 const aggrik8s::Ext4CreateOptions& options = {}) {
  auto image = dir / name;
  { std::ofstream create(image); }
  std::filesystem::resize_file(image, region_offset + region_length + (1 << 20));
  aggrik8s::create_ext4_filesystem(image, region_offset, region_length, options);
  return image;
}

Ext4Filesystem open_rw(const std::filesystem::path& image, std::optional<std::int64_t> fixed_time = std::nullopt) {
  return Ext4Filesystem::open(image, region_offset, region_length, Ext4Access::read_write, fixed_time);
}

void require_clean(const std::filesystem::path& image) {
  auto check = aggrik8s::check_ext4_filesystem(image, region_offset);
  INFO(check.report);
  REQUIRE(check.clean);
}

}  // namespace

TEST_CASE("ext4: files, directories and symlinks written in-process read back with their metadata", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  const std::int64_t epoch = 1700000000;
  {
    auto fs = open_rw(image, epoch);
    fs.create_directories("/etc/rancher/rke2", {0750, 0, 0, {}});
    fs.write_file("/etc/rancher/rke2/config.yaml", std::string("token: secret\n"), {0600, 0, 0, {}});
    fs.create_directories("/home/pi", {0755, 1000, 1000, Ext4Timestamp{1600000000, 5}});
    fs.write_file("/home/pi/notes", std::string("hello"), {0640, 1000, 1001, Ext4Timestamp{1650000000, 123}});
    fs.create_symlink("/home/pi/fast", "notes");
    std::string long_target = "/" + std::string(200, 'x');
    fs.create_symlink("/home/pi/slow", long_target, {0777, 1000, 1000, {}});

    CHECK(fs.read_file("/etc/rancher/rke2/config.yaml") == "token: secret\n");
    CHECK(fs.read_file("/home/pi/fast") == "hello");  // followed
    CHECK(fs.read_symlink("/home/pi/fast") == "notes");
    CHECK(fs.read_symlink("/home/pi/slow") == long_target);

    auto config = fs.status("/etc/rancher/rke2/config.yaml");
    CHECK(config.type == Ext4FileType::regular);
    CHECK(config.permissions == 0600);
    CHECK(config.uid == 0);
    CHECK(config.gid == 0);
    CHECK(config.size == 14);
    CHECK(config.mtime == Ext4Timestamp{epoch, 0});
    CHECK(config.ctime == Ext4Timestamp{epoch, 0});

    auto notes = fs.status("/home/pi/notes");
    CHECK(notes.permissions == 0640);
    CHECK(notes.uid == 1000);
    CHECK(notes.gid == 1001);
    CHECK(notes.mtime == Ext4Timestamp{1650000000, 123});

    auto home = fs.status("/home/pi");
    CHECK(home.type == Ext4FileType::directory);
    CHECK(home.uid == 1000);
    // The directory gained entries after it was created, so its mtime is "now", i.e. the fixed time.
    CHECK(home.mtime == Ext4Timestamp{epoch, 0});

    auto fast = fs.status("/home/pi/fast");
    CHECK(fast.type == Ext4FileType::symlink);
    CHECK(fast.allocated_bytes == 0);  // fast symlink: target in the inode
    auto slow = fs.status("/home/pi/slow");
    CHECK(slow.allocated_bytes > 0);
    CHECK(slow.uid == 1000);

    auto entries = fs.list_directory("/home/pi");
    REQUIRE(entries.size() == 3);
    CHECK(entries[0].name == "fast");
    CHECK(entries[0].type == Ext4FileType::symlink);
    CHECK(entries[1].name == "notes");
    CHECK(entries[1].type == Ext4FileType::regular);
    CHECK(entries[2].name == "slow");

    CHECK(fs.exists("/home/pi/notes"));
    CHECK_FALSE(fs.exists("/home/pi/missing"));
    CHECK_FALSE(fs.exists("/home/pi/notes/below-a-file"));
    fs.close();
  }
  require_clean(image);

  // The tools agree with what we wrote.
  auto device = "'" + image.string() + "?offset=" + std::to_string(region_offset) + "'";
  auto stat = aggrik8s::test::run("debugfs -R 'stat /etc/rancher/rke2/config.yaml' " + device);
  CHECK(stat.output.find("Mode:  0600") != std::string::npos);
  CHECK(stat.output.find("User:     0   Group:     0") != std::string::npos);
}

TEST_CASE("ext4: metadata changes, replacement and removal free what they should", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  auto fs = open_rw(image);
  auto free_before = fs.space_usage().free_blocks;

  fs.create_directories("/opt/a/b/c");
  fs.write_file("/opt/a/b/c/data", random_bytes(300000, 1), {});
  CHECK(fs.space_usage().free_blocks < free_before);

  // Replacing frees the old blocks: the same size again leaves usage where it was.
  auto free_after_first = fs.space_usage().free_blocks;
  fs.write_file("/opt/a/b/c/data", random_bytes(300000, 2), {0700, 5, 6, {}});
  CHECK(fs.space_usage().free_blocks == free_after_first);
  CHECK(fs.read_file("/opt/a/b/c/data") == random_bytes(300000, 2));
  CHECK(fs.status("/opt/a/b/c/data").permissions == 0700);

  // A symlink can be replaced by a file and a file by a symlink; a directory is never replaced.
  fs.create_symlink("/opt/link", "/opt/a");
  fs.write_file("/opt/link", std::string("now a file"), {});
  CHECK(fs.status("/opt/link").type == Ext4FileType::regular);
  fs.create_symlink("/opt/link", "/opt/a");
  CHECK(fs.status("/opt/link").type == Ext4FileType::symlink);
  CHECK_THROWS_WITH(fs.write_file("/opt/a", std::string("x"), {}), Catch::Contains("a directory is in the way"));

  // Symlinked directories are followed in the directory part of a path, relative to the fs root.
  fs.write_file("/opt/link/via-link", std::string("through"), {});
  CHECK(fs.read_file("/opt/a/via-link") == "through");
  fs.create_directories("/opt/link/b/d");
  CHECK(fs.status("/opt/a/b/d").type == Ext4FileType::directory);

  fs.set_permissions("/opt/a/via-link", 04755);
  fs.set_owner("/opt/a/via-link", 70000, 80000);  // 32-bit ids use the high halves
  fs.set_times("/opt/a/via-link", Ext4Timestamp{100, 0}, Ext4Timestamp{200, 7}, Ext4Timestamp{300, 0});
  auto status = fs.status("/opt/a/via-link");
  CHECK(status.permissions == 04755);
  CHECK(status.uid == 70000);
  CHECK(status.gid == 80000);
  CHECK(status.atime == Ext4Timestamp{100, 0});
  CHECK(status.mtime == Ext4Timestamp{200, 7});
  CHECK(status.ctime == Ext4Timestamp{300, 0});
  // Times past 2038 use the extra epoch bits of large inodes.
  fs.set_times("/opt/a/via-link", std::nullopt, Ext4Timestamp{4102444800, 0}, std::nullopt);
  CHECK(fs.status("/opt/a/via-link").mtime == Ext4Timestamp{4102444800, 0});

  CHECK_THROWS_WITH(fs.remove("/opt/a"), Catch::Contains("not empty"));
  fs.remove("/opt/link");
  fs.remove("/opt", true);
  CHECK_FALSE(fs.exists("/opt"));
  CHECK(fs.space_usage().free_blocks == free_before);
  CHECK_THROWS_WITH(fs.remove("/opt"), Catch::Contains("no such file"));
  fs.close();
  require_clean(image);
}

TEST_CASE("ext4: a directory grows past one block", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  {
    auto fs = open_rw(image);
    fs.create_directories("/many");
    for (int i = 0; i < 300; ++i) {
      fs.write_file("/many/file-with-a-longish-name-" + std::to_string(i), std::to_string(i), {});
    }
    CHECK(fs.list_directory("/many").size() == 300);
    CHECK(fs.status("/many").size > 4096);
    CHECK(fs.read_file("/many/file-with-a-longish-name-299") == "299");
  }
  require_clean(image);
}

TEST_CASE("ext4: host files are streamed, holes and zero blocks stay sparse", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  auto host = dir / "sparse.bin";
  std::string head = random_bytes(10000, 3);
  std::string tail = random_bytes(5000, 4);
  {
    std::ofstream out(host, std::ios::binary);
    out << head;
    out.seekp(6 << 20);
    out << tail;
  }
  std::string expected = head + std::string((6 << 20) - head.size(), '\0') + tail;
  REQUIRE(std::filesystem::file_size(host) == expected.size());
  {
    auto fs = open_rw(image);
    fs.create_directories("/var/lib/rancher/rke2/agent/images");
    fs.copy_file_from_host(host, "/var/lib/rancher/rke2/agent/images/sparse.tar", {0644, 0, 0, {}});
    auto status = fs.status("/var/lib/rancher/rke2/agent/images/sparse.tar");
    CHECK(status.size == expected.size());
    CHECK(status.allocated_bytes < 64 * 1024);
    CHECK(fs.read_file("/var/lib/rancher/rke2/agent/images/sparse.tar") == expected);

    // A non-sparse host file full of zeros in the middle is stored sparsely too.
    fs.write_file("/zeros", std::string(1 << 20, '\0') + "end", {});
    CHECK(fs.status("/zeros").allocated_bytes <= 8192);
    CHECK(fs.read_file("/zeros") == std::string(1 << 20, '\0') + "end");
    fs.write_file("/empty", std::string(), {});
    CHECK(fs.status("/empty").size == 0);
    CHECK(fs.read_file("/empty").empty());
  }
  require_clean(image);
}

TEST_CASE("ext4: a file of several copy chunks reads back byte for byte, and so do the small files written after it", "[ext4]") {
  // write_content reads chunks of up to 4 MiB into two buffers in turn, sized to the largest chunk and
  // not zeroed (on huge pages from a MiB up): every chunk, the short last one included, must be
  // exactly the source's bytes, and a small file written next must not see the large one's.
  TempDir dir;
  auto image = make_image(dir);
  std::string large = random_bytes((std::size_t{9} << 20) + 1234, 11);
  std::string small = random_bytes(777, 12);
  {
    auto fs = open_rw(image);
    fs.write_file("/large", large, {});
    fs.write_file("/small", small, {});
    CHECK(fs.read_file("/large") == large);
    CHECK(fs.read_file("/small") == small);
    CHECK(fs.status("/small").size == small.size());
  }
  require_clean(image);
}

TEST_CASE("ext4: writing more than the free space fails clearly and leaves the filesystem consistent", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  {
    auto fs = open_rw(image);
    fs.write_file("/keep", std::string("kept"), {});
    auto free_bytes = fs.space_usage().free_bytes();
    auto too_big = random_bytes(static_cast<std::size_t>(free_bytes + (1 << 20)), 5);
    CHECK_THROWS_WITH(fs.write_file("/too-big", too_big, {}),
                      Catch::Contains("not enough free space") && Catch::Contains("/too-big") &&
                          Catch::Contains(image.string()));
    CHECK_FALSE(fs.exists("/too-big"));
    CHECK(fs.space_usage().free_bytes() == free_bytes);

    // Filling up with many files runs out in the middle of some operation (data, extent tree,
    // directory block or inode): whichever it is, the error names the file and nothing dangles.
    fs.create_directories("/fill");
    bool failed = false;
    for (int i = 0; i < 10000 && !failed; ++i) {
      try {
        fs.write_file("/fill/f" + std::to_string(i), random_bytes(70000, static_cast<unsigned>(i)), {});
      } catch (const Error& e) {
        failed = true;
        CHECK(std::string(e.what()).find("/fill/f" + std::to_string(i)) != std::string::npos);
      }
    }
    CHECK(failed);

    // Exactly the free space in data blocks: fits only if no extent tree block is needed.
    auto rest = fs.space_usage().free_bytes();
    try {
      fs.write_file("/fill/exact", random_bytes(static_cast<std::size_t>(rest), 77), {});
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("/fill/exact") != std::string::npos);
    }
    // Now without blocks, empty files still need inodes and directory space until one runs out.
    failed = false;
    for (int i = 0; i < 100000 && !failed; ++i) {
      try {
        fs.write_file("/fill/empty-" + std::to_string(i), std::string(), {});
      } catch (const Error& e) {
        failed = true;
        CHECK(std::string(e.what()).find("/fill/empty-" + std::to_string(i)) != std::string::npos);
      }
    }
    CHECK(failed);
    CHECK(fs.read_file("/keep") == "kept");
  }
  require_clean(image);
}

TEST_CASE("ext4: what cannot be written safely is refused with a reason", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);

  SECTION("no filesystem at the offset") {
    CHECK_THROWS_WITH(Ext4Filesystem::open(image, 0, region_length, Ext4Access::read_only),
                      Catch::Contains("superblock") && Catch::Contains("offset 0"));
  }
  SECTION("a filesystem larger than its partition") {
    CHECK_THROWS_WITH(Ext4Filesystem::open(image, region_offset, region_length / 2, Ext4Access::read_write),
                      Catch::Contains("larger than its partition"));
  }
  SECTION("writes through a read-only handle") {
    auto fs = Ext4Filesystem::open(image, region_offset, region_length, Ext4Access::read_only);
    CHECK_THROWS_WITH(fs.write_file("/x", std::string("x"), {}), Catch::Contains("read-only"));
    CHECK(fs.list_directory("/").size() == 1);  // lost+found
  }
  SECTION("features this code does not write") {
    auto other = dir / "inline.img";
    auto made = aggrik8s::test::run("truncate -s 8M '" + other.string() + "' && mke2fs -q -F -t ext4 -O inline_data,quota '" +
                                    other.string() + "'");
    REQUIRE(made.exit_code == 0);
    CHECK_THROWS_WITH(Ext4Filesystem::open(other, 0, 8 << 20, Ext4Access::read_write),
                      Catch::Contains("inline_data") && Catch::Contains("quota"));
    // Reading is fine.
    CHECK_NOTHROW(Ext4Filesystem::open(other, 0, 8 << 20, Ext4Access::read_only));
  }
  SECTION("bad paths") {
    auto fs = open_rw(image);
    CHECK_THROWS_WITH(fs.write_file("relative", std::string("x"), {}), Catch::Contains("not absolute"));
    CHECK_THROWS_WITH(fs.write_file("/missing/x", std::string("x"), {}), Catch::Contains("does not exist"));
    CHECK_THROWS_WITH(fs.create_symlink("/l", std::string(5000, 'x')), Catch::Contains("fit in a block"));
    fs.write_file("/file", std::string("x"), {});
    CHECK_THROWS_WITH(fs.create_directories("/file/sub"), Catch::Contains("not a directory"));
  }
  require_clean(image);
}

TEST_CASE("ext4: the same edits with a fixed time give byte-identical images", "[ext4]") {
  TempDir dir;
  aggrik8s::Ext4CreateOptions options;
  options.uuid = "8d6f0a5e-2f1c-4c7e-9d55-1a2b3c4d5e6f";
  options.fixed_time = 1700000000;
  auto build = [&](const std::string& name) {
    auto image = make_image(dir, name, options);
    auto fs = open_rw(image, 1700000100);
    fs.create_directories("/usr/local/bin");
    fs.write_file("/usr/local/bin/rke2", random_bytes(200000, 9), {0755, 0, 0, {}});
    fs.create_symlink("/usr/local/bin/kubectl", "rke2");
    fs.write_file("/usr/local/bin/rke2", random_bytes(100000, 10), {0755, 0, 0, {}});
    fs.close();
    return aggrik8s::Sha256::of_file(image).hex();
  };
  auto first = build("a.img");
  auto second = build("b.img");
  CHECK(first == second);
}

TEST_CASE("ext4: written_extents covers every byte an edit changed, including what closing wrote", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  {
    auto fs = open_rw(image, 1700000000);
    fs.create_directories("/etc/rancher/rke2");
    fs.write_file("/etc/rancher/rke2/config.yaml", "token: x\n", {0600, 0, 0, {}});
    fs.close();
  }
  std::filesystem::copy_file(image, dir / "before.img");
  std::vector<aggrik8s::DataExtent> written;
  {
    // The image's device records what libext2fs wrote through it.
    aggrik8s::FileBlockDevice device(image, aggrik8s::FileBlockDevice::Access::read_write);
    auto fs = Ext4Filesystem::open(device, region_offset, region_length, Ext4Access::read_write, 1700000001);
    fs.write_file("/etc/hostname", "n2\n", {0644, 0, 0, {}});
    fs.write_file("/etc/rancher/rke2/config.yaml", "token: y\nnode-name: n2\n", {0600, 0, 0, {}});
    fs.write_file("/big", random_bytes(300000, 7), {0644, 0, 0, {}});
    fs.create_symlink("/etc/link", "hostname");
    fs.remove("/etc/hostname");
    fs.close();
    written = device.written_extents();
  }
  REQUIRE_FALSE(written.empty());
  for (std::size_t i = 1; i < written.size(); ++i) {
    CHECK(written[i - 1].offset + written[i - 1].length < written[i].offset);  // merged and sorted
  }
  // Every byte that differs lies inside what was reported written (the superblock, the
  // bitmaps and group descriptors are written by close()).
  std::ifstream a(dir / "before.img", std::ios::binary);
  std::ifstream b(image, std::ios::binary);
  std::string x(512, '\0');
  std::string y(512, '\0');
  std::size_t differing = 0;
  for (std::uint64_t offset = 0; a.read(x.data(), 512) && b.read(y.data(), 512); offset += 512) {
    if (x == y) continue;
    ++differing;
    for (std::uint64_t i = 0; i < 512; ++i) {
      if (x[i] == y[i]) continue;
      bool covered = std::any_of(written.begin(), written.end(), [&](const aggrik8s::DataExtent& e) {
        return e.offset <= offset + i && offset + i < e.offset + e.length;
      });
      INFO("offset " << offset + i);
      CHECK(covered);
    }
  }
  CHECK(differing > 300000 / 512);
  for (const auto& e : written) {
    CHECK(e.offset >= region_offset);
    CHECK(e.offset + e.length <= region_offset + region_length);
  }
  require_clean(image);
}

TEST_CASE("ext4: a filesystem on any BlockDevice is read and written through that device", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  std::ifstream in(image, std::ios::binary);
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  aggrik8s::MemoryBlockDevice memory(std::move(bytes), "in memory");
  {
    auto fs = Ext4Filesystem::open(memory, region_offset, region_length, Ext4Access::read_write, 1700000000);
    fs.create_directories("/etc");
    fs.write_file("/etc/hostname", "in-memory\n", {0644, 0, 0, {}});
    fs.close();
  }
  // Nothing reached the file: the edit lives in the device's bytes only.
  CHECK_FALSE(Ext4Filesystem::open(image, region_offset, region_length, Ext4Access::read_only).exists("/etc/hostname"));
  auto copy = dir / "copy.img";
  {
    std::ofstream out(copy, std::ios::binary);
    out.write(reinterpret_cast<const char*>(memory.bytes().data()), static_cast<std::streamsize>(memory.bytes().size()));
  }
  require_clean(copy);
  CHECK(Ext4Filesystem::open(copy, region_offset, region_length, Ext4Access::read_only).read_file("/etc/hostname") ==
        "in-memory\n");
}

TEST_CASE("ext4: a write the device refuses fails with the device's own message", "[ext4]") {
  TempDir dir;
  auto image = make_image(dir);
  aggrik8s::FileBlockDevice device(image, aggrik8s::FileBlockDevice::Access::read_only);
  auto fs = Ext4Filesystem::open(device, region_offset, region_length, Ext4Access::read_write);
  CHECK_THROWS_WITH(fs.write_file("/x", std::string(10000, 'x'), {0644, 0, 0, {}}),
                    Catch::Contains("fs.img: opened read-only, cannot write"));
}
