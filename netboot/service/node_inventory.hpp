#pragma once
// The nodes file: which machine boots what. Profiles say what is booted (a Raspberry Pi image built by
// `aggrik8s-image build`, Talos netboot assets, or a plain kernel + initramfs) and how (install, boot
// the local disk, ephemeral); nodes pick a profile by selectors, as matchbox's groups do, and carry
// their own secrets (Talos machine config, cloud-init user-data, RKE2 config) by reference.
// docs/netboot.md is the reference for the file format.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "core/secret.hpp"

namespace aggrik8s::netboot {

enum class BootMode {
  install,     // boot the assets; what they do (install to disk) is up to them and their config
  local_disk,  // tell the node to boot its own disk (iPXE exits to the firmware; a Pi gets no TFTP files)
  ephemeral,   // boot the assets every time; nothing is expected to persist
};
const char* to_string(BootMode mode);

struct RaspberryPiImageBoot {
  std::filesystem::path image;      // a raw image written by the builder
  std::uint32_t boot_partition = 1; // its FAT boot partition, served as the node's TFTP tree
  // Pi 5 HTTP boot (boot mode 7): the signed boot.img the build wrote for this node and its boot.sig
  // (default: boot_img with .img replaced by .sig, as `build` names them: <node>.boot.img/.boot.sig).
  std::optional<std::filesystem::path> boot_img;
  std::optional<std::filesystem::path> boot_sig;
};

// The ephemeral output of an rpi5-rke2 build (`build` with output.ephemeral): the node netboots a
// kernel and our initramfs, which fetches the shared root squashfs into RAM and the node's identity
// bundle. `build` is the directory holding current.json (OUT/ephemeral/<profile>); each boot uses the
// build current.json names when it starts, so a rebuild takes effect on the next reboot.
struct RaspberryPiEphemeralBoot {
  std::filesystem::path build;
};

struct TalosBoot {
  std::filesystem::path kernel;     // vmlinuz-amd64
  std::filesystem::path initramfs;  // initramfs-amd64.xz
  std::string arguments;            // added after talos.platform=metal slab_nomerge pti=on
  // mode: ephemeral only: talos.experimental.wipe=<wipe> on every power-on's first boot, and how long
  // after that boot fetched its files its reboot counts as its reboot (netboot/service/talos_wipe_cycle.hpp).
  std::string wipe = "system:EPHEMERAL,STATE";
  std::chrono::seconds wipe_reboot_window{600};
};

struct KernelBoot {
  std::filesystem::path kernel;
  std::vector<std::filesystem::path> initrds;
  std::string arguments;
};

// A mode: local profile without anything to boot: the node always boots its own disk, and serve still
// knows it (its DHCP reservation, its boot events). What a site's `boot: disk` machines get.
struct LocalDiskBoot {};

using BootTarget = std::variant<RaspberryPiImageBoot, TalosBoot, KernelBoot, RaspberryPiEphemeralBoot, LocalDiskBoot>;

struct BootProfile {
  std::string name;
  BootTarget target;
  BootMode mode = BootMode::install;
  SourceLocation where;
  // Files the profile may hand out over HTTP, by the name used in URLs (the file's base name).
  std::map<std::string, std::filesystem::path> assets() const;
};

// What is known about a machine asking for something. Normalised: MAC "aa:bb:..", UUID lowercase,
// Pi serial as the 8 lowercase hex digits the Pi uses for its TFTP directory.
struct NodeFacts {
  std::optional<std::string> mac;
  std::optional<std::string> uuid;
  std::optional<std::string> serial;
};

// Every selector given must match; an empty selector matches nothing (a node needs at least one).
struct NodeSelector {
  std::optional<std::string> mac;
  std::optional<std::string> uuid;
  std::optional<std::string> serial;
  std::size_t specificity() const;
  bool matches(const NodeFacts& facts) const;
};

struct InventoryNode {
  std::string name;
  NodeSelector match;
  std::string profile;
  std::optional<std::string> address;  // pinned client address: only this address gets the node's files
  // The MAC of the node's full-mode DHCP reservation (to `address`) when match has none: a Pi is matched
  // by its serial alone, since its TFTP and HTTP boot requests carry nothing else.
  std::optional<std::string> reservation_mac;
  std::optional<SecretReference> talos_config;
  std::optional<SecretReference> user_data;
  std::optional<SecretReference> rke2_config;
  SourceLocation where;
};

enum class UnknownNodeAction {
  ignore,       // unknown machines get nothing (404 / TFTP "File not found")
  default_profile,  // they boot `unknown_profile` like a known node without secrets
  maintenance,  // they boot `unknown_profile`, and the event is logged as a maintenance boot
};
const char* to_string(UnknownNodeAction action);

struct NodeInventory {
  std::map<std::string, BootProfile> profiles;
  std::vector<InventoryNode> nodes;
  UnknownNodeAction unknown_action = UnknownNodeAction::ignore;
  std::string unknown_profile;
  std::filesystem::path file;

  // The most specific node whose selectors all match; the first in the file on a tie.
  const InventoryNode* match(const NodeFacts& facts) const;
  const InventoryNode* find(std::string_view name) const;
  // The node a per-node URL names (/talos/<id>/, /cloud-init/<id>/, /rke2/<id>/): `id` carries one
  // identifier, which must be one of the node's selectors — a node matched by MAC and UUID is named by
  // either. Null when no node or more than one has it (two nodes sharing a MAC, told apart by UUID,
  // cannot be named by the MAC alone).
  const InventoryNode* named_by(const NodeFacts& id) const;
  const BootProfile* profile_of(const InventoryNode& node) const;
  // The profile an unknown node gets, or null when unknown nodes are ignored.
  const BootProfile* unknown_node_profile() const;
};

// Identifier normalisation for facts taken from URLs and TFTP paths; nullopt when not of that form.
std::optional<std::string> normalize_pi_serial(std::string_view text);
// "aa-bb-cc-dd-ee-ff" (the Pi's TFTP_PREFIX=2 directory, iPXE's ${mac:hexhyp}) or colon form.
std::optional<std::string> normalize_mac_any(std::string_view text);

// Reads and checks a nodes file. Every problem is a diagnostic with file:line:col; the inventory
// returned is only meaningful when diagnostics has no errors.
NodeInventory read_node_inventory(const std::filesystem::path& file, Diagnostics& diagnostics);
NodeInventory parse_node_inventory(const ConfigNode& tree, Diagnostics& diagnostics, bool check_files = true);

}  // namespace aggrik8s::netboot
