#include "builder/talos_build_checks.hpp"

#include <algorithm>
#include <map>

#include "builder/talos_boot_files.hpp"
#include "core/error.hpp"
#include "core/secret.hpp"

namespace aggrik8s::builder {

std::vector<TalosNodeConfig> prepare_talos_node_configs(const Profile& profile,
                                                        const std::vector<const TalosNode*>& nodes,
                                                        Diagnostics& diagnostics) {
  std::map<std::string, std::optional<TalosMachineConfig>> loaded;  // by secret reference
  std::vector<TalosNodeConfig> configs;
  for (const TalosNode* node : nodes) {
    const SecretReference& reference = node->config ? *node->config : *profile.talos.config;
    std::string key = reference.describe();
    if (!loaded.contains(key)) {
      std::string name = reference.kind == SecretReference::Kind::file ? reference.name : "env:" + reference.name;
      Secret secret = load_secret(reference);
      auto config = parse_talos_machine_config(secret.reveal(), name, diagnostics);
      if (config) {
        Diagnostics checks;
        validate_talos_machine_config(*config, "", false, checks);
        diagnostics.append(checks);
        if (checks.has_errors()) config.reset();
      }
      loaded[key] = std::move(config);
    }
    const auto& base = loaded[key];
    if (!base) continue;
    auto config = talos_config_for_node(*base, *node, diagnostics);
    if (!config) continue;
    TalosNodeConfig prepared;
    prepared.node = node;
    prepared.yaml = config->to_yaml();
    prepared.fingerprint = Sha256::of(prepared.yaml);
    prepared.config = std::move(*config);
    configs.push_back(std::move(prepared));
  }
  return configs;
}

std::vector<std::string> talos_netboot_command_line(const TalosVersion& version, const TalosNode& node,
                                                    const std::string& netboot_url) {
  std::string base = netboot_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string url = substitute_talos_url_variables(base + "/" + node.name + "/config.yaml", node.name, node.uuid,
                                                   node.mac, node.hostname);
  std::vector<std::string> args = append_kernel_args(talos_default_kernel_args(version), node.kernel_args);
  args.push_back("talos.config=" + url);
  return args;
}

void check_talos_netboot_command_line(const std::vector<std::string>& args, const TalosNode& node,
                                      Diagnostics& diagnostics) {
  if (auto problem = check_kernel_command_line(join_kernel_args(args) + " initrd=initramfs.xz")) {
    diagnostics.error({node.name + "/kernel_args", 0, 0}, "netboot: " + *problem);
  }
}

void check_talos_profile(const Profile& profile, Diagnostics& diagnostics) {
  std::vector<const TalosNode*> nodes;
  for (const auto& node : profile.talos_nodes) nodes.push_back(&node);
  try {
    prepare_talos_node_configs(profile, nodes, diagnostics);
  } catch (const Error& e) {
    // A secret that went away since the profile was read; the message names it, never its value.
    diagnostics.error({profile.file.string(), 0, 0}, e.what());
  }
  const auto& outputs = profile.talos.outputs;
  auto wants = [&](const char* output) { return std::find(outputs.begin(), outputs.end(), output) != outputs.end(); };
  if (!profile.talos.version) return;
  auto version = TalosVersion::parse(*profile.talos.version);
  if (!version) return;  // the profile reader has reported it
  for (const TalosNode* node : nodes) {
    if (wants("netboot") && profile.talos.netboot_url) {
      try {
        check_talos_netboot_command_line(talos_netboot_command_line(*version, *node, *profile.talos.netboot_url),
                                         *node, diagnostics);
      } catch (const Error& e) {
        diagnostics.error({profile.file.string(), 0, 0}, e.what());  // the message names node/field
      }
    }
    if (wants("iso") || wants("config-iso")) {
      // The ISO's own arguments are only known once build reads it; Talos' defaults for the version
      // are what its imager writes, so a line over the limit with them is worth a warning here.
      std::vector<std::string> estimate{"BOOT_IMAGE=/boot/vmlinuz"};
      estimate = append_kernel_args(estimate, talos_default_kernel_args(*version));
      estimate = append_kernel_args(estimate, node->kernel_args);
      estimate.push_back("talos.config=metal-iso");
      if (auto problem = check_kernel_command_line(join_kernel_args(estimate))) {
        diagnostics.warning({node->name + "/kernel_args", 0, 0},
                            "iso: with Talos' default arguments for " + version->str() + ", " + *problem +
                                "; build checks the ISO's real command line");
      }
    }
  }
}

}  // namespace aggrik8s::builder
