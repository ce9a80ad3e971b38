#include "netboot/service/dhcp_node_clients.hpp"

#include "core/durable_file.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "netboot/service/state_file_json.hpp"

namespace aggrik8s::netboot {

namespace {
constexpr StateFileFormat file_format{"aggrik8s-dhcp-nodes", "serve's DHCP client-to-node record", "clients",
                                      "an object keyed by DHCP client"};
}

std::string dhcp_node_clients_json(const DhcpNodeClients& clients) {
  nlohmann::ordered_json items = nlohmann::ordered_json::object();
  for (const auto& [client, node] : clients) items[client] = node;
  return state_file_json(file_format, std::move(items));
}

DhcpNodeClients parse_dhcp_node_clients_json(std::string_view text, const std::string& file) {
  const nlohmann::json items = parse_state_file_json(text, file, file_format);
  DhcpNodeClients clients;
  for (const auto& [client, node] : items.items()) {
    if (!node.is_string() || node.get<std::string>().empty()) throw state_file_error(file, "clients." + client, "a node name");
    clients.emplace(client, node.get<std::string>());
  }
  return clients;
}

DhcpNodeClientsStore::DhcpNodeClientsStore(std::filesystem::path file) : file_(std::move(file)) {
  if (auto text = read_state_file(file_)) clients_ = parse_dhcp_node_clients_json(*text, file_.string());
}

void DhcpNodeClientsStore::remember(const std::string& client, const std::string& node) {
  std::lock_guard lock(mutex_);
  auto [at, added] = clients_.try_emplace(client, node);
  if (!added && at->second == node) return;
  at->second = node;
  try {
    replace_file_durably(file_, dhcp_node_clients_json(clients_), 0644);
  } catch (const std::exception& e) {
    log::error("dhcp: which client is which node not saved (after a restart, node ", node,
               " is tied to its leased address again at its next request that shows it): ", e.what());
  }
}

std::optional<std::string> DhcpNodeClientsStore::node_of(const std::string& client) const {
  std::lock_guard lock(mutex_);
  auto found = clients_.find(client);
  if (found == clients_.end()) return std::nullopt;
  return found->second;
}

}  // namespace aggrik8s::netboot
