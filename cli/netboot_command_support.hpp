#pragma once
// What serve and validate share: the nodes file a site derives, and telling serve's own files
// (netboot.yaml, the nodes file) from profiles and sites.
#include <filesystem>
#include <optional>
#include <string>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "netboot/service/netboot_service.hpp"

namespace aggrik8s::cli {

// The nodes file a site derives (site/nodes_file.hpp), at start and at every reload, so that an edited
// site or a rebuild takes effect on SIGHUP. Profiles' own secrets (password hashes, tokens) are the
// build's business: serve needs only the paths of what was built.
ConfigNode site_nodes_file(const std::filesystem::path& file, Diagnostics& diagnostics);
// The same for a site built with `build SITE --out DIR`: its outputs under DIR, not the site's output:.
netboot::SiteNodesFileLoader site_nodes_file_in(std::optional<std::filesystem::path> output_dir);

// A YAML file without `kind` or `extends` is not a profile or a site: serve's netboot configuration
// has listen/tftp/http/dhcp/inventory keys, a nodes file a profiles: map. `validate` checks those as
// `serve --check` does.
enum class ServeFileKind { none, netboot_config, nodes_file };
ServeFileKind serve_file_kind(const std::filesystem::path& file);

// `serve --check` and `validate` of a serve file: loads `config` as serve does at start, prints its
// warnings and "SOURCE: ok (...)" on stdout; throws aggrik8s::Error with the problems.
void print_netboot_check(const std::string& source, const netboot::NetbootConfig& config,
                         const netboot::SiteNodesFileLoader& site_nodes = &site_nodes_file);

}  // namespace aggrik8s::cli
