#include "netboot/service/netboot_config.hpp"

#include <tuple>

#include "core/config_reader.hpp"
#include "core/identifiers.hpp"
#include "core/path_check.hpp"
#include "core/secret.hpp"
#include "netboot/dhcp/dhcp_packet.hpp"
#include "netboot/dhcp/dhcp_subnet.hpp"

namespace aggrik8s::netboot {
namespace fs = std::filesystem;

namespace {

// One item of dhcp.relayed_subnets; `defaults` is the section's own values for dns/domain/lease_time.
std::optional<NetbootConfig::DhcpRelayedSubnet> read_dhcp_relayed_subnet(const ConfigNode& node, const std::string& path,
                                                                         const NetbootConfig& defaults,
                                                                         Diagnostics& diagnostics) {
  ConfigMapReader item(node, diagnostics, path);
  if (!item.valid()) {
    diagnostics.error(node.location, "'" + path + "' must be a map (subnet, pool, router, dns, ntp, domain, lease_time)");
    return std::nullopt;
  }
  NetbootConfig::DhcpRelayedSubnet out;
  bool ok = true;
  auto subnet_text = item.string("subnet", true);
  // Plain values rather than an optional captured below: GCC 12 warns (wrongly) about those.
  std::uint32_t network = 0, netmask = 0;
  bool has_subnet = false;
  if (subnet_text) {
    out.subnet = *subnet_text;
    if (auto parsed = parse_ipv4_subnet(*subnet_text)) {
      std::tie(network, netmask) = *parsed;
      has_subnet = true;
    } else {
      item.error_at("subnet", "'" + path + ".subnet' must be NETWORK/PREFIX with no host bits set, e.g. 10.0.5.0/24, got '" +
                                  *subnet_text + "'");
    }
  }
  ok = ok && has_subnet;
  auto inside = [&](std::uint32_t address) { return has_subnet && (address & netmask) == network; };
  if (auto pool = item.string("pool", true)) {
    auto dash = pool->find('-');
    auto first = dash == std::string::npos ? std::nullopt : parse_ipv4(pool->substr(0, dash));
    auto last = dash == std::string::npos ? std::nullopt : parse_ipv4(pool->substr(dash + 1));
    if (!first || !last || *first > *last) {
      item.error_at("pool", "'" + path + ".pool' must be FIRST-LAST IPv4 addresses, FIRST not above LAST, got '" + *pool + "'");
      ok = false;
    } else if (has_subnet && (!inside(*first) || !inside(*last))) {
      item.error_at("pool", "'" + path + ".pool' " + *pool + " is not inside its subnet " + *subnet_text);
      ok = false;
    } else {
      out.pool_first = ipv4_to_string(*first);
      out.pool_last = ipv4_to_string(*last);
    }
  } else {
    ok = false;
  }
  out.router = item.string("router");
  if (out.router) {
    auto router = parse_ipv4(*out.router);
    if (!router) {
      item.error_at("router", "'" + path + ".router' must be an IPv4 address, got '" + *out.router + "'");
    } else if (has_subnet && !inside(*router)) {
      item.error_at("router", "'" + path + ".router' " + *out.router + " is not inside its subnet " + *subnet_text);
    }
  }
  out.dns = item.string_list("dns").value_or(defaults.dhcp_dns);
  for (const auto& dns : out.dns) {
    if (!is_ipv4_address(dns)) item.error_at("dns", "'" + path + ".dns' entries must be IPv4 addresses, got '" + dns + "'");
  }
  out.ntp = item.string_list("ntp").value_or(defaults.dhcp_ntp);
  for (const auto& ntp : out.ntp) {
    if (!is_ipv4_address(ntp)) item.error_at("ntp", "'" + path + ".ntp' entries must be IPv4 addresses, got '" + ntp + "'");
  }
  out.domain = item.string("domain");
  if (!out.domain) out.domain = defaults.dhcp_domain;
  out.lease_time = static_cast<std::uint32_t>(item.integer("lease_time", 60, 30 * 86400).value_or(defaults.dhcp_lease_time));
  item.finish();
  if (!ok) return std::nullopt;
  return out;
}

}  // namespace

NetbootConfig parse_netboot_config(const ConfigNode& tree, Diagnostics& diagnostics) {
  NetbootConfig config;
  ConfigMapReader top(tree, diagnostics, "");
  if (!top.valid()) {
    diagnostics.error(tree.location, std::string("netboot configuration must be a map, got ") + tree.kind_name());
    return config;
  }
  if (auto listen = top.map("listen")) {
    if (auto address = listen->string("address")) {
      if (!is_ipv4_address(*address)) {
        listen->error_at("address", "'listen.address' must be an IPv4 address, got '" + *address + "'");
      }
      config.address = *address;
    }
    config.interface = listen->string("interface");
    if (config.interface && listen->has("address")) {
      listen->error("'listen' takes 'address' or 'interface', not both");
    }
    listen->finish();
  }
  if (auto tftp = top.map("tftp")) {
    config.tftp_enabled = tftp->boolean("enabled").value_or(true);
    config.tftp_port = static_cast<std::uint16_t>(tftp->integer("port", 0, 65535).value_or(69));
    config.tftp_root = tftp->path_value("root");
    config.tftp_remap = tftp->path_value("remap");
    config.tftp_max_blksize = static_cast<std::uint16_t>(tftp->integer("max_blksize", 512, 65464).value_or(1468));
    config.tftp_path_mtu = static_cast<std::uint32_t>(tftp->integer("path_mtu", 0, 65535).value_or(1500));
    if (config.tftp_path_mtu != 0 && config.tftp_path_mtu < 576) {
      tftp->error_at("path_mtu", "'tftp.path_mtu' is " + std::to_string(config.tftp_path_mtu) +
                                     ": must be 0 (no clamp) or at least 576, the IPv4 minimum");
    }
    // Blocks are clamped to one IPv4 packet on path_mtu (IP 20 + UDP 8 + TFTP 4 bytes of headers):
    // a larger max_blksize alone changes nothing, so say so rather than let it look applied.
    if (const ConfigNode* max = tftp->node("max_blksize"); max != nullptr && config.tftp_path_mtu >= 576 &&
                                                           config.tftp_max_blksize > config.tftp_path_mtu - 32) {
      tftp->diagnostics().warning(max->location, "'tftp.max_blksize' " + std::to_string(config.tftp_max_blksize) +
                                                     " is more than one packet holds on 'tftp.path_mtu' " +
                                                     std::to_string(config.tftp_path_mtu) + ": blocks stay at " +
                                                     std::to_string(config.tftp_path_mtu - 32) +
                                                     " (set path_mtu to the network's MTU, e.g. 9000 for jumbo frames, or 0)");
    }
    config.tftp_max_windowsize = static_cast<std::uint16_t>(tftp->integer("max_windowsize", 1, 64).value_or(16));
    config.tftp_retransmit_timeout =
        std::chrono::milliseconds(tftp->integer("retransmit_timeout_ms", 100, 10000).value_or(1000));
    config.tftp_max_retransmit_interval =
        std::chrono::milliseconds(tftp->integer("max_retransmit_interval_ms", 100, 60000).value_or(8000));
    config.tftp_option_ack_timeout =
        std::chrono::milliseconds(tftp->integer("oack_timeout_ms", 100, 60000).value_or(6000));
    config.tftp_max_retransmits = static_cast<unsigned>(tftp->integer("max_retransmits", 1, 100).value_or(5));
    if (config.tftp_max_retransmit_interval < config.tftp_retransmit_timeout) {
      tftp->error_at("max_retransmit_interval_ms", "'tftp.max_retransmit_interval_ms' (" +
                                                       std::to_string(config.tftp_max_retransmit_interval.count()) +
                                                       ") must be at least 'tftp.retransmit_timeout_ms' (" +
                                                       std::to_string(config.tftp_retransmit_timeout.count()) + ")");
    }
    std::error_code ec;
    if (config.tftp_root && !fs::is_directory(*config.tftp_root, ec)) {
      tftp->error_at("root", "'tftp.root': " + config.tftp_root->string() + " " + path_check_failure(ec, "is not a directory"));
    }
    tftp->finish();
  }
  if (auto http = top.map("http")) {
    config.http_enabled = http->boolean("enabled").value_or(true);
    config.http_port = static_cast<std::uint16_t>(http->integer("port", 0, 65535).value_or(8080));
    config.http_root = http->path_value("root");
    if (auto tls = http->map("tls")) {
      config.http_tls_certificate = tls->path_value("certificate", true);
      config.http_tls_key = read_secret_reference(*tls, "key", true);
      tls->finish();
      if (!config.http_tls_certificate || !config.http_tls_key) config.http_tls_certificate.reset();
    }
    if (http->has("tls_port")) {
      config.http_tls_port = static_cast<std::uint16_t>(http->integer("tls_port", 0, 65535).value_or(443));
      if (!http->has("tls")) {
        http->error_at("tls_port", "'http.tls_port' needs 'http.tls' (certificate and key) to serve HTTPS with");
      } else if (*config.http_tls_port != 0 && *config.http_tls_port == config.http_port) {
        http->error_at("tls_port", "'http.tls_port' " + std::to_string(*config.http_tls_port) +
                                       " is also 'http.port': leave tls_port out to serve only HTTPS on that port");
      }
    }
    config.http_base_url = http->string("base_url");
    if (config.http_base_url) {
      bool https_allowed = http->has("tls");
      if (!is_usable_http_base_url(*config.http_base_url, https_allowed)) {
        http->error_at("base_url", "'http.base_url' must be an http:// URL" +
                                       std::string(https_allowed ? " or https:// URL" : " (https:// needs 'http.tls')") +
                                       ", got '" + *config.http_base_url + "'");
      }
      while (config.http_base_url->ends_with("/")) config.http_base_url->pop_back();
    }
    std::error_code ec;
    if (config.http_root && !fs::is_directory(*config.http_root, ec)) {
      http->error_at("root", "'http.root': " + config.http_root->string() + " " + path_check_failure(ec, "is not a directory"));
    }
    config.http_header_limit = static_cast<std::size_t>(http->integer("header_limit", 1024, 65536).value_or(8192));
    config.http_request_timeout = std::chrono::seconds(http->integer("request_timeout_s", 1, 600).value_or(10));
    config.http_idle_timeout = std::chrono::seconds(http->integer("idle_timeout_s", 1, 3600).value_or(30));
    config.http_max_connections = static_cast<std::size_t>(http->integer("max_connections", 1, 100000).value_or(512));
    http->finish();
  }
  if (auto dhcp = top.map("dhcp")) {
    config.dhcp_mode = dhcp->one_of("mode", {"off", "proxy", "full"}).value_or("off");
    config.dhcp_interface = dhcp->string("interface");
    config.dhcp_port = static_cast<std::uint16_t>(dhcp->integer("port", 1, 65535).value_or(67));
    auto address = [&](const char* key) -> std::optional<std::string> {
      auto text = dhcp->string(key);
      if (text && !is_ipv4_address(*text)) {
        dhcp->error_at(key, std::string("'dhcp.") + key + "' must be an IPv4 address, got '" + *text + "'");
      }
      return text;
    };
    if (auto pool = dhcp->string("pool")) {
      if (auto range = split_ipv4_pool(*pool)) {
        config.dhcp_pool_first = range->first;
        config.dhcp_pool_last = range->second;
      } else {
        dhcp->error_at("pool", "'dhcp.pool' must be FIRST-LAST IPv4 addresses, got '" + *pool + "'");
      }
    }
    config.dhcp_netmask = address("netmask");
    config.dhcp_router = address("router");
    config.dhcp_dns = dhcp->string_list("dns").value_or(std::vector<std::string>{});
    for (const auto& dns : config.dhcp_dns) {
      if (!is_ipv4_address(dns)) dhcp->error_at("dns", "'dhcp.dns' entries must be IPv4 addresses, got '" + dns + "'");
    }
    config.dhcp_ntp = dhcp->string_list("ntp").value_or(std::vector<std::string>{});
    for (const auto& ntp : config.dhcp_ntp) {
      if (!is_ipv4_address(ntp)) dhcp->error_at("ntp", "'dhcp.ntp' entries must be IPv4 addresses, got '" + ntp + "'");
    }
    config.dhcp_domain = dhcp->string("domain");
    config.dhcp_lease_time = static_cast<std::uint32_t>(dhcp->integer("lease_time", 60, 30 * 86400).value_or(3600));
    config.dhcp_lease_file = dhcp->path_value("lease_file");
    dhcp->list("relayed_subnets", [&](const ConfigNode& item, const std::string& path) {
      auto subnet = read_dhcp_relayed_subnet(item, path, config, diagnostics);
      if (!subnet) return;
      // Overlapping subnets would make the pool a relay's requests come from ambiguous.
      auto mine = parse_ipv4_subnet(subnet->subnet);
      for (const auto& other : config.dhcp_relayed_subnets) {
        auto theirs = parse_ipv4_subnet(other.subnet);
        std::uint32_t common = mine->second & theirs->second;
        if ((mine->first & common) == (theirs->first & common)) {
          diagnostics.error(item.location, "'" + path + "': subnet " + subnet->subnet + " overlaps " + other.subnet);
          return;
        }
      }
      config.dhcp_relayed_subnets.push_back(std::move(*subnet));
    });
    if (!config.dhcp_relayed_subnets.empty() && config.dhcp_mode != "full") {
      dhcp->error_at("relayed_subnets", "'dhcp.relayed_subnets' hands out addresses: it needs 'dhcp.mode: full'");
    }
    if (config.dhcp_mode != "off" && !config.dhcp_interface) {
      // Never broadcast DHCP on whatever the default route happens to be.
      dhcp->error("'dhcp.interface' is required when 'dhcp.mode' is " + config.dhcp_mode);
    }
    if (config.dhcp_mode == "full" && !config.dhcp_pool_first) dhcp->error("'dhcp.pool' is required in full mode");
    if (config.dhcp_mode == "full" && !config.dhcp_lease_file) {
      dhcp->error("'dhcp.lease_file' is required in full mode: leases must survive a restart");
    }
    dhcp->finish();
  }
  if (auto secrets = top.map("node_secrets")) {
    auto proof = secrets->one_of("proof", {"bound", "neighbour", "last-asker"});
    if (proof) config.node_secret_proof = parse_node_secret_proof(*proof).value_or(NodeSecretProof::neighbour);
    secrets->finish();
  }
  config.inventory = top.path_value("inventory");
  config.site = top.path_value("site");
  if (config.inventory && config.site) {
    top.error_at("site", "'site' and 'inventory' are two sources of the nodes: give one (a site derives its nodes file)");
  }
  config.boot_log = top.path_value("boot_log");
  config.state_dir = top.path_value("state_dir");
  top.finish();
  return config;
}

std::optional<std::pair<std::string, std::string>> split_ipv4_pool(std::string_view text) {
  auto dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  std::string first(text.substr(0, dash)), last(text.substr(dash + 1));
  if (!is_ipv4_address(first) || !is_ipv4_address(last)) return std::nullopt;
  return std::pair{std::move(first), std::move(last)};
}

std::optional<fs::path> state_directory(const NetbootConfig& config) {
  if (config.state_dir) return config.state_dir;
  // The lease file is already what serve keeps across restarts: its directory is the natural place.
  if (config.dhcp_lease_file) {
    fs::path directory = config.dhcp_lease_file->parent_path();
    return directory.empty() ? fs::path(".") : directory;
  }
  return std::nullopt;
}

NetbootConfig read_netboot_config(const fs::path& file, Diagnostics& diagnostics) {
  ConfigNode tree = load_yaml_file(file, diagnostics);
  if (tree.is_null()) {
    if (!diagnostics.has_errors()) diagnostics.error({file.string(), 1, 1}, "the netboot configuration is empty");
    return {};
  }
  NetbootConfig config = parse_netboot_config(tree, diagnostics);
  config.file = file;
  return config;
}

bool is_usable_http_base_url(std::string_view url, bool https_allowed) {
  return url.starts_with("http://") || (https_allowed && url.starts_with("https://"));
}

}  // namespace aggrik8s::netboot
