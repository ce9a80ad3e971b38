// libFuzzer target for the DHCP packet parser: every datagram either parses or throws DhcpParseError
// pointing inside it, and whatever parses encodes to bytes that parse back to the same packet (the
// encoder is what builds our replies from parsed requests).
#include <cstdint>
#include <cstdlib>
#include <span>

#include "netboot/dhcp/dhcp_packet.hpp"

using namespace aggrik8s::netboot;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  DhcpPacket packet;
  try {
    packet = parse_dhcp_packet(std::span<const std::uint8_t>(data, size));
  } catch (const DhcpParseError& e) {
    if (e.byte_offset() > size) std::abort();
    return 0;
  }
  std::vector<std::uint8_t> encoded = encode_dhcp_packet(packet);
  if (!(parse_dhcp_packet(encoded) == packet)) std::abort();
  // The accessors run on hostile data too.
  (void)packet.message_type();
  (void)packet.user_classes();
  (void)packet.client_architectures();
  (void)packet.hardware_address();
  (void)packet.is_ipxe();
  return 0;
}
