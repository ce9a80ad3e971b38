#pragma once
// The DHCP side of `aggrik8s-image serve`: a UDP server on port 67 (and 4011 in proxy mode) bound to
// one interface. The protocol decisions are pure (dhcp_packet, dhcp_reply_plan, dhcp_lease_pool; the
// boot part comes from a DhcpBootPolicy); this file only moves datagrams; the lease file is written by
// dhcp_lease_journal's thread.
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
#include "netboot/dhcp/dhcp_lease_journal.hpp"
#include "netboot/dhcp/dhcp_reply_plan.hpp"

namespace aggrik8s::netboot {

// The reply settings (mode, server address, subnets, boot policy) and what the server itself needs.
struct DhcpServerConfig : DhcpReplySettings {
  // SO_BINDTODEVICE: requests and broadcast replies only on this link. Without an interface nothing is
  // ever broadcast: replies go back to the sender's address and port (relays, and loopback tests).
  std::optional<std::string> interface;
  std::uint16_t port = 67;
  std::uint16_t client_port = 68;
  std::uint16_t proxy_port = 4011;
  std::optional<std::filesystem::path> lease_file;
  // Flood guard: more requests than this from one client (DhcpPacket::client_key()) within a second are
  // dropped (counted, logged once).
  unsigned max_requests_per_mac_per_second = 20;
  // The lease file is compacted when more lines than this were appended since the last compaction;
  // 0: twice the leases held, plus 1000. Small values are for tests that want compactions under load
  // (the environment variable AGGRIK8S_DHCP_COMPACT_EVERY sets it for `serve`, tests only).
  std::size_t compact_after_lines = 0;

  // Tests only: runs on the journal's thread between writing a group of lease lines and its
  // fdatasync, to make the disk as slow as a test needs.
  std::function<void()> before_journal_sync;
};

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
  // The leases held now (read from the lease file, granted since), quarantined addresses left out.
  // Before start(), or on the io thread.
  std::vector<DhcpLease> leases() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace aggrik8s::netboot
