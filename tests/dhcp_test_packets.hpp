#pragma once
// The DHCP requests the unit and integration tests send: one client per last MAC byte.
#include <cstdint>
#include <vector>

#include "netboot/dhcp/dhcp_packet.hpp"

namespace aggrik8s::test {

// A BOOTREQUEST of DHCP message `type` (1 DISCOVER, 3 REQUEST, ...) from 52:54:00:98:09:<mac_last>.
inline netboot::DhcpPacket dhcp_request(std::uint8_t type, std::uint8_t mac_last, std::uint32_t xid) {
  netboot::DhcpPacket packet;
  packet.xid = xid;
  packet.chaddr = {0x52, 0x54, 0, 0x98, 9, mac_last};
  packet.set(netboot::dhcp_option::message_type, std::vector<std::uint8_t>{type});
  return packet;
}

}  // namespace aggrik8s::test
