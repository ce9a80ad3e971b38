#pragma once
// The DHCP side of `aggrik8s-image serve`: a UDP server on port 67 (and 4011 in proxy mode) bound to
// one interface. The protocol decisions are pure (dhcp_packet, dhcp_boot_decision, dhcp_lease_pool);
// this file only moves datagrams and writes the lease file.
// Threading: everything runs on the io_context's thread; run the io_context on one thread.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "netboot/asio.hpp"
#include "netboot/dhcp_boot_decision.hpp"
#include "netboot/dhcp_lease_pool.hpp"
#include "netboot/dhcp_packet.hpp"

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
  // Full mode.
  DhcpPoolRange pool;
  std::uint32_t netmask = 0xffffff00;
  std::optional<std::uint32_t> router;
  std::vector<std::uint32_t> dns;
  std::optional<std::string> domain;
  std::optional<std::filesystem::path> lease_file;
  // Flood guard: more requests than this from one MAC within a second are dropped (counted, logged once).
  unsigned max_requests_per_mac_per_second = 20;

  // The boot part of an answer; supplied by the service from its current inventory.
  std::function<DhcpBootAnswer(const DhcpPacket&)> decide;
  // Called after a lease is on disk and before its ACK is sent (NodeAddressBook::record_lease()).
  std::function<void(const DhcpPacket&, std::uint32_t address)> leased;
};

struct DhcpServerCounters {
  std::uint64_t received = 0, malformed = 0, flood_dropped = 0, offers = 0, acks = 0, naks = 0, ignored = 0;
};

// Builds the reply to `request`, or nullopt when it gets none. Pure apart from the pool it updates; the
// lease to persist before sending (an ACK in full mode) is returned in `to_commit`.
struct DhcpReplyPlan {
  std::optional<DhcpPacket> reply;
  std::optional<DhcpLease> to_commit;
  bool rewrite_leases = false;        // a lease was released or declined: the journal must drop it
  std::string log;                    // one line for the log
};
DhcpReplyPlan plan_dhcp_reply(const DhcpServerConfig& config, DhcpLeasePool* pool, const DhcpPacket& request,
                              bool on_proxy_port, std::int64_t now);

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

// Writes the leases durably: temp file, fsync, rename over `file`, fsync of the directory.
void write_dhcp_lease_file(const std::filesystem::path& file, const std::string& text);

}  // namespace aggrik8s::netboot
