#pragma once
// The kernel arguments that tell an ephemeral node's initramfs where its root and identity are. Two
// writers must agree byte for byte: `serve`, which writes them into cmdline.txt per TFTP request
// (netboot/service/ephemeral_pi_build), and `build`, which bakes them into an ephemeral node's signed
// HTTP boot.img, which serve cannot rewrite (builder/rpi/ephemeral_output). Hence one function here.
// The initramfs reads them (builder/rpi/ephemeral_init.sh).
#include <string>
#include <string_view>

namespace aggrik8s {

// Where an ephemeral node finds its root and identity: what serve's URLs name.
struct EphemeralRootLocation {
  std::string url_base;  // "<serve base URL>/ephemeral/<nodes-file profile>"
  std::string build_id;
  std::string root_file;  // "root.squashfs", relative to the build directory
  std::string root_sha256;
};

// `node_cmdline` (trailing blanks dropped) plus aggrik8s.root=<base>/<build>/<root_file>,
// aggrik8s.root_sha256= and aggrik8s.identity=<base>/<build>/identity/<node>: one line ending in "\n".
std::string ephemeral_boot_cmdline(std::string_view node_cmdline, const EphemeralRootLocation& root, const std::string& node);

}  // namespace aggrik8s
