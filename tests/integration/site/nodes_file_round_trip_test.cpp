// The example site round-trips through serve: the nodes file `serve --site profiles/site-lab.yaml`
// derives (site::load_site + derive_nodes_file, its real profiles loaded) equals the nodes file a user
// would write by hand for the same site (docs/netboot.md), both read by serve's own reader and
// compared profile by profile, node by node, field by field.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "netboot/service/node_inventory.hpp"
#include "site/nodes_file.hpp"
#include "site/site_inventory.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;
using netboot::BootProfile;
using netboot::InventoryNode;
using netboot::NodeInventory;

namespace {

// By hand, for profiles/site-lab.yaml: the Pi servers and agents with disks and the Talos workers boot
// their own disk; the two diskless agents boot the ephemeral build; the Talos control plane netboots
// its build's netboot/<node>/ files with the config the build wrote. OUT is the site's output.
const char* hand_written_nodes = R"(profiles:
  "lab-servers:disk": {mode: local}
  "lab-agents:disk": {mode: local}
  "pve-workers:disk": {mode: local}
  lab-ephemeral:
    rpi_ephemeral: {build: OUT/lab-ephemeral/ephemeral/lab-ephemeral}
  pve-controlplane.tcp1:
    talos: {kernel: OUT/pve-controlplane/netboot/tcp1/vmlinuz, initramfs: OUT/pve-controlplane/netboot/tcp1/initramfs.xz, args: console=ttyS0}
  pve-controlplane.tcp2:
    talos: {kernel: OUT/pve-controlplane/netboot/tcp2/vmlinuz, initramfs: OUT/pve-controlplane/netboot/tcp2/initramfs.xz, args: console=ttyS0}
  pve-controlplane.tcp3:
    talos: {kernel: OUT/pve-controlplane/netboot/tcp3/vmlinuz, initramfs: OUT/pve-controlplane/netboot/tcp3/initramfs.xz, args: console=ttyS0}
nodes:
  - {name: cp1, match: {serial: 10000000a1b2c311}, profile: "lab-servers:disk", address: 10.0.10.11, reservation_mac: "d8:3a:dd:10:00:11"}
  - {name: cp2, match: {serial: 10000000a1b2c312}, profile: "lab-servers:disk", address: 10.0.10.12, reservation_mac: "d8:3a:dd:10:00:12"}
  - {name: cp3, match: {serial: 10000000a1b2c313}, profile: "lab-servers:disk", address: 10.0.10.13, reservation_mac: "d8:3a:dd:10:00:13"}
  - {name: worker1, match: {serial: 10000000a1b2c321}, profile: "lab-agents:disk", address: 10.0.10.21}
  - {name: worker2, match: {serial: 10000000a1b2c322}, profile: "lab-agents:disk", address: 10.0.10.22}
  - {name: eph-worker1, match: {serial: a1b2c331}, profile: lab-ephemeral, address: 10.0.10.31, reservation_mac: "d8:3a:dd:10:00:31"}
  - {name: eph-worker2, match: {serial: a1b2c332}, profile: lab-ephemeral, address: 10.0.10.32, reservation_mac: "d8:3a:dd:10:00:32"}
  - name: tcp1
    match: {mac: "bc:24:11:00:20:11"}
    profile: pve-controlplane.tcp1
    address: 10.0.20.11
    talos_config: {file: OUT/pve-controlplane/netboot/tcp1/config.yaml}
  - name: tcp2
    match: {mac: "bc:24:11:00:20:12"}
    profile: pve-controlplane.tcp2
    address: 10.0.20.12
    talos_config: {file: OUT/pve-controlplane/netboot/tcp2/config.yaml}
  - name: tcp3
    match: {mac: "bc:24:11:00:20:13"}
    profile: pve-controlplane.tcp3
    address: 10.0.20.13
    talos_config: {file: OUT/pve-controlplane/netboot/tcp3/config.yaml}
  - {name: tw1, match: {mac: "bc:24:11:00:20:21"}, profile: "pve-workers:disk", address: 10.0.20.21}
  - {name: tw2, match: {mac: "bc:24:11:00:20:22"}, profile: "pve-workers:disk", address: 10.0.20.22}
)";

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
  return text;
}

NodeInventory read_nodes(const ConfigNode& tree) {
  Diagnostics diagnostics;
  NodeInventory inventory = netboot::parse_node_inventory(tree, diagnostics, /*check_files=*/false);
  std::string problems;
  for (const auto& d : diagnostics.all()) problems += d.str() + "\n";
  INFO(problems);
  REQUIRE(diagnostics.all().empty());
  return inventory;
}

std::string secret_text(const std::optional<SecretReference>& secret) {
  return secret ? secret->describe() : std::string("(none)");
}

void check_same_profile(const BootProfile& derived, const BootProfile& by_hand) {
  INFO("profile " << by_hand.name);
  CHECK(derived.mode == by_hand.mode);
  REQUIRE(derived.target.index() == by_hand.target.index());
  if (const auto* hand = std::get_if<netboot::RaspberryPiImageBoot>(&by_hand.target)) {
    const auto& got = std::get<netboot::RaspberryPiImageBoot>(derived.target);
    CHECK(got.image == hand->image);
    CHECK(got.boot_partition == hand->boot_partition);
    CHECK(got.boot_img == hand->boot_img);
    CHECK(got.boot_sig == hand->boot_sig);
  } else if (const auto* hand_ephemeral = std::get_if<netboot::RaspberryPiEphemeralBoot>(&by_hand.target)) {
    CHECK(std::get<netboot::RaspberryPiEphemeralBoot>(derived.target).build == hand_ephemeral->build);
  } else if (const auto* hand_talos = std::get_if<netboot::TalosBoot>(&by_hand.target)) {
    const auto& got = std::get<netboot::TalosBoot>(derived.target);
    CHECK(got.kernel == hand_talos->kernel);
    CHECK(got.initramfs == hand_talos->initramfs);
    CHECK(got.arguments == hand_talos->arguments);
    CHECK(got.wipe == hand_talos->wipe);
    CHECK(got.wipe_reboot_window == hand_talos->wipe_reboot_window);
  }
}

void check_same_node(const InventoryNode& derived, const InventoryNode& by_hand) {
  INFO("node " << by_hand.name);
  CHECK(derived.match.mac == by_hand.match.mac);
  CHECK(derived.match.uuid == by_hand.match.uuid);
  CHECK(derived.match.serial == by_hand.match.serial);
  CHECK(derived.profile == by_hand.profile);
  CHECK(derived.address == by_hand.address);
  CHECK(derived.reservation_mac == by_hand.reservation_mac);
  CHECK(secret_text(derived.talos_config) == secret_text(by_hand.talos_config));
  CHECK(secret_text(derived.user_data) == secret_text(by_hand.user_data));
  CHECK(secret_text(derived.rke2_config) == secret_text(by_hand.rke2_config));
}

}  // namespace

TEST_CASE("site nodes file: profiles/site-lab.yaml derives the nodes file written by hand for it", "[site][nodes_file]") {
  fs::path site_file = test::source_dir() / "profiles" / "site-lab.yaml";
  Diagnostics diagnostics;
  auto loaded = site::load_site(site_file, diagnostics, builder::ProfileCheckOptions{false, false});
  std::string problems;
  for (const auto& d : diagnostics.all()) problems += d.str() + "\n";
  INFO(problems);
  REQUIRE(loaded);
  ConfigNode derived_tree = site::derive_nodes_file(*loaded);

  // What `export nodes` prints is what serve reads: the derived tree goes through its YAML text.
  Diagnostics yaml_diagnostics;
  ConfigNode printed = load_yaml_string(to_yaml(derived_tree), "derived-nodes.yaml", yaml_diagnostics);
  REQUIRE_FALSE(yaml_diagnostics.has_errors());
  NodeInventory derived = read_nodes(printed);

  // The site's output, where `build SITE` writes (<output>/<profile name>/), as an absolute path.
  std::string out = fs::absolute(loaded->site.output).lexically_normal().string();
  if (out.ends_with('/')) out.pop_back();
  Diagnostics hand_diagnostics;
  ConfigNode hand_tree = load_yaml_string(replace_all(hand_written_nodes, "OUT", out), "/site/nodes.yaml", hand_diagnostics);
  REQUIRE_FALSE(hand_diagnostics.has_errors());
  NodeInventory by_hand = read_nodes(hand_tree);

  REQUIRE(derived.profiles.size() == by_hand.profiles.size());
  for (const auto& [name, profile] : by_hand.profiles) {
    INFO("profile " << name);
    REQUIRE(derived.profiles.contains(name));
    check_same_profile(derived.profiles.at(name), profile);
  }
  REQUIRE(derived.nodes.size() == by_hand.nodes.size());
  for (std::size_t i = 0; i < by_hand.nodes.size(); ++i) {
    CHECK(derived.nodes[i].name == by_hand.nodes[i].name);  // in the site's order
    check_same_node(derived.nodes[i], by_hand.nodes[i]);
  }
  CHECK(derived.unknown_action == by_hand.unknown_action);

  // Every value of the derived tree points into the site file: a problem serve finds names its line.
  const ConfigNode* nodes = derived_tree.find("nodes");
  REQUIRE(nodes != nullptr);
  for (const auto& node : nodes->items) {
    CHECK(node.location.file == site_file.string());
    CHECK(node.find("profile")->location.line > 0);
  }
}
