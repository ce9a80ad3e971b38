// The exported inventory read by Debian's ansible-core, as rke2-ansible would read it: ansible-inventory
// must see the groups, hosts and host vars of the example site, and a local playbook must find every
// variable rke2-ansible reads, resolve the token reference, and merge the three *_rke2_config levels with
// rke2-ansible's own expression (roles/rke2/tasks/config.yml) into each node's config.
#include <nlohmann/json.hpp>

#include <catch2/catch.hpp>
#include <filesystem>
#include <set>

#include "core/subprocess.hpp"
#include "site/ansible_inventory.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::site;
namespace fs = std::filesystem;

namespace {

// A token no inventory or log may ever contain.
constexpr const char* test_token = "K10-test-token-7f3c9e21d8b4-must-not-leak";

LoadedSite example_site(const fs::path& token_file) {
  Diagnostics diagnostics;
  auto loaded = load_site(test::source_dir() / "profiles/site-lab.yaml", diagnostics);
  std::string messages;
  for (const auto& d : diagnostics.all()) messages += d.str() + "\n";
  INFO(messages);
  REQUIRE(loaded);
  // The example looks its token up relative to the playbook; the test's token file is absolute.
  loaded->site.ansible.token_lookup = "{{ lookup('file', '" + token_file.string() + "') }}";
  return std::move(*loaded);
}

// Ansible writes ~/.ansible and a local temp directory: both inside the test's directory, so the test
// runs rootless, with no home, and leaves nothing behind. No ansible.cfg from anywhere is read.
std::string ansible_environment(const test::TempDir& dir) {
  fs::create_directories(dir / "ansible-home");
  fs::create_directories(dir / "ansible-tmp");
  test::write_file(dir / "ansible.cfg", "[defaults]\n");
  return "env ANSIBLE_CONFIG=" + (dir / "ansible.cfg").string() + " ANSIBLE_HOME=" + (dir / "ansible-home").string() +
         " HOME=" + (dir / "ansible-home").string() + " ANSIBLE_LOCAL_TEMP=" + (dir / "ansible-tmp").string() +
         " ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_PYTHON_INTERPRETER=auto_silent ";
}

// The example site exported into a test directory as hosts.yml, its token in a file of its own.
struct ExportedExample {
  test::TempDir dir;
  LoadedSite loaded;
  std::string inventory;

  ExportedExample() {
    INFO("ansible-core is not installed: run scripts/setup");
    REQUIRE_NOTHROW(find_executable("ansible-inventory"));
    REQUIRE_NOTHROW(find_executable("ansible-playbook"));
    test::write_file(dir / "rke2-token", std::string(test_token) + "\n");
    loaded = example_site(dir / "rke2-token");
    inventory = ansible_inventory_yaml(loaded);
    test::write_file(dir / "hosts.yml", inventory);
  }
};


}  // namespace

TEST_CASE("ansible inventory: ansible-inventory --list shows the example site's RKE2 groups, hosts and host vars") {
  ExportedExample example;
  const auto& [dir, loaded, inventory] = example;
  CHECK(inventory.find(test_token) == std::string::npos);

  auto listed = test::run(ansible_environment(dir) + "ansible-inventory -i " + (dir / "hosts.yml").string() +
                          " --list --output " + (dir / "list.json").string() + " 2>&1");
  INFO(listed.output);
  REQUIRE(listed.exit_code == 0);
  CHECK(listed.output.find("WARNING") == std::string::npos);
  auto list = nlohmann::json::parse(test::read_file(dir / "list.json"));
  CHECK(list["all"]["children"] == nlohmann::json::array({"ungrouped", "rke2_cluster"}));
  CHECK(list["rke2_cluster"]["children"] == nlohmann::json::array({"rke2_servers", "rke2_agents"}));

  std::vector<std::string> servers, agents;
  std::set<std::string> not_rke2;
  for (const auto& machine : loaded.site.machines) {
    if (machine.platform != Platform::rpi5) {
      not_rke2.insert(machine.name);
      continue;
    }
    (machine.role == Role::server ? servers : agents).push_back(machine.name);
  }
  REQUIRE(servers.size() == 3);
  REQUIRE(agents.size() == 4);
  REQUIRE(not_rke2.size() == 5);
  CHECK(list["rke2_servers"]["hosts"].get<std::vector<std::string>>() == servers);
  CHECK(list["rke2_agents"]["hosts"].get<std::vector<std::string>>() == agents);

  const auto& hostvars = list["_meta"]["hostvars"];
  CHECK(hostvars.size() == servers.size() + agents.size());
  for (const auto& name : not_rke2) CHECK_FALSE(hostvars.contains(name));
  for (const auto& machine : loaded.site.machines) {
    if (machine.platform != Platform::rpi5) continue;
    INFO(machine.name);
    const auto& vars = hostvars.at(machine.name);
    const std::string address = machine.address.substr(0, machine.address.find('/'));
    CHECK(vars["ansible_host"] == address);
    CHECK(vars["node_ip"] == address);
    CHECK(vars["node_name"] == machine.name);
    CHECK(vars["ansible_user"] == "ops");
    CHECK(vars["aggrik8s_boot"] == to_string(machine.boot));
    auto labels = vars["node_labels"].get<std::vector<std::string>>();
    for (const auto& [key, value] : machine.labels) {
      CHECK(std::find(labels.begin(), labels.end(), key + "=" + value) != labels.end());
    }
    auto taints = vars["node_taints"].get<std::vector<std::string>>();
    for (const auto& taint : machine.taints) CHECK(std::find(taints.begin(), taints.end(), taint) != taints.end());
    CHECK(vars["host_rke2_config"]["node-name"] == machine.name);
    CHECK(vars["host_rke2_config"]["node-ip"] == address);
    // all.vars reach every host
    CHECK(vars["rke2_install_version"] == loaded.profile_of(machine).rpi_nodes.front().rke2.version);
    CHECK(vars["rke2_kubernetes_api_server_host"] == "10.0.10.11");
    CHECK_FALSE(vars.contains("token"));
  }
  // The servers' profile taints them all alike: one group value, not three host values.
  CHECK(list["rke2_servers"]["vars"].is_null());  // group vars are folded into hostvars by --list
  CHECK(hostvars.at("cp1")["group_rke2_config"]["write-kubeconfig-mode"] == "0600");
  CHECK(hostvars.at("cp1")["group_rke2_config"]["cni"] == "canal");
  CHECK(test::read_file(dir / "list.json").find(test_token) == std::string::npos);
}

TEST_CASE("ansible inventory: a local playbook finds every variable rke2-ansible reads, and fails without one") {
  ExportedExample example;
  const auto& [dir, loaded, inventory] = example;
  // What rke2-ansible reads, and the config it writes from it (tests/fixtures/rke2-ansible-check.yml).
  fs::copy_file(test::source_dir() / "tests/fixtures/rke2-ansible-check.yml", dir / "check.yml");

  const std::string playbook = ansible_environment(dir) + "ansible-playbook -c local -i ";
  auto ran = test::run(playbook + (dir / "hosts.yml").string() + " " + (dir / "check.yml").string() + " 2>&1");
  INFO(ran.output);
  REQUIRE(ran.exit_code == 0);
  CHECK(ran.output.find(test_token) == std::string::npos);
  for (const auto& machine : loaded.site.machines) {
    const std::string address = machine.address.substr(0, machine.address.find('/'));
    const std::string line = "node " + machine.name + " node_name=" + machine.name + " node_ip=" + address;
    INFO(line);
    CHECK((ran.output.find(line) != std::string::npos) == (machine.platform == Platform::rpi5));
  }
  CHECK(ran.output.find("ok=6") != std::string::npos);
  CHECK(ran.output.find("failed=0") != std::string::npos);
  // What RKE2 gets on a server: the group's config merged under the host's.
  CHECK(ran.output.find("config cp1 keys=cni,etcd-snapshot-schedule-cron,node-ip,node-label,node-name,node-taint,"
                        "tls-san,write-kubeconfig-mode") != std::string::npos);

  // The same check fails when a variable rke2-ansible reads is missing: it proves something.
  std::string without_version = inventory;
  const std::string version_line = "    rke2_install_version: \"" +
                                   loaded.profile_of(loaded.site.machines.front()).rpi_nodes.front().rke2.version + "\"\n";
  auto at = without_version.find(version_line);
  REQUIRE(at != std::string::npos);
  without_version.erase(at, version_line.size());
  test::write_file(dir / "broken.yml", without_version);
  auto failed = test::run(playbook + (dir / "broken.yml").string() + " " + (dir / "check.yml").string() + " 2>&1");
  INFO(failed.output);
  CHECK(failed.exit_code != 0);
  CHECK(failed.output.find("rke2_install_version") != std::string::npos);
  CHECK(failed.output.find(test_token) == std::string::npos);
}
