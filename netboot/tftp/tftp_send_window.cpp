#include "netboot/tftp/tftp_send_window.hpp"

#include <algorithm>

namespace aggrik8s::netboot {

TftpSendWindow::TftpSendWindow(std::uint16_t windowsize) : windowsize_(std::max<std::uint16_t>(windowsize, 1)) {}

std::uint64_t TftpSendWindow::window_end() const {
  std::uint64_t end = acknowledged_ + windowsize_;
  if (last_block_) end = std::min(end, *last_block_);
  return end;
}

void TftpSendWindow::sent(std::uint64_t block, bool is_last) {
  highest_sent_ = std::max(highest_sent_, block);
  if (is_last) last_block_ = block;
}

TftpSendWindow::AckEffect TftpSendWindow::on_ack(std::uint16_t wire) {
  // The in-flight range is (acknowledged_, highest_sent_]; find the block in it with this wire number.
  if (highest_sent_ <= acknowledged_) return AckEffect::stale;
  std::uint64_t distance = static_cast<std::uint16_t>(wire - wire_block(acknowledged_));
  if (distance == 0 || acknowledged_ + distance > highest_sent_) return AckEffect::stale;
  acknowledged_ += distance;
  if (last_block_ && acknowledged_ >= *last_block_) return AckEffect::finished;
  return AckEffect::advanced;
}

}  // namespace aggrik8s::netboot
