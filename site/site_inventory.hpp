#pragma once
// The site inventory (docs/site.md): every machine of an edge site written once — what it is, how it
// is identified on the wire, its address and role, which profile builds it and how it boots — and
// everything else derived from it: the nodes each build profile builds, the nodes file `serve` boots
// from, the Ansible inventory rke2-ansible runs Day-2 from, and the Terraform that creates the
// Proxmox VMs. Reading is pure (a ConfigNode tree in, a SiteInventory and diagnostics out); the checks
// that need the profiles load them through builder/profile.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "builder/profile.hpp"
#include "core/config_node.hpp"
#include "core/diagnostics.hpp"

namespace aggrik8s::site {

// An IPv4 or IPv6 network in CIDR form, e.g. 10.0.10.0/24 or fd00:10::/64.
struct IpNetwork {
  std::string text;                 // as written, normalised ("10.0.10.0/24")
  std::vector<std::uint8_t> bytes;  // 4 or 16 bytes, host bits zero
  int prefix_length = 0;
  bool contains(const std::vector<std::uint8_t>& address) const;
};

// An inclusive address range ("10.0.10.100-10.0.10.199"), DHCP's dynamic pool.
struct IpRange {
  std::string text;
  std::vector<std::uint8_t> first;
  std::vector<std::uint8_t> last;
  bool contains(const std::vector<std::uint8_t>& address) const;
};

struct SiteNetwork {
  std::string name;                 // key in `networks:`
  IpNetwork subnet;
  std::optional<std::string> gateway;
  std::vector<std::string> dns;
  std::optional<IpRange> dhcp_pool;  // the DHCP server's dynamic addresses: no machine may sit inside it
  SourceLocation where;
};

enum class Platform { rpi5, proxmox_vm };
const char* to_string(Platform platform);

// How a machine boots:
//   disk:      Pi: the image flashed to its SD card / NVMe; VM: the Talos ISO as CD-ROM, installed to disk
//   netboot:   from `serve` (Pi: its disk image's boot files over TFTP / HTTP boot; VM: PXE, Talos
//              kernel + initramfs, then installs to disk), network first in the boot order
//   ephemeral: from `serve` into RAM on every boot (Pi: the profile's ephemeral output; VM: Talos
//              with the wipe cycle), nothing kept across reboots
enum class BootMethod { disk, netboot, ephemeral };
const char* to_string(BootMethod boot);

// Kubernetes role. rpi5-rke2 profiles: server | agent; talos-iso profiles: controlplane | worker.
enum class Role { server, agent, controlplane, worker };
const char* to_string(Role role);
bool is_control_plane(Role role);  // server, controlplane

struct VmSizing {
  std::string proxmox_node;           // the Proxmox VE node the VM runs on (one of proxmox.nodes)
  std::optional<std::uint32_t> vmid;  // fixed VM id; default: Proxmox/Terraform choose
  std::uint32_t cores = 2;
  std::uint64_t memory = 4ull << 30;  // bytes
  std::uint64_t disk = 32ull << 30;   // bytes
  std::string bridge = "vmbr0";
  std::optional<std::uint32_t> vlan;
  std::string disk_storage = "local-lvm";  // datastore for the VM's disk (site default: proxmox.disk_storage)
  std::string install_disk = "/dev/sda";   // the disk Talos installs to, as the guest sees it (scsi0 -> /dev/sda)
};

struct Machine {
  std::string name;            // DNS label; node name in Kubernetes, host name, Ansible host
  Platform platform = Platform::rpi5;
  std::optional<std::string> serial;  // Pi: 8 or 16 hex digits, lowercase as written by the Pi
  std::optional<std::string> mac;     // aa:bb:cc:dd:ee:ff (lowercase)
  std::optional<std::string> uuid;    // SMBIOS UUID, lowercase
  std::string address;         // CIDR as written ("10.0.10.11/24" or "fd00:10::11/64")
  std::vector<std::uint8_t> address_bytes;  // the host address
  int prefix_length = 0;                     // of `address`
  std::string network;         // the SiteNetwork it lies in
  Role role = Role::agent;
  std::filesystem::path profile;  // build profile file (absolute, or relative to the site file's directory resolved)
  BootMethod boot = BootMethod::disk;
  std::map<std::string, std::string> labels;  // Kubernetes node labels
  std::vector<std::string> taints;             // key=value:Effect (or key:Effect)
  std::optional<VmSizing> vm;                  // proxmox_vm only
  SourceLocation where;                        // the machine's entry
  std::map<std::string, SourceLocation> field_locations;  // "mac", "address", ... for messages
};

struct ProxmoxCluster {
  std::vector<std::string> nodes;  // Proxmox VE node names VMs may be placed on
  std::string iso_storage = "local";       // where `upload` puts ISOs: <iso_storage>:iso/<file>
  std::string disk_storage = "local-lvm";  // default datastore for VM disks
  SourceLocation where;
};

struct ServeSettings {
  std::optional<std::string> url;        // where nodes reach `serve` (http://10.0.10.2:8080)
  std::optional<std::filesystem::path> boot_log;  // serve's boot event log, read by `status`
};

struct AnsibleSettings {
  // rke2-ansible's token: a reference, never a value (a Jinja expression: the inventory is 0644).
  // Written as the `rke2_token` var. e.g. "{{ lookup('file', 'secrets/rke2-token') }}" or
  // "{{ vault_rke2_token }}".
  std::optional<std::string> token_lookup;
  // More all.vars, passed through as written: a boolean stays a boolean (rke2-ansible tests
  // `when: rke2_reboot`, and the string "false" is true), lists and maps stay lists and maps.
  std::map<std::string, ConfigNode> extra_vars;
};

// A variable or config key whose value is a credential (token, secret, password): exported only as a
// reference, never copied.
bool is_credential_name(std::string_view key);

struct SiteInventory {
  std::filesystem::path file;
  std::string name;
  std::string description;
  std::filesystem::path output;  // where builds go: <output>/<profile name>/ (default out/<site name>)
  std::vector<SiteNetwork> networks;
  std::optional<ProxmoxCluster> proxmox;
  ServeSettings serve;
  AnsibleSettings ansible;
  std::vector<Machine> machines;  // in file order

  const Machine* find(std::string_view name) const;
  // The profile files machines use, in order of first use.
  std::vector<std::filesystem::path> profile_files() const;
  std::vector<const Machine*> machines_of(const std::filesystem::path& profile) const;
};

// Reads the site file's structure (no profiles loaded). Every problem is a diagnostic with
// file:line:col; the result is meaningful only when no error was added.
SiteInventory parse_site_inventory(const ConfigNode& tree, Diagnostics& diagnostics);
SiteInventory read_site_inventory(const std::filesystem::path& file, Diagnostics& diagnostics);

// True when a YAML file is a site inventory (`kind: site` at its top), so `build`, `validate`,
// `serve` can take either a profile or a site.
bool is_site_file(const std::filesystem::path& file);

// The site as a whole: duplicate names/MACs/serials/UUIDs/addresses, addresses outside their subnet or
// inside its DHCP pool, agents with no server, no server that starts the RKE2 cluster (the first server's
// profile names an rke2.server), a machine whose rke2.server is its own address, workers with no control
// plane, an even control plane (a warning), a profile whose kind, role or outputs do not fit the machine
// (read from the profiles' trees; load_site then reads every profile with the site's machines as its
// nodes, so its own checks run).
void check_site(const SiteInventory& site, Diagnostics& diagnostics);

// The host of an RKE2 supervisor URL: "https://10.0.10.11:9345" -> "10.0.10.11",
// "https://[fd00::11]:9345" -> "fd00::11".
std::string supervisor_url_host(std::string_view url);

// Loads `profile_file` with the site's machines that use it as its nodes (replacing the profile's own
// `nodes:`): name, address, gateway/DNS of the machine's network, role, labels and taints, MAC/UUID
// for Talos. Errors in the derived values point at the site file.
std::optional<builder::Profile> load_site_profile(const SiteInventory& site, const std::filesystem::path& profile_file,
                                                  Diagnostics& diagnostics,
                                                  const builder::ProfileCheckOptions& options = {});

// Where `build SITE` writes a profile's outputs: <site.output>/<profile name>.
std::filesystem::path profile_output_directory(const SiteInventory& site, const builder::Profile& profile);

}  // namespace aggrik8s::site

namespace aggrik8s::site {

// A site with every profile it uses loaded (with the site's machines as their nodes): what `build`,
// `serve --site`, `export` and `status` work from.
struct LoadedSite {
  SiteInventory site;
  std::map<std::filesystem::path, builder::Profile> profiles;  // by Machine::profile
  const builder::Profile& profile_of(const Machine& machine) const { return profiles.at(machine.profile); }
  // Every file the site is read from, with what it is ("the site file", "profile", "secret file"): the
  // site, each profile and the files it extends, the secret files the profiles name. What `export -o`
  // must never replace.
  struct InputFile {
    std::filesystem::path path;
    std::string what;
  };
  std::vector<InputFile> input_files() const;
};

// read_site_inventory + check_site + load_site_profile for every profile; nullopt when any error was
// reported (all of them are in `diagnostics`).
std::optional<LoadedSite> load_site(const std::filesystem::path& file, Diagnostics& diagnostics,
                                    const builder::ProfileCheckOptions& options = {});

// The machine.type ("controlplane", "init", "worker") of the machine config a talos-iso profile builds
// its nodes from, "" when it cannot be read (the profile's own checks say why). The config is a secret
// that builder/talos reads (builder::talos_profile_machine_type); a test gives its own.
using TalosMachineTypeOf = std::function<std::string(const builder::Profile& profile)>;

// A Talos machine's role against what its profile builds, the "role that does not fit the profile" rule
// for talos-iso profiles: role controlplane needs machine.type controlplane or init, role worker
// machine.type worker (errors at the machine's role). It reads the configs, secrets, so `validate` and
// `build` run it; `export` and `serve --site`, which read no secret, do not.
void check_site_talos_roles(const LoadedSite& site, const TalosMachineTypeOf& machine_type_of, Diagnostics& diagnostics);

}  // namespace aggrik8s::site
