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
//
// OpenSSL reads the option once, at its first initialisation, and that can
// come before main: Debian's libcpp-httplib initialises OpenSSL from its
// shared library's initializer (canopy-hub and canopy-spoke link it). So an
// executable puts the call in its ELF preinit array, which runs before every
// shared library's initializer: CANOPY_KEEP_OPENSSL_UNTIL_EXIT() below, in
// daemon/process.cc for the daemons, api/cli/kubectl_canopy.cc, and
// tests/support/tls_certs.cc for test processes that speak TLS.
// Tested by daemon/tests/openssl_exit_test.cc and openssl_preinit_test.cc.
#pragma once

#include <openssl/crypto.h>

namespace canopy::daemon {

// REQUIRES: the process's first OpenSSL call.
inline void keep_openssl_until_exit() { OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr); }

// The same, shaped as an entry of the ELF preinit array.
inline void keep_openssl_until_exit_at_preinit(int, char**, char**) { keep_openssl_until_exit(); }

}  // namespace canopy::daemon

// At namespace scope in a file of a static library or an executable (never a
// shared library: only an executable's preinit array is run): every
// executable that links the file calls keep_openssl_until_exit() before any
// shared library's initializer.
#define CANOPY_KEEP_OPENSSL_UNTIL_EXIT()                                                       \
  [[gnu::used, gnu::section(".preinit_array")]] static void (*canopy_keep_openssl_until_exit)( \
      int, char**, char**) = ::canopy::daemon::keep_openssl_until_exit_at_preinit
