// OpenSSL's own clean-up at exit, turned off for the whole process.
//
// OpenSSL frees its global state in an atexit handler (OPENSSL_cleanup),
// which also deletes the thread-local key whose destructor frees each
// thread's OpenSSL state. gRPC's and NATS.c's threads can still be ending
// while exit runs: a thread that used OpenSSL and ends after that handler
// loses its destructor, and its state (the 904-byte error queue) is never
// freed. The operating system takes it back at exit, but the ASan builds
// report it as a leak, at random (seen in CI: kubectl-canopy over TLS).
// Without the handler, a late thread's destructor still runs, and nothing
// OpenSSL holds at exit is lost: it is reachable from its globals.
// Tested by daemon/tests/openssl_exit_test.cc.
#pragma once

#include <openssl/crypto.h>

namespace canopy::daemon {

// REQUIRES: the process's first OpenSSL call (OpenSSL reads the option once,
// at its first initialisation).
inline void keep_openssl_until_exit() { OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr); }

}  // namespace canopy::daemon
