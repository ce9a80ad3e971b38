#include "site/site_inventory.hpp"

namespace aggrik8s::site {

const char* to_string(Platform platform) {
  switch (platform) {
    case Platform::rpi5: return "rpi5";
    case Platform::proxmox_vm: return "proxmox-vm";
  }
  return "?";
}

const char* to_string(BootMethod boot) {
  switch (boot) {
    case BootMethod::disk: return "disk";
    case BootMethod::netboot: return "netboot";
    case BootMethod::ephemeral: return "ephemeral";
  }
  return "?";
}

const char* to_string(Role role) {
  switch (role) {
    case Role::server: return "server";
    case Role::agent: return "agent";
    case Role::controlplane: return "controlplane";
    case Role::worker: return "worker";
  }
  return "?";
}

bool is_control_plane(Role role) { return role == Role::server || role == Role::controlplane; }

}  // namespace aggrik8s::site
