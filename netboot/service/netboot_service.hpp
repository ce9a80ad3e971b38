#pragma once
// `aggrik8s-image serve` without the command line: the TFTP, HTTP and DHCP servers on one io_context, the
// inventory deciding what each node gets, the access rules for per-node files, the boot event log and
// the metrics. reload() swaps configuration and inventory atomically for new requests; transfers in
// flight keep the files they opened.
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config_node.hpp"
#include "core/diagnostics.hpp"
#include "netboot/asio.hpp"
#include "netboot/service/netboot_config.hpp"
#include "netboot/service/node_address_book.hpp"

namespace aggrik8s::netboot {

// An interface's first IPv4 address and its netmask, dotted; nullopt when it has none (or is missing).
struct InterfaceIpv4 {
  std::string address;
  std::string netmask;
};
std::optional<InterfaceIpv4> interface_ipv4(const std::string& name);

// The IPv4 address to bind for `config`: listen.address, or the first IPv4 address of listen.interface.
// Throws aggrik8s::Error naming the interface when it has none.
std::string resolve_listen_address(const NetbootConfig& config);

// The nodes-file tree of a site inventory file (netboot.yaml `site:`, `serve --site`), problems in
// `diagnostics`. netboot does not read sites (it sits below the site library): the command passes
// site::derive_nodes_file behind this, and serve calls it at start and on every reload.
using SiteNodesFileLoader = std::function<ConfigNode(const std::filesystem::path& site_file, Diagnostics& diagnostics)>;

// The configuration a reload applies, made the way the one at start was: serve re-reads its file and
// applies the command line's flags over it again, so `--config F --nodes N` still serves N after a
// SIGHUP. Throws aggrik8s::Error (or UsageError) when the file is now invalid.
using NetbootConfigLoader = std::function<NetbootConfig()>;

// What `serve --check` and `validate` report for a netboot configuration: it was loaded as serve loads
// it at start (the nodes file or site, every kernel command line with the base URL boot scripts will
// carry, the TLS key and certificate, the remap rules, Pi images, the state directory) without binding
// or writing anything.
struct NetbootCheck {
  std::size_t nodes = 0;
  std::size_t profiles = 0;
  std::string base_url;             // as boot scripts would carry it
  bool base_url_stand_in = false;   // address or port known only at start: the longest stand in
  std::vector<std::string> warnings;  // e.g. listen.interface missing on this machine
};

// Throws aggrik8s::Error with every problem serve would refuse to start with. Warnings about the
// inventory and the secret policy go to the log as they do at start.
NetbootCheck check_netboot_configuration(NetbootConfig config, const SiteNodesFileLoader& site_nodes = {});

class NetbootService {
 public:
  // Loads the inventory and binds both servers; throws aggrik8s::Error (with every diagnostic) when the
  // configuration or inventory is invalid or an address cannot be bound. `site_nodes` reads config.site.
  // `reload_config` makes the configuration reload() applies; without it, reload() re-reads config.file
  // (if there is one) and nothing else.
  NetbootService(boost::asio::io_context& io, NetbootConfig config, SiteNodesFileLoader site_nodes = {},
                 NetbootConfigLoader reload_config = {});
  ~NetbootService();
  NetbootService(const NetbootService&) = delete;
  NetbootService& operator=(const NetbootService&) = delete;

  void start();
  void stop();
  // Re-reads the configuration (reload_config, else the config file if there is one), the inventory and
  // the TFTP remap file. On any error the running set-up is kept and false is returned; the errors are
  // logged. Listening addresses, ports and the DHCP pools are bound at start and need a restart to change.
  bool reload();

  std::optional<boost::asio::ip::udp::endpoint> tftp_endpoint() const;
  std::optional<boost::asio::ip::tcp::endpoint> http_endpoint() const;
  // Where HTTPS is served: http_endpoint() itself when http.tls has no tls_port, else the tls_port listener.
  std::optional<boost::asio::ip::tcp::endpoint> https_endpoint() const;
  // For the DHCP server: record_lease() pins a node to the address it was given.
  NodeAddressBook& addresses();

  struct Core;
  struct Servers;

 private:
  std::shared_ptr<Core> core_;       // shared with the servers' coroutines, which may outlive a stop()
  std::unique_ptr<Servers> servers_;
  NetbootConfigLoader reload_config_;
};

}  // namespace aggrik8s::netboot
