#include "netboot/dhcp/dhcp_reply_plan.hpp"

#include <algorithm>
#include <array>
#include <utility>

#include "core/log.hpp"

namespace aggrik8s::netboot {

const char* to_string(DhcpDropReason reason) {
  switch (reason) {
    case DhcpDropReason::none: return "none";
    case DhcpDropReason::malformed: return "malformed";
    case DhcpDropReason::flood: return "flood";
    case DhcpDropReason::not_for_us: return "not_for_us";
    case DhcpDropReason::no_subnet: return "no_subnet";
    case DhcpDropReason::no_free_address: return "no_free_address";
    case DhcpDropReason::lease_file: return "lease_file";
    case DhcpDropReason::no_client_id: return "no_client_id";
  }
  return "unknown";
}

namespace {

// Phase 1, who asks: the message type (none for a BOOTREPLY or a packet without option 53), the MAC
// for the log and reservations, and the lease key (option 61, else htype + chaddr).
struct DhcpRequester {
  std::optional<DhcpMessageType> type;
  std::string mac;
  std::optional<std::string> key;

  explicit DhcpRequester(const DhcpPacket& request)
      : type(request.op == 1 ? request.message_type() : std::nullopt),
        mac(request.hardware_address()),
        key(request.client_key()) {}

  // "DISCOVER from 52:54:00:.. via relay 10.0.0.1": the start of every log line about the request.
  std::string describe(const DhcpPacket& request, bool with_relay) const {
    // hlen 0 leaves no MAC: the client identifier names the client then.
    std::string text = std::string(to_string(*type)) + " from " + (mac.empty() ? key.value_or("(no client id)") : mac);
    if (with_relay && request.giaddr != 0) text += " via relay " + ipv4_to_string(request.giaddr);
    return text;
  }
};

// Phase 2, the boot answer: the policy's, or none without a policy.
DhcpBootAnswer ask_boot_answer(const DhcpReplySettings& settings, const DhcpPacket& request) {
  return settings.boot_policy ? settings.boot_policy->boot_answer(request) : DhcpBootAnswer{};
}

std::string describe_boot(const DhcpBootAnswer& boot) {
  if (!boot.offer) return " (no boot offer: " + (boot.reason.empty() ? std::string("none") : boot.reason) + ")";
  // Option 67 is the whole name; `file` is left empty when it would not hold it.
  const std::string& file = boot.bootfile_option ? *boot.bootfile_option : boot.file;
  return " boot=" + std::string(to_string(boot.kind)) + (file.empty() ? "" : " file=" + file);
}

// Phase 3 (full mode), the address: what the pool grants or refuses, before any packet is built.
struct DhcpAddressChoice {
  std::optional<DhcpMessageType> reply;  // offer, ack or nak; nullopt: no reply
  bool informing = false;                // the ACK answers an INFORM: no address, no lease times
  std::uint32_t address = 0;             // yiaddr of an OFFER or ACK; the refused address of a NAK
  std::optional<DhcpLease> to_commit;
  std::optional<DhcpLease> to_record;
  DhcpDropReason dropped = DhcpDropReason::none;
  std::string outcome;  // the log line's end, after DhcpRequester::describe(); built when `describe`
                        // or for a drop logged as a warning
};

DhcpAddressChoice choose_address(const DhcpReplySettings& settings, const DhcpSubnet& subnet, DhcpLeasePool& pool,
                                 const DhcpClientId& client, DhcpMessageType type, const DhcpPacket& request,
                                 std::int64_t now, bool describe) {
  DhcpAddressChoice choice;
  switch (type) {
    case DhcpMessageType::discover: {
      auto address = pool.offer(client, request.requested_address(), now);
      if (!address) {
        choice.outcome = ": no free address in the pool " + ipv4_to_string(subnet.pool.first) + "-" +
                         ipv4_to_string(subnet.pool.last);
        choice.dropped = DhcpDropReason::no_free_address;
        return choice;
      }
      choice.reply = DhcpMessageType::offer;
      choice.address = *address;
      if (describe) {
        choice.outcome = " -> OFFER " + ipv4_to_string(*address);
        if (auto reserved = pool.reserved_address(client.mac); reserved && *reserved != *address) {
          choice.outcome += " (its reserved " + ipv4_to_string(*reserved) + " is another client's until that lease ends)";
        }
      }
      return choice;
    }
    case DhcpMessageType::request: {
      if (auto server = request.server_identifier(); server && *server != settings.server_address) {
        pool.release(client.key, 0, now);  // it chose another server: drop our offer hold
        if (describe) choice.outcome = " chose server " + ipv4_to_string(*server) + ", not us";
        choice.dropped = DhcpDropReason::not_for_us;
        return choice;
      }
      // SELECTING / INIT-REBOOT carry option 50; RENEWING / REBINDING carry ciaddr.
      choice.address = request.requested_address().value_or(request.ciaddr);
      // INIT-REBOOT (option 50, no server identifier, no ciaddr) on the right network from a client we
      // have no record of: RFC 2131 4.3.2 says MUST remain silent, so another server that does know it
      // can answer (a NAK from us would send it back to INIT).
      if (!request.server_identifier() && request.ciaddr == 0 && request.requested_address() &&
          subnet.contains(choice.address) && !pool.knows(client)) {
        if (describe) choice.outcome = " for " + ipv4_to_string(choice.address) + " (INIT-REBOOT): no record of this client, not answered";
        choice.dropped = DhcpDropReason::not_for_us;
        return choice;
      }
      // INIT-REBOOT, RENEWING or REBINDING for an address other than the one this client's lease holds:
      // RFC 2131 4.3.2 says NAK ("the requested IP address is incorrect"), as Kea and dnsmasq do;
      // granting it would let a client skip allocation and pick any free address.
      if (!request.server_identifier()) {
        auto held = pool.leases().find(client.key);
        if (held != pool.leases().end() && held->second.address != choice.address) {
          choice.reply = DhcpMessageType::nak;
          if (describe) {
            choice.outcome = " for " + ipv4_to_string(choice.address) + " -> NAK (its lease is " +
                             ipv4_to_string(held->second.address) + ")";
          }
          return choice;
        }
      }
      choice.to_commit = choice.address != 0 ? pool.prepare(client, choice.address, now) : std::nullopt;
      choice.reply = choice.to_commit ? DhcpMessageType::ack : DhcpMessageType::nak;
      if (describe) {
        choice.outcome = choice.to_commit ? " -> ACK " + ipv4_to_string(choice.address)
                                          : " for " + ipv4_to_string(choice.address) + " -> NAK";
      }
      return choice;
    }
    case DhcpMessageType::release:
      // A RELEASE names the server it leaves (option 54, RFC 2131 4.4.6): another server's is not ours.
      if (auto server = request.server_identifier(); server && *server != settings.server_address) {
        if (describe) choice.outcome = " of " + ipv4_to_string(request.ciaddr) + " for server " + ipv4_to_string(*server) + ", not us";
        choice.dropped = DhcpDropReason::not_for_us;
        return choice;
      }
      choice.to_record = pool.release(client.key, request.ciaddr, now);
      if (describe) {
        choice.outcome = choice.to_record ? " released " + ipv4_to_string(request.ciaddr)
                                          : " of " + ipv4_to_string(request.ciaddr) + " ignored: not this client's lease";
      }
      return choice;
    case DhcpMessageType::decline: {
      std::uint32_t address = request.requested_address().value_or(0);
      choice.to_record = pool.decline(client.key, address, now);
      if (describe) {
        choice.outcome = " declined " + ipv4_to_string(address) +
                         (choice.to_record ? " (quarantined for " + std::to_string(choice.to_record->expires - now) + " s)"
                                           : " (ignored: not this client's lease)");
      }
      return choice;
    }
    case DhcpMessageType::inform:
      choice.reply = DhcpMessageType::ack;
      choice.informing = true;
      if (describe) choice.outcome = " -> ACK (INFORM)";
      return choice;
    default:
      if (describe) choice.outcome = " ignored";
      choice.dropped = DhcpDropReason::not_for_us;
      return choice;
  }
}

// Phase 4, the reply's fields and options.
DhcpPacket reply_to(const DhcpPacket& request, DhcpMessageType type, std::uint32_t server) {
  DhcpPacket reply;
  reply.op = 2;
  reply.htype = request.htype;
  reply.hlen = request.hlen;
  reply.xid = request.xid;
  reply.flags = request.flags;
  reply.giaddr = request.giaddr;
  reply.chaddr = request.chaddr;
  reply.options.reserve(16);  // a full-mode ACK has about ten: no regrowth per option
  reply.set(dhcp_option::message_type, std::vector<std::uint8_t>{static_cast<std::uint8_t>(type)});
  reply.set_address(dhcp_option::server_identifier, server);
  // RFC 6842: a client identifier the client sent MUST come back (a client may match replies by it).
  if (const DhcpOption* id = request.find(dhcp_option::client_identifier)) reply.set(id->code, id->data);
  return reply;
}

// RFC 2132 9.8: the server "MUST try to insert the requested options in the order requested by the
// client" (a client may read only the first few, or stop at the first it cannot parse). Message type
// and server identifier stay first, as dnsmasq and Kea send them; options the client did not list
// keep their order after the listed ones. Runs before the relay's option 82 is appended last.
void order_as_requested(DhcpPacket& reply, const DhcpPacket& request) {
  const DhcpOption* list = request.find(dhcp_option::parameter_request_list);
  if (list == nullptr || list->data.empty()) return;
  std::array<std::uint16_t, 256> rank;
  rank.fill(static_cast<std::uint16_t>(2 + list->data.size()));
  for (std::size_t i = list->data.size(); i-- > 0;) rank[list->data[i]] = static_cast<std::uint16_t>(2 + i);  // first wins
  rank[dhcp_option::message_type] = 0;
  rank[dhcp_option::server_identifier] = 1;
  std::stable_sort(reply.options.begin(), reply.options.end(),
                   [&rank](const DhcpOption& a, const DhcpOption& b) { return rank[a.code] < rank[b.code]; });
}

// RFC 3046 2.2: a relay's agent information (option 82) MUST be copied into the reply, as the last
// option: relays and DHCP-snooping switches pick the client's port by it, some drop replies without it.
void echo_relay_information(DhcpPacket& reply, const DhcpPacket& request) {
  const DhcpOption* relay = request.find(dhcp_option::relay_agent_information);
  if (relay == nullptr) return;
  reply.erase(relay->code);
  reply.set(relay->code, relay->data);
}

void add_boot(DhcpPacket& reply, const DhcpBootAnswer& boot) {
  if (!boot.offer) return;
  reply.siaddr = boot.siaddr;
  reply.file = boot.file;
  if (boot.vendor_class) reply.set(dhcp_option::vendor_class, *boot.vendor_class);
  if (boot.vendor_options) reply.set(dhcp_option::vendor_specific, *boot.vendor_options);
  if (boot.tftp_server_option) reply.set(dhcp_option::tftp_server_name, *boot.tftp_server_option);
  if (boot.bootfile_option) reply.set(dhcp_option::bootfile_name, *boot.bootfile_option);
  if (boot.client_uuid) reply.set(dhcp_option::client_uuid, *boot.client_uuid);
}

// An option whose value is a list of IPv4 addresses (DNS 6, NTP 42), in network order.
void set_address_list(DhcpPacket& reply, std::uint8_t option, const std::vector<std::uint32_t>& addresses) {
  if (addresses.empty()) return;
  std::vector<std::uint8_t> data;
  for (auto address : addresses) {
    for (int shift = 24; shift >= 0; shift -= 8) data.push_back(static_cast<std::uint8_t>(address >> shift));
  }
  reply.set(option, std::move(data));
}

void add_network(DhcpPacket& reply, const DhcpSubnet& subnet, bool with_lease) {
  reply.set_address(dhcp_option::subnet_mask, subnet.netmask);
  if (subnet.router) reply.set_address(dhcp_option::router, *subnet.router);
  set_address_list(reply, dhcp_option::dns_server, subnet.dns);
  set_address_list(reply, dhcp_option::ntp_servers, subnet.ntp);
  if (subnet.domain) reply.set(dhcp_option::domain_name, *subnet.domain);
  if (with_lease) {
    std::uint32_t lease = subnet.pool.lease_time;
    reply.set_u32(dhcp_option::lease_time, lease);
    reply.set_u32(dhcp_option::renewal_time, lease / 2);
    reply.set_u32(dhcp_option::rebinding_time, static_cast<std::uint32_t>(std::uint64_t{lease} * 7 / 8));
  }
}

DhcpPacket full_mode_reply(const DhcpReplySettings& settings, const DhcpSubnet& subnet, const DhcpPacket& request,
                           const DhcpAddressChoice& choice, const DhcpBootAnswer& boot) {
  DhcpPacket reply = reply_to(request, *choice.reply, settings.server_address);
  if (*choice.reply == DhcpMessageType::nak) {
    reply.flags = 0x8000;  // the client may hold an address it must not use: broadcast
    reply.set(dhcp_option::message, "address " + ipv4_to_string(choice.address) + " is not available to this client");
    return reply;
  }
  if (!choice.informing) reply.yiaddr = choice.address;
  if (*choice.reply == DhcpMessageType::ack) reply.ciaddr = request.ciaddr;
  add_network(reply, subnet, !choice.informing);
  add_boot(reply, boot);
  return reply;
}

// proxyDHCP: another server gives addresses; we answer boot clients only, with yiaddr 0: an OFFER to a
// DISCOVER on port 67, an ACK to a REQUEST or INFORM on port 4011.
void plan_proxy_reply(DhcpReplyPlan& plan, const DhcpReplySettings& settings, const DhcpRequester& requester,
                      const DhcpPacket& request, const DhcpBootAnswer& boot, bool on_proxy_port, bool describe) {
  DhcpMessageType type = *requester.type;
  if (!boot.offer) {
    if (describe) plan.log = requester.describe(request, false) + " ignored" + describe_boot(boot);
    plan.dropped = DhcpDropReason::not_for_us;
    return;
  }
  bool wanted = on_proxy_port ? (type == DhcpMessageType::request || type == DhcpMessageType::inform)
                              : type == DhcpMessageType::discover;
  if (!wanted) {
    if (describe) {
      plan.log = requester.describe(request, false) + " ignored (proxy answers DISCOVER on 67, REQUEST on 4011)";
    }
    plan.dropped = DhcpDropReason::not_for_us;
    return;
  }
  DhcpPacket reply = reply_to(request, on_proxy_port ? DhcpMessageType::ack : DhcpMessageType::offer, settings.server_address);
  add_boot(reply, boot);
  if (!reply.has(dhcp_option::vendor_class)) reply.set(dhcp_option::vendor_class, "PXEClient");
  plan.reply = std::move(reply);
  if (describe) {
    plan.log = requester.describe(request, false) + " -> proxy " + (on_proxy_port ? "ACK" : "OFFER") + describe_boot(boot);
  }
}

// Full mode: the request's subnet and the client's lease key, then phases 3 and 4.
void plan_full_reply(DhcpReplyPlan& plan, const DhcpReplySettings& settings, std::vector<DhcpLeasePool>* pools,
                     const DhcpRequester& requester, const DhcpPacket& request, const DhcpBootAnswer& boot,
                     std::int64_t now, bool describe) {
  if (pools == nullptr || pools->size() != settings.subnets.size()) {
    if (describe) plan.log = requester.describe(request, false) + " ignored: no address pools (full mode without subnets)";
    plan.dropped = DhcpDropReason::not_for_us;
    return;
  }
  auto selected = select_dhcp_subnet(settings.subnets, request.giaddr, request.ciaddr);
  if (!selected) {
    // An address from another subnet's pool would be unusable there: no answer at all.
    plan.log = requester.describe(request, true) + " ignored: no pool for that subnet";
    plan.dropped = DhcpDropReason::no_subnet;
    return;
  }
  if (!requester.key) {
    // All such clients would share one lease (RFC 2131 4.2 wants them told apart): none gets one.
    plan.dropped = DhcpDropReason::no_client_id;
    if (describe) {
      plan.log = requester.describe(request, true) + " ignored: neither a client identifier (option 61) nor a hardware address";
    }
    return;
  }
  plan.subnet = *selected;
  const DhcpSubnet& subnet = settings.subnets[*selected];
  const DhcpClientId client(*requester.key, requester.mac);
  auto choice = choose_address(settings, subnet, (*pools)[*selected], client, *requester.type, request, now, describe);
  plan.dropped = choice.dropped;
  plan.to_commit = std::move(choice.to_commit);
  plan.to_record = std::move(choice.to_record);
  if (choice.reply) plan.reply = full_mode_reply(settings, subnet, request, choice, boot);
  if (describe || !choice.outcome.empty()) {
    plan.log = requester.describe(request, true) + choice.outcome;
    // The boot answer is named where it went out: in OFFERs and ACKs, not NAKs.
    if (choice.reply && *choice.reply != DhcpMessageType::nak) plan.log += describe_boot(boot);
  }
}

}  // namespace

std::size_t dhcp_reply_size_limit(const DhcpPacket& request) {
  constexpr std::size_t ip_udp_headers = 28, minimum_datagram = 576;
  std::size_t datagram = minimum_datagram;
  if (const DhcpOption* max = request.find(dhcp_option::max_message_size); max != nullptr && max->data.size() == 2) {
    datagram = std::max<std::size_t>(datagram, static_cast<std::size_t>(max->data[0]) << 8 | max->data[1]);
  }
  return datagram - ip_udp_headers;
}

std::vector<std::uint8_t> fit_dhcp_reply(DhcpPacket& reply, std::size_t limit) {
  static constexpr std::uint8_t droppable[] = {dhcp_option::ntp_servers, dhcp_option::domain_name, dhcp_option::dns_server,
                                               dhcp_option::client_uuid, dhcp_option::client_identifier};
  std::vector<std::uint8_t> dropped;
  for (std::uint8_t code : droppable) {
    if (dhcp_encoded_size(reply) <= limit) break;
    if (!reply.has(code)) continue;
    reply.erase(code);
    dropped.push_back(code);
  }
  return dropped;
}

DhcpReplyPlan plan_dhcp_reply(const DhcpReplySettings& settings, std::vector<DhcpLeasePool>* pools,
                              const DhcpPacket& request, bool on_proxy_port, std::int64_t now) {
  DhcpReplyPlan plan;
  // The log line is built only when it will be written: at info level, or for the drops logged as
  // warnings. Under perfdhcp with --quiet these strings were a tenth of the server's time.
  const bool describe = log::enabled(log::Level::info);
  const DhcpRequester requester(request);
  if (!requester.type) {
    if (describe) plan.log = "ignored: not a DHCP request from " + requester.mac;
    plan.dropped = DhcpDropReason::not_for_us;
    return plan;
  }
  DhcpBootAnswer boot = ask_boot_answer(settings, request);
  if (settings.mode == DhcpMode::proxy || on_proxy_port) {
    plan_proxy_reply(plan, settings, requester, request, boot, on_proxy_port, describe);
  } else {
    plan_full_reply(plan, settings, pools, requester, request, boot, now, describe);
  }
  if (plan.reply) {
    order_as_requested(*plan.reply, request);
    echo_relay_information(*plan.reply, request);
    std::size_t limit = dhcp_reply_size_limit(request);
    if (auto dropped = fit_dhcp_reply(*plan.reply, limit); !dropped.empty()) {
      std::string codes;
      for (auto code : dropped) codes += (codes.empty() ? "" : ", ") + std::to_string(code);
      // The configuration gives this client less than it has: say what was left out.
      plan.log = (plan.log.empty() ? std::string("reply to ") + requester.mac : plan.log) + " (options " + codes +
                 " left out: the reply must fit the client's " + std::to_string(limit) + "-byte limit)";
    }
  }
  return plan;
}

}  // namespace aggrik8s::netboot
