// The DHCPv4 codec: header fields, options, RFC 3396 joins, overload, and the typed parse errors.
#include "netboot/dhcp/dhcp_packet.hpp"

#include <catch2/catch.hpp>

using namespace aggrik8s::netboot;

namespace {

// A minimal valid request: 236 header bytes (op 1, Ethernet), the cookie, then `options`.
std::vector<std::uint8_t> request_bytes(std::vector<std::uint8_t> options) {
  std::vector<std::uint8_t> out(236, 0);
  out[0] = 1;
  out[1] = 1;
  out[2] = 6;
  out[4] = 0xde; out[5] = 0xad; out[6] = 0xbe; out[7] = 0xef;
  for (std::uint8_t i = 0; i < 6; ++i) out[28 + i] = static_cast<std::uint8_t>(0x10 + i);
  out.insert(out.end(), {0x63, 0x82, 0x53, 0x63});
  out.insert(out.end(), options.begin(), options.end());
  return out;
}

std::string parse_error(const std::vector<std::uint8_t>& bytes) {
  try {
    parse_dhcp_packet(bytes);
  } catch (const DhcpParseError& e) {
    return e.what();
  }
  return "(parsed)";
}

}  // namespace

TEST_CASE("dhcp packet: a DISCOVER parses into header fields and typed options", "[dhcp]") {
  auto packet = parse_dhcp_packet(request_bytes({53, 1, 1, 55, 3, 1, 3, 6, 61, 7, 1, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
                                                 50, 4, 10, 98, 0, 5, 51, 4, 0, 0, 0x0e, 0x10, 255}));
  CHECK(packet.op == 1);
  CHECK(packet.xid == 0xdeadbeef);
  CHECK(packet.hardware_address() == "10:11:12:13:14:15");
  CHECK(packet.message_type() == DhcpMessageType::discover);
  CHECK(packet.parameter_request_list() == std::vector<std::uint8_t>{1, 3, 6});
  CHECK(packet.client_identifier()->size() == 7);
  CHECK(packet.requested_address() == 0x0a620005u);
  CHECK(packet.lease_time() == 3600u);
  CHECK_FALSE(packet.server_identifier());
}

TEST_CASE("dhcp packet: encode then parse gives the same packet, padded to 300 bytes", "[dhcp]") {
  DhcpPacket packet;
  packet.op = 2;
  packet.xid = 42;
  packet.flags = 0x8000;
  packet.yiaddr = *parse_ipv4("10.98.0.50");
  packet.siaddr = *parse_ipv4("10.98.0.1");
  packet.file = "undionly.kpxe";
  packet.sname = "boot";
  packet.set(dhcp_option::message_type, std::vector<std::uint8_t>{2});
  packet.set_address(dhcp_option::server_identifier, packet.siaddr);
  packet.set(dhcp_option::vendor_class, "PXEClient");
  auto bytes = encode_dhcp_packet(packet);
  CHECK(bytes.size() == 300);
  CHECK(parse_dhcp_packet(bytes) == packet);
  CHECK(packet.broadcast_flag());
  CHECK(ipv4_to_string(packet.yiaddr) == "10.98.0.50");
}

TEST_CASE("dhcp packet: a long option is split on encode and joined on parse (RFC 3396)", "[dhcp]") {
  DhcpPacket packet;
  packet.set(dhcp_option::vendor_specific, std::vector<std::uint8_t>(600, 7));
  auto bytes = encode_dhcp_packet(packet);
  CHECK(bytes.size() > 600 + 240);
  auto parsed = parse_dhcp_packet(bytes);
  REQUIRE(parsed.find(43) != nullptr);
  CHECK(parsed.find(43)->data.size() == 600);
}

TEST_CASE("dhcp packet: options overloaded into file and sname are read, in RFC order", "[dhcp]") {
  auto bytes = request_bytes({52, 1, 3, 53, 1, 3, 255});
  // file field (byte 108): option 67 "a.efi"; sname field (byte 44): option 60 "X".
  std::vector<std::uint8_t> file_options = {67, 5, 'a', '.', 'e', 'f', 'i', 255};
  std::copy(file_options.begin(), file_options.end(), bytes.begin() + 108);
  std::vector<std::uint8_t> sname_options = {60, 1, 'X', 255};
  std::copy(sname_options.begin(), sname_options.end(), bytes.begin() + 44);
  auto packet = parse_dhcp_packet(bytes);
  CHECK(packet.file.empty());
  CHECK(packet.sname.empty());
  CHECK(packet.bootfile_name() == "a.efi");
  CHECK(packet.vendor_class() == "X");
  CHECK_FALSE(packet.has(dhcp_option::overload));
  REQUIRE(packet.options.size() == 3);
  CHECK(packet.options[1].code == 67);  // file before sname
}

TEST_CASE("dhcp packet: bad input is refused with what and where", "[dhcp]") {
  CHECK(parse_error(std::vector<std::uint8_t>(12, 1)) == "DHCP packet truncated (len=12), at least 240 expected");
  auto bad_cookie = request_bytes({255});
  bad_cookie[239] = 0x64;
  CHECK(parse_error(bad_cookie) == "DHCP magic cookie at byte 236 is 0x63825364, expected 0x63825363");
  auto absurd_hlen = request_bytes({255});
  absurd_hlen[2] = 200;
  CHECK(parse_error(absurd_hlen) == "DHCP hardware address length 200 at byte 2 exceeds 16");
  auto bad_op = request_bytes({255});
  bad_op[0] = 9;
  CHECK(parse_error(bad_op) == "DHCP op 9 at byte 0 is neither BOOTREQUEST (1) nor BOOTREPLY (2)");
  CHECK(parse_error(request_bytes({53, 1, 1, 61, 40, 1, 2, 3})) ==
        "DHCP option 61 at byte 243 of the options claims 40 bytes, only 3 remain");
  CHECK(parse_error(request_bytes({0, 0, 53})) == "DHCP option 53 at byte 242 of the options has no length byte");
  CHECK(parse_error(request_bytes({52, 1, 4, 255})) == "DHCP option 52 (overload) at byte 240 must be one byte of 1, 2 or 3");
  auto overload_past_end = request_bytes({52, 1, 1, 255});
  overload_past_end[234] = 67;
  overload_past_end[235] = 9;
  CHECK(parse_error(overload_past_end) == "DHCP option 67 at byte 234 of the file field claims 9 bytes, only 0 remain");
}

TEST_CASE("dhcp packet: pads, a missing end option and trailing bytes after it are tolerated", "[dhcp]") {
  auto packet = parse_dhcp_packet(request_bytes({0, 0, 53, 1, 3, 0, 93, 2, 0, 7}));
  CHECK(packet.message_type() == DhcpMessageType::request);
  CHECK(packet.client_architectures() == std::vector<std::uint16_t>{7});
  auto trailing = parse_dhcp_packet(request_bytes({53, 1, 8, 255, 61, 99}));
  CHECK(trailing.message_type() == DhcpMessageType::inform);
}

TEST_CASE("dhcp packet: PXE identification options", "[dhcp]") {
  std::vector<std::uint8_t> options = {60, 9, 'P', 'X', 'E', 'C', 'l', 'i', 'e', 'n', 't', 77, 4, 'i', 'P', 'X', 'E',
                                       94, 3, 1, 3, 16, 97, 17, 0};
  for (std::uint8_t i = 0; i < 16; ++i) options.push_back(i);
  options.push_back(255);
  auto packet = parse_dhcp_packet(request_bytes(options));
  CHECK(packet.vendor_class() == "PXEClient");
  CHECK(packet.user_classes() == std::vector<std::string>{"iPXE"});
  CHECK(packet.is_ipxe());
  CHECK(packet.client_ndi() == std::array<std::uint8_t, 3>{1, 3, 16});
  CHECK(packet.client_uuid()->size() == 17);
  // RFC 3004 form: length-prefixed instances.
  auto rfc3004 = parse_dhcp_packet(request_bytes({77, 8, 3, 'a', 'b', 'c', 3, 'x', 'y', 'z', 255}));
  CHECK(rfc3004.user_classes() == std::vector<std::string>{"abc", "xyz"});
  CHECK_FALSE(rfc3004.is_ipxe());
  CHECK(parse_dhcp_packet(request_bytes({175, 0, 255})).is_ipxe());
}

TEST_CASE("dhcp packet: the Raspberry Pi option 43 is dnsmasq's exact 32 bytes", "[dhcp]") {
  std::vector<std::uint8_t> expected = {0x06, 0x01, 0x03, 0x0a, 0x04, 0x00, 0x50, 0x58, 0x45, 0x09, 0x14,
                                        0x00, 0x00, 0x11, 0x52, 0x61, 0x73, 0x70, 0x62, 0x65, 0x72, 0x72,
                                        0x79, 0x20, 0x50, 0x69, 0x20, 0x42, 0x6f, 0x6f, 0x74, 0xff};
  CHECK(raspberry_pi_boot_option() == expected);
  CHECK(pxe_bios_skip_discovery_option() == std::vector<std::uint8_t>{6, 1, 8, 255});
}

TEST_CASE("dhcp packet: IPv4 text", "[dhcp]") {
  CHECK(parse_ipv4("255.255.255.0") == 0xffffff00u);
  CHECK_FALSE(parse_ipv4("1.2.3"));
  CHECK_FALSE(parse_ipv4("1.2.3.256"));
  CHECK_FALSE(parse_ipv4("1.2.3.4x"));
  CHECK_FALSE(parse_ipv4("0001.2.3.4"));
  // Formatted without allocating (to_chars into a buffer): the edges of every octet's width.
  CHECK(ipv4_to_string(0) == "0.0.0.0");
  CHECK(ipv4_to_string(0xffffffffu) == "255.255.255.255");
  CHECK(ipv4_to_string(0x0a620309u) == "10.98.3.9");
  CHECK(ipv4_to_string(0x6401ff0au) == "100.1.255.10");
  for (std::uint32_t address : {0u, 1u, 0x0a620309u, 0xc0a80001u, 0xfffffffeu}) CHECK(parse_ipv4(ipv4_to_string(address)) == address);
}

TEST_CASE("dhcp packet: the client key is option 61 when sent, else htype + chaddr, else none", "[dhcp]") {
  DhcpPacket packet;
  packet.chaddr = {0x52, 0x54, 0, 1, 2, 3};
  CHECK(packet.client_key() == "52:54:00:01:02:03");
  // Option 61 that is just htype + the same MAC (udhcpc, most firmware): the same key, so a machine
  // keeps its lease whether it sends 61 or not, and lease files keyed by MAC still match.
  packet.set(dhcp_option::client_identifier, std::vector<std::uint8_t>{1, 0x52, 0x54, 0, 1, 2, 3});
  CHECK(packet.client_key() == "52:54:00:01:02:03");
  // Any other option 61 (a DUID, a name) is the key, whatever chaddr says.
  packet.set(dhcp_option::client_identifier, std::vector<std::uint8_t>{0xff, 0, 0, 0, 1, 0xab});
  CHECK(packet.client_key() == "id:ff00000001ab");
  packet.chaddr = {};
  packet.hlen = 0;
  CHECK(packet.client_key() == "id:ff00000001ab");
  // Neither: hlen 0, or an all-zero chaddr, and no (or a too short) option 61.
  packet.erase(dhcp_option::client_identifier);
  CHECK_FALSE(packet.client_key());
  packet.hlen = 6;
  CHECK_FALSE(packet.client_key());
  packet.set(dhcp_option::client_identifier, std::vector<std::uint8_t>{1});
  CHECK_FALSE(packet.client_key());
  // hlen counts: bytes past it are not the address; other hardware types name their type.
  packet.erase(dhcp_option::client_identifier);
  packet.chaddr = {0, 0, 0, 0, 0, 0, 9};
  CHECK_FALSE(packet.client_key());
  packet.htype = 32;  // another hardware type with a longer address
  packet.hlen = 8;
  CHECK(packet.client_key() == "hw32:0000000000000900");
}
