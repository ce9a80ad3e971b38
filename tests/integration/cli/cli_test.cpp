// The CLI as a user runs it: exit codes, help, validate on the shipped example profiles.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/test_support.hpp"

using namespace aggrik8s;
namespace fs = std::filesystem;

namespace {
std::string cli() { return test::cli_path().string(); }
}  // namespace

TEST_CASE("every subcommand has --help, usage errors exit 2", "[cli]") {
  for (const char* command :
       {"build", "validate", "fetch", "upload", "inspect", "flash", "eeprom-config", "keygen", "serve", "status", "export",
        "version"}) {
    auto help = test::run(cli() + " " + command + " --help");
    INFO(command << ": " << help.output);
    CHECK(help.exit_code == 0);
    CHECK(help.output.find(std::string("Usage: aggrik8s-image ") + command) != std::string::npos);
    // One exit-status paragraph: the command's own where it has one (inspect, keygen, status).
    auto first = help.output.find("Exit status:");
    CHECK(first != std::string::npos);
    CHECK(help.output.find("Exit status:", first + 1) == std::string::npos);
  }
  CHECK(test::run(cli()).exit_code == 2);
  CHECK(test::run(cli() + " frobnicate").exit_code == 2);
  auto bad = test::run(cli() + " validate --frob x.yaml");
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("unknown option --frob") != std::string::npos);
  CHECK(test::run(cli() + " validate").exit_code == 2);
  CHECK(test::run(cli() + " build -v -q x.yaml").exit_code == 2);
  CHECK(test::run(cli() + " build --jobs 0 x.yaml").exit_code != 0);
}

TEST_CASE("commands refuse to start without what they need, with a usage error", "[cli]") {
  // serve would otherwise bind port 69 and 8080 on every address; flash needs a source and a target.
  auto serve = test::run(cli() + " serve");
  INFO(serve.output);
  CHECK(serve.exit_code == 2);
  auto flash = test::run(cli() + " flash only-a-source.img");
  INFO(flash.output);
  CHECK(flash.exit_code == 2);
  // Per-node edits are checked before the image is written: a bad --file DEST or a --ssh-key line
  // that is no key (it would go into a script run as root) leave no target behind.
  test::TempDir dir;
  test::write_file(dir / "extra.txt", "x\n");
  test::write_file(dir / "keys.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey ok@x\nAGGRIK8S_KEYS\ntouch /root/pwned\n");
  for (const std::string& bad : std::vector<std::string>{" --file " + (dir / "extra.txt").string() + ":/../x", " --file " + (dir / "extra.txt").string() + ":/",
                                " --ssh-key " + (dir / "keys.pub").string()}) {
    auto refused = test::run(cli() + " flash" + bad + " image-not-read.img " + (dir / "target.img").string());
    INFO(refused.output);
    CHECK(refused.exit_code == 2);
    CHECK_FALSE(fs::exists(dir / "target.img"));
  }
  CHECK_THAT(test::run(cli() + " flash --ssh-key " + (dir / "keys.pub").string() + " a.img b.img").output,
             Catch::Contains((dir / "keys.pub").string() + ":2: not an SSH public key line"));
  // The flags are checked as netboot.yaml's listen.address and http.base_url are, before anything
  // listens: '::1' made boot scripts name http://::1:PORT, a URL without a scheme named no URL at all.
  auto v6 = test::run(cli() + " serve --address ::1 --tftp-root /usr/lib/ipxe");
  INFO(v6.output);
  CHECK(v6.exit_code == 2);
  CHECK_THAT(v6.output, Catch::Contains("--address must be an IPv4 address, got '::1'"));
  auto url = test::run(cli() + " serve --address 127.0.0.1 --tftp-root /usr/lib/ipxe --base-url 10.0.0.1:8080");
  INFO(url.output);
  CHECK(url.exit_code == 2);
  CHECK_THAT(url.output, Catch::Contains("--base-url must be an http:// URL (https:// needs http.tls in --config), got '10.0.0.1:8080'"));
}

TEST_CASE("validate of a site warns of what its exports would refuse", "[cli][site]") {
  test::TempDir dir;
  fs::copy(test::source_dir() / "profiles", dir / "profiles", fs::copy_options::recursive);
  fs::copy(test::source_dir() / "overlays", dir / "overlays", fs::copy_options::recursive);
  std::string site = test::read_file(dir / "profiles/site-lab.yaml");
  // tw2 moved to pve2 while its ISO goes to pve1's local storage: it builds, the VM could not boot it.
  std::string tw2 = "vm: {node: pve1, vmid: 222";
  REQUIRE(site.find(tw2) != std::string::npos);
  site.replace(site.find(tw2), tw2.size(), "vm: {node: pve2, vmid: 222");
  test::write_file(dir / "profiles/site-moved.yaml", site);
  auto r = test::run(cli() + " validate " + (dir / "profiles/site-moved.yaml").string());
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("warning: export terraform would refuse this site: ") &&
                           Catch::Contains("machine tw2 (proxmox-vm): runs on Proxmox node pve2, but upload puts tw2.iso "
                                           "on node pve1's storage 'local'"));
}

TEST_CASE("validate accepts every example profile", "[cli]") {
  for (const auto& entry : fs::directory_iterator(test::source_dir() / "profiles")) {
    if (entry.path().extension() != ".yaml") continue;
    auto r = test::run(cli() + " validate '" + entry.path().string() + "'");
    INFO(entry.path() << "\n" << r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find(": ok (") != std::string::npos);
  }
}

TEST_CASE("validate rejects a broken profile with file:line:col, and --json reports the same", "[cli]") {
  test::TempDir dir;
  test::write_file(dir / "broken.yaml", "kind: rpi5-rke2\nbase: {url: https://x.invalid/a.img, sha256: 12}\nrke2: {version: v1.33.1+rke2r1, role: server, colour: red}\n");
  auto r = test::run(cli() + " validate " + (dir / "broken.yaml").string() + " " +
                     (test::source_dir() / "profiles/rpi5-rke2-agent.yaml").string());
  INFO(r.output);
  CHECK(r.exit_code == 1);
  std::string f = (dir / "broken.yaml").string();
  CHECK(r.output.find(f + ":2:46: 'base.sha256' must be 64 hexadecimal characters") != std::string::npos);
  CHECK(r.output.find(f + ":3:47: unknown key 'rke2.colour'") != std::string::npos);
  CHECK(r.output.find("rpi5-rke2-agent.yaml: ok") != std::string::npos);

  auto j = test::run(cli() + " validate --json " + f + " 2>/dev/null");
  CHECK(j.exit_code == 1);
  auto report = nlohmann::json::parse(j.output);
  CHECK(report["valid"] == false);
  REQUIRE(report["profiles"].size() == 1);
  auto diagnostics = report["profiles"][0]["diagnostics"];
  REQUIRE(diagnostics.size() == 2);
  CHECK(diagnostics[0]["line"] == 2);
  CHECK(diagnostics[0]["column"] == 46);
  CHECK(diagnostics[0]["severity"] == "error");
}

TEST_CASE("validate and serve --check check serve's netboot.yaml and nodes file without serving", "[cli][netboot]") {
  test::TempDir dir;
  test::write_file(dir / "assets/vmlinuz", "not a kernel: checked against 2047 bytes");
  test::write_file(dir / "assets/initrd.img", "initrd");
  test::write_file(dir / "nodes.yaml", "profiles:\n  live:\n    kernel: {kernel: assets/vmlinuz, initrd: [assets/initrd.img]}\n"
                                       "    mode: ephemeral\nnodes:\n  - {name: n1, match: {mac: \"52:54:00:00:00:01\"}, "
                                       "profile: live}\n");
  test::write_file(dir / "netboot.yaml", "listen: {address: 127.0.0.1}\ntftp: {root: assets}\nhttp: {port: 8080}\n"
                                         "inventory: nodes.yaml\nboot_log: boot.jsonl\n");
  std::string config = (dir / "netboot.yaml").string(), nodes = (dir / "nodes.yaml").string();

  auto r = test::run(cli() + " validate " + config + " " + nodes);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains(config + ": ok (1 node, 1 profile; boot scripts name http://127.0.0.1:8080)"));
  CHECK_THAT(r.output, Catch::Contains(nodes + ": ok (1 node, 1 profile; command lines checked with "
                                               "http://255.255.255.255:8080, the longest URL"));
  auto check = test::run(cli() + " serve --config " + config + " --check");
  INFO(check.output);
  CHECK(check.exit_code == 0);
  CHECK_THAT(check.output, Catch::Contains(config + ": ok (1 node, 1 profile; boot scripts name http://127.0.0.1:8080)"));
  CHECK_FALSE(fs::exists(dir / "boot.jsonl"));  // nothing written
  // The kernel that is no kernel is a warning, said once per line ("warning: FILE:L:C: ...").
  CHECK_THAT(check.output, Catch::Contains("warning: " + nodes + ":3:5: profiles.live: "));

  // A missing kernel is named with its file, line and column, by both.
  fs::remove(dir / "assets/vmlinuz");
  for (const auto& command : {" validate " + config, " serve --config " + config + " --check"}) {
    auto bad = test::run(cli() + command);
    INFO(bad.output);
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.output, Catch::Contains(nodes + ":3:22: 'profiles.live.kernel.kernel': " + (dir / "assets/vmlinuz").string() +
                                           " does not exist"));
  }
  // --json carries what the text form warns of: here an interface this machine does not have.
  test::write_file(dir / "elsewhere.yaml", "listen: {interface: no-such-if0}\nhttp: {base_url: 'http://10.0.0.1:8080'}\n"
                                           "tftp: {root: assets}\n");
  auto elsewhere = test::run(cli() + " validate --json " + (dir / "elsewhere.yaml").string() + " 2>/dev/null");
  INFO(elsewhere.output);
  CHECK(elsewhere.exit_code == 0);
  auto warned = nlohmann::json::parse(elsewhere.output)["profiles"][0]["diagnostics"];
  REQUIRE(warned.size() == 1);
  CHECK(warned[0]["severity"] == "warning");
  CHECK_THAT(warned[0]["message"].get<std::string>(), Catch::Contains("interface no-such-if0 has no IPv4 address"));

  auto json = test::run(cli() + " validate --json " + nodes + " 2>/dev/null");
  CHECK(json.exit_code == 1);
  auto report = nlohmann::json::parse(json.output);
  CHECK(report["valid"] == false);
  CHECK(report["profiles"][0]["kind"] == "nodes-file");
  CHECK_THAT(report["profiles"][0]["diagnostics"][0]["message"].get<std::string>(),
             Catch::Contains("'profiles.live.kernel.kernel'"));

  // A nodes file that lacks profiles: is told so, as serve --check tells it, not that it lacks a kind.
  test::write_file(dir / "matched.yaml", "nodes:\n  - {name: a, match: {mac: '52:54:00:00:00:01'}, profile: p}\n");
  test::write_file(dir / "policy.yaml", "unknown_nodes: ignore\n");
  for (const char* name : {"matched.yaml", "policy.yaml"}) {
    auto lacking = test::run(cli() + " validate " + (dir / name).string());
    INFO(lacking.output);
    CHECK(lacking.exit_code == 1);
    CHECK_THAT(lacking.output, Catch::Contains((dir / name).string() + ":1:1: missing required key 'profiles'"));
  }
}

TEST_CASE("version prints text and JSON", "[cli]") {
  auto r = test::run(cli() + " version --json");
  CHECK(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.output)["version"] == AGGRIK8S_VERSION);
}
