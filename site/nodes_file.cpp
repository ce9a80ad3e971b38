#include "site/nodes_file.hpp"

#include <algorithm>
#include <fstream>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "builder/talos_kernel_args.hpp"
#include "core/error.hpp"
#include "core/identifiers.hpp"

namespace aggrik8s::site {
namespace fs = std::filesystem;

namespace {

// Every value is written quoted (scalar_node's default): a serial of decimal digits or an address must
// come back a string.
ConfigNode text(std::string value, const SourceLocation& where) { return scalar_node(std::move(value), where); }

SourceLocation field_location(const Machine& machine, const std::string& field) {
  auto found = machine.field_locations.find(field);
  return found != machine.field_locations.end() ? found->second : machine.where;
}

// Absolute, as `build SITE` resolves it: the tree's relative paths would resolve against the site
// file's directory, and `export nodes` output may be kept anywhere.
fs::path output_directory(const LoadedSite& site, const builder::Profile& profile) {
  return fs::absolute(profile_output_directory(site.site, profile)).lexically_normal();
}

// The Talos version the profile's last build recorded (manifest.json's talos_version, read off the ISO
// it remastered); nullopt before a build, or for a manifest without it.
std::optional<builder::TalosVersion> built_talos_version(const fs::path& out) {
  std::ifstream in(out / "manifest.json");
  if (!in) return std::nullopt;
  nlohmann::json manifest = nlohmann::json::parse(in, nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object()) return std::nullopt;
  return builder::TalosVersion::parse(manifest.value("/talos_version/version"_json_pointer, std::string()));
}

// The node's kernel arguments as its build's boot.ipxe has them: Talos' defaults for the version its
// build recorded (console=tty0, init_on_alloc=1, selinux=1...: a machine netbooted through the site
// ran without them), then the profile's talos.kernel_args and its own. serve writes
// talos.platform=metal slab_nomerge pti=on itself and points talos.config= at its own
// /talos/<id>/config.yaml. Before the first build only the profile's and node's arguments are known.
std::string talos_netboot_arguments(const builder::TalosNode* node, const std::optional<builder::TalosVersion>& version) {
  static const std::set<std::string, std::less<>> written_by_serve{"talos.platform=metal", "slab_nomerge", "pti=on"};
  std::vector<std::string> args = version ? builder::talos_default_kernel_args(*version) : std::vector<std::string>{};
  if (node != nullptr) args = builder::append_kernel_args(std::move(args), node->kernel_args);
  std::string out;
  for (const auto& arg : args) {
    if (written_by_serve.contains(arg) || arg.starts_with("talos.config=")) continue;
    out += (out.empty() ? "" : " ") + arg;
  }
  return out;
}

const builder::TalosNode* talos_node(const builder::Profile& profile, const std::string& name) {
  auto found = std::find_if(profile.talos_nodes.begin(), profile.talos_nodes.end(),
                            [&](const builder::TalosNode& node) { return node.name == name; });
  return found == profile.talos_nodes.end() ? nullptr : &*found;
}

class NodesFileBuilder {
 public:
  explicit NodesFileBuilder(const LoadedSite& site) : site_(site) {
    SourceLocation top{site.site.file.string(), 1, 1};
    profiles_ = map_node(top);
    nodes_ = sequence_node(top);
  }

  void add(const Machine& machine) {
    // A machine with nothing to match it by (a disk-booted Pi with neither serial nor MAC, which the
    // site allows: it never netboots) is left out: serve could never recognise it, and its reader
    // refuses a node without selectors, which would stop serve for every other machine of the site.
    std::optional<ConfigNode> match = match_of(machine);
    if (!match) return;
    const builder::Profile& profile = site_.profile_of(machine);
    SourceLocation at_profile = field_location(machine, "profile");
    fs::path out = output_directory(site_, profile);
    ConfigNode node = map_node(machine.where);
    node.set("name", text(machine.name, field_location(machine, "name")));
    node.set("match", std::move(*match));
    std::string profile_name;
    std::optional<ConfigNode> talos_config;
    if (machine.boot == BootMethod::disk) {
      // No target: the node boots its own disk; serve still gives its reservation and logs its boots.
      profile_name = profile.name + ":disk";
      ConfigNode derived = map_node(at_profile);
      derived.set("mode", text("local", at_profile));
      add_profile(profile_name, std::move(derived));
    } else if (profile.kind == builder::ProfileKind::rpi5_rke2 && machine.boot == BootMethod::netboot) {
      profile_name = profile.name + "." + machine.name;
      ConfigNode image = map_node(at_profile);
      image.set("image", text((out / (machine.name + ".img")).string(), at_profile));
      if (profile.output.http_boot) image.set("boot_img", text((out / (machine.name + ".boot.img")).string(), at_profile));
      ConfigNode derived = map_node(at_profile);
      derived.set("rpi_image", std::move(image));
      add_profile(profile_name, std::move(derived));
    } else if (profile.kind == builder::ProfileKind::rpi5_rke2) {
      // The build wrote this name into each node's HTTP boot.img (its cmdline's /ephemeral/<name>/ URLs).
      const auto& ephemeral = profile.output.ephemeral;
      profile_name = ephemeral && ephemeral->serve_profile ? *ephemeral->serve_profile : profile.name;
      ConfigNode build = map_node(at_profile);
      build.set("build", text((out / "ephemeral" / profile.name).string(), at_profile));
      ConfigNode derived = map_node(at_profile);
      derived.set("rpi_ephemeral", std::move(build));
      add_profile(profile_name, std::move(derived));
    } else {
      // talos-iso, netboot or ephemeral: the node's netboot/<node>/ directory (builder/talos).
      profile_name = profile.name + "." + machine.name;
      fs::path directory = out / "netboot" / machine.name;
      ConfigNode talos = map_node(at_profile);
      talos.set("kernel", text((directory / "vmlinuz").string(), at_profile));
      talos.set("initramfs", text((directory / "initramfs.xz").string(), at_profile));
      talos.set("args", text(talos_netboot_arguments(talos_node(profile, machine.name), built_talos_version(out)), at_profile));
      ConfigNode derived = map_node(at_profile);
      if (machine.boot == BootMethod::ephemeral) derived.set("mode", text("ephemeral", field_location(machine, "boot")));
      derived.set("talos", std::move(talos));
      add_profile(profile_name, std::move(derived));
      // The machine config the build wrote for the node (0600): serve reads it per request, a secret.
      talos_config = map_node(at_profile);
      talos_config->set("file", text((directory / "config.yaml").string(), at_profile));
    }
    node.set("profile", text(profile_name, at_profile));
    if (talos_config) node.set("talos_config", std::move(*talos_config));
    // A pinned address: only it gets the node's files, and in full mode it is the DHCP reservation.
    std::string host = machine.address.substr(0, machine.address.find('/'));
    if (is_ipv4_address(host)) {
      node.set("address", text(host, field_location(machine, "address")));
      // The reservation is keyed by MAC; a Pi's selectors hold only its serial.
      if (machine.platform == Platform::rpi5 && machine.serial && machine.mac) {
        node.set("reservation_mac", text(*machine.mac, field_location(machine, "mac")));
      }
    }
    nodes_.items.push_back(std::move(node));
  }

  ConfigNode finish() {
    ConfigNode tree = map_node({site_.site.file.string(), 1, 1});
    tree.set("profiles", std::move(profiles_));
    tree.set("nodes", std::move(nodes_));
    return tree;
  }

 private:
  // One selector per node, the identifier its requests always carry: a Pi's TFTP and HTTP boot requests
  // name only its serial (its MAC goes into reservation_mac); a VM's per-node URLs (/talos/<id>/,
  // /cloud-init/<id>/) name only its MAC, or its UUID without one. Every selector a node gives must
  // match, so a second one would make those requests miss the node. nullopt when the machine has none.
  static std::optional<ConfigNode> match_of(const Machine& machine) {
    ConfigNode match = map_node(machine.where);
    if (machine.platform == Platform::rpi5 && machine.serial) {
      match.set("serial", text(*machine.serial, field_location(machine, "serial")));
    } else if (machine.mac) {
      match.set("mac", text(*machine.mac, field_location(machine, "mac")));
    } else if (machine.uuid) {
      match.set("uuid", text(*machine.uuid, field_location(machine, "uuid")));
    } else {
      return std::nullopt;
    }
    return match;
  }

  // Machines of one (profile, boot) share one derived profile; a name met again with another content
  // would be a second profile under one name.
  void add_profile(const std::string& name, ConfigNode derived) {
    if (const ConfigNode* existing = profiles_.find(name)) {
      if (to_yaml(*existing) == to_yaml(derived)) return;
      throw Error(derived.location.str() + ": the derived serve profile '" + name + "' is also the name of another "
                  "derived profile (" + existing->location.str() + "); give output.ephemeral.serve_profile another name");
    }
    profiles_.set(name, std::move(derived));
  }

  const LoadedSite& site_;
  ConfigNode profiles_;
  ConfigNode nodes_;
};

}  // namespace

ConfigNode derive_nodes_file(const LoadedSite& site) {
  NodesFileBuilder builder(site);
  for (const auto& machine : site.site.machines) builder.add(machine);
  return builder.finish();
}

}  // namespace aggrik8s::site
