#include "spoke/bus/session_store_watch.h"

#include <cctype>
#include <string>

namespace canopy::spoke::bus {
namespace {

// Consumes `prefix` from the front of `s`.
bool eat(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

// Consumes one or more digits from the front of `s`.
bool eat_digits(std::string_view& s) {
  size_t n = 0;
  while (n < s.size() && std::isdigit(static_cast<unsigned char>(s[n]))) ++n;
  s.remove_prefix(n);
  return n > 0;
}

// Whether `p` is `id + middle + id` for some id.
bool id_twice(std::string_view p, std::string_view middle) {
  if (p.size() < middle.size() || (p.size() - middle.size()) % 2 != 0) return false;
  const size_t id = (p.size() - middle.size()) / 2;
  return p.substr(id, middle.size()) == middle && p.substr(0, id) == p.substr(id + middle.size());
}

}  // namespace

// The shapes, after "[pid] [ERR] addr - mid:N - \"":
//   <id>" - unable to persist session "<id>" (seq=N): wrong last sequence: N (N)
//   <id>" - unable to delete session "<id>" record at sequence N
// The id is a client's and may hold anything, quotes included, so the line
// is read from both ends: the ending is nats-server's own text (digits, no
// quote a client could have put there), and the rest must be the same id
// twice around the message. Linear in the line's length.
bool SessionStoreWatch::is_session_store_fault(std::string_view line) {
  std::string_view s = line;
  if (!eat(s, "[") || !eat_digits(s) || !eat(s, "] [ERR] ")) return false;
  const size_t space = s.find(' ');
  if (space == 0 || space == std::string_view::npos) return false;
  s.remove_prefix(space);
  if (!eat(s, " - mid:") || !eat_digits(s) || !eat(s, " - \"")) return false;

  if (const size_t at = s.rfind("\" (seq="); at != std::string_view::npos) {
    std::string_view tail = s.substr(at + 7);
    if (eat_digits(tail) && eat(tail, "): wrong last sequence: ") && eat_digits(tail) &&
        eat(tail, " (") && eat_digits(tail) && eat(tail, ")") && tail.empty() &&
        id_twice(s.substr(0, at), "\" - unable to persist session \"")) {
      return true;
    }
  }
  if (const size_t at = s.rfind("\" record at sequence "); at != std::string_view::npos) {
    std::string_view tail = s.substr(at + 21);
    if (eat_digits(tail) && tail.empty() &&
        id_twice(s.substr(0, at), "\" - unable to delete session \"")) {
      return true;
    }
  }
  return false;
}

SessionStoreWatch::Verdict SessionStoreWatch::note(std::string_view line, Clock::time_point now) {
  if (!is_session_store_fault(line)) return Verdict::kNone;
  ++faults_;
  recent_.push_back(now);
  while (!recent_.empty() && now - recent_.front() > options_.window) recent_.pop_front();
  if (recent_.size() < options_.threshold) return Verdict::kCounted;
  if (last_restart_ && now - *last_restart_ < options_.cooldown) {
    ++suppressed_;
    if (held_back_) return Verdict::kCounted;
    held_back_ = true;
    return Verdict::kHeldBack;
  }
  last_restart_ = now;
  held_back_ = false;
  recent_.clear();
  return Verdict::kRestart;
}

}  // namespace canopy::spoke::bus
