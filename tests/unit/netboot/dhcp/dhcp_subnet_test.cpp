// Which subnet (and so which pool and options) a full-mode request is answered from.
#include "netboot/dhcp/dhcp_subnet.hpp"

#include <catch2/catch.hpp>

#include "netboot/dhcp/dhcp_packet.hpp"

using namespace aggrik8s::netboot;

namespace {
std::uint32_t ip(const char* text) { return *parse_ipv4(text); }
DhcpSubnet subnet(const char* cidr) {
  auto parsed = parse_ipv4_subnet(cidr);
  REQUIRE(parsed);
  DhcpSubnet out;
  out.network = parsed->first;
  out.netmask = parsed->second;
  return out;
}
}  // namespace

TEST_CASE("dhcp subnet: giaddr selects the subnet that contains it, ciaddr the one holding the address", "[dhcp]") {
  std::vector<DhcpSubnet> subnets{subnet("10.98.0.0/24"), subnet("10.98.6.0/24"), subnet("10.98.8.0/22")};
  // Straight from the link.
  CHECK(select_dhcp_subnet(subnets, 0, 0) == 0u);
  // Relayed: the relay's own address picks the pool, whichever subnet it is.
  CHECK(select_dhcp_subnet(subnets, ip("10.98.6.1"), 0) == 1u);
  CHECK(select_dhcp_subnet(subnets, ip("10.98.11.254"), 0) == 2u);  // the last address of the /22
  CHECK(select_dhcp_subnet(subnets, ip("10.98.0.254"), 0) == 0u);   // a relay on the interface's subnet
  // giaddr wins over ciaddr (a relayed renewal in REBINDING).
  CHECK(select_dhcp_subnet(subnets, ip("10.98.6.1"), ip("10.98.9.7")) == 1u);
  // No pool for the relay's subnet: nothing, not the interface's pool.
  CHECK_FALSE(select_dhcp_subnet(subnets, ip("10.98.7.1"), 0));
  CHECK_FALSE(select_dhcp_subnet(subnets, ip("10.98.12.1"), 0));  // just past the /22
  CHECK_FALSE(select_dhcp_subnet(subnets, ip("192.168.1.1"), 0));
  // A renewal or RELEASE unicast straight to us: the subnet of the client's address.
  CHECK(select_dhcp_subnet(subnets, 0, ip("10.98.9.7")) == 2u);
  CHECK(select_dhcp_subnet(subnets, 0, ip("10.98.0.7")) == 0u);
  CHECK(select_dhcp_subnet(subnets, 0, ip("172.16.0.7")) == 0u);  // unknown: the local pool NAKs it
  CHECK_FALSE(select_dhcp_subnet({}, 0, 0));
}

TEST_CASE("dhcp subnet: leases and reservations go to the subnet holding the address, else the interface's", "[dhcp]") {
  std::vector<DhcpSubnet> subnets{subnet("10.98.0.0/24"), subnet("10.98.6.0/24")};
  CHECK(dhcp_subnet_of_address(subnets, ip("10.98.6.20")) == 1u);
  CHECK(dhcp_subnet_of_address(subnets, ip("10.98.0.20")) == 0u);
  CHECK(dhcp_subnet_of_address(subnets, ip("10.1.2.3")) == 0u);
}

TEST_CASE("dhcp subnet: CIDR text and netmasks", "[dhcp]") {
  auto parsed = parse_ipv4_subnet("10.98.8.0/22");
  REQUIRE(parsed);
  CHECK(parsed->first == ip("10.98.8.0"));
  CHECK(parsed->second == ip("255.255.252.0"));
  CHECK(parse_ipv4_subnet("0.0.0.0/0") == std::pair{0u, 0u});
  CHECK(parse_ipv4_subnet("10.98.8.1/32") == std::pair{ip("10.98.8.1"), 0xffffffffu});
  CHECK_FALSE(parse_ipv4_subnet("10.98.8.1/22"));  // host bits set
  CHECK_FALSE(parse_ipv4_subnet("10.98.8.0"));
  CHECK_FALSE(parse_ipv4_subnet("10.98.8.0/33"));
  CHECK_FALSE(parse_ipv4_subnet("10.98.8.0/"));
  CHECK_FALSE(parse_ipv4_subnet("10.98.8.0/2x"));
  CHECK_FALSE(parse_ipv4_subnet("10.98.8/24"));
  CHECK(netmask_prefix_length(ip("255.255.255.0")) == 24u);
  CHECK(netmask_prefix_length(0) == 0u);
  CHECK(netmask_prefix_length(0xffffffff) == 32u);
  CHECK_FALSE(netmask_prefix_length(ip("255.0.255.0")));
}
