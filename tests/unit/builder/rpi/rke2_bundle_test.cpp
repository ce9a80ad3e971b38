// The RKE2 bundle is unpacked by placing its files from the tar (their blocks allocated, their bytes
// copied in by the build's writer) rather than written through libext2fs: the filesystem must come
// out byte for byte as unpacking the same archive into memory and writing it gives, for every tar
// dialect GNU tar writes, with long names, hard links, symlinks, sparse and empty members.
#include "builder/rpi/rke2_bundle.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/sha256.hpp"
#include "disk/copied_ranges.hpp"
#include "disk/ext4_filesystem.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using aggrik8s::builder::install_rke2_bundle;
using aggrik8s::builder::read_rke2_bundle;
using aggrik8s::builder::Rke2BundleMember;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t filesystem_length = 64 << 20;
constexpr std::int64_t fixed_time = 1700000000;

struct Installed {
  std::size_t windows = 0;      // regular members found as windows of the tar
  std::size_t copied_ranges = 0;
};

// Installs `tarball` into a copy of `empty` at `image` and writes its placed files' bytes as a build does.
Installed install(const fs::path& empty, const fs::path& image, const fs::path& tarball, std::uint64_t block_size) {
  fs::copy_file(empty, image, fs::copy_options::overwrite_existing);
  const auto bundle = read_rke2_bundle(tarball, "/usr/local", block_size);
  Installed result;
  for (const auto& member : bundle.members) result.windows += member.window ? 1U : 0U;
  CopiedFiles copied;
  copied.paths.push_back(tarball);
  {
    auto rootfs = Ext4Filesystem::open(image, 0, filesystem_length, Ext4Access::read_write, fixed_time);
    install_rke2_bundle(rootfs, bundle, fixed_time, 0, 0, copied.ranges);
    rootfs.close();
  }
  result.copied_ranges = copied.ranges.size();
  if (!copied.ranges.empty()) {
    CopiedRangeWriter writer(image, copied, CopiedRangeWriter::Mode::cached);
    writer.wait();
  }
  return result;
}

}  // namespace

TEST_CASE("rke2 bundle: files placed from the tar give the filesystem that writing them gives", "[ext4]") {
  const std::string format = GENERATE("gnu", "posix", "ustar", "oldgnu");
  INFO("tar --format=" << format);
  test::TempDir dir;
  const fs::path tree = dir / "tree";
  fs::create_directories(tree / "bin");
  fs::create_directories(tree / "share/rke2/empty-dir");
  fs::create_directories(tree / "lib/systemd/system");
  // A binary with zero blocks inside (left as holes), longer than a 4 MiB chunk, ending mid-block.
  {
    std::ofstream out(tree / "bin/rke2", std::ios::binary);
    out << test::random_bytes(5 << 20, 1) << std::string(5 * 4096, '\0') << test::random_bytes(3001, 2);
  }
  test::write_file(tree / "bin/rke2-killall.sh", "#!/bin/sh\necho killall\n");
  test::write_file(tree / "lib/systemd/system/rke2-server.service", "[Unit]\nDescription=Rancher Kubernetes Engine v2 (server)\n");
  test::write_file(tree / "share/rke2/empty", "");
  test::write_file(tree / "share/rke2/LICENSE.txt", test::random_bytes(4096, 3));  // exactly one block
  fs::create_symlink("rke2-killall.sh", tree / "bin/rke2-stop.sh");
  fs::create_hard_link(tree / "bin/rke2-killall.sh", tree / "bin/rke2-killall-hard.sh");
  // A file mostly hole: GNU and pax tars store it as a sparse member, which is not one window of the tar.
  {
    std::ofstream out(tree / "share/rke2/sparse.bin", std::ios::binary);
    out << test::random_bytes(5000, 4);
  }
  fs::resize_file(tree / "share/rke2/sparse.bin", 3 << 20);
  {
    std::fstream out(tree / "share/rke2/sparse.bin", std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(3 << 20);
    out << "end";
  }
  if (format != "ustar") {
    // Longer than ustar's 100-byte name field: a GNU long-name or pax path record before the header.
    fs::create_directories(tree / "share" / std::string(120, 'd'));
    test::write_file(tree / "share" / std::string(120, 'd') / "file", test::random_bytes(10000, 5));
  }
  const fs::path tar = dir / "rke2.linux-arm64.tar";
  const std::string sparse = format == "gnu" || format == "posix" ? " --sparse" : "";
  auto made = test::run("tar --format=" + format + sparse + " --sort=name --owner=0 --group=0 -cf " + tar.string() +
                        " -C " + tree.string() + " .");
  REQUIRE(made.exit_code == 0);
  REQUIRE(test::run("gzip -kn " + tar.string()).exit_code == 0);

  const fs::path empty = dir / "empty.img";
  { std::ofstream create(empty); }
  fs::resize_file(empty, filesystem_length);
  create_ext4_filesystem(empty, 0, filesystem_length, {.label = "rootfs", .populate_from = {}, .fixed_time = fixed_time,
                                                       .uuid = "0f6a3f5e-3b3c-4c44-9b69-2b8a5d1c7e01"});
  const std::uint64_t block_size = Ext4Filesystem::open(empty, 0, filesystem_length, Ext4Access::read_only).space_usage().block_size;

  const auto placed = install(empty, dir / "placed.img", tar, block_size);
  const auto written = install(empty, dir / "written.img", fs::path(tar.string() + ".gz"), block_size);
  // Every regular member with bytes but the sparse one (where the tar keeps it sparse) is a window.
  CHECK(placed.windows >= 4);
  CHECK(placed.copied_ranges >= 4);
  CHECK(written.windows == 0);  // a compressed tar has no windows: read into memory
  CHECK(written.copied_ranges == 0);
  CHECK(Sha256::of_file(dir / "placed.img") == Sha256::of_file(dir / "written.img"));

  auto rootfs = Ext4Filesystem::open(dir / "placed.img", 0, filesystem_length, Ext4Access::read_only);
  for (const char* name : {"bin/rke2", "bin/rke2-killall.sh", "lib/systemd/system/rke2-server.service", "share/rke2/empty",
                           "share/rke2/LICENSE.txt", "share/rke2/sparse.bin"}) {
    INFO(name);
    CHECK(rootfs.read_file(std::string("/usr/local/") + name) == test::read_file(tree / name));
  }
  if (format != "ustar") {
    const std::string long_name = "share/" + std::string(120, 'd') + "/file";
    CHECK(rootfs.read_file("/usr/local/" + long_name) == test::read_file(tree / long_name));
  }
  CHECK(rootfs.read_symlink("/usr/local/bin/rke2-stop.sh") == "rke2-killall.sh");
  const auto original = rootfs.status("/usr/local/bin/rke2-killall.sh");
  const auto hard = rootfs.status("/usr/local/bin/rke2-killall-hard.sh");
  CHECK(hard.inode == original.inode);
  CHECK(original.link_count == 2);
  CHECK(rootfs.status("/usr/local/share/rke2/empty-dir").type == Ext4FileType::directory);
  CHECK(rootfs.status("/usr/local/bin/rke2").uid == 0);
  CHECK(rootfs.status("/usr/local/bin/rke2").mtime.seconds == fixed_time);
  // The holes stay holes: 5 MiB + one partial block of data, not the zero blocks between.
  CHECK(rootfs.status("/usr/local/bin/rke2").allocated_bytes < (5 << 20) + 2 * 4096);
  auto fsck = test::run("/sbin/e2fsck -fn " + (dir / "placed.img").string());
  CHECK(fsck.exit_code == 0);
  INFO(fsck.output);
}

TEST_CASE("rke2 bundle: members that would land outside the prefix are refused, naming the tarball") {
  test::TempDir dir;
  for (const char* name : {"../etc/passwd", "/etc/shadow", "bin/../../x"}) {
    INFO(name);
    const fs::path tar = dir / "evil.tar";
    const std::string script = "import io, tarfile\n"
                               "with tarfile.open('" + tar.string() + "', 'w', format=tarfile.GNU_FORMAT) as t:\n"
                               "    data = b'x'\n"
                               "    info = tarfile.TarInfo('" + name + "')\n"
                               "    info.size = len(data)\n"
                               "    t.addfile(info, io.BytesIO(data))\n";
    test::write_file(dir / "make.py", script);
    REQUIRE(test::run("python3 " + (dir / "make.py").string()).exit_code == 0);
    CHECK_THROWS_WITH(read_rke2_bundle(tar, "/usr/local", 4096), Catch::Contains("would land outside /usr/local") &&
                                                                    Catch::Contains(name));
  }
  // Not an archive at all: the error names the file.
  test::write_file(dir / "not.tar", "hello, this is not a tar archive of any kind ...");
  CHECK_THROWS_WITH(read_rke2_bundle(dir / "not.tar", "/usr/local", 4096), Catch::Contains("not.tar"));
}
