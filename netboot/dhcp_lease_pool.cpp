#include "netboot/dhcp_lease_pool.hpp"

#include <algorithm>
#include <sstream>

#include "core/error.hpp"
#include "netboot/dhcp_packet.hpp"

namespace aggrik8s::netboot {

DhcpLeasePool::DhcpLeasePool(DhcpPoolRange range) : range_(range), cursor_(range.first) {}

void DhcpLeasePool::set_reservations(std::map<std::string, std::uint32_t> reservations) {
  reservations_ = std::move(reservations);
  reserved_by_address_.clear();
  for (const auto& [mac, address] : reservations_) reserved_by_address_[address] = mac;
}

void DhcpLeasePool::load(const std::vector<DhcpLease>& leases) {
  for (const auto& lease : leases) commit(lease);
}

void DhcpLeasePool::drop_lease(std::map<std::string, DhcpLease>::iterator lease) {
  auto owner = leased_by_address_.find(lease->second.address);
  if (owner != leased_by_address_.end() && owner->second == lease->first) leased_by_address_.erase(owner);
  leases_.erase(lease);
}

void DhcpLeasePool::drop_offer(const std::string& mac) {
  auto offer = offers_.find(mac);
  if (offer == offers_.end()) return;
  auto owner = offered_by_address_.find(offer->second.first);
  if (owner != offered_by_address_.end() && owner->second == mac) offered_by_address_.erase(owner);
  offers_.erase(offer);
}

bool DhcpLeasePool::available(std::uint32_t address, const std::string& mac, std::int64_t now) const {
  if (address == 0 || address == range_.server) return false;
  if (auto reserved = reserved_by_address_.find(address); reserved != reserved_by_address_.end() && reserved->second != mac) {
    return false;
  }
  // Another client's lease blocks the address until it expires; after that it is reclaimed only when
  // nothing never-leased is free (see offer()), so a returning client usually gets its address back.
  if (auto owner = leased_by_address_.find(address); owner != leased_by_address_.end() && owner->second != mac &&
                                                     leases_.at(owner->second).expires > now) {
    return false;
  }
  if (auto owner = offered_by_address_.find(address); owner != offered_by_address_.end() && owner->second != mac &&
                                                      offers_.at(owner->second).second > now) {
    return false;
  }
  if (auto declined = declined_.find(address); declined != declined_.end() && declined->second > now) return false;
  return true;
}

std::optional<std::uint32_t> DhcpLeasePool::offer(const std::string& mac, std::optional<std::uint32_t> requested,
                                                  std::int64_t now) {
  auto hold = [&](std::uint32_t address) {
    drop_offer(mac);
    if (auto previous = offered_by_address_.find(address); previous != offered_by_address_.end()) {
      offers_.erase(previous->second);  // an expired hold of another client
    }
    offers_[mac] = {address, now + range_.offer_hold};
    offered_by_address_[address] = mac;
    return address;
  };
  if (auto reserved = reservations_.find(mac); reserved != reservations_.end()) {
    if (available(reserved->second, mac, now)) return hold(reserved->second);
    return std::nullopt;
  }
  // A repeated DISCOVER (the client lost our OFFER) gets the same address.
  if (auto held = offers_.find(mac); held != offers_.end() && held->second.second > now &&
                                     available(held->second.first, mac, now)) {
    return hold(held->second.first);
  }
  if (auto lease = leases_.find(mac); lease != leases_.end() && in_range(lease->second.address) &&
                                      available(lease->second.address, mac, now)) {
    return hold(lease->second.address);
  }
  if (requested && in_range(*requested) && available(*requested, mac, now)) return hold(*requested);
  if (range_.last < range_.first) return std::nullopt;
  std::uint64_t size = std::uint64_t{range_.last} - range_.first + 1;
  if (cursor_ < range_.first || cursor_ > range_.last) cursor_ = range_.first;
  // From the cursor round the pool: first addresses nobody holds a lease on, then expired ones.
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint64_t step = 0; step < size; ++step) {
      auto candidate = static_cast<std::uint32_t>(range_.first + (cursor_ - range_.first + step) % size);
      if (pass == 0) {
        auto owner = leased_by_address_.find(candidate);
        if (owner != leased_by_address_.end() && owner->second != mac) continue;
      }
      if (available(candidate, mac, now)) {
        cursor_ = candidate == range_.last ? range_.first : candidate + 1;
        return hold(candidate);
      }
    }
  }
  return std::nullopt;
}

std::optional<DhcpLease> DhcpLeasePool::prepare(const std::string& mac, std::uint32_t address, std::int64_t now) const {
  auto reserved = reservations_.find(mac);
  if (reserved != reservations_.end()) {
    if (reserved->second != address) return std::nullopt;
  } else if (!in_range(address)) {
    return std::nullopt;
  }
  if (!available(address, mac, now)) return std::nullopt;
  return DhcpLease{mac, address, now + range_.lease_time};
}

void DhcpLeasePool::commit(const DhcpLease& lease) {
  if (lease.address == 0) {  // a journal tombstone
    if (auto old = leases_.find(lease.mac); old != leases_.end()) drop_lease(old);
    return;
  }
  // An expired lease of another client on the same address is superseded.
  if (auto owner = leased_by_address_.find(lease.address); owner != leased_by_address_.end() && owner->second != lease.mac) {
    leases_.erase(owner->second);
    leased_by_address_.erase(owner);
  }
  if (auto old = leases_.find(lease.mac); old != leases_.end()) drop_lease(old);
  leases_[lease.mac] = lease;
  leased_by_address_[lease.address] = lease.mac;
  drop_offer(lease.mac);
}

bool DhcpLeasePool::release(const std::string& mac, std::uint32_t address) {
  drop_offer(mac);
  auto lease = leases_.find(mac);
  if (lease == leases_.end() || lease->second.address != address) return false;
  drop_lease(lease);
  return true;
}

void DhcpLeasePool::decline(const std::string& mac, std::uint32_t address, std::int64_t now) {
  declined_[address] = now + range_.lease_time;
  drop_offer(mac);
  if (auto lease = leases_.find(mac); lease != leases_.end() && lease->second.address == address) drop_lease(lease);
}

std::string format_dhcp_lease_line(const DhcpLease& lease) {
  return lease.mac + " " + ipv4_to_string(lease.address) + " " + std::to_string(lease.expires) + "\n";
}

std::string format_dhcp_leases(const std::map<std::string, DhcpLease>& leases) {
  std::string out = "# aggrik8s-image DHCP leases: MAC ADDRESS EXPIRES(unix seconds)\n";
  for (const auto& entry : leases) out += format_dhcp_lease_line(entry.second);
  return out;
}

std::vector<DhcpLease> parse_dhcp_leases(const std::string& text, const std::string& file_name) {
  std::vector<DhcpLease> leases;
  std::istringstream lines(text);
  std::string line;
  for (std::size_t number = 1; std::getline(lines, line); ++number) {
    if (line.empty() || line.front() == '#') continue;
    std::istringstream fields(line);
    std::string mac, address;
    std::int64_t expires = 0;
    std::string extra;
    fields >> mac >> address >> expires;
    auto parsed = parse_ipv4(address);
    if (fields.fail() || !parsed || (fields >> extra)) {
      throw Error(file_name + ":" + std::to_string(number) + ": not a lease line (MAC ADDRESS EXPIRES): '" + line + "'");
    }
    leases.push_back({mac, *parsed, expires});
  }
  // The journal's final state: the last line per MAC, tombstones (0.0.0.0) removing it, returned in
  // the order of those lines. The order matters when one address has lines from two MACs (the first
  // client's lease expired and the address went to another): committing them in journal order lets
  // the later lease supersede the expired one, as it did when it was granted.
  std::map<std::string, std::size_t> last;  // MAC -> index of its last line
  for (std::size_t i = 0; i < leases.size(); ++i) {
    if (leases[i].address == 0) {
      last.erase(leases[i].mac);
    } else {
      last[leases[i].mac] = i;
    }
  }
  std::vector<std::size_t> order;
  order.reserve(last.size());
  for (const auto& entry : last) order.push_back(entry.second);
  std::sort(order.begin(), order.end());
  std::vector<DhcpLease> result;
  result.reserve(order.size());
  for (auto index : order) result.push_back(leases[index]);
  return result;
}

}  // namespace aggrik8s::netboot
