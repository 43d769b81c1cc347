// A thread that used OpenSSL and ends while the process exits must still
// free what OpenSSL gave it (daemon/openssl_exit.h). This is the test's own
// exit, so it is a program rather than a GoogleTest case.
//
// The order at exit (atexit handlers run last registered, first run):
//   1. OpenSSL's clean-up, when it was registered (it is at OpenSSL's first
//      initialisation, after step 2's handler);
//   2. ours: the thread is let go and joined, then every allocation OpenSSL
//      made on it must have been freed;
//   3. LeakSanitizer's check, in the ASan build (registered before main).
// With OpenSSL's clean-up registered, step 2 finds the thread's error state
// (904 bytes) and the handler list still allocated, and the ASan build reports
// the same leak CI saw in kubectl-canopy. Checked both ways: exit 1 without
// keep_openssl_until_exit(), 0 with it.
#include "daemon/openssl_exit.h"

#include <openssl/crypto.h>
#include <openssl/err.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace {

// OpenSSL's allocations made on the thread under test, still live.
std::mutex g_live_mu;
std::unordered_map<void*, size_t> g_live;
thread_local bool t_watched = false;

void* counted_malloc(size_t n, const char*, int) {
  void* p = std::malloc(n);
  if (p != nullptr && t_watched) {
    std::lock_guard lock(g_live_mu);
    g_live[p] = n;
  }
  return p;
}

void* counted_realloc(void* p, size_t n, const char*, int) {
  bool was_watched = t_watched;
  if (p != nullptr) {
    std::lock_guard lock(g_live_mu);
    was_watched = g_live.erase(p) > 0;
  }
  void* q = std::realloc(p, n);
  if (q != nullptr && was_watched) {
    std::lock_guard lock(g_live_mu);
    g_live[q] = n;
  }
  return q;
}

void counted_free(void* p, const char*, int) {
  if (p != nullptr) {
    std::lock_guard lock(g_live_mu);
    g_live.erase(p);
  }
  std::free(p);
}

std::mutex g_mu;
std::condition_variable g_cv;
bool g_started = false;
bool g_released = false;
std::thread* g_thread = nullptr;

void release_join_and_check() {
  {
    std::lock_guard lock(g_mu);
    g_released = true;
  }
  g_cv.notify_all();
  g_thread->join();
  std::lock_guard lock(g_live_mu);
  if (!g_live.empty()) {
    size_t bytes = 0;
    for (const auto& [p, n] : g_live) bytes += n;
    std::fprintf(stderr,
                 "FAILED: a thread that ended during exit left %zu OpenSSL allocation(s), %zu "
                 "bytes, unfreed: OpenSSL's clean-up at exit ran before it ended\n",
                 g_live.size(), bytes);
    std::_Exit(1);
  }
  std::fprintf(stderr, "PASSED: the thread's OpenSSL state was freed when it ended\n");
}

}  // namespace

int main() {
  // Before OpenSSL's first allocation, as CRYPTO_set_mem_functions requires.
  if (CRYPTO_set_mem_functions(counted_malloc, counted_realloc, counted_free) != 1) {
    std::fprintf(stderr, "FAILED: CRYPTO_set_mem_functions refused\n");
    return 1;
  }
  std::atexit(release_join_and_check);
  canopy::daemon::keep_openssl_until_exit();
  // OpenSSL's global state is made here, so that what the thread allocates is
  // its own.
  ERR_clear_error();
  g_thread = new std::thread([] {
    t_watched = true;
    ERR_clear_error();  // allocates this thread's error state
    {
      std::lock_guard lock(g_live_mu);
      if (g_live.empty()) {
        std::fprintf(stderr, "FAILED: OpenSSL allocated nothing on the thread\n");
        std::_Exit(1);
      }
    }
    std::unique_lock lock(g_mu);
    g_started = true;
    g_cv.notify_all();
    g_cv.wait(lock, [] { return g_released; });
  });
  std::unique_lock lock(g_mu);
  g_cv.wait(lock, [] { return g_started; });
  return 0;
}
