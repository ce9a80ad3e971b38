#pragma once
// Address allocation for full-mode DHCP, without sockets or files: which address a client is offered,
// whether a REQUEST may be acknowledged, releases, declines, and the text form of the lease file.
// Clients are identified by MAC (chaddr): the inventory's reservations are by MAC too.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace aggrik8s::netboot {

struct DhcpLease {
  std::string mac;
  std::uint32_t address = 0;
  std::int64_t expires = 0;  // Unix seconds
  bool operator==(const DhcpLease&) const = default;
};

struct DhcpPoolRange {
  std::uint32_t first = 0;
  std::uint32_t last = 0;  // inclusive
  std::uint32_t lease_time = 3600;
  std::int64_t offer_hold = 30;  // seconds an offered address is kept for its client
  std::uint32_t server = 0;      // never handed out
};

class DhcpLeasePool {
 public:
  explicit DhcpLeasePool(DhcpPoolRange range);

  // mac -> address, from the inventory's pinned addresses. Reserved addresses go only to their MAC,
  // even outside the pool range.
  void set_reservations(std::map<std::string, std::uint32_t> reservations);
  // Leases read back from the lease file at start.
  void load(const std::vector<DhcpLease>& leases);

  // For a DISCOVER: the reservation; else the client's current (even expired) lease if still free;
  // else the requested address if free and in range; else the lowest free address. Holds the address
  // for offer_hold seconds so two DISCOVERs at once never get the same one.
  std::optional<std::uint32_t> offer(const std::string& mac, std::optional<std::uint32_t> requested, std::int64_t now);
  // For a REQUEST of `address`: the lease to persist and then commit(), or nullopt for a NAK.
  std::optional<DhcpLease> prepare(const std::string& mac, std::uint32_t address, std::int64_t now) const;
  // Records a lease that is safely on disk.
  void commit(const DhcpLease& lease);
  // Returns true when the client held that address (so the lease file must be rewritten).
  bool release(const std::string& mac, std::uint32_t address);
  // The client found the address in use (ARP): keep it out of the pool for a lease time.
  void decline(const std::string& mac, std::uint32_t address, std::int64_t now);

  const std::map<std::string, DhcpLease>& leases() const { return leases_; }
  bool in_range(std::uint32_t address) const { return address >= range_.first && address <= range_.last; }

 private:
  bool available(std::uint32_t address, const std::string& mac, std::int64_t now) const;
  void drop_lease(std::map<std::string, DhcpLease>::iterator lease);
  void drop_offer(const std::string& mac);

  // Each table is indexed both ways so every check is a lookup, not a scan: the pool serves
  // thousands of exchanges a second (docs/benchmarks.md).
  DhcpPoolRange range_;
  std::map<std::string, std::uint32_t> reservations_;
  std::map<std::uint32_t, std::string> reserved_by_address_;
  std::map<std::string, DhcpLease> leases_;                      // by MAC: granted, on disk
  std::map<std::uint32_t, std::string> leased_by_address_;
  std::map<std::string, std::pair<std::uint32_t, std::int64_t>> offers_;  // by MAC: address, hold until
  std::map<std::uint32_t, std::string> offered_by_address_;
  std::map<std::uint32_t, std::int64_t> declined_;               // address -> quarantined until
  std::uint32_t cursor_ = 0;  // where the search for a free address resumes
};

// Lease file: a journal of "MAC ADDRESS EXPIRES" lines, '#' comments; the last line for a MAC wins and
// address 0.0.0.0 removes the MAC's lease (release, decline). Appending one line per grant keeps the
// fdatasync before each ACK cheap; the file is compacted (rewritten from format_dhcp_leases) at start and
// when it grows. parse_dhcp_leases returns the final lease of each MAC in the order of the lines that
// set them (commit them in that order). Throws aggrik8s::Error naming the line on anything else: a
// lease file we cannot read must stop the server, not be forgotten.
std::string format_dhcp_lease_line(const DhcpLease& lease);
std::string format_dhcp_leases(const std::map<std::string, DhcpLease>& leases);
std::vector<DhcpLease> parse_dhcp_leases(const std::string& text, const std::string& file_name);

}  // namespace aggrik8s::netboot
