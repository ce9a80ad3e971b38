// aggrik8s-image serve: the netboot server (TFTP + HTTP + DHCP, proxy or full). One process, one
// io_context thread, plus the DHCP lease journal's writer thread in full mode. SIGTERM/SIGINT stop it
// cleanly; SIGHUP reloads the configuration file and the nodes file without dropping transfers in
// flight (and reopens the boot event log, for logrotate).
#include <arpa/inet.h>

#include <csignal>
#include <cstdio>

#include "cli/commands.hpp"
#include "cli/netboot_command_support.hpp"
#include "core/error.hpp"
#include "core/identifiers.hpp"
#include "core/log.hpp"
#include "netboot/asio.hpp"
#include "netboot/service/netboot_config.hpp"
#include "netboot/service/netboot_service.hpp"
#include "site/site_inventory.hpp"

namespace aggrik8s::cli {
namespace {

std::uint16_t port_value(const ParsedArguments& args, const std::string& name, std::uint16_t fallback) {
  auto text = args.value(name);
  if (!text) return fallback;
  try {
    std::size_t used = 0;
    unsigned long value = std::stoul(*text, &used);
    if (used == text->size() && value <= 65535) return static_cast<std::uint16_t>(value);
  } catch (const std::exception&) {
  }
  throw UsageError("--" + name + " must be a port number (0-65535), got '" + *text + "'");
}

// --dhcp and --dhcp-pool: the quick start's DHCP, as pixiecore (proxy) or `dnsmasq --dhcp-range` (full)
// start without a file. Everything else about DHCP (router, DNS, relays...) is netboot.yaml's.
// `--site` without `--config` and `--dhcp full` without `--dhcp-pool`: the site already says what the
// link's DHCP server hands out. The network whose subnet holds the interface's address gives the pool
// (its dhcp_pool), the router (gateway) and DNS. nullopt when the interface is not here or no network
// with a pool holds its address.
std::optional<const site::SiteNetwork*> site_network_of(const site::SiteInventory& inventory, const std::string& interface) {
  auto own = netboot::interface_ipv4(interface);
  if (!own) return std::nullopt;
  std::vector<std::uint8_t> bytes(4);
  if (::inet_pton(AF_INET, own->address.c_str(), bytes.data()) != 1) return std::nullopt;
  for (const auto& network : inventory.networks) {
    if (network.dhcp_pool && network.subnet.contains(bytes)) return &network;
  }
  return std::nullopt;
}

void apply_dhcp_flags(const ParsedArguments& args, netboot::NetbootConfig& config, const site::SiteInventory* site) {
  if (auto mode = args.value("dhcp")) {
    if (*mode != "off" && *mode != "proxy" && *mode != "full") {
      throw UsageError("--dhcp must be off, proxy or full, got '" + *mode + "'");
    }
    config.dhcp_mode = *mode;
  }
  if (auto pool = args.value("dhcp-pool")) {
    auto range = netboot::split_ipv4_pool(*pool);
    if (!range) throw UsageError("--dhcp-pool must be FIRST-LAST IPv4 addresses (10.0.0.100-10.0.0.199), got '" + *pool + "'");
    config.dhcp_pool_first = range->first;
    config.dhcp_pool_last = range->second;
  }
  if (config.dhcp_mode == "off") {
    if (args.flag("dhcp-pool")) throw UsageError("--dhcp-pool hands out addresses: it needs --dhcp full");
    return;
  }
  // Never broadcast DHCP on whatever link the default route uses: the listening interface is the link.
  if (!config.dhcp_interface) config.dhcp_interface = config.interface;
  if (!config.dhcp_interface) {
    throw UsageError("--dhcp " + config.dhcp_mode + " needs --interface IFACE (or dhcp.interface in --config): "
                     "DHCP is answered on one link only");
  }
  if (config.dhcp_mode != "full") return;
  // The site's pool is picked by the interface's address: a missing interface (a typo) is what to say.
  if (!config.dhcp_pool_first && site && !netboot::interface_ipv4(*config.dhcp_interface)) {
    throw Error("--dhcp full: interface " + *config.dhcp_interface + " does not exist here or has no IPv4 address "
                "(ip -4 addr shows the interfaces), so no site network's pool can be picked for it");
  }
  if (!config.dhcp_pool_first && site) {
    if (auto network = site_network_of(*site, *config.dhcp_interface)) {
      const std::string& range = (*network)->dhcp_pool->text;
      config.dhcp_pool_first = range.substr(0, range.find('-'));
      config.dhcp_pool_last = range.substr(range.find('-') + 1);
      if (!config.dhcp_router) config.dhcp_router = (*network)->gateway;
      if (config.dhcp_dns.empty()) config.dhcp_dns = (*network)->dns;
      log::info("dhcp: the pool, router and DNS of site network '", (*network)->name, "' (", (*network)->subnet.text, ")");
    }
  }
  if (!config.dhcp_pool_first) {
    throw UsageError("--dhcp full hands out addresses: give them with --dhcp-pool FIRST-LAST (or dhcp.pool in --config" +
                     std::string(site ? "; or a dhcp_pool on the site network that holds " + *config.dhcp_interface + "'s address"
                                      : "") +
                     ")");
  }
  if (!config.dhcp_lease_file) {
    if (!config.state_dir) {
      throw UsageError("--dhcp full keeps its leases across restarts: give --state-dir DIR (the lease file is "
                       "DIR/dhcp.leases) or dhcp.lease_file in --config");
    }
    config.dhcp_lease_file = *config.state_dir / "dhcp.leases";
  }
  if (config.state_dir) {
    std::error_code ec;
    if (!std::filesystem::is_directory(*config.state_dir, ec)) {
      throw Error("--state-dir " + config.state_dir->string() + " is not an existing directory (create it: serve keeps " +
                  "its leases and state there)");
    }
  }
}

netboot::NetbootConfig config_from(const ParsedArguments& args) {
  netboot::NetbootConfig config;
  // Without a file or a tree there is nothing to serve; binding 0.0.0.0:69 and :8080 anyway would
  // only surprise (and block) whoever typed the bare command.
  if (!args.flag("config") && !args.flag("nodes") && !args.flag("site") && !args.flag("tftp-root") &&
      !args.flag("http-root")) {
    throw UsageError("nothing to serve: give --config FILE, or --site, --nodes, --tftp-root or --http-root");
  }
  if (args.flag("nodes") && args.flag("site")) {
    throw UsageError("--nodes and --site are two sources of the nodes: give one (a site derives its nodes file)");
  }
  if (auto file = args.value("config")) {
    Diagnostics diagnostics;
    config = netboot::read_netboot_config(*file, diagnostics);
    print_diagnostics(diagnostics);
    diagnostics.throw_if_errors("netboot configuration " + *file);
  }
  // Flags override the file, so `--config x.yaml --http-port 0` works for a quick test.
  if (auto address = args.value("address")) {
    // As listen.address in netboot.yaml: "::1" was taken here and made boot scripts name http://::1:PORT.
    if (!is_ipv4_address(*address)) throw UsageError("--address must be an IPv4 address, got '" + *address + "'");
    config.address = *address;
    config.interface.reset();
  }
  if (auto interface = args.value("interface")) config.interface = *interface;
  if (auto root = args.value("tftp-root")) config.tftp_root = *root;
  if (auto root = args.value("http-root")) config.http_root = *root;
  if (auto inventory = args.value("nodes")) {
    config.inventory = *inventory;
    config.site.reset();
  }
  std::optional<site::SiteInventory> site_inventory;
  if (auto site_file = args.value("site")) {
    config.site = *site_file;
    config.inventory.reset();
    // Flags alone: where nodes reach serve, its boot log and a full-mode DHCP pool default to the
    // site's (with --config, netboot.yaml says).
    if (!args.flag("config")) {
      Diagnostics diagnostics;
      site_inventory = site::read_site_inventory(*site_file, diagnostics);
      print_diagnostics(diagnostics);
      diagnostics.throw_if_errors("site " + *site_file);
      if (!config.http_base_url && site_inventory->serve.url) config.http_base_url = *site_inventory->serve.url;
      if (!config.boot_log && site_inventory->serve.boot_log) config.boot_log = *site_inventory->serve.boot_log;
    }
  }
  if (auto log = args.value("boot-log")) config.boot_log = *log;
  if (auto state = args.value("state-dir")) config.state_dir = *state;
  if (auto url = args.value("base-url")) {
    // As http.base_url in netboot.yaml: boot scripts put it in front of every path.
    bool https_allowed = config.http_tls();
    if (!netboot::is_usable_http_base_url(*url, https_allowed)) {
      throw UsageError("--base-url must be an http:// URL" +
                       std::string(https_allowed ? " or https:// URL" : " (https:// needs http.tls in --config)") + ", got '" +
                       *url + "'");
    }
    config.http_base_url = *url;
    while (config.http_base_url->ends_with("/")) config.http_base_url->pop_back();
  }
  apply_dhcp_flags(args, config, site_inventory ? &*site_inventory : nullptr);
  config.tftp_port = port_value(args, "tftp-port", config.tftp_port);
  config.http_port = port_value(args, "http-port", config.http_port);
  if (args.flag("no-tftp")) config.tftp_enabled = false;
  if (args.flag("no-http")) config.http_enabled = false;
  if (!config.tftp_enabled && !config.http_enabled && config.dhcp_mode == "off") {
    throw UsageError("nothing to serve: TFTP, HTTP and DHCP are all off");
  }
  return config;
}

}  // namespace

Command serve_command() {
  CommandSpec spec{
      "serve",
      "",
      "Run the netboot server: TFTP + HTTP, and DHCP (proxy or full)",
      "Serves Raspberry Pi images (their boot partition as the node's TFTP tree, read from the image\n"
      "file), Talos and kernel+initramfs netboot assets, per-node iPXE scripts and per-node configs,\n"
      "as the nodes file says (docs/netboot.md), or the one a site derives (--site, docs/site.md: its\n"
      "machines with boot netboot/ephemeral boot what `build SITE` wrote, boot: disk ones their own disk).\n"
      "Without --config, the flags alone are a quick start:\n"
      "  aggrik8s-image serve --address 10.0.0.1 --tftp-root /usr/lib/ipxe --http-root out/\n"
      "  aggrik8s-image serve --interface eth1 --site site.yaml --dhcp proxy\n"
      "  aggrik8s-image serve --interface eth1 --site site.yaml --dhcp full --dhcp-pool 10.0.0.100-10.0.0.199 \\\n"
      "      --state-dir /var/lib/aggrik8s\n"
      "SIGHUP reloads the configuration and the nodes file (or the site); SIGTERM stops.\n"
      "--check loads everything a start loads (nodes file or site, Pi images, kernel command lines\n"
      "with the URLs boot scripts will carry, TLS key, remap rules), prints 'ok' or every problem, and\n"
      "exits 0 or 1 without binding a port or writing a file, like kea-dhcp4 -t or dnsmasq --test.\n"
      "`validate netboot.yaml` (or a nodes file) does the same.",
      {{"config", 'c', "FILE", "netboot configuration (docs/netboot.md)"},
       {"address", '\0', "ADDR", "IPv4 address to listen on (default 0.0.0.0)"},
       {"interface", 'i', "IFACE", "listen on this interface's IPv4 address"},
       {"nodes", 'n', "FILE", "the nodes file (inventory)"},
       {"site", '\0', "FILE", "a site inventory (docs/site.md): serve the nodes file it derives"},
       {"out", '\0', "DIR", "with --site: the site was built with `build SITE --out DIR`: its outputs are there, not in the "
        "site's output:"},
       {"tftp-root", '\0', "DIR", "shared TFTP tree (iPXE binaries, ...)"},
       {"tftp-port", '\0', "PORT", "TFTP port (default 69; 0 picks a free one)"},
       {"http-root", '\0', "DIR", "static files served under /files/"},
       {"http-port", '\0', "PORT", "HTTP port (default 8080; 0 picks a free one)"},
       {"base-url", '\0', "URL", "the URL nodes reach the HTTP server at (default http://ADDR:PORT)"},
       {"boot-log", '\0', "FILE", "append boot events to FILE as JSON lines"},
       {"state-dir", '\0', "DIR", "what serve keeps across restarts (netboot.yaml state_dir)"},
       {"dhcp", '\0', "MODE", "DHCP on --interface's link: off (default), proxy (beside the network's DHCP server) or full"},
       {"dhcp-pool", '\0', "RANGE", "full mode: the addresses handed out, FIRST-LAST (leases kept in --state-dir); with --site, "
        "default the dhcp_pool of the site network holding the interface's address"},
       {"no-tftp", '\0', "", "do not serve TFTP"},
       {"no-http", '\0', "", "do not serve HTTP"},
       {"check", '\0', "", "load the configuration and nodes as a start would, report, and exit without serving"}},
      0,
      0};
  return {spec, [](const ParsedArguments& args) {
            if (args.flag("out") && !args.flag("site")) throw UsageError("--out is where a site was built: give it with --site");
            netboot::NetbootConfig config = config_from(args);
            std::optional<std::filesystem::path> built_in;
            if (auto out = args.value("out")) built_in = std::filesystem::path(*out);
            const netboot::SiteNodesFileLoader site_nodes = site_nodes_file_in(built_in);
            if (config.address == "0.0.0.0" && !config.interface && !config.http_base_url && config.http_enabled) {
              log::warning("listening on 0.0.0.0 without http.base_url: boot scripts will name http://0.0.0.0, "
                           "which nodes cannot reach; set --base-url, --address or --interface");
            }
            if (args.flag("check")) {
              std::string source = !config.file.empty() ? config.file.string()
                                   : config.site      ? config.site->string()
                                   : config.inventory ? config.inventory->string()
                                                      : std::string("serve");
              print_netboot_check(source, config, site_nodes);
              return exit_success;
            }
            boost::asio::io_context io;
            // A reload makes its configuration as this start did, flags over the file: re-reading only
            // the file would drop --nodes, --site, --boot-log... given on the command line.
            netboot::NetbootService service(io, std::move(config), site_nodes, [&args] { return config_from(args); });
            boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGHUP);
            std::function<void(const boost::system::error_code&, int)> on_signal;
            on_signal = [&](const boost::system::error_code& ec, int signal) {
              if (ec) return;
              if (signal == SIGHUP) {
                service.reload();
                signals.async_wait(on_signal);
                return;
              }
              log::info("serve: ", signal == SIGTERM ? "SIGTERM" : "SIGINT", " received, stopping");
              service.stop();
              signals.cancel();  // the last pending wait; run() returns once the servers have wound down
            };
            signals.async_wait(on_signal);
            service.start();
            io.run();
            log::info("serve: stopped");
            return exit_success;
          }};
}

}  // namespace aggrik8s::cli
