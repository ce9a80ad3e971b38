#pragma once
// The per-node files an RKE2 node needs in its root filesystem, as install.sh and the RKE2 docs lay
// them out, computed without touching an image (so they are unit-tested as plain data).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "core/secret.hpp"

namespace aggrik8s::builder {

// Where the builder records what it preloaded (0644, no secrets), for `inspect` and for people on the
// node. docs/profiles.md describes it.
inline constexpr const char* preload_record_path = "/usr/local/share/aggrik8s/preload.json";

struct ImageFile {
  std::string path;     // absolute, inside the root filesystem
  std::string content;
  std::uint16_t permissions = 0644;
  bool contains_secret = false;  // never logged or put in a manifest
};

struct ImageSymlink {
  std::string path;
  std::string target;
};

struct RootfsChanges {
  std::vector<std::string> directories;  // created 0755 root:root, parents first
  std::vector<ImageFile> files;
  std::vector<ImageSymlink> symlinks;
};

struct RootfsFacts {
  bool network_manager = false;  // /etc/NetworkManager exists: canal needs its interfaces unmanaged
};

// /etc/rancher/rke2/config.yaml (0600: it holds the token), registries.yaml, the enabled unit
// (symlink into multi-user.target.wants), modules-load and NetworkManager settings.
RootfsChanges rke2_node_changes(const Rpi5Node& node, const std::optional<Secret>& token, const RootfsFacts& facts);

// config.yaml's text: the profile's keys in order, then token, server and node-name unless set.
std::string rke2_config_yaml(const Rpi5Node& node, const std::optional<Secret>& token);

}  // namespace aggrik8s::builder
