#pragma once
// What a booting machine is told in a DHCP offer: a pure function of its request and the inventory,
// shared by proxy and full mode. No sockets; table-tested in tests/unit/dhcp_boot_decision_test.cpp.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "netboot/dhcp/dhcp_packet.hpp"
#include "netboot/service/node_inventory.hpp"

namespace aggrik8s::netboot {

enum class DhcpClientKind {
  not_booting,    // no PXE/HTTP/Pi marks: an ordinary DHCP client
  bios,           // arch 0 PXE ROM
  uefi_x64,       // arch 7 / 9
  uefi_arm64,     // arch 11
  ipxe,           // iPXE itself (option 77 "iPXE" or option 175): already chainloaded
  uefi_http,      // HTTPClient, arch 15/16/19
  raspberry_pi,   // Pi 4/5 EEPROM bootloader
  uboot,          // arch 21/22
  unsupported,    // a boot client with an architecture we have nothing for
};
const char* to_string(DhcpClientKind kind);

struct DhcpBootSettings {
  std::uint32_t tftp_server = 0;  // siaddr, and option 66 for the Pi
  std::string http_base_url;      // "http://10.0.0.1:8080", no trailing slash
  std::string bios_file = "undionly.kpxe";
  std::string uefi_x64_file = "ipxe.efi";
  std::string uefi_arm64_file = "ipxe-arm64.efi";   // arm64 iPXE build, not in Debian's ipxe package
  std::string uboot_arm32_file = "ipxe-arm32.efi";  // U-Boot boots EFI binaries with bootefi
  std::string uboot_arm64_file = "ipxe-arm64.efi";
  bool proxy = false;  // proxyDHCP offer: adds option 43 sub-option 6 = 8 for BIOS clients
};

struct DhcpBootAnswer {
  DhcpClientKind kind = DhcpClientKind::not_booting;
  bool offer = false;         // false: this client gets no boot information
  std::string reason;         // why (for the log line)
  std::string file;           // BOOTP `file` header
  std::optional<std::string> bootfile_option;        // option 67
  std::optional<std::string> tftp_server_option;     // option 66
  // Option 60: "HTTPClient" for UEFI HTTP boot; "PXEClient" in proxy offers and for the Pi only.
  std::optional<std::string> vendor_class;
  std::optional<std::vector<std::uint8_t>> vendor_options;  // option 43
  std::optional<std::vector<std::uint8_t>> client_uuid;     // option 97 echoed
  std::uint32_t siaddr = 0;
  std::optional<std::string> node;  // inventory node name when matched
};

// The Pi's option 97: "RPi4"/"RPi5", board revision (4 bytes), low 4 bytes of the MAC, serial (4
// bytes, read big-endian as the 8 hex digits of its TFTP directory). A leading 0 type byte is skipped.
struct RaspberryPiClientId {
  std::string model;   // "RPi4" / "RPi5"
  std::string serial;  // 8 lowercase hex digits
};
std::optional<RaspberryPiClientId> parse_raspberry_pi_client_id(const std::vector<std::uint8_t>& option97);
bool is_raspberry_pi_mac(const std::string& mac);  // by the OUIs the Pi Foundation uses

// MAC from chaddr, UUID from option 97 (type 0 + 16 bytes), serial from a Pi's option 97.
NodeFacts dhcp_node_facts(const DhcpPacket& request);
DhcpClientKind classify_dhcp_client(const DhcpPacket& request);

DhcpBootAnswer decide_dhcp_boot(const DhcpPacket& request, const NodeInventory& inventory,
                                const DhcpBootSettings& settings);

}  // namespace aggrik8s::netboot
