#pragma once
// Address allocation for full-mode DHCP, without sockets or files: which address a client is offered,
// whether a REQUEST may be acknowledged, releases, declines, and the text form of the lease file.
// Leases are held by client key (DhcpPacket::client_key(): option 61, else htype + chaddr); the
// inventory's reservations are by MAC, so each call names both.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace aggrik8s::netboot {

struct DhcpLease {
  std::string client;  // the lease key: a MAC, "id:<hex>" (option 61) or "hw<htype>:<hex>"
  std::uint32_t address = 0;
  std::int64_t expires = 0;  // Unix seconds
  bool operator==(const DhcpLease&) const = default;
};

// A client as the pool sees it: its lease key and its MAC (for reservations). Built from a plain
// string when both are the same (an Ethernet client without its own option 61, and tests).
struct DhcpClientId {
  std::string key;
  std::string mac;
  DhcpClientId(std::string client_key, std::string hardware) : key(std::move(client_key)), mac(std::move(hardware)) {}
  DhcpClientId(std::string mac_key) : key(mac_key), mac(std::move(mac_key)) {}  // NOLINT: implicit on purpose
  DhcpClientId(const char* mac_key) : DhcpClientId(std::string(mac_key)) {}     // NOLINT
};

struct DhcpPoolRange {
  std::uint32_t first = 0;
  std::uint32_t last = 0;  // inclusive
  std::uint32_t lease_time = 3600;
  std::int64_t offer_hold = 30;  // seconds an offered address is kept for its client
  std::uint32_t server = 0;      // never handed out
  // The subnet's mask: its network and broadcast addresses (all-zero and all-one host part) are never
  // handed out, even when the configured range covers them. 0: not known, nothing excluded; /31 and
  // /32 have no such addresses (RFC 3021).
  std::uint32_t netmask = 0;
};

class DhcpLeasePool {
 public:
  explicit DhcpLeasePool(DhcpPoolRange range);

  // mac -> address, from the inventory's pinned addresses. Reserved addresses go only to their MAC,
  // even outside the pool range.
  void set_reservations(std::map<std::string, std::uint32_t> reservations);
  // Leases read back from the lease file at start.
  void load(const std::vector<DhcpLease>& leases);

  // For a DISCOVER: the reservation (while another client's lease holds it: an address as for any
  // client); else the client's current or previous (expired or released)
  // binding if still free (RFC 2131 4.3.1); else the requested address if free and in range; else the
  // next free address nobody ever held, then an expired one. Holds the address for offer_hold seconds
  // so two DISCOVERs at once never get the same one.
  std::optional<std::uint32_t> offer(const DhcpClientId& client, std::optional<std::uint32_t> requested, std::int64_t now);
  // For a REQUEST of `address`: the lease to persist and then commit(), or nullopt for a NAK. A client
  // with a reservation gets only that address, or another while the reserved one cannot be had.
  std::optional<DhcpLease> prepare(const DhcpClientId& client, std::uint32_t address, std::int64_t now) const;
  // Records a lease (the server: as soon as it is planned, before it is durable; load: read back).
  // A lease with address 0 (a journal tombstone) removes the client's lease.
  void commit(const DhcpLease& lease);
  // RELEASE: the client's binding ends now but is remembered (expired), so the address is handed to
  // others only after every never-used one, and the client gets it back if it is still free. Returns
  // the expired lease (the line to journal) when the client held that address, else nullopt.
  std::optional<DhcpLease> release(const std::string& client, std::uint32_t address, std::int64_t now);
  // The client found the address in use (ARP): it is kept out of the pool for a lease time (RFC 2131
  // 4.3.3), as a lease held by the pseudo-client dhcp_quarantine_key(address), so the quarantine is
  // journalled like any lease and survives a restart; the client's own lease on it ends. Returns that
  // lease (the line to journal), or nullopt when nothing was quarantined: no address, one this pool
  // does not hand out, or one another client holds an unexpired lease on (a DECLINE naming someone
  // else's address must not take it from them).
  std::optional<DhcpLease> decline(const std::string& client, std::uint32_t address, std::int64_t now);
  // For an INIT-REBOOT REQUEST (RFC 2131 4.3.2: "no record of this client" means silence): whether the
  // client holds or held a lease here, was made an offer, or has a reservation.
  bool knows(const DhcpClientId& client) const;
  std::optional<std::uint32_t> reserved_address(const std::string& mac) const;
  // Drops the client's lease and offer outright (it moved to another subnet's pool).
  void forget(const std::string& client);
  // Whether the address may be leased at all: not 0, not the server's, not the subnet's network or
  // broadcast address.
  bool usable(std::uint32_t address) const;

  const std::map<std::string, DhcpLease>& leases() const { return leases_; }
  bool in_range(std::uint32_t address) const { return address >= range_.first && address <= range_.last; }

 private:
  bool available(std::uint32_t address, const DhcpClientId& client, std::int64_t now) const;
  void drop_lease(std::map<std::string, DhcpLease>::iterator lease);
  void drop_offer(const std::string& mac);

  // Each table is indexed both ways so every check is a lookup, not a scan: the pool serves
  // thousands of exchanges a second (docs/benchmarks.md). The tables nobody iterates are hash maps:
  // the free-address search probes leased_by_address_ and offered_by_address_ for every candidate,
  // and ordered lookups (string compares down a tree) were a tenth of the server's time under perfdhcp.
  // leases_ stays ordered: the lease file is written in its order.
  DhcpPoolRange range_;
  std::map<std::string, std::uint32_t> reservations_;
  std::unordered_map<std::uint32_t, std::string> reserved_by_address_;
  std::map<std::string, DhcpLease> leases_;                      // by client key: granted (also expired)
  std::unordered_map<std::uint32_t, std::string> leased_by_address_;
  std::unordered_map<std::string, std::pair<std::uint32_t, std::int64_t>> offers_;  // by client key: address, hold until
  std::unordered_map<std::uint32_t, std::string> offered_by_address_;
  std::uint32_t cursor_ = 0;  // where the search for a free address resumes
};

// The lease key of a declined address's quarantine: "declined:10.0.0.12".
std::string dhcp_quarantine_key(std::uint32_t address);
bool is_dhcp_quarantine(const DhcpLease& lease);

// Lease file: a journal of "CLIENT ADDRESS EXPIRES" lines, '#' comments; CLIENT is the lease key (a
// MAC in files from before option 61 was honoured, which therefore load unchanged). The last line for
// a client wins and address 0.0.0.0 removes its lease; a release is a line that expires at once, a
// decline a line for the address's quarantine key. Appending one line per grant keeps the fdatasync
// before each ACK cheap; the file is compacted
// (rewritten from format_dhcp_leases) at start and when it grows. parse_dhcp_leases returns the final
// lease of each client in the order of the lines that set them (commit them in that order). A last
// line without its newline is a record torn by a crash in mid-write: it was never complete on disk,
// so no ACK was sent for it; it is left out, and its text is put in `torn` (when given) for the log.
// Throws aggrik8s::Error naming the line on anything else: a lease file we cannot read must stop the
// server, not be forgotten.
std::string format_dhcp_lease_line(const DhcpLease& lease);
std::string format_dhcp_leases(const std::map<std::string, DhcpLease>& leases);
std::vector<DhcpLease> parse_dhcp_leases(const std::string& text, const std::string& file_name,
                                         std::string* torn = nullptr);

}  // namespace aggrik8s::netboot
