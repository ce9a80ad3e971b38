// Talos machine configs: multi-document parsing, structure checks, RFC 7396 / RFC 6902 patches, the
// node's identity patch, and errors that point at file:line:col or node/field without quoting secrets.
#include <catch2/catch.hpp>

#include "builder/talos/talos_config_patch.hpp"
#include "core/identifiers.hpp"
#include "builder/talos/talos_machine_config.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;

namespace {

const char* controlplane_config = R"(# from talosctl gen config
version: v1alpha1
debug: false
machine:
  type: controlplane
  token: SECRET-MACHINE-TOKEN
  network: {}
  install:
    disk: /dev/sda
    image: ghcr.io/siderolabs/installer:v1.12.0
cluster:
  controlPlane:
    endpoint: https://10.0.20.10:6443
  clusterName: lab
  secret: SECRET-CLUSTER-SECRET
---
apiVersion: v1alpha1
kind: HostnameConfig
auto: stable
)";

ConfigNode yaml(const std::string& text) {
  Diagnostics d;
  ConfigNode node = load_yaml_string(text, "patch.yaml", d);
  REQUIRE_FALSE(d.has_errors());
  return node;
}

TalosMachineConfig parse(const std::string& text, Diagnostics& d) {
  auto config = parse_talos_machine_config(text, "cp.yaml", d);
  REQUIRE(config);
  return *config;
}

std::string all(const Diagnostics& d) {
  std::string out;
  for (const auto& x : d.all()) out += x.str() + "\n";
  return out;
}

const ConfigNode& at(const ConfigNode& root, std::initializer_list<const char*> keys) {
  const ConfigNode* node = &root;
  for (const char* key : keys) {
    node = node->find(key);
    REQUIRE(node != nullptr);
  }
  return *node;
}

TalosNode node_named(const std::string& name) {
  TalosNode node;
  node.name = name;
  node.hostname = name;
  return node;
}

}  // namespace

TEST_CASE("talos: a multi-document machine config keeps its documents and file lines", "[talos][config]") {
  Diagnostics d;
  TalosMachineConfig config = parse(controlplane_config, d);
  REQUIRE(config.documents.size() == 2);
  CHECK(config.machine_type() == "controlplane");
  CHECK(at(config.documents[1], {"kind"}).scalar == "HostnameConfig");
  // Line numbers are the file's, also in the second document.
  CHECK(at(config.documents[1], {"kind"}).location.line == 18);
  validate_talos_machine_config(config, "", true, d);
  CHECK_FALSE(d.has_errors());
  std::string text = config.to_yaml();
  CHECK(text.find("---\napiVersion: v1alpha1\n") != std::string::npos);
  Diagnostics again;
  CHECK(parse(text, again).documents.size() == 2);
}

TEST_CASE("talos: machine config structure errors name file:line:col and never the values", "[talos][config]") {
  Diagnostics d;
  TalosMachineConfig config = parse(R"(version: v1alpha2
machine:
  type: router
  token: SECRET-MACHINE-TOKEN
cluster:
  controlPlane:
    endpoint: http://10.0.0.1:6443
---
just: a map
)", d);
  validate_talos_machine_config(config, "", true, d);
  std::string text = all(d);
  INFO(text);
  CHECK(text.find("cp.yaml:1:10: the first document must have 'version: v1alpha1'") != std::string::npos);
  CHECK(text.find("cp.yaml:3:9: 'machine.type' must be controlplane, worker or init") != std::string::npos);
  CHECK(text.find("cp.yaml:7:15: 'cluster.controlPlane.endpoint' must be") != std::string::npos);
  CHECK(text.find("'cluster.clusterName' is missing") != std::string::npos);
  CHECK(text.find("no install disk") != std::string::npos);
  CHECK(text.find("document 2 of the machine config needs 'apiVersion' and 'kind'") != std::string::npos);
  CHECK(text.find("SECRET") == std::string::npos);
}

TEST_CASE("talos: YAML syntax errors in a config are located, not quoted", "[talos][config]") {
  Diagnostics d;
  auto config = parse_talos_machine_config("version: v1alpha1\nmachine: [SECRET-VALUE\n", "cp.yaml", d);
  CHECK_FALSE(config);
  REQUIRE(d.has_errors());
  CHECK(d.all().front().where.file == "cp.yaml");
  CHECK(d.all().front().where.line >= 2);
  CHECK(all(d).find("SECRET-VALUE") == std::string::npos);
}

TEST_CASE("talos: RFC 7396 merge patches merge maps, replace lists and delete with null", "[talos][patch]") {
  ConfigNode target = yaml("a: {b: 1, c: 2}\nlist: [1, 2]\nkeep: x\n");
  ConfigNode patched = apply_merge_patch(target, yaml("a: {b: null, d: 4}\nlist: [3]\nnew: {deep: {er: 1}}\n"));
  CHECK(at(patched, {"a"}).find("b") == nullptr);
  CHECK(at(patched, {"a", "c"}).scalar == "2");
  CHECK(at(patched, {"a", "d"}).scalar == "4");
  REQUIRE(at(patched, {"list"}).items.size() == 1);
  CHECK(at(patched, {"list"}).items[0].scalar == "3");
  CHECK(at(patched, {"keep"}).scalar == "x");
  CHECK(at(patched, {"new", "deep", "er"}).scalar == "1");
  // A non-map patch replaces the target; null inside a new subtree is dropped (RFC 7396 appendix).
  CHECK(apply_merge_patch(target, yaml("[1]")).is_sequence());
  CHECK(at(apply_merge_patch(target, yaml("n: {x: null, y: 1}")), {"n"}).entries.size() == 1);
}

TEST_CASE("talos: JSON pointers unescape ~0 and ~1", "[talos][patch]") {
  CHECK(parse_json_pointer("") == std::vector<std::string>{});
  CHECK(parse_json_pointer("/a~1b/c~0d/0") == std::vector<std::string>{"a/b", "c~d", "0"});
  CHECK(parse_json_pointer("/") == std::vector<std::string>{""});
  CHECK_THROWS_AS(parse_json_pointer("a/b"), std::invalid_argument);
  CHECK_THROWS_AS(parse_json_pointer("/a~2"), std::invalid_argument);
}

TEST_CASE("talos: RFC 6902 operations: add, remove, replace, move, copy, test", "[talos][patch]") {
  ConfigNode doc = yaml("machine:\n  certSANs: [a, b]\n  kubelet: {image: k1}\n  labels: {x: '1'}\n");
  apply_json_patch(doc, yaml(R"(
- {op: add, path: /machine/certSANs/-, value: c}
- {op: add, path: /machine/certSANs/0, value: first}
- {op: remove, path: /machine/certSANs/1}
- {op: replace, path: /machine/kubelet/image, value: k2}
- {op: copy, from: /machine/kubelet, path: /machine/kubelet2}
- {op: move, from: /machine/labels, path: /machine/nodeLabels}
- {op: add, path: /machine/a~1b, value: slash}
- {op: test, path: /machine/nodeLabels/x, value: "1"}
- {op: test, path: /machine/certSANs, value: [first, b, c]}
)"));
  const ConfigNode& sans = at(doc, {"machine", "certSANs"});
  REQUIRE(sans.items.size() == 3);
  CHECK(sans.items[0].scalar == "first");
  CHECK(sans.items[1].scalar == "b");
  CHECK(sans.items[2].scalar == "c");
  CHECK(at(doc, {"machine", "kubelet", "image"}).scalar == "k2");
  CHECK(at(doc, {"machine", "kubelet2", "image"}).scalar == "k2");
  CHECK(at(doc, {"machine"}).find("labels") == nullptr);
  CHECK(at(doc, {"machine", "nodeLabels", "x"}).scalar == "1");
  CHECK(at(doc, {"machine", "a/b"}).scalar == "slash");
}

TEST_CASE("talos: a failing JSON patch says which operation and why, and changes nothing", "[talos][patch]") {
  ConfigNode doc = yaml("machine: {type: worker, list: [1]}\n");
  ConfigNode before = doc;
  auto fails_with = [&](const std::string& ops, const std::string& text) {
    ConfigNode operations = yaml(ops);
    try {
      apply_json_patch(doc, operations);
      FAIL("no error for " << ops);
    } catch (const TalosPatchError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(text) != std::string::npos);
      CHECK(e.where().file == "patch.yaml");
      CHECK(e.where().line > 0);
    }
    CHECK(same_value(doc, before));
  };
  fails_with("- {op: add, path: /machine/type2, value: x}\n- {op: remove, path: /machine/nothere}",
             "json6902[1] (remove /machine/nothere): no key 'nothere' in /machine");
  fails_with("- {op: replace, path: /cluster/x, value: 1}", "no key 'cluster' in the document root");
  fails_with("- {op: add, path: /machine/list/5, value: 1}", "not an index where an item can be added");
  fails_with("- {op: remove, path: /machine/list/01}", "'01' is not a list index");
  fails_with("- {op: test, path: /machine/type, value: controlplane}", "differs from the test's value");
  fails_with("- {op: test, path: /machine/list/0, value: '1'}", "differs");  // string "1" is not number 1
  fails_with("- {op: move, from: /machine, path: /machine/inner}", "into one of its own children");
  fails_with("- {op: frobnicate, path: /machine}", "unknown op 'frobnicate'");
  fails_with("- {op: add, path: /machine/type/x, value: 1}", "is a scalar, not a map or a list");
}

TEST_CASE("talos: the node identity patch sets hostname, interface and install disk", "[talos][config]") {
  TalosNode node = node_named("cp1");
  node.mac = "bc:24:11:00:20:11";
  node.addresses = {"10.0.20.11/24"};
  node.gateways = {"10.0.20.1"};
  node.install_disk = "/dev/vda";
  ConfigNode patch = talos_node_identity_patch(node);
  CHECK(at(patch, {"machine", "network", "hostname"}).scalar == "cp1");
  const ConfigNode& interfaces = at(patch, {"machine", "network", "interfaces"});
  REQUIRE(interfaces.items.size() == 1);
  CHECK(at(interfaces.items[0], {"deviceSelector", "hardwareAddr"}).scalar == "bc:24:11:00:20:11");
  CHECK(at(interfaces.items[0], {"addresses"}).items[0].scalar == "10.0.20.11/24");
  CHECK(at(interfaces.items[0], {"routes"}).items[0].find("gateway")->scalar == "10.0.20.1");
  CHECK(at(patch, {"machine", "install", "disk"}).scalar == "/dev/vda");

  TalosNode dhcp = node_named("w1");
  ConfigNode plain = talos_node_identity_patch(dhcp);
  CHECK(at(plain, {"machine", "network"}).find("interfaces") == nullptr);
  CHECK(at(plain, {"machine"}).find("install") == nullptr);
}

TEST_CASE("talos: a node's config: profile patches, node patches, then its own fields", "[talos][config]") {
  Diagnostics d;
  TalosMachineConfig base = parse(controlplane_config, d);
  TalosNode node = node_named("cp3");
  node.install_disk = "/dev/nvme0n1";
  node.patches.push_back({TalosPatch::Kind::merge, yaml("machine: {install: {disk: /dev/sdb}, sysctls: {a: '1'}}"), {}});
  node.patches.push_back({TalosPatch::Kind::json6902, yaml("- {op: add, path: /machine/nodeLabels, value: {rack: b}}"), {}});
  auto config = talos_config_for_node(base, node, d);
  INFO(all(d));
  REQUIRE(config);
  const ConfigNode& machine = at(config->documents.front(), {"machine"});
  CHECK(at(machine, {"install", "disk"}).scalar == "/dev/nvme0n1");  // the node's field wins
  CHECK(at(machine, {"install", "image"}).scalar == "ghcr.io/siderolabs/installer:v1.12.0");
  CHECK(at(machine, {"sysctls", "a"}).scalar == "1");
  CHECK(at(machine, {"nodeLabels", "rack"}).scalar == "b");
  // The config has Talos 1.12's HostnameConfig (auto: stable): the hostname goes there, not into
  // machine.network.hostname, which Talos would refuse beside it.
  CHECK(at(machine, {"network"}).find("hostname") == nullptr);
  REQUIRE(config->documents.size() == 2);
  CHECK(at(config->documents[1], {"hostname"}).scalar == "cp3");
  CHECK(at(config->documents[1], {"auto"}).scalar == "off");
  // The base is untouched.
  CHECK(at(base.documents.front(), {"machine", "install", "disk"}).scalar == "/dev/sda");
}

TEST_CASE("talos: node config errors: bad patch, changed type, missing install disk", "[talos][config]") {
  Diagnostics parse_diagnostics;
  TalosMachineConfig base = parse(controlplane_config, parse_diagnostics);
  {
    Diagnostics d;
    TalosNode node = node_named("cp1");
    node.patches.push_back({TalosPatch::Kind::json6902, yaml("- {op: remove, path: /machine/nothere}"), {"p.yaml", 7, 9}});
    CHECK_FALSE(talos_config_for_node(base, node, d));
    INFO(all(d));
    CHECK(all(d).find("node cp1: json6902[0] (remove /machine/nothere): no key 'nothere'") != std::string::npos);
  }
  {
    Diagnostics d;
    TalosNode node = node_named("cp2");
    node.patches.push_back({TalosPatch::Kind::merge, yaml("machine: {type: worker}"), {}});
    CHECK_FALSE(talos_config_for_node(base, node, d));
    CHECK(all(d).find("cp2/machine.type: patches change machine.type from 'controlplane' to 'worker'") != std::string::npos);
  }
  {
    Diagnostics d;
    TalosNode node = node_named("cp4");
    node.patches.push_back({TalosPatch::Kind::merge, yaml("machine: {install: {disk: null}}"), {}});
    CHECK_FALSE(talos_config_for_node(base, node, d));
    INFO(all(d));
    CHECK(all(d).find("cp4/machine.install.disk: no install disk") != std::string::npos);
    CHECK(all(d).find("SECRET") == std::string::npos);
  }
}

TEST_CASE("talos: node addresses are IPv4 or IPv6 CIDR, checked as inet_pton reads them", "[talos][config][ipv6]") {
  CHECK(ip_cidr_family("10.0.20.11/24") == 4);
  CHECK(ip_cidr_family("10.0.20.11/32") == 4);
  CHECK(ip_cidr_family("10.0.20.11/0") == 4);
  CHECK(ip_cidr_family("fd00:55::12/64") == 6);
  CHECK(ip_cidr_family("fd00:55::12/128") == 6);
  CHECK(ip_cidr_family("::/0") == 6);
  CHECK(ip_cidr_family("::ffff:10.0.0.1/96") == 6);
  CHECK(ip_cidr_family("2001:db8:0:0:0:0:0:1/48") == 6);
  for (const char* bad : {"fd00:55::12", "fd00:55::12/129", "10.0.20.11/33", "fd00:55::12/", "fd00:55::12/064",
                          "fd00:55::12/6x", "fd00:55:::12/64", "fd00:55::12%eth0/64", "[fd00:55::12]/64",
                          "fd00:55::g/64", "10.0.20/24", "010.0.20.11/24", "fd00:55::12/+64", "/64", ""}) {
    INFO(bad);
    CHECK(ip_cidr_family(bad) == 0);
  }
  CHECK(ip_address_family("10.0.20.1") == 4);
  CHECK(ip_address_family("fe80::1") == 6);
  CHECK(ip_address_family("fd00:55::1/64") == 0);
  CHECK(ip_address_family("cp1") == 0);
}

TEST_CASE("talos: the node's addresses join the interface a patch configures, keeping its vip and mtu", "[talos][config]") {
  Diagnostics d;
  TalosMachineConfig base = parse(controlplane_config, d);
  TalosNode node = node_named("cp1");
  node.mac = "bc:24:11:00:20:11";
  node.addresses = {"10.0.20.11/24"};
  node.gateways = {"10.0.20.1"};
  node.install_disk = "/dev/sda";
  SECTION("the only interface, whatever its selector") {
    node.patches.push_back({TalosPatch::Kind::merge,
                            yaml("machine: {network: {interfaces: [{deviceSelector: {physical: true}, mtu: 9000, "
                                 "vip: {ip: 10.0.20.10}, routes: [{network: 10.9.0.0/16, gateway: 10.0.20.254}, "
                                 "{network: 0.0.0.0/0, gateway: 10.0.20.99}]}]}}"),
                            {}});
    auto config = talos_config_for_node(base, node, d);
    INFO(all(d));
    REQUIRE(config);
    const ConfigNode& interfaces = at(config->documents.front(), {"machine", "network", "interfaces"});
    REQUIRE(interfaces.items.size() == 1);
    const ConfigNode& nic = interfaces.items[0];
    CHECK(at(nic, {"mtu"}).scalar == "9000");
    CHECK(at(nic, {"vip", "ip"}).scalar == "10.0.20.10");
    CHECK(at(nic, {"addresses"}).items[0].scalar == "10.0.20.11/24");
    CHECK(at(nic, {"dhcp"}).scalar == "false");
    const ConfigNode& routes = at(nic, {"routes"});
    REQUIRE(routes.items.size() == 2);  // the patch's own route kept, its default route replaced by the node's
    CHECK(routes.items[0].find("network")->scalar == "10.9.0.0/16");
    CHECK(routes.items[1].find("gateway")->scalar == "10.0.20.1");
  }
  SECTION("the entry for its MAC among several; the others stay") {
    node.patches.push_back({TalosPatch::Kind::merge,
                            yaml("machine: {network: {interfaces: [{deviceSelector: {hardwareAddr: 'BC:24:11:00:20:99'}, "
                                 "addresses: [10.1.0.5/24]}, {deviceSelector: {hardwareAddr: 'BC:24:11:00:20:11'}, "
                                 "vip: {ip: 10.0.20.10}}]}}"),
                            {}});
    auto config = talos_config_for_node(base, node, d);
    INFO(all(d));
    REQUIRE(config);
    const ConfigNode& interfaces = at(config->documents.front(), {"machine", "network", "interfaces"});
    REQUIRE(interfaces.items.size() == 2);
    CHECK(at(interfaces.items[0], {"addresses"}).items[0].scalar == "10.1.0.5/24");
    CHECK(at(interfaces.items[1], {"vip", "ip"}).scalar == "10.0.20.10");
    CHECK(at(interfaces.items[1], {"addresses"}).items[0].scalar == "10.0.20.11/24");
  }
  SECTION("the only entry selects another card by MAC: it keeps its settings, the node's link is added") {
    // A patch describing a second NIC (storage network, DHCP, jumbo frames) took the node's static
    // address, and the node's own card had no entry at all.
    node.patches.push_back({TalosPatch::Kind::merge,
                            yaml("machine: {network: {interfaces: [{deviceSelector: {hardwareAddr: 'bc:24:11:99:99:99'}, "
                                 "dhcp: true, mtu: 9000}]}}"),
                            {}});
    auto config = talos_config_for_node(base, node, d);
    INFO(all(d));
    REQUIRE(config);
    const ConfigNode& interfaces = at(config->documents.front(), {"machine", "network", "interfaces"});
    REQUIRE(interfaces.items.size() == 2);
    CHECK(at(interfaces.items[0], {"dhcp"}).scalar == "true");
    CHECK(at(interfaces.items[0], {"mtu"}).scalar == "9000");
    CHECK(interfaces.items[0].find("addresses") == nullptr);
    CHECK(at(interfaces.items[1], {"deviceSelector", "hardwareAddr"}).scalar == "bc:24:11:00:20:11");
    CHECK(at(interfaces.items[1], {"addresses"}).items[0].scalar == "10.0.20.11/24");
    CHECK(at(interfaces.items[1], {"dhcp"}).scalar == "false");
  }
  SECTION("no interface yet: the node's is added") {
    auto config = talos_config_for_node(base, node, d);
    REQUIRE(config);
    const ConfigNode& interfaces = at(config->documents.front(), {"machine", "network", "interfaces"});
    REQUIRE(interfaces.items.size() == 1);
    CHECK(at(interfaces.items[0], {"deviceSelector", "hardwareAddr"}).scalar == "bc:24:11:00:20:11");
  }
}

TEST_CASE("talos: an IPv6 or dual-stack node gets its addresses and a default route per family",
          "[talos][config][ipv6]") {
  TalosNode node = node_named("cp1");
  node.mac = "bc:24:11:00:20:11";
  node.addresses = {"10.0.20.11/24", "fd00:55::12/64"};
  node.gateways = {"10.0.20.1", "fd00:55::1"};
  std::string yaml = to_yaml(talos_node_identity_patch(node));
  INFO(yaml);
  CHECK(yaml == R"(machine:
  network:
    hostname: "cp1"
    interfaces:
      - deviceSelector:
          hardwareAddr: "bc:24:11:00:20:11"
        addresses:
          - "10.0.20.11/24"
          - "fd00:55::12/64"
        dhcp: false
        routes:
          - network: "0.0.0.0/0"
            gateway: "10.0.20.1"
          - network: "::/0"
            gateway: "fd00:55::1"
)");
  TalosNode v6 = node_named("w1");
  v6.addresses = {"fd00:55::21/64"};
  v6.gateways = {"fe80::1"};
  ConfigNode patch = talos_node_identity_patch(v6);
  const ConfigNode& route = at(patch, {"machine", "network", "interfaces"}).items[0].find("routes")->items[0];
  CHECK(route.find("network")->scalar == "::/0");
  CHECK(route.find("gateway")->scalar == "fe80::1");
}

TEST_CASE("talos: profiles take IPv6 node addresses and gateways and refuse malformed ones", "[talos][config][ipv6]") {
  test::TempDir dir;
  test::write_file(dir / "cp.yaml", "version: v1alpha1\n");
  test::run("chmod 600 " + (dir / "cp.yaml").string());
  std::string head = "kind: talos-iso\nname: t\ntalos:\n  iso: {path: metal-amd64.iso}\n  config: {file: cp.yaml}\nnodes:\n";
  test::write_file(dir / "good.yaml", head +
                                          "  - name: cp1\n    addresses: [10.0.20.11/24, fd00:55::12/64]\n"
                                          "    gateway: [10.0.20.1, fd00:55::1]\n"
                                          "  - name: w1\n    addresses: [fd00:55::21/64]\n    gateway: fd00:55::1\n");
  Diagnostics good;
  auto profile = load_profile(dir / "good.yaml", good, ProfileCheckOptions{false});
  INFO(all(good));
  REQUIRE(profile);
  CHECK(profile->talos_nodes[0].addresses == std::vector<std::string>{"10.0.20.11/24", "fd00:55::12/64"});
  CHECK(profile->talos_nodes[0].gateways == std::vector<std::string>{"10.0.20.1", "fd00:55::1"});
  CHECK(profile->talos_nodes[1].gateways == std::vector<std::string>{"fd00:55::1"});

  test::write_file(dir / "bad.yaml", head +
                                         "  - name: cp1\n    addresses: [fd00:55::12/129]\n"
                                         "  - name: cp2\n    gateway: [10.0.20.1, 10.0.21.1]\n"
                                         "  - name: cp3\n    gateway: fd00:55::1/64\n");
  Diagnostics bad;
  CHECK_FALSE(load_profile(dir / "bad.yaml", bad, ProfileCheckOptions{false}));
  std::string text = all(bad);
  INFO(text);
  CHECK_THAT(text, Catch::Contains("'nodes[0].addresses' entries must be CIDR addresses like 10.0.0.21/24 or fd00:55::21/64 "
                                   "(prefix 0-32 for IPv4, 0-128 for IPv6), got 'fd00:55::12/129'"));
  CHECK_THAT(text, Catch::Contains("'nodes[1].gateway' has two IPv4 gateways"));
  CHECK_THAT(text, Catch::Contains("'nodes[2].gateway' must be an IPv4 or IPv6 address without prefix"));
}

TEST_CASE("talos: the hostname goes where the config keeps it: HostnameConfig (Talos 1.12) or machine.network.hostname", "[talos][config]") {
  // A 1.11-style config: no HostnameConfig, machine.features.stableHostname set.
  const std::string legacy = std::string(controlplane_config).substr(0, std::string(controlplane_config).find("---\n")) +
                             "";
  Diagnostics d;
  TalosMachineConfig old_style = parse(std::string(legacy).replace(legacy.find("  network: {}"), 13,
                                                                   "  network: {}\n  features: {stableHostname: true}"),
                                       d);
  REQUIRE(old_style.documents.size() == 1);
  auto a = talos_config_for_node(old_style, node_named("cp1"), d);
  INFO(all(d));
  REQUIRE(a);
  CHECK(at(a->documents.front(), {"machine", "network", "hostname"}).scalar == "cp1");
  CHECK(at(a->documents.front(), {"machine", "features", "stableHostname"}).scalar == "true");
  CHECK(a->documents.size() == 1);

  // `talosctl gen config` for 1.12 writes HostnameConfig {auto: stable}; an upgraded config may still
  // carry stableHostname in the v1alpha1 document, which Talos refuses beside the new document.
  TalosMachineConfig upgraded = parse(std::string(controlplane_config).replace(
                                          std::string(controlplane_config).find("  network: {}"), 13,
                                          "  network: {hostname: old}\n  features: {stableHostname: true, rbac: true}"),
                                      d);
  auto b = talos_config_for_node(upgraded, node_named("cp2"), d);
  INFO(all(d));
  REQUIRE(b);
  const ConfigNode& machine = at(b->documents.front(), {"machine"});
  CHECK(at(machine, {"network"}).find("hostname") == nullptr);
  CHECK(at(machine, {"features"}).find("stableHostname") == nullptr);
  CHECK(at(machine, {"features", "rbac"}).scalar == "true");
  CHECK(at(b->documents[1], {"hostname"}).scalar == "cp2");
  CHECK(at(b->documents[1], {"auto"}).scalar == "off");
  std::string text = b->to_yaml();
  CHECK(text.find("kind: HostnameConfig\nauto: \"off\"\nhostname: \"cp2\"\n") != std::string::npos);

  // Checked as Talos checks a node's config: both kept (a node without a hostname of its own) is refused.
  TalosNode nameless = node_named("cp3");
  nameless.hostname.clear();
  Diagnostics refused;
  CHECK_FALSE(talos_config_for_node(upgraded, nameless, refused));
  CHECK_THAT(all(refused), Catch::Contains("a HostnameConfig document and a hostname in the v1alpha1 document") &&
                               Catch::Contains("Talos refuses the config"));
}

TEST_CASE("talos: a hostname a patch sets is kept unless the node sets its own, and a FQDN is one", "[talos][config]") {
  // The node's default hostname (its name) replaced a patch's machine.network.hostname silently.
  Diagnostics d;
  TalosMachineConfig config = parse(controlplane_config, d);  // 1.12: with a HostnameConfig document
  TalosNode cp1 = node_named("cp1");
  cp1.patches.push_back({TalosPatch::Kind::merge, yaml("machine: {network: {hostname: cp1.lab.example}}"), {}});
  auto a = talos_config_for_node(config, cp1, d);
  INFO(all(d));
  REQUIRE(a);
  CHECK(at(a->documents[1], {"hostname"}).scalar == "cp1.lab.example");
  TalosNode cp2 = node_named("cp2");
  cp2.patches.push_back({TalosPatch::Kind::merge,
                         yaml("apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: cp2.lab.example\nauto: 'off'"), {}});
  auto b = talos_config_for_node(config, cp2, d);
  INFO(all(d));
  REQUIRE(b);
  CHECK(at(b->documents[1], {"hostname"}).scalar == "cp2.lab.example");
  // nodes[].hostname given: it wins, as the node's own fields do.
  cp1.hostname = "edge-1";
  cp1.hostname_given = true;
  auto c = talos_config_for_node(config, cp1, d);
  REQUIRE(c);
  CHECK(at(c->documents[1], {"hostname"}).scalar == "edge-1");
}

TEST_CASE("talos: a config whose v1alpha1 document is not the first reads, as Talos reads it", "[talos][config]") {
  // It was refused with "document 2 needs apiVersion and kind": Talos takes the documents in any order.
  Diagnostics d;
  TalosMachineConfig config =
      parse("apiVersion: v1alpha1\nkind: KmsgLogConfig\nname: remote\nurl: udp://10.0.0.1:514/\n---\n" +
                std::string(controlplane_config), d);
  validate_talos_machine_config(config, "", false, d);
  INFO(all(d));
  CHECK_FALSE(d.has_errors());
  CHECK(at(config.documents.front(), {"version"}).scalar == "v1alpha1");
  CHECK(at(config.documents[1], {"kind"}).scalar == "KmsgLogConfig");  // the typed ones keep their order
}

TEST_CASE("talos: DNS servers go into a ResolverConfig document when the config has one", "[talos][config]") {
  // A site network's dns reaches a Talos node as machine.network.nameservers; a 1.12 config keeping
  // its resolvers in a ResolverConfig document gets them there instead, not in both places.
  Diagnostics d;
  TalosNode node = node_named("cp1");
  node.patches.push_back({TalosPatch::Kind::merge, yaml("machine: {network: {nameservers: [10.0.20.53, 'fd00:20::53']}}"), {}});
  auto plain = talos_config_for_node(parse(controlplane_config, d), node, d);
  INFO(all(d));
  REQUIRE(plain);
  CHECK(at(plain->documents.front(), {"machine", "network", "nameservers"}).items.size() == 2);
  auto with_resolver = talos_config_for_node(
      parse(std::string(controlplane_config) + "---\napiVersion: v1alpha1\nkind: ResolverConfig\nnameservers: [{address: 1.1.1.1}]\n", d),
      node, d);
  INFO(all(d));
  REQUIRE(with_resolver);
  CHECK(at(with_resolver->documents.front(), {"machine", "network"}).find("nameservers") == nullptr);
  const ConfigNode& resolver = with_resolver->documents.back();
  REQUIRE(resolver.find("nameservers") != nullptr);
  REQUIRE(resolver.find("nameservers")->items.size() == 2);
  CHECK(at(resolver.find("nameservers")->items[0], {"address"}).scalar == "10.0.20.53");
  CHECK(at(resolver.find("nameservers")->items[1], {"address"}).scalar == "fd00:20::53");
}

TEST_CASE("talos: a config holding one kind and name twice is refused, as Talos refuses it", "[talos][config]") {
  const std::string link = "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nmtu: 1500\n";
  const std::string hostname = "---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n";
  Diagnostics fine;
  TalosMachineConfig two_links = parse(std::string(controlplane_config) + link + "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth1\n", fine);
  validate_talos_machine_config(two_links, "", false, fine);
  CHECK_FALSE(fine.has_errors());
  for (const auto& [extra, id] : {std::pair{link + link, std::string("LinkConfig/eth0")}, std::pair{hostname + hostname, std::string("HostnameConfig")}}) {
    Diagnostics d;
    auto config = parse_talos_machine_config(std::string(controlplane_config) + extra, "cp.yaml", d);
    if (config) validate_talos_machine_config(*config, "", false, d);
    INFO(all(d));
    CHECK(d.has_errors());
    CHECK_THAT(all(d), Catch::Contains(" is a second " + id + " (document ") &&
                           Catch::Contains("duplicate document: " + id));
  }
}

TEST_CASE("talos: typed document patches merge into the config's document of that kind and name, or are added", "[talos][patch]") {
  const std::string config_text = std::string(controlplane_config) +
                                  "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\nmtu: 1500\nup: true\n"
                                  "---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth1\nmtu: 1500\n";
  Diagnostics d;
  TalosMachineConfig base = parse(config_text, d);
  REQUIRE(base.documents.size() == 4);
  TalosNode node = node_named("cp1");
  node.patches.push_back({TalosPatch::Kind::merge, yaml("apiVersion: v1alpha1\nkind: LinkConfig\nname: eth1\nmtu: 9000\n"), {}});
  node.patches.push_back({TalosPatch::Kind::merge, yaml("apiVersion: v1alpha1\nkind: ResolverConfig\nnameservers: [{address: 10.0.0.53}]\n"), {}});
  node.patches.push_back({TalosPatch::Kind::merge, yaml("apiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\n$patch: delete\n"), {}});
  node.patches.push_back({TalosPatch::Kind::merge, yaml("machine: {sysctls: {a: '1'}}"), {}});
  auto config = talos_config_for_node(base, node, d);
  INFO(all(d));
  REQUIRE(config);
  REQUIRE(config->documents.size() == 4);  // eth0's removed, ResolverConfig added
  CHECK(at(config->documents[1], {"kind"}).scalar == "HostnameConfig");
  CHECK(at(config->documents[2], {"name"}).scalar == "eth1");
  CHECK(at(config->documents[2], {"mtu"}).scalar == "9000");  // merged into the eth1 document only
  CHECK(at(config->documents[3], {"kind"}).scalar == "ResolverConfig");
  CHECK(at(config->documents.front(), {"machine", "sysctls", "a"}).scalar == "1");
  CHECK(config->documents.front().find("kind") == nullptr);  // no typed keys leaked into v1alpha1

  TalosNode missing = node_named("cp2");
  missing.patches.push_back(
      {TalosPatch::Kind::merge, yaml("apiVersion: v1alpha1\nkind: LinkConfig\nname: eth9\n$patch: delete\n"), {"p.yaml", 3, 1}});
  Diagnostics refused;
  CHECK_FALSE(talos_config_for_node(base, missing, refused));
  CHECK_THAT(all(refused), Catch::Contains("p.yaml:3:1") &&
                               Catch::Contains("'$patch: delete' for v1alpha1/LinkConfig/eth9: the config has no such document"));
}
