#pragma once
// DHCPv4 wire format (RFC 2131 BOOTP header + RFC 2132 options, RFC 3396 long options, RFC 4578 PXE
// options) as a value type: bytes in, packet out, and back. No sockets, no logging: the parser is
// fuzzed on its own, so this file depends only on the standard library and header-only core code.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"

namespace aggrik8s::netboot {

enum class DhcpMessageType : std::uint8_t {
  discover = 1, offer = 2, request = 3, decline = 4, ack = 5, nak = 6, release = 7, inform = 8,
};
const char* to_string(DhcpMessageType type);

namespace dhcp_option {
constexpr std::uint8_t pad = 0;
constexpr std::uint8_t subnet_mask = 1;
constexpr std::uint8_t router = 3;
constexpr std::uint8_t dns_server = 6;
constexpr std::uint8_t ntp_servers = 42;
constexpr std::uint8_t host_name = 12;
constexpr std::uint8_t domain_name = 15;
constexpr std::uint8_t vendor_specific = 43;
constexpr std::uint8_t requested_address = 50;
constexpr std::uint8_t lease_time = 51;
constexpr std::uint8_t overload = 52;
constexpr std::uint8_t message_type = 53;
constexpr std::uint8_t server_identifier = 54;
constexpr std::uint8_t parameter_request_list = 55;
constexpr std::uint8_t max_message_size = 57;
constexpr std::uint8_t message = 56;
constexpr std::uint8_t renewal_time = 58;
constexpr std::uint8_t rebinding_time = 59;
constexpr std::uint8_t vendor_class = 60;
constexpr std::uint8_t client_identifier = 61;
constexpr std::uint8_t tftp_server_name = 66;
constexpr std::uint8_t bootfile_name = 67;
constexpr std::uint8_t user_class = 77;
constexpr std::uint8_t relay_agent_information = 82;
constexpr std::uint8_t client_arch = 93;
constexpr std::uint8_t client_ndi = 94;
constexpr std::uint8_t client_uuid = 97;
constexpr std::uint8_t ipxe_encapsulated = 175;
constexpr std::uint8_t end = 255;
}  // namespace dhcp_option

// One option with its data. Options split over several instances (RFC 3396) are joined on parse and
// split again on encode, so `data` may be longer than 255 bytes.
struct DhcpOption {
  std::uint8_t code = 0;
  std::vector<std::uint8_t> data;
  bool operator==(const DhcpOption&) const = default;
};

constexpr std::size_t dhcp_fixed_header_size = 236;   // BOOTP header up to the options
constexpr std::size_t dhcp_min_packet_size = 240;     // header + magic cookie
constexpr std::size_t dhcp_bootp_min_size = 300;      // replies are padded to this: old ROMs want it
constexpr std::size_t dhcp_file_field_size = 128;     // the boot file name field (`file`)
constexpr std::uint32_t dhcp_magic_cookie = 0x63825363;

// IPv4 addresses are host-order integers; 0 means "none", as on the wire.
struct DhcpPacket {
  std::uint8_t op = 1;  // 1 BOOTREQUEST, 2 BOOTREPLY
  std::uint8_t htype = 1;
  std::uint8_t hlen = 6;
  std::uint8_t hops = 0;
  std::uint32_t xid = 0;
  std::uint16_t secs = 0;
  std::uint16_t flags = 0;  // bit 15: the client wants a broadcast reply
  std::uint32_t ciaddr = 0, yiaddr = 0, siaddr = 0, giaddr = 0;
  std::array<std::uint8_t, 16> chaddr{};
  std::string sname;  // up to 63 characters (64 with the NUL)
  std::string file;   // up to 127 characters
  // In wire order, each code once. Option 52 (overload) is consumed by the parser: options found in
  // `file`/`sname` are appended here and those fields are left empty; the encoder never overloads.
  std::vector<DhcpOption> options;
  bool operator==(const DhcpPacket&) const = default;

  const DhcpOption* find(std::uint8_t code) const;
  bool has(std::uint8_t code) const { return find(code) != nullptr; }
  // Replaces the option if present (keeping its position), else appends it.
  void set(std::uint8_t code, std::vector<std::uint8_t> data);
  void set(std::uint8_t code, std::string_view text);
  void set_address(std::uint8_t code, std::uint32_t address);
  void set_u32(std::uint8_t code, std::uint32_t value);
  void erase(std::uint8_t code);

  bool broadcast_flag() const { return (flags & 0x8000) != 0; }
  // "aa:bb:cc:dd:ee:ff" for Ethernet (htype 1, hlen 6); otherwise the hlen bytes in hex.
  std::string hardware_address() const;
  // Who the client is, for its lease and its flood limit (RFC 2131 4.2: the client identifier,
  // option 61, when sent, else htype + chaddr). Ethernet chaddr keys are the MAC ("aa:bb:cc:dd:ee:ff",
  // as lease files before option 61 had them), and so is an option 61 that is just htype + that MAC
  // (what udhcpc and most firmware send): the same machine keeps one key whether it sends 61 or not.
  // Other option 61 values are "id:" + hex; other hardware types "hw<htype>:" + hex. nullopt when the
  // client can be told apart by neither: no option 61 (or one shorter than 2 bytes, RFC 2132 9.14)
  // and hlen 0 or an all-zero chaddr. The key never holds spaces (it is a lease file field).
  std::optional<std::string> client_key() const;

  // ---- typed option accessors: nullopt when absent or malformed (wrong length) ----
  std::optional<DhcpMessageType> message_type() const;       // 53
  std::optional<std::uint32_t> server_identifier() const;    // 54
  std::optional<std::uint32_t> requested_address() const;    // 50
  std::optional<std::uint32_t> lease_time() const;           // 51
  std::vector<std::uint8_t> parameter_request_list() const;  // 55, empty when absent
  std::optional<std::string> vendor_class() const;           // 60
  std::optional<std::vector<std::uint8_t>> client_identifier() const;  // 61
  std::vector<std::string> user_classes() const;             // 77, see dhcp_packet.cpp
  std::vector<std::uint16_t> client_architectures() const;   // 93, big-endian 16-bit values
  std::optional<std::array<std::uint8_t, 3>> client_ndi() const;      // 94: type, major, minor
  std::optional<std::vector<std::uint8_t>> client_uuid() const;       // 97, as sent
  std::optional<std::string> tftp_server_name() const;       // 66
  std::optional<std::string> bootfile_name() const;          // 67
  bool is_ipxe() const;  // option 77 says "iPXE" or option 175 is present
};

// A datagram that is not DHCP. The message says what was wrong and where, e.g.
// "DHCP packet truncated (len=12), at least 240 expected".
class DhcpParseError : public Error {
 public:
  DhcpParseError(const std::string& message, std::size_t byte_offset) : Error(message), byte_offset_(byte_offset) {}
  std::size_t byte_offset() const { return byte_offset_; }

 private:
  std::size_t byte_offset_;
};

// Throws DhcpParseError for: fewer than 240 bytes, op other than 1/2, hlen above 16, a wrong magic
// cookie, an option whose length byte is missing or whose data runs past the end of its area, option
// 52 with a length other than 1 or a value other than 1-3. Tolerated because real ROMs send them: no
// end option, trailing garbage after the end option, pad bytes anywhere.
DhcpPacket parse_dhcp_packet(std::span<const std::uint8_t> datagram);

// The encoded reply is padded to 300 bytes (dhcp_bootp_min_size).
std::vector<std::uint8_t> encode_dhcp_packet(const DhcpPacket& packet);
// encode_dhcp_packet(packet).size(), without encoding.
std::size_t dhcp_encoded_size(const DhcpPacket& packet);

// ---- PXE vendor options (option 43 as PXE defines it) ----
struct PxeSubOption {
  std::uint8_t code = 0;
  std::vector<std::uint8_t> data;
};
// Sub-options in order, then an end byte (255).
std::vector<std::uint8_t> encode_pxe_vendor_options(const std::vector<PxeSubOption>& sub_options);
// Sub-option 6 (discovery control) = 8: "use the boot file in the offer, skip PXE boot server discovery".
std::vector<std::uint8_t> pxe_bios_skip_discovery_option();
// The 32 bytes dnsmasq sends for `pxe-service=0,"Raspberry Pi Boot"`; the Pi bootloader looks for
// exactly this: 06 01 03, 0a 04 00 "PXE", 09 14 00 00 11 "Raspberry Pi Boot", ff.
std::vector<std::uint8_t> raspberry_pi_boot_option();

// ---- IPv4 helpers ----
std::string ipv4_to_string(std::uint32_t address);
std::optional<std::uint32_t> parse_ipv4(std::string_view text);

}  // namespace aggrik8s::netboot
