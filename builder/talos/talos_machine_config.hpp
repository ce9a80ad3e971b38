#pragma once
// Talos machine configs (from `talosctl gen config`): read, check, patch per node, write back.
//
// A config is multi-document YAML: the first document is the v1alpha1 config (`version: v1alpha1`,
// `machine`, `cluster`), later ones are typed documents (`apiVersion`/`kind`). It carries the
// cluster's PKI, so messages name keys and places, never values. Pure code: the text comes from
// load_secret() and goes to a 0600 file or an ISO written elsewhere.
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "core/config_node.hpp"
#include "core/diagnostics.hpp"

namespace aggrik8s::builder {

struct TalosMachineConfig {
  std::vector<ConfigNode> documents;  // documents[0]: the v1alpha1 config

  std::string machine_type() const;  // "" when missing
  // The documents joined with "---" lines: what config.yaml holds.
  std::string to_yaml() const;
};

// Splits and parses `text`; `name` is the secret's file (or "env:NAME") for file:line:col messages.
// Syntax errors go to `diagnostics` without quoting the text.
std::optional<TalosMachineConfig> parse_talos_machine_config(const std::string& text, const std::string& name,
                                                             Diagnostics& diagnostics);

// Structure checks. `node` names the node for errors that have no place in a file (after patching:
// "cp1/machine.install.disk"); empty for the config as loaded, whose errors point into its file.
// `require_install_disk` is false before patches (a node's install_disk may supply it).
void validate_talos_machine_config(const TalosMachineConfig& config, const std::string& node,
                                   bool require_install_disk, Diagnostics& diagnostics);

// The node's hostname, addresses, gateway and install disk as an RFC 7396 merge patch on the v1alpha1
// document (machine.network.hostname, machine.network.interfaces, machine.install.disk).
ConfigNode talos_node_identity_patch(const TalosNode& node);

// The node's config: `base` with the node's patches applied in order (profile-wide ones first), then
// its identity patch (so the node's own fields win), then checked. nullopt with diagnostics when a
// patch does not apply, changes machine.type, or the result is not a valid config.
std::optional<TalosMachineConfig> talos_config_for_node(const TalosMachineConfig& base, const TalosNode& node,
                                                        Diagnostics& diagnostics);

}  // namespace aggrik8s::builder
