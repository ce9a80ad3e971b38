// The pure decisions of the ephemeral output: kernel config, fstab, cmdline, hosts, memory budget.
#include <catch2/catch.hpp>

#include "builder/rpi/ephemeral_root_plan.hpp"

using namespace aggrik8s::builder;

namespace {
// As Raspberry Pi OS's bcm2712 kernel has them (modules for squashfs, loop and overlay).
const std::string pi_kernel_config =
    "CONFIG_BLK_DEV_INITRD=y\nCONFIG_DEVTMPFS=y\nCONFIG_TMPFS=y\nCONFIG_SQUASHFS=m\n# CONFIG_SQUASHFS_ZSTD is not set\n"
    "CONFIG_SQUASHFS_XZ=y\nCONFIG_SQUASHFS_ZLIB=y\nCONFIG_BLK_DEV_LOOP=y\nCONFIG_OVERLAY_FS=m\n";
}  // namespace

TEST_CASE("ephemeral: a kernel config is checked for what a squashfs root under an overlay needs", "[ephemeral]") {
  CHECK(ephemeral_kernel_config_problems(pi_kernel_config, "xz").empty());
  CHECK(ephemeral_kernel_config_problems(pi_kernel_config, "gzip").empty());
  auto zstd = ephemeral_kernel_config_problems(pi_kernel_config, "zstd");
  REQUIRE(zstd.size() == 1);
  CHECK(zstd[0].find("CONFIG_SQUASHFS_ZSTD is not set (needs y)") == 0);
  CHECK(zstd[0].find("output.ephemeral.compression") != std::string::npos);

  std::string no_overlay = pi_kernel_config;
  no_overlay.replace(no_overlay.find("CONFIG_OVERLAY_FS=m"), 19, "CONFIG_OVERLAY_FS=n");
  auto problems = ephemeral_kernel_config_problems(no_overlay, "xz");
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("CONFIG_OVERLAY_FS is n (needs y or m)") == 0);
  // A name that merely ends like another is not it.
  CHECK(ephemeral_kernel_config_problems("CONFIG_XSQUASHFS=y\n", "xz").size() == 7);
}

TEST_CASE("ephemeral: fstab loses the root and boot partition entries, with a note, and keeps the rest", "[ephemeral]") {
  std::string fstab =
      "proc            /proc           proc    defaults          0       0\n"
      "PARTUUID=5452574f-01  /boot/firmware  vfat    defaults          0       2\n"
      "PARTUUID=5452574f-02  /               ext4    defaults,noatime  0       1\n"
      "# a comment naming / stays\n"
      "tmpfs /tmp tmpfs defaults 0 0";
  std::string out = ephemeral_fstab(fstab, "/boot/firmware");
  CHECK(out.find("proc            /proc") == 0);
  CHECK(out.find("\n# aggrik8s-image: ephemeral node (root from RAM, no boot partition): PARTUUID=5452574f-01") !=
        std::string::npos);
  CHECK(out.find("\n# aggrik8s-image: ephemeral node (root from RAM, no boot partition): PARTUUID=5452574f-02") !=
        std::string::npos);
  CHECK(out.find("\n# a comment naming / stays\n") != std::string::npos);
  CHECK(out.ends_with("tmpfs /tmp tmpfs defaults 0 0"));
  CHECK(ephemeral_fstab(out, "/boot/firmware") == out);  // idempotent
}

TEST_CASE("ephemeral: the cmdline loses the disk boot's arguments and gains the node's", "[ephemeral]") {
  std::string firstrun =
      "console=serial0,115200 console=tty1 root=PARTUUID=5452574f-02 rootfstype=ext4 fsck.repair=yes rootwait quiet "
      "init=/usr/lib/raspberrypi-sys-mods/firstboot systemd.run=/boot/firmware/firstrun.sh "
      "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n";
  CHECK(ephemeral_cmdline(firstrun, {"cgroup_enable=memory"}) == "console=serial0,115200 console=tty1 quiet cgroup_enable=memory\n");
  std::string trixie = "console=serial0,115200 root=PARTUUID=5452574f-02 rootwait resize quiet ds=nocloud;i=rpi-imager-1\n";
  CHECK(ephemeral_cmdline(trixie, {"ds=nocloud;i=aggrik8s-w1", "cgroup_enable=memory"}) ==
        "console=serial0,115200 quiet ds=nocloud;i=aggrik8s-w1 cgroup_enable=memory\n");
}

TEST_CASE("ephemeral: /etc/hosts names the node on its 127.0.1.1 line", "[ephemeral]") {
  CHECK(hosts_with_hostname("127.0.0.1\tlocalhost\n127.0.1.1\t\traspberrypi\n", "w1") == "127.0.0.1\tlocalhost\n127.0.1.1\tw1\n");
  CHECK(hosts_with_hostname("127.0.0.1 localhost", "w1") == "127.0.0.1 localhost\n127.0.1.1\tw1\n");
  CHECK(hosts_with_hostname("", "w1") == "127.0.1.1\tw1\n");
}

TEST_CASE("ephemeral: the memory budget counts the root, twice the archives and the reserve", "[ephemeral]") {
  constexpr std::uint64_t MiB = 1ull << 20;
  EphemeralMemoryBudget budget{600 * MiB, 800 * MiB, 1024 * MiB, 4096 * MiB};
  CHECK(budget.needed() == 3224 * MiB);
  CHECK(budget.fits());
  budget.memory = 3000 * MiB;
  CHECK_FALSE(budget.fits());
  CHECK(budget.describe().find("root 600 MiB + image archives unpacked 2 x 800 MiB + runtime reserve 1.00 GiB = ") == 0);
}
