#include "site/terraform_export.hpp"

#include <algorithm>
#include <optional>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace aggrik8s::site {
namespace {

// Insertion order is the output order: terraform, variables, provider, then the VMs in the site's order.
using Json = nlohmann::ordered_json;

constexpr const char* vm_resource_type = "proxmox_virtual_environment_vm";
// Interface names, fixed so boot_order can name them (Proxmox device names).
constexpr const char* disk_interface = "scsi0";
constexpr const char* network_interface = "net0";
// ide2 as in docs/proxmox.md's `qm set --ide2`; the provider's default ide3 does not exist on q35.
constexpr const char* cdrom_interface = "ide2";

// Terraform parses every JSON string of a resource body as a template: "${" and "%{" in a value that
// comes from the site (a description) must be escaped to stay literal.
std::string template_literal(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((text[i] == '$' || text[i] == '%') && i + 1 < text.size() && text[i + 1] == '{') out += text[i];
    out += text[i];
  }
  return out;
}

// A resource name must start with a letter or '_'; a DNS label may start with a digit.
std::string resource_name(const std::string& machine_name) {
  bool starts_with_digit = !machine_name.empty() && machine_name[0] >= '0' && machine_name[0] <= '9';
  return starts_with_digit ? "vm_" + machine_name : machine_name;
}

std::uint64_t round_up_to_units(std::uint64_t bytes, std::uint64_t unit) { return (bytes + unit - 1) / unit; }

[[noreturn]] void refuse(const Machine& machine, const std::string& why) {
  throw Error(machine.where.str() + ": machine " + machine.name + " (proxmox-vm): " + why);
}

const builder::TalosNode* talos_node_of(const builder::Profile& profile, const std::string& name) {
  auto it = std::find_if(profile.talos_nodes.begin(), profile.talos_nodes.end(),
                         [&](const builder::TalosNode& node) { return node.name == name; });
  return it == profile.talos_nodes.end() ? nullptr : &*it;
}

const builder::Profile* profile_or_null(const LoadedSite& site, const Machine& machine) {
  auto it = site.profiles.find(machine.profile);
  return it == site.profiles.end() ? nullptr : &it->second;
}

bool has_output(const builder::Profile& profile, const std::string& output) {
  return std::find(profile.talos.outputs.begin(), profile.talos.outputs.end(), output) != profile.talos.outputs.end();
}

// Talos prints to the last console= it is given; with console=ttyS0 the VM gets serial0 so that
// `qm terminal` shows it (docs/proxmox.md), and the display follows it.
bool has_serial_console(const builder::TalosNode* node) {
  if (node == nullptr) return false;
  return std::any_of(node->kernel_args.begin(), node->kernel_args.end(), [](const std::string& arg) {
    return arg == "console=ttyS0" || arg.rfind("console=ttyS0,", 0) == 0;
  });
}

// The file id of the CD-ROM a `boot: disk` VM starts from: the node's own ISO, as `aggrik8s-image
// upload` names it on the storage. The provider creates only the first `cdrom` block of a VM
// (proxmoxtf/resource/vm/vm.go reads cdrom[0]), so the config-iso pair (shared boot ISO + the node's
// config ISO) cannot be expressed: refused with what to change.
std::string boot_iso_file_id(const LoadedSite& site, const Machine& machine, const builder::Profile* profile) {
  if (profile == nullptr || profile->kind != builder::ProfileKind::talos_iso) {
    refuse(machine, "boot: disk needs a talos-iso profile (its per-node ISO becomes the VM's CD-ROM)");
  }
  if (!has_output(*profile, "iso")) {
    refuse(machine, "boot: disk, but profile " + profile->file.filename().string() +
                        " writes no per-node ISO (talos.outputs has no 'iso'); bpg/proxmox attaches one CD-ROM per VM, so "
                        "talos-metal-iso.iso and " + machine.name + "-config.iso cannot both be attached: add 'iso' to "
                        "talos.outputs, or boot the machine with netboot");
  }
  const std::string& iso_storage = site.site.proxmox->iso_storage;
  if (profile->proxmox && profile->proxmox->storage != iso_storage) {
    refuse(machine, "the site's proxmox.iso_storage is '" + iso_storage + "' but profile " +
                        profile->file.filename().string() + " uploads its ISOs to storage '" + profile->proxmox->storage +
                        "' (proxmox.storage): make them the same");
  }
  // Proxmox' built-in `local` storage is a directory on each node (/var/lib/vz): an ISO uploaded to
  // pve1's is not on pve2's, and the VM would fail to start ("volume does not exist"). Other storages
  // may be shared (NFS, CephFS); only Proxmox knows, so only `local` is checked.
  if (iso_storage == "local" && profile->proxmox && profile->proxmox->node != machine.vm->proxmox_node) {
    refuse(machine, "runs on Proxmox node " + machine.vm->proxmox_node + ", but upload puts " + machine.name +
                        ".iso on node " + profile->proxmox->node + "'s storage 'local', which every node has to "
                        "itself: place the VM on " + profile->proxmox->node + ", or use an ISO storage the cluster "
                        "shares (proxmox.iso_storage and the profile's proxmox.storage)");
  }
  return iso_storage + ":iso/" + machine.name + ".iso";
}

// network_device is an "attribute as blocks" (SchemaConfigModeAttr in proxmoxtf/resource/vm/network/
// schema.go): in JSON it is a list of objects in which every attribute must be present, null where unset
// (Terraform's docs, "Attributes as Blocks: In JSON syntax").
Json network_device(const Machine& machine, const VmSizing& vm) {
  Json device;
  device["bridge"] = template_literal(vm.bridge);
  device["disconnected"] = false;
  device["enabled"] = nullptr;  // deprecated: setting it warns; null keeps the default (enabled)
  device["firewall"] = false;
  device["mac_address"] = *machine.mac;
  device["model"] = "virtio";
  device["mtu"] = nullptr;
  device["queues"] = nullptr;
  device["rate_limit"] = nullptr;
  device["trunks"] = nullptr;
  device["vlan_id"] = vm.vlan ? Json(*vm.vlan) : Json(nullptr);
  return Json::array({device});
}

Json vm_resource(const LoadedSite& site, const Machine& machine) {
  if (!machine.vm) refuse(machine, "has no vm: sizing (node, cores, memory, disk, bridge)");
  if (!machine.mac) refuse(machine, "has no mac: the VM's network device and serve's DHCP reservation need it");
  const VmSizing& vm = *machine.vm;
  if (vm.proxmox_node.empty()) refuse(machine, "has no vm.node: the Proxmox VE node the VM runs on");
  const builder::Profile* profile = profile_or_null(site, machine);
  const builder::TalosNode* talos_node = profile ? talos_node_of(*profile, machine.name) : nullptr;

  Json body;
  body["name"] = machine.name;
  body["node_name"] = template_literal(vm.proxmox_node);
  if (vm.vmid) body["vm_id"] = *vm.vmid;
  std::string description = "aggrik8s site " + site.site.name + ": " + to_string(machine.role) + ", boot " +
                            to_string(machine.boot) + ", profile " + (profile ? profile->name : machine.profile.string());
  body["description"] = template_literal(description);
  std::set<std::string> tags{"aggrik8s", to_string(machine.role)};
  if (!site.site.name.empty()) tags.insert(site.site.name);
  body["tags"] = Json(std::vector<std::string>(tags.begin(), tags.end()));  // sorted: Proxmox sorts them
  body["on_boot"] = true;
  body["started"] = true;
  body["operating_system"] = Json{{"type", "l26"}};
  // Talos needs x86-64-v2 at least; the provider's default qemu64 lacks it. `host` as Talos recommends.
  body["cpu"] = Json{{"cores", vm.cores}, {"type", "host"}};
  // floating 0: no balloon device, as Talos recommends.
  body["memory"] = Json{{"dedicated", round_up_to_units(vm.memory, 1ull << 20)}, {"floating", 0}};
  body["scsi_hardware"] = "virtio-scsi-pci";  // "VirtIO SCSI", not "single", as Talos recommends
  std::string datastore = vm.disk_storage.empty() ? site.site.proxmox->disk_storage : vm.disk_storage;
  body["disk"] = Json::array({Json{{"datastore_id", template_literal(datastore)},
                                   {"interface", disk_interface},
                                   {"size", round_up_to_units(vm.disk, 1ull << 30)}}});
  body["network_device"] = network_device(machine, vm);
  if (machine.uuid) body["smbios"] = Json{{"uuid", *machine.uuid}};
  if (machine.boot == BootMethod::disk) {
    // Disk first: once Talos has installed itself the VM boots from scsi0; the CD-ROM only while it is empty.
    body["cdrom"] = Json{{"file_id", template_literal(boot_iso_file_id(site, machine, profile))},
                         {"interface", cdrom_interface}};
    body["boot_order"] = Json::array({disk_interface, cdrom_interface});
  } else {
    // Without a cdrom block the provider attaches the host's physical drive ("cdrom"); "none" leaves it empty.
    body["cdrom"] = Json{{"file_id", "none"}, {"interface", cdrom_interface}};
    body["boot_order"] = Json::array({network_interface, disk_interface});
  }
  if (has_serial_console(talos_node)) {
    body["serial_device"] = Json::array({Json{{"device", "socket"}}});
    body["vga"] = Json{{"type", "serial0"}};
  }
  return body;
}

// The bpg provider's endpoint is the API's base without /api2/json; the profiles' proxmox.api_url
// (where `upload` talks to) gives a default when they all name the same cluster endpoint.
std::optional<std::string> endpoint_default(const LoadedSite& site, const std::vector<const Machine*>& vms) {
  std::set<std::string> endpoints;
  for (const Machine* machine : vms) {
    const builder::Profile* profile = profile_or_null(site, *machine);
    if (profile == nullptr || !profile->proxmox) continue;
    std::string url = profile->proxmox->api_url;
    const std::string api_suffix = "/api2/json";
    if (url.size() >= api_suffix.size() && url.compare(url.size() - api_suffix.size(), api_suffix.size(), api_suffix) == 0) {
      url.erase(url.size() - api_suffix.size());
    }
    if (url.empty() || url.back() != '/') url += '/';
    endpoints.insert(url);
  }
  if (endpoints.size() != 1) return std::nullopt;
  return *endpoints.begin();
}

}  // namespace

std::string terraform_json(const LoadedSite& site) {
  std::vector<const Machine*> vms;
  for (const Machine& machine : site.site.machines) {
    if (machine.platform == Platform::proxmox_vm) vms.push_back(&machine);
  }
  if (!vms.empty() && !site.site.proxmox) {
    throw Error(site.site.file.string() + ": machines with platform proxmox-vm need the site's proxmox: section");
  }

  Json document;
  document["//"] = "Generated by aggrik8s-image export terraform from the site " + site.site.name + " (" +
                   site.site.file.filename().string() + "): change the site and export again rather than editing this file.";
  document["terraform"] = Json{
      {"required_providers",
       Json{{"proxmox", Json{{"source", "bpg/proxmox"}, {"version", bpg_proxmox_version_constraint}}}}}};

  Json endpoint{{"type", "string"},
                {"description", "Proxmox VE API endpoint without /api2/json, e.g. https://pve1.example:8006/"}};
  if (auto url = endpoint_default(site, vms)) endpoint["default"] = *url;
  Json variables;
  variables["proxmox_endpoint"] = endpoint;
  variables["proxmox_api_token"] = Json{
      {"type", "string"},
      {"sensitive", true},
      {"description",
       "Proxmox VE API token as USER@REALM!TOKENID=SECRET; set it with TF_VAR_proxmox_api_token or a .tfvars file "
       "kept out of version control"}};
  variables["proxmox_insecure"] = Json{
      {"type", "bool"},
      {"default", false},
      {"description",
       "Skip TLS verification of the endpoint (a throw-away lab only); rather point SSL_CERT_FILE at the cluster's "
       "pve-root-ca.pem"}};
  document["variable"] = variables;
  document["provider"] = Json{{"proxmox", Json{{"endpoint", "${var.proxmox_endpoint}"},
                                               {"api_token", "${var.proxmox_api_token}"},
                                               {"insecure", "${var.proxmox_insecure}"}}}};
  if (!vms.empty()) {
    Json resources;
    for (const Machine* machine : vms) resources[resource_name(machine->name)] = vm_resource(site, *machine);
    document["resource"] = Json{{vm_resource_type, resources}};
  }
  return document.dump(2) + "\n";
}

}  // namespace aggrik8s::site
