#include "sync/engine/channel.h"

#include <algorithm>

namespace canopy::sync {

void SendChannel::sent(uint64_t seq, std::string bytes, uint64_t now_ms) {
  next_ = seq + 1;
  if (unacked_.empty()) last_send_ms_ = now_ms;
  unacked_.push_back(Item{seq, std::move(bytes)});
}

void SendChannel::on_ack(uint64_t seq, bool gap, uint64_t now_ms,
                         std::vector<std::string>* resend) {
  const auto first_unacked = std::find_if(unacked_.begin(), unacked_.end(),
                                          [seq](const Item& item) { return item.seq > seq; });
  const bool progress = first_unacked != unacked_.begin();
  if (first_unacked == unacked_.end()) {
    // Everything acked (an idle session's usual state): give the memory
    // back, not a window's worth kept for each of tens of thousands.
    std::vector<Item>().swap(unacked_);
  } else {
    unacked_.erase(unacked_.begin(), first_unacked);
  }
  acked_ = std::max(acked_, seq);
  if (progress) {
    rto_ms_ = base_rto_ms_;
    last_send_ms_ = now_ms;
  }
  // A gap, or an ack that shows the receiver alive but behind what we sent
  // (our messages were lost, e.g. during a disconnection): resend at once,
  // at most every 100 ms.
  if (!unacked_.empty() && (gap || !progress) && now_ms >= last_send_ms_ + 100) {
    resend_all(now_ms, resend);
  }
}

void SendChannel::on_tick(uint64_t now_ms, std::vector<std::string>* resend) {
  if (unacked_.empty() || now_ms < last_send_ms_ + rto_ms_) return;
  rto_ms_ = std::min(rto_ms_ * 2, max_rto_ms_);
  resend_all(now_ms, resend);
}

void SendChannel::resend_all(uint64_t now_ms, std::vector<std::string>* resend) {
  for (const Item& item : unacked_) resend->push_back(item.bytes);
  last_send_ms_ = now_ms;
}

size_t SendChannel::in_flight_bytes() const {
  size_t n = 0;
  for (const Item& item : unacked_) n += item.bytes.size();
  return n;
}

}  // namespace canopy::sync
