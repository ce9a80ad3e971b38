// The DHCP reply decisions without sockets: full mode (DISCOVER -> OFFER, REQUEST -> ACK or NAK, a
// REQUEST for another server, INFORM, RELEASE, DECLINE, an exhausted pool, clients told apart by
// option 61, relayed subnets) and proxy mode (boot clients only, OFFER on 67 and ACK on 4011), with a
// fake boot policy. What only sockets show (broadcast, group commit, floods) is in
// tests/integration/netboot/dhcp/dhcp_server_test.cpp.
#include "netboot/dhcp/dhcp_reply_plan.hpp"

#include <catch2/catch.hpp>

#include "core/log.hpp"
#include "tests/dhcp_test_packets.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;
using aggrik8s::test::dhcp_request;

namespace {

std::uint32_t ip(const char* text) { return *parse_ipv4(text); }

// Answers every client alike and counts what it was asked.
struct FakeBootPolicy : DhcpBootPolicy {
  DhcpBootAnswer answer;
  unsigned asked = 0, leases = 0;
  DhcpBootAnswer boot_answer(const DhcpPacket&) override {
    ++asked;
    return answer;
  }
  void leased(const DhcpPacket&, const DhcpLease&) override { ++leases; }
};

DhcpBootAnswer bios_boot() {
  DhcpBootAnswer boot;
  boot.kind = DhcpClientKind::bios;
  boot.offer = true;
  boot.siaddr = ip("10.98.9.1");
  boot.file = "undionly.kpxe";
  boot.bootfile_option = "undionly.kpxe";
  return boot;
}

// A policy that offers every client the BIOS boot file, attached to `settings`.
std::shared_ptr<FakeBootPolicy> attach_bios_boot_policy(DhcpReplySettings& settings) {
  auto policy = std::make_shared<FakeBootPolicy>();
  policy->answer = bios_boot();
  settings.boot_policy = policy;
  return policy;
}

DhcpReplySettings full_settings() {
  DhcpReplySettings settings;
  settings.mode = DhcpMode::full;
  settings.server_address = ip("10.98.9.1");
  DhcpSubnet subnet;
  subnet.network = ip("10.98.9.0");
  subnet.pool.first = ip("10.98.9.10");
  subnet.pool.last = ip("10.98.9.11");
  subnet.pool.server = settings.server_address;
  subnet.pool.lease_time = 600;
  subnet.router = ip("10.98.9.1");
  subnet.dns = {ip("10.98.9.53")};
  subnet.domain = "lab.example";
  settings.subnets.push_back(subnet);
  return settings;
}

std::vector<DhcpLeasePool> pools_for(const DhcpReplySettings& settings) {
  std::vector<DhcpLeasePool> pools;
  for (const auto& subnet : settings.subnets) pools.emplace_back(subnet.pool);
  return pools;
}


DhcpPacket request_for(std::uint8_t mac_last, std::uint32_t address, std::uint32_t server) {
  auto packet = dhcp_request(3, mac_last, 2);
  packet.set_address(dhcp_option::requested_address, address);
  if (server != 0) packet.set_address(dhcp_option::server_identifier, server);
  return packet;
}

// Info lines on for one test: the log text is built only when it will be written.
struct InfoLogging {
  log::Level before = log::level();
  InfoLogging() { log::set_level(log::Level::info); }
  ~InfoLogging() { log::set_level(before); }
};

}  // namespace

TEST_CASE("dhcp reply plan: DISCOVER gets an OFFER from the pool with the subnet's options and the boot answer", "[dhcp]") {
  auto settings = full_settings();
  auto policy = attach_bios_boot_policy(settings);
  auto pools = pools_for(settings);
  auto discover = dhcp_request(1, 1, 100);
  discover.flags = 0x8000;

  auto plan = plan_dhcp_reply(settings, &pools, discover, false, 1000);
  REQUIRE(plan.reply);
  const DhcpPacket& offer = *plan.reply;
  CHECK(plan.dropped == DhcpDropReason::none);
  CHECK_FALSE(plan.to_commit);  // an offer promises nothing the journal must keep
  CHECK(policy->asked == 1);
  CHECK(offer.op == 2);
  CHECK(offer.message_type() == DhcpMessageType::offer);
  CHECK(offer.xid == 100);
  CHECK(offer.flags == 0x8000);
  CHECK(offer.chaddr == discover.chaddr);
  CHECK(offer.yiaddr == ip("10.98.9.10"));
  CHECK(offer.server_identifier() == settings.server_address);
  CHECK(offer.find(dhcp_option::subnet_mask)->data == std::vector<std::uint8_t>{255, 255, 255, 0});
  CHECK(offer.find(dhcp_option::router)->data == std::vector<std::uint8_t>{10, 98, 9, 1});
  CHECK(offer.find(dhcp_option::dns_server)->data == std::vector<std::uint8_t>{10, 98, 9, 53});
  CHECK_FALSE(offer.has(dhcp_option::ntp_servers));
  CHECK(offer.lease_time() == 600u);
  CHECK(offer.find(dhcp_option::renewal_time)->data == std::vector<std::uint8_t>{0, 0, 1, 44});    // 300
  CHECK(offer.find(dhcp_option::rebinding_time)->data == std::vector<std::uint8_t>{0, 0, 2, 13});  // 525
  CHECK(offer.siaddr == ip("10.98.9.1"));
  CHECK(offer.file == "undionly.kpxe");
  CHECK(offer.bootfile_name() == "undionly.kpxe");
  CHECK_FALSE(offer.has(dhcp_option::vendor_class));  // "PXEClient" is added in proxy offers only

  // Held for this client: the next client is offered the other address.
  auto other = plan_dhcp_reply(settings, &pools, dhcp_request(1, 2, 101), false, 1000);
  REQUIRE(other.reply);
  CHECK(other.reply->yiaddr == ip("10.98.9.11"));
}

TEST_CASE("dhcp reply plan: a client that gets no boot offer still gets an address, without boot fields", "[dhcp]") {
  auto settings = full_settings();
  auto pools = pools_for(settings);  // no policy at all: nobody boots
  auto plan = plan_dhcp_reply(settings, &pools, dhcp_request(1, 1, 1), false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->yiaddr == ip("10.98.9.10"));
  CHECK(plan.reply->siaddr == 0);
  CHECK(plan.reply->file.empty());
  CHECK_FALSE(plan.reply->has(dhcp_option::bootfile_name));
}

TEST_CASE("dhcp reply plan: REQUEST gets an ACK and a lease to commit, or a broadcast NAK", "[dhcp]") {
  auto settings = full_settings();
  auto policy = attach_bios_boot_policy(settings);
  auto pools = pools_for(settings);
  REQUIRE(plan_dhcp_reply(settings, &pools, dhcp_request(1, 1, 1), false, 1000).reply);

  auto plan = plan_dhcp_reply(settings, &pools, request_for(1, ip("10.98.9.10"), settings.server_address), false, 1001);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::ack);
  CHECK(plan.reply->yiaddr == ip("10.98.9.10"));
  CHECK(plan.reply->lease_time() == 600u);
  CHECK(plan.reply->file == "undionly.kpxe");
  REQUIRE(plan.to_commit);
  CHECK(*plan.to_commit == DhcpLease{"52:54:00:98:09:01", ip("10.98.9.10"), 1601});
  CHECK(plan.subnet == 0);
  CHECK(policy->leases == 0);  // told by the server once the lease is durable, not while planning
  pools[0].commit(*plan.to_commit);  // as the server does at once

  // A renewal (RENEWING: ciaddr, no option 50 or 54) is acknowledged with ciaddr echoed.
  auto renew = dhcp_request(3, 1, 3);
  renew.ciaddr = ip("10.98.9.10");
  plan = plan_dhcp_reply(settings, &pools, renew, false, 1300);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::ack);
  CHECK(plan.reply->ciaddr == ip("10.98.9.10"));
  REQUIRE(plan.to_commit);
  CHECK(plan.to_commit->expires == 1900);

  // Another client asking for the same address is refused, broadcast, with a reason and no boot fields.
  plan = plan_dhcp_reply(settings, &pools, request_for(2, ip("10.98.9.10"), ip("10.98.9.1")), false, 1002);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::nak);
  CHECK(plan.reply->broadcast_flag());
  CHECK(plan.reply->yiaddr == 0);
  CHECK_FALSE(plan.to_commit);
  CHECK(plan.dropped == DhcpDropReason::none);
  const auto& message = plan.reply->find(dhcp_option::message)->data;
  CHECK(std::string(message.begin(), message.end()) == "address 10.98.9.10 is not available to this client");
  CHECK(plan.reply->file.empty());
  CHECK_FALSE(plan.reply->has(dhcp_option::subnet_mask));

  // A REQUEST naming no address at all is refused too.
  plan = plan_dhcp_reply(settings, &pools, dhcp_request(3, 2, 4), false, 1002);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::nak);
}

TEST_CASE("dhcp reply plan: a REQUEST for another server gets nothing and frees our offer", "[dhcp]") {
  auto settings = full_settings();
  auto pools = pools_for(settings);
  auto first = plan_dhcp_reply(settings, &pools, dhcp_request(1, 1, 1), false, 0);
  REQUIRE(first.reply);
  CHECK(plan_dhcp_reply(settings, &pools, dhcp_request(1, 2, 2), false, 0).reply->yiaddr == ip("10.98.9.11"));

  auto plan = plan_dhcp_reply(settings, &pools, request_for(1, first.reply->yiaddr, ip("10.98.9.2")), false, 1);
  CHECK_FALSE(plan.reply);
  CHECK_FALSE(plan.to_commit);
  CHECK(plan.dropped == DhcpDropReason::not_for_us);
  // The held address is free again for a third client.
  auto third = plan_dhcp_reply(settings, &pools, dhcp_request(1, 3, 3), false, 1);
  REQUIRE(third.reply);
  CHECK(third.reply->yiaddr == first.reply->yiaddr);
}

TEST_CASE("dhcp reply plan: INFORM gets network options and the boot answer but no address or lease", "[dhcp]") {
  auto settings = full_settings();
  auto policy = attach_bios_boot_policy(settings);
  auto pools = pools_for(settings);
  auto inform = dhcp_request(8, 1, 9);
  inform.ciaddr = ip("10.98.9.77");  // configured by hand, outside the pool

  auto plan = plan_dhcp_reply(settings, &pools, inform, false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::ack);
  CHECK(plan.reply->yiaddr == 0);
  CHECK(plan.reply->ciaddr == ip("10.98.9.77"));
  CHECK(plan.reply->has(dhcp_option::subnet_mask));
  CHECK(plan.reply->has(dhcp_option::router));
  CHECK_FALSE(plan.reply->lease_time());
  CHECK_FALSE(plan.reply->has(dhcp_option::renewal_time));
  CHECK(plan.reply->file == "undionly.kpxe");
  CHECK_FALSE(plan.to_commit);
  CHECK(pools[0].leases().empty());
}

TEST_CASE("dhcp reply plan: RELEASE and DECLINE are recorded, never answered", "[dhcp]") {
  auto settings = full_settings();
  auto pools = pools_for(settings);
  auto ack = plan_dhcp_reply(settings, &pools, request_for(1, ip("10.98.9.10"), ip("10.98.9.1")), false, 0);
  REQUIRE(ack.to_commit);
  pools[0].commit(*ack.to_commit);

  auto release = dhcp_request(7, 1, 5);
  release.ciaddr = ip("10.98.9.10");
  auto plan = plan_dhcp_reply(settings, &pools, release, false, 100);
  CHECK_FALSE(plan.reply);
  CHECK(plan.dropped == DhcpDropReason::none);
  REQUIRE(plan.to_record);
  CHECK(*plan.to_record == DhcpLease{"52:54:00:98:09:01", ip("10.98.9.10"), 100});  // expired now

  ack = plan_dhcp_reply(settings, &pools, request_for(2, ip("10.98.9.11"), ip("10.98.9.1")), false, 0);
  REQUIRE(ack.to_commit);
  pools[0].commit(*ack.to_commit);
  auto decline = dhcp_request(4, 2, 6);
  decline.set_address(dhcp_option::requested_address, ip("10.98.9.11"));
  plan = plan_dhcp_reply(settings, &pools, decline, false, 100);
  CHECK_FALSE(plan.reply);
  REQUIRE(plan.to_record);
  // The journal's line: the address quarantined for a lease time (the client's lease on it ends).
  CHECK(*plan.to_record == DhcpLease{"declined:10.98.9.11", ip("10.98.9.11"), 700});
  CHECK(pools[0].leases().count("52:54:00:98:09:02") == 0);
  // A RELEASE naming another server (option 54) is not ours; one of an address the client does not
  // hold releases nothing.
  pools[0].commit({"52:54:00:98:09:03", ip("10.98.9.10"), 600});
  auto elsewhere = dhcp_request(7, 3, 8);
  elsewhere.ciaddr = ip("10.98.9.10");
  elsewhere.set_address(dhcp_option::server_identifier, ip("10.98.9.2"));
  plan = plan_dhcp_reply(settings, &pools, elsewhere, false, 100);
  CHECK_FALSE(plan.to_record);
  CHECK(plan.dropped == DhcpDropReason::not_for_us);
  elsewhere.erase(dhcp_option::server_identifier);
  elsewhere.ciaddr = ip("10.98.9.11");
  CHECK_FALSE(plan_dhcp_reply(settings, &pools, elsewhere, false, 100).to_record);
  CHECK(pools[0].leases().at("52:54:00:98:09:03").expires == 600);
  // A decline of another client's leased address takes nothing from it.
  auto other = dhcp_request(4, 3, 7);
  other.set_address(dhcp_option::requested_address, ip("10.98.9.10"));
  pools[0].commit({"52:54:00:98:09:01", ip("10.98.9.10"), 900});
  plan = plan_dhcp_reply(settings, &pools, other, false, 101);
  CHECK_FALSE(plan.reply);
  CHECK_FALSE(plan.to_record);
  CHECK(pools[0].leases().at("52:54:00:98:09:01").address == ip("10.98.9.10"));
}

TEST_CASE("dhcp reply plan: INIT-REBOOT from a client with no record is not answered (RFC 2131 4.3.2)", "[dhcp]") {
  auto settings = full_settings();
  auto pools = pools_for(settings);
  // No server identifier, no ciaddr, option 50: INIT-REBOOT.
  auto plan = plan_dhcp_reply(settings, &pools, request_for(1, ip("10.98.9.10"), 0), false, 0);
  CHECK_FALSE(plan.reply);
  CHECK_FALSE(plan.to_commit);
  CHECK(plan.dropped == DhcpDropReason::not_for_us);
  // On the wrong network it is told so (SHOULD NAK), known or not.
  plan = plan_dhcp_reply(settings, &pools, request_for(1, ip("10.97.0.10"), 0), false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::nak);
  // A client with a lease here (also an expired one) is answered: ACK for its address, NAK otherwise.
  pools[0].commit({"52:54:00:98:09:01", ip("10.98.9.10"), 50});
  plan = plan_dhcp_reply(settings, &pools, request_for(1, ip("10.98.9.10"), 0), false, 100);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::ack);
  pools[0].commit(*plan.to_commit);
  pools[0].commit({"52:54:00:98:09:02", ip("10.98.9.11"), 50});
  plan = plan_dhcp_reply(settings, &pools, request_for(2, ip("10.98.9.10"), 0), false, 100);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::nak);
  // A client with a lease here asking for another free address (INIT-REBOOT, or RENEWING with that
  // ciaddr) gets a NAK, as from Kea and dnsmasq: it may not pick any free address and skip allocation.
  pools[0].commit({"52:54:00:98:09:04", ip("10.98.9.12"), 900});
  for (bool renewing : {false, true}) {
    auto moving = request_for(4, ip("10.98.9.13"), 0);
    if (renewing) {
      moving.erase(dhcp_option::requested_address);
      moving.ciaddr = ip("10.98.9.13");
    }
    plan = plan_dhcp_reply(settings, &pools, moving, false, 100);
    REQUIRE(plan.reply);
    CHECK(plan.reply->message_type() == DhcpMessageType::nak);
    CHECK_FALSE(plan.to_commit);
    CHECK(pools[0].leases().at("52:54:00:98:09:04").address == ip("10.98.9.12"));
  }
  // So is a node with a reservation, which has no lease yet.
  pools[0].set_reservations({{"52:54:00:98:09:03", ip("10.98.9.30")}});
  plan = plan_dhcp_reply(settings, &pools, request_for(3, ip("10.98.9.30"), 0), false, 100);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::ack);
}

TEST_CASE("dhcp reply plan: option 61 and a relay's option 82 come back, 82 last, T2 is 7/8 of the lease", "[dhcp]") {
  auto settings = full_settings();
  settings.subnets[0].pool.lease_time = 60;
  auto pools = pools_for(settings);
  auto discover = dhcp_request(1, 5, 9);
  discover.set(dhcp_option::client_identifier, std::vector<std::uint8_t>{0, 'n', 'o', 'd', 'e'});
  discover.giaddr = ip("10.98.9.254");
  const std::vector<std::uint8_t> agent{1, 4, 'p', 'o', 'r', 't', 2, 2, 0x12, 0x34};  // circuit and remote id
  discover.set(dhcp_option::relay_agent_information, agent);
  auto plan = plan_dhcp_reply(settings, &pools, discover, false, 0);
  REQUIRE(plan.reply);
  REQUIRE(plan.reply->find(dhcp_option::client_identifier));
  CHECK(plan.reply->find(dhcp_option::client_identifier)->data == discover.find(dhcp_option::client_identifier)->data);
  REQUIRE_FALSE(plan.reply->options.empty());
  CHECK(plan.reply->options.back() == DhcpOption{dhcp_option::relay_agent_information, agent});  // RFC 3046: last
  // RFC 2131's 0.875 of 60 s is 52.5: 52, not the 49 of (60 / 8) * 7.
  const DhcpOption* t2 = plan.reply->find(dhcp_option::rebinding_time);
  REQUIRE(t2);
  CHECK(t2->data == std::vector<std::uint8_t>{0, 0, 0, 52});
  // A NAK to a relayed request carries it too.
  auto wrong = request_for(5, ip("10.97.0.10"), 0);
  wrong.giaddr = ip("10.98.9.254");
  wrong.set(dhcp_option::relay_agent_information, agent);
  plan = plan_dhcp_reply(settings, &pools, wrong, false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::nak);
  CHECK(plan.reply->options.back() == DhcpOption{dhcp_option::relay_agent_information, agent});
}

TEST_CASE("dhcp reply plan: options follow the client's option 55 order, after 53 and 54, and before 82", "[dhcp]") {
  // RFC 2132 9.8: the server MUST try to insert the requested options in the order requested.
  auto settings = full_settings();
  attach_bios_boot_policy(settings);
  auto pools = pools_for(settings);
  auto discover = dhcp_request(1, 5, 9);
  discover.set(dhcp_option::parameter_request_list, std::vector<std::uint8_t>{67, 15, 6, 3, 1, 6, 200});
  const std::vector<std::uint8_t> agent{1, 4, 'p', 'o', 'r', 't'};
  discover.giaddr = ip("10.98.9.254");
  discover.set(dhcp_option::relay_agent_information, agent);
  auto plan = plan_dhcp_reply(settings, &pools, discover, false, 0);
  REQUIRE(plan.reply);
  std::vector<std::uint8_t> codes;
  for (const auto& option : plan.reply->options) codes.push_back(option.code);
  REQUIRE(codes.size() >= 8);
  // 53 and 54 first; then 67, 15, 6, 3, 1 as listed (the repeated 6 and the unknown 200 change
  // nothing); then the options not asked for (lease times), in the server's order; 82 last.
  CHECK(std::vector<std::uint8_t>(codes.begin(), codes.begin() + 7) ==
        std::vector<std::uint8_t>{dhcp_option::message_type, dhcp_option::server_identifier, 67, 15, 6, 3, 1});
  CHECK(codes.back() == dhcp_option::relay_agent_information);
  auto lease = std::find(codes.begin(), codes.end(), dhcp_option::lease_time);
  auto t1 = std::find(codes.begin(), codes.end(), dhcp_option::renewal_time);
  CHECK(lease < t1);
  CHECK(lease > codes.begin() + 6);
}

TEST_CASE("dhcp reply plan: a reply fits 576 bytes, or the client's option 57, dropping NTP, domain, DNS first", "[dhcp]") {
  // A long dns/ntp/domain configuration gave a 956-byte OFFER to a client that had said 576.
  auto settings = full_settings();
  for (int i = 0; i < 40; ++i) settings.subnets[0].ntp.push_back(ip("10.98.9.123") + static_cast<std::uint32_t>(i));
  for (int i = 0; i < 30; ++i) settings.subnets[0].dns.push_back(ip("10.98.9.53") + static_cast<std::uint32_t>(i));
  settings.subnets[0].domain = std::string(200, 'd');
  attach_bios_boot_policy(settings);
  auto pools = pools_for(settings);
  auto discover = dhcp_request(1, 8, 10);
  auto plan = plan_dhcp_reply(settings, &pools, discover, false, 0);
  REQUIRE(plan.reply);
  CHECK(dhcp_encoded_size(*plan.reply) == encode_dhcp_packet(*plan.reply).size());
  CHECK(encode_dhcp_packet(*plan.reply).size() <= 548);
  CHECK_FALSE(plan.reply->has(dhcp_option::ntp_servers));
  CHECK(plan.reply->has(dhcp_option::subnet_mask));
  CHECK(plan.reply->has(dhcp_option::router));
  CHECK(plan.reply->has(dhcp_option::lease_time));
  CHECK(plan.reply->has(dhcp_option::bootfile_name));
  CHECK_THAT(plan.log, Catch::Contains("left out: the reply must fit the client's 548-byte limit"));
  // A client that takes 1500-byte datagrams gets everything.
  auto big = dhcp_request(1, 9, 11);
  big.set(dhcp_option::max_message_size, std::vector<std::uint8_t>{0x05, 0xdc});
  CHECK(dhcp_reply_size_limit(big) == 1472);
  plan = plan_dhcp_reply(settings, &pools, big, false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->has(dhcp_option::ntp_servers));
  CHECK(encode_dhcp_packet(*plan.reply).size() > 548);
  // An option 57 below 576 counts as 576 (RFC 2132 9.10: the minimum legal value).
  auto tiny = dhcp_request(1, 9, 12);
  tiny.set(dhcp_option::max_message_size, std::vector<std::uint8_t>{0x01, 0x00});
  CHECK(dhcp_reply_size_limit(tiny) == 548);
}

TEST_CASE("dhcp reply plan: an exhausted pool and a packet that is no request get no reply", "[dhcp]") {
  auto settings = full_settings();
  auto policy = std::make_shared<FakeBootPolicy>();
  settings.boot_policy = policy;
  auto pools = pools_for(settings);
  REQUIRE(plan_dhcp_reply(settings, &pools, dhcp_request(1, 1, 1), false, 0).reply);
  REQUIRE(plan_dhcp_reply(settings, &pools, dhcp_request(1, 2, 2), false, 0).reply);
  auto plan = plan_dhcp_reply(settings, &pools, dhcp_request(1, 3, 3), false, 0);
  CHECK_FALSE(plan.reply);
  CHECK(plan.dropped == DhcpDropReason::no_free_address);
  // Logged as a warning, so written whatever the log level.
  CHECK(plan.log == "DISCOVER from 52:54:00:98:09:03: no free address in the pool 10.98.9.10-10.98.9.11");

  unsigned asked = policy->asked;
  auto reply = dhcp_request(2, 1, 4);
  reply.op = 2;  // another server's OFFER
  plan = plan_dhcp_reply(settings, &pools, reply, false, 0);
  CHECK_FALSE(plan.reply);
  CHECK(plan.dropped == DhcpDropReason::not_for_us);
  auto untyped = dhcp_request(1, 1, 5);
  untyped.erase(dhcp_option::message_type);  // BOOTP, not DHCP
  CHECK(plan_dhcp_reply(settings, &pools, untyped, false, 0).dropped == DhcpDropReason::not_for_us);
  CHECK(policy->asked == asked);  // the policy is not asked about packets that are no request

  auto anonymous = dhcp_request(1, 0, 6);
  anonymous.chaddr = {};  // no option 61 and an all-zero chaddr: no lease could be keyed
  plan = plan_dhcp_reply(settings, &pools, anonymous, false, 0);
  CHECK_FALSE(plan.reply);
  CHECK(plan.dropped == DhcpDropReason::no_client_id);

  CHECK(plan_dhcp_reply(settings, nullptr, dhcp_request(1, 1, 7), false, 0).dropped == DhcpDropReason::not_for_us);
}

TEST_CASE("dhcp reply plan: option 61 tells clients apart, and follows one client across network cards", "[dhcp]") {
  auto settings = full_settings();
  auto pools = pools_for(settings);
  auto with_id = [](std::uint8_t mac_last, std::vector<std::uint8_t> id) {
    auto packet = request_for(mac_last, ip("10.98.9.10"), ip("10.98.9.1"));
    packet.set(dhcp_option::client_identifier, std::move(id));
    return packet;
  };
  // Two clients behind one chaddr (e.g. a PXE ROM and the OS it boots, or containers): two leases.
  auto first = plan_dhcp_reply(settings, &pools, with_id(1, {0xff, 1, 2, 3}), false, 0);
  REQUIRE(first.to_commit);
  CHECK(first.to_commit->client == "id:ff010203");
  pools[0].commit(*first.to_commit);
  auto second = plan_dhcp_reply(settings, &pools, with_id(1, {0xff, 4, 5, 6}), false, 0);
  REQUIRE(second.reply);
  CHECK(second.reply->message_type() == DhcpMessageType::nak);  // 10.98.9.10 is the other client's
  // The first client from another chaddr keeps its lease: the key is the identifier.
  auto moved = plan_dhcp_reply(settings, &pools, with_id(9, {0xff, 1, 2, 3}), false, 10);
  REQUIRE(moved.to_commit);
  CHECK(moved.reply->message_type() == DhcpMessageType::ack);
  CHECK(moved.to_commit->client == "id:ff010203");
  // An identifier that is just htype + chaddr keys the lease by the MAC, as without option 61.
  auto plain = plan_dhcp_reply(settings, &pools, with_id(2, {1, 0x52, 0x54, 0, 0x98, 9, 2}), false, 0);
  REQUIRE(plain.reply);
  CHECK(plain.reply->message_type() == DhcpMessageType::nak);
  auto offer = plan_dhcp_reply(settings, &pools, dhcp_request(1, 2, 3), false, 0);
  REQUIRE(offer.reply);
  CHECK(offer.reply->yiaddr == ip("10.98.9.11"));
}

TEST_CASE("dhcp reply plan: proxy mode answers boot clients only, OFFER on 67 and ACK on 4011", "[dhcp]") {
  DhcpReplySettings settings;
  settings.mode = DhcpMode::proxy;
  settings.server_address = ip("10.98.9.1");
  auto policy = attach_bios_boot_policy(settings);

  auto plan = plan_dhcp_reply(settings, nullptr, dhcp_request(1, 1, 1), false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::offer);
  CHECK(plan.reply->yiaddr == 0);  // the other server gives the address
  CHECK(plan.reply->vendor_class() == "PXEClient");
  CHECK(plan.reply->file == "undionly.kpxe");
  CHECK(plan.reply->server_identifier() == ip("10.98.9.1"));
  CHECK_FALSE(plan.reply->has(dhcp_option::subnet_mask));
  CHECK_FALSE(plan.to_commit);

  // On 67 only DISCOVERs; on 4011 REQUEST and INFORM, answered with an ACK.
  CHECK(plan_dhcp_reply(settings, nullptr, dhcp_request(3, 1, 2), false, 0).dropped == DhcpDropReason::not_for_us);
  CHECK(plan_dhcp_reply(settings, nullptr, dhcp_request(1, 1, 3), true, 0).dropped == DhcpDropReason::not_for_us);
  for (std::uint8_t type : {std::uint8_t{3}, std::uint8_t{8}}) {
    plan = plan_dhcp_reply(settings, nullptr, dhcp_request(type, 1, 4), true, 0);
    REQUIRE(plan.reply);
    CHECK(plan.reply->message_type() == DhcpMessageType::ack);
    CHECK(plan.reply->yiaddr == 0);
  }
  // A vendor class from the boot answer (the Pi's, UEFI HTTP's) is kept.
  policy->answer.vendor_class = "HTTPClient";
  plan = plan_dhcp_reply(settings, nullptr, dhcp_request(1, 1, 5), false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->vendor_class() == "HTTPClient");

  // A client without a boot offer gets nothing in proxy mode: the other server answers it.
  policy->answer = {};
  plan = plan_dhcp_reply(settings, nullptr, dhcp_request(1, 1, 6), false, 0);
  CHECK_FALSE(plan.reply);
  CHECK(plan.dropped == DhcpDropReason::not_for_us);
  // The port 4011 socket of a full-mode server is never opened, but a request on it is planned as proxy.
  auto full = full_settings();
  full.boot_policy = policy;
  policy->answer = bios_boot();
  auto pools = pools_for(full);
  plan = plan_dhcp_reply(full, &pools, dhcp_request(3, 1, 7), true, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->yiaddr == 0);
  CHECK(pools[0].leases().empty());
}

TEST_CASE("dhcp reply plan: relayed requests get an address from the pool of the relay's subnet", "[dhcp]") {
  auto config = full_settings();  // subnets[0]: 10.98.9.0/24, the interface's own
  DhcpSubnet far;
  far.network = *parse_ipv4("10.98.20.0");
  far.netmask = *parse_ipv4("255.255.254.0");
  far.pool.first = *parse_ipv4("10.98.21.10");
  far.pool.last = *parse_ipv4("10.98.21.11");
  far.pool.lease_time = 900;
  far.router = *parse_ipv4("10.98.20.1");
  far.dns = {*parse_ipv4("10.98.20.53")};
  far.ntp = {*parse_ipv4("10.98.20.123"), *parse_ipv4("10.98.20.124")};
  far.domain = "far.example";
  config.subnets.push_back(far);
  auto pools = pools_for(config);

  auto relayed = dhcp_request(1, 7, 300);
  relayed.giaddr = *parse_ipv4("10.98.9.254");  // a relay on the interface's own subnet
  auto plan = plan_dhcp_reply(config, &pools, relayed, false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->giaddr == relayed.giaddr);  // the relay forwards it to the client
  CHECK(plan.reply->yiaddr == *parse_ipv4("10.98.9.10"));

  relayed.giaddr = *parse_ipv4("10.98.20.1");  // a relay on the far subnet
  plan = plan_dhcp_reply(config, &pools, relayed, false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.subnet == 1);
  CHECK(plan.reply->yiaddr == *parse_ipv4("10.98.21.10"));
  CHECK(plan.reply->find(dhcp_option::router)->data == std::vector<std::uint8_t>{10, 98, 20, 1});
  CHECK(plan.reply->find(dhcp_option::subnet_mask)->data == std::vector<std::uint8_t>{255, 255, 254, 0});
  CHECK(plan.reply->find(dhcp_option::dns_server)->data == std::vector<std::uint8_t>{10, 98, 20, 53});
  CHECK(plan.reply->find(dhcp_option::ntp_servers)->data ==
        std::vector<std::uint8_t>{10, 98, 20, 123, 10, 98, 20, 124});
  CHECK(plan.reply->lease_time() == 900u);

  // The far client's REQUEST through the relay is acknowledged from the far pool, and its renewal,
  // unicast straight to us with ciaddr and no giaddr, still finds it there.
  auto req = dhcp_request(3, 7, 301);
  req.giaddr = *parse_ipv4("10.98.20.1");
  req.set_address(dhcp_option::requested_address, *parse_ipv4("10.98.21.10"));
  plan = plan_dhcp_reply(config, &pools, req, false, 0);
  REQUIRE(plan.to_commit);
  CHECK(plan.reply->message_type() == DhcpMessageType::ack);
  pools[plan.subnet].commit(*plan.to_commit);
  auto renew = dhcp_request(3, 7, 302);
  renew.ciaddr = *parse_ipv4("10.98.21.10");
  plan = plan_dhcp_reply(config, &pools, renew, false, 10);
  REQUIRE(plan.reply);
  CHECK(plan.reply->message_type() == DhcpMessageType::ack);
  CHECK(plan.subnet == 1);

  relayed.giaddr = *parse_ipv4("192.168.7.1");  // no pool for that subnet
  auto foreign = plan_dhcp_reply(config, &pools, relayed, false, 0);
  CHECK_FALSE(foreign.reply);
  CHECK(foreign.dropped == DhcpDropReason::no_subnet);
  CHECK(foreign.log.find("no pool for that subnet") != std::string::npos);
}

TEST_CASE("dhcp reply plan: the log line names the request, the outcome and the boot answer", "[dhcp]") {
  InfoLogging info;
  auto settings = full_settings();
  auto policy = attach_bios_boot_policy(settings);
  auto pools = pools_for(settings);
  auto discover = dhcp_request(1, 1, 1);
  discover.giaddr = ip("10.98.9.254");
  CHECK(plan_dhcp_reply(settings, &pools, discover, false, 0).log ==
        "DISCOVER from 52:54:00:98:09:01 via relay 10.98.9.254 -> OFFER 10.98.9.10 boot=bios file=undionly.kpxe");
  CHECK(plan_dhcp_reply(settings, &pools, request_for(1, ip("10.98.9.10"), ip("10.98.9.1")), false, 0).log ==
        "REQUEST from 52:54:00:98:09:01 -> ACK 10.98.9.10 boot=bios file=undionly.kpxe");
  CHECK(plan_dhcp_reply(settings, &pools, request_for(2, ip("10.98.9.99"), ip("10.98.9.1")), false, 0).log ==
        "REQUEST from 52:54:00:98:09:02 for 10.98.9.99 -> NAK");
  CHECK(plan_dhcp_reply(settings, &pools, request_for(2, ip("10.98.9.11"), ip("10.98.9.2")), false, 0).log ==
        "REQUEST from 52:54:00:98:09:02 chose server 10.98.9.2, not us");
  policy->answer = {};
  policy->answer.reason = "not a boot client";
  CHECK(plan_dhcp_reply(settings, &pools, dhcp_request(8, 3, 2), false, 0).log ==
        "INFORM from 52:54:00:98:09:03 -> ACK (INFORM) (no boot offer: not a boot client)");
  settings.mode = DhcpMode::proxy;
  CHECK(plan_dhcp_reply(settings, nullptr, dhcp_request(1, 3, 3), false, 0).log ==
        "DISCOVER from 52:54:00:98:09:03 ignored (no boot offer: not a boot client)");
}
