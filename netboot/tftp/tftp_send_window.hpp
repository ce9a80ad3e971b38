#pragma once
// The sending side of one read transfer as a pure state machine: which blocks are in flight, what an ACK
// means, when the transfer is done. No sockets and no clocks, so the awkward cases (duplicate ACKs,
// rollover, partial windows) are unit-tested directly.
//
// Blocks are numbered absolutely from 1 (uint64); on the wire a block is its number modulo 65536, so
// 65535 is followed by 0 (tftp-hpa's default rollover). An ACK is matched to the one absolute block in
// flight with that wire number; window sizes are at most 65535, so the match is unique.
//
// Sorcerer's Apprentice: an ACK that does not move the acknowledged edge forward is stale and causes
// nothing. Only a timeout resends (see TftpTransfer).
#include <cstdint>
#include <optional>

namespace aggrik8s::netboot {

class TftpSendWindow {
 public:
  explicit TftpSendWindow(std::uint16_t windowsize);

  enum class AckEffect {
    stale,     // duplicate or unknown block: ignore, keep waiting
    advanced,  // edge moved: send the next window (first_unacknowledged() onward)
    finished,  // the last block is acknowledged
  };
  AckEffect on_ack(std::uint16_t wire_block);

  // Blocks [first_unacknowledged(), window_end()] are the ones to (re)send now.
  std::uint64_t first_unacknowledged() const { return acknowledged_ + 1; }
  std::uint64_t window_end() const;

  // The sender reports each block it sends; a block shorter than blksize is the last one.
  void sent(std::uint64_t block, bool is_last);
  std::uint64_t highest_sent() const { return highest_sent_; }
  std::uint64_t acknowledged() const { return acknowledged_; }
  std::optional<std::uint64_t> last_block() const { return last_block_; }

  static std::uint16_t wire_block(std::uint64_t block) { return static_cast<std::uint16_t>(block & 0xffff); }

 private:
  std::uint16_t windowsize_;
  std::uint64_t acknowledged_ = 0;  // 0: nothing yet (the OACK, if any, is block 0)
  std::uint64_t highest_sent_ = 0;
  std::optional<std::uint64_t> last_block_;
};

}  // namespace aggrik8s::netboot
