#pragma once
// The `kernel` line of a node's iPXE boot script: what serve puts on it for one request, and whether
// the longest line serve can send a node fits what the node's kernel keeps of it.
//
// A kernel keeps at most its cmdline_size bytes (2047 for Debian's and Talos' x86-64 kernels, read from
// the bzImage setup header; disk/linux_kernel_image.hpp) and cuts the rest without a word, so the
// last arguments, talos.config=... or ds=nocloud;s=..., are lost and the node boots without its config.
// iPXE adds its own bytes (builder/talos_kernel_args.hpp): under UEFI the image name in front
// ("vmlinuz-amd64 ") and the initrd= arguments serve writes for the EFI stub; the BIOS builds keep one
// byte fewer. serve refuses a nodes file with such a line when it starts and on reload, instead of
// finding out at boot (docs/netboot.md, "Kernel command line limit").
//
// Everything here is pure except read_profile_kernels, which reads the head of each kernel file.
#include <filesystem>
#include <map>
#include <optional>
#include <string_view>

#include "core/kernel_command_line.hpp"
#include "core/diagnostics.hpp"
#include "netboot/service/ipxe_script.hpp"
#include "netboot/service/node_inventory.hpp"

namespace aggrik8s::netboot {

// What `profile` boots for `node` (null: a machine not in the inventory) asking with `facts`, its URLs
// under `base_url`: Talos' "talos.platform=metal slab_nomerge pti=on", the profile's args with
// {base_url} {node} {mac} {uuid} filled in, and talos.config=<base_url>/talos/<id>/config.yaml (a node
// with talos_config) or ds=nocloud;s=<base_url>/cloud-init/<id>/ (a node with user_data), where <id> is
// the MAC as aa-bb-cc-dd-ee-ff, else the UUID. nullopt for a Raspberry Pi image, which iPXE does not boot.
std::optional<IpxeKernelBoot> ipxe_kernel_boot(const BootProfile& profile, const InventoryNode* node,
                                               const NodeFacts& facts, std::string_view base_url);

// The kernel file a Talos or kernel profile boots; null for a Raspberry Pi image.
const std::filesystem::path* profile_kernel_file(const BootProfile& profile);

// The limit of every Talos and kernel profile's kernel file, by path. A file whose header is no x86
// bzImage or arm64 image (or cannot be read) gets 2047 bytes, what x86-64 and arm64 kernels keep
// (COMMAND_LINE_SIZE 2048), and a warning at its profile that says so.
std::map<std::filesystem::path, KernelFile> read_profile_kernels(const NodeInventory& inventory,
                                                                            Diagnostics& diagnostics);

// Every node's (and the unknown_nodes profile's) longest kernel line, for UEFI and for BIOS iPXE,
// against its kernel in `kernels` (a kernel not in it is not checked). A selector the node does not
// have is filled with the longest value a request can carry (a MAC's 17 characters, a UUID's 36; a
// node without match.mac also without any MAC, so that its URLs carry the UUID). An error at the node
// (file:line:col of the nodes file) names it, the byte counts, the loader and the first argument that
// would be lost. Profiles in mode `local` send no kernel line.
void check_ipxe_kernel_lines(const NodeInventory& inventory, std::string_view base_url,
                             const std::map<std::filesystem::path, KernelFile>& kernels,
                             Diagnostics& diagnostics);

}  // namespace aggrik8s::netboot
