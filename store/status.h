// Status and StatusOr: errors as values, with gRPC's canonical codes.
//
// Every fallible call in Canopy returns one of these; exceptions never cross a
// module boundary. Codes follow the gRPC canonical set so that api/ maps them to
// gRPC and HTTP with one table. Messages name the thing and the reason:
// `key "a b": character ' ' is not allowed`.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace canopy {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: key ..." or "OK".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status ok_status() { return Status(); }
inline Status invalid_argument(std::string m) {
  return Status(StatusCode::kInvalidArgument, std::move(m));
}
inline Status not_found(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status failed_precondition(std::string m) {
  return Status(StatusCode::kFailedPrecondition, std::move(m));
}
inline Status resource_exhausted(std::string m) {
  return Status(StatusCode::kResourceExhausted, std::move(m));
}
inline Status internal_error(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }
inline Status unavailable(std::string m) { return Status(StatusCode::kUnavailable, std::move(m)); }
inline Status data_loss(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }
inline Status permission_denied(std::string m) {
  return Status(StatusCode::kPermissionDenied, std::move(m));
}
inline Status out_of_range(std::string m) { return Status(StatusCode::kOutOfRange, std::move(m)); }
inline Status unauthenticated(std::string m) {
  return Status(StatusCode::kUnauthenticated, std::move(m));
}

// Either a value or a non-OK status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace canopy

// Returns early from the enclosing function when `expr` is not OK.
#define CANOPY_RETURN_IF_ERROR(expr)         \
  do {                                       \
    ::canopy::Status _canopy_st = (expr);    \
    if (!_canopy_st.ok()) return _canopy_st; \
  } while (0)

// Aborts with a message when an invariant does not hold, in release builds too.
#define CANOPY_CHECK(cond)                                          \
  do {                                                              \
    if (!(cond)) ::canopy::check_failed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace canopy {
[[noreturn]] void check_failed(const char* cond, const char* file, int line);
}  // namespace canopy
