#include "netboot/dhcp/dhcp_lease_pool.hpp"

#include <algorithm>
#include <sstream>

#include "core/error.hpp"
#include "netboot/dhcp/dhcp_packet.hpp"

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

void DhcpLeasePool::drop_offer(const std::string& client) {
  auto offer = offers_.find(client);
  if (offer == offers_.end()) return;
  auto owner = offered_by_address_.find(offer->second.first);
  if (owner != offered_by_address_.end() && owner->second == client) offered_by_address_.erase(owner);
  offers_.erase(offer);
}

bool DhcpLeasePool::usable(std::uint32_t address) const {
  if (address == 0 || address == range_.server) return false;
  // A /31 or /32 has no network or broadcast address (RFC 3021); a wider subnet's are never a host's,
  // even when a pool such as 10.0.0.0-10.0.0.255 covers them.
  std::uint32_t host = ~range_.netmask;
  if (range_.netmask != 0 && host > 1 && ((address & host) == 0 || (address & host) == host)) return false;
  return true;
}

bool DhcpLeasePool::available(std::uint32_t address, const DhcpClientId& client, std::int64_t now) const {
  if (!usable(address)) return false;
  if (auto reserved = reserved_by_address_.find(address);
      reserved != reserved_by_address_.end() && reserved->second != client.mac) {
    return false;
  }
  // Another client's lease blocks the address until it expires; after that it is reclaimed only when
  // nothing never-leased is free (see offer()), so a returning client usually gets its address back.
  if (auto owner = leased_by_address_.find(address); owner != leased_by_address_.end() && owner->second != client.key &&
                                                     leases_.at(owner->second).expires > now) {
    return false;
  }
  if (auto owner = offered_by_address_.find(address); owner != offered_by_address_.end() &&
                                                      owner->second != client.key && offers_.at(owner->second).second > now) {
    return false;
  }
  return true;
}

std::optional<std::uint32_t> DhcpLeasePool::offer(const DhcpClientId& client, std::optional<std::uint32_t> requested,
                                                  std::int64_t now) {
  const std::string& key = client.key;
  auto hold = [&](std::uint32_t address) {
    drop_offer(key);
    if (auto previous = offered_by_address_.find(address); previous != offered_by_address_.end()) {
      offers_.erase(previous->second);  // an expired hold of another client
    }
    offers_[key] = {address, now + range_.offer_hold};
    offered_by_address_[address] = key;
    return address;
  };
  if (auto reserved = reservations_.find(client.mac); reserved != reservations_.end()) {
    if (available(reserved->second, client, now)) return hold(reserved->second);
    // The reserved address is another client's until its lease ends (granted before the reservation
    // was made) or quarantined: meanwhile the node gets an address as any client would (as Kea does),
    // and prepare() moves it to its reservation at the first REQUEST after that.
  }
  // A repeated DISCOVER (the client lost our OFFER) gets the same address.
  if (auto held = offers_.find(key); held != offers_.end() && held->second.second > now &&
                                     available(held->second.first, client, now)) {
    return hold(held->second.first);
  }
  // RFC 2131 4.3.1: the client's current binding, else its previous one (expired, or released: a
  // release keeps the binding as an expired lease), when the address is still free.
  if (auto lease = leases_.find(key); lease != leases_.end() && in_range(lease->second.address) &&
                                      available(lease->second.address, client, now)) {
    return hold(lease->second.address);
  }
  if (requested && in_range(*requested) && available(*requested, client, now)) return hold(*requested);
  if (range_.last < range_.first) return std::nullopt;
  std::uint64_t size = std::uint64_t{range_.last} - range_.first + 1;
  if (cursor_ < range_.first || cursor_ > range_.last) cursor_ = range_.first;
  // From the cursor round the pool: first addresses nobody holds a lease on, then expired ones.
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint64_t step = 0; step < size; ++step) {
      auto candidate = static_cast<std::uint32_t>(range_.first + (cursor_ - range_.first + step) % size);
      if (pass == 0) {
        auto owner = leased_by_address_.find(candidate);
        if (owner != leased_by_address_.end() && owner->second != key) continue;
      }
      if (available(candidate, client, now)) {
        cursor_ = candidate == range_.last ? range_.first : candidate + 1;
        return hold(candidate);
      }
    }
  }
  return std::nullopt;
}

std::optional<DhcpLease> DhcpLeasePool::prepare(const DhcpClientId& client, std::uint32_t address, std::int64_t now) const {
  auto reserved = reservations_.find(client.mac);
  if (reserved != reservations_.end() && reserved->second != address) {
    // Another address only while the reserved one cannot be had; once it can, a NAK sends the client
    // back to DISCOVER, which offers it the reservation.
    if (available(reserved->second, client, now) || !in_range(address)) return std::nullopt;
  } else if (reserved == reservations_.end() && !in_range(address)) {
    return std::nullopt;
  }
  if (!available(address, client, now)) return std::nullopt;
  return DhcpLease{client.key, address, now + range_.lease_time};
}

void DhcpLeasePool::commit(const DhcpLease& lease) {
  if (lease.address == 0) {  // a journal tombstone
    if (auto old = leases_.find(lease.client); old != leases_.end()) drop_lease(old);
    return;
  }
  // An expired lease of another client on the same address is superseded.
  if (auto owner = leased_by_address_.find(lease.address);
      owner != leased_by_address_.end() && owner->second != lease.client) {
    leases_.erase(owner->second);
    leased_by_address_.erase(owner);
  }
  if (auto old = leases_.find(lease.client); old != leases_.end()) drop_lease(old);
  leases_[lease.client] = lease;
  leased_by_address_[lease.address] = lease.client;
  drop_offer(lease.client);
}

std::optional<DhcpLease> DhcpLeasePool::release(const std::string& client, std::uint32_t address, std::int64_t now) {
  drop_offer(client);
  auto lease = leases_.find(client);
  if (lease == leases_.end() || lease->second.address != address || lease->second.expires <= now) return std::nullopt;
  lease->second.expires = now;
  return lease->second;
}

std::optional<DhcpLease> DhcpLeasePool::decline(const std::string& client, std::uint32_t address, std::int64_t now) {
  drop_offer(client);
  if (!usable(address)) return std::nullopt;
  if (!in_range(address) && !reserved_by_address_.contains(address)) return std::nullopt;
  // Only the address this client was given (RFC 2131 4.3.3: the client found it in use after the ACK),
  // as Kea and dnsmasq take it: a DECLINE for any other address would let one client take the whole
  // pool out of use for a lease time each, across restarts.
  auto own = leases_.find(client);
  if (own == leases_.end() || own->second.address != address) return std::nullopt;
  // commit() ends the client's lease on the address (another client's expired one too) and takes it.
  DhcpLease quarantine{dhcp_quarantine_key(address), address, now + range_.lease_time};
  commit(quarantine);
  return quarantine;
}

std::optional<std::uint32_t> DhcpLeasePool::reserved_address(const std::string& mac) const {
  auto reserved = reservations_.find(mac);
  if (reserved == reservations_.end()) return std::nullopt;
  return reserved->second;
}

bool DhcpLeasePool::knows(const DhcpClientId& client) const {
  return leases_.contains(client.key) || offers_.contains(client.key) || reservations_.contains(client.mac);
}

void DhcpLeasePool::forget(const std::string& client) {
  drop_offer(client);
  if (auto lease = leases_.find(client); lease != leases_.end()) drop_lease(lease);
}

std::string dhcp_quarantine_key(std::uint32_t address) { return "declined:" + ipv4_to_string(address); }

bool is_dhcp_quarantine(const DhcpLease& lease) { return lease.client.starts_with("declined:"); }

std::string format_dhcp_lease_line(const DhcpLease& lease) {
  std::string line;
  line.reserve(lease.client.size() + 40);  // address (15), expiry (up to 20), separators: one allocation
  line += lease.client;
  line += ' ';
  line += ipv4_to_string(lease.address);
  line += ' ';
  line += std::to_string(lease.expires);
  line += '\n';
  return line;
}

std::string format_dhcp_leases(const std::map<std::string, DhcpLease>& leases) {
  std::string out = "# aggrik8s-image DHCP leases: CLIENT(MAC, id:<option 61 hex>) ADDRESS EXPIRES(unix seconds)\n";
  for (const auto& entry : leases) out += format_dhcp_lease_line(entry.second);
  return out;
}

std::vector<DhcpLease> parse_dhcp_leases(const std::string& text, const std::string& file_name, std::string* torn) {
  std::vector<DhcpLease> leases;
  // Only whole lines are records: the journal writes each line with its newline, so a crash in mid-write
  // (kill -9 between two pages of a write, power loss) can leave the last one cut short, even cut where
  // it still parses ("... 10.0.0.12" of "... 10.0.0.123 ...", an expiry missing digits).
  std::size_t whole = text.rfind('\n');
  whole = whole == std::string::npos ? 0 : whole + 1;
  if (torn != nullptr) *torn = text.substr(whole);
  std::istringstream lines(text.substr(0, whole));
  std::string line;
  for (std::size_t number = 1; std::getline(lines, line); ++number) {
    if (line.empty() || line.front() == '#') continue;
    std::istringstream fields(line);
    std::string client, address;
    std::int64_t expires = 0;
    std::string extra;
    fields >> client >> address >> expires;
    auto parsed = parse_ipv4(address);
    if (fields.fail() || !parsed || (fields >> extra)) {
      throw Error(file_name + ":" + std::to_string(number) + ": not a lease line (CLIENT ADDRESS EXPIRES): '" + line + "'");
    }
    leases.push_back({client, *parsed, expires});
  }
  // The journal's final state: the last line per client, tombstones (0.0.0.0) removing it, returned in
  // the order of those lines. The order matters when one address has lines from two MACs (the first
  // client's lease expired and the address went to another): committing them in journal order lets
  // the later lease supersede the expired one, as it did when it was granted.
  std::map<std::string, std::size_t> last;  // client -> index of its last line
  for (std::size_t i = 0; i < leases.size(); ++i) {
    if (leases[i].address == 0) {
      last.erase(leases[i].client);
    } else {
      last[leases[i].client] = i;
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
