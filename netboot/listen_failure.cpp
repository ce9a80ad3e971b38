#include "netboot/listen_failure.hpp"

#include <cerrno>

namespace aggrik8s::netboot {

std::string listen_failure_message(const ListenFailure& failure, int error_number, std::string_view error_text) {
  std::string message = std::string(failure.server) + " server cannot listen on " + failure.endpoint;
  if (!failure.interface.empty()) message += " (interface " + failure.interface + ")";
  message += ": ";
  message += error_text;
  const std::string port = std::to_string(failure.port);
  if ((error_number == EACCES || error_number == EPERM) && failure.port != 0 && failure.port < 1024) {
    message += "; ports below 1024 need root or the capability CAP_NET_BIND_SERVICE (the systemd unit "
               "aggrik8s-image-serve.service grants it; for a shell: setcap cap_net_bind_service=+ep on the "
               "aggrik8s-image binary)";
    if (!failure.port_setting.empty()) message += ", or set " + std::string(failure.port_setting) + " to 1024 or above";
  } else if (error_number == EADDRINUSE) {
    message += "; another program holds port " + port + " (`ss -" + (failure.udp ? "u" : "t") + "lpn 'sport = :" +
               port + "'` names it";
    if (!failure.usual_holders.empty()) message += ", e.g. " + std::string(failure.usual_holders);
    message += "): stop it";
    if (!failure.port_setting.empty()) message += ", or set " + std::string(failure.port_setting);
  }
  return message;
}

}  // namespace aggrik8s::netboot
