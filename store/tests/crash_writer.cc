// crash_writer: the child that crash_test kills.
//
//   crash_writer <store dir> <sync|group> <iteration>
//
// Opens the store (replica 42) with Durability::kSync ("sync", one writer
// thread) or kGroupCommit ("group", two writer threads and one writing with
// put_value_async), prints "ready", then
// writes documents until it is killed, printing "ack <key> <n>" on stdout after
// each write has returned OK. <n> grows with every write (the iteration in the
// upper 32 bits), so the parent can tell which value a key must hold at least.
// A store listener prints "pub <seq>" for every entry it is handed: a peer
// could have received it, so it too must survive the crash.
// The document written with <n> is {"iter":<iteration>,"n":<n>,"pad":<pad>}.
// Exits by itself after a while if nobody kills it.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "store/store.h"

namespace {

using json = nlohmann::json;

constexpr uint64_t kReplica = 42;
constexpr int kKeysPerThread = 25;
constexpr auto kMaxRun = std::chrono::seconds(20);

std::mutex out_mu;

void say(const std::string& line) {
  std::lock_guard lock(out_mu);
  const std::string l = line + "\n";
  size_t done = 0;
  while (done < l.size()) {
    const ssize_t n = ::write(STDOUT_FILENO, l.data() + done, l.size() - done);
    if (n <= 0) std::_Exit(3);
    done += static_cast<size_t>(n);
  }
}

std::string pad_for(int thread) { return std::string(100 + 50 * thread, 'p'); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: crash_writer <dir> <sync|group> <iteration>\n");
    return 2;
  }
  const std::string mode = argv[2];
  const uint64_t iteration = std::strtoull(argv[3], nullptr, 10);
  canopy::StoreOptions o;
  o.path = argv[1];
  o.replica_id = kReplica;
  o.durability = mode == "group" ? canopy::Durability::kGroupCommit : canopy::Durability::kSync;
  auto store = canopy::Store::open(o);
  if (!store.ok()) {
    std::fprintf(stderr, "crash_writer: %s\n", store.status().to_string().c_str());
    return 1;
  }
  canopy::Store& s = **store;
  // What listeners see goes to peers at once: it must be durable already.
  s.subscribe([](const canopy::v1::LogEntry& e) {
    if (e.has_delta()) say("pub " + std::to_string(e.delta().dot().seq()));
  });
  say("ready");

  const int threads = mode == "group" ? 2 : 1;
  const auto deadline = std::chrono::steady_clock::now() + kMaxRun;
  std::atomic<bool> failed{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (uint64_t i = 0; std::chrono::steady_clock::now() < deadline && !failed; ++i) {
        const std::string key = "c/" + std::to_string(t) + "/" + std::to_string(i % kKeysPerThread);
        const uint64_t n = (iteration << 32) | i;
        // Puts and merge patches alternate; both leave the same document.
        canopy::StatusOr<canopy::v1::Delta> d =
            i % 2 == 0
                ? s.put(key, json{{"iter", iteration}, {"n", n}, {"pad", pad_for(t)}}.dump())
                : s.patch(key, json{{"iter", iteration}, {"n", n}, {"pad", pad_for(t)}}.dump());
        if (!d.ok()) {
          std::fprintf(stderr, "crash_writer: %s\n", d.status().to_string().c_str());
          failed = true;
          return;
        }
        say("ack " + key + " " + std::to_string(n));
      }
    });
  }
  if (mode == "group") {
    // And a writer whose writes nobody waits for (put_value_async), at most
    // kWindow in flight: its "ack" is said by the store's completion, which
    // must come only once the write is durable.
    constexpr int kWindow = 8;
    workers.emplace_back([&] {
      const int t = threads;
      std::mutex mu;
      std::condition_variable cv;
      int in_flight = 0;
      for (uint64_t i = 0; std::chrono::steady_clock::now() < deadline && !failed; ++i) {
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return in_flight < kWindow; });
          ++in_flight;
        }
        const std::string key = "c/" + std::to_string(t) + "/" + std::to_string(i % kKeysPerThread);
        const uint64_t n = (iteration << 32) | i;
        s.put_value_async(key, json{{"iter", iteration}, {"n", n}, {"pad", pad_for(t)}}, 0,
                          [&, key, n](canopy::StatusOr<canopy::v1::Delta> d) {
                            if (!d.ok()) {
                              std::fprintf(stderr, "crash_writer: %s\n",
                                           d.status().to_string().c_str());
                              failed = true;
                            } else {
                              say("ack " + key + " " + std::to_string(n));
                            }
                            std::lock_guard lock(mu);
                            --in_flight;
                            cv.notify_one();
                          });
      }
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight == 0; });
    });
  }
  for (auto& w : workers) w.join();
  return failed ? 1 : 0;
}
