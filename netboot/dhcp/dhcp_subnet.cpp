#include "netboot/dhcp/dhcp_subnet.hpp"

#include <charconv>

#include "netboot/dhcp/dhcp_packet.hpp"

namespace aggrik8s::netboot {

std::optional<std::size_t> select_dhcp_subnet(const std::vector<DhcpSubnet>& subnets, std::uint32_t giaddr,
                                              std::uint32_t ciaddr) {
  if (subnets.empty()) return std::nullopt;
  if (giaddr != 0) {
    for (std::size_t i = 0; i < subnets.size(); ++i) {
      if (subnets[i].contains(giaddr)) return i;
    }
    return std::nullopt;
  }
  if (ciaddr != 0) return dhcp_subnet_of_address(subnets, ciaddr);
  return 0;
}

std::size_t dhcp_subnet_of_address(const std::vector<DhcpSubnet>& subnets, std::uint32_t address) {
  for (std::size_t i = 1; i < subnets.size(); ++i) {
    if (subnets[i].contains(address)) return i;
  }
  return 0;
}

std::optional<unsigned> netmask_prefix_length(std::uint32_t netmask) {
  unsigned length = 0;
  while (length < 32 && (netmask & (0x80000000u >> length)) != 0) ++length;
  std::uint32_t canonical = length == 0 ? 0 : ~std::uint32_t{0} << (32 - length);
  if (canonical != netmask) return std::nullopt;
  return length;
}

std::optional<std::pair<std::uint32_t, std::uint32_t>> parse_ipv4_subnet(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos) return std::nullopt;
  auto address = parse_ipv4(text.substr(0, slash));
  unsigned length = 0;
  const char* first = text.data() + slash + 1;
  const char* last = text.data() + text.size();
  auto [end, error] = std::from_chars(first, last, length);
  if (!address || error != std::errc{} || end != last || first == last || length > 32) return std::nullopt;
  std::uint32_t netmask = length == 0 ? 0 : ~std::uint32_t{0} << (32 - length);
  if ((*address & ~netmask) != 0) return std::nullopt;  // "10.0.5.7/24" is a host, not a subnet
  return std::pair{*address, netmask};
}

}  // namespace aggrik8s::netboot
