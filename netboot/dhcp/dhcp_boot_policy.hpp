#pragma once
// What the DHCP server asks of whoever decides booting: which boot answer a client gets, and word that
// a lease was granted. The DHCP side knows nothing of nodes or inventories; netboot/service implements
// this interface from its inventory, tests with a fake (as the TFTP observer and the HTTP handler).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "netboot/dhcp/dhcp_lease_pool.hpp"
#include "netboot/dhcp/dhcp_packet.hpp"

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

// The boot part of a reply: the BOOTP header fields and options a boot client is given.
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

// Both run on the io_context's thread for every request they concern: they must not block for long.
class DhcpBootPolicy {
 public:
  virtual ~DhcpBootPolicy() = default;
  // Asked once per DHCP request (not for BOOTREPLYs or untyped packets), before its reply is planned;
  // in proxy mode a client without a boot offer gets no reply at all.
  virtual DhcpBootAnswer boot_answer(const DhcpPacket& request) = 0;
  // A lease is on disk and its ACK about to be sent: `lease` is the client's address until lease.expires.
  virtual void leased(const DhcpPacket& request, const DhcpLease& lease) { (void)request, (void)lease; }
  // A client gave its address back (RELEASE) or refused it (DECLINE): whoever held it no longer does.
  virtual void lease_ended(std::uint32_t address) { (void)address; }
};

}  // namespace aggrik8s::netboot
