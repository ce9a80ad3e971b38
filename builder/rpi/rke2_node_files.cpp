#include "builder/rpi/rke2_node_files.hpp"

namespace aggrik8s::builder {
namespace {

ConfigNode scalar(const std::string& value, bool quoted = false) {
  ConfigNode node;
  node.kind = ConfigNode::Kind::scalar;
  node.scalar = value;
  node.quoted = quoted;
  return node;
}

}  // namespace

std::string rke2_config_yaml(const Rpi5Node& node, const std::optional<Secret>& token) {
  ConfigNode config = node.rke2.config.is_map() ? node.rke2.config : ConfigNode{};
  config.kind = ConfigNode::Kind::map;
  if (config.find("node-name") == nullptr) config.set("node-name", scalar(node.system.hostname));
  if (node.rke2.server) config.set("server", scalar(*node.rke2.server));
  // Quoted: a token that looks like a number or a boolean must still be read as a string.
  if (token) {
    std::string value = token->reveal();
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r' || value.back() == ' ')) value.pop_back();
    config.set("token", scalar(value, true));
  }
  return "# Written by aggrik8s-image for node " + node.name + (token ? ". Holds the join token: keep it 0600" : "") +
         ".\n" + to_yaml(config);
}

RootfsChanges rke2_node_changes(const Rpi5Node& node, const std::optional<Secret>& token, const RootfsFacts& facts) {
  RootfsChanges changes;
  changes.directories = {"/etc/rancher", "/etc/rancher/rke2", "/etc/systemd/system",
                         "/etc/systemd/system/multi-user.target.wants", "/etc/modules-load.d"};
  changes.files.push_back({"/etc/rancher/rke2/config.yaml", rke2_config_yaml(node, token), 0600, token.has_value()});
  if (node.rke2.registries) {
    // Registry mirrors may carry credentials (configs.*.auth): treated as a secret file.
    changes.files.push_back({"/etc/rancher/rke2/registries.yaml", to_yaml(*node.rke2.registries), 0600, true});
  }
  // RKE2's units load these too (ExecStartPre=modprobe), but loading them at boot lets sysctl settings
  // for bridged traffic apply before RKE2 starts.
  changes.files.push_back({"/etc/modules-load.d/rke2.conf", "br_netfilter\noverlay\n", 0644, false});
  if (facts.network_manager) {
    changes.directories.push_back("/etc/NetworkManager/conf.d");
    changes.files.push_back({"/etc/NetworkManager/conf.d/rke2-canal.conf",
                             "# Canal's interfaces are managed by the CNI, not NetworkManager (RKE2 docs).\n"
                             "[keyfile]\nunmanaged-devices=interface-name:flannel*;interface-name:cali*;interface-name:tunl*;"
                             "interface-name:vxlan.calico;interface-name:vxlan-v6.calico;interface-name:wireguard.cali;"
                             "interface-name:wg-v6.cali\n",
                             0644, false});
  }
  const std::string unit = "rke2-" + node.rke2.role + ".service";
  changes.symlinks.push_back(
      {"/etc/systemd/system/multi-user.target.wants/" + unit, "/usr/local/lib/systemd/system/" + unit});
  return changes;
}

}  // namespace aggrik8s::builder
