#pragma once
// netboot.yaml: where the server listens, what it serves from, where the inventory and the boot event
// log are. docs/netboot.md is the reference. Quick-start flags of `aggrik8s-image serve` fill the same
// structure, so a file and flags behave the same.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "core/secret.hpp"
#include "netboot/service/node_secret_access.hpp"

namespace aggrik8s::netboot {

struct NetbootConfig {
  // Where to listen: an IPv4 address, or an interface whose (first) IPv4 address is used.
  std::string address = "0.0.0.0";
  std::optional<std::string> interface;

  bool tftp_enabled = true;
  std::uint16_t tftp_port = 69;
  std::optional<std::filesystem::path> tftp_root;   // shared tree: iPXE binaries, pxelinux, ...
  std::optional<std::filesystem::path> tftp_remap;  // tftp-hpa remap file
  std::uint16_t tftp_max_blksize = 1468;
  std::uint32_t tftp_path_mtu = 1500;  // blocks are clamped to fit one IP packet of this size; 0: no clamp
  std::uint16_t tftp_max_windowsize = 16;
  // Retransmission: the first timeout, the back-off's ceiling and the timeouts in a row before a transfer
  // is dropped. Clients such as atftp resend their ACK only on their own timer (5 s), so the back-off
  // must reach past it within the retransmissions (see TftpRetransmitSchedule).
  std::chrono::milliseconds tftp_retransmit_timeout{1000};
  std::chrono::milliseconds tftp_max_retransmit_interval{8000};
  std::chrono::milliseconds tftp_option_ack_timeout{6000};  // first wait for the ACK of an OACK
  unsigned tftp_max_retransmits = 5;

  bool http_enabled = true;
  std::uint16_t http_port = 8080;
  std::optional<std::filesystem::path> http_root;  // static files under /files/
  // The URL nodes use to reach this server, written into iPXE scripts and kernel arguments. Default:
  // http://<address>:<port>, which is wrong for 0.0.0.0, so it is required then.
  std::optional<std::string> http_base_url;
  std::size_t http_header_limit = 8192;
  std::chrono::seconds http_request_timeout{10};  // to receive one request's header
  std::chrono::seconds http_idle_timeout{30};     // keep-alive wait, and a send making no progress
  std::size_t http_max_connections = 512;
  // HTTPS (docs/netboot.md, "HTTPS"): `http.tls: {certificate: chain.pem, key: {file: server.key}}`.
  // Without tls_port the listener on http.port speaks HTTPS only; with it, plain HTTP stays on
  // http.port and HTTPS listens on tls_port (iPXE builds without TLS keep working beside the Pi 5).
  std::optional<std::filesystem::path> http_tls_certificate;
  std::optional<SecretReference> http_tls_key;
  std::optional<std::uint16_t> http_tls_port;
  bool http_tls() const { return http_tls_certificate.has_value(); }

  // DHCP (docs/netboot.md, "DHCP"). Addresses are kept as text here and checked on parse; the DHCP
  // server converts them.
  std::string dhcp_mode = "off";  // off | proxy | full
  std::optional<std::string> dhcp_interface;
  std::uint16_t dhcp_port = 67;
  std::optional<std::string> dhcp_pool_first, dhcp_pool_last;  // "pool: A-B"
  std::optional<std::string> dhcp_netmask;  // unset: the interface's own (its address's prefix)
  std::optional<std::string> dhcp_router;
  std::vector<std::string> dhcp_dns;
  std::vector<std::string> dhcp_ntp;  // option 42
  std::optional<std::string> dhcp_domain;
  std::uint32_t dhcp_lease_time = 3600;
  std::optional<std::filesystem::path> dhcp_lease_file;
  // Full mode, "relayed_subnets:": subnets reached through DHCP relays, each with its own pool and
  // options; a relayed request is answered from the one containing its giaddr. dns, ntp, domain and
  // lease_time default to the section's own; router does not (a router is per subnet).
  struct DhcpRelayedSubnet {
    std::string subnet;                      // "10.0.5.0/24"
    std::string pool_first, pool_last;
    std::optional<std::string> router;
    std::vector<std::string> dns;
    std::vector<std::string> ntp;
    std::optional<std::string> domain;
    std::uint32_t lease_time = 3600;
    bool operator==(const DhcpRelayedSubnet&) const = default;
  };
  std::vector<DhcpRelayedSubnet> dhcp_relayed_subnets;

  // node_secrets.proof: what ties a requesting address to a node before it gets the node's secrets
  // (netboot/service/node_secret_access.hpp). last-asker is the old first-come behaviour, opt-in and warned about.
  NodeSecretProof node_secret_proof = NodeSecretProof::neighbour;
  // The kernel's IPv4 neighbour table read for the neighbour proof. Not in netboot.yaml: a seam for
  // tests, which cannot put loopback peers into the real one.
  std::filesystem::path neighbour_table = "/proc/net/arp";

  std::optional<std::filesystem::path> inventory;  // nodes file
  std::optional<std::filesystem::path> site;       // or a site inventory, whose derived nodes file is served
  std::optional<std::filesystem::path> boot_log;   // JSON lines; none when unset
  // What serve keeps across restarts besides leases: rebuild-on-reboot Talos wipe cycles
  // (talos-wipe.json), ephemeral Pi identities (identity/). Default: state_directory() below.
  std::optional<std::filesystem::path> state_dir;
  std::filesystem::path file;                      // this config's own path, "" for flags only
};

// "10.0.0.100-10.0.0.199" (dhcp.pool, serve --dhcp-pool) as its two IPv4 addresses; nullopt when it is
// not two addresses joined by '-'.
std::optional<std::pair<std::string, std::string>> split_ipv4_pool(std::string_view text);

// state_dir, else the directory of dhcp.lease_file, else nullopt (a profile that needs state then
// makes serve refuse the configuration).
std::optional<std::filesystem::path> state_directory(const NetbootConfig& config);

NetbootConfig read_netboot_config(const std::filesystem::path& file, Diagnostics& diagnostics);

// What http.base_url (and serve --base-url) may be: an http:// URL, or https:// when this server speaks
// HTTPS on the port nodes are told about (http.tls; the scripts' clients, iPXE, need TLS built in then).
bool is_usable_http_base_url(std::string_view url, bool https_allowed);
NetbootConfig parse_netboot_config(const ConfigNode& tree, Diagnostics& diagnostics);

}  // namespace aggrik8s::netboot
