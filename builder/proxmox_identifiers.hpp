#pragma once
// What Proxmox VE's names look like (API URL, token id, storage, node, certificate fingerprint), as
// profiles are checked against them. Pure code, here and not in deploy/proxmox so that reading a
// profile does not depend on the Proxmox client.
#include <optional>
#include <string>
#include <string_view>

namespace aggrik8s::builder {

// "https://pve1:8006", "https://pve1:8006/", "https://pve1:8006/api2/json" -> "https://pve1:8006/api2/json".
// nullopt (with `why`) for anything but an https URL with a host and at most that path.
std::optional<std::string> proxmox_api_base_url(std::string_view url, std::string* why = nullptr);

// USER@REALM!TOKENID, as Proxmox shows it when the token is created.
bool is_proxmox_token_id(std::string_view token_id);
// A storage ID as Proxmox accepts it ("pve-storage-id"): a letter, then letters, digits, '-', '_', '.',
// ending in a letter or digit.
bool is_proxmox_storage_id(std::string_view storage);
// A node name ("pve-node"): letters, digits and '-', not first or last.
bool is_proxmox_node_name(std::string_view node);

// "AA:BB:...:FF" (32 bytes, as the web UI and `pvenode cert info` show a certificate's SHA-256
// fingerprint; case and ':' optional) -> 64 lowercase hex digits; nullopt otherwise.
std::optional<std::string> normalize_certificate_fingerprint(std::string_view text);

}  // namespace aggrik8s::builder
