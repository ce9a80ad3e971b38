// The TFTP server in-process on 127.0.0.1, against the real clients boot set-ups meet (tftp-hpa, atftp,
// curl, busybox) and a raw UDP client for what those cannot do on purpose (probe, duplicate ACKs,
// vanishing, garbage).
#include "netboot/tftp/tftp_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "core/file_descriptor.hpp"
#include "tests/test_support.hpp"

using namespace aggrik8s::netboot;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using aggrik8s::test::random_bytes;
using aggrik8s::test::run;
using aggrik8s::test::TempDir;

namespace {

class RecordingObserver : public TftpServerObserver {
 public:
  void transfer_started(const TftpTransferStarted& event) override {
    std::lock_guard lock(mutex_);
    started_.push_back(event);
    threads_.push_back(std::this_thread::get_id());
  }
  void transfer_finished(const TftpTransferEnded& event) override { record(event); }
  void transfer_failed(const TftpTransferEnded& event) override { record(event); }

  // The events once `count` transfers have ended, or whatever there is after `timeout`.
  std::vector<TftpTransferEnded> wait_for_ended(std::size_t count, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return ended_.size() >= count; });
    return ended_;
  }
  std::vector<TftpTransferStarted> started() {
    std::lock_guard lock(mutex_);
    return started_;
  }
  // The thread each callback ran on.
  std::vector<std::thread::id> threads() {
    std::lock_guard lock(mutex_);
    return threads_;
  }

 private:
  void record(const TftpTransferEnded& event) {
    std::lock_guard lock(mutex_);
    ended_.push_back(event);
    threads_.push_back(std::this_thread::get_id());
    changed_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::thread::id> threads_;
  std::vector<TftpTransferStarted> started_;
  std::vector<TftpTransferEnded> ended_;
};

// The server on its own io_context thread, stopped and joined on destruction.
class RunningServer {
 public:
  explicit RunningServer(const fs::path& root, std::chrono::milliseconds retransmit_timeout = 1000ms,
                         unsigned max_retransmits = 5,
                         const std::function<void(TftpServerConfig&)>& customize = {}) {
    TftpServerConfig config;
    config.listen = {boost::asio::ip::address_v4::loopback(), 0};
    config.root = root;
    config.retransmit = {retransmit_timeout, retransmit_timeout * 8, max_retransmits};
    config.limits.max_windowsize = 64;
    config.observer = observer;
    if (customize) customize(config);
    server_ = std::make_unique<TftpServer>(io_, config);
    server_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningServer() {
    server_->stop();
    thread_.join();
  }
  std::uint16_t port() const { return server_->local_endpoint().port(); }
  std::thread::id io_thread() const { return thread_.get_id(); }
  std::string port_text() const { return std::to_string(port()); }
  TftpServerCounters counters() const { return server_->counters(); }
  void stop() { server_->stop(); }
  bool joins_within(std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (io_.stopped()) {
        return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  std::shared_ptr<RecordingObserver> observer = std::make_shared<RecordingObserver>();

 private:
  boost::asio::io_context io_;
  std::unique_ptr<TftpServer> server_;
  std::thread thread_;
};

// A UDP socket on 127.0.0.1 speaking TFTP by hand.
class RawClient {
 public:
  RawClient() : fd_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_);
    sockaddr_in local = loopback(0);
    REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  }

  void send_bytes(std::uint16_t port, const std::vector<std::uint8_t>& datagram) {
    sockaddr_in to = loopback(port);
    REQUIRE(::sendto(fd_.get(), datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
            static_cast<ssize_t>(datagram.size()));
  }
  void send(std::uint16_t port, const TftpPacket& packet) { send_bytes(port, encode_tftp_packet(packet)); }

  struct Received {
    TftpPacket packet;
    std::uint16_t from_port = 0;
  };
  std::optional<Received> receive(std::chrono::milliseconds timeout = 3000ms) {
    pollfd poll_fd{fd_.get(), POLLIN, 0};
    if (::poll(&poll_fd, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    std::vector<std::uint8_t> buffer(65536);
    sockaddr_in from{};
    socklen_t from_size = sizeof from;
    ssize_t size = ::recvfrom(fd_.get(), buffer.data(), buffer.size(), 0, reinterpret_cast<sockaddr*>(&from), &from_size);
    REQUIRE(size >= 0);
    buffer.resize(static_cast<std::size_t>(size));
    return Received{parse_tftp_packet(buffer), ntohs(from.sin_port)};
  }

  // Receives until the socket stays quiet for `quiet`.
  std::vector<Received> drain(std::chrono::milliseconds quiet) {
    std::vector<Received> all;
    while (auto next = receive(quiet)) all.push_back(std::move(*next));
    return all;
  }

 private:
  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
  }
  aggrik8s::FileDescriptor fd_;
};

TftpRequest read_request(const std::string& filename, std::vector<TftpOption> options = {}) {
  return TftpRequest{false, filename, TftpMode::octet, std::move(options)};
}

TftpErrorPacket expect_error(RawClient& client, std::uint16_t port, const TftpPacket& request) {
  client.send(port, request);
  auto reply = client.receive();
  REQUIRE(reply);
  auto* error = std::get_if<TftpErrorPacket>(&reply->packet);
  REQUIRE(error != nullptr);
  return *error;
}

// Commands are bounded so a wedged client fails the test instead of hanging it.
std::string bounded(const std::string& command) { return "timeout 60 " + command; }

}  // namespace

TEST_CASE("tftp server: real clients download byte-identical files", "[tftp][server]") {
  TempDir dir;
  std::string content = random_bytes(3'000'000 + 77, 1);
  aggrik8s::test::write_file(dir / "root/boot/kernel.img", content);
  aggrik8s::test::write_file(dir / "root/exact.bin", random_bytes(512 * 8, 2));  // ends with an empty block
  aggrik8s::test::write_file(dir / "root/empty", "");
  std::string text = "console=ttyS0\nroot=/dev/nfs\r\nbare\rcr\n";
  aggrik8s::test::write_file(dir / "root/cmdline.txt", text);
  RunningServer server(dir / "root");
  std::string host = "127.0.0.1 " + server.port_text();
  fs::path out = dir / "out";
  fs::create_directories(out);

  struct Download {
    std::string name;
    std::string command;
    fs::path output;
  };
  std::vector<Download> downloads = {
      {"tftp-hpa lockstep 512", "tftp -m binary " + host + " -c get /boot/kernel.img " + (out / "hpa").string(),
       out / "hpa"},
      {"atftp blksize 1468 windowsize 16",
       "atftp --option 'blksize 1468' --option 'windowsize 16' -g -r boot/kernel.img -l " + (out / "atftp").string() +
           " " + host,
       out / "atftp"},
      {"curl blksize 1468", "curl -sS tftp://127.0.0.1:" + server.port_text() +
                                "/boot/kernel.img --tftp-blksize 1468 -o " + (out / "curl").string(),
       out / "curl"},
      {"busybox blksize 1468",
       "busybox tftp -g -r boot/kernel.img -l " + (out / "busybox").string() + " -b 1468 " + host, out / "busybox"},
  };
  for (const auto& download : downloads) {
    INFO(download.name);
    auto result = run(bounded(download.command));
    INFO(result.output);
    CHECK(result.exit_code == 0);
    CHECK(aggrik8s::test::read_file(download.output) == content);
  }

  auto exact = run(bounded("tftp -m binary " + host + " -c get exact.bin " + (out / "exact").string()));
  CHECK(aggrik8s::test::read_file(out / "exact") == random_bytes(512 * 8, 2));
  auto empty = run(bounded("atftp -g -r empty -l " + (out / "empty").string() + " " + host));
  CHECK(empty.exit_code == 0);
  CHECK(fs::file_size(out / "empty") == 0);

  // netascii: LF goes out as CR LF and CR as CR NUL; the client turns them back.
  auto ascii = run(bounded("tftp -m netascii " + host + " -c get cmdline.txt " + (out / "text").string()));
  INFO(ascii.output);
  CHECK(aggrik8s::test::read_file(out / "text") == text);

  auto events = server.observer->wait_for_ended(7);
  REQUIRE(events.size() == 7);
  CHECK(events.back().bytes_sent == text.size() + 5);  // three LF and two CR gained a byte each
  CHECK(server.counters().completed == 7);
  CHECK(server.counters().failed == 0);
  REQUIRE(server.observer->started().size() >= 4);
  CHECK(server.observer->started()[1].windowsize == 16);
  CHECK(server.observer->started()[1].blksize == 1468);
}

TEST_CASE("tftp server: a 40 MiB file crosses the block number rollover at 512-byte blocks", "[tftp][server]") {
  TempDir dir;
  std::string content = random_bytes(40 * 1024 * 1024 + 100, 3);  // 81921 blocks of 512 bytes
  aggrik8s::test::write_file(dir / "root/initrd.img", content);
  RunningServer server(dir / "root");
  std::string host = "127.0.0.1 " + server.port_text();

  auto lockstep = run(bounded("tftp -m binary " + host + " -c get initrd.img " + (dir / "hpa").string()));
  INFO(lockstep.output);
  CHECK(aggrik8s::test::read_file(dir / "hpa") == content);

  auto windowed = run(bounded("atftp --option 'windowsize 32' -g -r initrd.img -l " + (dir / "atftp").string() +
                              " " + host));
  INFO(windowed.output);
  CHECK(aggrik8s::test::read_file(dir / "atftp") == content);
  CHECK(server.counters().completed == 2);
}

TEST_CASE("tftp server: traversal, absolute paths, symlink escapes and writes are refused with an ERROR", "[tftp][server]") {
  TempDir dir;
  aggrik8s::test::write_file(dir / "secret", "do not serve");
  fs::permissions(dir / "secret", fs::perms::owner_read | fs::perms::owner_write);  // not world-readable
  aggrik8s::test::write_file(dir / "root/ok.txt", "ok");
  fs::create_symlink(dir / "secret", dir / "root/link-out");
  RunningServer server(dir / "root");
  RawClient client;

  CHECK(expect_error(client, server.port(), read_request("../secret")).code == TftpErrorCode::access_violation);
  CHECK(expect_error(client, server.port(), read_request("a/../../secret")).code == TftpErrorCode::access_violation);
  CHECK(expect_error(client, server.port(), read_request("link-out")).code == TftpErrorCode::access_violation);
  // An absolute name is read inside the root, so /etc/passwd is simply not there.
  CHECK(expect_error(client, server.port(), read_request("/etc/passwd")).code == TftpErrorCode::file_not_found);
  CHECK(expect_error(client, server.port(), read_request("missing.bin")).code == TftpErrorCode::file_not_found);
  // A file named as a directory is not the file (POSIX ENOTDIR; tftp-hpa answers "File not found").
  CHECK(expect_error(client, server.port(), read_request("ok.txt/")).code == TftpErrorCode::file_not_found);
  TftpRequest write{true, "ok.txt", TftpMode::octet, {}};
  CHECK(expect_error(client, server.port(), write).code == TftpErrorCode::access_violation);
  auto malformed = encode_tftp_packet(read_request("x"));
  malformed.resize(malformed.size() - 1);  // mode without its NUL
  client.send_bytes(server.port(), malformed);
  auto reply = client.receive();
  REQUIRE(reply);
  CHECK(std::get<TftpErrorPacket>(reply->packet).code == TftpErrorCode::illegal_operation);

  auto hpa = run(bounded("tftp -m binary 127.0.0.1 " + server.port_text() + " -c get ../secret " +
                         (dir / "got").string()));
  CHECK_THAT(hpa.output, Catch::Contains("Error code 2"));
  CHECK_FALSE((fs::exists(dir / "got") && aggrik8s::test::read_file(dir / "got") == "do not serve"));
  CHECK(server.observer->wait_for_ended(8).size() == 8);
  CHECK(server.counters().failed == 8);
  CHECK(server.counters().malformed == 1);
}

TEST_CASE("tftp server: a Raspberry Pi style early-terminate probe is counted as a probe, not a failure", "[tftp][server]") {
  TempDir dir;
  std::string content = random_bytes(10'000, 4);
  aggrik8s::test::write_file(dir / "root/9ffefdef/start4.elf", content);
  RunningServer server(dir / "root");
  RawClient pi;

  pi.send(server.port(), read_request("9ffefdef/start4.elf", {{"tsize", "0"}, {"blksize", "1468"}}));
  auto oack = pi.receive();
  REQUIRE(oack);
  auto* options = std::get_if<TftpOptionAck>(&oack->packet);
  REQUIRE(options != nullptr);
  CHECK(options->options == std::vector<TftpOption>{{"tsize", "10000"}, {"blksize", "1468"}});
  pi.send(oack->from_port, TftpAck{0});
  auto first = pi.receive();
  REQUIRE(first);
  auto* data = std::get_if<TftpData>(&first->packet);
  REQUIRE(data != nullptr);
  CHECK(data->block == 1);
  CHECK(data->payload.size() == 1468);
  pi.send(first->from_port, TftpErrorPacket{TftpErrorCode::not_defined, "Early terminate"});

  auto events = server.observer->wait_for_ended(1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].outcome == TftpTransferOutcome::probe);
  CHECK(events[0].detail == "Early terminate");
  CHECK(server.counters().probes == 1);
  CHECK(server.counters().failed == 0);
  CHECK(pi.drain(200ms).empty());  // nothing more is sent after the ERROR
}

TEST_CASE("tftp server: duplicate ACKs do not cause duplicate DATA (no Sorcerer's Apprentice)", "[tftp][server]") {
  TempDir dir;
  std::string content = random_bytes(512 * 5 + 10, 5);  // 6 blocks
  aggrik8s::test::write_file(dir / "root/file", content);
  RunningServer server(dir / "root", 5000ms);  // no retransmission during the test
  RawClient client;

  client.send(server.port(), read_request("file"));
  std::string received;
  std::size_t data_packets = 0;
  std::uint16_t expected_block = 1;
  while (true) {
    auto packets = client.drain(150ms);
    REQUIRE(packets.size() == 1);  // exactly one DATA per distinct ACK, however many copies were sent
    auto& data = std::get<TftpData>(packets[0].packet);
    REQUIRE(data.block == expected_block);
    ++data_packets;
    received.append(data.payload.begin(), data.payload.end());
    for (int copy = 0; copy < 3; ++copy) client.send(packets[0].from_port, TftpAck{data.block});
    if (data.payload.size() < 512) break;
    ++expected_block;
  }
  CHECK(received == content);
  CHECK(data_packets == 6);
  CHECK(server.observer->wait_for_ended(1).at(0).outcome == TftpTransferOutcome::completed);
}

TEST_CASE("tftp server: a client that vanishes is dropped after bounded retransmissions", "[tftp][server]") {
  TempDir dir;
  aggrik8s::test::write_file(dir / "root/file", random_bytes(4096, 6));
  // 250 ms, not less: on a loaded 2-core machine (QEMU guests alongside) wake-ups slip by 100 ms and
  // more, which made a 100 ms schedule look neither complete nor doubling.
  RunningServer server(dir / "root", 250ms, 3);
  RawClient client;
  client.send(server.port(), read_request("file"));
  // The original DATA 1 and three retransmissions backing off (250, 500, 1000 ms), then silence; the
  // server has given up 2 s after the last one, so 4 s without a packet means it stopped.
  std::vector<std::chrono::steady_clock::time_point> arrivals;
  std::vector<RawClient::Received> copies;
  while (auto next = client.receive(copies.empty() ? 10'000ms : 4'000ms)) {
    arrivals.push_back(std::chrono::steady_clock::now());
    copies.push_back(std::move(*next));
  }
  REQUIRE(copies.size() == 4);
  for (const auto& copy : copies) CHECK(std::get<TftpData>(copy.packet).block == 1);
  for (std::size_t i = 2; i < arrivals.size(); ++i) {
    auto gap = arrivals[i] - arrivals[i - 1];
    auto previous = arrivals[i - 1] - arrivals[i - 2];
    CHECK(gap > previous * 5 / 4);  // doubling (a constant interval would be 1x), with room for jitter
  }
  auto events = server.observer->wait_for_ended(1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].outcome == TftpTransferOutcome::failed);
  CHECK_THAT(events[0].detail, Catch::Contains("after 3 retransmissions"));
  CHECK(server.counters().active == 0);
}

TEST_CASE("tftp server: the first wait after an OACK or after a back-off is the short DATA interval", "[tftp][server]") {
  // The OACK waits 6 s and a back-off grows the wait; both are longer than the next DATA wait, which must
  // not inherit them (a lost DATA right after the OACK once cost curl 6 s).
  TempDir dir;
  aggrik8s::test::write_file(dir / "root/file", random_bytes(512 * 4, 9));
  RunningServer server(dir / "root", 100ms, 6);
  RawClient client;
  client.send(server.port(), read_request("file", {{"blksize", "512"}}));
  auto oack = client.receive();
  REQUIRE(oack);
  REQUIRE(std::holds_alternative<TftpOptionAck>(oack->packet));
  client.send(oack->from_port, TftpAck{0});
  auto time_to_copy = [&](std::uint16_t block) {
    auto sent = std::chrono::steady_clock::now();
    auto copy = client.receive(3000ms);
    REQUIRE(copy);
    CHECK(std::get<TftpData>(copy->packet).block == block);
    return std::chrono::steady_clock::now() - sent;
  };
  REQUIRE(std::get<TftpData>(client.receive()->packet).block == 1);
  CHECK(time_to_copy(1) < 1000ms);  // 100 ms, not the OACK's 6 s
  // Let block 1 back off three times (200, 400, 800 ms), then acknowledge it.
  for (int i = 0; i < 3; ++i) time_to_copy(1);
  client.send(oack->from_port, TftpAck{1});
  REQUIRE(std::get<TftpData>(client.receive()->packet).block == 2);
  CHECK(time_to_copy(2) < 600ms);  // back to 100 ms, not the 1600 ms the back-off had reached
}

TEST_CASE("tftp server: garbage and stray packets do not disturb concurrent transfers", "[tftp][server]") {
  TempDir dir;
  std::string big = random_bytes(8'000'000, 7);
  std::string small = random_bytes(512 * 20 + 1, 8);
  aggrik8s::test::write_file(dir / "root/big", big);
  aggrik8s::test::write_file(dir / "root/small", small);
  RunningServer server(dir / "root", 2000ms);

  aggrik8s::test::CommandResult curl;
  std::thread downloader([&] {
    curl = run(bounded("curl -sS tftp://127.0.0.1:" + server.port_text() + "/big --tftp-blksize 1468 -o " +
                       (dir / "big.out").string()));
  });

  RawClient victim;
  RawClient attacker;     // sends to the victim's transfer port and reads the ERROR 5 it earns
  RawClient junk_sender;  // sprays the listening port; its replies (ERROR 4 for broken requests) are not read
  std::mt19937 generator(9);
  victim.send(server.port(), read_request("small"));
  std::string received;
  for (std::uint16_t block = 1;; ++block) {
    auto reply = victim.receive();
    REQUIRE(reply);
    auto& data = std::get<TftpData>(reply->packet);
    REQUIRE(data.block == block);
    received.append(data.payload.begin(), data.payload.end());

    // Junk at the listening port, at the transfer port from another port, and junk from the client itself.
    std::vector<std::uint8_t> junk(generator() % 600);
    for (auto& byte : junk) byte = static_cast<std::uint8_t>(generator());
    if (!junk.empty()) junk[0] |= 0x80;  // never a valid opcode: a stray real RRQ would start a transfer
    junk_sender.send_bytes(server.port(), junk);
    junk_sender.send_bytes(server.port(), {0, 3, 0, 1, 'x'});  // DATA to the listening port
    junk_sender.send_bytes(server.port(), {0, 1, 'a', 'b'});   // RRQ cut short
    attacker.send(reply->from_port, TftpAck{block});
    auto stray = attacker.receive(1000ms);
    REQUIRE(stray);
    CHECK(std::get<TftpErrorPacket>(stray->packet).code == TftpErrorCode::unknown_transfer_id);
    victim.send_bytes(reply->from_port, {0, 9, 1, 2, 3});
    victim.send_bytes(reply->from_port, {0});
    victim.send(reply->from_port, TftpAck{block});
    if (data.payload.size() < 512) break;
  }
  downloader.join();
  CHECK(received == small);
  INFO(curl.output);
  CHECK(curl.exit_code == 0);
  CHECK(aggrik8s::test::read_file(dir / "big.out") == big);
  CHECK(server.counters().completed == 2);
  CHECK(server.counters().failed == 0);
}

TEST_CASE("tftp server: many transfers run concurrently", "[tftp][server]") {
  TempDir dir;
  std::string content = random_bytes(2'000'000, 10);
  aggrik8s::test::write_file(dir / "root/f", content);
  RunningServer server(dir / "root");
  std::string script;
  for (int i = 0; i < 8; ++i) {
    script += "curl -sS tftp://127.0.0.1:" + server.port_text() + "/f --tftp-blksize 1468 -o " +
              (dir / ("c" + std::to_string(i))).string() + " & ";
    script += "atftp --option 'windowsize 8' -g -r f -l " + (dir / ("a" + std::to_string(i))).string() +
              " 127.0.0.1 " + server.port_text() + " & ";
  }
  auto result = run(bounded("bash -c \"" + script + " wait\""));
  INFO(result.output);
  for (int i = 0; i < 8; ++i) {
    CHECK(aggrik8s::test::read_file(dir / ("c" + std::to_string(i))) == content);
    CHECK(aggrik8s::test::read_file(dir / ("a" + std::to_string(i))) == content);
  }
  CHECK(server.counters().completed == 16);
}

TEST_CASE("tftp server: blocks go out from the transfer threads, requests and observers stay on the io thread", "[tftp][server]") {
  // 0 keeps every transfer on the io_context (the path before transfer threads); 1 and 3 move them off it.
  for (unsigned threads : {0u, 1u, 3u}) {
    INFO("transfer_threads " << threads);
    TempDir dir;
    std::string content = random_bytes(1'500'000 + 5, 12);
    aggrik8s::test::write_file(dir / "root/f", content);
    auto tree_threads = std::make_shared<std::vector<std::thread::id>>();
    auto tree_mutex = std::make_shared<std::mutex>();
    RunningServer server(dir / "root", 1000ms, 5, [&](TftpServerConfig& config) {
      config.transfer_threads = threads;
      config.client_tree = [tree_threads, tree_mutex](const boost::asio::ip::address&, const std::string&) {
        std::lock_guard lock(*tree_mutex);
        tree_threads->push_back(std::this_thread::get_id());
        return std::optional<TftpClientTree>();
      };
    });
    std::string script;
    for (int i = 0; i < 6; ++i) {
      script += "curl -sS tftp://127.0.0.1:" + server.port_text() + "/f --tftp-blksize 1468 -o " +
                (dir / ("c" + std::to_string(i))).string() + " & ";
      script += "tftp -m binary 127.0.0.1 " + server.port_text() + " -c get f " +
                (dir / ("h" + std::to_string(i))).string() + " & ";
    }
    script += "curl -sS tftp://127.0.0.1:" + server.port_text() + "/missing -o /dev/null & ";
    auto result = run(bounded("bash -c \"" + script + " wait\""));
    INFO(result.output);
    for (int i = 0; i < 6; ++i) {
      CHECK(aggrik8s::test::read_file(dir / ("c" + std::to_string(i))) == content);
      CHECK(aggrik8s::test::read_file(dir / ("h" + std::to_string(i))) == content);
    }
    auto events = server.observer->wait_for_ended(13);
    CHECK(events.size() == 13);
    CHECK(server.counters().completed == 12);
    CHECK(server.counters().failed == 1);
    auto observed = server.observer->threads();
    CHECK(observed.size() == 12 + 13);
    for (auto id : observed) CHECK(id == server.io_thread());
    std::lock_guard lock(*tree_mutex);
    CHECK(tree_threads->size() == 13);
    for (auto id : *tree_threads) CHECK(id == server.io_thread());
  }
}

TEST_CASE("tftp server: stop() ends transfers in flight and lets the io_context finish", "[tftp][server]") {
  for (unsigned threads : {0u, 2u}) {
    INFO("transfer_threads " << threads);
    TempDir dir;
    aggrik8s::test::write_file(dir / "root/file", random_bytes(100'000, 11));
    RunningServer server(dir / "root", 10'000ms, 5, [&](TftpServerConfig& config) { config.transfer_threads = threads; });
    RawClient client;
    client.send(server.port(), read_request("file"));
    REQUIRE(client.receive());  // DATA 1, then the client goes quiet
    CHECK(server.counters().active == 1);
    server.stop();
    CHECK(server.joins_within(2000ms));
    auto events = server.observer->wait_for_ended(1);
    REQUIRE(events.size() == 1);
    CHECK(events[0].detail == "server stopped");
    CHECK(server.counters().active == 0);
  }
}

TEST_CASE("tftp server: remap rules and per-client directories apply before the root", "[tftp][server]") {
  TempDir dir;
  aggrik8s::test::write_file(dir / "root/boot/bcd", "bcd");
  aggrik8s::test::write_file(dir / "root/config.txt", "shared");
  aggrik8s::test::write_file(dir / "root/clients/127.0.0.1/config.txt", "for this client");
  auto remap = std::make_shared<const TftpRemapRules>(TftpRemapRules::parse(
      "rg \\\\ /\n"
      "ri ^/?boot/(.*) boot/\\L\\1\n"
      "a ^private/ No\\ private\\ files\n",
      "test.map"));
  RunningServer server(dir / "root", 1000ms, 5, [&](TftpServerConfig& config) {
    config.remap = remap;
    config.client_directories = [](const boost::asio::ip::address& client) {
      return std::vector<std::string>{"clients/" + client.to_string()};
    };
  });
  std::string host = "127.0.0.1 " + server.port_text();
  auto windows = run(bounded("tftp -m binary " + host + " -c get '\\Boot\\BCD' " + (dir / "bcd").string()));
  INFO(windows.output);
  CHECK(aggrik8s::test::read_file(dir / "bcd") == "bcd");
  auto config = run(bounded("tftp -m binary " + host + " -c get config.txt " + (dir / "config").string()));
  CHECK(aggrik8s::test::read_file(dir / "config") == "for this client");
  RawClient client;
  auto denied = expect_error(client, server.port(), read_request("private/key"));
  CHECK(denied.code == TftpErrorCode::access_violation);
  // tftp-hpa's message: the name with the match replaced (e2e tftp_remap_vs_tftp_hpa compares them).
  CHECK(denied.message == "No private fileskey");
}

TEST_CASE("tftp server: a remap rule that produces '..' cannot lead out of the root", "[tftp][server]") {
  TempDir dir;
  aggrik8s::test::write_file(dir / "secret", "do not serve");
  aggrik8s::test::write_file(dir / "root/ok.txt", "ok");
  auto remap = std::make_shared<const TftpRemapRules>(TftpRemapRules::parse(
      "r ^up/(.*) ../\\1\n"
      "rg \\\\ /\n",  // Windows clients' backslashes become separators, so "..\\x" becomes "../x"
      "test.map"));
  RunningServer server(dir / "root", 1000ms, 5, [&](TftpServerConfig& config) { config.remap = remap; });
  RawClient client;
  CHECK(expect_error(client, server.port(), read_request("up/secret")).code == TftpErrorCode::access_violation);
  CHECK(expect_error(client, server.port(), read_request("..\\secret")).code == TftpErrorCode::access_violation);
  CHECK(expect_error(client, server.port(), read_request("a\\..\\..\\secret")).code == TftpErrorCode::access_violation);
  auto hpa = run(bounded("tftp -m binary 127.0.0.1 " + server.port_text() + " -c get up/secret " + (dir / "got").string()));
  CHECK_THAT(hpa.output, Catch::Contains("Error code 2"));
  CHECK_FALSE((fs::exists(dir / "got") && aggrik8s::test::read_file(dir / "got") == "do not serve"));
}

// Debian 12's ipxe package links /usr/lib/ipxe/ipxe.efi to /boot/ipxe.efi; docs/netboot.md names
// /usr/lib/ipxe as the TFTP root, so UEFI clients must get the file behind that link.
TEST_CASE("tftp server: the documented root /usr/lib/ipxe serves every iPXE binary of Debian 12", "[tftp][server]") {
  if (!fs::is_symlink("/usr/lib/ipxe/ipxe.efi") || !fs::exists("/boot/ipxe.efi")) {
    WARN("Debian's ipxe package is not installed: skipped");
    return;
  }
  TempDir dir;
  RunningServer server("/usr/lib/ipxe");
  std::string host = "127.0.0.1 " + server.port_text();
  const std::vector<std::pair<std::string, fs::path>> files = {
      {"ipxe.efi", "/boot/ipxe.efi"}, {"snponly.efi", "/usr/lib/ipxe/snponly.efi"}, {"undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe"}};
  for (const auto& [name, original] : files) {
    INFO(name);
    auto hpa = run(bounded("tftp -m binary " + host + " -c get " + name + " " + (dir / ("hpa-" + name)).string()));
    INFO(hpa.output);
    CHECK(aggrik8s::test::read_file(dir / ("hpa-" + name)) == aggrik8s::test::read_file(original));
    auto atftp = run(bounded("atftp --option 'blksize 1468' -g -r " + name + " -l " + (dir / ("atftp-" + name)).string() + " " + host));
    INFO(atftp.output);
    CHECK(aggrik8s::test::read_file(dir / ("atftp-" + name)) == aggrik8s::test::read_file(original));
  }
  CHECK(server.observer->wait_for_ended(6).size() == 6);
  CHECK(server.counters().completed == 6);
}

TEST_CASE("tftp server: a port another program holds is refused with how to find that program", "[tftp][server]") {
  // tftpd-hpa (or dnsmasq) already on the port is what a user with Debian's tftpd-hpa installed meets.
  TempDir dir;
  std::filesystem::create_directories(dir / "root");
  aggrik8s::FileDescriptor holder(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  REQUIRE(holder);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(holder.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(holder.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
  const std::string port = std::to_string(ntohs(address.sin_port));

  boost::asio::io_context io;
  TftpServerConfig config;
  config.listen = {boost::asio::ip::address_v4::loopback(), ntohs(address.sin_port)};
  config.root = dir / "root";
  CHECK_THROWS_WITH(TftpServer(io, config),
                    Catch::StartsWith("TFTP server cannot listen on 127.0.0.1:" + port + ": Address already in use; another program holds port " + port) &&
                        Catch::Contains("`ss -ulpn 'sport = :" + port + "'`") && Catch::EndsWith("set tftp.port (--tftp-port)"));
}
