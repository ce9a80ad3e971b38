// The cmdline.txt baked into an ephemeral node's HTTP boot.img (core/ephemeral_boot_arguments, called by
// the builder) must be what serve writes for the same node over TFTP, byte for byte: the initramfs reads
// the same aggrik8s.* arguments either way.
#include <catch2/catch.hpp>

#include "core/ephemeral_boot_arguments.hpp"
#include "netboot/service/ephemeral_pi_build.hpp"

TEST_CASE("ephemeral: boot.img's cmdline is serve's cmdline for the node", "[ephemeral][http_boot]") {
  aggrik8s::netboot::EphemeralBuildManifest manifest;
  manifest.id = "0123456789abcdef";
  manifest.root_file = "root.squashfs";
  manifest.root_sha256 = std::string(64, 'e');
  const std::string url_base = "http://10.0.0.2:8080/ephemeral/pi-workers";
  aggrik8s::EphemeralRootLocation urls{url_base, manifest.id, manifest.root_file, manifest.root_sha256};
  for (const std::string cmdline : {"console=serial0,115200 console=tty1 rootwait cgroup_enable=memory", "quiet  ", ""}) {
    INFO("'" << cmdline << "'");
    manifest.nodes["w1"].cmdline = cmdline;
    const std::string ours = aggrik8s::ephemeral_boot_cmdline(cmdline, urls, "w1");
    CHECK(ours == aggrik8s::netboot::ephemeral_node_cmdline(manifest, "w1", url_base));
    CHECK(ours.ends_with(" aggrik8s.identity=" + url_base + "/0123456789abcdef/identity/w1\n"));
  }
}
