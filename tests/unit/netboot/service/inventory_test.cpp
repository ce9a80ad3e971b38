// The nodes file and netboot.yaml: typed reading with file:line:col diagnostics, and node matching.
#include <catch2/catch.hpp>

#include "core/config_node.hpp"
#include "netboot/service/netboot_config.hpp"
#include "netboot/service/node_inventory.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;

namespace {

NodeInventory parse(const std::string& yaml, Diagnostics& diagnostics) {
  ConfigNode tree = load_yaml_string(yaml, "nodes.yaml", diagnostics);
  return parse_node_inventory(tree, diagnostics, /*check_files=*/false);
}

std::string all_errors(const Diagnostics& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics.all()) out += d.str() + "\n";
  return out;
}

const char* good_inventory = R"(profiles:
  pi-worker:
    rpi_image: {image: out/pi5-worker.img}
    mode: ephemeral
  talos-cp:
    talos:
      kernel: assets/vmlinuz-amd64
      initramfs: assets/initramfs-amd64.xz
      args: console=ttyS0
    mode: install
  debian:
    kernel:
      kernel: debian/vmlinuz
      initrd: [debian/initrd.gz, debian/extra.cpio]
      args: boot=live
  disk:
    kernel: {kernel: debian/vmlinuz}
    mode: local
nodes:
  - name: pi1
    match: {serial: 10000000abcdef12}
    profile: pi-worker
  - name: cp1
    match: {mac: "52-54-00-12-34-56"}
    profile: talos-cp
    address: 10.0.0.11
    talos_config: {file: /etc/aggrik8s/cp1.yaml}
  - name: cp1-exact
    match: {mac: "52:54:00:12:34:56", uuid: 4C4C4544-0000-1000-8000-000000000001}
    profile: debian
unknown_nodes: {action: maintenance, profile: talos-cp}
)";

}  // namespace

TEST_CASE("inventory: a complete nodes file reads without diagnostics", "[inventory]") {
  Diagnostics diagnostics;
  NodeInventory inventory = parse(good_inventory, diagnostics);
  INFO(all_errors(diagnostics));
  REQUIRE_FALSE(diagnostics.has_errors());
  REQUIRE(inventory.profiles.size() == 4);
  REQUIRE(inventory.nodes.size() == 3);
  CHECK(inventory.profiles.at("pi-worker").mode == BootMode::ephemeral);
  CHECK(std::get<RaspberryPiImageBoot>(inventory.profiles.at("pi-worker").target).image == "out/pi5-worker.img");
  CHECK(inventory.profiles.at("disk").mode == BootMode::local_disk);
  auto& debian = std::get<KernelBoot>(inventory.profiles.at("debian").target);
  CHECK(debian.initrds.size() == 2);
  CHECK(inventory.profiles.at("debian").assets().size() == 3);
  CHECK(inventory.nodes[0].match.serial == "abcdef12");  // the low 8 digits, as the Pi's TFTP directory
  CHECK(inventory.nodes[1].match.mac == "52:54:00:12:34:56");
  CHECK(inventory.nodes[1].address == "10.0.0.11");
  REQUIRE(inventory.nodes[1].talos_config);
  CHECK(inventory.nodes[1].talos_config->name == "/etc/aggrik8s/cp1.yaml");
  CHECK(inventory.unknown_action == UnknownNodeAction::maintenance);
  CHECK(inventory.unknown_node_profile() == &inventory.profiles.at("talos-cp"));
}

TEST_CASE("inventory: matching takes the most specific node, then the first in the file", "[inventory]") {
  Diagnostics diagnostics;
  NodeInventory inventory = parse(good_inventory, diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  NodeFacts by_mac{"52:54:00:12:34:56", std::nullopt, std::nullopt};
  REQUIRE(inventory.match(by_mac) != nullptr);
  CHECK(inventory.match(by_mac)->name == "cp1");
  NodeFacts both{"52:54:00:12:34:56", "4c4c4544-0000-1000-8000-000000000001", std::nullopt};
  CHECK(inventory.match(both)->name == "cp1-exact");
  NodeFacts wrong_uuid{"52:54:00:12:34:56", "4c4c4544-0000-1000-8000-000000000002", std::nullopt};
  CHECK(inventory.match(wrong_uuid)->name == "cp1");
  NodeFacts pi{std::nullopt, std::nullopt, "abcdef12"};
  CHECK(inventory.match(pi)->name == "pi1");
  CHECK(inventory.match(NodeFacts{}) == nullptr);
  CHECK(inventory.match(NodeFacts{"aa:bb:cc:dd:ee:ff", std::nullopt, std::nullopt}) == nullptr);
}

namespace {
NodeFacts mac_id(std::string mac) { NodeFacts f; f.mac = std::move(mac); return f; }
NodeFacts uuid_id(std::string uuid) { NodeFacts f; f.uuid = std::move(uuid); return f; }
NodeFacts serial_id(std::string serial) { NodeFacts f; f.serial = std::move(serial); return f; }
}  // namespace

TEST_CASE("inventory: a per-node URL names a node by any one of its selectors", "[inventory]") {
  Diagnostics diagnostics;
  NodeInventory inventory = parse(R"(profiles:
  talos: {talos: {kernel: vmlinuz, initramfs: initramfs.xz}}
nodes:
  - {name: cp1, match: {mac: "52:54:00:00:00:01", uuid: 4c4c4544-0000-1000-8000-000000000001}, profile: talos}
  - {name: pi1, match: {serial: 9ffefdef}, profile: talos}
  - {name: a, match: {mac: "52:54:00:00:00:02", uuid: 4c4c4544-0000-1000-8000-00000000000a}, profile: talos}
  - {name: b, match: {mac: "52:54:00:00:00:02", uuid: 4c4c4544-0000-1000-8000-00000000000b}, profile: talos}
)", diagnostics);
  INFO(all_errors(diagnostics));
  REQUIRE_FALSE(diagnostics.has_errors());
  // match() needs every selector (a boot request carries them all); a URL carries one.
  CHECK(inventory.match(mac_id("52:54:00:00:00:01")) == nullptr);
  REQUIRE(inventory.named_by(mac_id("52:54:00:00:00:01")) != nullptr);
  CHECK(inventory.named_by(mac_id("52:54:00:00:00:01"))->name == "cp1");
  CHECK(inventory.named_by(uuid_id("4c4c4544-0000-1000-8000-000000000001"))->name == "cp1");
  CHECK(inventory.named_by(serial_id("9ffefdef"))->name == "pi1");
  CHECK(inventory.named_by(mac_id("52:54:00:00:00:99")) == nullptr);
  // A MAC two nodes share names neither; each is named by its UUID.
  CHECK(inventory.named_by(mac_id("52:54:00:00:00:02")) == nullptr);
  CHECK(inventory.named_by(uuid_id("4c4c4544-0000-1000-8000-00000000000b"))->name == "b");
  CHECK(inventory.named_by(NodeFacts{}) == nullptr);
}

TEST_CASE("inventory: identifiers are normalised", "[inventory]") {
  CHECK(normalize_pi_serial("9FFEFDEF") == "9ffefdef");
  CHECK(normalize_pi_serial("100000009ffefdef") == "9ffefdef");
  CHECK_FALSE(normalize_pi_serial("9ffefde"));
  CHECK_FALSE(normalize_pi_serial("9ffefdeg"));
  CHECK(normalize_mac_any("DC-A6-32-01-02-03") == "dc:a6:32:01:02:03");
}

TEST_CASE("inventory: mistakes are reported with file:line:col", "[inventory]") {
  Diagnostics diagnostics;
  parse(R"(profiles:
  a:
    talos: {kernel: k}
    kernel: {kernel: k}
  b:
    rpi_image: {image: x.img}
    mode: sometimes
nodes:
  - name: Bad_Name
    match: {mac: "52:54:00:12:34"}
    profile: missing
  - name: n2
    match: {}
    profile: b
    adress: 10.0.0.1
  - name: n3
    match: {uuid: 4c4c4544-0000-1000-8000-000000000001}
    profile: b
    address: 10.0.0.300
    talos_config: "inline secret"
unknown_nodes: {action: default}
)",
        diagnostics);
  std::string errors = all_errors(diagnostics);
  INFO(errors);
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:3:12: 'profiles.a.talos.initramfs'") ||
                         Catch::Contains("nodes.yaml:3:12"));
  CHECK_THAT(errors, Catch::Contains("exactly one of 'rpi_image', 'rpi_ephemeral', 'talos' and 'kernel'"));
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:7:11"));  // mode: sometimes
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:9:11: 'nodes[0].name' must be a DNS label"));
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:10:18: 'nodes[0].match.mac' must be a MAC address"));
  CHECK_THAT(errors, Catch::Contains("names profile 'missing', which is not defined"));
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:15:5"));  // adress: unknown key
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:19:14: 'nodes[2].address' must be an IPv4 address"));
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:20:19"));  // inline secret
  CHECK_THAT(errors, Catch::Contains("needs 'unknown_nodes.profile'"));
}

TEST_CASE("inventory: duplicate names and selectors are errors", "[inventory]") {
  Diagnostics diagnostics;
  parse(R"(profiles:
  p: {kernel: {kernel: k}}
nodes:
  - {name: a, match: {mac: "52:54:00:00:00:01"}, profile: p}
  - {name: a, match: {mac: "52:54:00:00:00:02"}, profile: p}
  - {name: c, match: {mac: "52-54-00-00-00-01"}, profile: p}
  - {name: d, match: {mac: "52:54:00:00:00:04"}, profile: p, address: 10.0.0.60}
  - {name: e, match: {uuid: 7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51}, profile: p, address: 10.0.0.60}
)",
        diagnostics);
  std::string errors = all_errors(diagnostics);
  INFO(errors);
  CHECK_THAT(errors, Catch::Contains("node 'a' is already defined at nodes.yaml:4:5"));
  CHECK_THAT(errors, Catch::Contains("node 'c' has the same selectors as node 'a'"));
  // One address pinned to two nodes: DHCP could reserve it for one of them only.
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:8:89: 'nodes[4].address' 10.0.0.60 is already pinned to node 'd' "
                                     "(nodes.yaml:7:5): each node needs its own address"));
}

TEST_CASE("netboot config: tftp.path_mtu, and a max_blksize one packet cannot hold is a warning", "[inventory][netboot]") {
  auto read = [](const std::string& tftp, Diagnostics& diagnostics) {
    ConfigNode tree = load_yaml_string("tftp: " + tftp + "\n", "/etc/aggrik8s/netboot.yaml", diagnostics);
    return parse_netboot_config(tree, diagnostics);
  };
  auto warnings = [](const Diagnostics& diagnostics) {
    std::string out;
    for (const auto& d : diagnostics.all()) {
      if (d.severity == Diagnostic::Severity::warning) out += d.str() + "\n";
    }
    return out;
  };
  Diagnostics plain;
  CHECK(read("{max_blksize: 1468}", plain).tftp_path_mtu == 1500);
  CHECK(warnings(plain).empty());
  Diagnostics large;
  read("{max_blksize: 65464}", large);
  CHECK_FALSE(large.has_errors());
  CHECK(warnings(large) == "/etc/aggrik8s/netboot.yaml:1:21: warning: 'tftp.max_blksize' 65464 is more than one packet "
                           "holds on 'tftp.path_mtu' 1500: blocks stay at 1468 (set path_mtu to the network's MTU, e.g. "
                           "9000 for jumbo frames, or 0)\n");
  Diagnostics jumbo;
  CHECK(read("{max_blksize: 8968, path_mtu: 9000}", jumbo).tftp_path_mtu == 9000);
  CHECK(warnings(jumbo).empty());
  Diagnostics unclamped;
  CHECK(read("{max_blksize: 65464, path_mtu: 0}", unclamped).tftp_path_mtu == 0);
  CHECK(warnings(unclamped).empty());
  Diagnostics tiny;
  read("{path_mtu: 100}", tiny);
  CHECK_THAT(all_errors(tiny), Catch::Contains("'tftp.path_mtu' is 100: must be 0 (no clamp) or at least 576"));
}

TEST_CASE("netboot config: defaults, values and diagnostics", "[inventory][netboot]") {
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string(R"(listen: {address: 10.0.0.1}
tftp: {port: 6969, max_windowsize: 8}
http: {port: 8081, base_url: "http://boot.lan:8081/", idle_timeout_s: 5}
inventory: nodes.yaml
boot_log: /var/log/boot.jsonl
)",
                                     "/etc/aggrik8s/netboot.yaml", diagnostics);
  NetbootConfig config = parse_netboot_config(tree, diagnostics);
  INFO(all_errors(diagnostics));
  REQUIRE_FALSE(diagnostics.has_errors());
  CHECK(config.address == "10.0.0.1");
  CHECK(config.tftp_port == 6969);
  CHECK(config.tftp_max_windowsize == 8);
  CHECK(config.http_port == 8081);
  CHECK(config.http_base_url == "http://boot.lan:8081");
  CHECK(config.http_idle_timeout == std::chrono::seconds(5));
  CHECK(config.inventory == "/etc/aggrik8s/nodes.yaml");
  CHECK(config.boot_log == "/var/log/boot.jsonl");

  Diagnostics bad;
  ConfigNode wrong = load_yaml_string(R"(listen: {address: 10.0.0.1, interface: eth0}
tftp: {port: 70000}
http: {base_url: "https://x", prot: 1}
)",
                                      "netboot.yaml", bad);
  parse_netboot_config(wrong, bad);
  std::string errors = all_errors(bad);
  INFO(errors);
  CHECK_THAT(errors, Catch::Contains("netboot.yaml:1:9: 'listen' takes 'address' or 'interface', not both"));
  CHECK_THAT(errors, Catch::Contains("netboot.yaml:2:14: 'tftp.port' is 70000, must be between 0 and 65535"));
  CHECK_THAT(errors, Catch::Contains("netboot.yaml:3:18: 'http.base_url' must be an http:// URL"));
  CHECK_THAT(errors, Catch::Contains("netboot.yaml:3:31: unknown key 'http.prot' (did you mean 'port'?)"));

  // A root whose name the filesystem refuses (a component over NAME_MAX) is an error at the key, not
  // a filesystem_error out of the reader.
  Diagnostics refused;
  const std::string long_name = "/" + std::string(300, 'r');
  ConfigNode roots = load_yaml_string("tftp: {root: " + long_name + "}\nhttp: {root: " + long_name + "}\n", "netboot.yaml", refused);
  parse_netboot_config(roots, refused);
  std::string refusals = all_errors(refused);
  INFO(refusals);
  CHECK_THAT(refusals, Catch::Contains("netboot.yaml:1:14: 'tftp.root': " + long_name + " cannot be checked: File name too long"));
  CHECK_THAT(refusals, Catch::Contains("netboot.yaml:2:14: 'http.root': " + long_name + " cannot be checked: File name too long"));
}

TEST_CASE("netboot config: node_secrets.proof defaults to neighbour, last-asker must be written out", "[inventory][netboot]") {
  auto read = [](const std::string& yaml, Diagnostics& diagnostics) {
    ConfigNode tree = load_yaml_string(yaml, "netboot.yaml", diagnostics);
    return parse_netboot_config(tree, diagnostics);
  };
  Diagnostics none;
  CHECK(read("inventory: nodes.yaml\n", none).node_secret_proof == NodeSecretProof::neighbour);
  CHECK(NetbootConfig{}.node_secret_proof == NodeSecretProof::neighbour);  // the CLI's quick-start flags too
  Diagnostics ok;
  CHECK(read("node_secrets: {proof: bound}\n", ok).node_secret_proof == NodeSecretProof::bound);
  CHECK(read("node_secrets: {proof: last-asker}\n", ok).node_secret_proof == NodeSecretProof::last_asker);
  CHECK_FALSE(ok.has_errors());

  Diagnostics bad;
  read("node_secrets: {proof: anyone}\n", bad);
  read("node_secrets: {prof: bound}\n", bad);
  std::string errors = all_errors(bad);
  INFO(errors);
  CHECK_THAT(errors, Catch::Contains("node_secrets.proof"));
  CHECK_THAT(errors, Catch::Contains("last-asker"));
  CHECK_THAT(errors, Catch::Contains("unknown key 'node_secrets.prof'"));
}

TEST_CASE("inventory: a mode: local profile needs nothing to boot, and reservation_mac reserves a serial-matched Pi's address", "[inventory]") {
  Diagnostics diagnostics;
  NodeInventory inventory = parse(R"(profiles:
  own-disk: {mode: local}
nodes:
  - {name: pi1, match: {serial: 10000000a1b2c3d4}, profile: own-disk, address: 10.0.10.11, reservation_mac: "D8-3A-DD-10-00-11"}
)",
                                  diagnostics);
  INFO(all_errors(diagnostics));
  REQUIRE(diagnostics.all().empty());
  CHECK(inventory.profiles.at("own-disk").mode == BootMode::local_disk);
  CHECK(std::holds_alternative<LocalDiskBoot>(inventory.profiles.at("own-disk").target));
  CHECK(inventory.profiles.at("own-disk").assets().empty());
  CHECK(inventory.find("pi1")->reservation_mac == "d8:3a:dd:10:00:11");
  CHECK_FALSE(inventory.find("pi1")->match.mac);  // not a selector: the Pi's TFTP requests name only its serial

  Diagnostics bad;
  parse(R"(profiles:
  nothing: {mode: install}
  own-disk: {mode: local}
nodes:
  - {name: a, match: {serial: 0000beef}, profile: own-disk, reservation_mac: "d8:3a:dd:10:00:12"}
  - {name: b, match: {mac: "d8:3a:dd:10:00:13"}, profile: own-disk, address: 10.0.0.2, reservation_mac: "d8:3a:dd:10:00:13"}
  - {name: c, match: {serial: 0000beee}, profile: own-disk, address: 10.0.0.3, reservation_mac: "d8:3a:dd"}
)",
        bad);
  std::string errors = all_errors(bad);
  INFO(errors);
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:2:12: profile 'nothing' must have exactly one of 'rpi_image', "
                                     "'rpi_ephemeral', 'talos' and 'kernel' (or none, with mode: local)"));
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:5:78: 'nodes[0].reservation_mac' needs 'address'"));
  CHECK_THAT(errors, Catch::Contains("'nodes[1].reservation_mac': match.mac is the reservation's MAC already"));
  CHECK_THAT(errors, Catch::Contains("'nodes[2].reservation_mac' must be a MAC address"));
}

TEST_CASE("netboot config: site is the other source of the nodes, not both", "[inventory][netboot]") {
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string("site: sites/lab.yaml\n", "/etc/aggrik8s/netboot.yaml", diagnostics);
  NetbootConfig config = parse_netboot_config(tree, diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  CHECK(config.site == "/etc/aggrik8s/sites/lab.yaml");
  CHECK_FALSE(config.inventory);

  Diagnostics bad;
  ConfigNode both = load_yaml_string("inventory: nodes.yaml\nsite: lab.yaml\n", "netboot.yaml", bad);
  parse_netboot_config(both, bad);
  std::string errors = all_errors(bad);
  INFO(errors);
  CHECK_THAT(errors, Catch::Contains("netboot.yaml:2:7: 'site' and 'inventory' are two sources of the nodes: give one"));
}

TEST_CASE("nodes file: with file checks on, a kernel or initrd that is missing, misnamed or a directory is an error at its key", "[inventory][netboot]") {
  // Missing, and named with a component over NAME_MAX (which the throwing fs::is_regular_file once
  // turned into a filesystem_error): each key reports what is wrong, as `serve` reads the file on start.
  const std::string long_name = "/" + std::string(300, 'k');
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string("profiles:\n  deb:\n    kernel:\n      kernel: " + long_name +
                                         "\n      initrd: [/nonexistent/initrd.gz, " + long_name + "]\n",
                                     "nodes.yaml", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  parse_node_inventory(tree, diagnostics, /*check_files=*/true);
  std::string errors = all_errors(diagnostics);
  INFO(errors);
  CHECK_THAT(errors, Catch::Contains("nodes.yaml:4:15: 'profiles.deb.kernel.kernel': " + long_name + " cannot be read: File name too long"));
  CHECK_THAT(errors, Catch::Contains("'profiles.deb.kernel.initrd': /nonexistent/initrd.gz does not exist"));
  CHECK_THAT(errors, Catch::Contains("'profiles.deb.kernel.initrd': " + long_name + " cannot be read: File name too long"));
  // A directory where a file belongs.
  Diagnostics directory;
  ConfigNode tree2 = load_yaml_string("profiles:\n  deb:\n    kernel:\n      kernel: /tmp\n", "nodes.yaml", directory);
  parse_node_inventory(tree2, directory, /*check_files=*/true);
  CHECK_THAT(all_errors(directory), Catch::Contains("'profiles.deb.kernel.kernel': /tmp is not a regular file"));
}
