#include "site/site_inventory.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <map>
#include <set>

#include "builder/proxmox_identifiers.hpp"
#include "core/config_reader.hpp"
#include "core/identifiers.hpp"
#include "core/path_check.hpp"

namespace aggrik8s::site {
namespace fs = std::filesystem;

const char* to_string(Platform platform) {
  switch (platform) {
    case Platform::rpi5: return "rpi5";
    case Platform::proxmox_vm: return "proxmox-vm";
  }
  return "?";
}

const char* to_string(BootMethod boot) {
  switch (boot) {
    case BootMethod::disk: return "disk";
    case BootMethod::netboot: return "netboot";
    case BootMethod::ephemeral: return "ephemeral";
  }
  return "?";
}

const char* to_string(Role role) {
  switch (role) {
    case Role::server: return "server";
    case Role::agent: return "agent";
    case Role::controlplane: return "controlplane";
    case Role::worker: return "worker";
  }
  return "?";
}

bool is_control_plane(Role role) { return role == Role::server || role == Role::controlplane; }

bool is_credential_name(std::string_view key) {
  for (const char* word : {"token", "secret", "password", "passwd"}) {
    if (key.find(word) != std::string_view::npos) return true;
  }
  return false;
}

namespace {

// A Jinja expression ("{{ ... }}", blanks around it allowed): Ansible resolves it when a play runs.
bool is_jinja_reference(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text.size() > 4 && text.starts_with("{{") && text.ends_with("}}");
}

// Address bytes in network order (4 or 16), or nullopt.
std::optional<std::vector<std::uint8_t>> parse_address(std::string_view text) {
  std::string s(text);
  std::uint8_t buffer[16];
  if (inet_pton(AF_INET, s.c_str(), buffer) == 1) return std::vector<std::uint8_t>(buffer, buffer + 4);
  if (inet_pton(AF_INET6, s.c_str(), buffer) == 1) return std::vector<std::uint8_t>(buffer, buffer + 16);
  return std::nullopt;
}

std::string format_address(const std::vector<std::uint8_t>& bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(bytes.size() == 4 ? AF_INET : AF_INET6, bytes.data(), text, sizeof text);
  return text;
}

// "10.0.10.11/24" -> address bytes and prefix; nullopt unless both parts are valid for the family.
std::optional<std::pair<std::vector<std::uint8_t>, int>> parse_cidr(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto address = parse_address(text.substr(0, slash));
  std::string_view digits = text.substr(slash + 1);
  if (!address || digits.empty() || digits.size() > 3 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  int prefix = std::stoi(std::string(digits));
  if (prefix > static_cast<int>(address->size() * 8)) return std::nullopt;
  return std::make_pair(*address, prefix);
}

// fe80::/10, an IPv6 address valid on one link only.
bool is_ipv6_link_local(const std::vector<std::uint8_t>& address) {
  return address.size() == 16 && address[0] == 0xfe && (address[1] & 0xc0) == 0x80;
}

bool compare_less_equal(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  return !std::lexicographical_compare(b.begin(), b.end(), a.begin(), a.end());
}

bool is_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// ---- building the profile's nodes: ConfigNode values located in the site file ----

ConfigNode string_sequence(const std::vector<std::string>& values, const SourceLocation& where) {
  ConfigNode node = sequence_node(where);
  for (const auto& v : values) node.items.push_back(scalar_node(v, where));
  return node;
}

const ConfigNode* find_path(const ConfigNode& tree, std::initializer_list<std::string_view> keys) {
  const ConfigNode* node = &tree;
  for (auto key : keys) {
    if (!node->is_map()) return nullptr;
    node = node->find(key);
    if (node == nullptr) return nullptr;
  }
  return node;
}

// The strings of a list in the profile (rke2.config.node-label), or a lone string, or none.
std::vector<std::string> profile_strings(const ConfigNode& tree, std::initializer_list<std::string_view> keys) {
  std::vector<std::string> out;
  const ConfigNode* node = find_path(tree, keys);
  if (node == nullptr) return out;
  if (node->is_scalar()) out.push_back(node->scalar);
  for (const auto& item : node->items) {
    if (item.is_scalar()) out.push_back(item.scalar);
  }
  return out;
}

namespace {

bool is_alphanumeric(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// Kubernetes' label name and value syntax (apimachinery validation: IsQualifiedName, IsValidLabelValue):
// 1-63 (a value: 0-63) of letters, digits, '-', '_', '.', beginning and ending with a letter or digit.
bool is_label_name(std::string_view name, bool empty_allowed) {
  if (name.empty()) return empty_allowed;
  if (name.size() > 63 || !is_alphanumeric(name.front()) || !is_alphanumeric(name.back())) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return is_alphanumeric(c) || c == '-' || c == '_' || c == '.'; });
}

// A lowercase DNS subdomain (RFC 1123): the prefix of a label key, at most 253 characters.
bool is_dns_subdomain(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    if (!is_dns_label(name.substr(start, dot - start))) return false;
    start = dot + 1;
  }
  return true;
}

// Why `key` cannot be a node label or taint key, or "" when it can: [prefix/]name, and in the
// kubernetes.io and k8s.io namespaces only what the kubelet lets a node set on itself (it refuses to
// start with any other: --node-labels, KubeletLabels and KubeletLabelNamespaces).
std::string label_key_problem(std::string_view key) {
  std::size_t slash = key.find('/');
  std::string_view prefix = slash == std::string_view::npos ? std::string_view() : key.substr(0, slash);
  std::string_view name = slash == std::string_view::npos ? key : key.substr(slash + 1);
  if (slash != std::string_view::npos && !is_dns_subdomain(prefix)) {
    return "its prefix '" + std::string(prefix) + "' is not a lowercase DNS subdomain (at most 253 characters)";
  }
  if (!is_label_name(name, false)) {
    return "its name must be 1-63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit";
  }
  auto in_namespace = [&](std::string_view ns) { return prefix == ns || prefix.ends_with("." + std::string(ns)); };
  if (in_namespace("kubernetes.io") || in_namespace("k8s.io")) {
    static const char* const allowed[] = {
        "kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch", "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone", "topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region"};
    bool known = std::any_of(std::begin(allowed), std::end(allowed), [&](const char* a) { return key == a; });
    bool kubelet_namespace = in_namespace("kubelet.kubernetes.io") || in_namespace("node.kubernetes.io");
    if (!known && !kubelet_namespace) {
      return "the kubelet sets no label of its own in the kubernetes.io and k8s.io namespaces but the well-known "
             "ones (kubernetes.io/arch, topology.kubernetes.io/zone, ...) and those under node.kubernetes.io/ or "
             "kubelet.kubernetes.io/, and refuses to start with another";
    }
  }
  return "";
}

}  // namespace

SourceLocation field_location(const Machine& machine, const std::string& field) {
  auto it = machine.field_locations.find(field);
  return it != machine.field_locations.end() ? it->second : machine.where;
}

std::string host_address(const Machine& machine) { return machine.address.substr(0, machine.address.find('/')); }

const SiteNetwork* network_of(const SiteInventory& site, const Machine& machine) {
  for (const auto& n : site.networks) {
    if (n.name == machine.network) return &n;
  }
  return nullptr;
}

// The site's first server machine: it starts the RKE2 cluster the others join.
const Machine* first_server(const SiteInventory& site) {
  for (const auto& m : site.machines) {
    if (m.role == Role::server) return &m;
  }
  return nullptr;
}

// The RKE2 supervisor URL of a server, what agents and joining servers name when their profile does not.
std::string supervisor_url(const Machine& server) {
  std::string host = host_address(server);
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "https://" + host + ":9345";
}

ConfigNode rpi_node(const SiteInventory& site, const Machine& machine, const ConfigNode& profile_tree) {
  const SourceLocation& where = machine.where;
  ConfigNode node = map_node(where);
  node.set("name", scalar_node(machine.name, field_location(machine, "name")));
  // The machine's name is its host name and Kubernetes node name (docs/site.md), whatever the profile
  // gives all its nodes: a profile-wide system.hostname or rke2.config.node-name named every machine of
  // the profile the same, and RKE2 refuses a second node of one name.
  ConfigNode system = map_node(field_location(machine, "name"));
  system.set("hostname", scalar_node(machine.name, field_location(machine, "name")));
  node.set("system", std::move(system));

  ConfigNode network = map_node(field_location(machine, "address"));
  network.set("mode", scalar_node("static", field_location(machine, "address")));
  network.set("address", scalar_node(machine.address, field_location(machine, "address")));
  if (const SiteNetwork* n = network_of(site, machine)) {
    if (n->gateway) network.set("gateway", scalar_node(*n->gateway, n->where));
    if (!n->dns.empty()) network.set("dns", string_sequence(n->dns, n->where));
  }
  node.set("network", std::move(network));

  ConfigNode rke2 = map_node(field_location(machine, "role"));
  rke2.set("role", scalar_node(to_string(machine.role), field_location(machine, "role")));
  // Who the node joins: the profile's rke2.server when it names one, else the site's first server;
  // the first server itself starts the cluster.
  // `server: null` (an extending profile removing its base's) names none either.
  const ConfigNode* named_server = find_path(profile_tree, {"rke2", "server"});
  bool profile_names_server = named_server != nullptr && !named_server->is_null();
  const Machine* first = first_server(site);
  if (!profile_names_server && first != nullptr && first != &machine) {
    rke2.set("server", scalar_node(supervisor_url(*first), field_location(machine, "role")));
  }
  // Labels and taints add to the profile's (rke2.config node-label / node-taint); merging would replace.
  ConfigNode config = map_node(field_location(machine, "role"));
  config.set("node-name", scalar_node(machine.name, field_location(machine, "name")));
  if (!machine.labels.empty()) {
    std::vector<std::string> labels = profile_strings(profile_tree, {"rke2", "config", "node-label"});
    // The machine's value of a key replaces the profile's (as a Talos node's does): two values of one
    // key would reach the kubelet and the inventory.
    std::erase_if(labels, [&](const std::string& label) {
      return machine.labels.contains(label.substr(0, label.find('=')));
    });
    for (const auto& [k, v] : machine.labels) labels.push_back(k + "=" + v);
    config.set("node-label", string_sequence(labels, field_location(machine, "labels")));
  }
  if (!machine.taints.empty()) {
    std::vector<std::string> taints = profile_strings(profile_tree, {"rke2", "config", "node-taint"});
    for (const auto& t : machine.taints) taints.push_back(t);
    config.set("node-taint", string_sequence(taints, field_location(machine, "taints")));
  }
  if (!config.entries.empty()) rke2.set("config", std::move(config));
  node.set("rke2", std::move(rke2));
  return node;
}

ConfigNode talos_node(const SiteInventory& site, const Machine& machine) {
  const SourceLocation& where = machine.where;
  ConfigNode node = map_node(where);
  node.set("name", scalar_node(machine.name, field_location(machine, "name")));
  // Its host name too, over one a profile-wide patch gives every node (as for Pi nodes, rpi_node).
  node.set("hostname", scalar_node(machine.name, field_location(machine, "name")));
  if (machine.mac) node.set("mac", scalar_node(*machine.mac, field_location(machine, "mac")));
  if (machine.uuid) node.set("uuid", scalar_node(*machine.uuid, field_location(machine, "uuid")));
  node.set("addresses", string_sequence({machine.address}, field_location(machine, "address")));
  if (const SiteNetwork* n = network_of(site, machine); n != nullptr && n->gateway) {
    node.set("gateway", scalar_node(*n->gateway, n->where));
  }
  if (machine.vm) node.set("install_disk", scalar_node(machine.vm->install_disk, field_location(machine, "vm")));
  const SiteNetwork* network = network_of(site, machine);
  bool with_dns = network != nullptr && !network->dns.empty();
  if (!machine.labels.empty() || !machine.taints.empty() || with_dns) {
    // Talos's machine.nodeLabels / machine.nodeTaints (a map of key -> "value:Effect"), and the
    // network's DNS servers as machine.network.nameservers: with a static address there is no DHCP to
    // give them, and Talos falls back to public resolvers an air-gapped site cannot reach (Pi nodes get
    // the network's dns the same way, through their network settings).
    ConfigNode machine_section = map_node(where);
    if (with_dns) {
      ConfigNode network_section = map_node(network->where);
      network_section.set("nameservers", string_sequence(network->dns, network->where));
      machine_section.set("network", std::move(network_section));
    }
    if (!machine.labels.empty()) {
      ConfigNode labels = map_node(field_location(machine, "labels"));
      for (const auto& [k, v] : machine.labels) labels.set(k, scalar_node(v, field_location(machine, "labels")));
      machine_section.set("nodeLabels", std::move(labels));
    }
    if (!machine.taints.empty()) {
      ConfigNode taints = map_node(field_location(machine, "taints"));
      for (const auto& t : machine.taints) {
        // key=value:Effect -> key: value:Effect; key:Effect -> key: :Effect (Talos's form for no value)
        auto eq = t.find('=');
        auto colon = t.rfind(':');
        std::string key = t.substr(0, eq != std::string::npos ? eq : colon);
        std::string value = eq != std::string::npos ? t.substr(eq + 1) : t.substr(colon);
        taints.set(key, scalar_node(value, field_location(machine, "taints")));
      }
      machine_section.set("nodeTaints", std::move(taints));
    }
    ConfigNode content = map_node(where);
    content.set("machine", std::move(machine_section));
    ConfigNode patch = map_node(where);
    patch.set("merge", std::move(content));
    ConfigNode patches = sequence_node(where);
    patches.items.push_back(std::move(patch));
    node.set("patches", std::move(patches));
  }
  return node;
}

// ---- reading ----

void read_networks(ConfigMapReader& top, SiteInventory& site, Diagnostics& diagnostics) {
  auto networks = top.map("networks", true);
  if (!networks) return;
  const ConfigNode* tree = top.node("networks");
  for (const auto& entry : tree->entries) {
    networks->ignore(entry.key);
    std::string path = "networks." + entry.key;
    ConfigMapReader reader(entry.value, diagnostics, path);
    if (!reader.valid()) {
      diagnostics.error(entry.value.location, "'" + path + "' must be a map with 'subnet'");
      continue;
    }
    SiteNetwork network;
    network.name = entry.key;
    network.where = entry.key_location;
    if (auto subnet = reader.string("subnet", true)) {
      auto parsed = parse_cidr(*subnet);
      if (!parsed) {
        reader.error_at("subnet", "'" + path + ".subnet' must be a network in CIDR form such as 10.0.10.0/24 or "
                                  "fd00:10::/64, got '" + *subnet + "'");
      } else {
        network.subnet.bytes = parsed->first;
        network.subnet.prefix_length = parsed->second;
        // Host bits are cleared so membership is a prefix comparison.
        for (std::size_t bit = static_cast<std::size_t>(parsed->second); bit < network.subnet.bytes.size() * 8; ++bit) {
          network.subnet.bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
        }
        network.subnet.text = format_address(network.subnet.bytes) + "/" + std::to_string(parsed->second);
      }
    }
    network.gateway = reader.string("gateway");
    if (network.gateway) {
      auto gateway = parse_address(*network.gateway);
      // An IPv6 router is usually reached at its link-local address (what its Router Advertisements
      // name, RFC 4861 4.2), which is on-link on every interface and in no global subnet.
      bool link_local_router = gateway && network.subnet.bytes.size() == 16 && is_ipv6_link_local(*gateway);
      if (!gateway) {
        reader.error_at("gateway", "'" + path + ".gateway' must be an IPv4 or IPv6 address, got '" + *network.gateway + "'");
      } else if (!network.subnet.bytes.empty() && !network.subnet.contains(*gateway) && !link_local_router) {
        reader.error_at("gateway", "'" + path + ".gateway' " + *network.gateway + " is outside the subnet " +
                                       network.subnet.text);
      } else if (*gateway == network.subnet.bytes && gateway->size() == 4 && network.subnet.prefix_length < 31) {
        reader.error_at("gateway", "'" + path + ".gateway' " + *network.gateway + " is the network address of " +
                                       network.subnet.text + ", not a host");
      }
    }
    network.dns = reader.string_list("dns").value_or(std::vector<std::string>{});
    for (const auto& d : network.dns) {
      if (!parse_address(d)) reader.error_at("dns", "'" + path + ".dns' entries must be addresses, got '" + d + "'");
    }
    if (auto pool = reader.string("dhcp_pool")) {
      auto dash = pool->find('-');
      std::optional<std::vector<std::uint8_t>> first, last;
      if (dash != std::string::npos) {
        first = parse_address(pool->substr(0, dash));
        last = parse_address(pool->substr(dash + 1));
      }
      if (!first || !last || first->size() != last->size() || !compare_less_equal(*first, *last)) {
        reader.error_at("dhcp_pool", "'" + path + ".dhcp_pool' must be a range FIRST-LAST such as 10.0.10.100-10.0.10.199, "
                                     "got '" + *pool + "'");
      } else if (!network.subnet.bytes.empty() && (!network.subnet.contains(*first) || !network.subnet.contains(*last))) {
        reader.error_at("dhcp_pool", "'" + path + ".dhcp_pool' " + *pool + " is not inside the subnet " + network.subnet.text);
      } else {
        network.dhcp_pool = IpRange{*pool, *first, *last};
      }
    }
    reader.finish();
    site.networks.push_back(std::move(network));
  }
  networks->finish();
}

void read_machine(const ConfigNode& item, const std::string& path, SiteInventory& site, Diagnostics& diagnostics) {
  ConfigMapReader reader(item, diagnostics, path);
  if (!reader.valid()) {
    diagnostics.error(item.location, "'" + path + "' must be a map with at least 'name', 'platform', 'address', 'role', "
                                     "'profile'");
    return;
  }
  Machine m;
  m.where = item.location;
  for (const auto& entry : item.entries) m.field_locations[entry.key] = entry.value.location;
  m.name = reader.string("name", true).value_or("");
  if (!m.name.empty() && !is_dns_label(m.name)) {
    reader.error_at("name", "'" + path + ".name' must be a lowercase DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-'): it is the host name and "
                            "the Kubernetes node name, got '" + m.name + "'");
  }
  // Ansible's implicit groups: a host of that name shadows the group (rke2-ansible's `hosts: all` then
  // runs on that one host).
  if (m.name == "all" || m.name == "ungrouped") {
    reader.error_at("name", "'" + path + ".name' '" + m.name + "' is one of Ansible's own group names (all, ungrouped): "
                            "the exported inventory's plays would run on that one host; name the machine otherwise");
  }
  std::string where_name = m.name.empty() ? path : "machine '" + m.name + "'";
  if (auto platform = reader.one_of("platform", {"rpi5", "proxmox-vm"}, true)) {
    m.platform = *platform == "rpi5" ? Platform::rpi5 : Platform::proxmox_vm;
  }
  if (auto serial = reader.string("serial")) {
    if ((serial->size() != 8 && serial->size() != 16) || !is_hex(*serial)) {
      reader.error_at("serial", "'" + path + ".serial' must be the Pi's serial number, 8 or 16 hex digits (as in "
                                "/proc/cpuinfo or the bootloader's TFTP directory), got '" + *serial + "'");
    } else {
      m.serial = lowercase(*serial);
    }
  }
  if (auto mac = reader.string("mac")) {
    m.mac = normalize_mac(*mac);
    if (!m.mac) {
      reader.error_at("mac", "'" + path + ".mac' must be a MAC address like bc:24:11:00:20:11, got '" + *mac + "'");
    } else if (std::stoi(m.mac->substr(0, 2), nullptr, 16) & 1) {
      // The group bit: a multicast address, which no network card has (Proxmox refuses it for a NIC).
      reader.error_at("mac", "'" + path + ".mac' " + *m.mac + " is a multicast address (the lowest bit of its first byte "
                                          "is set); a network card's MAC is unicast, like bc:24:11:00:20:11");
    }
  }
  if (auto uuid = reader.string("uuid")) {
    m.uuid = normalize_uuid(*uuid);
    if (!m.uuid) reader.error_at("uuid", "'" + path + ".uuid' must be an SMBIOS UUID (8-4-4-4-12 hex), got '" + *uuid + "'");
  }
  if (auto address = reader.string("address", true)) {
    auto parsed = parse_cidr(*address);
    if (!parsed) {
      reader.error_at("address", "'" + path + ".address' must be the machine's address with its prefix length, such as "
                                 "10.0.10.11/24 or fd00:10::11/64, got '" + *address + "'");
    } else {
      m.address = *address;
      m.address_bytes = parsed->first;
      m.prefix_length = parsed->second;
    }
  }
  auto role = reader.one_of("role", {"server", "agent", "controlplane", "worker"}, true);
  if (role) {
    m.role = *role == "server" ? Role::server : *role == "agent" ? Role::agent
           : *role == "controlplane" ? Role::controlplane : Role::worker;
  }
  if (auto profile = reader.path_value("profile", true)) m.profile = fs::absolute(*profile).lexically_normal();
  if (auto boot = reader.one_of("boot", {"disk", "netboot", "ephemeral"})) {
    m.boot = *boot == "disk" ? BootMethod::disk : *boot == "netboot" ? BootMethod::netboot : BootMethod::ephemeral;
  }
  if (const ConfigNode* labels = reader.node("labels")) {
    if (!labels->is_map()) {
      diagnostics.error(labels->location, "'" + path + ".labels' must be a map of label: value");
    } else {
      for (const auto& entry : labels->entries) {
        if (std::string problem = label_key_problem(entry.key); !problem.empty()) {
          diagnostics.error(entry.key_location, "'" + path + ".labels' key '" + entry.key + "' is not a node label key: " + problem);
        } else if (!entry.value.is_scalar()) {
          diagnostics.error(entry.value.location, "'" + path + ".labels." + entry.key + "' must be a string");
        } else if (!is_label_name(entry.value.scalar, true)) {
          diagnostics.error(entry.value.location, "'" + path + ".labels." + entry.key + "' is '" + entry.value.scalar +
                                                      "': a label value is 0-63 letters, digits, '-', '_' or '.', beginning "
                                                      "and ending with a letter or digit");
        } else {
          m.labels[entry.key] = entry.value.scalar;
        }
      }
    }
  }
  if (auto taints = reader.string_list("taints")) {
    for (const auto& t : *taints) {
      // key=value:Effect or key:Effect, Effect one of Kubernetes's three.
      auto colon = t.rfind(':');
      std::string effect = colon == std::string::npos ? "" : t.substr(colon + 1);
      if (colon == std::string::npos || colon == 0 || t[0] == '=' ||
          (effect != "NoSchedule" && effect != "PreferNoSchedule" && effect != "NoExecute")) {
        reader.error_at("taints", "'" + path + ".taints' entries must be key=value:Effect or key:Effect with Effect "
                                  "NoSchedule, PreferNoSchedule or NoExecute, got '" + t + "'");
        continue;
      }
      std::string key_value = t.substr(0, colon);
      std::size_t equals = key_value.find('=');
      std::string key = key_value.substr(0, equals);
      std::string value = equals == std::string::npos ? "" : key_value.substr(equals + 1);
      if (std::string problem = label_key_problem(key); !problem.empty()) {
        reader.error_at("taints", "'" + path + ".taints' entry '" + t + "': '" + key + "' is not a taint key: " + problem);
      } else if (!is_label_name(value, true)) {
        reader.error_at("taints", "'" + path + ".taints' entry '" + t + "': the value '" + value +
                                  "' must be 0-63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit");
      } else {
        m.taints.push_back(t);
      }
    }
  }
  if (auto vm = reader.map("vm")) {
    VmSizing sizing;
    if (site.proxmox) sizing.disk_storage = site.proxmox->disk_storage;
    sizing.proxmox_node = vm->string("node", true).value_or("");
    if (auto id = vm->integer("vmid", 100, 999999999)) sizing.vmid = static_cast<std::uint32_t>(*id);
    if (auto cores = vm->integer("cores", 1, 512)) sizing.cores = static_cast<std::uint32_t>(*cores);
    if (auto memory = vm->byte_size("memory")) sizing.memory = *memory;
    if (auto disk = vm->byte_size("disk")) sizing.disk = *disk;
    if (auto bridge = vm->string("bridge")) {
      sizing.bridge = *bridge;
      // A Linux interface name, as Proxmox takes a bridge: 1-15 of letters, digits, '-', '_', '.'.
      bool name = !bridge->empty() && bridge->size() <= 15 && *bridge != "." && *bridge != ".." &&
                  std::all_of(bridge->begin(), bridge->end(),
                              [](char c) { return is_alphanumeric(c) || c == '-' || c == '_' || c == '.'; });
      if (!name) {
        vm->error_at("bridge", "'" + path + ".vm.bridge' must be a bridge's interface name such as vmbr0 (1-15 letters, "
                               "digits, '-', '_', '.'), got '" + *bridge + "'");
      }
    }
    if (auto vlan = vm->integer("vlan", 1, 4094)) sizing.vlan = static_cast<std::uint32_t>(*vlan);
    if (auto storage = vm->string("storage")) {
      sizing.disk_storage = *storage;
      if (!builder::is_proxmox_storage_id(*storage)) {
        vm->error_at("storage", "'" + path + ".vm.storage' must be a Proxmox storage ID such as local-lvm (a letter, then "
                                "letters, digits, '-', '_', '.'), got '" + *storage + "'");
      }
    }
    if (auto disk = vm->string("install_disk")) {
      if (!disk->starts_with("/dev/")) {
        vm->error_at("install_disk", "'" + path + ".vm.install_disk' must be a device path such as /dev/sda");
      } else if (*disk != "/dev/sda" && !disk->starts_with("/dev/disk/")) {
        // export terraform gives the VM one disk, scsi0 on virtio-scsi: the guest's /dev/sda. Another
        // name is right only for a VM made otherwise, so a warning, not an error.
        diagnostics.warning(vm->node("install_disk")->location,
                            "'" + path + ".vm.install_disk' is " + *disk + ", but the VM `export terraform` writes "
                            "has one disk, scsi0, which the guest sees as /dev/sda: Talos would not find " + *disk);
      }
      sizing.install_disk = *disk;
    }
    if (sizing.memory < (1ull << 30)) {
      vm->error_at("memory", "'" + path + ".vm.memory' must be at least 1GiB (Talos needs 2GiB for a control plane)");
    }
    if (sizing.disk < (1ull << 30) || sizing.disk % (1ull << 30) != 0) {
      vm->error_at("disk", "'" + path + ".vm.disk' must be a whole number of GiB, at least 1GiB (Proxmox sizes disks in GiB)");
    }
    vm->finish();
    m.vm = sizing;
  }

  // What each platform needs, and what it cannot have.
  if (m.platform == Platform::rpi5) {
    if (m.uuid) reader.error_at("uuid", "'" + path + ".uuid': a Raspberry Pi has no SMBIOS UUID; it is known by 'serial'");
    if (m.vm) reader.error_at("vm", "'" + path + ".vm' is for proxmox-vm machines, not rpi5");
    if (!m.serial && !reader.has("serial") && m.boot != BootMethod::disk) {
      reader.error(where_name + " boots from the network (boot: " + to_string(m.boot) +
                   ") and needs 'serial': serve recognises a Pi 5 by its serial number");
    }
  } else if (role) {
    if (m.serial) reader.error_at("serial", "'" + path + ".serial' is for rpi5 machines; a VM is known by 'mac' and 'uuid'");
    // A malformed mac: was already reported at its value.
    if (!m.mac && !reader.has("mac")) {
      reader.error(where_name + " is a proxmox-vm and needs 'mac' (its network device's MAC, which serve matches)");
    }
    if (!m.vm) reader.error(where_name + " is a proxmox-vm and needs 'vm' (node, cores, memory, disk, bridge)");
  }
  reader.finish();
  site.machines.push_back(std::move(m));
}

}  // namespace

std::string supervisor_url_host(std::string_view url) {
  std::string_view rest = url;
  if (auto scheme = rest.find("://"); scheme != std::string_view::npos) rest = rest.substr(scheme + 3);
  if (!rest.empty() && rest.front() == '[') return std::string(rest.substr(1, rest.find(']') - 1));
  return std::string(rest.substr(0, rest.find_first_of(":/")));
}

bool IpNetwork::contains(const std::vector<std::uint8_t>& address) const {
  if (address.size() != bytes.size()) return false;
  for (int bit = 0; bit < prefix_length; ++bit) {
    std::uint8_t mask = static_cast<std::uint8_t>(0x80u >> (bit % 8));
    if ((address[static_cast<std::size_t>(bit / 8)] & mask) != (bytes[static_cast<std::size_t>(bit / 8)] & mask)) return false;
  }
  return true;
}

bool IpRange::contains(const std::vector<std::uint8_t>& address) const {
  return address.size() == first.size() && compare_less_equal(first, address) && compare_less_equal(address, last);
}

const Machine* SiteInventory::find(std::string_view wanted) const {
  for (const auto& m : machines) {
    if (m.name == wanted) return &m;
  }
  return nullptr;
}

std::vector<fs::path> SiteInventory::profile_files() const {
  std::vector<fs::path> out;
  for (const auto& m : machines) {
    if (!m.profile.empty() && std::find(out.begin(), out.end(), m.profile) == out.end()) out.push_back(m.profile);
  }
  return out;
}

std::vector<const Machine*> SiteInventory::machines_of(const fs::path& profile) const {
  std::vector<const Machine*> out;
  for (const auto& m : machines) {
    if (m.profile == profile) out.push_back(&m);
  }
  return out;
}

SiteInventory parse_site_inventory(const ConfigNode& tree, Diagnostics& diagnostics) {
  SiteInventory site;
  site.file = tree.location.file;
  if (!tree.is_map()) {
    diagnostics.error(tree.location, std::string("a site inventory must be a map with 'kind: site', got ") + tree.kind_name());
    return site;
  }
  ConfigMapReader top(tree, diagnostics, "");
  top.one_of("kind", {"site"}, true);
  site.name = top.string("name", true).value_or("");
  if (!site.name.empty() && !is_dns_label(site.name)) {
    top.error_at("name", "'name' must be a lowercase DNS label (1-63 of a-z, 0-9, '-'; it names the output directory), got '" + site.name + "'");
  }
  site.description = top.string("description").value_or("");
  // Beside the site file by default, so build, serve and status find the outputs wherever they run.
  site.output = top.path_value("output").value_or(tree.base_directory() / "out" / site.name);
  if (auto proxmox = top.map("proxmox")) {
    ProxmoxCluster cluster;
    cluster.where = proxmox->location();
    cluster.nodes = proxmox->string_list("nodes", true).value_or(std::vector<std::string>{});
    for (const char* key : {"iso_storage", "disk_storage"}) {
      auto storage = proxmox->string(key);
      if (!storage) continue;
      (std::string_view(key) == "iso_storage" ? cluster.iso_storage : cluster.disk_storage) = *storage;
      if (!builder::is_proxmox_storage_id(*storage)) {
        proxmox->error_at(key, "'proxmox." + std::string(key) + "' must be a Proxmox storage ID such as local (a letter, "
                               "then letters, digits, '-', '_', '.'), got '" + *storage + "'");
      }
    }
    proxmox->finish();
    site.proxmox = cluster;
  }
  if (auto serve = top.map("serve")) {
    site.serve.url = serve->string("url");
    if (site.serve.url && !site.serve.url->starts_with("http://") && !site.serve.url->starts_with("https://")) {
      serve->error_at("url", "'serve.url' must be an http:// or https:// URL, got '" + *site.serve.url + "'");
    }
    site.serve.boot_log = serve->path_value("boot_log");
    serve->finish();
  }
  if (auto ansible = top.map("ansible")) {
    site.ansible.token_lookup = ansible->string("token_lookup");
    if (site.ansible.token_lookup && !is_jinja_reference(*site.ansible.token_lookup)) {
      ansible->error_at("token_lookup", "'ansible.token_lookup' must be a reference Ansible resolves when a play runs, "
                                        "such as \"{{ vault_rke2_token }}\" or \"{{ lookup('file', "
                                        "'/etc/aggrik8s/rke2-token') }}\", not the token itself: the exported inventory "
                                        "is not a secret file (0644)");
    }
    if (const ConfigNode* vars = ansible->node("vars")) {
      if (!vars->is_map()) {
        diagnostics.error(vars->location, "'ansible.vars' must be a map of variable: value");
      } else {
        for (const auto& entry : vars->entries) {
          // A credential's value is a reference too (rke2_token, a registry password): never the secret.
          if (is_credential_name(entry.key) && !(entry.value.is_scalar() && is_jinja_reference(entry.value.scalar))) {
            diagnostics.error(entry.value.location, "'ansible.vars." + entry.key +
                                                        "' names a credential: give a reference Ansible resolves when "
                                                        "a play runs (\"{{ vault_" + entry.key +
                                                        " }}\"), not the value: the exported inventory is 0644");
            continue;
          }
          site.ansible.extra_vars[entry.key] = entry.value;
        }
      }
    }
    ansible->finish();
  }
  read_networks(top, site, diagnostics);
  top.list("machines", [&](const ConfigNode& item, const std::string& path) { read_machine(item, path, site, diagnostics); },
           true);
  if (const ConfigNode* machines = tree.find("machines"); machines && machines->is_sequence() && machines->items.empty()) {
    diagnostics.error(machines->location, "'machines' is empty: a site has at least one machine");
  }
  top.finish();

  // One profile file named two ways (through a symlink) is one profile: its machines
  // share the spelling met first, so it is loaded and built once, into one output directory.
  std::map<fs::path, fs::path> spelling_of;
  for (auto& m : site.machines) {
    if (m.profile.empty()) continue;
    std::error_code ec;
    fs::path real = fs::weakly_canonical(m.profile, ec);
    if (ec) continue;  // reported when the profile is checked
    auto [it, inserted] = spelling_of.emplace(real, m.profile);
    if (!inserted) m.profile = it->second;
  }

  // Which network each address belongs to (the most specific one when subnets nest).
  for (auto& m : site.machines) {
    if (m.address_bytes.empty()) continue;
    const SiteNetwork* best = nullptr;
    for (const auto& n : site.networks) {
      if (!n.subnet.bytes.empty() && n.subnet.contains(m.address_bytes) &&
          (best == nullptr || n.subnet.prefix_length > best->subnet.prefix_length)) {
        best = &n;
      }
    }
    if (best != nullptr) m.network = best->name;
  }
  return site;
}

SiteInventory read_site_inventory(const fs::path& file, Diagnostics& diagnostics) {
  ConfigNode tree = load_yaml_file(file, diagnostics);
  if (tree.is_null()) {
    if (!diagnostics.has_errors()) diagnostics.error({file.string(), 1, 1}, "the site inventory is empty");
    SiteInventory empty;
    empty.file = file;
    return empty;
  }
  SiteInventory site = parse_site_inventory(tree, diagnostics);
  site.file = file;
  return site;
}

bool is_site_file(const fs::path& file) {
  Diagnostics ignored;
  ConfigNode tree = load_yaml_file(file, ignored);
  const ConfigNode* kind = tree.is_map() ? tree.find("kind") : nullptr;
  return kind != nullptr && kind->is_scalar() && kind->scalar == "site";
}

namespace {

// The first machine that used a value, for "also used by" messages.
template <typename Key>
void check_unique(const SiteInventory& site, Diagnostics& diagnostics, const char* field, const char* what,
                  const std::function<std::optional<Key>(const Machine&)>& key_of,
                  const std::function<std::string(const Key&)>& show) {
  std::map<Key, const Machine*> seen;
  for (const auto& m : site.machines) {
    auto key = key_of(m);
    if (!key) continue;
    auto [it, inserted] = seen.emplace(*key, &m);
    if (!inserted && std::string_view(field) == "name") {
      diagnostics.error(field_location(m, field), "machine name '" + m.name + "' is listed twice (first at " +
                                                      field_location(*it->second, field).str() + ")");
    } else if (!inserted) {
      diagnostics.error(field_location(m, field), "machine '" + m.name + "': " + what + " " + show(*key) +
                                                      " is already used by machine '" + it->second->name + "' (" +
                                                      field_location(*it->second, field).str() + ")");
    }
  }
}

}  // namespace

void check_site(const SiteInventory& site, Diagnostics& diagnostics) {
  auto same = [](const std::string& s) { return s; };
  check_unique<std::string>(site, diagnostics, "name", "name", [](const Machine& m) -> std::optional<std::string> {
    return m.name.empty() ? std::nullopt : std::optional(m.name);
  }, same);
  check_unique<std::string>(site, diagnostics, "mac", "MAC", [](const Machine& m) { return m.mac; }, same);
  // A Pi's TFTP directory is the low 8 digits: two serials that share them are the same to serve.
  check_unique<std::string>(site, diagnostics, "serial", "serial", [](const Machine& m) -> std::optional<std::string> {
    if (!m.serial) return std::nullopt;
    return m.serial->substr(m.serial->size() - 8);
  }, [](const std::string& s) { return s + " (its low 8 hex digits)"; });
  check_unique<std::string>(site, diagnostics, "uuid", "SMBIOS UUID", [](const Machine& m) { return m.uuid; }, same);
  check_unique<std::vector<std::uint8_t>>(site, diagnostics, "address", "address", [](const Machine& m) {
    return m.address_bytes.empty() ? std::nullopt : std::optional(m.address_bytes);
  }, [](const std::vector<std::uint8_t>& a) { return format_address(a); });

  for (const auto& m : site.machines) {
    if (m.address_bytes.empty()) continue;
    if (m.network.empty()) {
      std::string subnets;
      for (const auto& n : site.networks) subnets += (subnets.empty() ? "" : ", ") + n.subnet.text;
      diagnostics.error(field_location(m, "address"), "address " + m.address + " of machine '" + m.name +
                                                          "' is outside every network of the site (" +
                                                          (subnets.empty() ? "none defined" : subnets) + ")");
      continue;
    }
    const SiteNetwork* n = network_of(site, m);
    if (n->dhcp_pool && n->dhcp_pool->contains(m.address_bytes)) {
      diagnostics.error(field_location(m, "address"), "address " + host_address(m) + " of machine '" + m.name +
                                                          "' is inside the DHCP pool " + n->dhcp_pool->text + " of network '" +
                                                          n->name + "': the DHCP server could hand it to another machine");
    }
    if (m.address_bytes == n->subnet.bytes) {
      diagnostics.error(field_location(m, "address"), "address " + host_address(m) + " of machine '" + m.name +
                                                          "' is the network address of " + n->subnet.text);
    }
    // An IPv4 subnet's all-ones host part is its broadcast address (none on a /31 or /32, RFC 3021).
    if (m.address_bytes.size() == 4 && n->subnet.prefix_length < 31) {
      bool broadcast = true;
      for (std::size_t bit = static_cast<std::size_t>(n->subnet.prefix_length); bit < 32; ++bit) {
        if ((m.address_bytes[bit / 8] & (0x80u >> (bit % 8))) == 0) broadcast = false;
      }
      if (broadcast) {
        diagnostics.error(field_location(m, "address"), "address " + host_address(m) + " of machine '" + m.name +
                                                            "' is the broadcast address of " + n->subnet.text);
      }
    }
    if (n->gateway && parse_address(*n->gateway) == m.address_bytes) {
      diagnostics.error(field_location(m, "address"), "address " + host_address(m) + " of machine '" + m.name +
                                                          "' is the gateway of network '" + n->name +
                                                          "': a machine cannot route through itself");
    }
    // The node is configured with the machine's prefix: another than its network's would give it a
    // wrong on-link route (every address of a /16 taken for a neighbour on a /24 network).
    if (m.prefix_length != n->subnet.prefix_length) {
      diagnostics.error(field_location(m, "address"), "address " + m.address + " of machine '" + m.name + "' has prefix /" +
                                                          std::to_string(m.prefix_length) + ", its network '" + n->name +
                                                          "' is " + n->subnet.text + ": write " + host_address(m) + "/" +
                                                          std::to_string(n->subnet.prefix_length));
    }
  }
  check_unique<std::uint32_t>(site, diagnostics, "vm", "VM id", [](const Machine& m) -> std::optional<std::uint32_t> {
    return m.vm ? m.vm->vmid : std::nullopt;
  }, [](const std::uint32_t& id) { return std::to_string(id); });
  // Overlapping subnets make a machine's network (its gateway, DNS, DHCP pool) depend on which is listed
  // first.
  for (std::size_t i = 0; i < site.networks.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      const SiteNetwork& a = site.networks[j];
      const SiteNetwork& b = site.networks[i];
      if (a.subnet.bytes.empty() || b.subnet.bytes.empty() || a.subnet.bytes.size() != b.subnet.bytes.size()) continue;
      if (a.subnet.contains(b.subnet.bytes) || b.subnet.contains(a.subnet.bytes)) {
        diagnostics.error(b.where, "network '" + b.name + "' (" + b.subnet.text + ") overlaps network '" + a.name + "' (" +
                                       a.subnet.text + ", " + a.where.str() + "): each address must belong to one network");
      }
    }
  }

  if (site.proxmox == std::nullopt) {
    for (const auto& m : site.machines) {
      if (m.platform == Platform::proxmox_vm) {
        diagnostics.error(field_location(m, "platform"), "machine '" + m.name + "' is a proxmox-vm but the site has no "
                                                             "'proxmox' section (its nodes)");
        break;
      }
    }
  } else {
    for (const auto& m : site.machines) {
      if (m.vm && !m.vm->proxmox_node.empty() &&
          std::find(site.proxmox->nodes.begin(), site.proxmox->nodes.end(), m.vm->proxmox_node) == site.proxmox->nodes.end()) {
        std::string nodes;
        for (const auto& n : site.proxmox->nodes) nodes += (nodes.empty() ? "" : ", ") + n;
        diagnostics.error(field_location(m, "vm"), "machine '" + m.name + "' is placed on Proxmox node '" +
                                                       m.vm->proxmox_node + "', which is not one of proxmox.nodes (" + nodes + ")");
      }
    }
  }

  // Profile kind against platform and role, boot method against the profile's outputs: read from the
  // profiles' trees, since a profile cannot be read as a whole with nodes that do not fit it.
  std::map<fs::path, ConfigNode> trees;
  for (const auto& file : site.profile_files()) {
    Diagnostics ignored;  // the profile's own problems are reported when it is loaded with the site's nodes
    std::error_code ec;
    if (fs::exists(file, ec)) trees[file] = builder::load_profile_tree(file, ignored);
  }
  auto scalar_of = [](const ConfigNode& tree, std::initializer_list<std::string_view> keys) -> std::string {
    const ConfigNode* node = find_path(tree, keys);
    return node != nullptr && node->is_scalar() ? node->scalar : std::string();
  };
  for (const auto& m : site.machines) {
    if (m.profile.empty()) continue;
    const SourceLocation at = field_location(m, "profile");
    std::error_code ec;
    if (!fs::exists(m.profile, ec)) {
      diagnostics.error(at, "profile " + m.profile.string() + " of machine '" + m.name + "' " +
                                path_check_failure(ec, "does not exist"));
      continue;
    }
    const ConfigNode& tree = trees[m.profile];
    std::string kind = scalar_of(tree, {"kind"});
    if (kind != "rpi5-rke2" && kind != "talos-iso") continue;  // the profile's own error comes when it is loaded
    bool pi_profile = kind == "rpi5-rke2";
    std::string file_name = m.profile.filename().string();
    if ((m.platform == Platform::rpi5) != pi_profile) {
      diagnostics.error(at, "machine '" + m.name + "' is a " + to_string(m.platform) + " but its profile " + file_name +
                                " is kind " + kind + " (" +
                                (m.platform == Platform::rpi5 ? "a Raspberry Pi 5 needs an rpi5-rke2 profile"
                                                              : "a Proxmox VM needs a talos-iso profile") + ")");
      continue;
    }
    bool rke2_role = m.role == Role::server || m.role == Role::agent;
    if (rke2_role != pi_profile) {
      diagnostics.error(field_location(m, "role"), "machine '" + m.name + "' has role " + to_string(m.role) + ", but its " +
                                                       kind + " profile takes " +
                                                       (pi_profile ? "server or agent (RKE2)" : "controlplane or worker (Talos)"));
      continue;
    }
    if (pi_profile) {
      const ConfigNode* ephemeral = find_path(tree, {"output", "ephemeral"});
      bool has_ephemeral = ephemeral != nullptr && !ephemeral->is_null() &&
                           !(ephemeral->is_scalar() && parse_yaml_bool(*ephemeral) == std::optional<bool>(false));
      const ConfigNode* disk_images = find_path(tree, {"output", "disk_images"});
      bool has_disk_images = disk_images == nullptr || parse_yaml_bool(*disk_images) != std::optional<bool>(false);
      if (m.boot == BootMethod::ephemeral && !has_ephemeral) {
        diagnostics.error(field_location(m, "boot"), "machine '" + m.name + "' boots ephemeral, but its profile " +
                                                         file_name + " has no output.ephemeral");
      }
      if (m.boot != BootMethod::ephemeral && !has_disk_images) {
        diagnostics.error(field_location(m, "boot"), "machine '" + m.name + "' boots from its disk image (boot: " +
                                                         to_string(m.boot) + "), but its profile " + file_name +
                                                         " has output.disk_images: false");
      }
    } else {
      std::vector<std::string> outputs = profile_strings(tree, {"talos", "outputs"});
      auto has = [&](const char* o) { return std::find(outputs.begin(), outputs.end(), o) != outputs.end(); };
      if (m.boot != BootMethod::disk && !has("netboot")) {
        diagnostics.error(field_location(m, "boot"), "machine '" + m.name + "' boots from serve (boot: " + to_string(m.boot) +
                                                         "), but its profile " + file_name +
                                                         " does not list 'netboot' in talos.outputs");
      }
      if (m.boot == BootMethod::disk && !has("iso") && !has("config-iso")) {
        diagnostics.error(field_location(m, "boot"), "machine '" + m.name + "' boots from an ISO (boot: disk), but its profile " +
                                                         file_name + " lists neither 'iso' nor 'config-iso' in talos.outputs");
      }
    }
  }

  // Every agent needs a server to join, every worker a control plane; an etcd quorum wants odd sizes.
  std::size_t servers = 0, controlplanes = 0;
  const Machine* first_server_machine = nullptr;
  const Machine* first_controlplane = nullptr;
  for (const auto& m : site.machines) {
    if (m.role == Role::server && servers++ == 0) first_server_machine = &m;
    if (m.role == Role::controlplane && controlplanes++ == 0) first_controlplane = &m;
  }
  for (const auto& m : site.machines) {
    if (m.role == Role::agent && servers == 0) {
      if (trees.contains(m.profile) && scalar_of(trees[m.profile], {"rke2", "server"}).empty()) {
        diagnostics.error(field_location(m, "role"), "agent '" + m.name + "' has no server to join: no machine of the site "
                                                         "has role server and its profile sets no rke2.server");
      }
    }
    if (m.role == Role::worker && controlplanes == 0) {
      diagnostics.error(field_location(m, "role"), "worker '" + m.name + "' has no control plane: no machine of the site "
                                                       "has role controlplane");
    }
  }
  // Who starts the RKE2 cluster: rpi_node joins every server but the site's first to another server,
  // so only the first can start it, and only when its profile names no rke2.server. A profile-wide
  // rke2.server (a VIP, or the first server's own address) on every server leaves a cluster nobody
  // starts. A node also cannot join itself.
  auto named_server = [&](const Machine& m) -> const ConfigNode* {
    if (m.platform != Platform::rpi5 || (m.role != Role::server && m.role != Role::agent)) return nullptr;
    auto tree = trees.find(m.profile);
    if (tree == trees.end()) return nullptr;
    const ConfigNode* server = find_path(tree->second, {"rke2", "server"});
    return server != nullptr && server->is_scalar() && !server->scalar.empty() ? server : nullptr;
  };
  for (const auto& m : site.machines) {
    const ConfigNode* server = named_server(m);
    if (server == nullptr || parse_address(supervisor_url_host(server->scalar)) != m.address_bytes) continue;
    diagnostics.error(field_location(m, "profile"),
                      "machine '" + m.name + "' would join " + server->scalar + ", its own address (rke2.server of its "
                          "profile, " + server->location.str() + "): a node cannot join itself; " +
                          (&m == first_server_machine
                               ? "as the site's first server it starts the cluster: give it a profile that names no "
                                 "rke2.server (one that extends " + m.profile.filename().string() +
                                 " with 'rke2: {server: null}')"
                               : "name another server, or none to join the site's first server"));
  }
  if (const ConfigNode* server = first_server_machine != nullptr ? named_server(*first_server_machine) : nullptr;
      server != nullptr && parse_address(supervisor_url_host(server->scalar)) != first_server_machine->address_bytes) {
    const Machine& first = *first_server_machine;
    std::string others;
    for (const auto& m : site.machines) {
      if (m.role == Role::server && &m != &first) others += (others.empty() ? "" : ", ") + m.name;
    }
    diagnostics.error(field_location(first, "profile"),
                      "no server of the site starts the RKE2 cluster: its first server '" + first.name + "' would join " +
                          server->scalar + " (rke2.server of its profile, " + server->location.str() + ") rather than "
                          "start it" + (others.empty() ? std::string() : ", and the other servers (" + others + ") join too") +
                          "; give '" + first.name + "' a profile that names no rke2.server (one that extends " +
                          first.profile.filename().string() + " with 'rke2: {server: null}')");
  }

  auto warn_even = [&](std::size_t count, const Machine* first, const char* what) {
    if (count > 0 && count % 2 == 0) {
      diagnostics.warning(field_location(*first, "role"),
                          std::string("the ") + what + " has " + std::to_string(count) +
                              " members, an even number: etcd keeps quorum through as many failures with " +
                              std::to_string(count - 1) + " (use an odd number)");
    }
  };
  warn_even(servers, first_server_machine, "RKE2 control plane (role server)");
  warn_even(controlplanes, first_controlplane, "Talos control plane (role controlplane)");

  // etcd members that lose their disk state at every boot (docs/profiles.md: "Keep etcd servers on
  // disks"). The server that starts the RKE2 cluster would start a new, empty one after every reboot:
  // an error. Any other member comes back as a stranger the cluster still lists: it must be removed
  // from etcd before it can rejoin, after every reboot; a warning, since a lab may want exactly that.
  for (const auto& m : site.machines) {
    if (m.boot != BootMethod::ephemeral || !is_control_plane(m.role)) continue;
    if (&m == first_server_machine && named_server(m) == nullptr) {
      diagnostics.error(field_location(m, "boot"),
                        "machine '" + m.name + "' boots ephemeral but starts the RKE2 cluster (the site's first server): "
                            "it would start a new, empty cluster after every reboot; boot it from disk (boot: disk or "
                            "netboot)");
    } else {
      diagnostics.warning(field_location(m, "boot"),
                          "machine '" + m.name + "' is an etcd member (role " + to_string(m.role) +
                              ") that boots ephemeral: after every reboot it is a new member the cluster still lists "
                              "under its name, and must be removed from etcd before it can rejoin; keep etcd members "
                              "on disks (docs/profiles.md)");
    }
  }
}

std::optional<builder::Profile> load_site_profile(const SiteInventory& site, const fs::path& profile_file,
                                                  Diagnostics& diagnostics, const builder::ProfileCheckOptions& options) {
  std::vector<const Machine*> machines = site.machines_of(profile_file);
  return builder::load_profile_with_nodes(
      profile_file,
      [&](const ConfigNode& profile_tree) {
        ConfigNode nodes = sequence_node(machines.empty() ? SourceLocation{site.file.string(), 0, 0} : machines.front()->where);
        const ConfigNode* kind = profile_tree.find("kind");
        bool talos = kind != nullptr && kind->is_scalar() && kind->scalar == "talos-iso";
        for (const Machine* m : machines) {
          nodes.items.push_back(talos ? talos_node(site, *m) : rpi_node(site, *m, profile_tree));
        }
        return nodes;
      },
      diagnostics, options);
}

fs::path profile_output_directory(const SiteInventory& site, const builder::Profile& profile) {
  return site.output / profile.name;
}

std::vector<LoadedSite::InputFile> LoadedSite::input_files() const {
  std::vector<InputFile> out{{site.file, "the site file"}};
  auto secret = [&](const std::optional<SecretReference>& reference) {
    if (reference && reference->kind == SecretReference::Kind::file) out.push_back({reference->name, "a secret file"});
  };
  for (const auto& [file, profile] : profiles) {
    out.push_back({file, "a profile"});
    for (const auto& base : profile.extends) out.push_back({base, "a profile"});
    // What the profiles read besides themselves: local inputs (a base image, an ISO), patch files,
    // overlays, the busybox, a CA bundle.
    for (const auto& input : profile.inputs()) {
      if (!input.is_download()) out.push_back({input.location, "an input of profile " + file.string()});
    }
    if (profile.output.ephemeral && profile.output.ephemeral->busybox) {
      out.push_back({*profile.output.ephemeral->busybox, "an input of profile " + file.string()});
    }
    if (profile.proxmox && profile.proxmox->ca_file) out.push_back({*profile.proxmox->ca_file, "a CA bundle"});
    for (const auto& node : profile.talos_nodes) {
      for (const auto& patch : node.patches) {
        // A patch read from a file holds that file as its content's location.
        if (!patch.content.location.file.empty()) out.push_back({patch.content.location.file, "a Talos patch file"});
      }
    }
    for (const auto& node : profile.rpi_nodes) {
      for (const auto& overlay : node.overlays) out.push_back({overlay, "an overlay directory"});
    }
    secret(profile.talos.config);
    if (profile.proxmox) secret(profile.proxmox->token_secret);
    if (profile.output.http_boot) secret(profile.output.http_boot->key);
    for (const auto& node : profile.talos_nodes) secret(node.config);
    for (const auto& node : profile.rpi_nodes) {
      secret(node.rke2.token);
      for (const auto& user : node.system.users) secret(user.password_hash);
    }
  }
  return out;
}

std::optional<LoadedSite> load_site(const fs::path& file, Diagnostics& diagnostics,
                                    const builder::ProfileCheckOptions& options) {
  std::size_t errors_before = diagnostics.error_count();
  LoadedSite loaded;
  loaded.site = read_site_inventory(file, diagnostics);
  if (diagnostics.error_count() > errors_before) return std::nullopt;
  check_site(loaded.site, diagnostics);
  if (diagnostics.error_count() > errors_before) return std::nullopt;
  std::set<std::string> profile_names;
  for (const auto& profile_file : loaded.site.profile_files()) {
    auto profile = load_site_profile(loaded.site, profile_file, diagnostics, options);
    if (!profile) continue;
    // Two profiles of one name would write into one output directory.
    if (!profile_names.insert(profile->name).second) {
      diagnostics.error(field_location(*loaded.site.machines_of(profile_file).front(), "profile"),
                        "profile " + profile_file.string() + " is named '" + profile->name +
                            "' like another profile of the site: both would build into " +
                            (loaded.site.output / profile->name).string());
    }
    loaded.profiles.emplace(profile_file, std::move(*profile));
  }
  if (diagnostics.error_count() > errors_before) return std::nullopt;
  return loaded;
}

void check_site_talos_roles(const LoadedSite& loaded, const TalosMachineTypeOf& machine_type_of, Diagnostics& diagnostics) {
  std::map<fs::path, std::string> types;  // one read of each profile's config
  for (const auto& m : loaded.site.machines) {
    if (m.role != Role::controlplane && m.role != Role::worker) continue;
    auto profile = loaded.profiles.find(m.profile);
    if (profile == loaded.profiles.end() || profile->second.kind != builder::ProfileKind::talos_iso) continue;
    if (!types.contains(m.profile)) types[m.profile] = machine_type_of(profile->second);
    const std::string& type = types[m.profile];
    // init is a control plane node that also bootstraps etcd (Talos before v1.0, still accepted).
    bool builds_controlplane = type == "controlplane" || type == "init";
    if (type.empty() || (!builds_controlplane && type != "worker")) continue;  // the config's own checks report it
    if ((m.role == Role::controlplane) == builds_controlplane) continue;
    std::string config = profile->second.talos.config ? ", " + profile->second.talos.config->describe() : std::string();
    diagnostics.error(field_location(m, "role"),
                      "machine '" + m.name + "' has role " + to_string(m.role) + ", but its talos-iso profile " +
                          m.profile.filename().string() + " builds " + (builds_controlplane ? "control plane" : "worker") +
                          " nodes (machine.type " + type + " in its machine config" + config + "): give the machine role " +
                          (builds_controlplane ? "controlplane" : "worker") + ", or a profile whose config is a " +
                          to_string(m.role) + " config");
  }
}

}  // namespace aggrik8s::site
