// The `dhcp:` section of netboot.yaml.
#include <catch2/catch.hpp>

#include "core/config_node.hpp"
#include "netboot/netboot_config.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;

namespace {
std::string errors_of(const std::string& yaml, NetbootConfig* out = nullptr) {
  Diagnostics diagnostics;
  ConfigNode tree = load_yaml_string(yaml, "netboot.yaml", diagnostics);
  NetbootConfig config = parse_netboot_config(tree, diagnostics);
  if (out != nullptr) *out = config;
  std::string text;
  for (const auto& d : diagnostics.all()) text += d.str() + "\n";
  return text;
}
}  // namespace

TEST_CASE("dhcp config: a full-mode section reads into the config", "[dhcp]") {
  NetbootConfig config;
  CHECK(errors_of("dhcp: {mode: full, interface: br0, pool: 10.98.0.100-10.98.0.200, router: 10.98.0.1,\n"
                  "       dns: [10.98.0.1, 10.98.0.2], lease_time: 600, lease_file: /tmp/leases}\n",
                  &config) == "");
  CHECK(config.dhcp_mode == "full");
  CHECK(config.dhcp_interface == "br0");
  CHECK(config.dhcp_pool_first == "10.98.0.100");
  CHECK(config.dhcp_pool_last == "10.98.0.200");
  CHECK(config.dhcp_dns.size() == 2);
  CHECK(config.dhcp_lease_time == 600);
  CHECK(errors_of("listen: {address: 10.0.0.1}\n", &config) == "");
  CHECK(config.dhcp_mode == "off");
}

TEST_CASE("dhcp config: mistakes are reported with their place", "[dhcp]") {
  CHECK_THAT(errors_of("dhcp: {mode: proxy}\n"), Catch::Contains("'dhcp.interface' is required when 'dhcp.mode' is proxy"));
  auto full = errors_of("dhcp: {mode: full, interface: br0}\n");
  CHECK_THAT(full, Catch::Contains("'dhcp.pool' is required in full mode"));
  CHECK_THAT(full, Catch::Contains("'dhcp.lease_file' is required in full mode"));
  CHECK_THAT(errors_of("dhcp: {mode: off, pool: 10.0.0.1}\n"), Catch::Contains("netboot.yaml:1:") &&
                                                                  Catch::Contains("must be FIRST-LAST IPv4 addresses"));
  CHECK_THAT(errors_of("dhcp: {mode: off, router: 10.0.0}\n"), Catch::Contains("'dhcp.router' must be an IPv4 address"));
  CHECK_THAT(errors_of("dhcp: {mode: sometimes}\n"), Catch::Contains("mode"));
}
