#include "site/site_inventory.hpp"

#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "site/ansible_inventory.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::site;
namespace fs = std::filesystem;

namespace {

std::string dump(const Diagnostics& d) {
  std::string out;
  for (const auto& x : d.all()) out += x.str() + "\n";
  return out;
}

// The exact diagnostic lines of one severity, as the user sees them ("file:line:col: message").
std::vector<std::string> lines_of(const Diagnostics& d, Diagnostic::Severity severity) {
  std::vector<std::string> out;
  for (const auto& x : d.all()) {
    if (x.severity == severity) out.push_back(x.str());
  }
  return out;
}

const char* pi_server_profile = R"(kind: rpi5-rke2
name: pi-servers
base:
  url: https://example.invalid/raspios.img.xz
  sha256: 62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45
rke2:
  version: v1.33.1+rke2r1
  role: server
  config:
    node-taint: ["CriticalAddonsOnly=true:NoExecute"]
nodes:
  - name: ignored-by-a-site
)";

const char* pi_agent_profile = R"(kind: rpi5-rke2
name: pi-agents
base:
  url: https://example.invalid/raspios.img.xz
  sha256: 62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45
rke2:
  version: v1.33.1+rke2r1
  role: agent
  token: {file: token}
  config:
    node-label: ["site=lab"]
)";

const char* talos_profile = R"(kind: talos-iso
name: talos-cp
talos:
  version: v1.12.0
  iso:
    url: https://example.invalid/metal-amd64.iso
    sha256: 62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45
  config: {file: cp.yaml}
  outputs: [config-iso, netboot]
  netboot_url: http://10.0.20.2:8080
)";

// A valid site: line numbers below are counted in this text (line 1 is "kind: site").
const char* good_site = R"(kind: site
name: lab
networks:
  pi:
    subnet: 10.0.10.0/24
    gateway: 10.0.10.1
    dns: [10.0.10.1]
    dhcp_pool: 10.0.10.100-10.0.10.199
  pve:
    subnet: 10.0.20.0/24
    gateway: 10.0.20.1
proxmox:
  nodes: [pve1, pve2]
machines:
  - name: cp1
    platform: rpi5
    serial: 10000000a1b2c311
    address: 10.0.10.11/24
    role: server
    profile: servers.yaml
    labels: {zone: a}
  - name: w1
    platform: rpi5
    serial: a1b2c321
    mac: d8-3A-DD-10-00-21
    address: 10.0.10.21/24
    role: agent
    profile: agents.yaml
    boot: netboot
    taints: ["gpu=true:NoSchedule"]
  - name: tcp1
    platform: proxmox-vm
    mac: "bc:24:11:00:20:11"
    uuid: 7C1E2F0A-3B4D-4E5F-8A9B-0C1D2E3F4A51
    address: 10.0.20.11/24
    role: controlplane
    profile: talos.yaml
    boot: netboot
    vm: {node: pve2, vmid: 211, cores: 4, memory: 8GiB, disk: 32GiB, vlan: 20}
    labels: {rack: b}
    taints: ["dedicated=infra:NoSchedule"]
)";

struct SiteDir {
  test::TempDir dir;
  SiteDir() {
    test::write_file(dir / "servers.yaml", pi_server_profile);
    test::write_file(dir / "agents.yaml", pi_agent_profile);
    test::write_file(dir / "talos.yaml", talos_profile);
  }
  fs::path write(const std::string& text) const {
    test::write_file(dir / "site.yaml", text);
    return dir / "site.yaml";
  }
  // The site text with `from` replaced by `to` (once), for one-mistake variants of good_site.
  fs::path write_with(const std::string& from, const std::string& to) const {
    std::string text = good_site;
    auto at = text.find(from);
    REQUIRE(at != std::string::npos);
    text.replace(at, from.size(), to);
    return write(text);
  }
  std::string prefix(int line, int column) const {
    return (dir / "site.yaml").string() + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
  }
};

builder::ProfileCheckOptions no_secrets() {
  builder::ProfileCheckOptions options;
  options.check_secrets = false;
  return options;
}

// Validation of a site with one mistake: the errors it reports (every one located).
std::vector<std::string> errors_for(const SiteDir&, const fs::path& file) {
  Diagnostics d;
  auto loaded = load_site(file, d, no_secrets());
  CHECK_FALSE(loaded);
  return lines_of(d, Diagnostic::Severity::error);
}

}  // namespace

TEST_CASE("a site reads every machine with its identifiers normalised", "[site]") {
  SiteDir s;
  Diagnostics d;
  auto loaded = load_site(s.write(good_site), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  const SiteInventory& site = loaded->site;
  CHECK(site.name == "lab");
  CHECK(site.output == s.dir.path() / "out" / "lab");
  REQUIRE(site.machines.size() == 3);
  const Machine& w1 = site.machines[1];
  CHECK(w1.mac == "d8:3a:dd:10:00:21");
  CHECK(w1.serial == "a1b2c321");
  CHECK(w1.network == "pi");
  CHECK(w1.boot == BootMethod::netboot);
  const Machine& tcp1 = site.machines[2];
  CHECK(tcp1.uuid == "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51");
  REQUIRE(tcp1.vm);
  CHECK(tcp1.vm->proxmox_node == "pve2");
  CHECK(tcp1.vm->memory == (8ull << 30));
  CHECK(tcp1.vm->vlan == 20u);
  CHECK(tcp1.vm->disk_storage == "local-lvm");
  CHECK(loaded->profiles.size() == 3);
  CHECK(site.profile_files().front() == s.dir.path() / "servers.yaml");
}

TEST_CASE("a site's machines become its profiles' nodes", "[site]") {
  SiteDir s;
  Diagnostics d;
  auto loaded = load_site(s.write(good_site), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);

  // The profile's own nodes: list is replaced; the machine's address, network and role are the node's.
  const builder::Profile& servers = loaded->profiles.at(s.dir.path() / "servers.yaml");
  REQUIRE(servers.rpi_nodes.size() == 1);
  const builder::Rpi5Node& cp1 = servers.rpi_nodes.front();
  CHECK(cp1.name == "cp1");
  CHECK(cp1.system.hostname == "cp1");
  CHECK(cp1.network.mode == builder::NetworkSettings::Mode::static_address);
  CHECK(cp1.network.addresses == std::vector<std::string>{"10.0.10.11/24"});
  CHECK(cp1.network.gateways == std::vector<std::string>{"10.0.10.1"});
  CHECK(cp1.network.dns == std::vector<std::string>{"10.0.10.1"});
  CHECK(cp1.rke2.role == "server");
  CHECK_FALSE(cp1.rke2.server);  // the first server starts the cluster
  // Labels add to the profile's rke2.config; its taints stay.
  REQUIRE(cp1.rke2.config.find("node-label") != nullptr);
  CHECK(cp1.rke2.config.find("node-label")->items.at(0).scalar == "zone=a");
  REQUIRE(cp1.rke2.config.find("node-taint") != nullptr);
  CHECK(cp1.rke2.config.find("node-taint")->items.at(0).scalar == "CriticalAddonsOnly=true:NoExecute");

  const builder::Rpi5Node& w1 = loaded->profiles.at(s.dir.path() / "agents.yaml").rpi_nodes.at(0);
  CHECK(w1.rke2.role == "agent");
  CHECK(w1.rke2.server == "https://10.0.10.11:9345");  // the site's first server, since the profile names none
  const ConfigNode* labels = w1.rke2.config.find("node-label");
  REQUIRE(labels != nullptr);
  REQUIRE(labels->items.size() == 1);
  CHECK(labels->items[0].scalar == "site=lab");  // the profile's, untouched (the machine has none)
  const ConfigNode* taints = w1.rke2.config.find("node-taint");
  REQUIRE(taints != nullptr);
  CHECK(taints->items.at(0).scalar == "gpu=true:NoSchedule");

  const builder::TalosNode& tcp1 = loaded->profiles.at(s.dir.path() / "talos.yaml").talos_nodes.at(0);
  CHECK(tcp1.name == "tcp1");
  CHECK(tcp1.mac == "bc:24:11:00:20:11");
  CHECK(tcp1.uuid == "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51");
  CHECK(tcp1.addresses == std::vector<std::string>{"10.0.20.11/24"});
  CHECK(tcp1.gateways == std::vector<std::string>{"10.0.20.1"});
  CHECK(tcp1.install_disk == "/dev/sda");
  REQUIRE(tcp1.patches.size() == 1);
  const ConfigNode* machine = tcp1.patches[0].content.find("machine");
  REQUIRE(machine != nullptr);
  CHECK(machine->find("nodeLabels")->find("rack")->scalar == "b");
  CHECK(machine->find("nodeTaints")->find("dedicated")->scalar == "infra:NoSchedule");
}

TEST_CASE("a Talos machine gets its network's DNS servers as machine.network.nameservers", "[site]") {
  // A static address leaves no DHCP to give them: Talos fell back to public resolvers, which an
  // air-gapped site cannot reach (Pi nodes got the network's dns all along).
  SiteDir s;
  std::string text = good_site;
  const std::string pve = "    subnet: 10.0.20.0/24\n    gateway: 10.0.20.1\n";
  text.replace(text.find(pve), pve.size(), pve + "    dns: [10.0.20.53, fd00:20::53]\n");
  Diagnostics d;
  auto loaded = load_site(s.write(text), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  const builder::TalosNode& tcp1 = loaded->profiles.at(s.dir.path() / "talos.yaml").talos_nodes.at(0);
  REQUIRE(tcp1.patches.size() == 1);
  const ConfigNode* machine = tcp1.patches[0].content.find("machine");
  REQUIRE(machine != nullptr);
  REQUIRE(machine->find("network") != nullptr);
  const ConfigNode* nameservers = machine->find("network")->find("nameservers");
  REQUIRE(nameservers != nullptr);
  REQUIRE(nameservers->items.size() == 2);
  CHECK(nameservers->items[0].scalar == "10.0.20.53");
  CHECK(nameservers->items[1].scalar == "fd00:20::53");
  CHECK(machine->find("nodeLabels") != nullptr);  // beside the labels
}

TEST_CASE("site validation: an install disk the exported VM does not have is warned about", "[site]") {
  // export terraform gives the VM scsi0 only (the guest's /dev/sda): /dev/nvme0n1 never appears.
  SiteDir s;
  std::string text = good_site;
  text.replace(text.find("vm: {node: pve2, vmid: 211"), std::string("vm: {node: pve2, vmid: 211").size(),
               "vm: {node: pve2, install_disk: /dev/nvme0n1, vmid: 211");
  Diagnostics d;
  auto loaded = load_site(s.write(text), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);  // a warning: a VM made by other means may have that disk
  std::string all = dump(d);
  CHECK_THAT(all, Catch::Contains("'machines[2].vm.install_disk' is /dev/nvme0n1, but the VM `export terraform` writes "
                                  "has one disk, scsi0, which the guest sees as /dev/sda"));
}

TEST_CASE("site validation: duplicate identifiers name both machines with line and column", "[site]") {
  SiteDir s;
  SECTION("MAC, in another spelling") {
    auto errors = errors_for(s, s.write_with("    mac: \"bc:24:11:00:20:11\"", "    mac: \"D8:3A:DD:10:00:21\""));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(33, 10) + "machine 'tcp1': MAC d8:3a:dd:10:00:21 is already used by machine 'w1' (" +
                           (s.dir / "site.yaml").string() + ":25:10)");
  }
  SECTION("Pi serial: the low 8 digits are what the Pi asks with") {
    auto errors = errors_for(s, s.write_with("serial: a1b2c321", "serial: 10000000A1B2C311"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(24, 13) + "machine 'w1': serial a1b2c311 (its low 8 hex digits) is already used by machine 'cp1' (" +
                           (s.dir / "site.yaml").string() + ":17:13)");
  }
  SECTION("SMBIOS UUID") {
    std::string text = good_site;
    text += R"(  - name: tcp2
    platform: proxmox-vm
    mac: "bc:24:11:00:20:12"
    uuid: 7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51
    address: 10.0.20.12/24
    role: controlplane
    profile: talos.yaml
    boot: netboot
    vm: {node: pve1}
)";
    auto errors = errors_for(s, s.write(text));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(45, 11) + "machine 'tcp2': SMBIOS UUID 7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51 is already used by "
                                          "machine 'tcp1' (" + (s.dir / "site.yaml").string() + ":34:11)");
  }
  SECTION("address, whatever the prefix length") {
    auto errors = errors_for(s, s.write_with("address: 10.0.10.21/24", "address: 10.0.10.11/25"));
    REQUIRE(errors.size() == 2);  // and the prefix that is not its network's
    CHECK(errors[0] == s.prefix(26, 14) + "machine 'w1': address 10.0.10.11 is already used by machine 'cp1' (" +
                           (s.dir / "site.yaml").string() + ":18:14)");
    CHECK(errors[1] == s.prefix(26, 14) + "address 10.0.10.11/25 of machine 'w1' has prefix /25, its network 'pi' is "
                                          "10.0.10.0/24: write 10.0.10.11/24");
  }
  SECTION("name") {
    auto errors = errors_for(s, s.write_with("name: w1", "name: cp1"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(22, 11) + "machine name 'cp1' is listed twice (first at " + (s.dir / "site.yaml").string() +
                           ":15:11)");
  }
}

TEST_CASE("site validation: an address that is its network's gateway or broadcast, overlapping networks, one VM id twice",
          "[site]") {
  SiteDir s;
  SECTION("the gateway") {
    auto errors = errors_for(s, s.write_with("address: 10.0.20.11/24", "address: 10.0.20.1/24"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(35, 14) + "address 10.0.20.1 of machine 'tcp1' is the gateway of network 'pve': a machine "
                                          "cannot route through itself");
  }
  SECTION("the broadcast address") {
    auto errors = errors_for(s, s.write_with("address: 10.0.20.11/24", "address: 10.0.20.255/24"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(35, 14) + "address 10.0.20.255 of machine 'tcp1' is the broadcast address of 10.0.20.0/24");
  }
  SECTION("a gateway that is the network address") {
    auto errors = errors_for(s, s.write_with("    gateway: 10.0.20.1\n", "    gateway: 10.0.20.0\n"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(11, 14) + "'networks.pve.gateway' 10.0.20.0 is the network address of 10.0.20.0/24, not a host");
  }
  SECTION("overlapping networks") {
    auto errors = errors_for(s, s.write_with("    subnet: 10.0.20.0/24\n", "    subnet: 10.0.0.0/16\n"));
    std::string all;
    for (const auto& e : errors) all += e + "\n";
    CHECK_THAT(all, Catch::Contains("network 'pve' (10.0.0.0/16) overlaps network 'pi' (10.0.10.0/24, "));
  }
  SECTION("a multicast MAC, a bridge or storage Proxmox would refuse") {
    std::string text = good_site;
    text.replace(text.find("mac: \"bc:24:11:00:20:11\""), std::string("mac: \"bc:24:11:00:20:11\"").size(),
                 "mac: \"01:24:11:00:20:11\"");
    text.replace(text.find("vm: {node: pve2, vmid: 211"), std::string("vm: {node: pve2, vmid: 211").size(),
                 "vm: {node: pve2, bridge: 'my bridge', storage: 'a b', vmid: 211");
    auto errors = errors_for(s, s.write(text));
    std::string all;
    for (const auto& e : errors) all += e + "\n";
    INFO(all);
    REQUIRE(errors.size() == 3);
    CHECK_THAT(all, Catch::Contains("'machines[2].mac' 01:24:11:00:20:11 is a multicast address"));
    CHECK_THAT(all, Catch::Contains("'machines[2].vm.bridge' must be a bridge's interface name such as vmbr0"));
    CHECK_THAT(all, Catch::Contains("'machines[2].vm.storage' must be a Proxmox storage ID such as local-lvm"));
  }
  SECTION("one VM id for two VMs") {
    std::string text = good_site;
    text.replace(text.find("vm: {node: pve2, vmid: 211"), std::string("vm: {node: pve2, vmid: 211").size(),
                 "vm: {node: pve2, vmid: 300");
    text += R"(  - name: tcp2
    platform: proxmox-vm
    mac: "bc:24:11:00:20:12"
    address: 10.0.20.12/24
    role: controlplane
    profile: talos.yaml
    boot: netboot
    vm: {node: pve1, vmid: 300}
)";
    auto errors = errors_for(s, s.write(text));
    REQUIRE(errors.size() == 1);
    CHECK_THAT(errors[0], Catch::Contains("machine 'tcp2': VM id 300 is already used by machine 'tcp1'"));
  }
}

TEST_CASE("an agent profile that removes its base's rke2.server with null still joins the site's first server", "[site]") {
  SiteDir s;
  test::write_file(s.dir / "agents-base.yaml", std::string(pi_agent_profile) + "  server: https://old.example:9345\n");
  test::write_file(s.dir / "agents.yaml", "extends: agents-base.yaml\nrke2: {server: null}\n");
  Diagnostics d;
  auto loaded = load_site(s.write(good_site), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  CHECK(loaded->profiles.at(s.dir.path() / "agents.yaml").rpi_nodes.at(0).rke2.server == "https://10.0.10.11:9345");
}

TEST_CASE("site validation: labels and taints follow Kubernetes' syntax and the kubelet's namespaces", "[site]") {
  SiteDir s;
  auto site_with = [&](const std::string& labels, const std::string& taints) {
    std::string text = good_site;
    text.replace(text.find("    labels: {zone: a}\n"), std::string("    labels: {zone: a}\n").size(),
                 "    labels: " + labels + "\n    taints: " + taints + "\n");
    return s.write(text);
  };
  auto errors_with = [&](const std::string& labels, const std::string& taints) {
    return errors_for(s, site_with(labels, taints));
  };
  Diagnostics d;
  CHECK(load_site(site_with("{zone: a, example.com/rack: b-1, node.kubernetes.io/pool: edge, topology.kubernetes.io/zone: x, "
                            "empty: ''}", "[\"gpu=true:NoSchedule\", \"example.com/dedicated:NoExecute\"]"),
                  d, no_secrets()));
  CHECK(lines_of(d, Diagnostic::Severity::error).empty());
  auto bad = errors_with("{\"bad key!\": x, \"a/b/c\": v, note: \"has space\", kubernetes.io/role: master, \"UPPER.example/x\": y}",
                         "[\"bad key!=x:NoSchedule\", \"k=x y:NoSchedule\"]");
  std::string all;
  for (const auto& e : bad) all += e + "\n";
  INFO(all);
  CHECK(bad.size() == 7);
  CHECK_THAT(all, Catch::Contains("'machines[0].labels' key 'bad key!' is not a node label key: its name must be 1-63"));
  CHECK_THAT(all, Catch::Contains("key 'a/b/c' is not a node label key: its name must be"));
  CHECK_THAT(all, Catch::Contains("'machines[0].labels.note' is 'has space': a label value is 0-63"));
  CHECK_THAT(all, Catch::Contains("key 'kubernetes.io/role' is not a node label key: the kubelet sets no label"));
  CHECK_THAT(all, Catch::Contains("its prefix 'UPPER.example' is not a lowercase DNS subdomain"));
  CHECK_THAT(all, Catch::Contains("'machines[0].taints' entry 'bad key!=x:NoSchedule': 'bad key!' is not a taint key"));
  CHECK_THAT(all, Catch::Contains("'machines[0].taints' entry 'k=x y:NoSchedule': the value 'x y' must be 0-63"));
}

TEST_CASE("one profile named through a symlink and by its own name is one profile", "[site]") {
  SiteDir s;
  fs::create_symlink(s.dir / "agents.yaml", s.dir / "agents-link.yaml");
  std::string text = good_site;
  text.replace(text.find("profile: agents.yaml"), std::string("profile: agents.yaml").size(), "profile: agents-link.yaml");
  text += R"(  - name: w2
    platform: rpi5
    serial: a1b2c322
    address: 10.0.10.22/24
    role: agent
    profile: agents.yaml
    boot: disk
)";
  Diagnostics d;
  auto loaded = load_site(s.write(text), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  REQUIRE(loaded->profiles.size() == 3);  // servers, agents (both spellings), talos
  const builder::Profile& agents = loaded->profiles.at(s.dir.path() / "agents-link.yaml");
  REQUIRE(agents.rpi_nodes.size() == 2);
  CHECK(agents.rpi_nodes[1].name == "w2");
}

TEST_CASE("site validation: addresses outside every network or inside a DHCP pool", "[site]") {
  SiteDir s;
  SECTION("outside") {
    auto errors = errors_for(s, s.write_with("address: 10.0.10.21/24", "address: 10.0.30.21/24"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(26, 14) + "address 10.0.30.21/24 of machine 'w1' is outside every network of the site "
                                          "(10.0.10.0/24, 10.0.20.0/24)");
  }
  SECTION("inside the dynamic pool") {
    auto errors = errors_for(s, s.write_with("address: 10.0.10.21/24", "address: 10.0.10.150/24"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(26, 14) + "address 10.0.10.150 of machine 'w1' is inside the DHCP pool "
                                          "10.0.10.100-10.0.10.199 of network 'pi': the DHCP server could hand it to "
                                          "another machine");
  }
  SECTION("IPv6 networks and addresses work the same way") {
    std::string text = good_site;
    auto at = text.find("    subnet: 10.0.20.0/24\n    gateway: 10.0.20.1\n");
    text.replace(at, std::string("    subnet: 10.0.20.0/24\n    gateway: 10.0.20.1\n").size(),
                 "    subnet: fd00:20::/64\n    gateway: fd00:20::1\n");
    text.replace(text.find("address: 10.0.20.11/24"), std::string("address: 10.0.20.11/24").size(),
                 "address: fd00:20::11/64");
    Diagnostics d;
    auto loaded = load_site(s.write(text), d, no_secrets());
    INFO(dump(d));
    REQUIRE(loaded);
    CHECK(loaded->site.machines[2].network == "pve");
    const builder::TalosNode& tcp1 = loaded->profiles.at(s.dir.path() / "talos.yaml").talos_nodes.at(0);
    CHECK(tcp1.addresses == std::vector<std::string>{"fd00:20::11/64"});
    CHECK(tcp1.gateways == std::vector<std::string>{"fd00:20::1"});
  }
}

TEST_CASE("site validation: agents need a server, workers a control plane", "[site]") {
  SiteDir s;
  SECTION("no server machine and no rke2.server in the agents' profile") {
    auto errors = errors_for(s, s.write_with("    role: server\n", "    role: agent\n    # no server\n"));
    for (const auto& e : errors) UNSCOPED_INFO(e);
    // cp1 (now an agent of the servers profile) is refused for its role, and both agents have no server.
    CHECK(std::find(errors.begin(), errors.end(),
                    s.prefix(28, 11) + "agent 'w1' has no server to join: no machine of the site has role server and its "
                                       "profile sets no rke2.server") != errors.end());
  }
  SECTION("a worker without any controlplane machine") {
    auto errors = errors_for(s, s.write_with("    role: controlplane\n", "    role: worker\n"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(36, 11) + "worker 'tcp1' has no control plane: no machine of the site has role controlplane");
  }
}

TEST_CASE("site validation: an even control plane is a warning, not an error", "[site]") {
  SiteDir s;
  std::string text = good_site;
  text += R"(  - name: cp2
    platform: rpi5
    address: 10.0.10.12/24
    role: server
    profile: servers.yaml
)";
  Diagnostics d;
  auto loaded = load_site(s.write(text), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  auto warnings = lines_of(d, Diagnostic::Severity::warning);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0] == s.prefix(19, 11) + "warning: the RKE2 control plane (role server) has 2 members, an even number: etcd keeps "
                                          "quorum through as many failures with 1 (use an odd number)");
  // The second server joins the first.
  CHECK(loaded->profiles.at(s.dir.path() / "servers.yaml").rpi_nodes.at(1).rke2.server == "https://10.0.10.11:9345");
}

TEST_CASE("site validation: Pi serials, profile kinds, roles and boot outputs", "[site]") {
  SiteDir s;
  SECTION("a serial that is not 8 or 16 hex digits") {
    auto errors = errors_for(s, s.write_with("serial: a1b2c321", "serial: a1b2c32"));
    REQUIRE(errors.size() >= 1);
    CHECK(errors[0] == s.prefix(24, 13) + "'machines[1].serial' must be the Pi's serial number, 8 or 16 hex digits (as in "
                                          "/proc/cpuinfo or the bootloader's TFTP directory), got 'a1b2c32'");
  }
  SECTION("a non-hex serial") {
    auto errors = errors_for(s, s.write_with("serial: a1b2c321", "serial: a1b2c32g"));
    REQUIRE(errors.size() >= 1);
    CHECK(errors[0].starts_with(s.prefix(24, 13) + "'machines[1].serial' must be the Pi's serial number"));
  }
  SECTION("a Pi built with a Talos profile") {
    auto errors = errors_for(s, s.write_with("profile: agents.yaml", "profile: talos.yaml"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(28, 14) + "machine 'w1' is a rpi5 but its profile talos.yaml is kind talos-iso (a Raspberry "
                                          "Pi 5 needs an rpi5-rke2 profile)");
  }
  SECTION("a VM built with a Pi profile") {
    auto errors = errors_for(s, s.write_with("profile: talos.yaml", "profile: agents.yaml"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(37, 14) + "machine 'tcp1' is a proxmox-vm but its profile agents.yaml is kind rpi5-rke2 (a "
                                          "Proxmox VM needs a talos-iso profile)");
  }
  SECTION("a Talos role on an RKE2 profile") {
    auto errors = errors_for(s, s.write_with("    role: agent\n", "    role: worker\n"));
    CHECK(std::find(errors.begin(), errors.end(),
                    s.prefix(27, 11) + "machine 'w1' has role worker, but its rpi5-rke2 profile takes server or agent "
                                       "(RKE2)") != errors.end());
  }
  SECTION("ephemeral boot from a profile without the ephemeral output") {
    auto errors = errors_for(s, s.write_with("    boot: netboot\n    taints", "    boot: ephemeral\n    taints"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(29, 11) + "machine 'w1' boots ephemeral, but its profile agents.yaml has no output.ephemeral");
  }
  SECTION("a netbooted Pi without a serial") {
    auto errors = errors_for(s, s.write_with("    serial: a1b2c321\n", ""));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(22, 5) + "machine 'w1' boots from the network (boot: netboot) and needs 'serial': serve "
                                         "recognises a Pi 5 by its serial number");
  }
  SECTION("a missing profile file") {
    auto errors = errors_for(s, s.write_with("profile: agents.yaml", "profile: agent.yaml"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(28, 14) + "profile " + (s.dir / "agent.yaml").string() + " of machine 'w1' does not exist");
  }
  SECTION("a profile name the filesystem refuses (a component over NAME_MAX): an error, not an exception") {
    const std::string long_name(300, 'a');
    auto errors = errors_for(s, s.write_with("profile: agents.yaml", "profile: " + long_name + ".yaml"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(28, 14) + "profile " + (s.dir / (long_name + ".yaml")).string() +
                           " of machine 'w1' cannot be checked: File name too long");
  }
  SECTION("a VM on a Proxmox node the site does not have") {
    auto errors = errors_for(s, s.write_with("node: pve2", "node: pve3"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(39, 9) + "machine 'tcp1' is placed on Proxmox node 'pve3', which is not one of proxmox.nodes "
                                         "(pve1, pve2)");
  }
  SECTION("an unknown key gets a hint") {
    auto errors = errors_for(s, s.write_with("    boot: netboot\n    taints", "    bot: netboot\n    taints"));
    REQUIRE(errors.size() >= 1);
    CHECK(errors[0].starts_with(s.prefix(29, 5)));
    CHECK(errors[0].find("did you mean 'boot'") != std::string::npos);
  }
}

TEST_CASE("errors in values a site gives its profiles point at the site", "[site]") {
  SiteDir s;
  // A Pi on an IPv6 network the site gives no gateway: the site is fine with that, the Pi profile's
  // static network needs one, and the error points at the site's line, not the profile.
  std::string text = good_site;
  text.replace(text.find("  pve:\n"), std::string("  pve:\n").size(), "  pi6:\n    subnet: fd00:10::/64\n  pve:\n");
  text.replace(text.find("address: 10.0.10.21/24"), std::string("address: 10.0.10.21/24").size(),
               "address: fd00:10::21/64");
  auto errors = errors_for(s, s.write(text));
  for (const auto& e : errors) UNSCOPED_INFO(e);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == s.prefix(28, 14) + "a static network needs 'address' and 'gateway'");
}

TEST_CASE("a Pi on an IPv6 network gets its static IPv6 address, gateway and DNS from the site", "[site]") {
  SiteDir s;
  std::string text = good_site;
  text.replace(text.find("  pve:\n"), std::string("  pve:\n").size(),
               "  pi6:\n    subnet: fd00:10::/64\n    gateway: fd00:10::1\n    dns: [\"fd00:10::53\"]\n  pve:\n");
  text.replace(text.find("address: 10.0.10.21/24"), std::string("address: 10.0.10.21/24").size(),
               "address: fd00:10::21/64");
  Diagnostics d;
  auto loaded = load_site(s.write(text), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  const builder::Rpi5Node& w1 = loaded->profiles.at(s.dir.path() / "agents.yaml").rpi_nodes.at(0);
  CHECK(w1.name == "w1");
  CHECK(w1.network.mode == builder::NetworkSettings::Mode::static_address);
  CHECK(w1.network.addresses == std::vector<std::string>{"fd00:10::21/64"});
  CHECK(w1.network.gateways == std::vector<std::string>{"fd00:10::1"});
  CHECK(w1.network.dns == std::vector<std::string>{"fd00:10::53"});
}

TEST_CASE("the example site validates with its 12 machines", "[site]") {
  Diagnostics d;
  auto loaded = load_site(test::source_dir() / "profiles" / "site-lab.yaml", d);
  INFO(dump(d));
  REQUIRE(loaded);
  CHECK(lines_of(d, Diagnostic::Severity::error).empty());
  CHECK(loaded->site.machines.size() == 12);
  std::size_t servers = 0, agents = 0, ephemeral = 0, controlplanes = 0, workers = 0;
  for (const auto& m : loaded->site.machines) {
    servers += m.role == Role::server;
    agents += m.role == Role::agent;
    ephemeral += m.boot == BootMethod::ephemeral;
    controlplanes += m.role == Role::controlplane;
    workers += m.role == Role::worker;
  }
  CHECK(servers == 3);
  CHECK(agents == 4);
  CHECK(ephemeral == 2);
  CHECK(controlplanes == 3);
  CHECK(workers == 2);
  CHECK(is_site_file(test::source_dir() / "profiles" / "site-lab.yaml"));
  CHECK_FALSE(is_site_file(test::source_dir() / "profiles" / "rpi5-rke2-server.yaml"));
}

TEST_CASE("site validation: a server profile's rke2.server must leave the first server to start the cluster", "[site]") {
  SiteDir s;
  // Two servers on one profile that names rke2.server profile-wide: cp1, the first server, would join too.
  auto site_with_servers_joining = [&](const std::string& url) {
    test::write_file(s.dir / "servers-join.yaml", "extends: servers.yaml\nrke2: {server: \"" + url + "\"}\n");
    std::string text = good_site;
    text.replace(text.find("profile: servers.yaml"), std::string("profile: servers.yaml").size(), "profile: servers-join.yaml");
    text += R"(  - name: cp2
    platform: rpi5
    serial: a1b2c312
    address: 10.0.10.12/24
    role: server
    profile: servers-join.yaml
  - name: cp3
    platform: rpi5
    serial: a1b2c313
    address: 10.0.10.13/24
    role: server
    profile: servers-join.yaml
)";
    return s.write(text);
  };
  const std::string profile_line = (s.dir / "servers-join.yaml").string() + ":2:16";
  SECTION("a VIP: nobody starts the cluster") {
    auto errors = errors_for(s, site_with_servers_joining("https://10.0.10.10:9345"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(20, 14) + "no server of the site starts the RKE2 cluster: its first server 'cp1' would join "
                                          "https://10.0.10.10:9345 (rke2.server of its profile, " + profile_line +
                           ") rather than start it, and the other servers (cp2, cp3) join too; give 'cp1' a profile that "
                           "names no rke2.server (one that extends servers-join.yaml with 'rke2: {server: null}')");
  }
  SECTION("the first server's own address: it would join itself") {
    auto errors = errors_for(s, site_with_servers_joining("https://10.0.10.11:9345"));
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == s.prefix(20, 14) + "machine 'cp1' would join https://10.0.10.11:9345, its own address (rke2.server of "
                                          "its profile, " + profile_line + "): a node cannot join itself; as the site's "
                                          "first server it starts the cluster: give it a profile that names no rke2.server "
                                          "(one that extends servers-join.yaml with 'rke2: {server: null}')");
  }
  SECTION("an IPv6 server's own address, written another way") {
    std::string text = good_site;
    text.replace(text.find("  pve:\n"), std::string("  pve:\n").size(),
                 "  pi6:\n    subnet: fd00:10::/64\n    gateway: fd00:10::1\n  pve:\n");
    text.replace(text.find("address: 10.0.10.21/24"), std::string("address: 10.0.10.21/24").size(),
                 "address: fd00:10::21/64");
    test::write_file(s.dir / "agents.yaml", std::string(pi_agent_profile) + "  server: https://[fd00:10:0::21]:9345\n");
    auto errors = errors_for(s, s.write(text));
    REQUIRE(errors.size() == 1);
    CHECK_THAT(errors[0], Catch::StartsWith(s.prefix(31, 14) + "machine 'w1' would join https://[fd00:10:0::21]:9345, its "
                                                              "own address"));
    CHECK_THAT(errors[0], Catch::EndsWith("a node cannot join itself; name another server, or none to join the site's "
                                          "first server"));
  }
  SECTION("the joining servers' VIP with a first server that names none: valid, and the inventory joins at the VIP") {
    std::string text = good_site + std::string(R"(  - name: cp2
    platform: rpi5
    serial: a1b2c312
    address: 10.0.10.12/24
    role: server
    profile: servers-join.yaml
)");
    test::write_file(s.dir / "servers-join.yaml",
                     "extends: servers.yaml\nname: pi-servers-join\nrke2: {server: \"https://10.0.10.10:9345\"}\n");
    test::write_file(s.dir / "agents.yaml", std::string(pi_agent_profile) + "  server: https://10.0.10.10:9345\n");
    Diagnostics d;
    auto loaded = load_site(s.write(text), d, no_secrets());
    INFO(dump(d));
    REQUIRE(loaded);
    CHECK_FALSE(loaded->profiles.at(s.dir.path() / "servers.yaml").rpi_nodes.at(0).rke2.server);
    CHECK(loaded->profiles.at(s.dir.path() / "servers-join.yaml").rpi_nodes.at(0).rke2.server == "https://10.0.10.10:9345");
    YAML::Node vars = YAML::Load(ansible_inventory_yaml(*loaded))["all"]["vars"];
    CHECK(vars["rke2_kubernetes_api_server_host"].as<std::string>() == "10.0.10.10");
    YAML::Node servers = YAML::Load(ansible_inventory_yaml(*loaded))["rke2_cluster"]["children"]["rke2_servers"]["hosts"];
    CHECK(servers.begin()->first.as<std::string>() == "cp1");  // rke2-ansible starts the cluster on rke2_servers[0]
  }
}

TEST_CASE("site validation: a Talos machine's role must fit its machine config's machine.type", "[site]") {
  SiteDir s;
  Diagnostics d;
  auto loaded = load_site(s.write(good_site), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  auto errors_with_type = [&](const std::string& type) {
    Diagnostics checked;
    std::vector<std::string> asked;
    check_site_talos_roles(*loaded, [&](const builder::Profile& p) { asked.push_back(p.name); return type; }, checked);
    CHECK(asked == std::vector<std::string>{"talos-cp"});  // one read per profile
    return lines_of(checked, Diagnostic::Severity::error);
  };
  CHECK(errors_with_type("controlplane").empty());
  CHECK(errors_with_type("init").empty());  // a control plane that bootstraps etcd
  CHECK(errors_with_type("").empty());      // unreadable: the profile's own checks say why
  auto errors = errors_with_type("worker");
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == s.prefix(36, 11) + "machine 'tcp1' has role controlplane, but its talos-iso profile talos.yaml builds "
                                        "worker nodes (machine.type worker in its machine config, file " +
                         (s.dir / "cp.yaml").string() + "): give the machine role worker, or a profile whose config is "
                                                        "a controlplane config");

  // And the other way round: a worker whose profile builds control planes.
  Diagnostics d2;
  auto workers = load_site(s.write_with("    role: controlplane\n", "    role: worker\n"), d2, no_secrets());
  // (a worker with no control plane is an error of its own, so the site is checked as loaded by hand)
  CHECK_FALSE(workers);
  SiteInventory site = read_site_inventory(s.dir / "site.yaml", d2);
  LoadedSite by_hand{site, loaded->profiles};
  Diagnostics checked;
  check_site_talos_roles(by_hand, [](const builder::Profile&) { return std::string("controlplane"); }, checked);
  auto worker_errors = lines_of(checked, Diagnostic::Severity::error);
  REQUIRE(worker_errors.size() == 1);
  CHECK_THAT(worker_errors[0], Catch::StartsWith(s.prefix(36, 11) + "machine 'tcp1' has role worker, but its talos-iso "
                                                                    "profile talos.yaml builds control plane nodes "
                                                                    "(machine.type controlplane"));
}

TEST_CASE("a loaded site lists the files it was read from: site, profiles, what they extend, secret files", "[site]") {
  SiteDir s;
  test::write_file(s.dir / "agents-base.yaml", pi_agent_profile);
  test::write_file(s.dir / "agents.yaml", "extends: agents-base.yaml\n");
  // A Talos patch file (export -o onto it replaced it with the export) and an overlay directory.
  test::write_file(s.dir / "patches" / "common.yaml", "machine: {time: {disabled: false}}\n");
  test::write_file(s.dir / "overlay" / "etc" / "motd", "hello\n");
  test::write_file(s.dir / "talos.yaml", std::string(talos_profile) + "  patches:\n    - file: patches/common.yaml\n");
  test::write_file(s.dir / "servers.yaml", std::string(pi_server_profile) + "overlays: [overlay]\n");
  Diagnostics d;
  auto loaded = load_site(s.write(good_site), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  std::vector<std::string> files;
  for (const auto& input : loaded->input_files()) {
    files.push_back(input.what + " " + fs::relative(input.path, s.dir.path()).string());
  }
  for (const char* expected : {"the site file site.yaml", "a profile servers.yaml", "a profile agents.yaml",
                               "a profile agents-base.yaml", "a secret file token", "a profile talos.yaml",
                               "a secret file cp.yaml", "a Talos patch file patches/common.yaml",
                               "an overlay directory overlay"}) {
    INFO(expected);
    CHECK(std::find(files.begin(), files.end(), expected) != files.end());
  }
}

TEST_CASE("site validation: an IPv6 network's gateway may be the router's link-local address", "[site]") {
  SiteDir s;
  auto with_pve_network = [&](const std::string& subnet, const std::string& gateway, const std::string& address) {
    std::string text = good_site;
    text.replace(text.find("    subnet: 10.0.20.0/24\n    gateway: 10.0.20.1\n"),
                 std::string("    subnet: 10.0.20.0/24\n    gateway: 10.0.20.1\n").size(),
                 "    subnet: " + subnet + "\n    gateway: " + gateway + "\n");
    text.replace(text.find("address: 10.0.20.11/24"), std::string("address: 10.0.20.11/24").size(), "address: " + address);
    return s.write(text);
  };
  Diagnostics d;
  auto loaded = load_site(with_pve_network("fd00:20::/64", "fe80::1", "fd00:20::11/64"), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  // Talos takes it as the node's default route (as the talos-iso profile's own nodes do).
  CHECK(loaded->profiles.at(s.dir.path() / "talos.yaml").talos_nodes.at(0).gateways == std::vector<std::string>{"fe80::1"});

  // Any other address outside the subnet is still refused, and so is a link-local gateway for IPv4.
  auto errors = errors_for(s, with_pve_network("fd00:20::/64", "fd00:30::1", "fd00:20::11/64"));
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == s.prefix(11, 14) + "'networks.pve.gateway' fd00:30::1 is outside the subnet fd00:20::/64");
  errors = errors_for(s, with_pve_network("10.0.20.0/24", "fe80::1", "10.0.20.11/24"));
  REQUIRE(errors.size() == 1);
  CHECK(errors[0] == s.prefix(11, 14) + "'networks.pve.gateway' fe80::1 is outside the subnet 10.0.20.0/24");
}

TEST_CASE("site ansible: vars keep their YAML types, and credentials are only ever references", "[site]") {
  SiteDir s;
  // Found with rke2-ansible: `rke2_reboot: false` was exported as the string "false", which its handler
  // `when: rke2_reboot` takes for true (it rebooted the nodes and skipped the RKE2 restart).
  auto file = s.write(std::string(good_site) + R"(ansible:
  token_lookup: "{{ vault_rke2_token }}"
  vars:
    rke2_reboot: false
    quoted: "false"
    rke2_disable: [rke2-ingress-nginx]
    registry_password: "{{ vault_registry_password }}"
)");
  Diagnostics d;
  auto loaded = load_site(file, d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  std::string inventory = ansible_inventory_yaml(*loaded);
  CHECK(inventory.find("    rke2_reboot: false\n") != std::string::npos);
  CHECK(inventory.find("    quoted: \"false\"\n") != std::string::npos);
  auto parsed = YAML::Load(inventory);
  CHECK(parsed["all"]["vars"]["rke2_disable"].IsSequence());
  CHECK(parsed["all"]["vars"]["rke2_disable"][0].as<std::string>() == "rke2-ingress-nginx");

  // The join token itself, where a reference belongs: the inventory is written 0644.
  auto literal = s.write(std::string(good_site) + R"(ansible:
  token_lookup: "K10abc123::server:0123456789abcdef"
  vars:
    rke2_token: K10abc123::server:0123456789abcdef
    ansible_become_password: hunter2
)");
  auto errors = errors_for(s, literal);
  REQUIRE(errors.size() == 3);
  CHECK_THAT(errors[0], Catch::StartsWith(s.prefix(43, 17)) &&
                            Catch::Contains("'ansible.token_lookup' must be a reference Ansible resolves when a play runs"));
  CHECK_THAT(errors[1], Catch::StartsWith(s.prefix(45, 17)) && Catch::Contains("'ansible.vars.rke2_token' names a credential"));
  CHECK_THAT(errors[2], Catch::Contains("'ansible.vars.ansible_become_password' names a credential"));
}

TEST_CASE("a profile-wide host name or RKE2 node-name does not give a site's machines one name", "[site]") {
  // Found exporting a site whose agent profile set rke2.config.node-name (or system.hostname) for all
  // its nodes: both agents registered as "worker", and RKE2 refused the second.
  SiteDir s;
  test::write_file(s.dir / "agents.yaml", std::string(pi_agent_profile) + "    node-name: worker\nsystem: {hostname: worker}\n");
  auto file = s.write_with("  - name: tcp1\n", "  - name: w2\n    platform: rpi5\n    serial: a1b2c322\n"
                                               "    address: 10.0.10.22/24\n    role: agent\n    profile: agents.yaml\n"
                                               "  - name: tcp1\n");
  Diagnostics d;
  auto loaded = load_site(file, d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  const auto& agents = loaded->profiles.at(s.dir.path() / "agents.yaml").rpi_nodes;
  REQUIRE(agents.size() == 2);
  for (const auto& node : agents) {
    CHECK(node.system.hostname == node.name);
    REQUIRE(node.rke2.config.find("node-name") != nullptr);
    CHECK(node.rke2.config.find("node-name")->scalar == node.name);
  }
}

TEST_CASE("site validation: etcd members that boot ephemeral", "[site]") {
  // Found validating a site whose only (bootstrap) server booted ephemeral: "ok", and the node would
  // start a new, empty cluster at every boot.
  SiteDir s;
  auto errors = errors_for(s, s.write_with("    labels: {zone: a}\n", "    labels: {zone: a}\n    boot: ephemeral\n"));
  INFO(Catch::Detail::stringify(errors));
  CHECK(std::any_of(errors.begin(), errors.end(), [](const std::string& e) {
    return e.find("machine 'cp1' boots ephemeral but starts the RKE2 cluster") != std::string::npos;
  }));
  // A Talos control plane with the wipe cycle: a warning (a lab may want it), not an error.
  Diagnostics d;
  auto file = s.write_with("    profile: talos.yaml\n    boot: netboot\n", "    profile: talos.yaml\n    boot: ephemeral\n");
  auto loaded = load_site(file, d, no_secrets());
  auto warnings = lines_of(d, Diagnostic::Severity::warning);
  bool warned = std::any_of(warnings.begin(), warnings.end(), [](const std::string& w) {
    return w.find("machine 'tcp1' is an etcd member (role controlplane) that boots ephemeral") != std::string::npos;
  });
  CHECK(warned);
}

TEST_CASE("site validation: Ansible's own group names are no machine names", "[site]") {
  SiteDir s;
  auto errors = errors_for(s, s.write_with("  - name: w1\n", "  - name: all\n"));
  REQUIRE(errors.size() == 1);
  CHECK_THAT(errors[0], Catch::Contains("'all' is one of Ansible's own group names (all, ungrouped)"));
}

TEST_CASE("a machine's label replaces the profile's label of the same key", "[site]") {
  // Found exporting a site that labelled a machine topology.kubernetes.io/zone while its profile did
  // too: node-label held both values.
  SiteDir s;
  std::string profile = pi_server_profile;
  const std::string taints = "    node-taint: [\"CriticalAddonsOnly=true:NoExecute\"]\n";
  profile.replace(profile.find(taints), taints.size(), taints + "    node-label: [\"zone=z\", \"tier=infra\"]\n");
  test::write_file(s.dir / "servers.yaml", profile);
  Diagnostics d;
  auto loaded = load_site(s.write(good_site), d, no_secrets());
  INFO(dump(d));
  REQUIRE(loaded);
  const builder::Rpi5Node& cp1 = loaded->profiles.at(s.dir.path() / "servers.yaml").rpi_nodes.front();
  const ConfigNode* labels = cp1.rke2.config.find("node-label");
  REQUIRE(labels != nullptr);
  std::vector<std::string> values;
  for (const auto& item : labels->items) values.push_back(item.scalar);
  CHECK(values == std::vector<std::string>{"tier=infra", "zone=a"});
}
