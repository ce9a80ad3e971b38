#include "netboot/service/dhcp_node_clients.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/durable_file.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace aggrik8s::netboot {

namespace {
constexpr std::string_view format_name = "aggrik8s-dhcp-nodes";
}

std::string dhcp_node_clients_json(const DhcpNodeClients& clients) {
  nlohmann::ordered_json top;
  top["format"] = format_name;
  top["version"] = 1;
  top["clients"] = nlohmann::ordered_json::object();
  for (const auto& [client, node] : clients) top["clients"][client] = node;
  return top.dump(2) + "\n";
}

DhcpNodeClients parse_dhcp_node_clients_json(std::string_view text, const std::string& file) {
  nlohmann::json top;
  try {
    top = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(file + ": not JSON (" + e.what() + "); expected serve's DHCP client-to-node record (docs/netboot.md)");
  }
  auto fail = [&](const std::string& field, const std::string& expected) {
    return Error(file + ": " + field + ": expected " + expected);
  };
  if (!top.is_object()) throw fail("the top level", "an object");
  if (!top.contains("format") || top["format"] != format_name) throw fail("'format'", "\"" + std::string(format_name) + "\"");
  if (!top.contains("version") || top["version"] != 1) throw fail("'version'", "1 (the only version this serve reads)");
  if (!top.contains("clients") || !top["clients"].is_object()) throw fail("'clients'", "an object keyed by DHCP client");
  DhcpNodeClients clients;
  for (const auto& [client, node] : top["clients"].items()) {
    if (!node.is_string() || node.get<std::string>().empty()) throw fail("clients." + client, "a node name");
    clients.emplace(client, node.get<std::string>());
  }
  return clients;
}

DhcpNodeClientsStore::DhcpNodeClientsStore(std::filesystem::path file) : file_(std::move(file)) {
  std::error_code ec;
  if (!std::filesystem::exists(file_, ec)) return;
  std::ifstream in(file_, std::ios::binary);
  if (!in) throw Error(file_.string() + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  clients_ = parse_dhcp_node_clients_json(text.str(), file_.string());
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
