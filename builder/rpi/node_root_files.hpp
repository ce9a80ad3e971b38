#pragma once
// What a node's root filesystem gets on top of the prepared (shared) root: RKE2's per-node files
// (config.yaml with the token, the enabled unit, modules-load), the node's overlays and the preload
// record. One function for both outputs: the disk image writes them into the node's copy of the root
// filesystem, the ephemeral output into a scratch filesystem that becomes the node's layer.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "builder/rpi/rke2_release.hpp"

namespace aggrik8s {
class Ext4Filesystem;
}

namespace aggrik8s::builder {

struct NodeRootContext {
  const Profile& profile;
  const Rke2Release& release;
  bool network_manager = false;  // the root has /etc/NetworkManager (canal's interfaces are unmanaged there)
  std::string boot_mount;        // where the node mounts its boot partition (overlays may not write below it)
  std::optional<std::int64_t> fixed_time;
  // false: the ephemeral root leaves the image archives out (output.ephemeral.image_archives: omit);
  // the preload record then lists them as omitted rather than preloaded.
  bool image_archives_in_root = true;
};

// Writes them and returns one line per change, for the build's manifest (secrets are named, never shown).
std::vector<std::string> write_node_root_files(Ext4Filesystem& rootfs, const Rpi5Node& node, const NodeRootContext& context);

}  // namespace aggrik8s::builder
