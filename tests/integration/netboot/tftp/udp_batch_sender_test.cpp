#include "netboot/tftp/udp_batch_sender.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "core/file_descriptor.hpp"

using aggrik8s::netboot::UdpBatchSender;

namespace {

aggrik8s::FileDescriptor loopback_socket(sockaddr_in& bound) {
  aggrik8s::FileDescriptor fd(::socket(AF_INET, SOCK_DGRAM, 0));
  REQUIRE(fd.get() >= 0);
  bound = sockaddr_in{};
  bound.sin_family = AF_INET;
  bound.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&bound), sizeof(bound)) == 0);
  // Room for a whole test burst (root may exceed rmem_max), so nothing is dropped at the receiver.
  int room = 4 << 20;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &room, sizeof(room)) != 0) {
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &room, sizeof(room));
  }
  socklen_t length = sizeof(bound);
  REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &length) == 0);
  return fd;
}

std::vector<std::string> receive_all(int fd) {
  std::vector<std::string> datagrams;
  std::vector<char> buffer(70000);
  while (true) {
    pollfd ready{fd, POLLIN, 0};
    if (::poll(&ready, 1, 300) <= 0) break;
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    REQUIRE(n >= 0);
    datagrams.emplace_back(buffer.data(), static_cast<std::size_t>(n));
  }
  return datagrams;
}

// `count` datagrams of `segment` bytes back to back, the last `last` bytes long; each byte says which
// datagram it belongs to, so a split at the wrong place shows.
std::vector<std::uint8_t> layout(std::size_t count, std::size_t segment, std::size_t last) {
  std::vector<std::uint8_t> bytes;
  for (std::size_t i = 0; i < count; ++i) bytes.insert(bytes.end(), i + 1 < count ? segment : last, static_cast<std::uint8_t>(i));
  return bytes;
}

void check_split(const std::vector<std::string>& got, std::size_t count, std::size_t segment, std::size_t last) {
  REQUIRE(got.size() == count);
  for (std::size_t i = 0; i < count; ++i) {
    INFO("datagram " << i);
    CHECK(got[i] == std::string(i + 1 < count ? segment : last, static_cast<char>(i)));
  }
}

}  // namespace

TEST_CASE("udp batch: a run of datagrams arrives as separate datagrams, the last one short", "[udp]") {
  for (bool offload : {true, false}) {
    INFO((offload ? "UDP_SEGMENT" : "sendmmsg"));
    sockaddr_in receiver_address{}, sender_address{};
    auto receiver = loopback_socket(receiver_address);
    auto sender = loopback_socket(sender_address);
    UdpBatchSender batch(offload);
    // 100 blocks of a TFTP window with blksize 1468 (more than one system call's worth either way).
    auto bytes = layout(100, 1472, 700);
    int error = -1;
    std::size_t sent = batch.send(sender.get(), reinterpret_cast<sockaddr*>(&receiver_address), sizeof(receiver_address),
                                  bytes, 1472, error);
    CHECK(error == 0);
    CHECK(sent == bytes.size());
    check_split(receive_all(receiver.get()), 100, 1472, 700);
  }
}

TEST_CASE("udp batch: a single datagram and a run ending on a full segment", "[udp]") {
  sockaddr_in receiver_address{}, sender_address{};
  auto receiver = loopback_socket(receiver_address);
  auto sender = loopback_socket(sender_address);
  UdpBatchSender batch;
  int error = -1;
  auto one = layout(1, 516, 300);
  CHECK(batch.send(sender.get(), reinterpret_cast<sockaddr*>(&receiver_address), sizeof(receiver_address), one, 516,
                   error) == one.size());
  check_split(receive_all(receiver.get()), 1, 516, 300);
  auto even = layout(16, 516, 516);
  CHECK(batch.send(sender.get(), reinterpret_cast<sockaddr*>(&receiver_address), sizeof(receiver_address), even, 516,
                   error) == even.size());
  check_split(receive_all(receiver.get()), 16, 516, 516);
}

// A tiny send buffer: any EAGAIN ends a call early, and the caller resumes with the rest.
TEST_CASE("udp batch: with a tiny send buffer the run still goes out whole, resumed in whole datagrams", "[udp]") {
  sockaddr_in receiver_address{}, sender_address{};
  auto receiver = loopback_socket(receiver_address);
  auto sender = loopback_socket(sender_address);
  int small = 4096;
  REQUIRE(::setsockopt(sender.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) == 0);
  REQUIRE(::fcntl(sender.get(), F_SETFL, O_NONBLOCK) == 0);
  UdpBatchSender batch;
  auto bytes = layout(64, 1472, 1472);
  std::size_t done = 0;
  int error = 0;
  for (int attempt = 0; attempt < 2000 && done < bytes.size(); ++attempt) {
    done += batch.send(sender.get(), reinterpret_cast<sockaddr*>(&receiver_address), sizeof(receiver_address),
                       std::span(bytes).subspan(done), 1472, error);
    REQUIRE((error == 0 || error == EAGAIN || error == EWOULDBLOCK));
    if (error != 0) {
      pollfd writable{sender.get(), POLLOUT, 0};
      ::poll(&writable, 1, 100);
    }
    CHECK(done % 1472 == 0);  // only whole datagrams are ever counted as sent
  }
  CHECK(done == bytes.size());
}
