#pragma once
// What the DHCP server answers to one request, decided without sockets or files: the reply (if any),
// the lease a full-mode ACK must make durable before it is sent, and the log line. In phases: who asks
// (the client's identity and message type), the boot answer (asked of the DhcpBootPolicy), in full mode
// the address (from the lease pool of the request's subnet), and last the reply's fields and options.
// dhcp_server.cpp moves the datagrams and the journal persists what a plan says.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "netboot/dhcp/dhcp_boot_policy.hpp"
#include "netboot/dhcp/dhcp_lease_pool.hpp"
#include "netboot/dhcp/dhcp_packet.hpp"
#include "netboot/dhcp/dhcp_subnet.hpp"

namespace aggrik8s::netboot {

enum class DhcpMode { off, proxy, full };

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

// What planning reads of the server's configuration (DhcpServerConfig adds the sockets and the lease file).
struct DhcpReplySettings {
  DhcpMode mode = DhcpMode::proxy;
  std::uint32_t server_address = 0;  // option 54, and the address port 4011 binds to
  // Full mode: subnets[0] is the interface's own subnet, the others are reached through relays; a
  // request is answered from the one select_dhcp_subnet() picks (dhcp_subnet.hpp).
  std::vector<DhcpSubnet> subnets;
  // Decides the boot part of each answer and hears of granted leases; none: no client gets boot
  // information (and in proxy mode no client gets an answer).
  std::shared_ptr<DhcpBootPolicy> boot_policy;
};

struct DhcpReplyPlan {
  std::optional<DhcpPacket> reply;
  std::optional<DhcpLease> to_commit;  // the lease to persist before sending (an ACK in full mode)
  std::size_t subnet = 0;              // the subnet (and pool) it was planned in
  // A release (the lease, expired now) or a decline (address 0: removed) that the pool has already
  // applied; the journal must record it, no reply waits for it.
  std::optional<DhcpLease> to_record;
  DhcpDropReason dropped = DhcpDropReason::none;
  std::string log;                    // one line for the log; empty when info lines are off, unless
                                      // the drop is one logged as a warning (no_subnet, no_free_address)
};

// The largest DHCP message `request`'s sender accepts: option 57 (RFC 2132 9.10, an IP datagram
// size, at least 576) less the IP and UDP headers, else 548 (RFC 2131: a client must take 576-byte
// datagrams, and need take no more).
std::size_t dhcp_reply_size_limit(const DhcpPacket& request);
// Drops options from `reply` until it encodes within `limit` bytes: NTP, domain, DNS servers, client
// UUID echo, then client identifier echo (in that order, as dnsmasq drops what does not fit). What a
// client needs to use the address and to boot (message type, server id, lease times, netmask, router,
// the boot options, a relay's option 82) is never dropped. Returns the dropped codes.
std::vector<std::uint8_t> fit_dhcp_reply(DhcpPacket& reply, std::size_t limit);

// Builds the reply to `request`, or a plan without one when it gets none. Pure apart from the pools it
// updates (offers held, releases and declines applied; a REQUEST's lease is only prepared: the caller
// commits `to_commit`). `pools` parallels settings.subnets; nullptr in proxy mode.
DhcpReplyPlan plan_dhcp_reply(const DhcpReplySettings& settings, std::vector<DhcpLeasePool>* pools,
                              const DhcpPacket& request, bool on_proxy_port, std::int64_t now);

}  // namespace aggrik8s::netboot
