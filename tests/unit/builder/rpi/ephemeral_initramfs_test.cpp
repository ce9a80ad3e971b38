// The ephemeral node's initramfs from a root filesystem: what it holds, that it is reproducible, and
// what is refused (kernel config, busybox, modules).
#include "builder/rpi/ephemeral_initramfs.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "builder/rpi/static_busybox.hpp"
#include "core/error.hpp"
#include "disk/ext4_filesystem.hpp"
#include "disk/in_memory_compression.hpp"
#include "tests/test_support.hpp"

using aggrik8s::Ext4Access;
using aggrik8s::Ext4Filesystem;
using aggrik8s::builder::busybox_missing_applets;
using aggrik8s::builder::ephemeral_initramfs_applets;
using aggrik8s::builder::initramfs_kernel_config_problems;
using aggrik8s::builder::EphemeralInitramfsOptions;
using aggrik8s::builder::InitramfsCompression;
using aggrik8s::builder::static_arm64_executable_problem;
using aggrik8s::builder::write_ephemeral_initramfs;
using aggrik8s::test::TempDir;
using aggrik8s::test::write_file;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t filesystem_bytes = 16 << 20;
const std::string release = "6.1.0-57-arm64";
const std::string full_config =
    "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_DEVTMPFS=y\nCONFIG_TMPFS=y\nCONFIG_BLK_DEV_LOOP=m\n"
    "CONFIG_SQUASHFS=m\nCONFIG_OVERLAY_FS=m\nCONFIG_PACKET=y\n";

void put16(std::string& b, std::size_t at, std::uint16_t v) {
  for (std::size_t i = 0; i < 2; ++i) b[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void put64(std::string& b, std::size_t at, std::uint64_t v) {
  for (std::size_t i = 0; i < 8; ++i) b[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// A minimal ELF64 executable: header, one or two program headers, busybox's applet name table.
std::string elf(std::uint16_t machine, bool interpreter) {
  std::string b(64 + 2 * 56, '\0');
  b.replace(0, 4, "\x7f" "ELF");
  b[4] = 2;  // ELFCLASS64
  b[5] = 1;  // little-endian
  b[6] = 1;
  put16(b, 16, 2);  // ET_EXEC
  put16(b, 18, machine);
  put64(b, 32, 64);  // e_phoff
  put16(b, 54, 56);
  put16(b, 56, interpreter ? 2 : 1);
  b[64] = 1;  // PT_LOAD
  std::string path = "/lib/ld-linux-aarch64.so.1";
  if (interpreter) {
    b[64 + 56] = 3;  // PT_INTERP
    put64(b, 64 + 56 + 8, b.size());
    put64(b, 64 + 56 + 32, path.size() + 1);
  }
  b += path + '\0';
  b += std::string("[\0[[\0", 5);
  for (const auto& applet : ephemeral_initramfs_applets()) b += applet + '\0';
  return b;
}

struct Root {
  TempDir dir;
  fs::path image = dir / "root.ext4";
};

// A merged-/usr root with a static arm64 "busybox", modules (squashfs compressed with xz) and a config.
void make_root(Root& root, const std::string& busybox, const std::string& config) {
  fs::path tree = root.dir / "tree";
  fs::path modules = tree / "usr/lib/modules" / release;
  fs::create_directories(modules / "kernel/fs/squashfs");
  fs::create_directories(modules / "kernel/drivers/net");
  fs::create_directories(tree / "usr/bin");
  fs::create_directories(tree / "boot");
  fs::create_directory_symlink("usr/lib", tree / "lib");
  write_file(tree / "usr/bin/busybox", busybox);
  if (!config.empty()) write_file(tree / "boot" / ("config-" + release), config);
  write_file(modules / "kernel/fs/squashfs/squashfs.ko", std::string(3000, 's') + "squashfs module");
  write_file(modules / "kernel/drivers/net/failover.ko", "failover module");
  write_file(modules / "kernel/drivers/net/virtio_net.ko", "virtio_net module");
  auto xz = aggrik8s::test::run("xz --check=crc32 '" + (modules / "kernel/fs/squashfs/squashfs.ko").string() + "'");
  REQUIRE(xz.exit_code == 0);
  write_file(modules / "modules.dep",
             "kernel/fs/squashfs/squashfs.ko.xz:\nkernel/drivers/net/virtio_net.ko: kernel/drivers/net/failover.ko\n"
             "kernel/drivers/net/failover.ko:\n");
  write_file(modules / "modules.builtin", "kernel/drivers/block/loop.ko\nkernel/net/packet/af_packet.ko\n");
  write_file(root.image, "");
  fs::resize_file(root.image, filesystem_bytes);
  aggrik8s::create_ext4_filesystem(root.image, 0, filesystem_bytes, {"rootfs", tree, 1767225600, std::nullopt});
}

EphemeralInitramfsOptions options() {
  EphemeralInitramfsOptions o;
  o.kernel_release = release;
  o.required_modules = {"squashfs", "loop"};
  o.optional_modules = {"virtio-net", "af_packet", "virtio_mmio"};
  o.fixed_time = 1767225600;
  return o;
}

}  // namespace

TEST_CASE("initramfs kernel config: what unpacking it and udhcpc need, named with why", "[ephemeral-initramfs]") {
  CHECK(initramfs_kernel_config_problems(full_config, InitramfsCompression::gzip).empty());
  auto problems = initramfs_kernel_config_problems("CONFIG_BLK_DEV_INITRD=y\n# CONFIG_RD_GZIP is not set\nCONFIG_PACKET=m\n",
                                                   InitramfsCompression::gzip);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0] == "CONFIG_RD_GZIP is not set (needs y): the initramfs is gzip'd");
  CHECK(initramfs_kernel_config_problems("CONFIG_BLK_DEV_INITRD=y\nCONFIG_PACKET=m\n", InitramfsCompression::none).empty());
  CHECK(initramfs_kernel_config_problems("CONFIG_BLK_DEV_INITRD=m\n", InitramfsCompression::none) ==
        std::vector<std::string>{"CONFIG_BLK_DEV_INITRD is m (needs y): the kernel must unpack an initramfs",
                                 "CONFIG_PACKET is not set (needs y or m): udhcpc sends DHCP through an AF_PACKET socket"});
}

TEST_CASE("busybox: a static arm64 ELF is accepted, dynamic, other machines and non-ELF say what they are", "[ephemeral-initramfs]") {
  CHECK_FALSE(static_arm64_executable_problem(elf(183, false)).has_value());
  CHECK(static_arm64_executable_problem(elf(183, true)).value() ==
        "a dynamically linked executable (PT_INTERP /lib/ld-linux-aarch64.so.1)");
  CHECK(static_arm64_executable_problem(elf(62, false)).value() == "an ELF for machine 62 (x86-64), not 183 (AArch64)");
  CHECK(static_arm64_executable_problem("#!/bin/sh\n" + std::string(100, ' ')).value() == "not an ELF file");
  CHECK(busybox_missing_applets(elf(183, false), ephemeral_initramfs_applets()).empty());
  CHECK(busybox_missing_applets(elf(183, false), {"udhcpc", "nslookup"}) == std::vector<std::string>{"nslookup"});
}

TEST_CASE("ephemeral initramfs: init, busybox, applets, decompressed modules in load order, console, reproducible",
          "[ephemeral-initramfs]") {
  Root root;
  make_root(root, elf(183, false), full_config);
  Ext4Filesystem fs_root = Ext4Filesystem::open(root.image, 0, filesystem_bytes, Ext4Access::read_only);
  auto built = write_ephemeral_initramfs(fs_root, options(), root.dir / "initramfs.gz");
  CHECK(built.kernel_config_checked);
  CHECK(built.busybox_source == "/usr/bin/busybox of the image");
  CHECK(built.absent_optional_modules == std::vector<std::string>{"virtio_mmio"});
  REQUIRE(built.modules.size() == 5);
  CHECK(built.modules[0].path == "kernel/fs/squashfs/squashfs.ko");
  CHECK(built.modules[1].name == "failover");
  CHECK_FALSE(built.modules[1].requested);
  CHECK(built.modules[2].name == "virtio_net");
  CHECK(built.modules[3].name == "loop");
  CHECK(built.modules[3].built_in);
  CHECK(built.modules[4].name == "af_packet");
  std::string bytes = aggrik8s::test::read_file(root.dir / "initramfs.gz");
  CHECK(built.bytes == bytes.size());
  CHECK(built.sha256 == aggrik8s::Sha256::of(bytes));
  CHECK_FALSE(fs::exists(root.dir / "initramfs.gz.partial"));

  auto again = write_ephemeral_initramfs(fs_root, options(), root.dir / "again.gz");
  CHECK(again.sha256 == built.sha256);

  std::string d = root.dir.path().string();
  auto listing = aggrik8s::test::run("cd '" + d + "' && gzip -dc initramfs.gz | cpio -itv --quiet");
  REQUIRE(listing.exit_code == 0);
  CHECK_THAT(listing.output, Contains("crw-------   1 root     root       5,   1 Jan  1  2026 dev/console"));
  CHECK_THAT(listing.output, Contains("-rwxr-xr-x   1 root     root"));
  CHECK_THAT(listing.output, Contains("bin/udhcpc -> busybox"));
  CHECK_THAT(listing.output, Contains(" newroot\n"));
  auto extract = aggrik8s::test::run("mkdir '" + d + "/x' && cd '" + d + "/x' && gzip -dc ../initramfs.gz | cpio -idm --quiet " +
                                     "--no-absolute-filenames 'init' 'etc/*' 'lib/*' && cat lib/modules/" + release +
                                     "/aggrik8s.modules && head -c 15 init && tail -c 15 lib/modules/" + release +
                                     "/kernel/fs/squashfs/squashfs.ko && ls etc");
  REQUIRE(extract.exit_code == 0);
  CHECK(extract.output == "# Kernel modules for " + release +
                              " in load order (dependencies first), for insmod; written by aggrik8s-image.\n"
                              "# built in: loop af_packet\n"
                              "kernel/fs/squashfs/squashfs.ko\nkernel/drivers/net/failover.ko\nkernel/drivers/net/virtio_net.ko\n"
                              "#!/bin/busybox squashfs module"
                              "udhcpc.script\n");
}

TEST_CASE("ephemeral initramfs: refused with the reason, nothing written", "[ephemeral-initramfs]") {
  SECTION("a dynamically linked busybox in the image") {
    Root root;
    make_root(root, elf(183, true), full_config);
    Ext4Filesystem fs_root = Ext4Filesystem::open(root.image, 0, filesystem_bytes, Ext4Access::read_only);
    CHECK_THROWS_WITH(write_ephemeral_initramfs(fs_root, options(), root.dir / "out"),
                      Contains("/usr/bin/busybox of the image is a dynamically linked executable") &&
                          Contains("set the profile's busybox source"));
    CHECK_FALSE(fs::exists(root.dir / "out"));
  }
  SECTION("a kernel without squashfs") {
    Root root;
    make_root(root, elf(183, false), "CONFIG_BLK_DEV_INITRD=y\nCONFIG_PACKET=y\n");
    Ext4Filesystem fs_root = Ext4Filesystem::open(root.image, 0, filesystem_bytes, Ext4Access::read_only);
    CHECK_THROWS_WITH(write_ephemeral_initramfs(fs_root, options(), root.dir / "out"),
                      Contains("cannot boot an ephemeral node (/boot/config-" + release + ")") && Contains("CONFIG_SQUASHFS is not set") &&
                          Contains("CONFIG_RD_GZIP is not set (needs y): the initramfs is gzip'd"));
  }
  SECTION("a missing extra module; a release the image has no modules for") {
    Root root;
    make_root(root, elf(183, false), "");
    Ext4Filesystem fs_root = Ext4Filesystem::open(root.image, 0, filesystem_bytes, Ext4Access::read_only);
    auto o = options();
    o.extra_modules = {"bcmgenet"};
    CHECK_THROWS_WITH(write_ephemeral_initramfs(fs_root, o, root.dir / "out"), Contains("missing module: bcmgenet"));
    o = options();
    o.kernel_release = "6.6.51+rpt-rpi-2712";
    CHECK_THROWS_WITH(write_ephemeral_initramfs(fs_root, o, root.dir / "out"),
                      Contains("no /lib/modules/6.6.51+rpt-rpi-2712/modules.dep") && Contains("it has modules for: " + release));
    CHECK_FALSE(fs::exists(root.dir / "out"));
  }
}
