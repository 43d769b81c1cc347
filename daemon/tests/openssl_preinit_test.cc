// canopy-hub and canopy-spoke link Debian's libcpp-httplib, whose shared
// library's initializer initialises OpenSSL before main. This program links
// that library and daemon/process.cc, as the daemons do, and checks that
// OpenSSL registered no clean-up at exit all the same: process.cc's entry in
// the ELF preinit array ran before any library's initializer
// (daemon/openssl_exit.h). Checked both ways: with keep_openssl_until_exit()
// called first in main instead, OpenSSL registers its clean-up and this fails.
//
// What OpenSSL registers is seen by standing in for __cxa_atexit (what
// atexit calls from a shared library): each registration is passed on to the
// real one, and noted when it is libcrypto's OPENSSL_cleanup.
#include <dlfcn.h>
#include <link.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "daemon/process.h"

namespace {

std::atomic<int> g_registrations{0};
std::atomic<bool> g_openssl_cleanup_registered{false};

bool httplib_loaded() {
  bool found = false;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        if (info->dlpi_name != nullptr &&
            std::string_view(info->dlpi_name).find("libcpp-httplib") != std::string_view::npos) {
          *static_cast<bool*>(out) = true;
        }
        return 0;
      },
      &found);
  return found;
}

}  // namespace

extern "C" int __cxa_atexit(void (*fn)(void*), void* arg, void* dso) {
  using Real = int (*)(void (*)(void*), void*, void*);
  static const Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "__cxa_atexit"));
  g_registrations.fetch_add(1);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(fn), &info) != 0 && info.dli_sname != nullptr &&
      std::strcmp(info.dli_sname, "OPENSSL_cleanup") == 0) {
    g_openssl_cleanup_registered = true;
  }
  return real(fn, arg, dso);
}

int main() {
  canopy::daemon::prepare_process();  // (and so process.cc is linked, as in the daemons)
  if (!httplib_loaded()) {
    std::fprintf(stderr, "FAILED: libcpp-httplib is not loaded: this test proves nothing\n");
    return 1;
  }
  if (g_registrations.load() == 0) {
    std::fprintf(stderr, "FAILED: no atexit registration was seen: the stand-in is not used\n");
    return 1;
  }
  if (g_openssl_cleanup_registered) {
    std::fprintf(stderr,
                 "FAILED: OpenSSL registered OPENSSL_cleanup at exit: a library initialised it "
                 "before keep_openssl_until_exit() ran\n");
    return 1;
  }
  std::fprintf(stderr, "PASSED: OpenSSL registered no clean-up at exit (%d registrations seen)\n",
               g_registrations.load());
  return 0;
}
