#pragma once
// The subnets a full-mode DHCP server hands out addresses on, and which one a request belongs to. The
// first is the server interface's own subnet, for clients on the link (giaddr 0); the others are
// reached through relays, and a relayed request (giaddr set) is answered from the subnet that contains
// the relay's address, as RFC 2131 4.3.1 has it. Pure: no sockets, no files.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "netboot/dhcp/dhcp_lease_pool.hpp"

namespace aggrik8s::netboot {

struct DhcpSubnet {
  std::uint32_t network = 0;  // host order, already masked
  std::uint32_t netmask = 0xffffff00;
  DhcpPoolRange pool;         // its range, lease time and offer hold
  std::optional<std::uint32_t> router;
  std::vector<std::uint32_t> dns;
  std::vector<std::uint32_t> ntp;  // option 42
  std::optional<std::string> domain;

  bool contains(std::uint32_t address) const { return (address & netmask) == network; }
};

// The subnet a request is answered from (RFC 2131 4.3.1): a relayed request (giaddr set) from the
// first subnet containing giaddr (the interface's own too: a relay may sit on it), nullopt when no
// subnet does (the request must get no address); a client that already has an address (ciaddr set:
// RENEWING, RELEASE, INFORM, unicast straight to us, not through the relay) from the subnet holding
// it; anything else, straight from the link, from subnets[0].
std::optional<std::size_t> select_dhcp_subnet(const std::vector<DhcpSubnet>& subnets, std::uint32_t giaddr,
                                              std::uint32_t ciaddr);

// The subnet that holds `address` (a lease read back, a reservation), else 0: the interface's subnet
// keeps whatever fits nowhere else, as it did when there was only one pool.
std::size_t dhcp_subnet_of_address(const std::vector<DhcpSubnet>& subnets, std::uint32_t address);

// Prefix length from a netmask such as 255.255.255.0; nullopt if the mask's ones are not contiguous.
std::optional<unsigned> netmask_prefix_length(std::uint32_t netmask);
// "10.0.5.0/24" -> network and netmask; nullopt unless the text is ADDRESS/0..32 with no host bits set.
std::optional<std::pair<std::uint32_t, std::uint32_t>> parse_ipv4_subnet(const std::string& text);

}  // namespace aggrik8s::netboot
