#pragma once
// The nodes file `serve` boots a site from (docs/netboot.md, "Nodes file (inventory) reference"),
// derived from the site inventory and where `build SITE` writes each profile's outputs: what
// `serve --site` serves and `export nodes` prints. Pure: no file is read; every path points into the
// build outputs (site::profile_output_directory), every value's location into the site file, so a
// problem `serve` finds when it reads the tree (a missing image, a kernel line too long) names the
// site's line of the machine it concerns.
//
// Derived profiles, by the machine's build profile kind and `boot`:
//   rpi5-rke2  netboot    "<profile>.<node>": rpi_image {image: <out>/<node>.img, boot_img:
//                         <out>/<node>.boot.img with output.http_boot} — one per machine, since
//                         rpi_image serves one image
//   rpi5-rke2  ephemeral  "<serve_profile or profile>": rpi_ephemeral {build: <out>/ephemeral/<profile>},
//                         shared by the profile's ephemeral machines; its name is the one the build
//                         wrote into the nodes' boot.img URLs (output.ephemeral.serve_profile)
//   talos-iso  netboot    "<profile>.<node>": talos {kernel, initramfs: <out>/netboot/<node>/...,
//                         args}, the node's talos_config {file: <out>/netboot/<node>/config.yaml}
//   talos-iso  ephemeral  the same with mode: ephemeral (the wipe cycle)
//   any        disk       "<profile>:disk": mode: local without a target, so serve still knows the
//                         machine (DHCP reservation, boot events) and sends it to its own disk
// Names are unambiguous: profile and node names are DNS labels, which hold neither '.' nor ':'.
// A machine with no serial, MAC or UUID (a disk-booted Pi may have none) gets no node: serve has
// nothing to recognise it by, and a node without selectors is refused by its reader.
#include "core/config_node.hpp"
#include "site/site_inventory.hpp"

namespace aggrik8s::site {

// The nodes-file tree for every machine of `site` (netboot::parse_node_inventory reads it). Throws
// aggrik8s::Error when two derived profiles would share a name (an ephemeral serve_profile equal to
// another derived profile's name).
ConfigNode derive_nodes_file(const LoadedSite& site);

}  // namespace aggrik8s::site
