// `aggrik8s-image flash` against regular files and loop devices (never a real disk): byte-exact copies
// from raw, compressed and bmap'd sources, bmap interop with bmaptool both ways, corrupt sources,
// an interrupted flash, the safety refusals, per-node edits of the boot partition, and the read-back
// (with one and several requests in flight) finding a byte the target changed after its write.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <utility>

#include "disk/bmap.hpp"
#include "flash/image_flasher.hpp"
#include "disk/image_stream.hpp"
#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {

std::string q(const fs::path& path) { return "'" + path.string() + "'"; }
std::string cli() { return test::cli_path().string(); }

void require_run(const std::string& command) {
  auto result = test::run(command);
  INFO(command << "\n" << result.output);
  REQUIRE(result.exit_code == 0);
}

bool same_prefix(const fs::path& a, const fs::path& b, std::uint64_t bytes) {
  return test::run("cmp -n " + std::to_string(bytes) + " " + q(a) + " " + q(b)).exit_code == 0;
}
bool same_file(const fs::path& a, const fs::path& b) { return test::run("cmp " + q(a) + " " + q(b)).exit_code == 0; }
// No valid first block: the first MiB holds only zeros (a target shorter than that counts too).
bool first_mib_is_zero(const fs::path& target) {
  auto r = test::run("head -c 1048576 " + q(target) + " | tr -d '\\000' | wc -c");
  return r.exit_code == 0 && std::stoul(r.output) == 0;
}

// 64 MiB, mostly hole: an MBR-like first sector, random data, text, an allocated zero run, and a few
// bytes in the last (short) block: the size is not a multiple of 4 KiB.
fs::path make_image(const test::TempDir& dir, const std::string& name = "image.img") {
  auto image = dir / name;
  require_run("truncate -s 67108000 " + q(image));
  require_run("head -c 446 /dev/urandom | dd of=" + q(image) + " conv=notrunc status=none");
  require_run("printf '\\125\\252' | dd of=" + q(image) + " bs=1 seek=510 conv=notrunc status=none");
  require_run("head -c 3M /dev/urandom | dd of=" + q(image) + " bs=1M seek=1 conv=notrunc status=none");
  require_run("head -c 1234567 /dev/urandom | dd of=" + q(image) + " bs=4096 seek=5000 conv=notrunc status=none");
  require_run("yes 'kernel: rke2 node ready' | head -c 2M | dd of=" + q(image) + " bs=1M seek=40 conv=notrunc status=none");
  require_run("dd if=/dev/zero of=" + q(image) + " bs=1M seek=50 count=2 conv=notrunc status=none");
  require_run("printf 'end' | dd of=" + q(image) + " bs=1 seek=67107990 conv=notrunc status=none");
  return image;
}

// A loop device over a file in the test directory, detached when the test ends (even on failure).
class LoopDevice {
 public:
  // sector_size: the device's logical sector size (losetup --sector-size); 0 for the default, 512.
  explicit LoopDevice(const fs::path& backing, unsigned sector_size = 0) {
    std::string option = sector_size != 0 ? "--sector-size " + std::to_string(sector_size) + " " : "";
    auto r = test::run("losetup -f --show " + option + q(backing) + " 2>&1");
    if (r.exit_code == 0 && r.output.starts_with("/dev/loop")) {
      path_ = r.output.substr(0, r.output.find('\n'));
    } else {
      reason_ = r.output;
    }
  }
  ~LoopDevice() {
    if (!path_.empty()) test::run("umount " + q(path_) + " 2>/dev/null; losetup -d " + q(path_));
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  bool ok() const { return !path_.empty(); }
  const fs::path& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  fs::path path_;
  std::string reason_;
};

// Changes one byte of the target in place, as a failing card would, with direct I/O so that no
// cache (the page cache, a loop device's) hides it from the read-back. Runs on a flash thread, so it
// reports failure by throwing, not with Catch assertions.
void corrupt_byte(const fs::path& target, std::uint64_t offset) {
  int fd = ::open(target.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
  if (fd < 0) throw Error("test: cannot open " + target.string() + " with O_DIRECT");
  auto* block = static_cast<unsigned char*>(std::aligned_alloc(4096, 4096));
  off_t at = static_cast<off_t>(offset / 4096 * 4096);
  bool done = ::pread(fd, block, 4096, at) == 4096;
  block[offset % 4096] ^= 0x5a;
  done = done && ::pwrite(fd, block, 4096, at) == 4096;
  std::free(block);
  ::close(fd);
  if (!done) throw Error("test: cannot change the byte at " + std::to_string(offset) + " of " + target.string());
}

#define REQUIRE_LOOP(loop)                                                        \
  if (!(loop).ok()) {                                                             \
    WARN("skipping: losetup failed (not root, or no loop devices): " << (loop).reason()); \
    return;                                                                       \
  }

}  // namespace

TEST_CASE("flash: raw, zstd, xz and gzip sources, with and without a bmap, make exact copies", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("zstd -q -T0 " + q(image) + " -o " + q(dir / "image.img.zst"));
  require_run("xz -T2 -k -c " + q(image) + " > " + q(dir / "image.img.xz"));
  require_run("gzip -k -c " + q(image) + " > " + q(dir / "image.img.gz"));
  for (const char* source : {"image.img", "image.img.zst", "image.img.xz", "image.img.gz"}) {
    auto copy = dir / "copy.img";
    auto r = test::run(cli() + " flash " + q(dir / source) + " " + q(copy));
    INFO(source << "\n" << r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(r.output.find("verified") != std::string::npos);
    CHECK(same_file(image, copy));
  }
  // With our bmap beside the image (found automatically), for raw and compressed sources.
  write_bmap_file(create_bmap(image), dir / "image.img.bmap");
  for (const char* source : {"image.img", "image.img.zst"}) {
    auto copy = dir / "copy-bmap.img";
    auto r = test::run(cli() + " flash " + q(dir / source) + " " + q(copy));
    INFO(source << "\n" << r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(r.output.find("using the bmap") != std::string::npos);
    CHECK(same_file(image, copy));
  }
  // --no-verify and --no-bmap still copy.
  auto r = test::run(cli() + " flash --no-verify --no-bmap " + q(image) + " " + q(dir / "plain.img"));
  INFO(r.output);
  CHECK(r.output.find("not verified") != std::string::npos);
  CHECK(same_file(image, dir / "plain.img"));
}

TEST_CASE("flash: bmap interop: bmaptool copies with our bmap, we flash with bmaptool's", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  write_bmap_file(create_bmap(image), dir / "ours.bmap");
  require_run("bmaptool copy --bmap " + q(dir / "ours.bmap") + " " + q(image) + " " + q(dir / "by-bmaptool.img"));
  CHECK(same_file(image, dir / "by-bmaptool.img"));

  require_run("bmaptool create -o " + q(dir / "theirs.bmap") + " " + q(image));
  auto r = test::run(cli() + " flash --bmap " + q(dir / "theirs.bmap") + " " + q(image) + " " + q(dir / "by-us.img"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(same_file(image, dir / "by-us.img"));
}

TEST_CASE("flash: corrupt sources are detected and leave no partition table", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  write_bmap_file(create_bmap(image), dir / "image.bmap");
  // One byte changed inside a mapped range (the random data at 1 MiB).
  require_run("cp --sparse=always " + q(image) + " " + q(dir / "bad.img"));
  require_run("printf 'X' | dd of=" + q(dir / "bad.img") + " bs=1 seek=2000000 conv=notrunc status=none");
  auto r = test::run(cli() + " flash --bmap " + q(dir / "image.bmap") + " " + q(dir / "bad.img") + " " + q(dir / "t.img"));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("source checksum mismatch") != std::string::npos);
  CHECK(r.output.find("blocks 256-") != std::string::npos);
  CHECK(first_mib_is_zero(dir / "t.img"));

  // A truncated zstd file.
  require_run("zstd -q " + q(image) + " -o " + q(dir / "image.img.zst"));
  require_run("head -c 1000000 " + q(dir / "image.img.zst") + " > " + q(dir / "cut.img.zst"));
  r = test::run(cli() + " flash --no-bmap " + q(dir / "cut.img.zst") + " " + q(dir / "t2.img"));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("truncated") != std::string::npos);
  CHECK(first_mib_is_zero(dir / "t2.img"));

  // --sha256 pins the source as stored.
  r = test::run(cli() + " flash --sha256 " + std::string(64, 'a') + " " + q(image) + " " + q(dir / "t3.img"));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("source checksum mismatch") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "t3.img"));
  std::string digest = test::run("sha256sum " + q(image) + " | cut -c1-64").output.substr(0, 64);
  r = test::run(cli() + " flash --sha256 " + digest + " " + q(image) + " " + q(dir / "t4.img"));
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(same_file(image, dir / "t4.img"));
}

TEST_CASE("flash: a file:// URL goes through the fetch cache", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("zstd -q " + q(image) + " -o " + q(dir / "image.img.zst"));
  std::string digest = test::run("sha256sum " + q(dir / "image.img.zst") + " | cut -c1-64").output.substr(0, 64);
  auto r = test::run(cli() + " flash --cache-dir " + q(dir / "cache") + " --sha256 " + digest + " file://" +
                     (dir / "image.img.zst").string() + " " + q(dir / "copy.img"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(same_file(image, dir / "copy.img"));
}

TEST_CASE("flash: loop device: mapped data written, first and last MiB handled, image too large refused", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  write_bmap_file(create_bmap(image), dir / "image.img.bmap");
  // Zeros where the image has holes (a bmap flash leaves those alone), old data in the first and
  // last MiB (a previous image's partition table and GPT backup).
  require_run("dd if=/dev/zero of=" + q(dir / "disk") + " bs=1M count=96 status=none");
  require_run("head -c 1M /dev/urandom | dd of=" + q(dir / "disk") + " conv=notrunc status=none");
  require_run("head -c 1M /dev/urandom | dd of=" + q(dir / "disk") + " bs=1M seek=95 conv=notrunc status=none");
  LoopDevice loop(dir / "disk");
  REQUIRE_LOOP(loop);
  auto refused = test::run(cli() + " flash " + q(image) + " " + q(loop.path()) + " < /dev/null");
  CHECK(refused.exit_code == 1);
  CHECK(refused.output.find("standard input is not a terminal") != std::string::npos);

  auto r = test::run(cli() + " flash --yes " + q(image) + " " + q(loop.path()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(same_prefix(image, loop.path(), fs::file_size(image)));
  CHECK(test::run("tail -c 1048576 " + q(loop.path()) + " | cmp -n 1048576 - /dev/zero").exit_code == 0);
  // The same from a compressed source with the bmap beside it.
  require_run("zstd -q " + q(image) + " -o " + q(dir / "image.img.zst"));
  r = test::run(cli() + " flash --yes " + q(dir / "image.img.zst") + " " + q(loop.path()));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(same_prefix(image, loop.path(), fs::file_size(image)));

  require_run("truncate -s 32M " + q(dir / "small"));
  LoopDevice small(dir / "small");
  REQUIRE_LOOP(small);
  r = test::run(cli() + " flash --yes " + q(image) + " " + q(small.path()));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("larger than " + small.path().string()) != std::string::npos);
  // Compressed without a bmap, the size is learnt while reading: the message says how far the data
  // reaches (a lower bound), not that this is the image's size.
  fs::remove(dir / "image.img.bmap");
  require_run("zstd -q -f " + q(image) + " -o " + q(dir / "nobmap.img.zst"));
  r = test::run(cli() + " flash --yes " + q(dir / "nobmap.img.zst") + " " + q(small.path()));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("the image does not fit in " + small.path().string() + ": it has data up to byte ") != std::string::npos);
}

TEST_CASE("flash: a device with 4096-byte logical sectors is refused before anything is written", "[flash][integration]") {
  // The image's partition table counts 512-byte sectors; on a 4Kn device (an NVMe namespace so
  // formatted, many USB enclosures) its partitions would land 8x further out: a flash that verifies and
  // never boots.
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("head -c 8M /dev/urandom > " + q(dir / "disk") + " && truncate -s 96M " + q(dir / "disk"));
  const std::string before = test::read_file(dir / "disk").substr(0, 8 << 20);
  LoopDevice loop(dir / "disk", 4096);
  REQUIRE_LOOP(loop);
  auto r = test::run(cli() + " flash --yes " + q(image) + " " + q(loop.path()));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(loop.path().string() + " has 4096-byte logical sectors, but disk images count their "
                                                             "partitions in 512-byte sectors") &&
                           Catch::Contains("nvme format --lbaf=N"));
  test::run("sync");
  CHECK(test::read_file(dir / "disk").substr(0, 8 << 20) == before);
}

TEST_CASE("flash: a mounted loop device and partitions are refused", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("truncate -s 96M " + q(dir / "disk"));
  LoopDevice loop(dir / "disk");
  REQUIRE_LOOP(loop);
  require_run("mkfs.ext4 -q -F " + q(loop.path()));
  fs::create_directories(dir / "mnt");
  auto mounted = test::run("mount " + q(loop.path()) + " " + q(dir / "mnt") + " 2>&1");
  if (mounted.exit_code != 0) {
    WARN("skipping the mounted case: mount failed: " << mounted.output);
    return;
  }
  auto r = test::run(cli() + " flash --yes --force " + q(image) + " " + q(loop.path()));
  // The file behind it, named as a regular-file target (by another name too: a hard link), is the same
  // mounted filesystem: it was written under it.
  require_run("ln " + q(dir / "disk") + " " + q(dir / "disk-link"));
  auto via_file = test::run(cli() + " flash " + q(image) + " " + q(dir / "disk-link"));
  test::run("umount " + q(dir / "mnt"));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("is mounted at " + (dir / "mnt").string()) != std::string::npos);
  INFO(via_file.output);
  CHECK(via_file.exit_code == 1);
  CHECK_THAT(via_file.output, Catch::Contains("it is the backing file of " + loop.path().string() + ", which is in use") &&
                                  Catch::Contains("mounted at " + (dir / "mnt").string()));
  // Unmounted, the file is an ordinary target again.
  auto after = test::run(cli() + " flash " + q(image) + " " + q(dir / "disk-link"));
  INFO(after.output);
  CHECK(after.exit_code == 0);
}

TEST_CASE("flash: killed mid-way, the target has no valid first block", "[flash][integration]") {
  test::TempDir dir;
  // 128 MiB with 100 MiB of data: ~13 buffers of 8 MiB, each followed by the test delay.
  auto big = dir / "big.img";
  require_run("truncate -s 128M " + q(big));
  require_run("head -c 100M /dev/urandom | dd of=" + q(big) + " bs=1M seek=2 conv=notrunc status=none");
  require_run("head -c 446 /dev/urandom | dd of=" + q(big) + " conv=notrunc status=none");
  require_run("printf '\\125\\252' | dd of=" + q(big) + " bs=1 seek=510 conv=notrunc status=none");
  auto old_image = make_image(dir, "old.img");

  auto interrupted = [&](const fs::path& target) {
    // The previous image is there and looks bootable.
    auto r = test::run(cli() + " flash -q --yes " + q(old_image) + " " + q(target));
    REQUIRE(r.exit_code == 0);
    REQUIRE(same_prefix(old_image, target, 512));
    std::string pid_file = (dir / "pid").string();
    require_run("(AGGRIK8S_FLASH_TEST_DELAY_MS=250 " + cli() + " flash -q --yes " + q(big) + " " + q(target) +
                " >/dev/null 2>&1 & echo $! > " + q(pid_file) + ")");
    std::string pid = test::read_file(pid_file);
    pid = pid.substr(0, pid.find('\n'));
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    require_run("kill -9 " + pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // Some data made it (the flash was really under way), yet the first MiB is all zeros: no MBR.
    CHECK(test::run("cmp -n 1048576 -i 2097152 " + q(big) + " " + q(target)).exit_code == 0);
    CHECK(first_mib_is_zero(target));
  };
  SECTION("regular file") { interrupted(dir / "target.img"); }
  SECTION("loop device") {
    require_run("truncate -s 160M " + q(dir / "disk"));
    LoopDevice loop(dir / "disk");
    REQUIRE_LOOP(loop);
    interrupted(loop.path());
  }
}

TEST_CASE("flash: per-node hostname, SSH key and files go into the boot partition and are read back", "[flash][integration]") {
  test::TempDir dir;
  auto image = dir / "pi.img";
  const std::uint64_t boot_sector = 8192;  // 4 MiB
  require_run("truncate -s 96M " + q(image));
  require_run("printf 'label: dos\\nlabel-id: 0x1234abcd\\nstart=8192, size=81920, type=c, bootable\\n' | "
              "sfdisk --no-reread --no-tell-kernel " + q(image));
  require_run("mkfs.fat -F 32 -n bootfs -s 1 --offset=" + std::to_string(boot_sector) + " " + q(image) + " 40960");
  auto files = dir / "files";
  fs::create_directories(files);
  test::write_file(files / "cmdline.txt", "console=serial0,115200 root=PARTUUID=1234abcd-02 rootwait ds=nocloud;i=old-id\n");
  test::write_file(files / "firstrun.sh",
                   "#!/bin/bash\nNEW_HOSTNAME='pi-01'\ncat >\"$HOME_DIR/.ssh/authorized_keys\" <<'AGGRIK8S_KEYS'\n"
                   "ssh-ed25519 AAAAold ops\nAGGRIK8S_KEYS\nexit 0\n");
  std::string mtools = "MTOOLS_SKIP_CHECK=1 mcopy -i " + q(image) + "@@" + std::to_string(boot_sector * 512);
  require_run(mtools + " " + q(files / "cmdline.txt") + " " + q(files / "firstrun.sh") + " ::/");
  test::write_file(dir / "id.pub", "ssh-ed25519 AAAAnew admin@desk\n");
  test::write_file(dir / "wifi.conf", "country=DE\n");

  auto target = dir / "card.img";
  auto r = test::run(cli() + " flash --hostname pi-07 --ssh-key " + q(dir / "id.pub") + " --file " +
                     q((dir / "wifi.conf").string() + ":etc/wifi.conf") + " " + q(image) + " " + q(target));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("read back and checked") != std::string::npos);
  std::string read = "MTOOLS_SKIP_CHECK=1 mtype -i " + q(target) + "@@" + std::to_string(boot_sector * 512);
  auto script = test::run(read + " ::/firstrun.sh");
  CHECK(script.output.find("NEW_HOSTNAME='pi-07'") != std::string::npos);
  CHECK(script.output.find("ssh-ed25519 AAAAold ops\nssh-ed25519 AAAAnew admin@desk\nAGGRIK8S_KEYS") != std::string::npos);
  CHECK(test::run(read + " ::/etc/wifi.conf").output == "country=DE\n");
  require_run("dd if=" + q(target) + " of=" + q(dir / "boot.part") + " bs=512 skip=8192 count=81920 status=none");
  auto fsck = test::run("fsck.fat -n " + q(dir / "boot.part"));
  INFO(fsck.output);
  CHECK(fsck.exit_code == 0);
  // The source image is untouched.
  CHECK(test::run("MTOOLS_SKIP_CHECK=1 mtype -i " + q(image) + "@@" + std::to_string(boot_sector * 512) +
                  " ::/firstrun.sh").output.find("pi-01") != std::string::npos);

  // An image without first-boot files cannot take a hostname: a clear error before the target is touched.
  require_run("MTOOLS_SKIP_CHECK=1 mdel -i " + q(image) + "@@" + std::to_string(boot_sector * 512) + " ::/firstrun.sh");
  r = test::run(cli() + " flash --hostname pi-08 " + q(image) + " " + q(dir / "card2.img"));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("neither firstrun.sh nor cloud-init user-data") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "card2.img"));
}

TEST_CASE("flash: the library reports an image that ends before its bmap says", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  Bmap bmap = create_bmap(image);
  require_run("zstd -q " + q(image) + " -o " + q(dir / "image.img.zst"));
  require_run("head -c 30M " + q(image) + " > " + q(dir / "short.img"));
  require_run("zstd -q " + q(dir / "short.img") + " -o " + q(dir / "short.img.zst"));
  auto stream = open_image_stream(dir / "short.img.zst");
  CHECK_THROWS_WITH(flash_image(*stream, &bmap, dir / "t.img"), Catch::Contains("the image ends at"));
  auto raw = open_image_stream(dir / "short.img");
  CHECK_THROWS_WITH(flash_image(*raw, &bmap, dir / "t.img"), Catch::Contains("do not belong together"));
}

TEST_CASE("flash: several writes and read-backs in flight make exact copies, every written byte read back", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  Bmap bmap = create_bmap(image);
  for (auto [writers, verifiers] : {std::pair{1u, 1u}, std::pair{4u, 3u}, std::pair{8u, 2u}}) {
    for (bool with_bmap : {false, true}) {
      INFO(writers << " writes, " << verifiers << " read-backs in flight, bmap " << with_bmap);
      FlashOptions options;
      options.buffer_size = 1 << 20;  // many buffers and small batches: many hand-overs
      options.write_requests = writers;
      options.verify_requests = verifiers;
      options.verify_batch_bytes = 1 << 20;
      options.check_threads = writers == 1 ? 1 : 3;  // ranges hashed by one, or by three in turn
      unsigned stretches = 0;
      options.before_read_back = [&](std::uint64_t, std::uint64_t) { ++stretches; };
      auto stream = open_image_stream(image);
      auto result = flash_image(*stream, with_bmap ? &bmap : nullptr, dir / "copy.img", options);
      CHECK(same_file(image, dir / "copy.img"));
      CHECK(result.bytes_written > 5u << 20);
      CHECK(result.bytes_verified == result.bytes_written);
      CHECK(stretches >= 4);
    }
  }
}

TEST_CASE("flash: flushes ahead while writing to a direct-I/O target, same bytes as without", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  Bmap bmap = create_bmap(image);
  require_run("truncate -s 96M " + q(dir / "disk"));
  LoopDevice loop(dir / "disk");
  REQUIRE_LOOP(loop);
  for (std::uint64_t flush_ahead : {std::uint64_t{1} << 20, std::uint64_t{1} << 40}) {
    INFO("a flush ahead every " << flush_ahead << " bytes");
    require_run("blkdiscard -f " + q(loop.path()) + " 2>/dev/null || dd if=/dev/zero of=" + q(loop.path()) +
                " bs=1M count=96 status=none");
    FlashOptions options;
    options.buffer_size = 1 << 20;
    options.flush_ahead_bytes = flush_ahead;
    // Paced writers: the flushes ahead run while writing goes on; an unpaced flash of 8 MiB can end
    // before the flush-ahead thread first runs (then the final flush alone does the work).
    options.test_delay_per_buffer = std::chrono::milliseconds(50);
    auto stream = open_image_stream(image);
    auto result = flash_image(*stream, &bmap, loop.path(), options);
    REQUIRE(result.direct_io);
    CHECK(same_prefix(image, loop.path(), fs::file_size(image)));
    CHECK(result.bytes_verified == result.bytes_written);
    // ~8 MiB mapped beyond the first MiB: flushes at 1 MiB, none when the threshold is never reached.
    if (flush_ahead == 1u << 20) {
      CHECK(result.flushes_ahead >= 1);
    } else {
      CHECK(result.flushes_ahead == 0);
    }
  }
}

TEST_CASE("flash: a byte the target changed after it was written is found by the read-back, at its offset", "[flash][integration]") {
  test::TempDir dir;
  auto image = make_image(dir);
  Bmap bmap = create_bmap(image);
  const std::uint64_t bad = (40u << 20) + 777;  // in the text at 40 MiB, past the first batches
  auto flash_and_corrupt = [&](const fs::path& target, unsigned writers, unsigned verifiers) {
    FlashOptions options;
    options.buffer_size = 1 << 20;
    options.write_requests = writers;
    options.verify_requests = verifiers;
    options.verify_batch_bytes = 4 << 20;
    bool corrupted = false;
    options.before_read_back = [&](std::uint64_t from, std::uint64_t to) {
      if (!corrupted && from <= bad && bad < to) {
        corrupt_byte(target, bad);
        corrupted = true;
      }
    };
    auto stream = open_image_stream(image);
    std::string message;
    try {
      flash_image(*stream, &bmap, target, options);
    } catch (const Error& e) {
      message = e.what();
    }
    INFO(message);
    CHECK(corrupted);
    std::smatch found;
    REQUIRE(std::regex_search(message, found,
                              std::regex("verify failed: .* does not hold what was written at offset ([0-9]+) \\(([0-9]+) bytes")));
    std::uint64_t offset = std::stoull(found[1].str());
    std::uint64_t length = std::stoull(found[2].str());
    CHECK(offset <= bad);
    CHECK(bad < offset + length);
    CHECK(length <= options.buffer_size);
    CHECK(first_mib_is_zero(target));  // never committed: no partition table
  };
  SECTION("regular file, one request at a time") { flash_and_corrupt(dir / "target.img", 1, 1); }
  SECTION("regular file, several in flight") { flash_and_corrupt(dir / "target.img", 4, 3); }
  SECTION("loop device, several in flight") {
    require_run("truncate -s 96M " + q(dir / "disk"));
    LoopDevice loop(dir / "disk");
    REQUIRE_LOOP(loop);
    flash_and_corrupt(loop.path(), 4, 2);
  }
}

TEST_CASE("flash: a fake-capacity card that wraps writes onto its start is caught after the last write", "[flash][integration]") {
  // Found flashing an image onto a card whose real capacity is smaller than it reports: writes past the
  // real capacity land on its start again, after the read-back of what was there had passed (every
  // batch is read back as soon as it is written), and flash said "verified". What the wrap does to the
  // start of the data is done here to a file target once every batch was read back (the customisation
  // step runs then), so the read-back of the batches cannot be what finds it.
  test::TempDir dir;
  auto image = make_image(dir);
  Bmap bmap = create_bmap(image);
  const fs::path target = dir / "card.img";
  auto flash_wrapping_onto = [&](std::uint64_t offset) {
    FlashOptions options;
    options.buffer_size = 1 << 20;
    options.verify_batch_bytes = 1 << 20;
    options.customize = [&](BlockDevice&) { corrupt_byte(target, offset); };
    auto stream = open_image_stream(image);
    std::string message;
    try {
      flash_image(*stream, &bmap, target, options);
    } catch (const Error& e) {
      message = e.what();
    }
    INFO(message);
    CHECK_THAT(message, Catch::Contains("no longer holds what was written") && Catch::Contains("fake-capacity"));
    CHECK(first_mib_is_zero(target));  // no partition table on a card that cannot hold the image
  };
  SECTION("the data past the real capacity wraps onto the start of the data (checked before the commit)") {
    flash_wrapping_onto((2u << 20) + 5);
  }
  SECTION("the end of the data wraps into the first MiB, which the commit then writes over (checked after it)") {
    flash_wrapping_onto((41u << 20) + 5);  // in the text at 40-42 MiB, the last data but one block
  }
}

TEST_CASE("flash: a customisation the raw image cannot take fails before the target is touched", "[flash][integration]") {
  // Found flashing --hostname with an image without first-boot files: the card was overwritten first,
  // and the error came after (leaving it without a partition table).
  test::TempDir dir;
  auto image = make_image(dir);  // partition 1 holds random bytes: no FAT, no first-boot files
  const fs::path target = dir / "card.img";
  test::write_file(target, "the card's old content");
  auto r = test::run(cli() + " flash --hostname n7 " + q(image) + " " + q(target));
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("image.img: no partition 1"));
  CHECK(test::read_file(target) == "the card's old content");
}

TEST_CASE("flash: a tar archive of an image is refused, compressed or not", "[flash][integration]") {
  // Found flashing a vendor's image.tar.gz: the decoded tar stream was written as the disk (a tar header
  // where the partition table belongs) and "verified".
  test::TempDir dir;
  auto image = make_image(dir);
  require_run("cd " + q(dir.path()) + " && tar -cf image.tar image.img && gzip -k image.tar");
  for (const char* source : {"image.tar", "image.tar.gz"}) {
    auto r = test::run(cli() + " flash " + q(dir / source) + " " + q(dir / "card.img"));
    INFO(source << "\n" << r.output);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains(std::string(source) + " is a tar archive, not a disk image"));
    CHECK_FALSE(fs::exists(dir / "card.img"));
  }
}
