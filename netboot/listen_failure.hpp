#pragma once
// The message for a server socket that cannot be bound. The two failures an operator meets first say
// what to do about them: a port below 1024 refused to a user without the capability (serve run from a
// shell, not from the systemd unit), and a port another server holds (tftpd-hpa or dnsmasq on 69, a
// web server on 80/8080). Pure, so the wording is tested without binding anything.
#include <cstdint>
#include <string>
#include <string_view>

namespace aggrik8s::netboot {

struct ListenFailure {
  std::string_view server;        // "TFTP", "HTTP", "DHCP"
  std::string endpoint;           // "10.0.0.1:69"
  std::uint16_t port = 0;
  bool udp = false;               // for the `ss` command that names the holder
  std::string_view port_setting;  // where the port is chosen: "tftp.port (--tftp-port)"; empty where
                                  // clients need the standard port (DHCP's 67)
  std::string interface;          // DHCP binds to one; empty otherwise
  std::string_view usual_holders;  // who usually has the port: "tftpd-hpa, dnsmasq"
};

// "TFTP server cannot listen on 10.0.0.1:69: Permission denied; ports below 1024 need ..."
std::string listen_failure_message(const ListenFailure& failure, int error_number, std::string_view error_text);

}  // namespace aggrik8s::netboot
