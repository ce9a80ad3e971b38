#include "netboot/tftp/tftp_retransmit_schedule.hpp"

#include <catch2/catch.hpp>

using aggrik8s::netboot::TftpRetransmitPolicy;
using aggrik8s::netboot::TftpRetransmitSchedule;
using std::chrono::milliseconds;
using std::chrono::seconds;

TEST_CASE("tftp retransmit: the interval doubles per timeout up to the longest, and resets on progress", "[tftp]") {
  TftpRetransmitSchedule schedule(TftpRetransmitPolicy{milliseconds(300), milliseconds(2000), 6}, std::nullopt);
  CHECK(schedule.interval() == milliseconds(300));
  CHECK(schedule.timed_out());
  CHECK(schedule.interval() == milliseconds(600));
  CHECK(schedule.timed_out());
  CHECK(schedule.interval() == milliseconds(1200));
  CHECK(schedule.timed_out());
  CHECK(schedule.interval() == milliseconds(2000));
  CHECK(schedule.timed_out());
  CHECK(schedule.interval() == milliseconds(2000));
  CHECK(schedule.retransmits() == 4);
  schedule.progressed();
  CHECK(schedule.interval() == milliseconds(300));
  CHECK(schedule.retransmits() == 0);
}

TEST_CASE("tftp retransmit: gives up after max_retransmits timeouts in a row", "[tftp]") {
  TftpRetransmitSchedule schedule(TftpRetransmitPolicy{milliseconds(100), milliseconds(800), 3}, std::nullopt);
  CHECK(schedule.timed_out());
  CHECK(schedule.timed_out());
  CHECK(schedule.timed_out());
  CHECK_FALSE(schedule.timed_out());
}

TEST_CASE("tftp retransmit: a client's timeout option caps the first interval and can extend the longest",
          "[tftp]") {
  // curl asks for 6 s: the server still resends after its own 1 s, and may back off to 8 s.
  TftpRetransmitSchedule curl(TftpRetransmitPolicy{milliseconds(1000), milliseconds(8000), 5}, seconds(6));
  CHECK(curl.interval() == milliseconds(1000));
  // A client asking for less than the server's interval gets its resend when it expects it.
  TftpRetransmitSchedule quick(TftpRetransmitPolicy{milliseconds(1000), milliseconds(8000), 5}, seconds(1));
  CHECK(quick.interval() == milliseconds(1000));
  TftpRetransmitSchedule slow_server(TftpRetransmitPolicy{milliseconds(3000), milliseconds(8000), 5}, seconds(1));
  CHECK(slow_server.interval() == milliseconds(1000));
  // A client asking for 20 s lets the back-off grow that far.
  TftpRetransmitSchedule patient(TftpRetransmitPolicy{milliseconds(1000), milliseconds(4000), 10}, seconds(20));
  for (int i = 0; i < 6; ++i) REQUIRE(patient.timed_out());
  CHECK(patient.interval() == milliseconds(20000));
}

TEST_CASE("tftp retransmit: the back-off outgrows a 5 s client timer within the default retransmissions",
          "[tftp]") {
  // The atftp stall (see the header): with the defaults, some gap must exceed 5 s before the transfer is
  // given up, so the client's own timer fires and its ACK gets through.
  TftpRetransmitSchedule schedule(TftpRetransmitPolicy{}, std::nullopt);
  bool quiet_gap = false;
  while (schedule.timed_out()) quiet_gap = quiet_gap || schedule.interval() > milliseconds(5000);
  CHECK(quiet_gap);
}

TEST_CASE("tftp retransmit: the OACK waits past the usual client timers before it is resent", "[tftp]") {
  TftpRetransmitPolicy policy{milliseconds(100), milliseconds(8000), 5, milliseconds(6000)};
  auto oack = TftpRetransmitSchedule::for_option_ack(policy, std::nullopt);
  CHECK(oack.interval() == milliseconds(6000));
  CHECK(oack.timed_out());
  CHECK(oack.interval() == milliseconds(8000));
  // A client that asked for a 2 s timeout expects the resend by then.
  CHECK(TftpRetransmitSchedule::for_option_ack(policy, seconds(2)).interval() == milliseconds(2000));
  // A configured first timeout above option_ack_first is not shortened for the OACK.
  TftpRetransmitPolicy slow{milliseconds(7000), milliseconds(8000), 5, milliseconds(6000)};
  CHECK(TftpRetransmitSchedule::for_option_ack(slow, std::nullopt).interval() == milliseconds(7000));
}
