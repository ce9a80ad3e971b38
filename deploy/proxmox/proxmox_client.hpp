#pragma once
// Sends ProxmoxRequests (deploy/proxmox/proxmox_api.hpp) with libcurl: the only place the API token secret
// is put on the wire, in the Authorization header of each request. TLS is verified by default:
// against the system's CAs or `ca_file` (Proxmox' cluster CA is /etc/pve/pve-root-ca.pem), or, with a
// pinned certificate fingerprint, by that fingerprint alone (the way Proxmox' own tools trust a
// self-signed node certificate).
#include <filesystem>
#include <optional>
#include <string>

#include "deploy/proxmox/proxmox_api.hpp"
#include "core/secret.hpp"

namespace aggrik8s::builder {

struct ProxmoxTlsSettings {
  bool verify = true;
  std::optional<std::filesystem::path> ca_file;
  std::optional<std::string> fingerprint;  // SHA-256 of the server's certificate, 64 lowercase hex digits
};

class ProxmoxClient {
 public:
  ProxmoxClient(std::string token_id, Secret token_secret, ProxmoxTlsSettings tls);

  // Sends `request` and returns the body of a 2xx answer. Throws Error naming request.what for a
  // connection or TLS failure and for any other status (with Proxmox' message). No message carries
  // the token secret.
  std::string send(const ProxmoxRequest& request) const;

 private:
  std::string token_id_;
  Secret token_secret_;
  ProxmoxTlsSettings tls_;
};

}  // namespace aggrik8s::builder
