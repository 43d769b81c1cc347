// Crash recovery: a child process (crash_writer) writes to a store with a
// durable mode and reports every acknowledged write; the test SIGKILLs it at a
// random moment, reopens the store and checks that every acknowledged write is
// there with its value (or a later one) and that the store works on. Repeated
// CANOPY_CRASH_ITERATIONS times (default 30) on the same directory, so each
// child also starts from a store that was killed. CANOPY_SEED replays a run.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "store/store.h"
#include "store/tests/test_util.h"

#ifndef CRASH_WRITER_PATH
#error "CRASH_WRITER_PATH must name the crash_writer binary"
#endif

namespace canopy {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kReplica = 42;

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// A running crash_writer with its stdout on a pipe.
class Child {
 public:
  Child(const std::string& dir, const std::string& mode, uint64_t iteration) {
    int fds[2];
    if (pipe(fds) != 0) std::abort();
    pid_ = fork();
    if (pid_ < 0) std::abort();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      const std::string it = std::to_string(iteration);
      execl(CRASH_WRITER_PATH, CRASH_WRITER_PATH, dir.c_str(), mode.c_str(), it.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    fd_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0) kill_now();
    if (fd_ >= 0) close(fd_);
  }

  // Reads complete lines until `deadline`; false at end of file.
  bool read_until(Clock::time_point deadline, std::vector<std::string>* lines) {
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return true;
      pollfd p{fd_, POLLIN, 0};
      const int r = poll(&p, 1, static_cast<int>(left));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return true;
      if (!read_some(lines)) return false;
    }
  }

  // Kills the child with SIGKILL and collects what it wrote before dying.
  int kill_now(std::vector<std::string>* lines = nullptr) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    if (lines != nullptr) {
      while (read_some(lines)) {
      }
    }
    return status;
  }

 private:
  bool read_some(std::vector<std::string>* lines) {
    char buf[4096];
    const ssize_t n = read(fd_, buf, sizeof(buf));
    if (n <= 0) return false;
    partial_.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = partial_.find('\n')) != std::string::npos) {
      lines->push_back(partial_.substr(0, nl));
      partial_.erase(0, nl + 1);
    }
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::string partial_;  // an unfinished line is not an acknowledgement
};

TEST(Crash, AcknowledgedWritesSurviveSigkill) {
  const uint64_t iterations = env_u64("CANOPY_CRASH_ITERATIONS", 30);
  const uint64_t seed = env_u64("CANOPY_SEED", 20240601);
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  store_test::TempDir dir;
  const std::string path = dir.sub("store");
  std::map<std::string, uint64_t> acked;  // key -> greatest acknowledged n
  uint64_t total_acks = 0;
  uint64_t max_published = 0;  // greatest seq a listener in a child was handed

  for (uint64_t it = 1; it <= iterations; ++it) {
    const std::string mode = it % 3 == 0 ? "group" : "sync";
    SCOPED_TRACE("iteration " + std::to_string(it) + " (" + mode + ")");
    std::vector<std::string> lines;
    {
      Child child(path, mode, it);
      // Wait for the store to be open, then let it write for 5-200 ms.
      const auto ready_by = Clock::now() + std::chrono::seconds(30);
      while (std::find(lines.begin(), lines.end(), "ready") == lines.end()) {
        ASSERT_LT(Clock::now(), ready_by) << "crash_writer did not open the store";
        ASSERT_TRUE(child.read_until(Clock::now() + std::chrono::milliseconds(50), &lines))
            << "crash_writer exited before it was ready";
      }
      const auto delay = std::chrono::milliseconds(5 + rng() % 196);
      const bool alive = child.read_until(Clock::now() + delay, &lines);
      ASSERT_TRUE(alive) << "crash_writer exited early";
      const int status = child.kill_now(&lines);
      EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    }
    size_t acks = 0;
    for (const std::string& line : lines) {
      if (line == "ready") continue;
      std::istringstream in(line);
      std::string word, key;
      uint64_t n = 0;
      in >> word;
      if (word == "pub") {
        in >> n;
        max_published = std::max(max_published, n);
        continue;
      }
      in >> key >> n;
      ASSERT_EQ(word, "ack") << line;
      uint64_t& best = acked[key];
      best = std::max(best, n);
      ++acks;
    }
    total_acks += acks;

    // Reopen: every acknowledged write is there, with its value or a later one.
    StoreOptions o;
    o.path = path;
    o.replica_id = kReplica;
    o.durability = Durability::kSync;
    auto reopened = Store::open(o);
    ASSERT_TRUE(reopened.ok()) << reopened.status().to_string();
    Store& s = **reopened;
    for (const auto& [key, n] : acked) {
      auto got = s.get(key);
      ASSERT_TRUE(got.ok()) << key << " (acknowledged n=" << n << "): " << got.status().to_string();
      const json doc = json::parse(*got);
      const uint64_t have = doc.at("n").get<uint64_t>();
      EXPECT_GE(have, n) << key << " lost an acknowledged write";
      const int thread = key[2] - '0';
      const json want = {
          {"iter", have >> 32}, {"n", have}, {"pad", std::string(100 + 50 * thread, 'p')}};
      EXPECT_EQ(*got, want.dump()) << key;
    }
    // Every acknowledged write took its own seq, and none was handed out twice.
    EXPECT_GE(s.version_vector().contiguous(kReplica), total_acks);
    // Every write a listener was handed (and could have sent to a peer) is
    // there: otherwise its seq would be reused for another write.
    EXPECT_GE(s.version_vector().contiguous(kReplica), max_published);
    // Only this replica's writes, if any: a writer killed before its first
    // write returned (5 ms after "ready" on a busy machine) leaves none.
    EXPECT_EQ(s.version_vector().size(), s.version_vector().contiguous(kReplica) > 0 ? 1u : 0u);
    auto log = s.log_since(s.log_epoch(), 0, nullptr, 1'000'000);
    ASSERT_TRUE(log.ok());
    EXPECT_EQ(log->entries.size(), s.last_log_index());
    uint64_t expect_seq = 1;
    for (const auto& e : log->entries) {
      ASSERT_TRUE(e.has_delta());
      EXPECT_EQ(e.delta().dot().seq(), expect_seq++) << "log entry " << e.index();
    }
    // And the store takes writes again.
    ASSERT_TRUE(s.put("c/after-crash", json{{"it", it}}.dump()).ok());
    if (HasFatalFailure()) return;
  }
  RecordProperty("acknowledged_writes", static_cast<int>(total_acks));
  EXPECT_GT(total_acks, 0u);
}

}  // namespace
}  // namespace canopy
