// export terraform: the site's Proxmox VMs as .tf.json for bpg/proxmox. The document is compared byte
// for byte for a hand-built site, walked against the provider's schema snapshot
// (tests/fixtures/bpg-proxmox-vm-schema.json), and checked for the inventory's MACs/UUIDs and for the
// absence of any secret. With `terraform` on PATH, Terraform itself parses it (`terraform providers`:
// offline, no provider binary needed; `validate` would need the provider, which cannot be installed here).
#include "site/terraform_export.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "core/error.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::site;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

builder::TalosNode talos_node(const std::string& name, std::vector<std::string> kernel_args = {}) {
  builder::TalosNode node;
  node.name = name;
  node.hostname = name;
  node.kernel_args = std::move(kernel_args);
  return node;
}

builder::Profile talos_profile(const std::string& file, const std::string& name, std::vector<std::string> outputs) {
  builder::Profile profile;
  profile.file = "/site/" + file;
  profile.name = name;
  profile.kind = builder::ProfileKind::talos_iso;
  profile.talos.outputs = std::move(outputs);
  return profile;
}

builder::ProxmoxSettings upload_settings(const fs::path& token_file) {
  builder::ProxmoxSettings proxmox;
  proxmox.api_url = "https://pve1.lab.example:8006/api2/json";
  proxmox.token_id = "builder@pve!images";
  proxmox.token_secret = SecretReference{SecretReference::Kind::file, token_file.string(), {}};
  proxmox.node = "pve1";
  proxmox.storage = "local";
  return proxmox;
}

Machine vm_machine(const std::string& name, const std::string& mac, Role role, BootMethod boot,
                   const std::string& profile_file, const std::string& proxmox_node, int line) {
  Machine machine;
  machine.name = name;
  machine.platform = Platform::proxmox_vm;
  machine.mac = mac;
  machine.role = role;
  machine.boot = boot;
  machine.profile = "/site/" + profile_file;
  machine.where = {"/site/site.yaml", line, 5};
  VmSizing vm;
  vm.proxmox_node = proxmox_node;
  machine.vm = vm;
  return machine;
}

// The lab of docs/site.md in small: one ISO-booted control plane VM with everything set, one netbooted
// worker with the defaults, one ephemeral worker, and a Pi that the export leaves out.
LoadedSite lab_site(const fs::path& token_file = "/site/secrets/pve-token") {
  LoadedSite loaded;
  SiteInventory& site = loaded.site;
  site.file = "/site/site.yaml";
  site.name = "lab";
  site.proxmox = ProxmoxCluster{{"pve1", "pve2"}, "local", "local-lvm", {"/site/site.yaml", 20, 3}};

  Machine pi;
  pi.name = "pi1";
  pi.platform = Platform::rpi5;
  pi.serial = "10000000a1b2c3d4";
  pi.mac = "d8:3a:dd:10:00:11";
  pi.role = Role::server;
  pi.profile = "/site/rpi5-rke2-server.yaml";
  site.machines.push_back(pi);

  Machine cp1 = vm_machine("cp1", "bc:24:11:00:20:11", Role::controlplane, BootMethod::disk, "talos-cp.yaml", "pve1", 40);
  cp1.uuid = "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51";
  cp1.vm->vmid = 211;
  cp1.vm->cores = 4;
  cp1.vm->memory = 8ull << 30;
  cp1.vm->disk = 40ull << 30;
  cp1.vm->vlan = 20;
  cp1.vm->disk_storage = "ceph-vm";
  site.machines.push_back(cp1);

  Machine w1 = vm_machine("w1", "bc:24:11:00:20:21", Role::worker, BootMethod::netboot, "talos-worker.yaml", "pve2", 50);
  w1.uuid = "0f3a2b1c-4d5e-4f60-8a7b-9c0d1e2f3a41";
  site.machines.push_back(w1);
  Machine w2 = vm_machine("2w", "bc:24:11:00:20:22", Role::worker, BootMethod::ephemeral, "talos-worker.yaml", "pve2", 60);
  w2.vm->memory = 3000ull << 20;
  w2.vm->disk = (10ull << 30) + 1;  // not a whole GiB: rounded up, never down
  site.machines.push_back(w2);

  builder::Profile cp = talos_profile("talos-cp.yaml", "pve-controlplane", {"iso", "netboot"});
  cp.talos_nodes = {talos_node("cp1", {"console=ttyS0"})};
  cp.proxmox = upload_settings(token_file);
  loaded.profiles.emplace(cp.file, cp);
  builder::Profile worker = talos_profile("talos-worker.yaml", "pve-workers", {"netboot"});
  worker.talos_nodes = {talos_node("w1", {"console=tty0"}), talos_node("2w")};
  loaded.profiles.emplace(worker.file, worker);
  builder::Profile rpi;
  rpi.file = "/site/rpi5-rke2-server.yaml";
  rpi.name = "rpi-servers";
  loaded.profiles.emplace(rpi.file, rpi);
  return loaded;
}

Json schema_snapshot() {
  return Json::parse(test::read_file(test::source_dir() / "tests/fixtures/bpg-proxmox-vm-schema.json"));
}

bool contains(const Json& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// Every property of a block body is a documented attribute, a documented nested block (an object or a
// list of objects, walked in turn), or an attribute-as-blocks list whose objects carry every one of its
// attributes (Terraform's JSON rule for them). Returns the problems, one per line, with their path.
std::string schema_problems(const Json& body, const Json& schema, const std::string& path) {
  std::string problems;
  for (const auto& [key, value] : body.items()) {
    std::string where = path + "." + key;
    if (key == "//") continue;
    if (schema.contains("attributes") && contains(schema["attributes"], key)) continue;
    if (schema.contains("blocks") && schema["blocks"].contains(key)) {
      if (!value.is_object() && !value.is_array()) problems += where + ": a block must be an object or a list\n";
      for (const Json& block : value.is_array() ? value : Json::array({value})) {
        if (!block.is_object()) problems += where + ": block entries must be objects\n";
        else problems += schema_problems(block, schema["blocks"][key], where);
      }
      continue;
    }
    if (schema.contains("attributes_as_blocks") && schema["attributes_as_blocks"].contains(key)) {
      const Json& names = schema["attributes_as_blocks"][key];
      if (!value.is_array()) problems += where + ": an attribute-as-blocks must be a list of objects in JSON\n";
      for (const Json& object : value) {
        for (const auto& [attribute, unused] : object.items()) {
          if (!contains(names, attribute)) problems += where + "." + attribute + ": not in the schema\n";
        }
        for (const std::string name : names) {
          if (!object.contains(name)) problems += where + "." + name + ": missing (every attribute must be set, null if unset)\n";
        }
      }
      continue;
    }
    problems += where + ": not in the schema snapshot\n";
  }
  return problems;
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

}  // namespace

TEST_CASE("export terraform: the lab's VMs as .tf.json byte for byte", "[site][terraform]") {
  // Reviewed by hand against the provider's docs/resources/virtual_environment_vm.md; after a deliberate
  // change, regenerate it from this site and review the diff.
  std::string expected = test::read_file(test::source_dir() / "tests/fixtures/terraform-export-lab.tf.json");
  CHECK(terraform_json(lab_site()) == expected);
}

TEST_CASE("export terraform: every name written is in the provider's schema snapshot", "[site][terraform]") {
  Json schema = schema_snapshot();
  Json document = Json::parse(terraform_json(lab_site()));
  REQUIRE(document["resource"].size() == 1);
  REQUIRE(document["resource"].contains("proxmox_virtual_environment_vm"));
  const Json& vm_schema = schema["resources"]["proxmox_virtual_environment_vm"];
  for (const auto& [name, body] : document["resource"]["proxmox_virtual_environment_vm"].items()) {
    INFO(name);
    CHECK(schema_problems(body, vm_schema, name) == "");
  }
  CHECK(schema_problems(document["provider"]["proxmox"], schema["provider"], "provider.proxmox") == "");
  CHECK(document["terraform"]["required_providers"]["proxmox"]["source"] == schema["provider"]["source"]);

  // The walk itself finds what it should.
  Json bad = {{"name", "x"}, {"cpu", {{"cores", 2}, {"core", 2}}}, {"network_device", Json::array({{{"bridge", "vmbr0"}}})},
              {"nic", 1}};
  std::string problems = schema_problems(bad, vm_schema, "bad");
  CHECK_THAT(problems, Catch::Contains("bad.cpu.core: not in the schema snapshot"));
  CHECK_THAT(problems, Catch::Contains("bad.nic: not in the schema snapshot"));
  CHECK_THAT(problems, Catch::Contains("bad.network_device.mac_address: missing"));
}

TEST_CASE("export terraform: one VM per proxmox-vm machine with the inventory's MAC and UUID", "[site][terraform]") {
  LoadedSite site = lab_site();
  Json vms = Json::parse(terraform_json(site))["resource"]["proxmox_virtual_environment_vm"];
  std::set<std::string> names;
  for (const auto& [key, body] : vms.items()) names.insert(body["name"].get<std::string>());
  CHECK(names == std::set<std::string>{"cp1", "w1", "2w"});
  for (const Machine& machine : site.site.machines) {
    if (machine.platform != Platform::proxmox_vm) continue;
    INFO(machine.name);
    const Json& vm = vms[machine.name == "2w" ? "vm_2w" : machine.name];  // a resource name cannot start with a digit
    REQUIRE(vm.is_object());
    CHECK(vm["node_name"] == machine.vm->proxmox_node);
    REQUIRE(vm["network_device"].size() == 1);
    CHECK(vm["network_device"][0]["mac_address"] == *machine.mac);
    if (machine.uuid) {
      CHECK(vm["smbios"]["uuid"] == *machine.uuid);
    } else {
      CHECK_FALSE(vm.contains("smbios"));  // Proxmox then makes one up; serve matches the MAC
    }
  }
}

TEST_CASE("export terraform: endpoint and token are variables and no secret is read or written", "[site][terraform]") {
  test::TempDir dir;
  const std::string token_value = "5e3b1f0a-TOKEN-VALUE-never-in-output";
  test::write_file(dir / "pve-token", token_value + "\n");
  std::string text = terraform_json(lab_site(dir / "pve-token"));
  CHECK(text.find(token_value) == std::string::npos);
  CHECK(text.find("PVEAPIToken") == std::string::npos);
  CHECK(text.find("builder@pve") == std::string::npos);  // the upload token is not Terraform's
  Json document = Json::parse(text);
  CHECK(document["provider"]["proxmox"]["endpoint"] == "${var.proxmox_endpoint}");
  CHECK(document["provider"]["proxmox"]["api_token"] == "${var.proxmox_api_token}");
  CHECK(document["variable"]["proxmox_api_token"]["sensitive"] == true);
  CHECK_FALSE(document["variable"]["proxmox_api_token"].contains("default"));
  // The profiles' upload endpoint, without /api2/json, is the endpoint's default.
  CHECK(document["variable"]["proxmox_endpoint"]["default"] == "https://pve1.lab.example:8006/");
}

TEST_CASE("export terraform: the output does not change between runs and site text stays literal", "[site][terraform]") {
  LoadedSite site = lab_site();
  CHECK(terraform_json(site) == terraform_json(site));
  site.site.name = "lab-${oops}-%{if}";
  Json vm = Json::parse(terraform_json(site))["resource"]["proxmox_virtual_environment_vm"]["cp1"];
  // Terraform reads JSON strings as templates: $${ and %%{ are the literal "${" and "%{".
  CHECK_THAT(vm["description"].get<std::string>(), Catch::StartsWith("aggrik8s site lab-$${oops}-%%{if}: "));
}

TEST_CASE("export terraform: a site without VMs has the provider and no resources", "[site][terraform]") {
  LoadedSite site = lab_site();
  std::erase_if(site.site.machines, [](const Machine& m) { return m.platform == Platform::proxmox_vm; });
  Json document = Json::parse(terraform_json(site));
  CHECK_FALSE(document.contains("resource"));
  CHECK(document["terraform"]["required_providers"]["proxmox"]["version"] == bpg_proxmox_version_constraint);
}

TEST_CASE("export terraform: VMs the provider cannot describe are refused with the machine named", "[site][terraform]") {
  auto message_of = [](const LoadedSite& site) {
    try {
      terraform_json(site);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  SECTION("boot: disk with only a config ISO: two CD-ROMs, the provider attaches one") {
    LoadedSite site = lab_site();
    auto& cp = site.profiles.at("/site/talos-cp.yaml");
    cp.talos.outputs = {"config-iso"};
    std::string message = message_of(site);
    CHECK(starts_with(message, "/site/site.yaml:40:5: machine cp1 (proxmox-vm): boot: disk, but profile talos-cp.yaml "
                               "writes no per-node ISO (talos.outputs has no 'iso')"));
    CHECK_THAT(message, Catch::Contains("talos-metal-iso.iso and cp1-config.iso cannot both be attached"));
  }
  SECTION("the ISO would be looked for on another storage than upload puts it on") {
    LoadedSite site = lab_site();
    site.site.proxmox->iso_storage = "cephfs";
    CHECK(message_of(site) == "/site/site.yaml:40:5: machine cp1 (proxmox-vm): the site's proxmox.iso_storage is "
                              "'cephfs' but profile talos-cp.yaml uploads its ISOs to storage 'local' "
                              "(proxmox.storage): make them the same");
  }
  SECTION("the ISO would be on another node's own `local` storage") {
    LoadedSite site = lab_site();
    site.site.machines[1].vm->proxmox_node = "pve2";
    CHECK(message_of(site) == "/site/site.yaml:40:5: machine cp1 (proxmox-vm): runs on Proxmox node pve2, but upload "
                              "puts cp1.iso on node pve1's storage 'local', which every node has to itself: place the "
                              "VM on pve1, or use an ISO storage the cluster shares (proxmox.iso_storage and the "
                              "profile's proxmox.storage)");
    site.site.proxmox->iso_storage = "cephfs";  // shared: fine on any node
    site.profiles.at("/site/talos-cp.yaml").proxmox->storage = "cephfs";
    CHECK(Json::parse(terraform_json(site))["resource"]["proxmox_virtual_environment_vm"]["cp1"]["cdrom"]["file_id"] ==
          "cephfs:iso/cp1.iso");
  }
  SECTION("no vm: sizing") {
    LoadedSite site = lab_site();
    site.site.machines[2].vm.reset();
    CHECK_THAT(message_of(site), Catch::StartsWith("/site/site.yaml:50:5: machine w1 (proxmox-vm): has no vm: sizing"));
  }
  SECTION("no MAC") {
    LoadedSite site = lab_site();
    site.site.machines[3].mac.reset();
    CHECK_THAT(message_of(site), Catch::StartsWith("/site/site.yaml:60:5: machine 2w (proxmox-vm): has no mac"));
  }
  SECTION("no proxmox: section") {
    LoadedSite site = lab_site();
    site.site.proxmox.reset();
    CHECK_THAT(message_of(site), Catch::StartsWith("/site/site.yaml: machines with platform proxmox-vm need"));
  }
}

TEST_CASE("export terraform: the repository's Talos profiles as a site's VMs", "[site][terraform]") {
  // The real profiles, as load_site would see them (secrets not read): workers boot their per-node
  // ISO, the control plane netboots (its profile writes config ISOs, which need two CD-ROMs).
  LoadedSite loaded;
  loaded.site.file = test::source_dir() / "profiles/site-test.yaml";
  loaded.site.name = "lab";
  loaded.site.proxmox = ProxmoxCluster{{"pve1", "pve2"}, "local", "local-lvm", {}};
  builder::ProfileCheckOptions options;
  options.check_secrets = false;
  for (const char* file : {"talos-proxmox-controlplane.yaml", "talos-proxmox-worker.yaml"}) {
    Diagnostics diagnostics;
    fs::path path = test::source_dir() / "profiles" / file;
    auto profile = builder::load_profile(path, diagnostics, options);
    REQUIRE(profile);
    for (const builder::TalosNode& node : profile->talos_nodes) {
      bool worker = std::string(file).find("worker") != std::string::npos;
      Machine machine = vm_machine(node.name, *node.mac, worker ? Role::worker : Role::controlplane,
                                   worker ? BootMethod::disk : BootMethod::netboot, "", worker ? "pve1" : "pve2", 1);
      machine.profile = path;
      machine.uuid = node.uuid;
      loaded.site.machines.push_back(machine);
    }
    loaded.profiles.emplace(path, *profile);
  }
  Json document = Json::parse(terraform_json(loaded));
  const Json& vms = document["resource"]["proxmox_virtual_environment_vm"];
  CHECK(vms.size() == 5);
  CHECK(vms["w1"]["cdrom"] == Json({{"file_id", "local:iso/w1.iso"}, {"interface", "ide2"}}));
  CHECK(vms["w1"]["boot_order"] == Json({"scsi0", "ide2"}));
  CHECK(vms["cp1"]["boot_order"] == Json({"net0", "scsi0"}));
  CHECK(vms["cp1"]["smbios"]["uuid"] == "7c1e2f0a-3b4d-4e5f-8a9b-0c1d2e3f4a51");
  CHECK(vms["cp2"]["serial_device"] == Json::array({{{"device", "socket"}}}));  // talos.kernel_args: [console=ttyS0]
  CHECK_FALSE(vms["w2"].contains("serial_device"));
  std::string problems;
  for (const auto& [name, body] : vms.items()) {
    problems += schema_problems(body, schema_snapshot()["resources"]["proxmox_virtual_environment_vm"], name);
  }
  CHECK(problems == "");
}

TEST_CASE("export terraform: terraform itself reads the file when it is installed", "[site][terraform]") {
  if (test::run("command -v terraform >/dev/null 2>&1").exit_code != 0) {
    SUCCEED("terraform is not on PATH: checked by JSON parsing and the schema snapshot only");
    return;
  }
  test::TempDir dir;
  test::write_file(dir / "site.tf.json", terraform_json(lab_site()));
  // `providers` parses the whole configuration and lists what it requires, offline (no provider binary;
  // `validate` needs `init`, which downloads the provider).
  auto result = test::run("cd '" + dir.path().string() + "' && TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 " +
                          "terraform providers -no-color 2>&1");
  INFO(result.output);
  CHECK(result.exit_code == 0);
  CHECK_THAT(result.output, Catch::Contains("provider[registry.terraform.io/bpg/proxmox] ~> 0.111"));
}
