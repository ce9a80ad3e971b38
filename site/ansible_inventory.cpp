#include "site/ansible_inventory.hpp"

#include <algorithm>
#include <set>

#include "core/error.hpp"

namespace aggrik8s::site {
namespace {

// rke2-ansible's own variable names (see the header for where each was read).
constexpr const char* install_version_var = "rke2_install_version";
constexpr const char* api_server_host_var = "rke2_kubernetes_api_server_host";

// Where the images put what rke2-ansible would otherwise download (builder/rpi/rpi_image_builder.cpp):
// rke2.linux-arm64.tar.gz unpacked under /usr/local, as install.sh and rke2-ansible's
// rke2_tarball_install_dir do, and the profile's image archives in RKE2's preload directory.
constexpr const char* preloaded_binary = "/usr/local/bin/rke2";
constexpr const char* preloaded_images_directory = "/var/lib/rancher/rke2/agent/images";

// Every string is written quoted, as the nodes file does: an address, a version or a label value
// must come back a string, never a number or a boolean, when Ansible's YAML 1.1 loader reads it.
ConfigNode text(std::string value) {
  ConfigNode node;
  node.kind = ConfigNode::Kind::scalar;
  node.scalar = std::move(value);
  node.quoted = true;
  return node;
}

ConfigNode empty_map() {
  ConfigNode node;
  node.kind = ConfigNode::Kind::map;
  return node;
}

ConfigNode text_list(const std::vector<std::string>& values) {
  ConfigNode node;
  node.kind = ConfigNode::Kind::sequence;
  for (const auto& value : values) node.items.push_back(text(value));
  return node;
}

// Values from the site and its profiles are data for Ansible, never templates: Ansible renders Jinja in
// any inventory string when a play uses it, so a label or an rke2.config value holding "{{ lookup('pipe',
// ...) }}" would run on the control host. Such strings are tagged !unsafe (Ansible's marker for text it
// must not template); the rest stay plain. The site's own ansible: values (token_lookup, vars) are
// written for Ansible and are left as templates.
void mark_ansible_unsafe(ConfigNode& node) {
  if (node.is_scalar()) {
    for (const char* start : {"{{", "{%", "{#"}) {
      if (node.scalar.find(start) != std::string::npos) node.tag = "!unsafe";
    }
  }
  for (auto& item : node.items) mark_ansible_unsafe(item);
  for (auto& entry : node.entries) mark_ansible_unsafe(entry.value);
}

struct Rke2Host {
  const Machine* machine = nullptr;
  const builder::Profile* profile = nullptr;
  const builder::Rpi5Node* node = nullptr;
};

std::string profile_label(const builder::Profile& profile) {
  return profile.file.empty() ? profile.name : profile.file.filename().string();
}

std::string where(const Machine& machine) {
  return machine.where.file.empty() ? machine.name : machine.where.str() + ": " + machine.name;
}

// Keys the groups must never carry: values that are credentials (the join token and its file, S3 and
// datastore credentials). rke2-ansible gets the token as a reference (rke2_token) instead.
bool is_secret_key(const std::string& key) {
  return is_credential_name(key) || key.find("access-key") != std::string::npos ||
         key.find("datastore-endpoint") != std::string::npos;
}

// Keys written per host from the site (or derived by rke2-ansible itself, like `server`), never as a
// group value even when every host of the group happens to share it.
bool is_host_key(const std::string& key) {
  return key == "node-name" || key == "node-ip" || key == "node-label" || key == "node-taint" || key == "server";
}

// The strings of a config key that is a list (node-label) or a lone string.
std::vector<std::string> config_strings(const ConfigNode& config, std::string_view key) {
  std::vector<std::string> out;
  const ConfigNode* value = config.is_map() ? config.find(key) : nullptr;
  if (value == nullptr) return out;
  if (value->is_scalar()) out.push_back(value->scalar);
  if (value->is_sequence()) {
    for (const auto& item : value->items) {
      if (item.is_scalar()) out.push_back(item.scalar);
    }
  }
  return out;
}

void append_missing(std::vector<std::string>& list, const std::string& value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(value);
}

// What the image's config.yaml says (builder/rpi/rke2_node_files.cpp): the profile's rke2.config, the
// site's labels and taints added by load_site_profile; the site's own values added here too so an
// inventory made from hand-filled profiles still carries them.
std::vector<std::string> node_labels(const Rke2Host& host) {
  std::vector<std::string> labels = config_strings(host.node->rke2.config, "node-label");
  for (const auto& [key, value] : host.machine->labels) append_missing(labels, key + "=" + value);
  return labels;
}

std::vector<std::string> node_taints(const Rke2Host& host) {
  std::vector<std::string> taints = config_strings(host.node->rke2.config, "node-taint");
  for (const auto& taint : host.machine->taints) append_missing(taints, taint);
  return taints;
}

// The node name RKE2 registers, as the image's config.yaml sets it.
std::string node_name(const Rke2Host& host) {
  std::vector<std::string> configured = config_strings(host.node->rke2.config, "node-name");
  if (!configured.empty()) return configured.front();
  return host.node->system.hostname.empty() ? host.machine->name : host.node->system.hostname;
}

std::string address_without_prefix(const std::string& cidr) { return cidr.substr(0, cidr.find('/')); }

// The account the image lets in over SSH with a key and sudo: what Ansible must log in as.
std::optional<std::string> ssh_user(const builder::Rpi5Node& node) {
  for (const auto& user : node.system.users) {
    if (user.sudo && !user.ssh_authorized_keys.empty()) return user.name;
  }
  return std::nullopt;
}

std::vector<Rke2Host> rke2_hosts(const LoadedSite& loaded) {
  std::vector<Rke2Host> hosts;
  for (const auto& machine : loaded.site.machines) {
    if (machine.platform != Platform::rpi5) continue;
    if (machine.role != Role::server && machine.role != Role::agent) continue;
    auto profile = loaded.profiles.find(machine.profile);
    if (profile == loaded.profiles.end()) {
      throw Error(where(machine) + ": its profile " + machine.profile.string() + " is not loaded");
    }
    if (profile->second.kind != builder::ProfileKind::rpi5_rke2) {
      throw Error(where(machine) + ": a Raspberry Pi 5 RKE2 " + to_string(machine.role) + " needs an rpi5-rke2 profile, " +
                  profile_label(profile->second) + " is " + builder::to_string(profile->second.kind));
    }
    const auto& nodes = profile->second.rpi_nodes;
    auto node = std::find_if(nodes.begin(), nodes.end(), [&](const auto& n) { return n.name == machine.name; });
    if (node == nodes.end()) {
      throw Error(where(machine) + ": profile " + profile_label(profile->second) + " has no node named " + machine.name);
    }
    hosts.push_back({&machine, &profile->second, &*node});
  }
  if (hosts.empty()) {
    throw Error(loaded.site.file.string() +
                ": the site has no RKE2 machine (platform rpi5, role server or agent): nothing for rke2-ansible");
  }
  return hosts;
}

// One version for the cluster: rke2-ansible installs all.vars.rke2_install_version everywhere, and a
// host whose image carries another version would be upgraded (or downgraded) from the network, which an
// air-gapped site does not have. Two profiles that disagree are a site problem to fix, not to paper over.
std::string cluster_rke2_version(const std::vector<Rke2Host>& hosts) {
  const Rke2Host& first = hosts.front();
  if (first.node->rke2.version.empty()) {
    throw Error(where(*first.machine) + ": profile " + profile_label(*first.profile) + " sets no rke2.version");
  }
  for (const auto& host : hosts) {
    if (host.node->rke2.version != first.node->rke2.version) {
      throw Error("the site's RKE2 machines disagree on rke2.version: " + first.machine->name + " (profile " +
                  profile_label(*first.profile) + ") has " + first.node->rke2.version + ", " + host.machine->name +
                  " (profile " + profile_label(*host.profile) + ") has " +
                  (host.node->rke2.version.empty() ? std::string("none") : host.node->rke2.version) +
                  "; rke2-ansible installs one rke2_install_version for the cluster: give both profiles the same "
                  "rke2.version (" + where(*host.machine) + ")");
    }
  }
  return first.node->rke2.version;
}

// rke2-ansible starts a new cluster on groups['rke2_servers'][0] and joins every other node to it: the
// server whose image joins nobody (no rke2.server) must come first.
std::vector<Rke2Host> servers_bootstrap_first(const std::vector<Rke2Host>& hosts) {
  std::vector<Rke2Host> servers;
  for (const auto& host : hosts) {
    if (host.machine->role == Role::server) servers.push_back(host);
  }
  std::stable_partition(servers.begin(), servers.end(), [](const Rke2Host& h) { return !h.node->rke2.server; });
  return servers;
}

// Where the other nodes join (rke2-ansible waits on its port 6443 and writes server: https://HOST:9345):
// the host every image's rke2.server names, else the bootstrap server's address. Without it rke2-ansible
// uses the first server's inventory name, which a site without DNS for its nodes cannot resolve.
std::string api_server_host(const std::vector<Rke2Host>& hosts, const Rke2Host& bootstrap) {
  std::set<std::string> named;
  for (const auto& host : hosts) {
    if (host.node->rke2.server) named.insert(supervisor_url_host(*host.node->rke2.server));
  }
  if (named.size() == 1) return *named.begin();
  return address_without_prefix(bootstrap.machine->address);
}

// The config keys every host of a group shares with the same value (compared as written), in the first
// host's order: written once as group_rke2_config.
std::vector<std::string> common_config_keys(const std::vector<Rke2Host>& group) {
  std::vector<std::string> common;
  const ConfigNode& first = group.front().node->rke2.config;
  if (!first.is_map()) return common;
  for (const auto& entry : first.entries) {
    if (is_host_key(entry.key) || is_secret_key(entry.key)) continue;
    const std::string value = to_yaml(entry.value);
    bool shared = std::all_of(group.begin(), group.end(), [&](const Rke2Host& host) {
      const ConfigNode* other = host.node->rke2.config.is_map() ? host.node->rke2.config.find(entry.key) : nullptr;
      return other != nullptr && to_yaml(*other) == value;
    });
    if (shared) common.push_back(entry.key);
  }
  return common;
}

ConfigNode host_vars(const Rke2Host& host, const std::vector<std::string>& group_keys) {
  const std::string address = address_without_prefix(host.machine->address);
  const std::string name = node_name(host);
  const std::vector<std::string> labels = node_labels(host);
  const std::vector<std::string> taints = node_taints(host);

  ConfigNode vars = empty_map();
  vars.set("ansible_host", text(address));
  if (auto user = ssh_user(*host.node)) vars.set("ansible_user", text(*user));
  // Plain facts (rke2-ansible v1's names; v2 documents node_labels): for one's own playbooks and checks.
  vars.set("node_name", text(name));
  vars.set("node_ip", text(address));
  vars.set("node_labels", text_list(labels));
  vars.set("node_taints", text_list(taints));
  // disk | netboot | ephemeral: an ephemeral node forgets at its next boot whatever rke2-ansible changed.
  vars.set("aggrik8s_boot", text(to_string(host.machine->boot)));

  // What rke2-ansible v2 merges into the node's /etc/rancher/rke2/config.yaml (roles/rke2/tasks/config.yml).
  ConfigNode config = empty_map();
  config.set("node-name", text(name));
  config.set("node-ip", text(address));
  if (!labels.empty()) config.set("node-label", text_list(labels));
  if (!taints.empty()) config.set("node-taint", text_list(taints));
  if (host.node->rke2.server) config.set("server", text(*host.node->rke2.server));
  const ConfigNode& profile_config = host.node->rke2.config;
  if (profile_config.is_map()) {
    for (const auto& entry : profile_config.entries) {
      if (is_host_key(entry.key) || is_secret_key(entry.key)) continue;
      if (std::find(group_keys.begin(), group_keys.end(), entry.key) != group_keys.end()) continue;
      config.set(entry.key, entry.value);
    }
  }
  vars.set("host_rke2_config", std::move(config));
  mark_ansible_unsafe(vars);
  return vars;
}

ConfigNode group(const std::vector<Rke2Host>& members) {
  const std::vector<std::string> common = common_config_keys(members);
  ConfigNode node = empty_map();
  if (!common.empty()) {
    ConfigNode group_config = empty_map();
    for (const auto& key : common) group_config.set(key, *members.front().node->rke2.config.find(key));
    mark_ansible_unsafe(group_config);
    ConfigNode vars = empty_map();
    vars.set("group_rke2_config", std::move(group_config));
    node.set("vars", std::move(vars));
  }
  ConfigNode hosts = empty_map();
  for (const auto& host : members) hosts.set(host.machine->name, host_vars(host, common));
  node.set("hosts", std::move(hosts));
  return node;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : ", ") + word;
  return out;
}

// Whether a host's image holds the RKE2 image archives: every disk image does; an ephemeral node's RAM
// root only without output.ephemeral.image_archives: omit (then it pulls from its registry mirror).
bool carries_image_archives(const Rke2Host& host) {
  const auto& ephemeral = host.profile->output.ephemeral;
  return host.machine->boot != BootMethod::ephemeral || !ephemeral ||
         ephemeral->image_archives == builder::EphemeralSettings::ImageArchives::root;
}

// Agents that join a server outside the site (their profile's rke2.server) are a valid site, but
// rke2-ansible v2 (roles/rke2/tasks/main.yml) starts the cluster on groups['rke2_servers'][0] and reads
// the join token from it (token_source_node): with the group empty its site.yml stops there.
constexpr const char* no_servers_warning =
    "the site has no RKE2 server: the inventory's rke2_servers group is empty, and rke2-ansible's site.yml "
    "fails on it (roles/rke2/tasks/main.yml starts the cluster on groups['rke2_servers'][0] and reads the join "
    "token from it); to run rke2-ansible for these agents, add the server they join to rke2_servers in a copy of "
    "the inventory";

// rke2-ansible v2 (roles/rke2/tasks/save_generated_token.yml) gives every node, the bootstrap server
// too, server: "https://{{ rke2_kubernetes_api_server_host }}:9345": an IPv6 address there makes a URL
// without brackets that RKE2 cannot parse, and brackets would break its wait_for on port 6443
// (other_nodes.yml), which takes a bare host. A name is what works.
std::string ipv6_api_host_warning(const std::string& host) {
  return "rke2_kubernetes_api_server_host is the IPv6 address " + host +
         ": rke2-ansible writes server: https://" + host + ":9345 (no brackets, "
         "roles/rke2/tasks/save_generated_token.yml) into every node's config, the first server's too, a URL RKE2 "
         "cannot parse; set ansible.vars.rke2_kubernetes_api_server_host to a DNS name of the server";
}

std::string header(const LoadedSite& loaded, const std::vector<Rke2Host>& hosts, const std::string& version,
                   bool token_from_site) {
  std::vector<std::string> ephemeral, left_out, archives, without_archives;
  for (const auto& host : hosts) {
    if (host.machine->boot == BootMethod::ephemeral) ephemeral.push_back(host.machine->name);
    if (!carries_image_archives(host)) {
      without_archives.push_back(host.machine->name);
      continue;
    }
    for (const auto& image : host.node->rke2.images) append_missing(archives, image);
  }
  for (const auto& machine : loaded.site.machines) {
    bool listed = std::any_of(hosts.begin(), hosts.end(), [&](const Rke2Host& h) { return h.machine == &machine; });
    if (!listed) left_out.push_back(machine.name);
  }
  std::string out;
  auto line = [&](const std::string& text) { out += "# " + text + "\n"; };
  line("rancherfederal/rke2-ansible (v2) inventory of site " + loaded.site.name +
       ", written by `aggrik8s-image export ansible`.");
  line("Derived from " + loaded.site.file.filename().string() +
       ": change the site and export again rather than editing this.");
  line("Variable names: rke2-ansible roles/rke2/defaults/main.yml, docs/README.md, docs/tarball_install.md.");
  line("Air-gap: the images already carry RKE2 " + version + " (" + preloaded_binary +
       "), so rke2_install_version is that");
  line("version and no tarball or image variable is set: rke2-ansible finds RKE2 installed and downloads nothing.");
  if (!archives.empty()) {
    line("Image archives preloaded in " + std::string(preloaded_images_directory) + ": " + join(archives) + ".");
  }
  if (!without_archives.empty()) {
    line("No image archives in RAM (output.ephemeral.image_archives: omit), images from the registry mirror: " +
         join(without_archives) + ".");
  }
  if (token_from_site) {
    line("rke2_token is the site's ansible.token_lookup: a reference, resolved when a play runs.");
  } else {
    line("rke2_token refers to vault_rke2_token: define it in an ansible-vault encrypted file, e.g.");
    line("group_vars/all/vault.yml (ansible-vault create), with the token the images were built with.");
  }
  if (!ephemeral.empty()) {
    line("Ephemeral (aggrik8s_boot: ephemeral, run from RAM): " + join(ephemeral) + ".");
    line("What rke2-ansible changes on them is gone at their next boot: change the profile and rebuild instead.");
  }
  if (!left_out.empty()) {
    line("Not RKE2, left out (rke2-ansible's site.yml runs on hosts: all): " + join(left_out) + ".");
  }
  if (std::none_of(hosts.begin(), hosts.end(), [](const Rke2Host& h) { return h.machine->role == Role::server; })) {
    line("No server: rke2_servers is empty, and rke2-ansible's site.yml fails without one (it starts the");
    line("cluster on groups['rke2_servers'][0] and reads the join token there). Add the server these agents");
    line("join to rke2_servers before running it.");
  }
  return out;
}

}  // namespace

std::string ansible_inventory_yaml(const LoadedSite& loaded, Diagnostics* warnings) {
  const std::vector<Rke2Host> hosts = rke2_hosts(loaded);
  const std::string version = cluster_rke2_version(hosts);
  const std::vector<Rke2Host> servers = servers_bootstrap_first(hosts);
  std::vector<Rke2Host> agents;
  for (const auto& host : hosts) {
    if (host.machine->role == Role::agent) agents.push_back(host);
  }
  if (servers.empty() && warnings != nullptr) {
    warnings->warning(agents.front().machine->where, no_servers_warning);
  }

  ConfigNode all_vars = empty_map();
  all_vars.set(install_version_var, text(version));
  // Empty on purpose (they are rke2-ansible's defaults): set, they make it copy or download a tarball
  // and image archives over what the image already holds.
  all_vars.set("rke2_install_tarball_url", text(""));
  all_vars.set("rke2_install_local_tarball_path", text(""));
  ConfigNode no_archives;
  no_archives.kind = ConfigNode::Kind::sequence;
  all_vars.set("rke2_images_urls", no_archives);
  all_vars.set("rke2_images_local_tarball_path", no_archives);
  if (!servers.empty()) all_vars.set(api_server_host_var, text(api_server_host(hosts, servers.front())));
  mark_ansible_unsafe(all_vars);  // so far from the profiles (the version, a server URL's host)
  const bool token_from_site = loaded.site.ansible.token_lookup.has_value();
  all_vars.set("rke2_token", text(loaded.site.ansible.token_lookup.value_or("{{ vault_rke2_token }}")));
  // The first server starts with this token (rke2-ansible writes cluster_rke2_config before it reads the
  // generated node-token for everyone else), so a re-provisioned cluster keeps the images' token.
  ConfigNode cluster_config = empty_map();
  cluster_config.set("token", text("{{ rke2_token }}"));
  all_vars.set("cluster_rke2_config", std::move(cluster_config));
  // The site's own vars last: they may override a derived one (e.g. rke2_kubernetes_api_server_host: a VIP).
  for (const auto& [key, value] : loaded.site.ansible.extra_vars) all_vars.set(key, value);
  if (const ConfigNode* host = all_vars.find(api_server_host_var);
      host != nullptr && host->scalar.find(':') != std::string::npos && warnings != nullptr) {
    warnings->warning((servers.empty() ? hosts : servers).front().machine->where, ipv6_api_host_warning(host->scalar));
  }

  ConfigNode all = empty_map();
  all.set("vars", std::move(all_vars));
  ConfigNode children = empty_map();
  // Written even empty: rke2-ansible reads groups['rke2_servers'] on every host ("Set as server"), and
  // a group the inventory lacks is no key of `groups` at all.
  children.set("rke2_servers", servers.empty() ? empty_map() : group(servers));
  if (!agents.empty()) children.set("rke2_agents", group(agents));
  ConfigNode cluster = empty_map();
  cluster.set("children", std::move(children));

  ConfigNode document = empty_map();
  document.set("all", std::move(all));
  document.set("rke2_cluster", std::move(cluster));
  return header(loaded, hosts, version, token_from_site) + "---\n" + to_yaml(document);
}

}  // namespace aggrik8s::site
