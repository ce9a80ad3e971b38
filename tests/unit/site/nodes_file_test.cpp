// site::derive_nodes_file for a hand-built site: the nodes file serve derives, read back by serve's own
// reader (netboot::parse_node_inventory, without looking for the files), value by value.
#include "site/nodes_file.hpp"

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "tests/test_support.hpp"
#include "netboot/service/node_inventory.hpp"

using namespace aggrik8s;
using namespace aggrik8s::site;
namespace fs = std::filesystem;
using netboot::BootMode;

namespace {

Machine machine(const std::string& name, Platform platform, const std::string& address, const fs::path& profile,
                BootMethod boot, int line) {
  Machine m;
  m.name = name;
  m.platform = platform;
  m.address = address;
  m.profile = profile;
  m.boot = boot;
  m.role = platform == Platform::rpi5 ? Role::agent : Role::worker;
  m.where = {"/site/lab.yaml", line, 5};
  m.field_locations["profile"] = {"/site/lab.yaml", line + 1, 14};
  m.field_locations["mac"] = {"/site/lab.yaml", line + 2, 10};
  m.field_locations["address"] = {"/site/lab.yaml", line + 3, 14};
  return m;
}

builder::Profile profile(const std::string& file, const std::string& name, builder::ProfileKind kind) {
  builder::Profile p;
  p.file = file;
  p.name = name;
  p.kind = kind;
  return p;
}

// One machine of each kind and boot method.
LoadedSite lab_site() {
  LoadedSite loaded;
  SiteInventory& site = loaded.site;
  site.file = "/site/lab.yaml";
  site.name = "lab";
  site.output = "/srv/out/lab";

  builder::Profile servers = profile("/site/servers.yaml", "lab-servers", builder::ProfileKind::rpi5_rke2);
  builder::Profile agents = profile("/site/agents.yaml", "lab-agents", builder::ProfileKind::rpi5_rke2);
  agents.output.http_boot = builder::HttpBootSettings{};
  builder::Profile ephemeral = profile("/site/ephemeral.yaml", "lab-ephemeral", builder::ProfileKind::rpi5_rke2);
  ephemeral.output.ephemeral = builder::EphemeralSettings{};
  builder::Profile talos = profile("/site/talos.yaml", "pve-cp", builder::ProfileKind::talos_iso);
  for (const char* name : {"tcp1", "tw1"}) {
    builder::TalosNode node;
    node.name = name;
    // The profile's talos.kernel_args, then the node's; serve writes talos.platform=metal itself.
    node.kernel_args = {"talos.platform=metal", "console=ttyS0", "net.ifnames=0"};
    talos.talos_nodes.push_back(node);
  }

  Machine cp1 = machine("cp1", Platform::rpi5, "10.0.10.11/24", servers.file, BootMethod::disk, 10);
  cp1.serial = "10000000a1b2c3d4";
  cp1.mac = "d8:3a:dd:10:00:11";
  Machine agent1 = machine("agent1", Platform::rpi5, "10.0.10.21/24", agents.file, BootMethod::netboot, 20);
  agent1.serial = "0000beef";
  Machine eph1 = machine("eph1", Platform::rpi5, "10.0.10.31/24", ephemeral.file, BootMethod::ephemeral, 30);
  eph1.serial = "12345678";  // decimal digits: must come back a string
  Machine eph2 = machine("eph2", Platform::rpi5, "fd00:10::32/64", ephemeral.file, BootMethod::ephemeral, 40);
  eph2.serial = "0000eeee";
  Machine tcp1 = machine("tcp1", Platform::proxmox_vm, "10.0.20.11/24", talos.file, BootMethod::netboot, 50);
  tcp1.mac = "bc:24:11:00:20:11";
  tcp1.uuid = "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51";
  Machine tw1 = machine("tw1", Platform::proxmox_vm, "10.0.20.21/24", talos.file, BootMethod::ephemeral, 60);
  tw1.uuid = "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a61";  // no MAC: matched by its UUID
  Machine tcp2 = machine("tcp2", Platform::proxmox_vm, "10.0.20.12/24", talos.file, BootMethod::disk, 70);
  tcp2.mac = "bc:24:11:00:20:12";
  site.machines = {cp1, agent1, eph1, eph2, tcp1, tw1, tcp2};
  for (auto* p : {&servers, &agents, &ephemeral, &talos}) loaded.profiles.emplace(p->file, *p);
  return loaded;
}

netboot::NodeInventory read_back(const ConfigNode& tree) {
  Diagnostics diagnostics;
  // Through the text `export nodes` prints: what serve reads is what a user reads.
  ConfigNode reread = load_yaml_string(to_yaml(tree), "/site/derived-nodes.yaml", diagnostics);
  netboot::NodeInventory inventory = netboot::parse_node_inventory(reread, diagnostics, /*check_files=*/false);
  std::string errors;
  for (const auto& d : diagnostics.all()) errors += d.str() + "\n";
  INFO(errors);
  REQUIRE(diagnostics.all().empty());
  return inventory;
}

}  // namespace

TEST_CASE("derive_nodes_file: each boot method of each profile kind as serve reads it", "[site][nodes_file]") {
  netboot::NodeInventory inventory = read_back(derive_nodes_file(lab_site()));
  REQUIRE(inventory.nodes.size() == 7);
  REQUIRE(inventory.profiles.size() == 6);  // two disk profiles, agent1's, the shared ephemeral one, tcp1's, tw1's

  const auto& cp1 = *inventory.find("cp1");
  CHECK(cp1.match.serial == "a1b2c3d4");  // the low 8 digits, what the Pi puts in its TFTP path
  CHECK_FALSE(cp1.match.mac);             // a Pi's TFTP and HTTP boot requests carry only its serial
  CHECK(cp1.reservation_mac == "d8:3a:dd:10:00:11");
  CHECK(cp1.address == "10.0.10.11");
  CHECK(cp1.profile == "lab-servers:disk");
  const auto& disk = inventory.profiles.at("lab-servers:disk");
  CHECK(disk.mode == BootMode::local_disk);
  CHECK(std::holds_alternative<netboot::LocalDiskBoot>(disk.target));

  const auto& agent1 = *inventory.find("agent1");
  CHECK(agent1.profile == "lab-agents.agent1");
  CHECK_FALSE(agent1.reservation_mac);
  const auto& image = std::get<netboot::RaspberryPiImageBoot>(inventory.profiles.at("lab-agents.agent1").target);
  CHECK(image.image == "/srv/out/lab/lab-agents/agent1.img");
  CHECK(image.boot_img == fs::path("/srv/out/lab/lab-agents/agent1.boot.img"));
  CHECK(image.boot_sig == fs::path("/srv/out/lab/lab-agents/agent1.boot.sig"));
  CHECK(inventory.profiles.at("lab-agents.agent1").mode == BootMode::install);

  const auto& eph1 = *inventory.find("eph1");
  const auto& eph2 = *inventory.find("eph2");
  CHECK(eph1.match.serial == "12345678");
  CHECK(eph1.profile == "lab-ephemeral");
  CHECK(eph2.profile == "lab-ephemeral");
  CHECK_FALSE(eph2.address);  // IPv6: serve pins IPv4 addresses only
  const auto& ephemeral = inventory.profiles.at("lab-ephemeral");
  CHECK(ephemeral.mode == BootMode::ephemeral);
  CHECK(std::get<netboot::RaspberryPiEphemeralBoot>(ephemeral.target).build == "/srv/out/lab/lab-ephemeral/ephemeral/lab-ephemeral");

  const auto& tcp1 = *inventory.find("tcp1");
  CHECK(tcp1.match.mac == "bc:24:11:00:20:11");
  CHECK_FALSE(tcp1.match.uuid);  // serve's /talos/<mac>/config.yaml names the MAC only: a second selector would miss
  CHECK_FALSE(tcp1.match.serial);
  CHECK(tcp1.address == "10.0.20.11");
  REQUIRE(tcp1.talos_config);
  CHECK(tcp1.talos_config->name == std::string("/srv/out/lab/pve-cp/netboot/tcp1/config.yaml"));
  const auto& tcp1_profile = inventory.profiles.at("pve-cp.tcp1");
  CHECK(tcp1_profile.mode == BootMode::install);
  const auto& talos = std::get<netboot::TalosBoot>(tcp1_profile.target);
  CHECK(talos.kernel == "/srv/out/lab/pve-cp/netboot/tcp1/vmlinuz");
  CHECK(talos.initramfs == "/srv/out/lab/pve-cp/netboot/tcp1/initramfs.xz");
  CHECK(talos.arguments == "console=ttyS0 net.ifnames=0");

  CHECK(inventory.profiles.at("pve-cp.tw1").mode == BootMode::ephemeral);
  CHECK(inventory.find("tw1")->match.uuid == "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a61");
  CHECK_FALSE(inventory.find("tw1")->match.mac);
  CHECK(std::get<netboot::TalosBoot>(inventory.profiles.at("pve-cp.tw1").target).wipe == "system:EPHEMERAL,STATE");
  CHECK(inventory.find("tcp2")->profile == "pve-cp:disk");
  CHECK(inventory.find("tcp2")->match.mac == "bc:24:11:00:20:12");
  CHECK_FALSE(inventory.find("tcp2")->talos_config);
}

TEST_CASE("derive_nodes_file: a built Talos node gets Talos' default arguments for the version built", "[site][nodes_file]") {
  // serve --site netbooted Talos machines without console=tty0, init_on_alloc=1, selinux=1... that the
  // build's own boot.ipxe and ISO carry.
  test::TempDir dir;
  LoadedSite site = lab_site();
  site.site.output = dir.path();
  test::write_file(dir / "pve-cp/manifest.json", R"({"talos_version": {"version": "v1.12.0", "from": "iso"}})");
  netboot::NodeInventory inventory = read_back(derive_nodes_file(site));
  CHECK(std::get<netboot::TalosBoot>(inventory.profiles.at("pve-cp.tcp1").target).arguments ==
        "console=tty0 init_on_alloc=1 consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 "
        "console=ttyS0 net.ifnames=0");
}

TEST_CASE("derive_nodes_file: values point at the site file's lines", "[site][nodes_file]") {
  Diagnostics diagnostics;
  ConfigNode tree = derive_nodes_file(lab_site());
  netboot::NodeInventory inventory = netboot::parse_node_inventory(tree, diagnostics, /*check_files=*/true);
  // No build output exists: each missing file is reported at the machine's `profile:` line.
  bool found = false;
  for (const auto& d : diagnostics.all()) {
    if (d.message.find("/srv/out/lab/lab-agents/agent1.img") == std::string::npos) continue;
    found = true;
    CHECK(d.where.file == "/site/lab.yaml");
    CHECK(d.where.line == 21);
  }
  CHECK(found);
  CHECK(inventory.find("agent1")->where.line == 20);
}

TEST_CASE("derive_nodes_file: an ephemeral profile is served under output.ephemeral.serve_profile", "[site][nodes_file]") {
  LoadedSite site = lab_site();
  site.profiles.at("/site/ephemeral.yaml").output.ephemeral->serve_profile = "pi-ram";
  netboot::NodeInventory inventory = read_back(derive_nodes_file(site));
  CHECK(inventory.find("eph1")->profile == "pi-ram");
  // The build's directory is still named after the build profile.
  CHECK(std::get<netboot::RaspberryPiEphemeralBoot>(inventory.profiles.at("pi-ram").target).build ==
        "/srv/out/lab/lab-ephemeral/ephemeral/lab-ephemeral");

  site.profiles.at("/site/ephemeral.yaml").output.ephemeral->serve_profile = "lab-agents.agent1";
  CHECK_THROWS_WITH(derive_nodes_file(site), Catch::Contains("'lab-agents.agent1' is also the name of another derived profile"));
}

TEST_CASE("derive_nodes_file: a disk-booted Pi with neither serial nor MAC gets no node", "[site][nodes_file]") {
  // The site allows it (it never netboots); a node without selectors would make serve's reader refuse
  // the whole file, and so every other machine of the site.
  LoadedSite site = lab_site();
  Machine pi = machine("cp2", Platform::rpi5, "10.0.10.12/24", "/site/servers.yaml", BootMethod::disk, 80);
  site.site.machines.push_back(pi);
  netboot::NodeInventory inventory = read_back(derive_nodes_file(site));
  CHECK(inventory.nodes.size() == 7);
  CHECK(inventory.find("cp2") == nullptr);
  CHECK(inventory.find("cp1")->profile == "lab-servers:disk");

  // Alone in its site: a nodes file with no node, which serve reads (and serves no one from).
  site.site.machines = {pi};
  netboot::NodeInventory empty = read_back(derive_nodes_file(site));
  CHECK(empty.nodes.empty());
  CHECK(empty.profiles.empty());
}
