// subject_matches and the subject syntax checks shared by both transports.
#include "sync/transport.h"

#include <string>

#include "store/status.h"

namespace canopy::sync {
namespace {

// Splits off the first token of `rest` (up to the next '.'); returns false
// when `rest` is exhausted. An empty token ("a..b", a leading or trailing
// '.') comes back as an empty view, which no valid subject contains.
bool next_token(std::string_view& rest, bool& more, std::string_view& token) {
  if (!more) return false;
  const size_t dot = rest.find('.');
  if (dot == std::string_view::npos) {
    token = rest;
    rest = {};
    more = false;
  } else {
    token = rest.substr(0, dot);
    rest.remove_prefix(dot + 1);
  }
  return true;
}

bool is_space_or_nul(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v' || c == '\0';
}

std::string printable(char c) {
  if (c >= 0x21 && c < 0x7f) return std::string("'") + c + "'";
  static constexpr char kHex[] = "0123456789abcdef";
  const auto u = static_cast<unsigned char>(c);
  return std::string("'\\x") + kHex[u >> 4] + kHex[u & 0xf] + "'";
}

Status check_subject_syntax(std::string_view subject, bool pattern) {
  const char* what = pattern ? "subscription pattern" : "subject";
  if (subject.empty()) return invalid_argument(std::string(what) + " is empty");
  for (char c : subject) {
    if (is_space_or_nul(c)) {
      return invalid_argument(std::string(what) + " \"" + std::string(subject) + "\": character " +
                              printable(c) + " is not allowed");
    }
  }
  std::string_view rest = subject;
  std::string_view token;
  bool more = true;
  while (next_token(rest, more, token)) {
    if (token.empty()) {
      return invalid_argument(std::string(what) + " \"" + std::string(subject) +
                              "\" has an empty token");
    }
    if (token == "*" || token == ">") {
      if (!pattern) {
        return invalid_argument("subject \"" + std::string(subject) +
                                "\": wildcards are allowed only in subscriptions");
      }
      if (token == ">" && more) {
        return invalid_argument("subscription pattern \"" + std::string(subject) +
                                "\": '>' must be the last token");
      }
    }
  }
  return ok_status();
}

}  // namespace

bool subject_matches(std::string_view pattern, std::string_view subject) {
  if (pattern.empty() || subject.empty()) return false;
  std::string_view prest = pattern;
  std::string_view srest = subject;
  bool pmore = true;
  bool smore = true;
  std::string_view ptoken;
  std::string_view stoken;
  while (next_token(prest, pmore, ptoken)) {
    if (ptoken.empty()) return false;
    if (ptoken == ">" && !pmore) {
      // One or more further tokens, all non-empty.
      if (!next_token(srest, smore, stoken) || stoken.empty()) return false;
      while (next_token(srest, smore, stoken)) {
        if (stoken.empty()) return false;
      }
      return true;
    }
    if (!next_token(srest, smore, stoken) || stoken.empty()) return false;
    if (ptoken != "*" && ptoken != stoken) return false;
  }
  // The pattern is exhausted: a match only if the subject is too.
  return !smore;
}

namespace internal {

// Declared where used (nats_transport.cc, memory_transport.cc) until
// transport.h exports them.
Status check_publish_subject(std::string_view subject) {
  return check_subject_syntax(subject, /*pattern=*/false);
}
Status check_subscription_pattern(std::string_view pattern) {
  return check_subject_syntax(pattern, /*pattern=*/true);
}

}  // namespace internal
}  // namespace canopy::sync
