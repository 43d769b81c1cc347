// pick_free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
//
// The kernel picks the port (bind to port 0); the socket is closed before the
// call returns, so the port is free but not reserved: another process may take
// it before the caller binds it. Callers that start a server on it should treat
// "address in use" as a reason to pick again (NatsServer does so on its first
// start). A port handed out is not handed out again for 10 minutes, to any
// test process (a registry in /tmp/canopy-test-ports): a server a test kills
// must not come back as another test's. Only 127.0.0.1 is ever bound.
// Thread-safe.
#pragma once

namespace canopy::testing {

// Returns a port in 1..65535, or -1 if no socket could be bound (errno says why).
int pick_free_port();

}  // namespace canopy::testing
