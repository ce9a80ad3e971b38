#include "builder/profile.hpp"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::builder;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> errors_of(const Diagnostics& d) {
  std::vector<std::string> out;
  for (const auto& x : d.all()) {
    if (x.severity == Diagnostic::Severity::error) out.push_back(x.str());
  }
  return out;
}

bool has_error(const Diagnostics& d, const std::string& located_prefix, const std::string& text) {
  for (const auto& e : errors_of(d)) {
    if (e.starts_with(located_prefix) && e.find(text) != std::string::npos) return true;
  }
  return false;
}

std::string dump(const Diagnostics& d) {
  std::string out;
  for (const auto& x : d.all()) out += x.str() + "\n";
  return out;
}

const char* minimal_rpi = R"(kind: rpi5-rke2
name: edge
base:
  url: https://example.invalid/raspios.img.xz
  sha256: 62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45
rke2:
  version: v1.33.1+rke2r1
  role: server
)";

}  // namespace

TEST_CASE("a minimal Raspberry Pi profile reads with defaults", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "p.yaml", minimal_rpi);
  Diagnostics d;
  auto profile = load_profile(dir / "p.yaml", d);
  INFO(dump(d));
  REQUIRE(profile);
  CHECK(profile->kind == ProfileKind::rpi5_rke2);
  REQUIRE(profile->rpi_nodes.size() == 1);
  const Rpi5Node& node = profile->rpi_nodes.front();
  CHECK(node.name == "edge");
  CHECK(node.system.hostname == "edge");
  CHECK(node.rke2.release == "https://github.com/rancher/rke2/releases/download/v1.33.1%2Brke2r1");
  CHECK(node.rke2.images == std::vector<std::string>{"rke2-images"});
  CHECK(node.boot.kernel_page_size_kib == 16);
  CHECK(profile->output.bmap);
  REQUIRE(profile->inputs().size() == 1);
  CHECK(profile->inputs()[0].sha256->hex() == "62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45");
}

TEST_CASE("every error in a profile is reported with file:line:col, in one run", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "token", "secret\n");
  test::write_file(dir / "bad.yaml", R"(kind: rpi5-rke2
base:
  url: https://example.invalid/raspios.img.xz
  sha256: not-a-checksum
rke2:
  version: v1.33.1+rke2r1
  role: controller
  token: K10inline
  config:
    token: abc
  imagez: [x]
system:
  users:
    - name: ops
      ssh_authorized_keys: "ssh-ed25519 AAAA"
network:
  mode: static
  address: 10.0.0.300/24
boot:
  pcie_gen: 7
  kernel_page_size_kib: 8
output:
  image_size: lots
colour: blue
)");
  Diagnostics d;
  auto profile = load_profile(dir / "bad.yaml", d);
  CHECK_FALSE(profile);
  std::string f = (dir / "bad.yaml").string();
  INFO(dump(d));
  CHECK(has_error(d, f + ":4:11:", "'base.sha256' must be 64 hexadecimal characters"));
  CHECK(has_error(d, f + ":7:9:", "'rke2.role' must be one of: server, agent, got 'controller'"));
  CHECK(has_error(d, f + ":8:10:", "is a secret and must not be written inline"));
  CHECK(has_error(d, f + ":10:5:", "'rke2.config.token' is a secret"));
  CHECK(has_error(d, f + ":11:3:", "unknown key 'rke2.imagez' (did you mean 'images'?)"));
  CHECK(has_error(d, f + ":15:28:", "must be a list of strings"));
  CHECK(has_error(d, f + ":18:12:", "must be a CIDR address like 10.0.0.11/24 or fd00:10::11/64"));
  CHECK(has_error(d, f + ":17:3:", "a static network needs 'address' and 'gateway'"));
  CHECK(has_error(d, f + ":20:13:", "'boot.pcie_gen' is 7, must be between 1 and 3"));
  CHECK(has_error(d, f + ":21:25:", "must be 4 or 16"));
  CHECK(has_error(d, f + ":23:15:", "'output.image_size' must be a size"));
  CHECK(has_error(d, f + ":24:1:", "unknown key 'colour'"));
}

TEST_CASE("a static Pi network: IPv4, IPv6 or both, one gateway per family", "[profile]") {
  test::TempDir dir;
  auto load = [&](const std::string& network, Diagnostics& d) {
    test::write_file(dir / "p.yaml", std::string(minimal_rpi) + "network:\n  mode: static\n" + network);
    return load_profile(dir / "p.yaml", d);
  };
  std::string f = (dir / "p.yaml").string();
  SECTION("IPv6 only") {
    Diagnostics d;
    auto profile = load("  address: fd00:10::11/64\n  gateway: fd00:10::1\n  dns: [\"fd00:10::53\"]\n", d);
    INFO(dump(d));
    REQUIRE(profile);
    const NetworkSettings& n = profile->rpi_nodes.front().network;
    CHECK(n.addresses == std::vector<std::string>{"fd00:10::11/64"});
    CHECK(n.gateways == std::vector<std::string>{"fd00:10::1"});
    CHECK(n.dns == std::vector<std::string>{"fd00:10::53"});
  }
  SECTION("dual stack, as lists") {
    Diagnostics d;
    auto profile = load("  address: [10.0.10.11/24, \"fd00:10::11/64\"]\n  gateway: [10.0.10.1, \"fd00:10::1\"]\n"
                        "  dns: [10.0.10.53, \"fd00:10::53\"]\n", d);
    INFO(dump(d));
    REQUIRE(profile);
    const NetworkSettings& n = profile->rpi_nodes.front().network;
    CHECK(n.addresses == std::vector<std::string>{"10.0.10.11/24", "fd00:10::11/64"});
    CHECK(n.gateways == std::vector<std::string>{"10.0.10.1", "fd00:10::1"});
  }
  SECTION("two gateways of one family, a gateway no address reaches, a prefix on a gateway, bad DNS") {
    Diagnostics d;
    // Line 9 is "network:"; the keys below start on line 11.
    CHECK_FALSE(load("  address: 10.0.10.11/24\n  gateway: [10.0.10.1, 10.0.10.2, \"fd00:10::1\", 10.0.10.3/24]\n"
                     "  dns: [dns.example]\n", d));
    INFO(dump(d));
    CHECK(has_error(d, f + ":12:12:", "'network.gateway' has two IPv4 gateways; a node has one default route per address family"));
    CHECK(has_error(d, f + ":12:12:", "'network.gateway' has an IPv6 gateway but 'address' has no IPv6 address to reach it from"));
    CHECK(has_error(d, f + ":12:12:", "'network.gateway' must be an IPv4 or IPv6 address without prefix, e.g. 10.0.20.1 or "
                                      "fd00:55::1, got '10.0.10.3/24'"));
    CHECK(has_error(d, f + ":13:8:", "'network.dns' entries must be IPv4 or IPv6 addresses, got 'dns.example'"));
  }
  SECTION("an address that is not CIDR, and a map where an address belongs") {
    Diagnostics d;
    CHECK_FALSE(load("  address: [\"fd00:10::11\", {a: b}]\n  gateway: {via: 10.0.10.1}\n", d));
    INFO(dump(d));
    CHECK(has_error(d, f + ":11:12:", "'network.address' must be a CIDR address like 10.0.0.11/24 or fd00:10::11/64 "
                                      "(prefix 0-32 for IPv4, 0-128 for IPv6), got 'fd00:10::11'"));
    CHECK(has_error(d, f + ":11:28:", "'network.address' entries must each be a CIDR address"));
    CHECK(has_error(d, f + ":12:12:", "'network.gateway' must be an address or a list of them"));
  }
}

TEST_CASE("an SSH key entry must be one key line: a newline could end firstrun.sh's here-document", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "p.yaml", std::string(minimal_rpi) +
                                       "system:\n  users:\n    - name: ops\n      ssh_authorized_keys:\n"
                                       "        - \"ssh-ed25519 AAAAC3Nz c\\nAGGRIK8S_KEYS\\ntouch /root/pwned\\n\"\n"
                                       "        - \"not a key\"\n");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "p.yaml", d));
  INFO(dump(d));
  std::string f = (dir / "p.yaml").string();
  CHECK(has_error(d, f + ":13:9:", "'system.users[0].ssh_authorized_keys' entries must be public keys on one line"));
}

TEST_CASE("a config.txt entry is one line: a line break would open a section of its own", "[profile]") {
  // "dtparam=audio=off\n[pi4]" put every later entry into a [pi4] section a Pi 5 ignores.
  test::TempDir dir;
  test::write_file(dir / "p.yaml", std::string(minimal_rpi) +
                                       "boot:\n  config_txt: [\"dtparam=audio=off\\n[pi4]\", dtoverlay=disable-bt]\n"
                                       "  cmdline: [\"quiet\\nsplash\"]\n");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "p.yaml", d));
  INFO(dump(d));
  std::string f = (dir / "p.yaml").string();
  CHECK(has_error(d, f + ":10:", "'boot.config_txt' entries are single config.txt lines, got 'dtparam=audio=off\\n[pi4]'"));
  CHECK(has_error(d, f + ":11:", "'boot.cmdline' entries are single kernel arguments without spaces, got 'quiet\\nsplash'"));
}

TEST_CASE("YAML syntax errors and duplicate keys point at the line", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "syntax.yaml", "kind: rpi5-rke2\nbase: {url: x\nrke2: [\n");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "syntax.yaml", d));
  REQUIRE(d.error_count() == 1);
  CHECK(d.all()[0].message.starts_with("YAML syntax error"));
  CHECK(d.all()[0].where.line >= 2);

  test::write_file(dir / "dup.yaml", std::string(minimal_rpi) + "name: again\n");
  Diagnostics d2;
  CHECK_FALSE(load_profile(dir / "dup.yaml", d2));
  CHECK(has_error(d2, (dir / "dup.yaml").string() + ":9:1:", "duplicate key 'name'"));

  Diagnostics d3;
  CHECK_FALSE(load_profile(dir / "absent.yaml", d3));
  CHECK(has_error(d3, (dir / "absent.yaml").string(), "cannot read file: No such file or directory"));

  // A missing base is reported at the extends: entry that names it.
  test::write_file(dir / "child.yaml", "extends: nothere.yaml\n");
  Diagnostics d4;
  CHECK_FALSE(load_profile(dir / "child.yaml", d4));
  INFO(dump(d4));
  CHECK(has_error(d4, (dir / "child.yaml").string() + ":1:10:", "'extends': "));
  CHECK(has_error(d4, (dir / "child.yaml").string() + ":1:10:", "nothere.yaml does not exist"));
}

TEST_CASE("extends merges maps, and errors point into the file that holds the value", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "common" / "base.yaml", R"(kind: rpi5-rke2
base:
  url: https://example.invalid/raspios.img.xz
  sha256: 62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45
rke2:
  version: v1.33.1+rke2r1
  role: server
  config:
    cni: canal
    write-kubeconfig-mode: "0600"
boot:
  pcie_gen: 9
)");
  test::write_file(dir / "site.yaml", R"(extends: common/base.yaml
name: site
rke2:
  config:
    cni: cilium
nodes:
  - name: a
  - name: b
    rke2: {role: agent, server: "https://10.0.0.1:9345", token: {file: missing-token}}
)");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "site.yaml", d));
  INFO(dump(d));
  // pcie_gen is wrong in the base file: reported there, once, though two nodes inherit it.
  std::size_t pcie_errors = 0;
  for (const auto& e : errors_of(d)) pcie_errors += e.find("pcie_gen") != std::string::npos;
  CHECK(pcie_errors == 1);
  CHECK(has_error(d, (dir / "common" / "base.yaml").string() + ":12:13:", "'boot.pcie_gen' is 9"));
  CHECK(has_error(d, (dir / "site.yaml").string() + ":9:65:", "cannot be read"));

  // Fixed, the merge result is visible per node.
  test::write_file(dir / "missing-token", "t0ken\n");
  std::string base = test::read_file(dir / "common" / "base.yaml");
  test::write_file(dir / "common" / "base.yaml", base.substr(0, base.find("boot:")));
  Diagnostics d2;
  auto profile = load_profile(dir / "site.yaml", d2);
  INFO(dump(d2));
  REQUIRE(profile);
  REQUIRE(profile->rpi_nodes.size() == 2);
  const auto& a = profile->rpi_nodes[0];
  const auto& b = profile->rpi_nodes[1];
  CHECK(a.rke2.role == "server");
  CHECK(b.rke2.role == "agent");
  CHECK(a.rke2.config.find("cni")->scalar == "cilium");
  CHECK(a.rke2.config.find("write-kubeconfig-mode")->scalar == "0600");
  CHECK(b.rke2.token->name == (dir / "missing-token").string());
  CHECK(profile->extends == std::vector<fs::path>{dir / "common/base.yaml"});
}

TEST_CASE("extends cycles are reported", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "a.yaml", "extends: b.yaml\nkind: rpi5-rke2\n");
  test::write_file(dir / "b.yaml", "extends: a.yaml\n");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "a.yaml", d));
  // At b.yaml's `extends: a.yaml`, the entry that closes it, with its line and column.
  CHECK(has_error(d, (dir / "b.yaml").string() + ":1:10:", "'extends' forms a cycle"));
}

TEST_CASE("a path the filesystem cannot check is a diagnostic at its key, not an exception", "[profile]") {
  // A name component over NAME_MAX (255 bytes): std::filesystem's throwing calls escaped the reader
  // (found by the profile_yaml fuzz target, regressions/profile_yaml/extends-name-too-long.yaml).
  test::TempDir dir;
  const std::string long_name(300, 'a');
  test::write_file(dir / "p.yaml", "kind: rpi5-rke2\nextends: " + long_name + ".yaml\n");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "p.yaml", d));
  INFO(dump(d));
  CHECK(has_error(d, (dir / "p.yaml").string() + ":2:10:", "'extends': "));
  CHECK(has_error(d, (dir / "p.yaml").string() + ":2:10:", "cannot be checked: File name too long"));

  test::write_file(dir / "o.yaml", std::string(minimal_rpi) + "nodes:\n  - name: n1\n    overlays: [" + long_name + "]\n");
  Diagnostics d2;
  ProfileCheckOptions options;
  options.check_secrets = false;
  CHECK_FALSE(load_profile(dir / "o.yaml", d2, options));
  INFO(dump(d2));
  CHECK(has_error(d2, (dir / "o.yaml").string(), "cannot be checked: File name too long"));
}

TEST_CASE("per-node settings are checked: names, unknown keys, shared inputs", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "p.yaml", std::string(minimal_rpi) + R"(nodes:
  - name: Node_1
  - name: ok
    colour: red
  - name: ok2
    rke2: {version: v1.30.0+rke2r1}
  - name: ok
)");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "p.yaml", d));
  std::string f = (dir / "p.yaml").string();
  INFO(dump(d));
  CHECK(has_error(d, f + ":10:11:", "'nodes[0].name' must be a lowercase DNS label"));
  CHECK(has_error(d, f + ":12:5:", "unknown key 'nodes[1].colour'"));
  CHECK(has_error(d, f + ":14:12:", "'nodes[2].rke2.version' cannot differ per node"));
  CHECK(has_error(d, f + ":15:11:", "node 'ok' is listed twice"));
}

TEST_CASE("a node repeating the profile's rke2 values through a merge key differs in nothing", "[profile]") {
  // `rke2: {<<: *rke2, role: agent}` was refused ("cannot differ per node"), and that refusal hid the
  // profile's other errors.
  test::TempDir dir;
  const std::string profile = R"(kind: rpi5-rke2
name: edge
base:
  url: https://example.invalid/raspios.img.xz
  sha256: 62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45
rke2: &r {version: v1.33.1+rke2r1, role: server}
system: {ssh: SSH}
nodes:
  - {name: a, rke2: {<<: *r, role: agent, server: "https://s:9345"}}
)";
  test::write_file(dir / "p.yaml", profile);
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "p.yaml", d));
  INFO(dump(d));
  CHECK_FALSE(has_error(d, "", "cannot differ per node"));
  CHECK(has_error(d, "", "'system.ssh' must be true or false"));
  std::string changed = profile;
  changed.replace(changed.find("<<: *r,"), 7, "version: v1.30.0+rke2r1,");
  test::write_file(dir / "q.yaml", changed);
  Diagnostics e;
  CHECK_FALSE(load_profile(dir / "q.yaml", e));
  INFO(dump(e));
  CHECK(has_error(e, "", "'nodes[0].rke2.version' cannot differ per node"));
  CHECK(has_error(e, "", "'system.ssh' must be true or false"));  // reported in the same run
}

TEST_CASE("secrets: environment variables, files, and permissions", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "token", "t0ken\n");
  fs::permissions(dir / "token", fs::perms::owner_read | fs::perms::owner_write);
  test::write_file(dir / "p.yaml", std::string(minimal_rpi) + "  token: {env: AGGRIK8S_TEST_UNSET_TOKEN}\n");
  ::unsetenv("AGGRIK8S_TEST_UNSET_TOKEN");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "p.yaml", d));
  CHECK(has_error(d, "", "secret environment variable AGGRIK8S_TEST_UNSET_TOKEN is not set"));
  ::setenv("AGGRIK8S_TEST_UNSET_TOKEN", "t0ken", 1);
  Diagnostics d2;
  CHECK(load_profile(dir / "p.yaml", d2));
  ::unsetenv("AGGRIK8S_TEST_UNSET_TOKEN");

  test::write_file(dir / "p2.yaml", std::string(minimal_rpi) + "  token: {file: token}\n");
  Diagnostics d3;
  auto profile = load_profile(dir / "p2.yaml", d3);
  REQUIRE(profile);
  CHECK(d3.all().empty());  // 0600: no warning
  CHECK(load_secret(*profile->rpi_nodes[0].rke2.token).reveal() == "t0ken\n");
  fs::permissions(dir / "token", fs::perms::group_read, fs::perm_options::add);
  Diagnostics d4;
  CHECK(load_profile(dir / "p2.yaml", d4));
  REQUIRE(d4.all().size() == 1);
  CHECK(d4.all()[0].severity == Diagnostic::Severity::warning);
  CHECK(d4.all()[0].message.find("t0ken") == std::string::npos);
}

TEST_CASE("Talos profiles: nodes, patches, outputs", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "cp.yaml", "version: v1alpha1\nmachine: {type: controlplane}\n");
  test::write_file(dir / "patch.yaml", "- op: add\n  path: /machine/nodeLabels\n  value: {a: b}\n");
  test::write_file(dir / "t.yaml", R"(kind: talos-iso
talos:
  iso: {path: metal-amd64.iso}
  config: {file: cp.yaml}
  outputs: [config-iso, netboot, usb]
  patches:
    - file: patch.yaml
    - merge: {machine: {install: {disk: /dev/vda}}}
    - json6902: [{op: add, path: machine}]
nodes:
  - name: cp1
    mac: 52-54-00-AA-BB-01
    uuid: 7C1E2F0A-3B4D-4E5F-8A9B-0C1D2E3F4A51
    install_disk: sda
  - name: cp2
    mac: 52:54:00:aa:bb:01
)");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "t.yaml", d));
  std::string f = (dir / "t.yaml").string();
  INFO(dump(d));
  CHECK(has_error(d, f + ":5:12:", "entries must be config-iso, iso or netboot, got 'usb'"));
  CHECK(has_error(d, f, "the netboot output needs 'talos.netboot_url'"));
  CHECK(has_error(d, f + ":9:", "a JSON patch path must start with '/'"));
  CHECK(has_error(d, f + ":14:19:", "must be a device path"));
  CHECK(has_error(d, f + ":16:10:", "MAC 52:54:00:aa:bb:01 is used by two nodes"));

  test::write_file(dir / "t2.yaml", R"(kind: talos-iso
talos:
  iso: {path: metal-amd64.iso}
  config: {file: cp.yaml}
  kernel_args: [console=ttyS0]
  patches: [{file: patch.yaml}]
nodes:
  - name: cp1
    mac: 52-54-00-AA-BB-01
    uuid: 7C1E2F0A-3B4D-4E5F-8A9B-0C1D2E3F4A51
    kernel_args: [net.ifnames=0]
    patches: [{merge: {machine: {install: {disk: /dev/vda}}}}]
)");
  Diagnostics d2;
  auto profile = load_profile(dir / "t2.yaml", d2);
  INFO(dump(d2));
  REQUIRE(profile);
  REQUIRE(profile->talos_nodes.size() == 1);
  const TalosNode& n = profile->talos_nodes[0];
  CHECK(n.mac == "52:54:00:aa:bb:01");
  CHECK(n.uuid == "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51");
  CHECK(n.hostname == "cp1");
  CHECK(n.kernel_args == std::vector<std::string>{"console=ttyS0", "net.ifnames=0"});
  REQUIRE(n.patches.size() == 2);
  CHECK(n.patches[0].kind == TalosPatch::Kind::json6902);
  CHECK(n.patches[1].kind == TalosPatch::Kind::merge);
  CHECK(profile->talos.outputs == std::vector<std::string>{"config-iso"});

  // A patch file of several documents, as talosctl --config-patch takes it (Talos 1.12's typed
  // documents beside v1alpha1 keys): one merge patch per document, each located in the file.
  test::write_file(dir / "multi.yaml", "machine: {sysctls: {a: '1'}}\n---\n# the link\napiVersion: v1alpha1\n"
                                       "kind: LinkConfig\nname: eth0\nmtu: 9000\n");
  test::write_file(dir / "t4.yaml", "kind: talos-iso\ntalos:\n  iso: {path: metal-amd64.iso}\n  config: {file: cp.yaml}\n"
                                    "  patches: [{file: multi.yaml}]\nnodes: [{name: cp1, install_disk: /dev/sda}]\n");
  Diagnostics d4;
  auto multi = load_profile(dir / "t4.yaml", d4);
  INFO(dump(d4));
  REQUIRE(multi);
  const auto& patches = multi->talos_nodes.at(0).patches;
  REQUIRE(patches.size() == 2);
  CHECK(patches[0].kind == TalosPatch::Kind::merge);
  CHECK(patches[1].kind == TalosPatch::Kind::merge);
  CHECK(patches[1].content.find("kind")->scalar == "LinkConfig");
  CHECK(patches[1].where.line == 4);
  // A JSON patch is a file of its own.
  test::write_file(dir / "mixed.yaml", "machine: {sysctls: {a: '1'}}\n---\n- {op: remove, path: /machine/sysctls}\n");
  test::write_file(dir / "t5.yaml", "kind: talos-iso\ntalos:\n  iso: {path: metal-amd64.iso}\n  config: {file: cp.yaml}\n"
                                    "  patches: [{file: mixed.yaml}]\nnodes: [{name: cp1, install_disk: /dev/sda}]\n");
  Diagnostics d5;
  CHECK_FALSE(load_profile(dir / "t5.yaml", d5));
  CHECK(has_error(d5, (dir / "mixed.yaml").string() + ":3:", "a JSON patch (a list) must be the only document of its patch file"));

  // `outputs: []` once crashed the reader (front() of an empty list; found by the profile_yaml fuzz
  // target): it is an error at the key.
  test::write_file(dir / "t3.yaml", R"(kind: talos-iso
talos:
  config: {file: cp.yaml}
  outputs: []
nodes:
  - name: cp1
    mac: 52-54-00-AA-BB-01
)");
  Diagnostics d3;
  CHECK_FALSE(load_profile(dir / "t3.yaml", d3));
  INFO(dump(d3));
  CHECK(has_error(d3, (dir / "t3.yaml").string() + ":4:12:", "'talos.outputs' is empty"));
}

TEST_CASE("output.ephemeral: true takes the defaults, a map sets them, bad values point at the line", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "on.yaml", std::string(minimal_rpi) + "output: {ephemeral: true, disk_images: false}\n");
  Diagnostics d;
  auto on = load_profile(dir / "on.yaml", d);
  INFO(dump(d));
  REQUIRE(on);
  REQUIRE(on->output.ephemeral);
  CHECK_FALSE(on->output.disk_images);
  CHECK(on->output.ephemeral->compression == "zstd");
  CHECK(on->output.ephemeral->memory == (4ull << 30));
  CHECK(on->output.ephemeral->image_archives == EphemeralSettings::ImageArchives::root);

  test::write_file(dir / "map.yaml", std::string(minimal_rpi) +
                                         "output:\n  ephemeral:\n    compression: xz\n    image_archives: omit\n"
                                         "    memory: 8GiB\n    modules: [e1000e]\n");
  Diagnostics d2;
  auto map = load_profile(dir / "map.yaml", d2);
  INFO(dump(d2));
  REQUIRE(map);
  CHECK(map->output.disk_images);
  CHECK(map->output.ephemeral->compression == "xz");
  CHECK(map->output.ephemeral->image_archives == EphemeralSettings::ImageArchives::omit);
  CHECK(map->output.ephemeral->memory == (8ull << 30));
  CHECK(map->output.ephemeral->modules == std::vector<std::string>{"e1000e"});

  test::write_file(dir / "bad.yaml", std::string(minimal_rpi) +
                                         "output:\n  disk_images: false\n  ephemeral:\n    compression: lzo\n    memory: 100MiB\n");
  Diagnostics d3;
  CHECK_FALSE(load_profile(dir / "bad.yaml", d3));
  INFO(dump(d3));
  CHECK(has_error(d3, (dir / "bad.yaml").string() + ":12:", "compression"));
  CHECK(has_error(d3, (dir / "bad.yaml").string() + ":13:", "at least 512MiB"));

  test::write_file(dir / "none.yaml", std::string(minimal_rpi) + "output: {disk_images: false}\n");
  Diagnostics d4;
  CHECK_FALSE(load_profile(dir / "none.yaml", d4));
  CHECK(has_error(d4, (dir / "none.yaml").string() + ":", "leaves nothing to build"));
}

TEST_CASE("output.http_boot: a key reference and an optional image size, for rpi5-rke2 only", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "boot.pem", "not read by the profile check beyond being present\n");
  ::chmod((dir / "boot.pem").c_str(), 0600);
  test::write_file(dir / "on.yaml", std::string(minimal_rpi) + "output:\n  http_boot: {key: {file: boot.pem}, image_size: 256MiB}\n");
  Diagnostics d;
  auto on = load_profile(dir / "on.yaml", d);
  INFO(dump(d));
  REQUIRE(on);
  REQUIRE(on->output.http_boot);
  CHECK(on->output.http_boot->key.name == (dir / "boot.pem").string());
  CHECK(on->output.http_boot->image_size == (256ull << 20));

  test::write_file(dir / "bad.yaml", std::string(minimal_rpi) + "output:\n  http_boot: {key: inline-pem, image_size: 1MiB}\n");
  Diagnostics d2;
  CHECK_FALSE(load_profile(dir / "bad.yaml", d2));
  INFO(dump(d2));
  CHECK(has_error(d2, (dir / "bad.yaml").string() + ":", "key"));
  CHECK(has_error(d2, (dir / "bad.yaml").string() + ":", "at least 4MiB"));

  test::write_file(dir / "nokey.yaml", std::string(minimal_rpi) + "output:\n  http_boot: {image_size: 64MiB}\n");
  Diagnostics d3;
  CHECK_FALSE(load_profile(dir / "nokey.yaml", d3));
  CHECK(has_error(d3, (dir / "nokey.yaml").string() + ":", "key"));
}

TEST_CASE("output.ephemeral.serve_url and serve_profile: where boot.img's URLs point", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "boot.pem", "present\n");
  ::chmod((dir / "boot.pem").c_str(), 0600);
  test::write_file(dir / "ok.yaml", std::string(minimal_rpi) +
                                        "output:\n  http_boot: {key: {file: boot.pem}}\n"
                                        "  ephemeral: {serve_url: \"http://10.0.0.2:8080/\", serve_profile: pi-workers}\n");
  Diagnostics d;
  auto ok = load_profile(dir / "ok.yaml", d);
  INFO(dump(d));
  REQUIRE(ok);
  CHECK(ok->output.ephemeral->serve_url == "http://10.0.0.2:8080");
  CHECK(ok->output.ephemeral->serve_profile == "pi-workers");

  test::write_file(dir / "nourl.yaml", std::string(minimal_rpi) + "output:\n  http_boot: {key: {file: boot.pem}}\n  ephemeral: true\n");
  Diagnostics d2;
  CHECK_FALSE(load_profile(dir / "nourl.yaml", d2));
  CHECK(has_error(d2, (dir / "nourl.yaml").string() + ":", "needs 'output.ephemeral.serve_url'"));

  test::write_file(dir / "bad.yaml", std::string(minimal_rpi) +
                                         "output:\n  ephemeral: {serve_url: \"10.0.0.2:8080\", serve_profile: \"a/b\"}\n");
  Diagnostics d3;
  CHECK_FALSE(load_profile(dir / "bad.yaml", d3));
  INFO(dump(d3));
  CHECK(has_error(d3, (dir / "bad.yaml").string() + ":", "got '10.0.0.2:8080'"));
  CHECK(has_error(d3, (dir / "bad.yaml").string() + ":", "got 'a/b'"));

  // https://: the node's initramfs (busybox wget, no TLS) refused it at every boot.
  test::write_file(dir / "tls.yaml", std::string(minimal_rpi) + "output:\n  ephemeral: {serve_url: \"https://10.0.0.2:8443\"}\n");
  Diagnostics d4;
  CHECK_FALSE(load_profile(dir / "tls.yaml", d4));
  CHECK(has_error(d4, (dir / "tls.yaml").string() + ":", "not https://: the initramfs's busybox wget has no TLS"));
}

TEST_CASE("an overlay entry naming a file is 'not a directory', a missing one 'does not exist'", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "afile", "x\n");
  test::write_file(dir / "p.yaml", std::string(minimal_rpi) + "overlays: [afile, missing]\n");
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "p.yaml", d));
  INFO(dump(d));
  const std::string f = (dir / "p.yaml").string();
  CHECK(has_error(d, f + ":9:12:", "overlay directory " + (dir / "afile").string() + " is not a directory"));
  CHECK(has_error(d, f + ":9:19:", "overlay directory " + (dir / "missing").string() + " does not exist"));
}

TEST_CASE("Talos kernel_args: control bytes, imager removals, talos.config/platform, a node's own with config-iso only", "[profile]") {
  test::TempDir dir;
  test::write_file(dir / "cp.yaml", "version: v1alpha1\nmachine: {type: controlplane}\n");
  auto profile = [&](const std::string& talos_extra, const std::string& nodes) {
    test::write_file(dir / "t.yaml", "kind: talos-iso\ntalos:\n  iso: {path: metal-amd64.iso}\n  config: {file: cp.yaml}\n" +
                                         talos_extra + "nodes:\n" + nodes);
    return (dir / "t.yaml").string();
  };
  // A NUL (a YAML escape) cut the command line before talos.config= in grub.cfg, the UKI and boot.ipxe.
  std::string f = profile("  outputs: [iso]\n  kernel_args: [\"x=a\\0b\", \"y=\\x07\", -console=tty0, talos.config=http://x/c.yaml, "
                          "talos.platform=metal]\n",
                          "  - name: cp1\n");
  Diagnostics d;
  CHECK_FALSE(load_profile(f, d));
  INFO(dump(d));
  CHECK(has_error(d, f + ":6:", "entries are single arguments of printable characters without spaces, got 'x=a\\x00b'"));
  CHECK(has_error(d, f + ":6:", "got 'y=\\x07'"));
  CHECK(has_error(d, f + ":6:", "'-console=tty0' removes a default argument in Talos' imager"));
  CHECK(has_error(d, f + ":6:", "talos.config= is written by the build"));
  CHECK(has_error(d, f + ":6:", "talos.platform= is written by the build"));

  // netboot_url: the build appends /<node>/config.yaml to it.
  for (const char* bad : {"\"http://10.0.20.2:8080/a b\"", "http://10.0.20.2:8080/talos?site=lab", "\"http://10.0.20.2:8080/talos#x\"",
                          "10.0.20.2:8080/talos", "ftp://10.0.20.2/talos", "http:///talos"}) {
    INFO(bad);
    f = profile(std::string("  outputs: [netboot]\n  netboot_url: ") + bad + "\n", "  - name: cp1\n");
    Diagnostics dn;
    CHECK_FALSE(load_profile(f, dn));
    CHECK(has_error(dn, f + ":6:", "'talos.netboot_url' must be an http:// or https:// URL without spaces, query (?) or fragment (#)"));
  }
  f = profile("  outputs: [netboot]\n  netboot_url: https://boot.lab.example:8443/talos\n", "  - name: cp1\n");
  Diagnostics ok;
  CHECK(load_profile(f, ok));

  // A node's own argument with only config-iso: no output would carry it.
  f = profile("  kernel_args: [console=ttyS0]\n", "  - name: cp1\n    kernel_args: [net.ifnames=0]\n  - name: cp2\n");
  Diagnostics d2;
  CHECK_FALSE(load_profile(f, d2));
  INFO(dump(d2));
  CHECK(has_error(d2, f + ":7:", "node 'cp1': kernel argument net.ifnames=0 is not every node's"));
  CHECK(d2.error_count() == 1);  // console=ttyS0 is every node's: the shared boot ISO carries it
  f = profile("  outputs: [config-iso, iso]\n", "  - name: cp1\n    kernel_args: [net.ifnames=0]\n  - name: cp2\n");
  Diagnostics d3;
  CHECK(load_profile(f, d3));
}

TEST_CASE("a download URL's scheme may be upper case, and the URL may hold no blank", "[profile]") {
  test::TempDir dir;
  std::string upper = minimal_rpi;
  upper.replace(upper.find("https://example.invalid"), 8, "HTTPS://");
  test::write_file(dir / "upper.yaml", upper);
  Diagnostics ok;
  auto profile = load_profile(dir / "upper.yaml", ok);
  INFO(dump(ok));
  REQUIRE(profile);
  CHECK(profile->base->location == "https://example.invalid/raspios.img.xz");
  CHECK(profile->base->is_download());

  std::string spaced = minimal_rpi;
  spaced.replace(spaced.find("raspios.img.xz"), 14, "my raspios.img.xz");
  test::write_file(dir / "spaced.yaml", spaced);
  Diagnostics d;
  CHECK_FALSE(load_profile(dir / "spaced.yaml", d));
  CHECK(has_error(d, (dir / "spaced.yaml").string() + ":4:8:", "'base.url' holds a space or control character"));
}
