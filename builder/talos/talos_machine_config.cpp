#include "builder/talos/talos_machine_config.hpp"

#include <algorithm>
#include <map>


#include "builder/talos/talos_config_patch.hpp"
#include "core/identifiers.hpp"

namespace aggrik8s::builder {
namespace {

ConfigNode scalar(std::string text, const SourceLocation& where = {}) {
  return ConfigNode{ConfigNode::Kind::scalar, std::move(text), true, {}, {}, where, {}};
}
ConfigNode plain_scalar(std::string text) {
  return ConfigNode{ConfigNode::Kind::scalar, std::move(text), false, {}, {}, {}, {}};
}
ConfigNode empty_map() { return ConfigNode{ConfigNode::Kind::map, {}, false, {}, {}, {}, {}}; }
ConfigNode empty_list() { return ConfigNode{ConfigNode::Kind::sequence, {}, false, {}, {}, {}, {}}; }

const ConfigNode* find_path(const ConfigNode& root, std::initializer_list<const char*> keys) {
  const ConfigNode* node = &root;
  for (const char* key : keys) {
    if (!node->is_map()) return nullptr;
    node = node->find(key);
    if (node == nullptr) return nullptr;
  }
  return node;
}

}  // namespace

std::string TalosMachineConfig::machine_type() const {
  if (documents.empty()) return "";
  const ConfigNode* type = find_path(documents.front(), {"machine", "type"});
  return type != nullptr && type->is_scalar() ? type->scalar : "";
}

std::string TalosMachineConfig::to_yaml() const {
  std::string out;
  for (std::size_t i = 0; i < documents.size(); ++i) {
    if (i > 0) out += "---\n";
    out += aggrik8s::to_yaml(documents[i]);
  }
  return out;
}

std::optional<TalosMachineConfig> parse_talos_machine_config(const std::string& text, const std::string& name,
                                                             Diagnostics& diagnostics) {
  Diagnostics document_diagnostics;
  TalosMachineConfig config{load_yaml_documents(text, name, document_diagnostics)};
  diagnostics.append(document_diagnostics);
  if (document_diagnostics.has_errors()) return std::nullopt;
  if (config.documents.empty()) {
    diagnostics.error({name, 0, 0}, "the machine config is empty");
    return std::nullopt;
  }
  // Talos reads the documents in any order; everything here (patches, checks, the output) takes the
  // v1alpha1 one first. A config with it further down (HostnameConfig first, say) is reordered, the
  // typed documents keeping their order.
  auto is_v1alpha1 = [](const ConfigNode& document) {
    const ConfigNode* version = document.is_map() ? document.find("version") : nullptr;
    return version != nullptr && version->is_scalar() && version->scalar == "v1alpha1" && document.find("kind") == nullptr;
  };
  if (!is_v1alpha1(config.documents.front())) {
    auto found = std::find_if(config.documents.begin(), config.documents.end(), is_v1alpha1);
    if (found != config.documents.end()) std::rotate(config.documents.begin(), found, found + 1);
  }
  return config;
}

void validate_talos_machine_config(const TalosMachineConfig& config, const std::string& node,
                                   bool require_install_disk, Diagnostics& diagnostics) {
  // Before patching, errors point into the config file; after, the tree mixes the file with patches,
  // so errors name the node and the key instead.
  auto where = [&](const ConfigNode& at, const std::string& key) {
    return node.empty() ? at.location : SourceLocation{node + "/" + key, 0, 0};
  };
  if (config.documents.empty()) {
    diagnostics.error({node, 0, 0}, "the machine config is empty");
    return;
  }
  const ConfigNode& root = config.documents.front();
  if (!root.is_map()) {
    diagnostics.error(where(root, "version"), "the first document of a machine config must be a map with 'version: v1alpha1'");
    return;
  }
  const ConfigNode* version = root.find("version");
  if (version == nullptr || !version->is_scalar() || version->scalar != "v1alpha1") {
    diagnostics.error(where(version ? *version : root, "version"),
                      "the first document must have 'version: v1alpha1' (the config `talosctl gen config` writes)");
  }
  const ConfigNode* machine = root.find("machine");
  if (machine == nullptr || !machine->is_map()) {
    diagnostics.error(where(machine ? *machine : root, "machine"), "'machine' must be a map");
  } else {
    const ConfigNode* type = machine->find("type");
    if (type == nullptr || !type->is_scalar() ||
        (type->scalar != "controlplane" && type->scalar != "worker" && type->scalar != "init")) {
      diagnostics.error(where(type ? *type : *machine, "machine.type"),
                        "'machine.type' must be controlplane, worker or init");
    } else if (type->scalar == "init") {
      diagnostics.warning(where(*type, "machine.type"), "'machine.type: init' is deprecated; Talos treats it as controlplane");
    }
    const ConfigNode* install = machine->find("install");
    const ConfigNode* disk = install != nullptr && install->is_map() ? install->find("disk") : nullptr;
    const ConfigNode* selector = install != nullptr && install->is_map() ? install->find("diskSelector") : nullptr;
    bool has_disk = (disk != nullptr && disk->is_scalar() && !disk->scalar.empty()) ||
                    (selector != nullptr && selector->is_map() && !selector->entries.empty());
    if (disk != nullptr && disk->is_scalar() && !disk->scalar.empty() && !disk->scalar.starts_with("/dev/")) {
      diagnostics.error(where(*disk, "machine.install.disk"), "'machine.install.disk' must be a device path such as /dev/sda");
    }
    if (require_install_disk && !has_disk) {
      diagnostics.error(where(install ? *install : *machine, "machine.install.disk"),
                        "no install disk: set 'machine.install.disk' (or diskSelector) in the config, a patch, or the "
                        "node's 'install_disk'");
    }
  }
  const ConfigNode* cluster = root.find("cluster");
  if (cluster == nullptr || !cluster->is_map()) {
    diagnostics.error(where(cluster ? *cluster : root, "cluster"), "'cluster' must be a map");
  } else {
    const ConfigNode* endpoint = find_path(*cluster, {"controlPlane", "endpoint"});
    if (endpoint == nullptr || !endpoint->is_scalar() || !endpoint->scalar.starts_with("https://")) {
      diagnostics.error(where(endpoint ? *endpoint : *cluster, "cluster.controlPlane.endpoint"),
                        "'cluster.controlPlane.endpoint' must be the Kubernetes API URL, https://HOST:6443");
    }
    const ConfigNode* name = cluster->find("clusterName");
    if (name == nullptr || !name->is_scalar() || name->scalar.empty()) {
      diagnostics.error(where(*cluster, "cluster.clusterName"), "'cluster.clusterName' is missing");
    }
  }
  for (std::size_t i = 1; i < config.documents.size(); ++i) {
    const ConfigNode& document = config.documents[i];
    const ConfigNode* kind = document.is_map() ? document.find("kind") : nullptr;
    const ConfigNode* api = document.is_map() ? document.find("apiVersion") : nullptr;
    if (kind == nullptr || api == nullptr) {
      diagnostics.error(where(document, "documents[" + std::to_string(i) + "]"),
                        "document " + std::to_string(i + 1) + " of the machine config needs 'apiVersion' and 'kind'");
    }
    // A node's config (after patches) as Talos checks it: a HostnameConfig beside a v1alpha1 hostname
    // or stable-hostname setting is refused at boot. (The loaded config may have both: the node's own
    // hostname replaces them, see move_hostname_to_its_document.)
    if (!node.empty() && kind != nullptr && kind->is_scalar() && kind->scalar == "HostnameConfig") {
      const ConfigNode* hostname = find_path(root, {"machine", "network", "hostname"});
      const ConfigNode* stable = find_path(root, {"machine", "features", "stableHostname"});
      if ((hostname != nullptr && hostname->is_scalar() && !hostname->scalar.empty()) ||
          (stable != nullptr && stable->is_scalar() && stable->scalar == "true")) {
        diagnostics.error(where(document, "machine.network.hostname"),
                          "a HostnameConfig document and a hostname in the v1alpha1 document "
                          "(machine.network.hostname or machine.features.stableHostname): Talos refuses the config "
                          "(\"hostname is already set in v1alpha1 config\"); keep one");
      }
    }
  }
  // Talos refuses a config holding one kind (and name) twice ("duplicate document: <kind>/<name>",
  // pkg/machinery/config/container): two HostnameConfigs, two LinkConfigs for eth0.
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 1; i < config.documents.size(); ++i) {
    const ConfigNode& document = config.documents[i];
    const ConfigNode* kind = document.is_map() ? document.find("kind") : nullptr;
    if (kind == nullptr || !kind->is_scalar()) continue;
    std::string id = kind->scalar;
    if (const ConfigNode* name = document.find("name"); name != nullptr && name->is_scalar()) id += "/" + name->scalar;
    auto [at, fresh] = seen.emplace(id, i);
    if (!fresh) {
      diagnostics.error(where(document, "documents[" + std::to_string(i) + "]"),
                        "document " + std::to_string(i + 1) + " is a second " + id + " (document " +
                            std::to_string(at->second + 1) + " is the first): Talos refuses the config (\"duplicate "
                            "document: " + id + "\"); keep one");
    }
  }
}

ConfigNode talos_node_identity_patch(const TalosNode& node) {
  ConfigNode network = empty_map();
  network.set("hostname", scalar(node.hostname));
  if (!node.addresses.empty() || !node.gateways.empty()) {
    ConfigNode interface = empty_map();
    ConfigNode selector = empty_map();
    // A MAC picks the VM's NIC exactly; without one, the first physical NIC (a Proxmox VM has one).
    if (node.mac) selector.set("hardwareAddr", scalar(*node.mac));
    else selector.set("physical", plain_scalar("true"));
    interface.set("deviceSelector", std::move(selector));
    if (!node.addresses.empty()) {
      ConfigNode addresses = empty_list();
      for (const auto& a : node.addresses) addresses.items.push_back(scalar(a));
      interface.set("addresses", std::move(addresses));
      interface.set("dhcp", plain_scalar("false"));
    }
    if (!node.gateways.empty()) {
      // A default route per gateway, of its own family (Talos takes IPv6 routes as it takes IPv4 ones).
      ConfigNode routes = empty_list();
      for (const auto& gateway : node.gateways) {
        ConfigNode route = empty_map();
        route.set("network", scalar(ip_address_family(gateway) == 6 ? "::/0" : "0.0.0.0/0"));
        route.set("gateway", scalar(gateway));
        routes.items.push_back(std::move(route));
      }
      interface.set("routes", std::move(routes));
    }
    ConfigNode interfaces = empty_list();
    interfaces.items.push_back(std::move(interface));
    network.set("interfaces", std::move(interfaces));
  }
  ConfigNode machine = empty_map();
  machine.set("network", std::move(network));
  if (node.install_disk) {
    ConfigNode install = empty_map();
    install.set("disk", scalar(*node.install_disk));
    machine.set("install", std::move(install));
  }
  ConfigNode patch = empty_map();
  patch.set("machine", std::move(machine));
  return patch;
}

namespace {

// The map at `key` of `parent`, made (or replacing what is not a map) when needed.
ConfigNode& map_at(ConfigNode& parent, const std::string& key) {
  ConfigNode* child = parent.find(key);
  if (child == nullptr || !child->is_map()) {
    parent.set(key, empty_map());
    child = parent.find(key);
  }
  return *child;
}

bool is_default_route(const ConfigNode& route) {
  const ConfigNode* network = route.is_map() ? route.find("network") : nullptr;
  return network == nullptr || (network->is_scalar() && (network->scalar == "0.0.0.0/0" || network->scalar == "::/0" ||
                                                          network->scalar.empty()));
}

// The node's interface (from talos_node_identity_patch) goes into the entry the config or its patches
// already have for that NIC, rather than replacing machine.network.interfaces: a patch's vip (the
// control plane's shared address), mtu, bond or second NIC stays. The entry is the one whose
// deviceSelector is the node's (hardwareAddr = its MAC, or physical: true without one), else the only
// entry there is (unless it selects another MAC); with neither, the node's is added. Its addresses and dhcp are the node's, its
// default routes the node's gateways (other routes stay).
void merge_node_interface(ConfigNode& document, const ConfigNode& ours, const std::optional<std::string>& mac) {
  ConfigNode& network = map_at(map_at(document, "machine"), "network");
  ConfigNode* interfaces = network.find("interfaces");
  if (interfaces == nullptr || !interfaces->is_sequence()) {
    network.set("interfaces", empty_list());
    interfaces = network.find("interfaces");
  }
  ConfigNode* target = nullptr;
  for (auto& entry : interfaces->items) {
    const ConfigNode* selector = entry.is_map() ? entry.find("deviceSelector") : nullptr;
    if (selector == nullptr || !selector->is_map()) continue;
    const ConfigNode* hardware = selector->find("hardwareAddr");
    const ConfigNode* physical = selector->find("physical");
    bool same = mac ? hardware != nullptr && hardware->is_scalar() && normalize_mac(hardware->scalar) == *mac
                    : hardware == nullptr && physical != nullptr && physical->is_scalar() && physical->scalar == "true";
    if (same) target = &entry;
  }
  // The only entry is the node's link unless it names another card by MAC: a patch describing a second
  // NIC (a storage network's, say) must keep its own settings, and the node's link gets an entry of its own.
  auto names_another_card = [&mac](const ConfigNode& entry) {
    const ConfigNode* selector = entry.find("deviceSelector");
    const ConfigNode* hardware = selector != nullptr && selector->is_map() ? selector->find("hardwareAddr") : nullptr;
    return mac && hardware != nullptr && hardware->is_scalar() && normalize_mac(hardware->scalar) != *mac;
  };
  if (target == nullptr && interfaces->items.size() == 1 && interfaces->items.front().is_map() &&
      !names_another_card(interfaces->items.front())) {
    target = &interfaces->items.front();
  }
  if (target == nullptr) {
    interfaces->items.push_back(ours);
    return;
  }
  for (const auto& entry : ours.entries) {
    if (entry.key == "deviceSelector") continue;
    if (entry.key != "routes") {
      target->set(entry.key, entry.value);
      continue;
    }
    ConfigNode routes = empty_list();
    if (const ConfigNode* existing = target->find("routes"); existing != nullptr && existing->is_sequence()) {
      for (const auto& route : existing->items) {
        if (!is_default_route(route)) routes.items.push_back(route);
      }
    }
    for (const auto& route : entry.value.items) routes.items.push_back(route);
    target->set("routes", std::move(routes));
  }
}

// A typed document's identity, as talosctl matches a patch's documents to a config's: apiVersion, kind
// and, for named documents (LinkConfig, ...), name. nullopt for the v1alpha1 document (no kind).
std::optional<std::string> typed_document_id(const ConfigNode& document) {
  if (!document.is_map()) return std::nullopt;
  const ConfigNode* api = document.find("apiVersion");
  const ConfigNode* kind = document.find("kind");
  if (api == nullptr || kind == nullptr || !api->is_scalar() || !kind->is_scalar()) return std::nullopt;
  std::string id = api->scalar + "/" + kind->scalar;
  if (const ConfigNode* name = document.find("name"); name != nullptr && name->is_scalar()) id += "/" + name->scalar;
  return id;
}

// A merge patch document applied as `talosctl --config-patch` applies it to a multi-document config:
// the v1alpha1 keys to the first document; a typed document to the config's document with the same
// apiVersion, kind and name (RFC 7396), appended when there is none, removed by `$patch: delete`.
void apply_document_patch(TalosMachineConfig& config, const ConfigNode& patch, const SourceLocation& where) {
  auto id = typed_document_id(patch);
  if (!id) {
    config.documents.front() = apply_merge_patch(config.documents.front(), patch);
    return;
  }
  auto target = std::find_if(config.documents.begin() + 1, config.documents.end(),
                             [&](const ConfigNode& document) { return typed_document_id(document) == id; });
  const ConfigNode* directive = patch.find("$patch");
  if (directive != nullptr) {
    if (!directive->is_scalar() || directive->scalar != "delete") {
      throw TalosPatchError(where, "'$patch' in a document patch may only be 'delete'");
    }
    if (target == config.documents.end()) {
      throw TalosPatchError(where, "'$patch: delete' for " + *id + ": the config has no such document");
    }
    config.documents.erase(target);
    return;
  }
  if (target == config.documents.end()) config.documents.push_back(patch);
  else *target = apply_merge_patch(*target, patch);
}

ConfigNode* find_kind(TalosMachineConfig& config, std::string_view kind) {
  for (std::size_t i = 1; i < config.documents.size(); ++i) {
    const ConfigNode* k = config.documents[i].is_map() ? config.documents[i].find("kind") : nullptr;
    if (k != nullptr && k->is_scalar() && k->scalar == kind) return &config.documents[i];
  }
  return nullptr;
}

// Talos 1.12 moved the hostname to a HostnameConfig document (`talosctl gen config` writes one with
// `auto: stable`) and refuses a config that also sets it in the v1alpha1 document ("static hostname is
// already set in v1alpha1 config"), as it refuses one with machine.features.stableHostname beside it.
// Where the config has that document, the node's hostname goes there (`auto: off`, as talosctl's own
// hostname patch for 1.12 writes it) and the v1alpha1 keys go; else it stays machine.network.hostname.
void move_hostname_to_its_document(TalosMachineConfig& config, const std::string& hostname) {
  ConfigNode* document = find_kind(config, "HostnameConfig");
  if (document == nullptr || hostname.empty()) return;
  document->set("auto", scalar("off"));
  document->set("hostname", scalar(hostname));
  ConfigNode& machine = map_at(config.documents.front(), "machine");
  map_at(machine, "network").erase("hostname");
  if (ConfigNode* features = machine.find("features"); features != nullptr && features->is_map()) {
    features->erase("stableHostname");
  }
}

// The hostname a node's patches set: machine.network.hostname or a HostnameConfig's hostname that the
// patched config has and the base (talosctl gen config's) did not have with that value.
std::optional<std::string> patched_hostname(const TalosMachineConfig& base, const TalosMachineConfig& patched) {
  auto v1alpha1 = [](const TalosMachineConfig& config) -> std::optional<std::string> {
    const ConfigNode& document = config.documents.front();
    const ConfigNode* machine = document.is_map() ? document.find("machine") : nullptr;
    const ConfigNode* network = machine != nullptr && machine->is_map() ? machine->find("network") : nullptr;
    const ConfigNode* hostname = network != nullptr && network->is_map() ? network->find("hostname") : nullptr;
    if (hostname == nullptr || !hostname->is_scalar() || hostname->scalar.empty()) return std::nullopt;
    return hostname->scalar;
  };
  auto typed = [](const TalosMachineConfig& config) -> std::optional<std::string> {
    for (std::size_t i = 1; i < config.documents.size(); ++i) {
      const ConfigNode& document = config.documents[i];
      const ConfigNode* kind = document.is_map() ? document.find("kind") : nullptr;
      if (kind == nullptr || !kind->is_scalar() || kind->scalar != "HostnameConfig") continue;
      const ConfigNode* hostname = document.find("hostname");
      if (hostname != nullptr && hostname->is_scalar() && !hostname->scalar.empty()) return hostname->scalar;
    }
    return std::nullopt;
  };
  if (auto now = typed(patched); now && now != typed(base)) return now;
  if (auto now = v1alpha1(patched); now && now != v1alpha1(base)) return now;
  return std::nullopt;
}

// The same for DNS servers: a config with a ResolverConfig document (Talos 1.12's way) gets the
// v1alpha1 machine.network.nameservers (a site network's dns, a patch's) there as its nameservers,
// rather than in both places.
void move_nameservers_to_their_document(TalosMachineConfig& config) {
  ConfigNode* document = find_kind(config, "ResolverConfig");
  ConfigNode& network = map_at(map_at(config.documents.front(), "machine"), "network");
  const ConfigNode* nameservers = network.find("nameservers");
  if (document == nullptr || nameservers == nullptr || !nameservers->is_sequence() || nameservers->items.empty()) return;
  ConfigNode list = empty_list();
  for (const auto& address : nameservers->items) {
    ConfigNode entry = empty_map();
    entry.set("address", address);
    list.items.push_back(std::move(entry));
  }
  document->set("nameservers", std::move(list));
  network.erase("nameservers");
}

}  // namespace

std::optional<TalosMachineConfig> talos_config_for_node(const TalosMachineConfig& base, const TalosNode& node,
                                                        Diagnostics& diagnostics) {
  TalosMachineConfig config = base;
  std::string type_before = config.machine_type();
  bool ok = true;
  for (const TalosPatch& patch : node.patches) {
    try {
      if (patch.kind == TalosPatch::Kind::merge) {
        apply_document_patch(config, patch.content, patch.where);
      } else {
        apply_json_patch(config.documents.front(), patch.content);
      }
    } catch (const TalosPatchError& e) {
      diagnostics.error(e.where(), "node " + node.name + ": " + e.what());
      ok = false;
    }
  }
  if (!ok) return std::nullopt;
  if (config.machine_type() != type_before) {
    diagnostics.error({node.name + "/machine.type", 0, 0},
                      "patches change machine.type from '" + type_before + "' to '" + config.machine_type() +
                          "': a config of the other type comes from `talosctl gen config` (set the node's 'config')");
    return std::nullopt;
  }
  // A hostname the node's patches set (machine.network.hostname, or a HostnameConfig's) is kept when
  // the node has no hostname of its own: the default (its name) must not undo a patch silently.
  TalosNode effective = node;
  if (!node.hostname_given) {
    if (auto patched = patched_hostname(base, config)) effective.hostname = *patched;
  }
  ConfigNode identity = talos_node_identity_patch(effective);
  ConfigNode& identity_network = map_at(map_at(identity, "machine"), "network");
  if (const ConfigNode* interfaces = identity_network.find("interfaces"); interfaces != nullptr && !interfaces->items.empty()) {
    merge_node_interface(config.documents.front(), interfaces->items.front(), node.mac);
    identity_network.erase("interfaces");
  }
  config.documents.front() = apply_merge_patch(config.documents.front(), identity);
  move_hostname_to_its_document(config, effective.hostname);
  move_nameservers_to_their_document(config);
  Diagnostics checks;
  validate_talos_machine_config(config, node.name, true, checks);
  diagnostics.append(checks);
  if (checks.has_errors()) return std::nullopt;
  return config;
}

}  // namespace aggrik8s::builder
