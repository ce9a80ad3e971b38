#pragma once
// Sends a run of datagrams to one peer in as few system calls as the kernel allows: one sendmsg with
// UDP generic segmentation offload (UDP_SEGMENT, Linux >= 4.18) where the socket and route take it,
// else one sendmmsg per batch. A TFTP window of 16 blocks is 16 sendto calls otherwise, and those were
// three quarters of the server's system time in a windowed transfer (strace -c); with GSO the
// datagrams also cross the network stack as one until they are split at the device (or, on loopback,
// at the receiving socket).
//
// The datagrams lie back to back in one buffer, each `segment` bytes long except the last, which may be
// shorter: exactly the layout GSO splits, and what a TFTP window is (header + blksize, the last block
// short).
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace aggrik8s::netboot {

class UdpBatchSender {
 public:
  // `try_offload` false goes straight to sendmmsg (what a kernel without UDP_SEGMENT gets).
  explicit UdpBatchSender(bool try_offload = true) : offload_(try_offload) {}

  // Sends from the front of `datagrams` and returns how many bytes were dealt with (whole datagrams).
  // Stops early with `error` set: EAGAIN/EWOULDBLOCK when the socket's buffer is full (wait for
  // writability and call again with the rest); any other errno means the datagrams counted as dealt
  // with were lost, as on a lossy network, and the caller may go on with the rest.
  std::size_t send(int fd, const sockaddr* to, socklen_t to_length, std::span<const std::uint8_t> datagrams,
                   std::size_t segment, int& error);


 private:
  std::size_t send_segmented(int fd, const sockaddr* to, socklen_t to_length, std::span<const std::uint8_t> datagrams,
                             std::size_t segment, int& error);
  std::size_t send_each(int fd, const sockaddr* to, socklen_t to_length, std::span<const std::uint8_t> datagrams,
                        std::size_t segment, int& error);

  bool offload_;  // cleared for good the first time the kernel refuses UDP_SEGMENT on this socket
  std::vector<mmsghdr> messages_;
  std::vector<iovec> iovecs_;
};

}  // namespace aggrik8s::netboot
