#include "netboot/tftp/tftp_send_window.hpp"

#include <catch2/catch.hpp>

using aggrik8s::netboot::TftpSendWindow;
using Effect = TftpSendWindow::AckEffect;

TEST_CASE("tftp window: lockstep: duplicate ACKs are stale and never advance the window", "[tftp]") {
  TftpSendWindow window(1);
  CHECK(window.first_unacknowledged() == 1);
  CHECK(window.window_end() == 1);
  window.sent(1, false);
  CHECK(window.on_ack(0) == Effect::stale);  // a late ACK of the OACK
  CHECK(window.on_ack(1) == Effect::advanced);
  CHECK(window.on_ack(1) == Effect::stale);  // Sorcerer's Apprentice: no second DATA 2
  window.sent(2, true);
  CHECK(window.on_ack(1) == Effect::stale);
  CHECK(window.on_ack(2) == Effect::finished);
}

TEST_CASE("tftp window: block numbers roll over from 65535 to 0", "[tftp]") {
  TftpSendWindow window(1);
  for (std::uint64_t block = 1; block <= 65540; ++block) {
    window.sent(block, block == 65540);
    Effect effect = window.on_ack(TftpSendWindow::wire_block(block));
    REQUIRE(effect == (block == 65540 ? Effect::finished : Effect::advanced));
  }
  CHECK(TftpSendWindow::wire_block(65536) == 0);
  CHECK(TftpSendWindow::wire_block(65537) == 1);
  CHECK(window.acknowledged() == 65540);
}

TEST_CASE("tftp window: windowed: an ACK inside the window restarts after the acknowledged block (RFC 7440)", "[tftp]") {
  TftpSendWindow window(4);
  CHECK(window.window_end() == 4);
  for (std::uint64_t block = 1; block <= 4; ++block) window.sent(block, false);
  CHECK(window.on_ack(2) == Effect::advanced);  // 3 and 4 were lost
  CHECK(window.first_unacknowledged() == 3);
  CHECK(window.window_end() == 6);
  CHECK(window.on_ack(2) == Effect::stale);
  CHECK(window.on_ack(5) == Effect::stale);  // not sent yet
  for (std::uint64_t block = 3; block <= 6; ++block) window.sent(block, block == 5);
  CHECK(window.last_block() == 5);
  CHECK(window.window_end() == 5);
  CHECK(window.on_ack(5) == Effect::finished);
}

TEST_CASE("tftp window: windowed across the rollover", "[tftp]") {
  TftpSendWindow window(16);
  for (std::uint64_t block = 1; block <= 65528; ++block) window.sent(block, false);
  CHECK(window.on_ack(TftpSendWindow::wire_block(65528)) == Effect::advanced);
  for (std::uint64_t block = 65529; block <= 65544; ++block) window.sent(block, false);
  CHECK(window.window_end() == 65544);
  CHECK(window.on_ack(8) == Effect::advanced);  // wire 8 is block 65544
  CHECK(window.acknowledged() == 65544);
}
