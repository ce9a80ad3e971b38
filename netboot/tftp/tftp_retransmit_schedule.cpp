#include "netboot/tftp/tftp_retransmit_schedule.hpp"

#include <algorithm>

namespace aggrik8s::netboot {

using std::chrono::milliseconds;

TftpRetransmitSchedule::TftpRetransmitSchedule(const TftpRetransmitPolicy& policy,
                                               std::optional<std::chrono::seconds> client_timeout)
    : first_(std::max(policy.first, milliseconds(1))),
      longest_(std::max(policy.longest, first_)),
      interval_(first_),
      max_retransmits_(policy.max_retransmits) {
  if (client_timeout) {
    auto asked = std::chrono::duration_cast<milliseconds>(*client_timeout);
    first_ = std::min(first_, asked);
    longest_ = std::max(longest_, asked);
    interval_ = first_;
  }
}

TftpRetransmitSchedule TftpRetransmitSchedule::for_option_ack(const TftpRetransmitPolicy& policy,
                                                              std::optional<std::chrono::seconds> client_timeout) {
  TftpRetransmitPolicy oack = policy;
  oack.first = std::max(policy.first, policy.option_ack_first);
  oack.longest = std::max(policy.longest, oack.first);
  return TftpRetransmitSchedule(oack, client_timeout);
}

bool TftpRetransmitSchedule::timed_out() {
  if (++retransmits_ > max_retransmits_) return false;
  interval_ = std::min(interval_ * 2, longest_);
  return true;
}

void TftpRetransmitSchedule::progressed() {
  retransmits_ = 0;
  interval_ = first_;
}

}  // namespace aggrik8s::netboot
