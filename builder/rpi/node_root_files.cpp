#include "builder/rpi/node_root_files.hpp"

#include <map>
#include <nlohmann/json.hpp>

#include "builder/rpi/rke2_node_files.hpp"
#include "builder/rpi/rootfs_overlay.hpp"
#include "core/secret.hpp"
#include "disk/ext4_filesystem.hpp"

namespace aggrik8s::builder {

std::vector<std::string> write_node_root_files(Ext4Filesystem& rootfs, const Rpi5Node& node, const NodeRootContext& context) {
  std::vector<std::string> written;
  std::optional<Secret> token;
  if (node.rke2.token) token = load_secret(*node.rke2.token);
  RootfsChanges changes = rke2_node_changes(node, token, RootfsFacts{context.network_manager});
  for (const auto& dir : changes.directories) rootfs.create_directories(dir);
  for (const auto& file : changes.files) {
    rootfs.write_file(file.path, file.content, {file.permissions, 0, 0, std::nullopt});
    written.push_back(file.path + (file.contains_secret ? " (0600, holds a secret)" : ""));
  }
  for (const auto& link : changes.symlinks) {
    rootfs.create_symlink(link.path, link.target);
    written.push_back(link.path + " -> " + link.target);
  }
  std::map<std::string, std::string> values{{"node", node.name},
                                            {"hostname", node.system.hostname},
                                            {"role", node.rke2.role},
                                            {"profile", context.profile.name}};
  for (const auto& path : install_overlays(rootfs, node.overlays, values, context.fixed_time, context.boot_mount)) {
    written.push_back("overlay " + path);
  }
  // What was preloaded, for `aggrik8s-image inspect` and for people on the node: the version is not
  // in any file of the RKE2 bundle, and the archives' checksums are lost once they are copied. No
  // secrets: config.yaml's token stays in config.yaml.
  const Rke2Release& release = context.release;
  nlohmann::json archives = nlohmann::json::array();
  for (const auto& archive : release.images) {
    archives.push_back({{"file", archive.source.file_name()}, {"size", archive.size}, {"sha256", archive.sha256.hex()}});
  }
  nlohmann::json preload{{"tool", {{"name", "aggrik8s-image"}, {"version", AGGRIK8S_VERSION}}},
                         {"profile", context.profile.name},
                         {"node", node.name},
                         {"hostname", node.system.hostname},
                         {"role", node.rke2.role},
                         {"rke2_version", release.version},
                         {"architecture", release.architecture},
                         {"bundle", {{"file", release.bundle.source.file_name()}, {"sha256", release.bundle.sha256.hex()}}},
                         {"image_archives", context.image_archives_in_root ? archives : nlohmann::json::array()}};
  if (!context.image_archives_in_root) preload["image_archives_omitted"] = archives;
  rootfs.create_directories("/usr/local/share/aggrik8s");
  rootfs.write_file(preload_record_path, preload.dump(2) + "\n", {0644, 0, 0, std::nullopt});
  written.push_back(std::string(preload_record_path));
  return written;
}

}  // namespace aggrik8s::builder
