// The DHCP server over loopback (no interface: replies go back to the sender, nothing is broadcast):
// full-mode DORA with the lease on disk before the ACK, malformed packets and a one-MAC flood dropped
// and counted (by reason and by message type) while the server keeps answering, leases read back
// after a restart; and group commit: OFFERs and NAKs answered while the journal's fdatasync is held
// back by a test hook, the ACK only after it, and a failed sync answered by no ACK and a rewrite.
// The reply decisions themselves (relayed subnets among them) are unit-tested without sockets in
// tests/unit/netboot/dhcp/dhcp_reply_plan_test.cpp; the relayed exchange over a real network is in
// tests/e2e/dhcp_full_mode.sh (a reply to giaddr cannot stay on loopback).
#include "netboot/dhcp/dhcp_server.hpp"

#include <poll.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "tests/dhcp_test_packets.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;
using aggrik8s::test::dhcp_request;
using aggrik8s::test::TempDir;
namespace asio = boost::asio;
using udp = asio::ip::udp;

namespace {

struct Running {
  asio::io_context io;
  std::unique_ptr<DhcpServer> server;
  std::thread thread;
  explicit Running(DhcpServerConfig config) {
    server = std::make_unique<DhcpServer>(io, std::move(config));
    server->start();
    thread = std::thread([this] { io.run(); });
  }
  ~Running() {
    server->stop();
    thread.join();
  }
};

DhcpServerConfig full_config(const std::filesystem::path& lease_file) {
  DhcpServerConfig config;
  config.mode = DhcpMode::full;
  config.port = 0;  // ephemeral: the test talks to it over 127.0.0.1
  config.server_address = *parse_ipv4("127.0.0.1");
  DhcpSubnet subnet;
  subnet.network = *parse_ipv4("10.98.9.0");
  subnet.pool.first = *parse_ipv4("10.98.9.10");
  subnet.pool.last = *parse_ipv4("10.98.9.20");
  subnet.pool.server = config.server_address;
  config.subnets.push_back(subnet);
  config.lease_file = lease_file;
  config.max_requests_per_mac_per_second = 5;
  return config;
}


struct Client {
  asio::io_context io;
  udp::socket socket{io, udp::endpoint(asio::ip::address_v4::loopback(), 0)};
  udp::endpoint server;
  explicit Client(std::uint16_t port) : server(asio::ip::address_v4::loopback(), port) {}
  void send(const std::vector<std::uint8_t>& bytes) { socket.send_to(asio::buffer(bytes), server); }
  std::optional<DhcpPacket> receive(int timeout_ms = 2000) {
    pollfd fd{socket.native_handle(), POLLIN, 0};
    if (::poll(&fd, 1, timeout_ms) <= 0) return std::nullopt;
    std::vector<std::uint8_t> buffer(1500);
    std::size_t size = socket.receive(asio::buffer(buffer));
    return parse_dhcp_packet(std::span<const std::uint8_t>(buffer.data(), size));
  }
};

std::string read_lease_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("dhcp server: DISCOVER/OFFER/REQUEST/ACK over loopback, lease on disk, survives restart", "[dhcp]") {
  TempDir dir;
  auto lease_file = dir.path() / "leases";
  std::uint32_t granted = 0;
  {
    Running server(full_config(lease_file));
    Client client(server.server->local_endpoint().port());
    client.send(encode_dhcp_packet(dhcp_request(1, 1, 100)));
    auto offer = client.receive();
    REQUIRE(offer);
    CHECK(offer->message_type() == DhcpMessageType::offer);
    CHECK(offer->xid == 100);
    CHECK(offer->yiaddr == *parse_ipv4("10.98.9.10"));
    auto req = dhcp_request(3, 1, 101);
    req.set_address(dhcp_option::requested_address, offer->yiaddr);
    req.set_address(dhcp_option::server_identifier, *parse_ipv4("127.0.0.1"));
    client.send(encode_dhcp_packet(req));
    auto ack = client.receive();
    REQUIRE(ack);
    CHECK(ack->message_type() == DhcpMessageType::ack);
    granted = ack->yiaddr;
    CHECK(read_lease_text(lease_file).find("52:54:00:98:09:01 10.98.9.10 ") != std::string::npos);
    // Another client asking for the same address is refused.
    auto other = dhcp_request(3, 2, 102);
    other.set_address(dhcp_option::requested_address, granted);
    other.set_address(dhcp_option::server_identifier, *parse_ipv4("127.0.0.1"));
    client.send(encode_dhcp_packet(other));
    auto nak = client.receive();
    REQUIRE(nak);
    CHECK(nak->message_type() == DhcpMessageType::nak);
  }
  Running restarted(full_config(lease_file));
  Client client(restarted.server->local_endpoint().port());
  client.send(encode_dhcp_packet(dhcp_request(1, 3, 200)));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->yiaddr != granted);  // the lease read back from disk is not handed out again
}

TEST_CASE("dhcp server: malformed packets and a one-MAC flood are dropped and counted while serving goes on", "[dhcp]") {
  TempDir dir;
  Running server(full_config(dir.path() / "leases"));
  Client client(server.server->local_endpoint().port());
  client.send(std::vector<std::uint8_t>(12, 1));
  auto bad_cookie = encode_dhcp_packet(dhcp_request(1, 4, 1));
  bad_cookie[236] = 0;
  client.send(bad_cookie);
  for (std::uint32_t i = 0; i < 30; ++i) client.send(encode_dhcp_packet(dhcp_request(1, 5, 1000 + i)));
  int replies = 0;
  while (client.receive(300)) ++replies;
  CHECK(replies <= 6);  // within one second at most 5 pass (two if the second boundary falls inside)
  CHECK(replies >= 1);
  client.send(encode_dhcp_packet(dhcp_request(1, 6, 7)));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->xid == 7);
  auto counters = server.server->counters();
  CHECK(counters.dropped_for(DhcpDropReason::malformed) == 2);
  CHECK(counters.dropped_for(DhcpDropReason::flood) >= 20);
  CHECK(counters.received == 33);
  CHECK(counters.received_by_type[1] == 31);  // DISCOVERs
  CHECK(counters.received_by_type[0] == 2);   // the malformed ones
  CHECK(counters.offers == static_cast<std::uint64_t>(replies) + 1);
}

namespace {

// Holds the journal's thread inside before_journal_sync (between its write and its fdatasync) until
// the test opens it: a disk as slow as the test wants, deterministically.
struct SyncGate {
  std::mutex mutex;
  std::condition_variable changed;
  unsigned entered = 0;
  bool open = false;
  void hold() {
    std::unique_lock lock(mutex);
    ++entered;
    changed.notify_all();
    changed.wait(lock, [this] { return open; });
  }
  bool wait_entered(unsigned count) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, std::chrono::seconds(5), [&] { return entered >= count; });
  }
  void release() {
    std::lock_guard lock(mutex);
    open = true;
    changed.notify_all();
  }
};
// Declared after the server: opens the gate even when a REQUIRE fails, or stop() would wait forever.
struct GateOpener {
  SyncGate& gate;
  ~GateOpener() { gate.release(); }
};

template <typename Predicate>
bool eventually(Predicate predicate) {
  for (int i = 0; i < 500; ++i) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return predicate();
}

}  // namespace

TEST_CASE("dhcp server: OFFERs and NAKs go out while the journal syncs, the ACK only once its lease is durable", "[dhcp]") {
  TempDir dir;
  auto lease_file = dir.path() / "leases";
  auto config = full_config(lease_file);
  SyncGate gate;
  config.before_journal_sync = [&gate] { gate.hold(); };
  Running server(std::move(config));
  GateOpener opener{gate};
  Client client(server.server->local_endpoint().port());
  auto server_id = *parse_ipv4("127.0.0.1");

  client.send(encode_dhcp_packet(dhcp_request(1, 1, 10)));
  auto offer = client.receive();
  REQUIRE(offer);
  std::uint32_t first = offer->yiaddr;
  auto req = dhcp_request(3, 1, 11);
  req.set_address(dhcp_option::requested_address, first);
  req.set_address(dhcp_option::server_identifier, server_id);
  client.send(encode_dhcp_packet(req));
  REQUIRE(gate.wait_entered(1));  // the lease line is written; its fdatasync is held back
  CHECK_FALSE(client.receive(300));  // no ACK before the sync

  // Meanwhile another client is offered an address, not the one waiting for the disk ...
  client.send(encode_dhcp_packet(dhcp_request(1, 2, 20)));
  auto second = client.receive();
  REQUIRE(second);
  CHECK(second->xid == 20);
  CHECK(second->message_type() == DhcpMessageType::offer);
  CHECK(second->yiaddr != first);
  // ... and a third asking for that address is refused at once: taken in memory before it is durable.
  auto grab = dhcp_request(3, 3, 30);
  grab.set_address(dhcp_option::requested_address, first);
  grab.set_address(dhcp_option::server_identifier, server_id);
  client.send(encode_dhcp_packet(grab));
  auto nak = client.receive();
  REQUIRE(nak);
  CHECK(nak->xid == 30);
  CHECK(nak->message_type() == DhcpMessageType::nak);
  auto held = server.server->counters();
  CHECK(held.acks == 0);
  CHECK(held.journal_appends == 0);
  CHECK(held.offers == 2);
  CHECK(held.naks == 1);

  gate.release();
  auto ack = client.receive();
  REQUIRE(ack);
  CHECK(ack->xid == 11);
  CHECK(ack->message_type() == DhcpMessageType::ack);
  CHECK(ack->yiaddr == first);
  CHECK(read_lease_text(lease_file).find("52:54:00:98:09:01 10.98.9.10 ") != std::string::npos);
  auto after = server.server->counters();
  CHECK(after.acks == 1);
  CHECK(after.journal_appends == 1);
}

TEST_CASE("dhcp server: a failed journal sync sends no ACK, the file is rewritten and the retry is acknowledged", "[dhcp]") {
  TempDir dir;
  auto lease_file = dir.path() / "leases";
  auto config = full_config(lease_file);
  std::atomic<int> syncs{0};
  // Throwing where the fdatasync would fail: the journal treats both alike.
  config.before_journal_sync = [&syncs] {
    if (++syncs == 1) throw std::runtime_error("simulated fdatasync failure");
  };
  Running server(std::move(config));
  Client client(server.server->local_endpoint().port());
  client.send(encode_dhcp_packet(dhcp_request(1, 4, 40)));
  auto offer = client.receive();
  REQUIRE(offer);
  auto req = dhcp_request(3, 4, 41);
  req.set_address(dhcp_option::requested_address, offer->yiaddr);
  req.set_address(dhcp_option::server_identifier, *parse_ipv4("127.0.0.1"));
  client.send(encode_dhcp_packet(req));
  CHECK_FALSE(client.receive(300));
  // The start-up rewrite, then the one that repairs the journal after the failure.
  REQUIRE(eventually([&] { return server.server->counters().journal_compactions == 2; }));
  CHECK(server.server->counters().dropped_for(DhcpDropReason::lease_file) == 1);
  CHECK(server.server->counters().acks == 0);
  // The rewrite comes from the pool, which holds the unacknowledged lease (kept for its client).
  CHECK(read_lease_text(lease_file).find("52:54:00:98:09:04 10.98.9.10 ") != std::string::npos);

  req.xid = 42;
  client.send(encode_dhcp_packet(req));
  auto ack = client.receive();
  REQUIRE(ack);
  CHECK(ack->xid == 42);
  CHECK(ack->message_type() == DhcpMessageType::ack);
  CHECK(ack->yiaddr == offer->yiaddr);
  CHECK(server.server->counters().journal_appends == 1);
}

namespace {
// A DISCOVER then a REQUEST of what it offered; the ACKed address, or nullopt.
std::optional<std::uint32_t> lease_for(Client& client, DhcpPacket packet, std::uint32_t xid) {
  packet.xid = xid;
  packet.set(dhcp_option::message_type, std::vector<std::uint8_t>{1});
  client.send(encode_dhcp_packet(packet));
  auto offer = client.receive();
  if (!offer || offer->message_type() != DhcpMessageType::offer) return std::nullopt;
  packet.xid = xid + 1;
  packet.set(dhcp_option::message_type, std::vector<std::uint8_t>{3});
  packet.set_address(dhcp_option::requested_address, offer->yiaddr);
  packet.set_address(dhcp_option::server_identifier, *parse_ipv4("127.0.0.1"));
  client.send(encode_dhcp_packet(packet));
  auto ack = client.receive();
  if (!ack || ack->message_type() != DhcpMessageType::ack) return std::nullopt;
  return ack->yiaddr;
}
}  // namespace

TEST_CASE("dhcp server: clients keyed by option 61, clients with neither it nor a chaddr refused", "[dhcp]") {
  TempDir dir;
  auto lease_file = dir.path() / "leases";
  std::uint32_t first = 0, second = 0;
  auto with_id = [](std::uint8_t id) {
    DhcpPacket packet = dhcp_request(1, 0, 0);
    packet.hlen = 0;  // no usable chaddr: told apart by option 61 alone
    packet.chaddr = {};
    packet.set(dhcp_option::client_identifier, std::vector<std::uint8_t>{0xff, 0xaa, id});
    return packet;
  };
  {
    Running server(full_config(lease_file));
    Client client(server.server->local_endpoint().port());
    auto a = lease_for(client, with_id(1), 500);
    auto b = lease_for(client, with_id(2), 510);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(*a != *b);  // before: both keyed "" and sharing one lease
    first = *a;
    second = *b;
    // hlen 0 and no option 61, or an all-zero MAC: dropped, counted, no reply.
    DhcpPacket anonymous = dhcp_request(1, 0, 520);
    anonymous.hlen = 0;
    client.send(encode_dhcp_packet(anonymous));
    DhcpPacket zero = dhcp_request(1, 0, 521);
    zero.chaddr = {};
    client.send(encode_dhcp_packet(zero));
    CHECK_FALSE(client.receive(300));
    CHECK(server.server->counters().dropped_for(DhcpDropReason::no_client_id) == 2);
    auto text = read_lease_text(lease_file);
    CHECK(text.find("id:ffaa01 " + ipv4_to_string(first) + " ") != std::string::npos);
    CHECK(text.find("id:ffaa02 " + ipv4_to_string(second) + " ") != std::string::npos);
  }
  // The client id is read back: after a restart each client is offered its own address again.
  Running restarted(full_config(lease_file));
  Client client(restarted.server->local_endpoint().port());
  auto again = with_id(2);
  again.xid = 530;
  client.send(encode_dhcp_packet(again));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->yiaddr == second);
}

TEST_CASE("dhcp server: a datagram truncated on receipt is dropped, not parsed as the prefix", "[dhcp]") {
  TempDir dir;
  Running server(full_config(dir.path() / "leases"));
  Client client(server.server->local_endpoint().port());
  // A DISCOVER followed by zeros up to 2000 bytes: its first 1500 bytes (all the server's buffer takes)
  // parse as a whole packet, which the server answered before.
  auto bytes = encode_dhcp_packet(dhcp_request(1, 9, 600));
  bytes.resize(2000, 0);
  REQUIRE_NOTHROW(parse_dhcp_packet(std::span<const std::uint8_t>(bytes.data(), 1500)));
  client.send(bytes);
  CHECK_FALSE(client.receive(300));
  CHECK(server.server->counters().dropped_for(DhcpDropReason::malformed) == 1);
  client.send(encode_dhcp_packet(dhcp_request(1, 9, 601)));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->xid == 601);
}

TEST_CASE("dhcp server: after a RELEASE the client's next DISCOVER is offered its released address", "[dhcp]") {
  TempDir dir;
  Running server(full_config(dir.path() / "leases"));
  Client client(server.server->local_endpoint().port());
  auto granted = lease_for(client, dhcp_request(1, 1, 0), 700);
  REQUIRE(granted);
  auto release = dhcp_request(7, 1, 702);
  release.ciaddr = *granted;
  release.set_address(dhcp_option::server_identifier, *parse_ipv4("127.0.0.1"));
  client.send(encode_dhcp_packet(release));
  // Another client comes first: it gets a never-used address, not the released one.
  auto other = lease_for(client, dhcp_request(1, 2, 0), 710);
  REQUIRE(other);
  CHECK(*other != *granted);
  client.send(encode_dhcp_packet(dhcp_request(1, 1, 720)));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->yiaddr == *granted);
}

TEST_CASE("dhcp server: a lease file whose last line was torn by a crash is read without it, and rewritten", "[dhcp]") {
  TempDir dir;
  auto lease_file = dir.path() / "leases";
  {
    std::ofstream out(lease_file);
    out << "52:54:00:98:09:01 10.98.9.10 4000000000\n52:54:00:98:09:02 10.98.9.1";  // cut in mid-write
  }
  Running server(full_config(lease_file));
  auto text = read_lease_text(lease_file);
  CHECK(text.find("52:54:00:98:09:01 10.98.9.10 4000000000\n") != std::string::npos);
  CHECK(text.find("52:54:00:98:09:02") == std::string::npos);
  Client client(server.server->local_endpoint().port());
  client.send(encode_dhcp_packet(dhcp_request(1, 2, 800)));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->yiaddr == *parse_ipv4("10.98.9.11"));  // .10 is still 09:01's
}

namespace {

// Records what the server tells a boot policy about leases.
struct LeaseWatcher : DhcpBootPolicy {
  std::mutex mutex;
  std::vector<std::pair<std::uint32_t, std::int64_t>> leased_addresses;  // address, expiry
  std::vector<std::uint32_t> ended;
  DhcpBootAnswer boot_answer(const DhcpPacket&) override { return {}; }
  void leased(const DhcpPacket&, const DhcpLease& lease) override {
    std::lock_guard lock(mutex);
    leased_addresses.emplace_back(lease.address, lease.expires);
  }
  void lease_ended(std::uint32_t address) override {
    std::lock_guard lock(mutex);
    ended.push_back(address);
  }
};

}  // namespace

TEST_CASE("dhcp server: the boot policy hears of a lease with its expiry, and of its RELEASE", "[dhcp]") {
  // The netboot service ties a node to its leased address for its secrets: only while the lease lasts.
  TempDir dir;
  auto config = full_config(dir.path() / "leases");
  auto watcher = std::make_shared<LeaseWatcher>();
  config.boot_policy = watcher;
  Running server(std::move(config));
  Client client(server.server->local_endpoint().port());
  const auto before = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  auto granted = lease_for(client, dhcp_request(1, 1, 0), 800);
  REQUIRE(granted);
  {
    std::lock_guard lock(watcher->mutex);
    REQUIRE(watcher->leased_addresses.size() == 1);
    CHECK(watcher->leased_addresses[0].first == *granted);
    CHECK(watcher->leased_addresses[0].second > before);
  }
  auto release = dhcp_request(7, 1, 802);
  release.ciaddr = *granted;
  release.set_address(dhcp_option::server_identifier, *parse_ipv4("127.0.0.1"));
  client.send(encode_dhcp_packet(release));
  bool heard = false;
  for (int i = 0; i < 1000 && !heard; ++i) {  // a RELEASE gets no reply: wait for the hook (10 s at most)
    {
      std::lock_guard lock(watcher->mutex);
      heard = watcher->ended == std::vector<std::uint32_t>{*granted};
    }
    if (!heard) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(heard);
}
