// Process: a child process owned by a test, killed and reaped when the owner
// goes away.
//
// start() forks and execs argv (argv[0] is looked up in $PATH unless it
// contains a '/'), with the parent's environment plus `env` (which overrides
// variables of the same name), stdin from /dev/null, and stdout and stderr
// appended to `log_path` (inherited from the parent when empty). The child
// gets none of the parent's other file descriptors, a cleared signal mask and
// default signal dispositions.
//
// The child is bound to the parent: PR_SET_PDEATHSIG delivers SIGKILL to it
// when the thread that started it exits, so a crashed or aborted test leaks no
// daemon. Consequently, start a long-lived child from a thread that outlives
// it (in gtest, the test's own thread).
//
// Exit statuses are raw waitpid() statuses: test them with WIFEXITED /
// WEXITSTATUS / WIFSIGNALED / WTERMSIG, or print them with
// describe_wait_status(). Once the child has been reaped its status is kept,
// so wait_exit() and running() may be called any number of times. A status of
// -1 means the child was reaped by someone else and its status is lost.
//
// The destructor sends SIGKILL to a child still running and reaps it. Movable,
// not copyable. REQUIRES: external synchronization.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace canopy::testing {

struct ProcessOptions {
  // Variables added to (or replacing those of) the parent's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // File that receives the child's stdout and stderr, opened for append and
  // created if missing. Empty: the child writes to the parent's stdout/stderr.
  std::string log_path;
  // Working directory of the child. Empty: the parent's.
  std::string cwd;
};

class Process {
 public:
  Process() = default;
  ~Process();

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;

  // Starts argv. Returns false and sets *error (if not null) when the program
  // cannot be found or executed, the log file cannot be opened, or fork fails;
  // the exec failure is reported here, not as an exit status. REQUIRES: no
  // child is running in this object (a finished one is forgotten).
  bool start(const std::vector<std::string>& argv, const ProcessOptions& options = {},
             std::string* error = nullptr);

  // The child's pid, or -1 if none was started.
  pid_t pid() const { return pid_; }

  // Sends `sig` to the child. Returns false if there is no child left to
  // signal (never started, or already reaped).
  bool kill(int sig);

  // SIGSTOP, then waits (up to `timeout`) until every thread of the child has
  // stopped. kill() returns once the signal is queued, and a thread running
  // on another CPU may still do some work (answer a connection) meanwhile;
  // a test of a hung process must not race that. False if the child is gone
  // or did not stop in time.
  bool stop(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Waits up to `timeout` for the child to exit and returns its raw wait
  // status, or nullopt if it is still running at the deadline (or none was
  // started).
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);

  // Whether a started child has not exited yet (reaps it if it has).
  bool running();

 private:
  // Reaps the child without blocking if it has exited; returns true if the
  // status is known.
  bool poll();
  void kill_and_reap();

  pid_t pid_ = -1;
  std::optional<int> status_;
};

// "exited with code 3", "killed by signal 9 (Killed)", ...
std::string describe_wait_status(int status);

}  // namespace canopy::testing
