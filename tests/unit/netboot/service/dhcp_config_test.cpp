// The `dhcp:` section of netboot.yaml.
#include <catch2/catch.hpp>

#include "core/config_node.hpp"
#include "netboot/service/netboot_config.hpp"

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
                  "       dns: [10.98.0.1, 10.98.0.2], ntp: [10.98.0.123], lease_time: 600, lease_file: /tmp/leases}\n",
                  &config) == "");
  CHECK(config.dhcp_mode == "full");
  CHECK(config.dhcp_interface == "br0");
  CHECK(config.dhcp_pool_first == "10.98.0.100");
  CHECK(config.dhcp_pool_last == "10.98.0.200");
  CHECK(config.dhcp_dns.size() == 2);
  CHECK(config.dhcp_ntp == std::vector<std::string>{"10.98.0.123"});
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

TEST_CASE("dhcp config: relayed subnets, each with its pool and options", "[dhcp]") {
  NetbootConfig config;
  CHECK(errors_of("dhcp:\n"
                  "  mode: full\n  interface: br0\n  pool: 10.98.0.100-10.98.0.200\n  lease_file: leases\n"
                  "  dns: [10.98.0.1]\n  domain: lab.example\n  lease_time: 600\n"
                  "  relayed_subnets:\n"
                  "    - {subnet: 10.98.6.0/24, pool: 10.98.6.100-10.98.6.150, router: 10.98.6.1}\n"
                  "    - {subnet: 10.98.8.0/22, pool: 10.98.9.0-10.98.10.255, dns: [10.98.8.53], domain: far.example,\n"
                  "       lease_time: 7200}\n",
                  &config) == "");
  REQUIRE(config.dhcp_relayed_subnets.size() == 2);
  const auto& near = config.dhcp_relayed_subnets[0];
  CHECK(near.subnet == "10.98.6.0/24");
  CHECK(near.pool_first == "10.98.6.100");
  CHECK(near.pool_last == "10.98.6.150");
  CHECK(near.router == "10.98.6.1");
  CHECK(near.dns == std::vector<std::string>{"10.98.0.1"});  // the section's own, by default
  CHECK(near.domain == "lab.example");
  CHECK(near.lease_time == 600);
  const auto& far = config.dhcp_relayed_subnets[1];
  CHECK_FALSE(far.router);  // never inherited: a router is per subnet
  CHECK(far.dns == std::vector<std::string>{"10.98.8.53"});
  CHECK(far.domain == "far.example");
  CHECK(far.lease_time == 7200);
}

TEST_CASE("dhcp config: relayed subnet mistakes name the item and what was expected", "[dhcp]") {
  std::string head = "dhcp:\n  mode: full\n  interface: br0\n  pool: 10.98.0.100-10.98.0.200\n  lease_file: leases\n"
                     "  relayed_subnets:\n";
  CHECK_THAT(errors_of(head + "    - {subnet: 10.98.6.1/24, pool: 10.98.6.100-10.98.6.150}\n"),
             Catch::Contains("netboot.yaml:7:") && Catch::Contains("'dhcp.relayed_subnets[0].subnet' must be NETWORK/PREFIX"));
  CHECK_THAT(errors_of(head + "    - {subnet: 10.98.6.0/24, pool: 10.98.7.100-10.98.7.150}\n"),
             Catch::Contains("'dhcp.relayed_subnets[0].pool' 10.98.7.100-10.98.7.150 is not inside its subnet 10.98.6.0/24"));
  CHECK_THAT(errors_of(head + "    - {subnet: 10.98.6.0/24, pool: 10.98.6.150-10.98.6.100}\n"),
             Catch::Contains("FIRST not above LAST"));
  CHECK_THAT(errors_of(head + "    - {subnet: 10.98.6.0/24, pool: 10.98.6.100-10.98.6.150, router: 10.98.5.1}\n"),
             Catch::Contains("'dhcp.relayed_subnets[0].router' 10.98.5.1 is not inside its subnet"));
  CHECK_THAT(errors_of(head + "    - {subnet: 10.98.6.0/24}\n"), Catch::Contains("pool"));
  CHECK_THAT(errors_of(head + "    - {subnet: 10.98.6.0/24, pool: 10.98.6.1-10.98.6.2}\n"
                              "    - {subnet: 10.98.4.0/22, pool: 10.98.4.1-10.98.4.2}\n"),
             Catch::Contains("'dhcp.relayed_subnets[1]': subnet 10.98.4.0/22 overlaps 10.98.6.0/24"));
  CHECK_THAT(errors_of(head + "    - {subnet: 10.98.6.0/24, pool: 10.98.6.1-10.98.6.2, gateway: 10.98.6.1}\n"),
             Catch::Contains("gateway"));
  CHECK_THAT(errors_of("dhcp:\n  mode: proxy\n  interface: br0\n  relayed_subnets:\n"
                       "    - {subnet: 10.98.6.0/24, pool: 10.98.6.1-10.98.6.2}\n"),
             Catch::Contains("'dhcp.relayed_subnets' hands out addresses: it needs 'dhcp.mode: full'"));
}
