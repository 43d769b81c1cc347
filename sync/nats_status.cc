#include "sync/nats_status.h"

namespace canopy::sync::internal {

std::string last_error_detail() {
  natsStatus ignored;
  const char* text = nats_GetLastError(&ignored);
  return text != nullptr ? std::string(text) : std::string();
}

// Maps a NATS.c status to a canonical one; `what` names the operation.
Status from_nats(natsStatus s, const std::string& what) {
  if (s == NATS_OK) return ok_status();
  std::string message = what + ": " + natsStatus_GetText(s);
  const std::string detail = last_error_detail();
  if (!detail.empty() && detail != natsStatus_GetText(s)) message += " (" + detail + ")";
  switch (s) {
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_IO_ERROR:
    case NATS_STALE_CONNECTION:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_SECURE_CONNECTION_WANTED:
    case NATS_SSL_ERROR:  // a handshake refused by either end: retried
    case NATS_DRAINING:
    case NATS_INSUFFICIENT_BUFFER:  // the reconnect buffer is full
      return unavailable(std::move(message));
    case NATS_NOT_PERMITTED:
    case NATS_CONNECTION_AUTH_FAILED:
      return permission_denied(std::move(message));
    case NATS_MAX_PAYLOAD:
    case NATS_NO_MEMORY:
    case NATS_SLOW_CONSUMER:
      return resource_exhausted(std::move(message));
    case NATS_TIMEOUT:
      return Status(StatusCode::kDeadlineExceeded, std::move(message));
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_TIMEOUT:
      return invalid_argument(std::move(message));
    default:
      return internal_error(std::move(message));
  }
}

}  // namespace canopy::sync::internal
