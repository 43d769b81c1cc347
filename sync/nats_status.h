// NATS.c's statuses as canonical Status values (store/status.h), with
// NATS.c's own text of the last error. Internal to the NATS transport.
#pragma once

#include <nats/nats.h>

#include <string>

#include "store/status.h"

namespace canopy::sync::internal {

// NATS.c's text of the last error on this thread (empty if none).
std::string last_error_detail();

// Maps a NATS.c status to a canonical one; `what` names the operation. A
// refused TLS handshake or a lost server is Unavailable (retried).
Status from_nats(natsStatus s, const std::string& what);

}  // namespace canopy::sync::internal
