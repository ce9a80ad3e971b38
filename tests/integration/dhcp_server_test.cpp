// The DHCP server over loopback (no interface: replies go back to the sender, nothing is broadcast):
// full-mode DORA with the lease on disk before the ACK, malformed packets and a one-MAC flood dropped
// and counted while the server keeps answering, and leases read back after a restart.
#include "netboot/dhcp_server.hpp"

#include <poll.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/test_support.hpp"

using namespace aggrik8s;
using namespace aggrik8s::netboot;
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
  config.pool.first = *parse_ipv4("10.98.9.10");
  config.pool.last = *parse_ipv4("10.98.9.20");
  config.pool.server = config.server_address;
  config.lease_file = lease_file;
  config.max_requests_per_mac_per_second = 5;
  return config;
}

DhcpPacket request(std::uint8_t type, std::uint8_t mac_last, std::uint32_t xid) {
  DhcpPacket packet;
  packet.xid = xid;
  packet.chaddr = {0x52, 0x54, 0, 0x98, 9, mac_last};
  packet.set(dhcp_option::message_type, std::vector<std::uint8_t>{type});
  return packet;
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
    client.send(encode_dhcp_packet(request(1, 1, 100)));
    auto offer = client.receive();
    REQUIRE(offer);
    CHECK(offer->message_type() == DhcpMessageType::offer);
    CHECK(offer->xid == 100);
    CHECK(offer->yiaddr == *parse_ipv4("10.98.9.10"));
    auto req = request(3, 1, 101);
    req.set_address(dhcp_option::requested_address, offer->yiaddr);
    req.set_address(dhcp_option::server_identifier, *parse_ipv4("127.0.0.1"));
    client.send(encode_dhcp_packet(req));
    auto ack = client.receive();
    REQUIRE(ack);
    CHECK(ack->message_type() == DhcpMessageType::ack);
    granted = ack->yiaddr;
    CHECK(read_lease_text(lease_file).find("52:54:00:98:09:01 10.98.9.10 ") != std::string::npos);
    // Another client asking for the same address is refused.
    auto other = request(3, 2, 102);
    other.set_address(dhcp_option::requested_address, granted);
    client.send(encode_dhcp_packet(other));
    auto nak = client.receive();
    REQUIRE(nak);
    CHECK(nak->message_type() == DhcpMessageType::nak);
  }
  Running restarted(full_config(lease_file));
  Client client(restarted.server->local_endpoint().port());
  client.send(encode_dhcp_packet(request(1, 3, 200)));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->yiaddr != granted);  // the lease read back from disk is not handed out again
}

TEST_CASE("dhcp server: malformed packets and a one-MAC flood are dropped and counted while serving goes on", "[dhcp]") {
  TempDir dir;
  Running server(full_config(dir.path() / "leases"));
  Client client(server.server->local_endpoint().port());
  client.send(std::vector<std::uint8_t>(12, 1));
  auto bad_cookie = encode_dhcp_packet(request(1, 4, 1));
  bad_cookie[236] = 0;
  client.send(bad_cookie);
  for (std::uint32_t i = 0; i < 30; ++i) client.send(encode_dhcp_packet(request(1, 5, 1000 + i)));
  int replies = 0;
  while (client.receive(300)) ++replies;
  CHECK(replies <= 6);  // within one second at most 5 pass (two if the second boundary falls inside)
  CHECK(replies >= 1);
  client.send(encode_dhcp_packet(request(1, 6, 7)));
  auto offer = client.receive();
  REQUIRE(offer);
  CHECK(offer->xid == 7);
  auto counters = server.server->counters();
  CHECK(counters.malformed == 2);
  CHECK(counters.flood_dropped >= 20);
}

TEST_CASE("dhcp server: relayed requests are answered through the relay, only for the pool's subnet", "[dhcp]") {
  TempDir dir;
  auto config = full_config(dir.path() / "leases");
  config.server_address = *parse_ipv4("10.98.9.1");
  DhcpLeasePool pool(config.pool);
  auto relayed = request(1, 7, 300);
  relayed.giaddr = *parse_ipv4("10.98.9.254");
  auto plan = plan_dhcp_reply(config, &pool, relayed, false, 0);
  REQUIRE(plan.reply);
  CHECK(plan.reply->giaddr == relayed.giaddr);  // the relay forwards it to the client
  relayed.giaddr = *parse_ipv4("192.168.7.1");
  auto foreign = plan_dhcp_reply(config, &pool, relayed, false, 0);
  CHECK_FALSE(foreign.reply);
  CHECK(foreign.log.find("no pool for that subnet") != std::string::npos);
}
