#include "netboot/service/netboot_service.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <array>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.hpp"
#include "core/identifiers.hpp"
#include "core/log.hpp"
#include "core/log_escape.hpp"
#include "core/secret.hpp"
#include "netboot/service/boot_event_log.hpp"
#include "netboot/service/dhcp_boot_decision.hpp"
#include "netboot/service/dhcp_node_clients.hpp"
#include "netboot/service/http_tls_setup.hpp"
#include "netboot/service/ephemeral_identity.hpp"
#include "netboot/service/ephemeral_pi_build.hpp"
#include "netboot/dhcp/dhcp_server.hpp"
#include "netboot/http/http_request_target.hpp"
#include "netboot/http/http_server.hpp"
#include "netboot/service/ipxe_kernel_line.hpp"
#include "netboot/service/ipxe_script.hpp"
#include "netboot/service/netboot_metrics.hpp"
#include "netboot/service/node_inventory.hpp"
#include "netboot/service/node_secret_access.hpp"
#include "netboot/service/talos_wipe_state_file.hpp"
#include "netboot/tftp/tftp_server.hpp"

namespace aggrik8s::netboot {

namespace asio = boost::asio;
namespace fs = std::filesystem;

std::optional<InterfaceIpv4> interface_ipv4(const std::string& name) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) throw_system_error("listing network interfaces", errno);
  std::optional<InterfaceIpv4> found;
  for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) continue;
    if (name != entry->ifa_name) continue;
    sockaddr_in address{}, netmask{};
    std::memcpy(&address, entry->ifa_addr, sizeof address);
    if (entry->ifa_netmask != nullptr) std::memcpy(&netmask, entry->ifa_netmask, sizeof netmask);
    char text[INET_ADDRSTRLEN] = {}, mask[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &address.sin_addr, text, sizeof text);
    ::inet_ntop(AF_INET, &netmask.sin_addr, mask, sizeof mask);
    found = InterfaceIpv4{text, entry->ifa_netmask != nullptr ? mask : "255.255.255.255"};
    break;
  }
  ::freeifaddrs(list);
  return found;
}

std::string resolve_listen_address(const NetbootConfig& config) {
  if (!config.interface) return config.address;
  auto found = interface_ipv4(*config.interface);
  if (!found) throw Error("interface " + *config.interface + " has no IPv4 address (listen.interface)");
  return found->address;
}

namespace {

using Clock = std::chrono::steady_clock;

std::string client_text(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
  }
  return address.to_string();
}

std::chrono::milliseconds millis(Clock::duration duration) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(duration);
}

// Everything a request is answered from; replaced as a whole on reload.
struct ServingSnapshot {
  NetbootConfig config;
  NodeInventory inventory;
  std::shared_ptr<const TftpFileSource> tftp_root;
  std::optional<TftpRoot> http_root;
  std::map<std::string, std::shared_ptr<const FatImageFileSource>> pi_images;  // by profile name
  std::string base_url;
  std::shared_ptr<TalosWipeStateStore> talos_wipe;  // when a Talos profile is rebuild-on-reboot
  std::string uefi_http_x64_file = DhcpBootSettings{}.uefi_http_x64_file;  // under /files/
};

// The nodes of config.inventory, or of config.site through `site_nodes` (the nodes file it derives).
NodeInventory read_configured_inventory(const NetbootConfig& config, const SiteNodesFileLoader& site_nodes,
                                        Diagnostics& diagnostics) {
  if (!config.site) return read_node_inventory(*config.inventory, diagnostics);
  if (!site_nodes) throw Error("site " + config.site->string() + ": this program cannot read site inventories");
  ConfigNode tree = site_nodes(*config.site, diagnostics);
  if (diagnostics.has_errors()) return {};
  NodeInventory inventory = parse_node_inventory(tree, diagnostics);
  inventory.file = *config.site;
  return inventory;
}

std::shared_ptr<const ServingSnapshot> load_snapshot(NetbootConfig config, const std::string& bound_address,
                                                     std::uint16_t http_port, const SiteNodesFileLoader& site_nodes,
                                                     const ServingSnapshot* previous = nullptr) {
  auto snapshot = std::make_shared<ServingSnapshot>();
  // https:// when the http.port listener speaks only HTTPS (http.tls without http.tls_port).
  std::string scheme = config.http_tls() && !config.http_tls_port ? "https://" : "http://";
  snapshot->base_url = config.http_base_url.value_or(scheme + bound_address + ":" + std::to_string(http_port));
  if (config.inventory || config.site) {
    Diagnostics diagnostics;
    snapshot->inventory = read_configured_inventory(config, site_nodes, diagnostics);
    // A kernel line longer than the kernel keeps loses its last arguments (talos.config=...) at boot,
    // silently: refused here, with the URLs this snapshot will write into the scripts.
    if (!diagnostics.has_errors() && config.http_enabled) {
      check_ipxe_kernel_lines(snapshot->inventory, snapshot->base_url, read_profile_kernels(snapshot->inventory, diagnostics),
                              diagnostics);
    }
    for (const auto& d : diagnostics.all()) {
      // d.str() would say "warning: " a second time after the logger's own.
      if (d.severity == Diagnostic::Severity::warning) log::warning(d.where.str(), ": ", d.message);
    }
    diagnostics.throw_if_errors(config.site ? "site " + config.site->string() : "nodes file " + config.inventory->string());
  }
  if (config.tftp_root) {
    snapshot->tftp_root = std::make_shared<TftpDirectorySource>(*config.tftp_root, ConfinedReach::world_readable_only);
  }
  if (config.http_root) snapshot->http_root.emplace(*config.http_root, ConfinedReach::world_readable_only);
  // UEFI HTTP boot gets snponly.efi when http.root serves it; ipxe.efi, as before, when it does not
  // (it works, slower: DhcpBootSettings::uefi_http_x64_file says why).
  if (snapshot->http_root && snapshot->http_root->open(snapshot->uefi_http_x64_file).status != TftpOpenStatus::opened) {
    log::info("http.root ", snapshot->http_root->path().string(), " has no ", snapshot->uefi_http_x64_file,
              ": UEFI HTTP boot clients get ", DhcpBootSettings{}.uefi_x64_file, " (docs/netboot.md, \"UEFI HTTP boot\")");
    snapshot->uefi_http_x64_file = DhcpBootSettings{}.uefi_x64_file;
  }
  for (const auto& [name, profile] : snapshot->inventory.profiles) {
    if (const auto* pi = std::get_if<RaspberryPiImageBoot>(&profile.target)) {
      snapshot->pi_images[name] = std::make_shared<FatImageFileSource>(pi->image, pi->boot_partition);
    }
    if (std::holds_alternative<RaspberryPiEphemeralBoot>(profile.target) && !state_directory(config)) {
      throw Error("profile " + name + " (rpi_ephemeral): its nodes' identities (node password, SSH host key) are "
                  "kept in the state directory: set state_dir (or dhcp.lease_file) in " + config.file.string());
    }
    if (const auto* ephemeral = std::get_if<RaspberryPiEphemeralBoot>(&profile.target)) {
      // The build's signed boot.imgs carry their root and identity URLs: they must be where this
      // server answers (output.ephemeral.serve_url and serve_profile against base_url and this
      // profile's name), or every HTTP-booted node fetches 404s and reboots.
      std::string expected = snapshot->base_url + "/ephemeral/" + name;
      std::shared_ptr<const EphemeralBuild> current;
      try {
        current = EphemeralPiBuilds(ephemeral->build).current();
      } catch (const Error&) {
        // No build yet, or a broken one: reported when a node asks, as before.
      }
      if (current && current->manifest.http_boot_url_base && *current->manifest.http_boot_url_base != expected) {
        throw Error("profile " + name + " (rpi_ephemeral): the build's boot.imgs point their nodes at " +
                    *current->manifest.http_boot_url_base + ", but this server answers at " + expected +
                    ": build with output.ephemeral.serve_url: " + snapshot->base_url + " and serve_profile: " + name +
                    " (docs/profiles.md, \"HTTP boot\")");
      }
    }
    if (std::holds_alternative<RaspberryPiEphemeralBoot>(profile.target) && !snapshot->base_url.starts_with("http://")) {
      // The node's initramfs fetches its root and identity from these URLs with busybox wget: no TLS.
      throw Error("profile " + name + " (rpi_ephemeral): its nodes fetch their root and identity from " +
                  snapshot->base_url + " with busybox wget, which has no TLS there: keep plain HTTP beside HTTPS "
                  "(http.tls_port), or set http.base_url to an http:// URL, in " + config.file.string());
    }
  }
  // Kept across reloads (one store per file: two would each write their own view of it).
  if (auto file = talos_wipe_state_path(config, snapshot->inventory)) {
    bool same = previous != nullptr && previous->talos_wipe && previous->talos_wipe->file() == *file;
    snapshot->talos_wipe = same ? previous->talos_wipe : std::make_shared<TalosWipeStateStore>(*file);
  }
  snapshot->config = std::move(config);
  return snapshot;
}

// What identifies the machine behind a TFTP request, and the file name inside its tree.
struct TftpNodeLookup {
  const InventoryNode* node = nullptr;
  const BootProfile* profile = nullptr;
  std::string filename;      // inside the node's tree (the serial/MAC directory stripped)
  std::string prefix;        // the serial/MAC directory the client asked under, "" if none
  bool by_prefix = false;    // the first path component named a serial or MAC
};

// The start of the reason a TFTP transfer of a node's secret file was refused with; tftp_event tells a
// refusal from a missing file by it.
constexpr std::string_view secret_refusal = "secret file refused: ";

// What a Pi's secret boot-partition file is read from when the client may not have it: every open is
// an access violation, so the TFTP server answers ERROR 2 and logs the reason.
class RefusedFileSource final : public TftpFileSource {
 public:
  explicit RefusedFileSource(std::string reason) : reason_(std::move(reason)) {}
  TftpOpenedFile open(std::string_view, std::span<const std::string>) const override {
    TftpOpenedFile file;
    file.status = TftpOpenStatus::access_violation;
    file.reason = reason_;
    return file;
  }
  std::string describe() const override { return "(refused)"; }

 private:
  std::string reason_;
};

std::vector<NeighbourEntry> read_neighbour_table(const fs::path& path) {
  std::ifstream in(path);
  if (!in) {
    log::debug("neighbour table ", path.string(), " cannot be read: no neighbour proof for anyone");
    return {};
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_proc_net_arp(text.str());
}

// The served subnet holding `address`, if any.
std::optional<std::size_t> dhcp_subnet_holding(const std::vector<DhcpSubnet>& subnets, std::uint32_t address) {
  for (std::size_t i = 0; i < subnets.size(); ++i) {
    if (subnets[i].contains(address)) return i;
  }
  return std::nullopt;
}

// Full-mode DHCP reservations: nodes with a pinned address and a MAC selector. With `subnets` (full
// mode), only those whose address is on one of them: a reservation off every subnet would give the node
// an address off its link, with this link's router and DNS (a site's machine of another network, served
// from this interface). Those get none; each is said in `warnings` (start, reload and --check).
std::map<std::string, std::uint32_t> dhcp_reservations_on(const NodeInventory& inventory,
                                                         const std::vector<DhcpSubnet>& subnets,
                                                         std::vector<std::string>& warnings) {
  std::map<std::string, std::uint32_t> reservations;
  for (const auto& node : inventory.nodes) {
    const auto& mac = node.match.mac ? node.match.mac : node.reservation_mac;
    if (!node.address || !mac) continue;
    auto address = parse_ipv4(*node.address);
    if (!address) continue;
    if (subnets.empty() || dhcp_subnet_holding(subnets, *address)) {
      reservations[*mac] = *address;
      continue;
    }
    std::string served;
    for (const auto& subnet : subnets) {
      unsigned length = netmask_prefix_length(subnet.netmask).value_or(32);
      served += (served.empty() ? "" : ", ") + ipv4_to_string(subnet.network) + "/" + std::to_string(length);
    }
    warnings.push_back("dhcp: node " + node.name + "'s address " + *node.address + " (" + *mac +
                       ") is on none of the subnets this server leases on (" + served +
                       "): no reservation for it here (on this link it gets a pool address, with this link's "
                       "router and DNS); serve its network from an interface on it, or list that subnet in "
                       "dhcp.relayed_subnets behind a relay");
  }
  return reservations;
}

// What a node gets that only it may have, for the start-up warning: its own secret files, or what a Pi
// profile's boot serves it (the image's first-boot files, which its signed boot.img holds too, or an
// ephemeral build's identity bundle). Empty: nothing.
std::string secrets_of(const InventoryNode& node, const NodeInventory& inventory) {
  if (node.talos_config || node.user_data || node.rke2_config) return "secrets";
  const BootProfile* profile = inventory.profile_of(node);
  if (profile == nullptr || profile->mode == BootMode::local_disk) return "";
  if (std::holds_alternative<RaspberryPiImageBoot>(profile->target)) {
    return "secrets (its image's firstrun.sh, user-data, network-config)";
  }
  if (std::holds_alternative<RaspberryPiEphemeralBoot>(profile->target)) return "secrets (its ephemeral identity)";
  return "";
}

// At start and on reload: say loudly when secrets go to whoever asks, and name nodes that the policy
// will never give their secrets to, rather than letting them fail one 403 at a time.
void warn_about_secret_policy(const NetbootConfig& config, const NodeInventory& inventory) {
  if (config.node_secret_proof == NodeSecretProof::last_asker) {
    log::warning("node_secrets.proof: last-asker: a node without a pinned address or DHCP lease gives its "
                 "secrets (Talos machine config, cloud-init user-data, RKE2 config, Pi firstrun.sh/user-data) to "
                 "whichever address fetched its boot script last; anyone on the network who names the node gets "
                 "them. Pin addresses or use proof: neighbour (docs/netboot.md, \"Who gets a node's files\")");
    return;
  }
  if (config.dhcp_mode == "full") return;  // nodes get leases
  for (const auto& node : inventory.nodes) {
    std::string secrets = secrets_of(node, inventory);
    if (secrets.empty() || node.address) continue;
    if (config.node_secret_proof == NodeSecretProof::neighbour && node.match.mac) continue;
    log::warning("node ", node.name, " has ", secrets, " but no address: ", config.node_secret_proof == NodeSecretProof::neighbour
                                                                          ? "and no match.mac"
                                                                          : "(node_secrets.proof: bound)",
                 ", and without DHCP full mode it gets no lease: its secrets will be refused to every address");
  }
}

}  // namespace

struct NetbootService::Core : TftpServerObserver, HttpHandler, DhcpBootPolicy {
  Core(asio::io_context& io_context, std::string address) : io(io_context), bound_address(std::move(address)) {}

  asio::io_context& io;
  std::string bound_address;
  std::uint16_t http_port = 0;
  SiteNodesFileLoader site_nodes;  // reads config.site: at start and on every reload
  std::mutex snapshot_mutex;
  std::shared_ptr<const ServingSnapshot> snapshot;
  NodeAddressBook address_book;
  NetbootMetrics metrics;
  std::unique_ptr<BootEventLog> events;
  // Set by the service while the servers exist (io thread reads them for gauges).
  TftpServer* tftp = nullptr;
  HttpServer* http = nullptr;
  DhcpServer* dhcp = nullptr;
  std::unique_ptr<DhcpNodeClientsStore> node_clients;  // full-mode DHCP with a lease file and a state directory
  std::string dhcp_address;  // the DHCP interface's address: siaddr when TFTP listens on 0.0.0.0
  std::string dhcp_netmask;  // its subnet's (dhcp.netmask, else the interface's own)
  bool dhcp_proxy = false;   // proxyDHCP: boot answers carry what a proxy offer needs (DhcpBootSettings::proxy)

  std::shared_ptr<const ServingSnapshot> current() {
    std::lock_guard lock(snapshot_mutex);
    return snapshot;
  }

  // ---- Ephemeral Raspberry Pi nodes (netboot/service/ephemeral_pi_build.hpp, ephemeral_identity.hpp) ----
  // Kept across reloads: the pins of nodes in the middle of a boot, and one identity store per directory.
  std::mutex ephemeral_mutex;
  std::map<fs::path, std::shared_ptr<EphemeralPiBuilds>> ephemeral_builds;
  std::map<fs::path, std::shared_ptr<EphemeralIdentityStore>> identity_stores;

  std::shared_ptr<EphemeralPiBuilds> builds_of(const RaspberryPiEphemeralBoot& boot) {
    std::lock_guard lock(ephemeral_mutex);
    auto& builds = ephemeral_builds[boot.build];
    if (!builds) builds = std::make_shared<EphemeralPiBuilds>(boot.build);
    return builds;
  }

  std::shared_ptr<EphemeralIdentityStore> identities(const ServingSnapshot& s) {
    auto state = state_directory(s.config);
    if (!state) throw Error("no state directory for ephemeral node identities");
    std::lock_guard lock(ephemeral_mutex);
    auto& store = identity_stores[*state / "identity"];
    if (!store) store = std::make_shared<EphemeralIdentityStore>(*state / "identity");
    return store;
  }

  // A file of an ephemeral Pi's boot: config.txt and cmdline.txt are the node's, the rest the build's
  // boot partition files and initramfs. The first file a Pi asks for, config.txt, pins its boot to the
  // current build; old builds nobody booted within a lease time are removed then.
  TftpClientTree ephemeral_pi_tree(const ServingSnapshot& s, const TftpNodeLookup& lookup, const RaspberryPiEphemeralBoot& boot) {
    TftpClientTree tree;
    if (lookup.node == nullptr) {
      tree.refusal = "unknown machine: ephemeral nodes boot only as a node of the inventory (profile " + lookup.profile->name + ")";
      return tree;
    }
    const std::string& name = lookup.node->name;
    bool boot_starts = lookup.filename == "config.txt";
    std::shared_ptr<const EphemeralBuild> build;
    try {
      auto builds = builds_of(boot);
      build = builds->for_boot(name, boot_starts, std::chrono::steady_clock::now());
      if (boot_starts) {
        auto keep = std::max<std::chrono::steady_clock::duration>(std::chrono::seconds(s.config.dhcp_lease_time), std::chrono::hours(1));
        builds->prune(std::chrono::steady_clock::now(), keep);
      }
    } catch (const std::exception& e) {
      log::error("tftp: ephemeral build for node ", name, ": ", e.what());
      tree.refusal = std::string("ephemeral build unavailable: ") + e.what();
      return tree;
    }
    auto entry = build->manifest.nodes.find(name);
    if (entry == build->manifest.nodes.end()) {
      tree.refusal = "build " + build->manifest.id + " of " + boot.build.string() + " has no node named " + name;
      log::warning("tftp: ", tree.refusal);
      return tree;
    }
    if (lookup.filename == "cmdline.txt") {
      std::string url_base = s.base_url + "/ephemeral/" + lookup.profile->name;
      tree.source = std::make_shared<TftpGeneratedFileSource>(
          "cmdline.txt of " + name, ephemeral_node_cmdline(build->manifest, name, url_base));
      tree.filename = lookup.filename;
    } else if (boot_starts) {
      tree.source = std::make_shared<TftpDirectorySource>(build->directory);
      tree.filename = entry->second.config_txt;
    } else {
      tree.source = std::make_shared<TftpDirectorySource>(build->directory / "boot");
      tree.filename = lookup.filename;
    }
    return tree;
  }

  // Pi 5 HTTP boot (boot mode 7): the bootloader GETs <HTTP_PATH>/boot.sig, then <HTTP_PATH>/boot.img,
  // with nothing in the request that names the machine. The node is the one whose address asks (its
  // lease or pinned address), or the one whose serial is the last directory of the path (an EEPROM
  // HTTP_PATH ending in the serial, for proxy-mode DHCP: eeprom-config --serial); either way the file
  // goes only to the node's own address, as every file carrying its secrets (boot.img holds its
  // firstrun.sh or cloud-init user-data). Files: the rpi_image profile's boot_img/boot_sig, or an
  // ephemeral build's nodes/<node>/boot.img and boot.sig.
  HttpReply http_boot_request(const ServingSnapshot& s, const std::vector<std::string>& segments, const std::string& client) {
    const std::string& file = segments.back();
    std::string route = "pi-http-boot";
    const InventoryNode* node = nullptr;
    if (segments.size() >= 2) {
      if (auto serial = normalize_pi_serial(segments[segments.size() - 2])) {
        NodeFacts facts;
        facts.serial = serial;
        node = s.inventory.match(facts);
        if (node == nullptr) {
          log::info("http: ", file, " for unknown serial ", *serial, " asked by ", client);
          return text(404, "not found\n", route);
        }
      }
    }
    if (node == nullptr) {
      if (auto name = address_book.node_at(client)) node = s.inventory.find(*name);
    }
    if (node == nullptr) {
      log::info("http: ", file, " asked by ", client, ": no node has this address (lease or pinned)");
      return text(404, "not found\n", route);
    }
    const BootProfile* profile = s.inventory.profile_of(*node);
    std::optional<fs::path> path;
    if (const auto* pi = profile == nullptr ? nullptr : std::get_if<RaspberryPiImageBoot>(&profile->target)) {
      path = file == "boot.img" ? pi->boot_img : pi->boot_sig;
    } else if (const auto* ephemeral = profile == nullptr ? nullptr : std::get_if<RaspberryPiEphemeralBoot>(&profile->target)) {
      try {
        auto build = builds_of(*ephemeral)->for_boot(node->name, file == "boot.sig", std::chrono::steady_clock::now());
        path = build->directory / "nodes" / node->name / file;
      } catch (const std::exception& e) {
        log::error("http: ", file, " of node ", node->name, ": ", e.what());
      }
    }
    if (!path) {
      log::info("http: ", file, " of node ", node->name, " asked by ", client, ": its profile has no HTTP boot files");
      HttpReply none = text(404, "not found\n", route);
      none.node = node->name;
      return none;
    }
    NodeSecretDecision decision = secret_access(s, *node, client);
    if (!decision.allowed) return forbidden(*node, client, decision.why, file, route, "http-boot");
    HttpReply reply = file_reply(*path, route);
    reply.node = node->name;
    reply.step = "http-boot";
    return reply;
  }

  // GET /ephemeral/<profile>/<build>/root.squashfs (anyone: the shared root holds no secrets) and
  // /ephemeral/<profile>/<build>/identity/<node> (only the node: its token, password and host key).
  HttpReply ephemeral_request(const ServingSnapshot& s, const std::vector<std::string>& segments, const std::string& client) {
    auto profile = s.inventory.profiles.find(segments[1]);
    const auto* boot = profile == s.inventory.profiles.end() ? nullptr : std::get_if<RaspberryPiEphemeralBoot>(&profile->second.target);
    if (boot == nullptr) return text(404, "not found\n", "ephemeral");
    auto build = builds_of(*boot)->find(segments[2]);
    if (!build) return text(404, "not found\n", "ephemeral");
    if (segments.size() == 4 && segments[3] == build->manifest.root_file) {
      HttpReply reply = file_reply(build->directory / build->manifest.root_file, "ephemeral-root");
      reply.step = "ephemeral-root";
      if (auto name = address_book.node_at(client)) reply.node = *name;
      return reply;
    }
    if (segments.size() != 5 || segments[3] != "identity") return text(404, "not found\n", "ephemeral");
    const InventoryNode* node = s.inventory.find(segments[4]);
    auto entry = build->manifest.nodes.find(segments[4]);
    if (node == nullptr || node->profile != profile->first || entry == build->manifest.nodes.end()) {
      return text(404, "not found\n", "ephemeral-identity");
    }
    NodeSecretDecision decision = secret_access(s, *node, client);
    if (!decision.allowed) return forbidden(*node, client, decision.why, "the identity", "ephemeral-identity", "ephemeral-identity");
    HttpReply reply;
    reply.route = "ephemeral-identity";
    reply.step = "ephemeral-identity";
    reply.node = node->name;
    reply.content_type = "application/x-tar";
    try {
      std::string layer;
      fs::path layer_file = build->directory / entry->second.layer;
      std::ifstream in(layer_file, std::ios::binary);
      if (!in) throw Error("cannot read " + layer_file.string());
      std::ostringstream bytes;
      bytes << in.rdbuf();
      NodeIdentity identity = identities(s)->get_or_create(node->name);
      reply.body = identity_bundle_tar(identity, bytes.str(), entry->second.hostname, std::nullopt);
      log::info("http: identity of node ", node->name, " (build ", build->manifest.id, ") to ", client, ": ", decision.why);
    } catch (const std::exception& e) {
      log::error("http: identity of node ", node->name, ": ", e.what());
      metrics.add("aggrik8s_errors_total", {{"kind", "identity_unavailable"}});
      reply.status = 500;
      reply.body = "the node's identity is unavailable\n";
    }
    return reply;
  }

  void install(std::shared_ptr<const ServingSnapshot> fresh) {
    std::map<std::string, std::string> pinned;
    for (const auto& node : fresh->inventory.nodes) {
      if (node.address) pinned[node.name] = *node.address;
    }
    address_book.set_pinned(pinned);
    if (dhcp != nullptr) dhcp->set_reservations(dhcp_reservations(*fresh));
    metrics.set_gauge("aggrik8s_inventory_nodes", {}, fresh->inventory.nodes.size());
    std::lock_guard lock(snapshot_mutex);
    snapshot = std::move(fresh);
  }

  // The reservations of the current inventory (dhcp_reservations_on), its warnings logged.
  std::vector<DhcpSubnet> dhcp_subnets_served;  // full mode only
  std::map<std::string, std::uint32_t> dhcp_reservations(const ServingSnapshot& s) const {
    std::vector<std::string> warnings;
    auto reservations = dhcp_reservations_on(s.inventory, dhcp_subnets_served, warnings);
    for (const auto& warning : warnings) log::warning(warning);
    return reservations;
  }

  // DhcpBootPolicy: the boot answer from the current inventory, and leases into the address book.
  DhcpBootAnswer boot_answer(const DhcpPacket& request) override {
    auto s = current();
    DhcpBootSettings settings;
    std::string tftp_address = bound_address == "0.0.0.0" ? dhcp_address : bound_address;
    settings.tftp_server = parse_ipv4(tftp_address).value_or(0);
    settings.http_base_url = s->base_url;
    settings.uefi_http_x64_file = s->uefi_http_x64_file;
    settings.proxy = dhcp_proxy;
    return decide_dhcp_boot(request, s->inventory, settings);
  }

  // The DHCP server keeps its own atomic totals (it counts on its hot path without the metrics lock);
  // they are copied into the metrics when /metrics is read. Every series is written, zeros too, so a
  // scrape sees each counter from the start.
  void publish_dhcp_counters(const DhcpServerCounters& c) {
    const auto& by_type = c.received_by_type;
    // Clients send these five; anything else (no type, another server's OFFER/ACK/NAK) is "other".
    const std::pair<const char*, std::uint64_t> received[] = {
        {"discover", by_type[1]}, {"request", by_type[3]}, {"decline", by_type[4]}, {"release", by_type[7]},
        {"inform", by_type[8]},   {"other", by_type[0] + by_type[2] + by_type[5] + by_type[6]}};
    for (const auto& [type, count] : received) metrics.set_counter("aggrik8s_dhcp_received_total", {{"type", type}}, count);
    metrics.set_counter("aggrik8s_dhcp_sent_total", {{"type", "offer"}}, c.offers);
    metrics.set_counter("aggrik8s_dhcp_sent_total", {{"type", "ack"}}, c.acks);
    metrics.set_counter("aggrik8s_dhcp_sent_total", {{"type", "nak"}}, c.naks);
    for (std::size_t i = 1; i < c.dropped.size(); ++i) {
      auto reason = static_cast<DhcpDropReason>(i);
      metrics.set_counter("aggrik8s_dhcp_dropped_total", {{"reason", to_string(reason)}}, c.dropped[i]);
    }
    metrics.set_counter("aggrik8s_dhcp_journal_writes_total", {{"kind", "append"}}, c.journal_appends);
    metrics.set_counter("aggrik8s_dhcp_journal_writes_total", {{"kind", "compaction"}}, c.journal_compactions);
    metrics.set_gauge("aggrik8s_dhcp_leases_active", {}, c.leases_active);
  }

  void leased(const DhcpPacket& request, const DhcpLease& lease) override {
    auto s = current();
    const InventoryNode* node = s->inventory.match(dhcp_node_facts(request));
    metrics.add("aggrik8s_dhcp_leases_total", {});
    // The tie lasts as long as the lease: a node's address leased to anyone else later, released or
    // expired must not hand the next holder the node's secrets.
    const std::chrono::system_clock::time_point expires{std::chrono::seconds(lease.expires)};
    if (node != nullptr) {
      address_book.record_lease(node->name, ipv4_to_string(lease.address), expires, lease.client);
      if (node_clients) node_clients->remember(lease.client, node->name);
    } else {
      address_book.record_other_lease(ipv4_to_string(lease.address), lease.client, expires);
    }
  }
  void lease_ended(std::uint32_t address) override { address_book.address_ended(ipv4_to_string(address)); }

  // At start: the unexpired leases of clients known to be nodes (dhcp_node_clients.hpp) tie those
  // nodes to their addresses again, as they did before the restart.
  void restore_node_leases(const ServingSnapshot& s, const std::vector<DhcpLease>& leases) {
    const auto now = std::chrono::system_clock::now();
    std::size_t restored = 0;
    for (const auto& lease : leases) {
      const std::chrono::system_clock::time_point expires{std::chrono::seconds(lease.expires)};
      auto node = node_clients->node_of(lease.client);
      if (!node || expires <= now || s.inventory.find(*node) == nullptr) continue;
      address_book.record_lease(*node, ipv4_to_string(lease.address), expires, lease.client);
      ++restored;
    }
    if (restored != 0) {
      log::info("dhcp: ", restored, " node", restored == 1 ? "" : "s", " tied to their leased addresses again (",
                node_clients->file().string(), ")");
    }
  }

  void record(BootEvent event) {
    event.time = std::chrono::system_clock::now();
    metrics.boot_step(event);
    if (events) events->write(event);
  }

  // The one rule for every secret of a node, over HTTP and TFTP (netboot/service/node_secret_access.hpp).
  NodeSecretDecision secret_access(const ServingSnapshot& s, const InventoryNode& node, const std::string& client) {
    NodeSecretRequest request{node.name, address_book.address_of(node.name), node.match.mac, client,
                              s.config.node_secret_proof};
    return decide_node_secret_access(request, [&] { return read_neighbour_table(s.config.neighbour_table); });
  }

  // ---- TFTP ----

  TftpNodeLookup lookup_tftp(const ServingSnapshot& s, const std::string& client, const std::string& filename) {
    TftpNodeLookup lookup;
    lookup.filename = filename;
    TftpRelativePath relative = normalize_tftp_request_path(filename);
    if (relative.ok()) {
      auto slash = relative.path.find('/');
      if (slash != std::string::npos) {
        std::string first = relative.path.substr(0, slash);
        NodeFacts facts;
        if (auto serial = normalize_pi_serial(first)) {
          facts.serial = serial;
        } else if (auto mac = normalize_mac(first)) {
          facts.mac = mac;
        }
        if (facts.serial || facts.mac) {
          lookup.by_prefix = true;
          lookup.prefix = first;
          lookup.filename = relative.path.substr(slash + 1);
          lookup.node = s.inventory.match(facts);
          if (lookup.node != nullptr) {
            lookup.profile = s.inventory.profile_of(*lookup.node);
          } else {
            lookup.profile = s.inventory.unknown_node_profile();
          }
          return lookup;
        }
      }
    }
    if (auto name = address_book.node_at(client)) {
      lookup.node = s.inventory.find(*name);
      if (lookup.node != nullptr) lookup.profile = s.inventory.profile_of(*lookup.node);
    }
    return lookup;
  }

  std::optional<TftpClientTree> tftp_tree(const asio::ip::address& address, const std::string& filename) {
    auto s = current();
    std::string client = client_text(address);
    TftpNodeLookup lookup = lookup_tftp(*s, client, filename);
    TftpClientTree tree;
    if (const auto* ephemeral = lookup.profile != nullptr ? std::get_if<RaspberryPiEphemeralBoot>(&lookup.profile->target) : nullptr) {
      if (lookup.node != nullptr) address_book.record_seen(lookup.node->name, client);
      return ephemeral_pi_tree(*s, lookup, *ephemeral);
    }
    if (lookup.by_prefix && lookup.node != nullptr && lookup.profile != nullptr &&
        std::holds_alternative<LocalDiskBoot>(lookup.profile->target)) {
      // A Pi asking its serial (or MAC) directory: "File not found" sends it on to its next boot mode.
      address_book.record_seen(lookup.node->name, client);
      tree.refusal = "node boots from its local disk (mode: local)";
      return tree;
    }
    const auto* pi = lookup.profile != nullptr ? std::get_if<RaspberryPiImageBoot>(&lookup.profile->target) : nullptr;
    if (pi != nullptr) {
      if (lookup.node != nullptr) address_book.record_seen(lookup.node->name, client);
      if (lookup.profile->mode == BootMode::local_disk) {
        tree.refusal = "node boots from its local disk (mode: local)";
        return tree;
      }
      if (is_secret_boot_partition_file(lookup.filename)) {
        // An unknown machine has nothing to prove its address with; the image it would get is a
        // profile's, shared, and its firstrun.sh is not for whoever names a new serial.
        NodeSecretDecision decision = lookup.node != nullptr ? secret_access(*s, *lookup.node, client)
                                                             : NodeSecretDecision{false, "unknown machine"};
        if (!decision.allowed) {
          log::warning("tftp: refused ", log_escape(filename), " of ",
                       lookup.node != nullptr ? "node " + lookup.node->name : std::string("profile ") + lookup.profile->name,
                       " to ", client, ": ", decision.why);
          metrics.add("aggrik8s_errors_total", {{"kind", "forbidden"}});
          tree.source = std::make_shared<RefusedFileSource>(std::string(secret_refusal) + decision.why);
          tree.filename = lookup.filename;
          return tree;
        }
      }
      tree.source = s->pi_images.at(lookup.profile->name);
      tree.filename = lookup.filename;
      return tree;
    }
    if (lookup.by_prefix && lookup.node == nullptr && lookup.profile == nullptr && s->tftp_root) {
      // An unknown Pi: with unknown_nodes: ignore it gets nothing from its serial directory, and the Pi
      // then retries without the prefix, where the shared tree decides.
      tree.source = s->tftp_root;
      tree.filename = filename;
      return tree;
    }
    if (!s->tftp_root) {
      tree.refusal = "no TFTP root configured and no Raspberry Pi image for this client";
      return tree;
    }
    tree.source = s->tftp_root;
    tree.filename = filename;
    return tree;
  }

  void tftp_event(const TftpTransferEnded& event) {
    auto s = current();
    std::string client = client_text(event.client.address());
    TftpNodeLookup lookup = lookup_tftp(*s, client, event.requested);
    BootEvent boot;
    boot.node = lookup.node != nullptr ? lookup.node->name : "";
    boot.client = client;
    boot.step = "tftp";
    boot.file = event.requested;
    boot.bytes = event.bytes_sent;
    boot.duration = millis(event.duration);
    boot.detail = event.detail;
    switch (event.outcome) {
      case TftpTransferOutcome::completed: boot.result = "ok"; break;
      case TftpTransferOutcome::probe: boot.result = "probe"; break;
      case TftpTransferOutcome::failed:
        // As HTTP counts 403 and 404 apart: a refusal ("..", a directory, a private file) is not a missing file.
        boot.result = event.detail.starts_with(secret_refusal) ? "refused"
                      : !event.refused_with                    ? "failed"
                      : *event.refused_with == TftpErrorCode::file_not_found ? "not-found"
                                                                             : "refused";
        break;
    }
    metrics.add("aggrik8s_tftp_transfers_total", {{"result", boot.result}});
    if (event.outcome != TftpTransferOutcome::failed) metrics.add("aggrik8s_tftp_sent_bytes_total", {}, event.bytes_sent);
    record(std::move(boot));
  }

  void transfer_finished(const TftpTransferEnded& event) override { tftp_event(event); }
  void transfer_failed(const TftpTransferEnded& event) override { tftp_event(event); }

  // ---- HTTP ----

  static HttpReply text(unsigned status, std::string body, std::string route) {
    HttpReply reply;
    reply.status = status;
    reply.body = std::move(body);
    reply.route = std::move(route);
    return reply;
  }

  HttpReply file_reply(const fs::path& path, std::string route) {
    // The same confinement as TFTP (netboot/confined_file.hpp: links out only to public files,
    // regular files only), for the declared asset's own directory. Absolute first: an asset beside a
    // nodes file given as "nodes.yaml" has no parent directory in its name.
    TftpOpenedFile file;
    try {
      TftpRoot directory(fs::absolute(path).parent_path());
      file = directory.open(path.filename().string());
    } catch (const std::exception& e) {
      file.status = TftpOpenStatus::not_found;
      file.reason = e.what();
    }
    if (file.status != TftpOpenStatus::opened) {
      log::warning("http: declared asset ", path.string(), " cannot be served: ", log_escape(file.reason));
      return text(404, "not found\n", std::move(route));
    }
    HttpReply reply;
    reply.file = std::move(file.fd);
    reply.file_size = file.size;
    reply.content_type = "application/octet-stream";
    reply.route = std::move(route);
    return reply;
  }

  // A node named in the URL: by MAC (either form), UUID or Pi serial.
  static NodeFacts facts_from(const std::string& id) {
    NodeFacts facts;
    if (auto mac = normalize_mac(id)) {
      facts.mac = mac;
    } else if (auto uuid = normalize_uuid(id)) {
      facts.uuid = uuid;
    } else if (auto serial = normalize_pi_serial(id)) {
      facts.serial = serial;
    }
    return facts;
  }

  HttpReply forbidden(const InventoryNode& node, const std::string& client, const std::string& why,
                      const std::string& what, std::string route, std::string step) {
    log::warning("http: refused ", what, " of node ", node.name, " to ", client, ": ", why);
    metrics.add("aggrik8s_errors_total", {{"kind", "forbidden"}});
    HttpReply reply = text(403, "forbidden\n", std::move(route));
    reply.node = node.name;
    reply.step = std::move(step);
    return reply;
  }

  HttpReply boot_script(const ServingSnapshot& s, const HttpRequestTarget& target, const std::string& client) {
    NodeFacts facts;
    if (auto mac = target.query_value("mac")) facts.mac = normalize_mac(*mac);
    if (auto uuid = target.query_value("uuid")) facts.uuid = normalize_uuid(*uuid);
    if (auto serial = target.query_value("serial")) facts.serial = normalize_pi_serial(*serial);
    // Unknown or missing platform: render for UEFI, since initrd= on the kernel line is harmless
    // under BIOS and required under UEFI.
    IpxePlatform platform = parse_ipxe_platform(target.query_value("platform").value_or("")).value_or(IpxePlatform::efi);
    const InventoryNode* node = s.inventory.match(facts);
    const BootProfile* profile = node != nullptr ? s.inventory.profile_of(*node) : s.inventory.unknown_node_profile();
    if (profile == nullptr) {
      log::info("http: no boot script for unknown machine ", client, " mac=", facts.mac.value_or("-"),
                " uuid=", facts.uuid.value_or("-"), " (unknown_nodes: ignore)");
      HttpReply reply = text(404, "#!ipxe\necho This machine is not in the inventory\nexit 1\n", "ipxe");
      reply.step = "ipxe-script";
      return reply;
    }
    if (node != nullptr) {
      auto expected = address_book.address_of(node->name);
      if (check_boot_script_access(expected, client) != NodeAccess::allowed) {
        return forbidden(*node, client, "the node is at " + expected->address + " (" + to_string(expected->source) + ")",
                         "the boot script", "ipxe", "ipxe-script");
      }
      address_book.record_seen(node->name, client);
    }
    HttpReply reply;
    reply.route = "ipxe";
    reply.step = "ipxe-script";
    reply.node = node != nullptr ? node->name : "";
    reply.content_type = "text/plain; charset=utf-8";
    if (profile->mode == BootMode::local_disk) {
      reply.body = render_ipxe_local_disk_script(platform);
      return reply;
    }
    auto boot = ipxe_kernel_boot(*profile, node, facts, s.base_url);
    if (!boot) {
      HttpReply none = text(404, "#!ipxe\necho This node boots a Raspberry Pi image over TFTP\nexit 1\n", "ipxe");
      none.node = reply.node;
      none.step = "ipxe-script";
      return none;
    }
    if (node != nullptr) apply_talos_wipe_cycle(s, *profile, *node, client, *boot);
    reply.body = render_ipxe_boot_script(*boot, platform);
    return reply;
  }

  // ---- Rebuild-on-reboot Talos nodes (netboot/service/talos_wipe_cycle.hpp) ----

  // The node's wipe cycle decides whether this boot is the wipe boot.
  void apply_talos_wipe_cycle(const ServingSnapshot& s, const BootProfile& profile, const InventoryNode& node,
                              const std::string& client, IpxeKernelBoot& boot) {
    const auto* talos = std::get_if<TalosBoot>(&profile.target);
    if (talos == nullptr || profile.mode != BootMode::ephemeral || !s.talos_wipe) return;
    TalosWipeDecision decision = s.talos_wipe->script_requested(node.name, WallClock::now(), talos->wipe_reboot_window, client);
    bool wipe = decision.boot == TalosBootKind::wipe;
    if (wipe) boot.arguments += " " + talos_wipe_kernel_argument(talos->wipe);
    metrics.add(wipe ? "aggrik8s_talos_wipe_boots_total" : "aggrik8s_talos_normal_boots_total", {{"node", node.name}});
    talos_wipe_changed(node.name, client, wipe ? "wipe-boot" : "normal-boot", decision.transition, decision.next);
  }

  void talos_boot_files_fetched(const std::string& node, const std::string& client) {
    auto s = current();
    if (!s->talos_wipe) return;
    if (auto fetched = s->talos_wipe->boot_files_fetched(node, WallClock::now(), client)) {
      talos_wipe_changed(node, client, "wipe-cycle", fetched->transition, fetched->next);
    }
  }

  void talos_wipe_changed(const std::string& node, const std::string& client, std::string step,
                          TalosWipeTransition transition, const TalosWipeCycle& cycle) {
    metrics.add("aggrik8s_talos_wipe_transitions_total", {{"node", node}, {"transition", to_string(transition)}});
    std::string_view state = talos_wipe_cycle_state(cycle);
    for (const char* each : talos_wipe_cycle_states) {
      metrics.set_gauge("aggrik8s_talos_wipe_cycle_state", {{"node", node}, {"state", each}}, state == each ? 1 : 0);
    }
    log::info("talos wipe cycle: node ", node, " at ", client, ": ", step, " (", to_string(transition), ")");
    BootEvent event;
    event.node = node;
    event.client = client;
    event.step = std::move(step);
    event.result = "ok";
    event.detail = std::string("transition=") + to_string(transition);
    record(std::move(event));
  }

  // For the status page's profile column: " (wipe cycle: ...)" for a rebuild-on-reboot Talos node.
  static std::string talos_wipe_status(const ServingSnapshot& s, const InventoryNode& node) {
    const BootProfile* profile = s.inventory.profile_of(node);
    const auto* talos = profile != nullptr ? std::get_if<TalosBoot>(&profile->target) : nullptr;
    if (talos == nullptr || profile->mode != BootMode::ephemeral || !s.talos_wipe) return "";
    auto cycle = s.talos_wipe->find(node.name);
    if (!cycle) return " (wipe cycle: not booted yet; next script: wipe boot)";
    return " (wipe cycle: " + describe_talos_wipe_cycle(*cycle, WallClock::now(), talos->wipe_reboot_window) + ")";
  }

  HttpReply node_file(const ServingSnapshot& s, const std::string& id, const std::string& which, const std::string& client) {
    const InventoryNode* node = s.inventory.named_by(facts_from(id));
    std::string route = which == "talos" ? "talos-config" : which == "rke2" ? "rke2-config" : "cloud-init";
    if (node == nullptr) {
      log::info("http: ", route, " for \"", log_escape(id), "\" asked by ", client, ": no such node");
      return text(404, "not found\n", route);
    }
    std::string step = route;
    const std::optional<SecretReference>* reference = nullptr;
    std::string content_type = "text/plain; charset=utf-8";
    if (which == "talos") {
      reference = &node->talos_config;
      content_type = "application/yaml";
    } else if (which == "rke2") {
      reference = &node->rke2_config;
      content_type = "application/yaml";
    } else if (which == "user-data") {
      reference = &node->user_data;
    }
    NodeSecretDecision decision = secret_access(s, *node, client);
    if (!decision.allowed) return forbidden(*node, client, decision.why, route, route, step);
    log::debug("http: ", route, " of node ", node->name, " to ", client, ": ", decision.why);
    HttpReply reply;
    reply.route = route;
    reply.node = node->name;
    reply.step = step;
    reply.content_type = content_type;
    if (which == "meta-data") {
      reply.body = "instance-id: " + node->name + "\nlocal-hostname: " + node->name + "\n";
      return reply;
    }
    if (which == "vendor-data") {
      reply.body = "";
      return reply;
    }
    if (reference == nullptr || !*reference) {
      reply.status = 404;
      reply.body = "not found\n";
      return reply;
    }
    try {
      reply.body = load_secret(**reference).reveal();
    } catch (const std::exception& e) {
      log::error("http: ", route, " of node ", node->name, ": ", e.what());
      metrics.add("aggrik8s_errors_total", {{"kind", "secret_unavailable"}});
      reply.status = 500;
      reply.body = "the node's file is unavailable\n";
    }
    return reply;
  }

  HttpReply handle(const HttpRequestInfo& request) override {
    auto s = current();
    std::string client = client_text(request.client);
    HttpRequestTarget target = parse_http_request_target(request.target);
    if (!target.ok()) {
      log::warning("http: ", client, " ", log_escape(request.method), " refused: ", target.refusal);
      metrics.add("aggrik8s_errors_total", {{"kind", "bad_target"}});
      return target.too_long ? text(414, "URI too long\n", "invalid") : text(400, "bad request\n", "invalid");
    }
    auto segments = target.segments();
    // Every route names a file ("/" aside); "config.yaml/" would be a directory of that name, which
    // there is not (/files/ answers the same through its lookup).
    if (target.path.size() > 1 && target.path.back() == '/' && !target.path.starts_with("/files/")) {
      return text(404, "not found\n", "invalid");
    }
    if (target.path == "/healthz") return text(200, "ok\n", "healthz");
    if (target.path == "/metrics") {
      if (tftp != nullptr) {
        TftpServerCounters counters = tftp->counters();
        metrics.set_gauge("aggrik8s_tftp_transfers_active", {}, counters.active);
        metrics.set_counter("aggrik8s_tftp_retransmissions_total", {}, counters.retransmissions);
        metrics.set_counter("aggrik8s_tftp_malformed_total", {}, counters.malformed);
      }
      if (http != nullptr) metrics.set_gauge("aggrik8s_http_connections_active", {}, http->counters().active_connections);
      if (dhcp != nullptr) publish_dhcp_counters(dhcp->counters());
      HttpReply reply = text(200, metrics.prometheus_text(), "metrics");
      reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
      return reply;
    }
    if (target.path == "/" || target.path == "/status") {
      auto seen = metrics.last_steps();
      std::vector<NodeBootStatus> rows;
      for (const auto& node : s->inventory.nodes) {
        NodeBootStatus row;
        row.node = node.name;
        for (const auto& status : seen) {
          if (status.node == node.name) row = status;
        }
        row.profile = node.profile + talos_wipe_status(*s, node);
        if (auto address = address_book.address_of(node.name)) {
          row.address = address->address + " (" + to_string(address->source) + ")";
        }
        rows.push_back(row);
      }
      for (const auto& status : seen) {
        if (status.node == "(unknown)") rows.push_back(status);
      }
      HttpReply reply = text(200, render_status_page(rows, std::to_string(s->inventory.nodes.size()) +
                                                              " nodes in the inventory; unknown nodes: " +
                                                              to_string(s->inventory.unknown_action)),
                             "status");
      reply.content_type = "text/html; charset=utf-8";
      return reply;
    }
    if (target.path == "/boot.ipxe") return text(200, render_ipxe_chain_script(s->base_url), "boot.ipxe");
    if (target.path == "/ipxe") return boot_script(*s, target, client);
    if (segments.size() == 3 && segments[0] == "assets") {
      auto profile = s->inventory.profiles.find(segments[1]);
      if (profile != s->inventory.profiles.end()) {
        auto assets = profile->second.assets();
        if (auto asset = assets.find(segments[2]); asset != assets.end()) {
          HttpReply reply = file_reply(asset->second, "asset");
          reply.step = "asset";
          if (auto name = address_book.node_at(client)) reply.node = *name;
          return reply;
        }
      }
      return text(404, "not found\n", "asset");
    }
    if (segments.size() == 3 && segments[0] == "talos" && segments[2] == "config.yaml") {
      return node_file(*s, segments[1], "talos", client);
    }
    if (segments.size() == 3 && segments[0] == "rke2" && segments[2] == "config.yaml") {
      return node_file(*s, segments[1], "rke2", client);
    }
    if (segments.size() == 3 && segments[0] == "cloud-init" &&
        (segments[2] == "meta-data" || segments[2] == "user-data" || segments[2] == "vendor-data")) {
      return node_file(*s, segments[1], segments[2], client);
    }
    if (segments.size() >= 4 && segments[0] == "ephemeral") return ephemeral_request(*s, segments, client);
    if (!segments.empty() && (segments.back() == "boot.img" || segments.back() == "boot.sig") &&
        (segments.size() < 2 || segments[0] != "files")) {
      return http_boot_request(*s, segments, client);
    }
    if (segments.size() >= 2 && segments[0] == "files" && s->http_root) {
      std::string relative = target.path.substr(std::string("/files/").size());
      TftpOpenedFile file = s->http_root->open(relative);
      if (file.status != TftpOpenStatus::opened) {
        if (file.status == TftpOpenStatus::access_violation) {
          log::warning("http: ", client, " refused \"", log_escape(target.path), "\": ", log_escape(file.reason));
          metrics.add("aggrik8s_errors_total", {{"kind", "forbidden"}});
          return text(403, "forbidden\n", "files");
        }
        return text(404, "not found\n", "files");
      }
      HttpReply reply;
      reply.file = std::move(file.fd);
      reply.file_size = file.size;
      reply.content_type = "application/octet-stream";
      reply.route = "files";
      return reply;
    }
    return text(404, "not found\n", "other");
  }

  void finished(const HttpExchange& exchange) override {
    std::string client = client_text(exchange.request.client);
    metrics.add("aggrik8s_http_requests_total", {{"route", exchange.route}, {"status", std::to_string(exchange.status)}});
    metrics.add("aggrik8s_http_sent_bytes_total", {}, exchange.bytes_sent);
    if (!exchange.completed) metrics.add("aggrik8s_errors_total", {{"kind", "client_gone"}});
    auto line = log::concat("http: client=", client, " ", log_escape(exchange.request.method), " ",
                            log_escape(exchange.request.target),
                            " status=", exchange.status, " bytes=", exchange.bytes_sent,
                            " duration_ms=", millis(exchange.duration).count(),
                            exchange.node.empty() ? "" : " node=" + exchange.node,
                            exchange.completed ? "" : " incomplete=\"" + log_escape(exchange.detail) + "\"");
    if (exchange.completed) {
      log::info(line);
    } else {
      log::warning(line);
    }
    if (exchange.step.empty()) return;
    BootEvent event;
    event.node = exchange.node;
    event.client = client;
    event.step = exchange.step;
    event.file = exchange.request.target;
    event.bytes = exchange.bytes_sent;
    event.duration = millis(exchange.duration);
    event.detail = exchange.detail;
    if (exchange.status == 403) {
      event.result = "refused";
    } else if (exchange.status == 404) {
      event.result = "not-found";
    } else if (exchange.status >= 400 || !exchange.completed) {
      event.result = "failed";
    } else {
      event.result = "ok";
    }
    if (event.step == "asset" && event.result == "ok" && !event.node.empty()) talos_boot_files_fetched(event.node, client);
    record(std::move(event));
  }

  void rejected(const asio::ip::address& client, unsigned status, const std::string& why) override {
    log::warning("http: client=", client_text(client), " status=", status, " rejected: ", log_escape(why));
    metrics.add("aggrik8s_errors_total", {{"kind", "http_" + std::to_string(status)}});
  }
};

namespace {
TftpServerLimits tftp_limits(const NetbootConfig& config) {
  TftpServerLimits limits;
  limits.max_blksize = config.tftp_max_blksize;
  limits.path_mtu = config.tftp_path_mtu;
  limits.max_windowsize = config.tftp_max_windowsize;
  return limits;
}

TftpRetransmitPolicy tftp_retransmit_policy(const NetbootConfig& config) {
  return TftpRetransmitPolicy{config.tftp_retransmit_timeout, config.tftp_max_retransmit_interval,
                              config.tftp_max_retransmits, config.tftp_option_ack_timeout};
}

// The options a subnet hands out besides its address, from the config's text: the interface's own
// subnet and every relayed one take the same keys. The addresses were checked when the config was read.
void set_subnet_options(DhcpSubnet& subnet, const std::optional<std::string>& router,
                        const std::vector<std::string>& dns, const std::vector<std::string>& ntp,
                        const std::optional<std::string>& domain) {
  if (router) subnet.router = parse_ipv4(*router);
  for (const auto& text : dns) {
    if (auto address = parse_ipv4(text)) subnet.dns.push_back(*address);
  }
  for (const auto& text : ntp) {
    if (auto address = parse_ipv4(text)) subnet.ntp.push_back(*address);
  }
  subnet.domain = domain;
}

std::shared_ptr<const TftpRemapRules> load_tftp_remap(const NetbootConfig& config) {
  if (!config.tftp_remap) return nullptr;
  return std::make_shared<const TftpRemapRules>(TftpRemapRules::load(*config.tftp_remap));
}

// The DHCP server's address and its subnet's netmask: dhcp.interface's first IPv4 address, and
// dhcp.netmask or else that address's own prefix (as dnsmasq takes a dhcp-range's netmask from the
// interface). In full mode the pool must lie in that subnet: an address from outside it is one the
// client cannot use on this link. dhcp.interface is required with DHCP on.
InterfaceIpv4 resolve_dhcp_address(const NetbootConfig& config) {
  std::string name = config.dhcp_interface.value_or("");
  auto found = interface_ipv4(name);
  if (!found) throw Error("interface " + name + " has no IPv4 address (dhcp.interface)");
  if (config.dhcp_netmask) found->netmask = *config.dhcp_netmask;
  if (config.dhcp_mode == "full" && config.dhcp_pool_first && config.dhcp_pool_last) {
    std::uint32_t mask = parse_ipv4(found->netmask).value_or(0xffffffff);
    std::uint32_t network = parse_ipv4(found->address).value_or(0) & mask;
    for (const auto* end : {&*config.dhcp_pool_first, &*config.dhcp_pool_last}) {
      if ((parse_ipv4(*end).value_or(0) & mask) == network) continue;
      throw Error("dhcp.pool " + *config.dhcp_pool_first + "-" + *config.dhcp_pool_last + " is not inside the subnet of " +
                  name + " (" + found->address + " netmask " + found->netmask + (config.dhcp_netmask ? ", dhcp.netmask" : "") +
                  "): clients there could not use those addresses. A pool behind a DHCP relay goes into "
                  "dhcp.relayed_subnets");
    }
  }
  return *found;
}

// The servers hold the core through these; the core does not hold the servers, so nothing cycles.
std::shared_ptr<TftpServerObserver> as_observer(const std::shared_ptr<NetbootService::Core>& core) { return core; }
std::shared_ptr<HttpHandler> as_handler(const std::shared_ptr<NetbootService::Core>& core) { return core; }
std::shared_ptr<DhcpBootPolicy> as_boot_policy(const std::shared_ptr<NetbootService::Core>& core) { return core; }
}  // namespace

namespace {

// The subnets full-mode DHCP serves: [0] the interface's own, then the relayed ones, as configured.
std::vector<DhcpSubnet> dhcp_subnets(const NetbootConfig& c, const InterfaceIpv4& own) {
  const std::uint32_t server_address = parse_ipv4(own.address).value_or(0);
  std::vector<DhcpSubnet> subnets;
  DhcpSubnet local;
  local.netmask = parse_ipv4(own.netmask).value_or(0xffffffff);
  local.network = server_address & local.netmask;
  if (c.dhcp_pool_first && c.dhcp_pool_last) {
    local.pool.first = parse_ipv4(*c.dhcp_pool_first).value_or(0);
    local.pool.last = parse_ipv4(*c.dhcp_pool_last).value_or(0);
  }
  local.pool.lease_time = c.dhcp_lease_time;
  local.pool.server = server_address;
  set_subnet_options(local, c.dhcp_router, c.dhcp_dns, c.dhcp_ntp, c.dhcp_domain);
  subnets.push_back(std::move(local));
  for (const auto& relayed : c.dhcp_relayed_subnets) {
    DhcpSubnet subnet;
    auto network = parse_ipv4_subnet(relayed.subnet);
    if (!network) throw Error("dhcp.relayed_subnets: '" + relayed.subnet + "' is not a subnet");
    subnet.network = network->first;
    subnet.netmask = network->second;
    if (subnets.front().contains(subnet.network) || subnet.contains(server_address)) {
      throw Error("dhcp.relayed_subnets: " + relayed.subnet + " overlaps the subnet of interface " +
                  c.dhcp_interface.value_or("-") + " (" + own.address + " netmask " + own.netmask +
                  "): relayed subnets must be other subnets");
    }
    subnet.pool.first = parse_ipv4(relayed.pool_first).value_or(0);
    subnet.pool.last = parse_ipv4(relayed.pool_last).value_or(0);
    subnet.pool.lease_time = relayed.lease_time;
    set_subnet_options(subnet, relayed.router, relayed.dns, relayed.ntp, relayed.domain);
    subnets.push_back(std::move(subnet));
  }
  return subnets;
}

}  // namespace

NetbootCheck check_netboot_configuration(NetbootConfig config, const SiteNodesFileLoader& site_nodes) {
  NetbootCheck check;
  // The address boot scripts name: the configured one where this machine has it. Elsewhere (a check
  // run before deployment), or for 0.0.0.0, the longest IPv4 address stands in (and port 65535 for
  // port 0), so kernel command lines that fit here fit with the real one.
  std::string address;
  try {
    address = resolve_listen_address(config);
  } catch (const Error& e) {
    check.warnings.push_back(std::string(e.what()) + " on this machine: serve would not start here");
  }
  if (address.empty() || address == "0.0.0.0") {
    address = "255.255.255.255";
    check.base_url_stand_in = !config.http_base_url;
  }
  std::vector<DhcpSubnet> subnets;
  if (config.dhcp_mode != "off") {
    try {
      InterfaceIpv4 own = resolve_dhcp_address(config);
      if (config.dhcp_mode == "full") subnets = dhcp_subnets(config, own);
    } catch (const Error& e) {
      check.warnings.push_back(std::string("dhcp: ") + e.what() + " on this machine: serve would not start here");
    }
  }
  if (config.http_enabled) load_http_tls_context(config);
  load_tftp_remap(config);
  std::uint16_t http_port = config.http_port;
  if (http_port == 0) {  // picked at start
    http_port = 65535;
    check.base_url_stand_in = !config.http_base_url;
  }
  auto snapshot = load_snapshot(std::move(config), address, http_port, site_nodes);
  warn_about_secret_policy(snapshot->config, snapshot->inventory);
  if (!subnets.empty()) dhcp_reservations_on(snapshot->inventory, subnets, check.warnings);
  check.base_url = snapshot->base_url;
  check.nodes = snapshot->inventory.nodes.size();
  check.profiles = snapshot->inventory.profiles.size();
  return check;
}

struct NetbootService::Servers {
  std::unique_ptr<TftpServer> tftp;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<HttpServer> https;  // only with http.tls_port; otherwise `http` itself may speak TLS
  std::unique_ptr<DhcpServer> dhcp;
  bool http_is_tls = false;  // `http` speaks only HTTPS (http.tls without tls_port), as started
  HttpServer* tls_server() const { return https ? https.get() : http.get(); }
};

NetbootService::NetbootService(asio::io_context& io, NetbootConfig config, SiteNodesFileLoader site_nodes,
                               NetbootConfigLoader reload_config)
    : reload_config_(std::move(reload_config)) {
  std::string address = resolve_listen_address(config);
  core_ = std::make_shared<Core>(io, address);
  core_->events = std::make_unique<BootEventLog>(config.boot_log);
  auto ip = asio::ip::make_address(address);
  servers_ = std::make_unique<Servers>();
  auto& servers = *servers_;
  if (config.http_enabled) {
    HttpServerConfig http;
    http.listen = {ip, config.http_port};
    http.header_limit = config.http_header_limit;
    http.request_timeout = config.http_request_timeout;
    http.idle_timeout = config.http_idle_timeout;
    http.max_connections = config.http_max_connections;
    http.handler = as_handler(core_);
    auto tls = load_http_tls_context(config);
    if (tls && config.http_tls_port) {
      HttpServerConfig https = http;
      https.listen.port(*config.http_tls_port);
      https.tls = tls;
      servers.https = std::make_unique<HttpServer>(io, https);
    } else {
      http.tls = tls;
      servers.http_is_tls = tls != nullptr;
    }
    servers.http = std::make_unique<HttpServer>(io, http);
    core_->http_port = servers.http->local_endpoint().port();
    core_->http = servers.http.get();
  }
  bool tftp_enabled = config.tftp_enabled;
  TftpServerConfig tftp;
  tftp.listen = {ip, config.tftp_port};
  tftp.limits = tftp_limits(config);
  tftp.retransmit = tftp_retransmit_policy(config);
  tftp.remap = load_tftp_remap(config);
  core_->site_nodes = std::move(site_nodes);
  core_->install(load_snapshot(std::move(config), address, core_->http_port, core_->site_nodes));
  warn_about_secret_policy(core_->current()->config, core_->current()->inventory);
  if (tftp_enabled) {
    std::weak_ptr<Core> weak = core_;
    tftp.client_tree = [weak](const asio::ip::address& client, const std::string& filename) -> std::optional<TftpClientTree> {
      auto core = weak.lock();
      if (!core) return std::nullopt;
      return core->tftp_tree(client, filename);
    };
    tftp.observer = as_observer(core_);
    servers.tftp = std::make_unique<TftpServer>(io, tftp);
    core_->tftp = servers.tftp.get();
  }
  auto s = core_->current();
  const NetbootConfig& c = s->config;
  if (c.dhcp_mode != "off") {
    InterfaceIpv4 own = resolve_dhcp_address(c);
    core_->dhcp_address = own.address;
    core_->dhcp_netmask = own.netmask;
    DhcpServerConfig dhcp;
    dhcp.mode = c.dhcp_mode == "full" ? DhcpMode::full : DhcpMode::proxy;
    dhcp.interface = c.dhcp_interface;
    dhcp.port = c.dhcp_port;
    dhcp.server_address = parse_ipv4(core_->dhcp_address).value_or(0);
    dhcp.subnets = dhcp_subnets(c, own);
    dhcp.lease_file = c.dhcp_lease_file;
    core_->dhcp_proxy = dhcp.mode == DhcpMode::proxy;
    dhcp.boot_policy = as_boot_policy(core_);
    const bool leases_kept = dhcp.mode == DhcpMode::full && dhcp.lease_file.has_value();
    if (dhcp.mode == DhcpMode::full) core_->dhcp_subnets_served = dhcp.subnets;
    servers.dhcp = std::make_unique<DhcpServer>(io, std::move(dhcp));
    servers.dhcp->set_reservations(core_->dhcp_reservations(*s));
    core_->dhcp = servers.dhcp.get();
    if (auto state = state_directory(c); leases_kept && state && std::filesystem::is_directory(*state)) {
      core_->node_clients = std::make_unique<DhcpNodeClientsStore>(*state / dhcp_node_clients_file_name);
      core_->restore_node_leases(*s, servers.dhcp->leases());
    }
  }
}

NetbootService::~NetbootService() {
  stop();
  core_->tftp = nullptr;
  core_->http = nullptr;
  core_->dhcp = nullptr;
}

void NetbootService::start() {
  auto& servers = *servers_;
  if (servers.tftp) {
    servers.tftp->start();
    std::ostringstream where;
    where << servers.tftp->local_endpoint();
    log::info("tftp: listening on ", where.str());
  }
  if (servers.http) {
    servers.http->start();
    std::ostringstream where;
    where << servers.http->local_endpoint();
    log::info("http: listening on ", where.str(), servers.http_is_tls ? " (HTTPS)" : "",
              " (nodes are told ", core_->current()->base_url, ")");
  }
  if (servers.https) {
    servers.https->start();
    std::ostringstream where;
    where << servers.https->local_endpoint();
    log::info("http: listening on ", where.str(), " (HTTPS)");
  }
  if (servers.dhcp) {
    servers.dhcp->start();
    std::ostringstream where;
    where << servers.dhcp->local_endpoint();
    auto s = core_->current();
    log::info("dhcp: listening on ", where.str(), " interface ", s->config.dhcp_interface.value_or("-"), " (",
              s->config.dhcp_mode, " mode, server address ", core_->dhcp_address,
              s->config.dhcp_mode == "full" ? " netmask " + core_->dhcp_netmask : std::string(), ")");
  }
}

void NetbootService::stop() {
  auto& servers = *servers_;
  if (servers.tftp) servers.tftp->stop();
  if (servers.http) servers.http->stop();
  if (servers.https) servers.https->stop();
  if (servers.dhcp) servers.dhcp->stop();
}

bool NetbootService::reload() {
  auto old = core_->current();
  try {
    NetbootConfig config = old->config;
    if (reload_config_ || !old->config.file.empty()) {
      if (reload_config_) {
        config = reload_config_();
      } else {
        Diagnostics diagnostics;
        config = read_netboot_config(old->config.file, diagnostics);
        diagnostics.throw_if_errors("netboot configuration " + old->config.file.string());
      }
      config.address = old->config.address;
      if (old->config.interface) config.interface = old->config.interface;
      if (config.tftp_port != old->config.tftp_port || config.http_port != old->config.http_port ||
          config.tftp_enabled != old->config.tftp_enabled || config.http_enabled != old->config.http_enabled ||
          config.dhcp_mode != old->config.dhcp_mode || config.dhcp_port != old->config.dhcp_port ||
          config.http_tls() != old->config.http_tls() || config.http_tls_port != old->config.http_tls_port) {
        log::warning("reload: listening ports and which servers run change only on restart");
      }
      const auto& was = old->config;
      if (config.dhcp_interface != was.dhcp_interface || config.dhcp_pool_first != was.dhcp_pool_first ||
          config.dhcp_pool_last != was.dhcp_pool_last || config.dhcp_netmask != was.dhcp_netmask ||
          config.dhcp_router != was.dhcp_router || config.dhcp_dns != was.dhcp_dns || config.dhcp_ntp != was.dhcp_ntp || config.dhcp_domain != was.dhcp_domain ||
          config.dhcp_lease_time != was.dhcp_lease_time || config.dhcp_lease_file != was.dhcp_lease_file ||
          config.dhcp_relayed_subnets != was.dhcp_relayed_subnets) {
        // The pools hold live leases and offers: they are not rebuilt under running clients.
        log::warning("reload: the dhcp section (pools, options, relayed subnets) changes only on restart; "
                     "reservations from the nodes file are reloaded");
      }
    }
    // Everything that can fail is read before anything is replaced: a bad remap file keeps the old one.
    auto remap = load_tftp_remap(config);
    TftpServerLimits limits = tftp_limits(config);
    TftpRetransmitPolicy retransmit = tftp_retransmit_policy(config);
    // A renewed certificate is picked up here; whether HTTPS runs at all changes only on restart.
    auto tls = old->config.http_tls() && config.http_tls() && servers_->http ? load_http_tls_context(config) : nullptr;
    auto fresh = load_snapshot(std::move(config), core_->bound_address, core_->http_port, core_->site_nodes, old.get());
    core_->events->reopen();
    std::size_t nodes = fresh->inventory.nodes.size();
    warn_about_secret_policy(fresh->config, fresh->inventory);
    core_->install(std::move(fresh));
    if (servers_->tftp) servers_->tftp->reconfigure(std::move(limits), retransmit, std::move(remap));
    if (tls) servers_->tls_server()->set_tls(std::move(tls));
    core_->metrics.add("aggrik8s_reloads_total", {{"result", "ok"}});
    log::info("reload: configuration and inventory reloaded (", nodes, " nodes)");
    return true;
  } catch (const std::exception& e) {
    core_->metrics.add("aggrik8s_reloads_total", {{"result", "failed"}});
    log::error("reload failed, still serving the previous configuration: ", e.what());
    return false;
  }
}

std::optional<asio::ip::udp::endpoint> NetbootService::tftp_endpoint() const {
  auto& servers = *servers_;
  if (!servers.tftp) return std::nullopt;
  return servers.tftp->local_endpoint();
}

std::optional<asio::ip::tcp::endpoint> NetbootService::http_endpoint() const {
  auto& servers = *servers_;
  if (!servers.http) return std::nullopt;
  return servers.http->local_endpoint();
}

std::optional<asio::ip::tcp::endpoint> NetbootService::https_endpoint() const {
  auto& servers = *servers_;
  if (servers.https) return servers.https->local_endpoint();
  if (servers.http && servers.http_is_tls) return servers.http->local_endpoint();
  return std::nullopt;
}

NodeAddressBook& NetbootService::addresses() { return core_->address_book; }

}  // namespace aggrik8s::netboot
