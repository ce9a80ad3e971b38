#pragma once
// The DHCP side of `aggrik8s-image serve`: a UDP server on port 67 (and 4011 in proxy mode) bound to
// one interface. The protocol decisions are pure (dhcp_packet, dhcp_boot_decision, dhcp_lease_pool);
// this file only moves datagrams; the lease file is written by dhcp_lease_journal's thread.
// Threading: everything but the journal runs on the io_context's thread; run the io_context on one
// thread, and stop() the server before that thread's run() ends (stop waits for the journal).
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "netboot/asio.hpp"
#include "netboot/service/dhcp_boot_decision.hpp"
#include "netboot/dhcp/dhcp_lease_journal.hpp"
#include "netboot/dhcp/dhcp_lease_pool.hpp"
#include "netboot/dhcp/dhcp_packet.hpp"
#include "netboot/dhcp/dhcp_subnet.hpp"

namespace aggrik8s::netboot {

enum class DhcpMode { off, proxy, full };

struct DhcpServerConfig {
  DhcpMode mode = DhcpMode::proxy;
  // SO_BINDTODEVICE: requests and broadcast replies only on this link. Without an interface nothing is
  // ever broadcast: replies go back to the sender's address and port (relays, and loopback tests).
  std::optional<std::string> interface;
  std::uint32_t server_address = 0;      // option 54, and the address port 4011 binds to
  std::uint16_t port = 67;
  std::uint16_t client_port = 68;
  std::uint16_t proxy_port = 4011;
  // Full mode: subnets[0] is the interface's own subnet, the others are reached through relays; a
  // request is answered from the one select_dhcp_subnet() picks (dhcp_subnet.hpp).
  std::vector<DhcpSubnet> subnets;
  std::optional<std::filesystem::path> lease_file;
  // Flood guard: more requests than this from one client (DhcpPacket::client_key()) within a second are
  // dropped (counted, logged once).
  unsigned max_requests_per_mac_per_second = 20;
  // The lease file is compacted when more lines than this were appended since the last compaction;
  // 0: twice the leases held, plus 1000. Small values are for tests that want compactions under load
  // (the environment variable AGGRIK8S_DHCP_COMPACT_EVERY sets it for `serve`, tests only).
  std::size_t compact_after_lines = 0;

  // The boot part of an answer; supplied by the service from its current inventory.
  std::function<DhcpBootAnswer(const DhcpPacket&)> decide;
  // Called after a lease is on disk and before its ACK is sent (NodeAddressBook::record_lease()).
  std::function<void(const DhcpPacket&, std::uint32_t address)> leased;
  // Tests only: runs on the journal's thread between writing a group of lease lines and its
  // fdatasync, to make the disk as slow as a test needs.
  std::function<void()> before_journal_sync;
};

// Why a request got no reply (RELEASE and DECLINE never get one and are not drops).
enum class DhcpDropReason : std::uint8_t {
  none,
  malformed,        // not a DHCP packet (DhcpParseError)
  flood,            // over the per-MAC rate limit
  not_for_us,       // a reply, another server chosen, a non-boot client in proxy mode, ...
  no_subnet,        // relayed from a subnet with no pool
  no_free_address,  // the subnet's pool is exhausted (or the reserved address is taken)
  lease_file,       // an ACK whose lease line could not be made durable: not sent
  no_client_id,     // neither option 61 nor a usable chaddr (hlen 0, all zero): no lease can be keyed
};
constexpr std::size_t dhcp_drop_reasons = 8;
const char* to_string(DhcpDropReason reason);

// Totals since start, for /metrics and tests.
struct DhcpServerCounters {
  std::uint64_t received = 0;
  std::array<std::uint64_t, 9> received_by_type{};  // [DHCP message type 1..8]; [0]: none or unknown
  std::uint64_t offers = 0, acks = 0, naks = 0;
  std::array<std::uint64_t, dhcp_drop_reasons> dropped{};  // [DhcpDropReason]
  std::uint64_t journal_appends = 0;      // groups of lease lines appended and fdatasync'ed
  std::uint64_t journal_compactions = 0;  // rewrites of the whole lease file
  std::uint64_t leases_active = 0;        // granted, unexpired leases (recounted every second)
  std::uint64_t dropped_for(DhcpDropReason reason) const { return dropped[static_cast<std::size_t>(reason)]; }
};

// Builds the reply to `request`, or nullopt when it gets none. Pure apart from the pools it updates; the
// lease to persist before sending (an ACK in full mode) is returned in `to_commit`.
struct DhcpReplyPlan {
  std::optional<DhcpPacket> reply;
  std::optional<DhcpLease> to_commit;
  std::size_t subnet = 0;             // the subnet (and pool) it was planned in
  // A release (the lease, expired now) or a decline (address 0: removed) that the pool has already
  // applied; the journal must record it, no reply waits for it.
  std::optional<DhcpLease> to_record;
  DhcpDropReason dropped = DhcpDropReason::none;
  std::string log;                    // one line for the log; empty when info lines are off, unless
                                      // the drop is one logged as a warning (no_subnet, no_free_address)
};
// `pools` parallels config.subnets; nullptr in proxy mode.
DhcpReplyPlan plan_dhcp_reply(const DhcpServerConfig& config, std::vector<DhcpLeasePool>* pools,
                              const DhcpPacket& request, bool on_proxy_port, std::int64_t now);

class DhcpServer {
 public:
  // Binds the sockets and reads the lease file; throws aggrik8s::Error on failure.
  DhcpServer(boost::asio::io_context& io, DhcpServerConfig config);
  ~DhcpServer();
  DhcpServer(const DhcpServer&) = delete;
  DhcpServer& operator=(const DhcpServer&) = delete;

  void start();
  void stop();
  void set_reservations(std::map<std::string, std::uint32_t> reservations);
  boost::asio::ip::udp::endpoint local_endpoint() const;
  DhcpServerCounters counters() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace aggrik8s::netboot
