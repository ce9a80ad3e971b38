#pragma once
// When a read transfer resends, as a pure value: no clocks, so the back-off is unit-tested directly.
//
// The interval doubles after every timeout that brings no progress and returns to the first interval on
// progress (RFC 1123 4.2.3.2 asks TFTP for an adaptive timeout; doubling is the usual form). The
// back-off is not only politeness on a congested link: some windowed clients (atftp 0.8) answer a
// resent window they already hold with one extra ACK and then ignore further copies until their own
// timer fires. If that ACK is lost and the server keeps resending faster than the client's timer, every
// copy restarts the client's wait and the transfer stalls for good. Growing intervals guarantee a quiet
// gap longer than the client's timer, after which the client resends its ACK and the transfer moves on.
#include <chrono>
#include <optional>

namespace aggrik8s::netboot {

struct TftpRetransmitPolicy {
  std::chrono::milliseconds first{1000};   // the server's configured retransmission timeout
  std::chrono::milliseconds longest{8000}; // the back-off stops growing here
  unsigned max_retransmits = 5;            // timeouts in a row without progress before giving up
  // The first wait for the ACK of an OACK. Longer than for DATA on purpose: a client whose ACK 0 was lost
  // resends it on its own timer, while a second OACK makes some clients abort (atftp 0.8: "unexpected
  // OACK"), so the server should resend only after the usual client timers (5 s). It stays below the
  // 10 s after which ROMs that need the resend give up (iDRAC8 is known for that).
  std::chrono::milliseconds option_ack_first{6000};
};

class TftpRetransmitSchedule {
 public:
  // `client_timeout` is the RFC 2349 timeout the client asked for (and was granted). It bounds the first
  // interval from above: the client expects a resend by then. A shorter server interval is kept: a
  // client that sees a duplicate DATA block answers it with its ACK again (RFC 1350), so resending early
  // costs one datagram, while waiting the client's several seconds (curl asks for 6 s) costs that much
  // per lost packet. The back-off may grow up to the longer of the two.
  TftpRetransmitSchedule(const TftpRetransmitPolicy& policy, std::optional<std::chrono::seconds> client_timeout);
  // The schedule for the OACK: starts at option_ack_first (or the client's timeout, if shorter).
  static TftpRetransmitSchedule for_option_ack(const TftpRetransmitPolicy& policy,
                                               std::optional<std::chrono::seconds> client_timeout);

  std::chrono::milliseconds interval() const { return interval_; }  // to wait after the current send
  // A timeout: false when the transfer should be dropped, otherwise the interval has doubled.
  bool timed_out();
  void progressed();  // the client acknowledged something new
  unsigned retransmits() const { return retransmits_; }
  unsigned max_retransmits() const { return max_retransmits_; }

 private:
  std::chrono::milliseconds first_;
  std::chrono::milliseconds longest_;
  std::chrono::milliseconds interval_;
  unsigned max_retransmits_;
  unsigned retransmits_ = 0;
};

}  // namespace aggrik8s::netboot
