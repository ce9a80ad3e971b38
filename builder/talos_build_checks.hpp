#pragma once
// What a talos-iso build checks before any download or write, in one place so that `validate` runs
// the same checks as `build` (docs/proxmox.md, "What the build does"):
//   - each machine config secret: parsed and checked (file:line:col),
//   - per node: the patches applied in order, then the node's own fields, and the result checked
//     (file:line:col of the failing patch operation, or node/field),
//   - the netboot kernel command line, which depends only on the profile, within 4096 bytes.
// The ISO outputs' command lines also depend on the ISO's grub.cfg and UKIs; build checks them once
// it has read the ISO.
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "builder/talos_kernel_args.hpp"
#include "builder/talos_machine_config.hpp"
#include "core/diagnostics.hpp"
#include "core/sha256.hpp"

namespace aggrik8s::builder {

struct TalosNodeConfig {
  const TalosNode* node = nullptr;
  TalosMachineConfig config;
  std::string yaml;         // config.yaml as written for the node (a secret)
  Sha256Digest fingerprint;  // of `yaml`, for the manifest
};

// Loads every config secret once (throws Error naming the reference when one cannot be read), checks
// it, and patches it for each of `nodes`. Problems go to `diagnostics`; a node with any is left out.
std::vector<TalosNodeConfig> prepare_talos_node_configs(const Profile& profile,
                                                        const std::vector<const TalosNode*>& nodes,
                                                        Diagnostics& diagnostics);

// boot.ipxe's kernel arguments for `node` (without initrd=): Talos' defaults for `version`, the node's
// kernel_args, talos.config=<netboot_url>/<node>/config.yaml with ${...} filled in. Throws Error for
// a ${...} the node cannot fill.
std::vector<std::string> talos_netboot_command_line(const TalosVersion& version, const TalosNode& node,
                                                    const std::string& netboot_url);
// The line as the kernel receives it from iPXE; too long -> an error at "<node>/kernel_args".
void check_talos_netboot_command_line(const std::vector<std::string>& args, const TalosNode& node,
                                      Diagnostics& diagnostics);

// All of the above that needs no input file, for `validate`: configs and patches of every node, and,
// when the profile states talos.version, the netboot command lines (errors) and, for the ISO
// outputs, an estimate with Talos' default arguments in place of the ISO's own (a warning).
void check_talos_profile(const Profile& profile, Diagnostics& diagnostics);

}  // namespace aggrik8s::builder
