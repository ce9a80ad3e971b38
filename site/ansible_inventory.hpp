#pragma once
// `aggrik8s-image export ansible SITE`: the site's RKE2 machines as a YAML inventory in the shape
// rancherfederal/rke2-ansible (v2, the rewrite of 2025-01) reads, so Day-2 runs of its site.yml work
// on exactly the nodes, names, addresses, labels and taints the images were built with.
//
// Variable names were read from rke2-ansible at commit 629e070f (2025-12-12): roles/rke2/defaults/
// main.yml (rke2_install_version, rke2_install_tarball_url, rke2_install_local_tarball_path,
// rke2_images_urls, rke2_images_local_tarball_path, rke2_kubernetes_api_server_host), docs/README.md
// (cluster_rke2_config / group_rke2_config / host_rke2_config, node_labels) and
// roles/rke2/tasks/{main,config,save_generated_token,previous_install,tarball_install}.yml (how they are
// used). v1.x names (install_rke2_version, group `rke2_config`, node_ip/node_taints as role inputs) are
// gone from v2; node_name/node_ip/node_labels/node_taints are still written as plain host facts for
// playbooks of one's own. docs/site.md, "Ansible (rke2-ansible)", explains every choice.
#include <string>

#include "site/site_inventory.hpp"

namespace aggrik8s::site {

// The inventory document: a comment header, `all.vars` (rke2_install_version, the air-gap variables
// left empty because the images already carry RKE2 and its image archives, rke2_token as a reference,
// cluster_rke2_config, site.ansible vars), and `rke2_cluster.children.rke2_servers/rke2_agents` with
// group_rke2_config and one host per RKE2 machine (ansible_host, node facts, host_rke2_config). Talos
// VMs are left out: rke2-ansible's site.yml runs on `hosts: all`. Deterministic: the site's machine
// order (the bootstrap server first, since rke2-ansible starts the cluster on rke2_servers[0]), the
// profiles' key order, no time stamps. No secret is read: the token appears only as a reference.
// Throws aggrik8s::Error when the site has no RKE2 machine, when its RKE2 machines' profiles disagree on
// rke2.version (naming both machines and profiles), or when a machine's profile has no node for it.
// What rke2-ansible would trip over in an inventory that is still right for the site goes to `warnings`
// (when given): a site of agents only (rke2_servers is written empty; rke2-ansible needs a server), an
// IPv6 address as rke2_kubernetes_api_server_host (rke2-ansible builds an unbracketed URL from it).
std::string ansible_inventory_yaml(const LoadedSite& site, Diagnostics* warnings = nullptr);

}  // namespace aggrik8s::site
