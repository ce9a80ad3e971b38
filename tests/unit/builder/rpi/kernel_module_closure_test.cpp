// Which modules an ephemeral initramfs carries, in which order, from modules.dep and modules.builtin.
#include "builder/rpi/kernel_module_closure.hpp"

#include <catch2/catch.hpp>

#include "core/error.hpp"

using aggrik8s::builder::kernel_module_name;
using aggrik8s::builder::resolve_kernel_modules;
using Catch::Matchers::Contains;

namespace {

// Shaped like Debian's 6.1 arm64 modules.dep (depmod lists a module's dependencies after its colon).
const char* const modules_dep =
    "kernel/fs/squashfs/squashfs.ko:\n"
    "kernel/drivers/block/loop.ko:\n"
    "kernel/fs/overlayfs/overlay.ko:\n"
    "kernel/drivers/net/ethernet/cadence/macb.ko: kernel/drivers/net/phy/phylink.ko kernel/drivers/net/mdio/of_mdio.ko "
    "kernel/drivers/net/mdio/fwnode_mdio.ko kernel/drivers/net/phy/fixed_phy.ko kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/phy/phylink.ko: kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/mdio/of_mdio.ko: kernel/drivers/net/mdio/fwnode_mdio.ko kernel/drivers/net/phy/fixed_phy.ko "
    "kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/mdio/fwnode_mdio.ko: kernel/drivers/net/phy/fixed_phy.ko kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/phy/fixed_phy.ko: kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/phy/libphy.ko:\n"
    "kernel/drivers/net/phy/broadcom.ko: kernel/drivers/net/phy/bcm-phy-ptp.ko kernel/drivers/net/phy/bcm-phy-lib.ko "
    "kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/phy/bcm-phy-lib.ko: kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/phy/bcm-phy-ptp.ko: kernel/drivers/net/phy/libphy.ko\n"
    "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
    "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
    "kernel/net/core/failover.ko:\n";
const char* const modules_builtin = "kernel/net/packet/af_packet.ko\nkernel/net/unix/unix.ko\nkernel/drivers/virtio/virtio.ko\n";

}  // namespace

TEST_CASE("module names: directory and .ko (.xz, .zst, .gz) dropped, '-' is '_'", "[modules]") {
  CHECK(kernel_module_name("kernel/drivers/net/phy/bcm-phy-lib.ko") == "bcm_phy_lib");
  CHECK(kernel_module_name("kernel/fs/squashfs/squashfs.ko.xz") == "squashfs");
  CHECK(kernel_module_name("virtio-net") == "virtio_net");
  CHECK(kernel_module_name("overlay.ko.zst") == "overlay");
}

TEST_CASE("module closure: dependencies first, each module once, in request order", "[modules]") {
  auto closure = resolve_kernel_modules(modules_dep, modules_builtin, {"squashfs", "macb", "broadcom"}, {"virtio-net"}, "6.1.0-57-arm64");
  CHECK(closure.load_order == std::vector<std::string>{
                                  "kernel/fs/squashfs/squashfs.ko",
                                  "kernel/drivers/net/phy/libphy.ko",
                                  "kernel/drivers/net/phy/phylink.ko",
                                  "kernel/drivers/net/phy/fixed_phy.ko",
                                  "kernel/drivers/net/mdio/fwnode_mdio.ko",
                                  "kernel/drivers/net/mdio/of_mdio.ko",
                                  "kernel/drivers/net/ethernet/cadence/macb.ko",
                                  "kernel/drivers/net/phy/bcm-phy-ptp.ko",
                                  "kernel/drivers/net/phy/bcm-phy-lib.ko",
                                  "kernel/drivers/net/phy/broadcom.ko",
                                  "kernel/net/core/failover.ko",
                                  "kernel/drivers/net/net_failover.ko",
                                  "kernel/drivers/net/virtio_net.ko",
                              });
  REQUIRE(closure.requested.size() == 4);
  CHECK(closure.requested[3].name == "virtio_net");
  CHECK(closure.requested[3].available);
  CHECK_FALSE(closure.requested[3].required);
}

TEST_CASE("module closure: built-in modules need nothing loaded, absent optional ones are noted", "[modules]") {
  auto closure = resolve_kernel_modules(modules_dep, modules_builtin, {"af_packet", "loop", "loop"}, {"virtio_mmio", "unix"}, "k");
  CHECK(closure.load_order == std::vector<std::string>{"kernel/drivers/block/loop.ko"});
  REQUIRE(closure.requested.size() == 4);
  CHECK(closure.requested[0].name == "af_packet");
  CHECK(closure.requested[0].built_in);
  CHECK(closure.requested[1].name == "loop");
  CHECK_FALSE(closure.requested[1].built_in);
  CHECK(closure.requested[2].name == "virtio_mmio");
  CHECK_FALSE(closure.requested[2].available);
  CHECK(closure.requested[3].built_in);
}

TEST_CASE("module closure: compressed modules (Debian's .ko.xz, .ko.zst) resolve like plain ones", "[modules]") {
  const char* dep = "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/drivers/net/phy/broadcom.ko.zst: kernel/drivers/net/phy/bcm-phy-lib.ko.zst\n"
                    "kernel/drivers/net/phy/bcm-phy-lib.ko.zst:\n";
  auto closure = resolve_kernel_modules(dep, "", {"overlay", "broadcom"}, {}, "6.12.25+rpt-rpi-2712");
  CHECK(closure.load_order == std::vector<std::string>{"kernel/fs/overlayfs/overlay.ko.xz", "kernel/drivers/net/phy/bcm-phy-lib.ko.zst",
                                                       "kernel/drivers/net/phy/broadcom.ko.zst"});
}

TEST_CASE("module closure: a missing required module names itself and the kernel", "[modules]") {
  CHECK_THROWS_WITH(resolve_kernel_modules(modules_dep, modules_builtin, {"squashfs", "bcmgenet"}, {}, "6.1.0-57-arm64"),
                    Contains("missing module: bcmgenet is neither in modules.dep nor in modules.builtin of kernel 6.1.0-57-arm64"));
}

TEST_CASE("module closure: malformed modules.dep, unlisted dependency and cycles are errors with the place", "[modules]") {
  CHECK_THROWS_WITH(resolve_kernel_modules("kernel/a.ko:\nnonsense line\n", "", {"a"}, {}, "k"),
                    Contains("modules.dep of kernel k, line 2: expected 'path.ko: dependencies...'"));
  CHECK_THROWS_WITH(resolve_kernel_modules("kernel/a.ko: kernel/b.ko\n", "", {"a"}, {}, "k"),
                    Contains("kernel/a.ko depends on kernel/b.ko, which modules.dep does not list"));
  CHECK_THROWS_WITH(resolve_kernel_modules("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n", "", {"a"}, {}, "k"),
                    Contains("dependency cycle through kernel/a.ko"));
}
