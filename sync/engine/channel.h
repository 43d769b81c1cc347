// Reliable, ordered delivery of sequenced messages over a lossy bus (go-back-N).
//
// The sender numbers messages 1, 2, 3, ... per session and direction, keeps
// every unacknowledged one, and resends all of them from the oldest when an
// ack reports a gap or the oldest has waited longer than the retransmission
// timeout (doubling up to a bound). The receiver applies only the next
// expected seq and acks cumulatively; a duplicate is re-acked, a message
// from beyond a gap is dropped and the gap reported. The window bounds what a
// sender keeps in memory per session. REQUIRES: external synchronization.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace canopy::sync {

class SendChannel {
 public:
  SendChannel(size_t window, uint64_t rto_ms, uint64_t max_rto_ms = 10'000)
      : window_(window), rto_ms_(rto_ms), base_rto_ms_(rto_ms), max_rto_ms_(max_rto_ms) {}

  bool can_send() const { return unacked_.size() < window_; }
  uint64_t next_seq() const { return next_; }
  // Records message `seq` (== next_seq()) as sent at `now_ms`.
  void sent(uint64_t seq, std::string bytes, uint64_t now_ms);
  // Handles a cumulative ack; appends what must be resent to `resend`.
  void on_ack(uint64_t seq, bool gap, uint64_t now_ms, std::vector<std::string>* resend);
  // Appends what must be resent after a timeout to `resend`.
  void on_tick(uint64_t now_ms, std::vector<std::string>* resend);
  // When on_tick would resend (UINT64_MAX: nothing awaits an ack).
  uint64_t next_timeout_ms() const {
    return unacked_.empty() ? UINT64_MAX : last_send_ms_ + rto_ms_;
  }
  size_t in_flight() const { return unacked_.size(); }
  size_t in_flight_bytes() const;
  uint64_t acked() const { return acked_; }

 private:
  struct Item {
    uint64_t seq;
    std::string bytes;
  };
  void resend_all(uint64_t now_ms, std::vector<std::string>* resend);

  size_t window_;
  uint64_t rto_ms_;
  uint64_t base_rto_ms_;
  uint64_t max_rto_ms_;
  uint64_t next_ = 1;
  uint64_t acked_ = 0;
  uint64_t last_send_ms_ = 0;
  // Oldest first; at most `window_` of them. (Not a deque: libstdc++'s
  // allocates 576 bytes before its first element, for every session.)
  std::vector<Item> unacked_;
};

class RecvChannel {
 public:
  enum class Verdict { kApply, kDuplicate, kGap };
  Verdict check(uint64_t seq) const {
    if (seq == expected_) return Verdict::kApply;
    return seq < expected_ ? Verdict::kDuplicate : Verdict::kGap;
  }
  void applied(uint64_t seq) { expected_ = seq + 1; }
  uint64_t last_applied() const { return expected_ - 1; }

 private:
  uint64_t expected_ = 1;
};

}  // namespace canopy::sync
