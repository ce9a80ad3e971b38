#include "netboot/service/node_address_book.hpp"

namespace aggrik8s::netboot {

const char* to_string(NodeAddressSource source) {
  switch (source) {
    case NodeAddressSource::pinned: return "pinned";
    case NodeAddressSource::lease: return "lease";
    case NodeAddressSource::seen: return "seen";
  }
  return "seen";
}

NodeAccess check_node_access(const std::optional<NodeAddress>& expected, const std::string& client) {
  if (!expected) return NodeAccess::address_unknown;
  return expected->address == client ? NodeAccess::allowed : NodeAccess::wrong_address;
}

NodeAccess check_boot_script_access(const std::optional<NodeAddress>& expected, const std::string& client) {
  if (!expected || expected->source == NodeAddressSource::seen) return NodeAccess::allowed;
  return expected->address == client ? NodeAccess::allowed : NodeAccess::wrong_address;
}

void NodeAddressBook::set_pinned(const std::map<std::string, std::string>& node_addresses) {
  std::lock_guard lock(mutex_);
  pinned_.clear();
  auto now = std::chrono::system_clock::now();
  for (const auto& [node, address] : node_addresses) pinned_[node] = {address, NodeAddressSource::pinned, now, std::nullopt, {}};
}

void NodeAddressBook::record_lease(const std::string& node, const std::string& address,
                                   std::optional<std::chrono::system_clock::time_point> expires, const std::string& client) {
  std::lock_guard lock(mutex_);
  end_ties_at(address, &node);
  leases_[node] = {address, NodeAddressSource::lease, std::chrono::system_clock::now(), expires, client};
}

void NodeAddressBook::record_other_lease(const std::string& address, const std::string& client,
                                         std::chrono::system_clock::time_point expires) {
  std::lock_guard lock(mutex_);
  bool renewed = false;
  for (auto& [node, entry] : leases_) {
    if (entry.address == address && !client.empty() && entry.lease_client == client) {
      entry.expires = expires;
      renewed = true;
    }
  }
  if (!renewed) end_ties_at(address, nullptr);
}

void NodeAddressBook::address_ended(const std::string& address) {
  std::lock_guard lock(mutex_);
  end_ties_at(address, nullptr);
}

void NodeAddressBook::end_ties_at(const std::string& address, const std::string* except) {
  for (auto* table : {&leases_, &seen_}) {
    std::erase_if(*table, [&](const auto& item) {
      return item.second.address == address && (except == nullptr || item.first != *except);
    });
  }
}

bool NodeAddressBook::live(const NodeAddress& entry) const {
  return !entry.expires || *entry.expires > std::chrono::system_clock::now();
}

void NodeAddressBook::record_seen(const std::string& node, const std::string& address) {
  std::lock_guard lock(mutex_);
  auto& entry = seen_[node];
  if (entry.address != address) entry.since = std::chrono::system_clock::now();
  entry.address = address;
  entry.source = NodeAddressSource::seen;
}

std::optional<NodeAddress> NodeAddressBook::address_of(const std::string& node) const {
  std::lock_guard lock(mutex_);
  for (const auto* table : {&pinned_, &leases_, &seen_}) {
    if (auto found = table->find(node); found != table->end() && live(found->second)) return found->second;
  }
  return std::nullopt;
}

std::optional<std::string> NodeAddressBook::node_at(const std::string& address) const {
  std::lock_guard lock(mutex_);
  for (const auto* table : {&pinned_, &leases_, &seen_}) {
    for (const auto& [node, entry] : *table) {
      if (entry.address != address || !live(entry)) continue;
      // A node whose stronger binding says it is elsewhere is not here, whatever an old sighting says.
      bool elsewhere = false;
      for (const auto* stronger : {&pinned_, &leases_}) {
        if (stronger == table) break;
        if (auto other = stronger->find(node);
            other != stronger->end() && live(other->second) && other->second.address != address) {
          elsewhere = true;
        }
      }
      if (!elsewhere) return node;
    }
  }
  return std::nullopt;
}

}  // namespace aggrik8s::netboot
