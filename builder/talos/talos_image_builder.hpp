#pragma once
// `aggrik8s-image build` for kind talos-iso: one Talos ISO (or kernel + initramfs), machine configs
// and a node list -> per node, what its Proxmox VM needs to come up configured (docs/proxmox.md).
//
// The order of work, and why:
//   1. load every machine config secret, check it, patch it for each node and check the result —
//      before fetching or writing anything, so a bad patch costs nothing and leaves nothing;
//   2. fetch the ISO / kernel / initramfs (cache, checksums), find the Talos version (profile, else
//      the ISO's volume id) and check it is a Talos ISO (/boot/vmlinuz, /boot/initramfs.xz, grub.cfg);
//   3. build each node's kernel command lines and check them against what the kernel they boot keeps
//      (its setup header's cmdline_size);
//   4. write the outputs the profile asks for:
//        config-iso  <node>-config.iso (label metal-iso, /config.yaml) and, once, talos-metal-iso.iso:
//                    the input ISO with talos.config=metal-iso (+ the arguments all nodes share);
//        iso         <node>.iso: the input ISO remastered with the node's config and arguments;
//        netboot     netboot/<node>/{vmlinuz, initramfs.xz, config.yaml, boot.ipxe} for `serve`;
//   5. SHA256SUMS and manifest.json (config fingerprints only, never config text).
// Files are written under ".partial" names (netboot: the node's directory) and renamed when complete;
// a failed build removes what it wrote. Files holding a machine config are mode 0600.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "builder/build_output.hpp"
#include "builder/profile.hpp"

namespace aggrik8s::builder {

struct TalosBuiltNode {
  std::string name;
  std::string config_method;     // for the iso output: "metal-iso" or "embedded+metal-iso"
  std::vector<BuiltFile> files;  // every output file of the node
};

struct TalosBuildResult {
  std::string talos_version;
  std::optional<BuiltFile> shared_boot_iso;  // talos-metal-iso.iso, for config-iso outputs
  std::vector<TalosBuiltNode> nodes;
  std::filesystem::path manifest;
  std::filesystem::path checksums;
};

TalosBuildResult build_talos_outputs(const Profile& profile, const BuildOptions& options);

}  // namespace aggrik8s::builder
