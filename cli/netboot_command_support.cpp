#include "cli/netboot_command_support.hpp"

#include <cstdio>

#include "core/error.hpp"
#include "core/log.hpp"
#include "site/nodes_file.hpp"
#include "site/site_inventory.hpp"

namespace aggrik8s::cli {

namespace {

ConfigNode derive_site_nodes_file(const std::filesystem::path& file, Diagnostics& diagnostics,
                                  const std::optional<std::filesystem::path>& output_dir) {
  auto loaded = site::load_site(file, diagnostics, builder::ProfileCheckOptions{false, false});
  if (!loaded) return {};
  if (output_dir) loaded->site.output = *output_dir;
  try {
    return site::derive_nodes_file(*loaded);
  } catch (const Error& e) {
    diagnostics.error({file.string(), 0, 0}, e.what());
    return {};
  }
}

}  // namespace

ConfigNode site_nodes_file(const std::filesystem::path& file, Diagnostics& diagnostics) {
  return derive_site_nodes_file(file, diagnostics, std::nullopt);
}

netboot::SiteNodesFileLoader site_nodes_file_in(std::optional<std::filesystem::path> output_dir) {
  if (!output_dir) return &site_nodes_file;
  return [output_dir](const std::filesystem::path& file, Diagnostics& diagnostics) {
    return derive_site_nodes_file(file, diagnostics, output_dir);
  };
}

ServeFileKind serve_file_kind(const std::filesystem::path& file) {
  Diagnostics ignored;
  ConfigNode tree = load_yaml_file(file, ignored);
  // A profile that `extends:` another may have its kind there.
  if (!tree.is_map() || tree.find("kind") != nullptr || tree.find("extends") != nullptr) return ServeFileKind::none;
  for (const char* key : {"listen", "tftp", "http", "dhcp", "inventory", "site", "node_secrets"}) {
    if (tree.find(key) != nullptr) return ServeFileKind::netboot_config;
  }
  // Only nodes files have a top-level profiles: map (a site names a profile per machine), an
  // unknown_nodes: policy, or nodes that are matched (a profile's nodes: entries have no match:). Such a
  // file that lacks profiles: is then told so, not that it lacks a profile's kind.
  if (tree.find("profiles") != nullptr || tree.find("unknown_nodes") != nullptr) return ServeFileKind::nodes_file;
  if (const ConfigNode* nodes = tree.find("nodes"); nodes != nullptr && nodes->is_sequence()) {
    for (const auto& node : nodes->items) {
      if (node.is_map() && node.find("match") != nullptr) return ServeFileKind::nodes_file;
    }
  }
  return ServeFileKind::none;
}

void print_netboot_check(const std::string& source, const netboot::NetbootConfig& config,
                         const netboot::SiteNodesFileLoader& site_nodes) {
  netboot::NetbootCheck check = netboot::check_netboot_configuration(config, site_nodes);
  for (const auto& warning : check.warnings) log::warning(warning);
  std::string what;
  if (config.inventory || config.site) {
    what = std::to_string(check.nodes) + " node" + (check.nodes == 1 ? "" : "s") + ", " + std::to_string(check.profiles) +
           " profile" + (check.profiles == 1 ? "" : "s") + "; ";
  }
  std::string url = check.base_url_stand_in ? "command lines checked with " + check.base_url +
                                                   ", the longest URL serve's address and port can make"
                                             : "boot scripts name " + check.base_url;
  std::printf("%s: ok (%s%s)\n", source.c_str(), what.c_str(), url.c_str());
}

}  // namespace aggrik8s::cli
