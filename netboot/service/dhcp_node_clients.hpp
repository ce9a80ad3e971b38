#pragma once
// Which DHCP client (its lease key) is which node, kept across serve's restarts:
// <state_dir>/dhcp-nodes.json,
//   {"format": "aggrik8s-dhcp-nodes", "version": 1, "clients": {"d8:3a:dd:10:00:21": "pi-1"}}
// A lease ties a node to its address only when the request showed the node (a Pi's bootloader sends
// its serial; an ephemeral Pi's initramfs renews the same lease without it). The tie was in memory only,
// so after a restart the initramfs's renewal could not restore it and the node's identity was refused
// (403) until its next full boot. The leases themselves are in the lease file; this file adds which
// node each client was, and at start every unexpired lease of a client named here ties that node to
// its address again. Written only when a client is first seen as a node (or as another node): a few
// times per node, not per lease. It holds no secret (lease keys and node names): 0644. The format and
// parser are pure; the store does the I/O.
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace aggrik8s::netboot {

using DhcpNodeClients = std::map<std::string, std::string>;  // lease key -> node name

std::string dhcp_node_clients_json(const DhcpNodeClients& clients);
// Throws Error naming `file` and the field when the text is not this format.
DhcpNodeClients parse_dhcp_node_clients_json(std::string_view text, const std::string& file);

inline constexpr std::string_view dhcp_node_clients_file_name = "dhcp-nodes.json";

// Thread-safe. A write that fails is logged and the memory copy still used (after a restart the
// node's tie then waits for its next request that shows the node, as before this file).
class DhcpNodeClientsStore {
 public:
  // Reads `file` when it exists (Error naming it when it cannot be read or parsed).
  explicit DhcpNodeClientsStore(std::filesystem::path file);
  // Saves at once when `client` was not known as `node`.
  void remember(const std::string& client, const std::string& node);
  std::optional<std::string> node_of(const std::string& client) const;
  const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
  mutable std::mutex mutex_;
  DhcpNodeClients clients_;
};

}  // namespace aggrik8s::netboot
