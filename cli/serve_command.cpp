// aggrik8s-image serve: the netboot server (TFTP + HTTP + DHCP, proxy or full). One process, one
// io_context thread, plus the DHCP lease journal's writer thread in full mode. SIGTERM/SIGINT stop it
// cleanly; SIGHUP reloads the configuration file and the nodes file without dropping transfers in
// flight (and reopens the boot event log, for logrotate).
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
  if (auto site_file = args.value("site")) {
    config.site = *site_file;
    config.inventory.reset();
    // Flags alone: where nodes reach serve and its boot log default to the site's serve: section
    // (with --config, netboot.yaml says).
    if (!args.flag("config")) {
      Diagnostics diagnostics;
      site::SiteInventory inventory = site::read_site_inventory(*site_file, diagnostics);
      print_diagnostics(diagnostics);
      diagnostics.throw_if_errors("site " + *site_file);
      if (!config.http_base_url && inventory.serve.url) config.http_base_url = *inventory.serve.url;
      if (!config.boot_log && inventory.serve.boot_log) config.boot_log = *inventory.serve.boot_log;
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
      "Run the TFTP + HTTP netboot server",
      "Serves Raspberry Pi images (their boot partition as the node's TFTP tree, read from the image\n"
      "file), Talos and kernel+initramfs netboot assets, per-node iPXE scripts and per-node configs,\n"
      "as the nodes file says (docs/netboot.md), or the one a site derives (--site, docs/site.md: its\n"
      "machines with boot netboot/ephemeral boot what `build SITE` wrote, boot: disk ones their own disk).\n"
      "Without --config, the flags alone are a quick start:\n"
      "  aggrik8s-image serve --address 10.0.0.1 --tftp-root /usr/lib/ipxe --http-root out/\n"
      "  aggrik8s-image serve --interface eth1 --site site.yaml\n"
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
       {"tftp-root", '\0', "DIR", "shared TFTP tree (iPXE binaries, ...)"},
       {"tftp-port", '\0', "PORT", "TFTP port (default 69; 0 picks a free one)"},
       {"http-root", '\0', "DIR", "static files served under /files/"},
       {"http-port", '\0', "PORT", "HTTP port (default 8080; 0 picks a free one)"},
       {"base-url", '\0', "URL", "the URL nodes reach the HTTP server at (default http://ADDR:PORT)"},
       {"boot-log", '\0', "FILE", "append boot events to FILE as JSON lines"},
       {"state-dir", '\0', "DIR", "what serve keeps across restarts (netboot.yaml state_dir)"},
       {"no-tftp", '\0', "", "do not serve TFTP"},
       {"no-http", '\0', "", "do not serve HTTP"},
       {"check", '\0', "", "load the configuration and nodes as a start would, report, and exit without serving"}},
      0,
      0};
  return {spec, [](const ParsedArguments& args) {
            netboot::NetbootConfig config = config_from(args);
            if (config.address == "0.0.0.0" && !config.interface && !config.http_base_url && config.http_enabled) {
              log::warning("listening on 0.0.0.0 without http.base_url: boot scripts will name http://0.0.0.0, "
                           "which nodes cannot reach; set --base-url, --address or --interface");
            }
            if (args.flag("check")) {
              std::string source = !config.file.empty() ? config.file.string()
                                   : config.site      ? config.site->string()
                                   : config.inventory ? config.inventory->string()
                                                      : std::string("serve");
              print_netboot_check(source, config);
              return exit_success;
            }
            boost::asio::io_context io;
            // A reload makes its configuration as this start did, flags over the file: re-reading only
            // the file would drop --nodes, --site, --boot-log... given on the command line.
            netboot::NetbootService service(io, std::move(config), &site_nodes_file, [&args] { return config_from(args); });
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
