#include "netboot/tftp/udp_batch_sender.hpp"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103  // linux/udp.h; older libc headers lack it
#endif

namespace aggrik8s::netboot {
namespace {

// GSO limits: the whole super-datagram must fit one IP packet's length field (64 KiB less headers), and
// the kernel takes at most 64 segments per call (UDP_MAX_SEGMENTS).
constexpr std::size_t max_offload_bytes = 60000;
constexpr std::size_t max_segments = 64;

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK; }

}  // namespace

std::size_t UdpBatchSender::send(int fd, const sockaddr* to, socklen_t to_length, std::span<const std::uint8_t> datagrams,
                                 std::size_t segment, int& error) {
  error = 0;
  if (segment == 0) return 0;
  std::size_t done = 0;
  while (done < datagrams.size() && error == 0) {
    auto rest = datagrams.subspan(done);
    bool several = rest.size() > segment;
    if (offload_ && several && segment * 2 <= max_offload_bytes) {
      std::size_t sent = send_segmented(fd, to, to_length, rest, segment, error);
      done += sent;
      // Refused (no checksum offload on the route's device, a segment above the path MTU, an old
      // kernel): fall back for the rest of this socket's life.
      if (error == EIO || error == EINVAL || error == ENOPROTOOPT || error == EOPNOTSUPP) {
        offload_ = false;
        error = 0;
      }
      continue;
    }
    done += send_each(fd, to, to_length, rest, segment, error);
  }
  return done;
}

std::size_t UdpBatchSender::send_segmented(int fd, const sockaddr* to, socklen_t to_length,
                                           std::span<const std::uint8_t> datagrams, std::size_t segment, int& error) {
  std::size_t whole = std::min(max_segments, max_offload_bytes / segment) * segment;
  std::size_t length = std::min(datagrams.size(), whole);
  iovec vector{const_cast<std::uint8_t*>(datagrams.data()), length};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(std::uint16_t))] = {};
  msghdr message{};
  message.msg_name = const_cast<sockaddr*>(to);
  message.msg_namelen = to_length;
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_UDP;
  header->cmsg_type = UDP_SEGMENT;
  header->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
  auto size = static_cast<std::uint16_t>(segment);
  std::memcpy(CMSG_DATA(header), &size, sizeof(size));
  ssize_t sent;
  do {
    sent = ::sendmsg(fd, &message, 0);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    error = errno;
    if (would_block(error) || error == EIO || error == EINVAL || error == ENOPROTOOPT || error == EOPNOTSUPP) return 0;
    return length;  // any other failure loses these datagrams, as the network may: the peer's timeout recovers
  }
  return length;  // a datagram send is all or nothing
}

std::size_t UdpBatchSender::send_each(int fd, const sockaddr* to, socklen_t to_length,
                                      std::span<const std::uint8_t> datagrams, std::size_t segment, int& error) {
  std::size_t count = std::min(max_segments, (datagrams.size() + segment - 1) / segment);
  if (count == 1) {
    // A lockstep block: sendto is the shorter path through the kernel (no message vector to copy in,
    // no reschedule point between messages).
    ssize_t sent;
    do {
      sent = ::sendto(fd, datagrams.data(), datagrams.size(), 0, to, to_length);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
      error = errno;
      if (would_block(error)) return 0;
    }
    return datagrams.size();  // sent, or lost as on a lossy network
  }
  messages_.assign(count, mmsghdr{});
  iovecs_.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t offset = i * segment;
    iovecs_[i] = iovec{const_cast<std::uint8_t*>(datagrams.data() + offset), std::min(segment, datagrams.size() - offset)};
    msghdr& message = messages_[i].msg_hdr;
    message.msg_name = const_cast<sockaddr*>(to);
    message.msg_namelen = to_length;
    message.msg_iov = &iovecs_[i];
    message.msg_iovlen = 1;
  }
  int sent;
  do {
    sent = ::sendmmsg(fd, messages_.data(), static_cast<unsigned>(count), 0);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    error = errno;
    // A failure other than a full buffer drops this datagram (the peer's timeout recovers it, as with a
    // lost packet) so that the rest of the batch still goes out.
    if (would_block(error)) return 0;
    return std::min(segment, datagrams.size());
  }
  std::size_t bytes = 0;
  for (int i = 0; i < sent; ++i) bytes += iovecs_[static_cast<std::size_t>(i)].iov_len;
  return bytes;
}

}  // namespace aggrik8s::netboot
