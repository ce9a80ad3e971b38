#include "site/ansible_inventory.hpp"

#include <yaml-cpp/yaml.h>

#include <catch2/catch.hpp>

#include "core/error.hpp"

using namespace aggrik8s;
using namespace aggrik8s::site;
namespace fs = std::filesystem;

namespace {

ConfigNode yaml(const std::string& text) {
  Diagnostics diagnostics;
  ConfigNode node = load_yaml_string(text, "test.yaml", diagnostics);
  REQUIRE_FALSE(diagnostics.has_errors());
  return node;
}

builder::Rpi5Node pi_node(const std::string& name, const std::string& config_yaml,
                          std::optional<std::string> server = std::nullopt) {
  builder::Rpi5Node node;
  node.name = name;
  node.system.hostname = name;
  node.system.users.push_back({"pi", std::nullopt, {"ssh-ed25519 AAAAC3Nza test@lab"}, true});
  node.rke2.version = "v1.33.1+rke2r1";
  node.rke2.images = {"rke2-images-core", "rke2-images-canal"};
  node.rke2.server = std::move(server);
  node.rke2.token = SecretReference{};
  node.rke2.config = yaml(config_yaml);
  return node;
}

Machine machine(const std::string& name, Platform platform, Role role, const std::string& address,
                const fs::path& profile, BootMethod boot = BootMethod::disk) {
  Machine m;
  m.name = name;
  m.platform = platform;
  m.role = role;
  m.address = address;
  m.profile = profile;
  m.boot = boot;
  m.where = {"/site/lab.yaml", 10, 5};
  return m;
}

// The example site's shape: 3 servers (cp1 starts the cluster, cp2/cp3 join it), 4 agents of which 2
// ephemeral, 2 Talos VMs that must not appear.
LoadedSite lab_site() {
  LoadedSite loaded;
  SiteInventory& site = loaded.site;
  site.file = "/site/lab.yaml";
  site.name = "lab";
  site.ansible.token_lookup = "{{ lookup('file', 'secrets/rke2-token') }}";

  builder::Profile servers;
  servers.file = "/site/rpi5-rke2-server.yaml";
  servers.name = "lab-servers";
  const std::string server_config =
      "tls-san: [k8s.lab.example, 10.0.10.10]\n"
      "etcd-snapshot-schedule-cron: \"0 */6 * * *\"\n"
      "write-kubeconfig-mode: \"0600\"\n"
      "etcd-s3-secret-key: s3cr3t-value\n"
      "agent-token: agent-token-value\n"
      "node-taint: [\"CriticalAddonsOnly=true:NoExecute\"]\n";
  servers.rpi_nodes.push_back(pi_node("cp1", server_config + "node-label: [zone=shelf-a]\n"));
  servers.rpi_nodes.push_back(pi_node("cp2", server_config + "node-label: [zone=shelf-b]\n", "https://10.0.10.11:9345"));
  servers.rpi_nodes.push_back(pi_node("cp3", server_config, "https://10.0.10.11:9345"));

  builder::Profile agents;
  agents.file = "/site/rpi5-rke2-agent.yaml";
  agents.name = "lab-agents";
  for (const char* name : {"wk1", "wk2"}) {
    agents.rpi_nodes.push_back(pi_node(name, "node-label: [nvme=true]\nkubelet-arg: [max-pods=80]\n", "https://10.0.10.11:9345"));
  }
  builder::Profile ephemeral;
  ephemeral.file = "/site/rpi5-rke2-ephemeral.yaml";
  ephemeral.name = "lab-ephemeral";
  for (const char* name : {"eph1", "eph2"}) {
    ephemeral.rpi_nodes.push_back(pi_node(name, "kubelet-arg: [max-pods=40]\n", "https://10.0.10.11:9345"));
  }
  builder::Profile talos;
  talos.file = "/site/talos-proxmox-controlplane.yaml";
  talos.name = "talos-cp";
  talos.kind = builder::ProfileKind::talos_iso;

  // Site order puts a joining server first: the bootstrap server (no rke2.server) must still lead.
  site.machines.push_back(machine("cp2", Platform::rpi5, Role::server, "10.0.10.12/24", servers.file));
  site.machines.push_back(machine("cp1", Platform::rpi5, Role::server, "10.0.10.11/24", servers.file));
  site.machines.push_back(machine("cp3", Platform::rpi5, Role::server, "10.0.10.13/24", servers.file));
  site.machines.push_back(machine("tcp1", Platform::proxmox_vm, Role::controlplane, "10.0.20.11/24", talos.file));
  site.machines.push_back(machine("wk1", Platform::rpi5, Role::agent, "10.0.10.21/24", agents.file));
  site.machines.push_back(machine("wk2", Platform::rpi5, Role::agent, "10.0.10.22/24", agents.file));
  site.machines.push_back(machine("eph1", Platform::rpi5, Role::agent, "10.0.10.31/24", ephemeral.file, BootMethod::ephemeral));
  site.machines.push_back(machine("eph2", Platform::rpi5, Role::agent, "10.0.10.32/24", ephemeral.file, BootMethod::ephemeral));
  site.machines[1].labels = {{"topology.kubernetes.io/zone", "shelf-a"}};  // cp1, also a site label
  site.machines[4].taints = {"dedicated=storage:NoSchedule"};              // wk1

  loaded.profiles.emplace(servers.file, servers);
  loaded.profiles.emplace(agents.file, agents);
  loaded.profiles.emplace(ephemeral.file, ephemeral);
  loaded.profiles.emplace(talos.file, talos);
  return loaded;
}

std::vector<std::string> keys(const YAML::Node& map) {
  std::vector<std::string> out;
  for (const auto& entry : map) out.push_back(entry.first.as<std::string>());
  return out;
}

std::vector<std::string> strings(const YAML::Node& list) {
  std::vector<std::string> out;
  for (const auto& item : list) out.push_back(item.as<std::string>());
  return out;
}

}  // namespace

TEST_CASE("ansible inventory: rke2-ansible's groups, hosts in bootstrap-first site order, no Talos VM") {
  const std::string text = ansible_inventory_yaml(lab_site());
  YAML::Node inventory = YAML::Load(text);
  CHECK(keys(inventory) == std::vector<std::string>{"all", "rke2_cluster"});
  CHECK(keys(inventory["rke2_cluster"]) == std::vector<std::string>{"children"});
  CHECK(keys(inventory["rke2_cluster"]["children"]) == std::vector<std::string>{"rke2_servers", "rke2_agents"});
  YAML::Node servers = inventory["rke2_cluster"]["children"]["rke2_servers"];
  YAML::Node agents = inventory["rke2_cluster"]["children"]["rke2_agents"];
  CHECK(keys(servers["hosts"]) == std::vector<std::string>{"cp1", "cp2", "cp3"});
  CHECK(keys(agents["hosts"]) == std::vector<std::string>{"wk1", "wk2", "eph1", "eph2"});
  CHECK(text.find("tcp1:") == std::string::npos);
  CHECK(text.find("# Not RKE2, left out (rke2-ansible's site.yml runs on hosts: all): tcp1.") != std::string::npos);
}

TEST_CASE("ansible inventory: all.vars carry the images' RKE2 version, empty air-gap variables, token references") {
  YAML::Node vars = YAML::Load(ansible_inventory_yaml(lab_site()))["all"]["vars"];
  CHECK(keys(vars) == std::vector<std::string>{"rke2_install_version", "rke2_install_tarball_url",
                                               "rke2_install_local_tarball_path", "rke2_images_urls",
                                               "rke2_images_local_tarball_path", "rke2_kubernetes_api_server_host",
                                               "rke2_token", "cluster_rke2_config"});
  CHECK(vars["rke2_install_version"].as<std::string>() == "v1.33.1+rke2r1");
  CHECK(vars["rke2_install_tarball_url"].as<std::string>().empty());
  CHECK(vars["rke2_install_local_tarball_path"].as<std::string>().empty());
  CHECK(vars["rke2_images_urls"].IsSequence());
  CHECK(vars["rke2_images_urls"].size() == 0);
  CHECK(vars["rke2_images_local_tarball_path"].size() == 0);
  // Every joining image names https://10.0.10.11:9345: that host is where rke2-ansible joins nodes.
  CHECK(vars["rke2_kubernetes_api_server_host"].as<std::string>() == "10.0.10.11");
  CHECK(vars["rke2_token"].as<std::string>() == "{{ lookup('file', 'secrets/rke2-token') }}");
  CHECK(keys(vars["cluster_rke2_config"]) == std::vector<std::string>{"token"});
  CHECK(vars["cluster_rke2_config"]["token"].as<std::string>() == "{{ rke2_token }}");
}

TEST_CASE("ansible inventory: per-host address, node facts and host_rke2_config from the site and the image's config") {
  YAML::Node children = YAML::Load(ansible_inventory_yaml(lab_site()))["rke2_cluster"]["children"];
  YAML::Node cp1 = children["rke2_servers"]["hosts"]["cp1"];
  CHECK(keys(cp1) == std::vector<std::string>{"ansible_host", "ansible_user", "node_name", "node_ip", "node_labels",
                                              "node_taints", "aggrik8s_boot", "host_rke2_config"});
  CHECK(cp1["ansible_host"].as<std::string>() == "10.0.10.11");
  CHECK(cp1["ansible_user"].as<std::string>() == "pi");
  CHECK(cp1["node_name"].as<std::string>() == "cp1");
  CHECK(cp1["node_ip"].as<std::string>() == "10.0.10.11");
  CHECK(strings(cp1["node_labels"]) == std::vector<std::string>{"zone=shelf-a", "topology.kubernetes.io/zone=shelf-a"});
  CHECK(strings(cp1["node_taints"]) == std::vector<std::string>{"CriticalAddonsOnly=true:NoExecute"});
  CHECK(cp1["aggrik8s_boot"].as<std::string>() == "disk");
  YAML::Node cp1_config = cp1["host_rke2_config"];
  CHECK(keys(cp1_config) == std::vector<std::string>{"node-name", "node-ip", "node-label", "node-taint"});
  CHECK(cp1_config["node-ip"].as<std::string>() == "10.0.10.11");

  YAML::Node cp2_config = children["rke2_servers"]["hosts"]["cp2"]["host_rke2_config"];
  CHECK(cp2_config["server"].as<std::string>() == "https://10.0.10.11:9345");
  CHECK(strings(cp2_config["node-label"]) == std::vector<std::string>{"zone=shelf-b"});
  // cp3 has no label at all: no empty node-label for rke2-ansible to write.
  CHECK_FALSE(children["rke2_servers"]["hosts"]["cp3"]["host_rke2_config"]["node-label"]);
  CHECK(children["rke2_servers"]["hosts"]["cp3"]["node_labels"].size() == 0);

  YAML::Node wk1 = children["rke2_agents"]["hosts"]["wk1"];
  CHECK(strings(wk1["node_taints"]) == std::vector<std::string>{"dedicated=storage:NoSchedule"});
  CHECK(strings(wk1["host_rke2_config"]["node-taint"]) == std::vector<std::string>{"dedicated=storage:NoSchedule"});
  // kubelet-arg differs between the two agent profiles: per host, not in the group.
  CHECK(strings(wk1["host_rke2_config"]["kubelet-arg"]) == std::vector<std::string>{"max-pods=80"});
  YAML::Node eph1 = children["rke2_agents"]["hosts"]["eph1"];
  CHECK(eph1["aggrik8s_boot"].as<std::string>() == "ephemeral");
  CHECK(strings(eph1["host_rke2_config"]["kubelet-arg"]) == std::vector<std::string>{"max-pods=40"});
}

TEST_CASE("ansible inventory: group_rke2_config holds what a group shares, never a token or credential") {
  const std::string text = ansible_inventory_yaml(lab_site());
  YAML::Node children = YAML::Load(text)["rke2_cluster"]["children"];
  YAML::Node group_config = children["rke2_servers"]["vars"]["group_rke2_config"];
  CHECK(keys(group_config) == std::vector<std::string>{"tls-san", "etcd-snapshot-schedule-cron", "write-kubeconfig-mode"});
  CHECK(strings(group_config["tls-san"]) == std::vector<std::string>{"k8s.lab.example", "10.0.10.10"});
  CHECK(group_config["write-kubeconfig-mode"].as<std::string>() == "0600");
  CHECK(text.find("write-kubeconfig-mode: \"0600\"") != std::string::npos);  // stays a string
  // The agents share nothing but labels (per host): no group vars at all.
  CHECK_FALSE(children["rke2_agents"]["vars"]);
  for (const char* secret : {"s3cr3t-value", "agent-token-value", "etcd-s3-secret-key", "agent-token:"}) {
    INFO(secret);
    CHECK(text.find(secret) == std::string::npos);
  }
}

TEST_CASE("ansible inventory: without token_lookup the token is a vault variable, and site vars come last and win") {
  LoadedSite loaded = lab_site();
  loaded.site.ansible.token_lookup.reset();
  loaded.site.ansible.extra_vars = {{"rke2_kubernetes_api_server_host", scalar_node("k8s.lab.example")},
                                    {"ansible_python_interpreter", scalar_node("/usr/bin/python3")}};
  const std::string text = ansible_inventory_yaml(loaded);
  YAML::Node vars = YAML::Load(text)["all"]["vars"];
  CHECK(vars["rke2_token"].as<std::string>() == "{{ vault_rke2_token }}");
  CHECK(text.find("# rke2_token refers to vault_rke2_token") != std::string::npos);
  CHECK(vars["rke2_kubernetes_api_server_host"].as<std::string>() == "k8s.lab.example");
  CHECK(keys(vars).back() == "ansible_python_interpreter");
}

TEST_CASE("ansible inventory: Jinja in site or profile values is written !unsafe, the site's ansible values stay templates") {
  LoadedSite loaded = lab_site();
  loaded.site.machines[1].labels = {{"note", "{{ lookup('pipe', 'touch /tmp/pwned') }}"}};  // cp1
  const std::string text = ansible_inventory_yaml(loaded);
  CHECK(text.find("- !unsafe \"note={{ lookup('pipe', 'touch /tmp/pwned') }}\"") != std::string::npos);
  // Ansible's own template values are left for it to render.
  CHECK(text.find("rke2_token: \"{{ lookup('file', 'secrets/rke2-token') }}\"") != std::string::npos);
  CHECK(text.find("token: \"{{ rke2_token }}\"") != std::string::npos);
  // Still one YAML document of strings for a reader that knows no Ansible tags.
  YAML::Node hosts = YAML::Load(text)["rke2_cluster"]["children"]["rke2_servers"]["hosts"];
  CHECK(hosts["cp1"]["node_labels"][1].as<std::string>() == "note={{ lookup('pipe', 'touch /tmp/pwned') }}");
}

TEST_CASE("ansible inventory: the header names the ephemeral nodes, and the same site gives the same bytes") {
  const std::string text = ansible_inventory_yaml(lab_site());
  CHECK(text == ansible_inventory_yaml(lab_site()));
  CHECK(text.starts_with("# rancherfederal/rke2-ansible (v2) inventory of site lab"));
  CHECK(text.find("# Ephemeral (aggrik8s_boot: ephemeral, run from RAM): eph1, eph2.\n") != std::string::npos);
  CHECK(text.find("# Image archives preloaded in /var/lib/rancher/rke2/agent/images: rke2-images-core, "
                  "rke2-images-canal.\n") != std::string::npos);
  CHECK(text.find("image_archives: omit") == std::string::npos);
}

TEST_CASE("ansible inventory: ephemeral nodes whose RAM root omits the image archives are named in the header") {
  LoadedSite loaded = lab_site();
  builder::EphemeralSettings ephemeral;
  ephemeral.image_archives = builder::EphemeralSettings::ImageArchives::omit;
  loaded.profiles.at("/site/rpi5-rke2-ephemeral.yaml").output.ephemeral = ephemeral;
  const std::string text = ansible_inventory_yaml(loaded);
  CHECK(text.find("# No image archives in RAM (output.ephemeral.image_archives: omit), images from the registry "
                  "mirror: eph1, eph2.\n") != std::string::npos);
}

TEST_CASE("ansible inventory: without rke2.server anywhere the bootstrap server's address is the API host") {
  LoadedSite loaded = lab_site();
  for (auto& [file, profile] : loaded.profiles) {
    for (auto& node : profile.rpi_nodes) node.rke2.server.reset();
  }
  YAML::Node inventory = YAML::Load(ansible_inventory_yaml(loaded));
  // No server joins anyone: site order decides, cp2 first.
  CHECK(keys(inventory["rke2_cluster"]["children"]["rke2_servers"]["hosts"]) == std::vector<std::string>{"cp2", "cp1", "cp3"});
  CHECK(inventory["all"]["vars"]["rke2_kubernetes_api_server_host"].as<std::string>() == "10.0.10.12");
}

TEST_CASE("ansible inventory: profiles that disagree on the RKE2 version are an error naming both") {
  LoadedSite loaded = lab_site();
  for (auto& node : loaded.profiles.at("/site/rpi5-rke2-agent.yaml").rpi_nodes) node.rke2.version = "v1.32.5+rke2r1";
  REQUIRE_THROWS_AS(ansible_inventory_yaml(loaded), Error);
  REQUIRE_THROWS_WITH(ansible_inventory_yaml(loaded),
                      "the site's RKE2 machines disagree on rke2.version: cp2 (profile rpi5-rke2-server.yaml) has "
                      "v1.33.1+rke2r1, wk1 (profile rpi5-rke2-agent.yaml) has v1.32.5+rke2r1; rke2-ansible installs "
                      "one rke2_install_version for the cluster: give both profiles the same rke2.version "
                      "(/site/lab.yaml:10:5: wk1)");
}

TEST_CASE("ansible inventory: a site without an RKE2 machine, or a machine its profile lacks, is an error") {
  LoadedSite loaded = lab_site();
  std::erase_if(loaded.site.machines, [](const Machine& m) { return m.platform == Platform::rpi5; });
  REQUIRE_THROWS_WITH(ansible_inventory_yaml(loaded),
                      "/site/lab.yaml: the site has no RKE2 machine (platform rpi5, role server or agent): nothing for "
                      "rke2-ansible");
  LoadedSite missing = lab_site();
  missing.profiles.at("/site/rpi5-rke2-agent.yaml").rpi_nodes.pop_back();
  REQUIRE_THROWS_WITH(ansible_inventory_yaml(missing),
                      "/site/lab.yaml:10:5: wk2: profile rpi5-rke2-agent.yaml has no node named wk2");
}

TEST_CASE("ansible inventory: agents without a server of the site get an empty rke2_servers group and a warning", "[site]") {
  // Agents that join a server outside the site (their profile's rke2.server) are a valid site.
  LoadedSite loaded = lab_site();
  std::erase_if(loaded.site.machines, [](const Machine& m) { return m.role != Role::agent; });
  Diagnostics warnings;
  const std::string text = ansible_inventory_yaml(loaded, &warnings);
  YAML::Node children = YAML::Load(text)["rke2_cluster"]["children"];
  // rke2-ansible reads groups['rke2_servers'] on every host: the group must exist, even without hosts.
  CHECK(keys(children) == std::vector<std::string>{"rke2_servers", "rke2_agents"});
  CHECK(children["rke2_servers"].IsMap());
  CHECK(children["rke2_servers"].size() == 0);
  CHECK(text.find("# No server: rke2_servers is empty, and rke2-ansible's site.yml fails without one") != std::string::npos);
  REQUIRE(warnings.all().size() == 1);
  CHECK(warnings.all()[0].str() ==
        "/site/lab.yaml:10:5: warning: the site has no RKE2 server: the inventory's rke2_servers group is empty, and "
        "rke2-ansible's site.yml fails on it (roles/rke2/tasks/main.yml starts the cluster on "
        "groups['rke2_servers'][0] and reads the join token from it); to run rke2-ansible for these agents, add the "
        "server they join to rke2_servers in a copy of the inventory");
  // A site with servers: no warning.
  Diagnostics none;
  (void)ansible_inventory_yaml(lab_site(), &none);
  CHECK(none.all().empty());
}

TEST_CASE("ansible inventory: an IPv6 API server host is written, with a warning about rke2-ansible's URL", "[site]") {
  LoadedSite loaded = lab_site();
  loaded.site.machines[1].address = "fd00:10::11/64";  // cp1, the bootstrap server
  for (auto& [file, profile] : loaded.profiles) {
    for (auto& node : profile.rpi_nodes) {
      if (node.rke2.server) node.rke2.server = "https://[fd00:10::11]:9345";
    }
  }
  Diagnostics warnings;
  YAML::Node vars = YAML::Load(ansible_inventory_yaml(loaded, &warnings))["all"]["vars"];
  CHECK(vars["rke2_kubernetes_api_server_host"].as<std::string>() == "fd00:10::11");
  REQUIRE(warnings.all().size() == 1);
  CHECK(warnings.all()[0].str() ==
        "/site/lab.yaml:10:5: warning: rke2_kubernetes_api_server_host is the IPv6 address fd00:10::11: rke2-ansible "
        "writes server: https://fd00:10::11:9345 (no brackets, roles/rke2/tasks/save_generated_token.yml) into every "
        "node's config, the first server's too, a URL RKE2 cannot parse; set "
        "ansible.vars.rke2_kubernetes_api_server_host to a DNS name of the server");
  // A name given in the site's ansible.vars: no warning.
  loaded.site.ansible.extra_vars = {{"rke2_kubernetes_api_server_host", scalar_node("k8s.lab.example")}};
  Diagnostics none;
  (void)ansible_inventory_yaml(loaded, &none);
  CHECK(none.all().empty());
}
