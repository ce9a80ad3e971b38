// listen_failure_message: what an operator reads when serve cannot bind a port (netboot/listen_failure.hpp).
#include "netboot/listen_failure.hpp"

#include <cerrno>
#include <catch2/catch.hpp>

using namespace aggrik8s::netboot;

TEST_CASE("listen failure: a port below 1024 refused to a user names the capability and the setting") {
  ListenFailure tftp{"TFTP", "10.0.0.1:69", 69, true, "tftp.port (--tftp-port)", {}, {}};
  CHECK(listen_failure_message(tftp, EACCES, "Permission denied") ==
        "TFTP server cannot listen on 10.0.0.1:69: Permission denied; ports below 1024 need root or the capability "
        "CAP_NET_BIND_SERVICE (the systemd unit aggrik8s-image-serve.service grants it; for a shell: setcap "
        "cap_net_bind_service=+ep on the aggrik8s-image binary), or set tftp.port (--tftp-port) to 1024 or above");
  // DHCP clients need port 67: no other port is suggested.
  ListenFailure dhcp{"DHCP", "0.0.0.0:67", 67, true, {}, "eth1", {}};
  std::string text = listen_failure_message(dhcp, EACCES, "Permission denied");
  CHECK(text.starts_with("DHCP server cannot listen on 0.0.0.0:67 (interface eth1): Permission denied; ports below 1024"));
  CHECK(text.ends_with("on the aggrik8s-image binary)"));
  // From 1024 up a refusal is something else (a security module, a bad address): no capability advice.
  ListenFailure high{"HTTP", "10.0.0.1:8080", 8080, false, "http.port or http.tls_port (--http-port)", {}, {}};
  CHECK(listen_failure_message(high, EACCES, "Permission denied") == "HTTP server cannot listen on 10.0.0.1:8080: Permission denied");
}

TEST_CASE("listen failure: a port another program holds says how to find it, with the protocol's ss flag") {
  ListenFailure http{"HTTP", "10.0.0.1:8080", 8080, false, "http.port or http.tls_port (--http-port)", {}, "a web server"};
  CHECK(listen_failure_message(http, EADDRINUSE, "Address already in use") ==
        "HTTP server cannot listen on 10.0.0.1:8080: Address already in use; another program holds port 8080 "
        "(`ss -tlpn 'sport = :8080'` names it, e.g. a web server): stop it, or set http.port or http.tls_port (--http-port)");
  ListenFailure tftp{"TFTP", "127.0.0.1:69", 69, true, "tftp.port (--tftp-port)", {}, {}};
  CHECK(listen_failure_message(tftp, EADDRINUSE, "Address already in use") ==
        "TFTP server cannot listen on 127.0.0.1:69: Address already in use; another program holds port 69 "
        "(`ss -ulpn 'sport = :69'` names it): stop it, or set tftp.port (--tftp-port)");
  // DHCP: the port cannot move, so nothing to set.
  ListenFailure dhcp{"DHCP", "0.0.0.0:67", 67, true, {}, "br0", "another DHCP server"};
  CHECK(listen_failure_message(dhcp, EADDRINUSE, "Address already in use") ==
        "DHCP server cannot listen on 0.0.0.0:67 (interface br0): Address already in use; another program holds port 67 "
        "(`ss -ulpn 'sport = :67'` names it, e.g. another DHCP server): stop it");
  // Other errors are passed through as they are.
  CHECK(listen_failure_message(tftp, EADDRNOTAVAIL, "Cannot assign requested address") ==
        "TFTP server cannot listen on 127.0.0.1:69: Cannot assign requested address");
}
