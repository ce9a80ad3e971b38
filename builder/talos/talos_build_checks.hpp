#pragma once
// What a talos-iso build checks before any download or write, in one place so that `validate` runs
// the same checks as `build` (docs/proxmox.md, "What the build does"):
//   - each machine config secret: parsed and checked (file:line:col),
//   - per node: the patches applied in order, then the node's own fields, and the result checked
//     (file:line:col of the failing patch operation, or node/field),
//   - every kernel command line against what the kernel it boots keeps (its setup header's
//     cmdline_size: 2047 bytes for Talos' kernels), counting what the boot loader adds (GRUB's
//     "BOOT_IMAGE=/boot/vmlinuz ", iPXE's image name under UEFI). A longer line is cut silently and
//     its last arguments (talos.config=...) are lost.
// The ISO outputs' command lines depend on the ISO's grub.cfg and UKIs, and every limit on the kernel:
// build reads them from its inputs; validate reads them when the inputs are local files, and
// otherwise checks against the 2047 bytes every x86-64 and arm64 kernel keeps (COMMAND_LINE_SIZE).
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "builder/talos_kernel_args.hpp"
#include "builder/talos/talos_machine_config.hpp"
#include "builder/talos/uki_boot_files.hpp"
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

// machine.type ("controlplane", "init", "worker") of the machine config the profile builds its nodes
// from (talos.config), or "" when it cannot be read or parsed: prepare_talos_node_configs says why.
// Patches cannot change it (talos_config_for_node refuses), so it is every node's type.
std::string talos_profile_machine_type(const Profile& profile);

// boot.ipxe's kernel arguments for `node` (without initrd=): Talos' defaults for `version`, the node's
// kernel_args, talos.config=<netboot_url>/<node>/config.yaml with ${...} filled in. Throws Error for
// a ${...} the node cannot fill.
std::vector<std::string> talos_netboot_command_line(const TalosVersion& version, const TalosNode& node,
                                                    const std::string& netboot_url);
// COMMAND_LINE_SIZE 2048 of x86-64 and arm64 kernels, for validate when it cannot read the kernel.
KernelFile assumed_talos_kernel(const std::string& where);
// The limit of /boot/vmlinuz in an ISO (a kernel file: disk/linux_kernel_image.hpp). Throws Error naming the file.
KernelFile read_talos_iso_kernel(const std::filesystem::path& iso, const std::string& where);

// boot.ipxe's kernel line as each iPXE build hands it to `kernel` (with initrd=): too long -> an error
// at "<node>/kernel_args".
void check_talos_netboot_command_line(const std::vector<std::string>& args, const TalosNode& node,
                                      const KernelFile& kernel, Diagnostics& diagnostics);

// The ISO's boot entries as build writes them with `add_args` appended: every GRUB menu entry (the
// kernel /boot/vmlinuz, GRUB's prefix) and every UKI .cmdline (the UKI's own kernel). Errors at
// `where`, each message starting with `subject` ("iso: kernel command line for node cp1").
void check_talos_iso_command_lines(const std::string& grub_cfg, const KernelFile& grub_kernel, const TalosIsoUkis& ukis,
                                   const std::vector<std::string>& add_args, const std::string& subject,
                                   const SourceLocation& where, Diagnostics& diagnostics);

// The arguments every node has, in the first node's order: all the shared boot ISO can carry.
std::vector<std::string> talos_shared_kernel_args(const std::vector<const TalosNode*>& nodes);

// All of the above for `validate`, without downloading: configs and patches of every node; the ISO
// outputs' command lines from the ISO when talos.iso is a local file (else, with talos.version, an
// estimate with Talos' default arguments, a lower bound: an error when even that is too long); the
// netboot command lines when talos.version (or a local ISO's volume id) gives the version.
void check_talos_profile(const Profile& profile, Diagnostics& diagnostics);

}  // namespace aggrik8s::builder
