#include "tests/support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

extern char** environ;

namespace canopy::testing {
namespace {

void set_error(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
}

std::string errno_text(int err) { return std::strerror(err); }

// Resolves a program name the way execvp would, but in the parent, so that the
// child only has to call execve (fork in a threaded process allows only
// async-signal-safe calls in the child).
std::optional<std::string> resolve_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path_env = std::getenv("PATH");
  std::string path = (path_env != nullptr && path_env[0] != '\0') ? path_env : "/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= path.size()) {
    size_t end = path.find(':', begin);
    if (end == std::string::npos) end = path.size();
    std::string candidate(path, begin, end - begin);
    if (candidate.empty()) candidate.push_back('.');
    candidate.push_back('/');
    candidate.append(name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return std::nullopt;
}

std::vector<std::string> build_environment(
    const std::vector<std::pair<std::string, std::string>>& additions) {
  std::map<std::string, std::string> vars;
  std::vector<std::string> order;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string item(*entry);
    size_t eq = item.find('=');
    if (eq == std::string::npos) continue;
    std::string key = item.substr(0, eq);
    if (vars.emplace(key, item.substr(eq + 1)).second) order.push_back(key);
  }
  for (const auto& [key, value] : additions) {
    if (vars.find(key) == vars.end()) order.push_back(key);
    vars[key] = value;
  }
  std::vector<std::string> result;
  result.reserve(order.size());
  for (const auto& key : order) result.push_back(key + "=" + vars[key]);
  return result;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

// Closes every descriptor >= 3 except `keep`. Only async-signal-safe calls.
void close_inherited_fds(int keep, int max_fd) {
  auto close_span = [max_fd](unsigned first, unsigned last) {
    if (first > last) return;
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, first, last, 0) == 0) return;
#endif
    unsigned stop = std::min(last, static_cast<unsigned>(max_fd));
    for (unsigned fd = first; fd <= stop; ++fd) ::close(static_cast<int>(fd));
  };
  close_span(3, static_cast<unsigned>(keep) - 1);
  close_span(static_cast<unsigned>(keep) + 1, ~0U);
}

// Reports errno to the parent through `error_fd` and exits the child.
[[noreturn]] void fail_exec(int error_fd) {
  int err = errno;
  ssize_t ignored = ::write(error_fd, &err, sizeof(err));
  (void)ignored;
  ::_exit(127);
}

// Runs in the child between fork and exec: async-signal-safe calls only. On
// failure it writes errno to `error_fd` and exits with 127.
[[noreturn]] void exec_child(pid_t parent, int error_fd, int log_fd, int null_fd, const char* cwd,
                             const char* program, char* const* argv, char* const* envp,
                             int max_fd) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail_exec(error_fd);
  // The parent may have died before prctl took effect.
  if (::getppid() != parent) ::_exit(127);

  sigset_t all;
  ::sigemptyset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }

  if (::dup2(null_fd, STDIN_FILENO) < 0) fail_exec(error_fd);
  if (log_fd >= 0) {
    if (::dup2(log_fd, STDOUT_FILENO) < 0) fail_exec(error_fd);
    if (::dup2(log_fd, STDERR_FILENO) < 0) fail_exec(error_fd);
  }
  // The error pipe is close-on-exec, so exec itself closes it on success.
  close_inherited_fds(error_fd, max_fd);
  if (cwd != nullptr && ::chdir(cwd) != 0) fail_exec(error_fd);
  ::execve(program, argv, envp);
  fail_exec(error_fd);
}

}  // namespace

Process::~Process() { kill_and_reap(); }

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), status_(std::exchange(other.status_, std::nullopt)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

bool Process::start(const std::vector<std::string>& argv, const ProcessOptions& options,
                    std::string* error) {
  if (pid_ > 0 && !poll()) {
    set_error(error, "a child is already running (pid " + std::to_string(pid_) + ")");
    return false;
  }
  pid_ = -1;
  status_.reset();
  if (argv.empty()) {
    set_error(error, "argv is empty");
    return false;
  }
  std::optional<std::string> program = resolve_program(argv[0]);
  if (!program) {
    set_error(error, "program \"" + argv[0] + "\" not found in PATH");
    return false;
  }

  std::vector<std::string> args = argv;
  std::vector<std::string> env = build_environment(options.env);
  std::vector<char*> c_args = c_strings(args);
  std::vector<char*> c_env = c_strings(env);

  int log_fd = -1;
  if (!options.log_path.empty()) {
    log_fd = ::open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      set_error(error, "cannot open log \"" + options.log_path + "\": " + errno_text(errno));
      return false;
    }
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int pipe_fds[2] = {-1, -1};
  if (null_fd < 0 || ::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    int err = errno;
    if (log_fd >= 0) ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    set_error(error, "cannot set up child descriptors: " + errno_text(err));
    return false;
  }
  rlimit limit{};
  int max_fd = 4096;
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 20));
  }

  const char* cwd = options.cwd.empty() ? nullptr : options.cwd.c_str();
  pid_t parent = ::getpid();
  pid_t child = ::fork();
  if (child == 0) {
    exec_child(parent, pipe_fds[1], log_fd, null_fd, cwd, program->c_str(), c_args.data(),
               c_env.data(), max_fd);
  }
  int fork_errno = errno;
  ::close(pipe_fds[1]);
  if (log_fd >= 0) ::close(log_fd);
  ::close(null_fd);
  if (child < 0) {
    ::close(pipe_fds[0]);
    set_error(error, "fork failed: " + errno_text(fork_errno));
    return false;
  }

  // The pipe reads EOF when exec succeeded (close-on-exec) and an errno when
  // it did not.
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(pipe_fds[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  pid_ = child;
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    kill_and_reap();
    pid_ = -1;
    status_.reset();
    set_error(error, "cannot execute \"" + *program + "\": " + errno_text(child_errno));
    return false;
  }
  return true;
}

bool Process::kill(int sig) {
  if (pid_ <= 0 || poll()) return false;
  return ::kill(pid_, sig) == 0;
}

bool Process::stop(std::chrono::milliseconds timeout) {
  if (!kill(SIGSTOP)) return false;
  // The kernel reports the stop to the parent (WUNTRACED) once the whole
  // thread group has stopped.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WUNTRACED | WNOHANG);
    if (r == pid_) {
      if (WIFSTOPPED(status)) return true;
      status_ = status;  // exited meanwhile
      return false;
    }
    if (r < 0 && errno != EINTR) return false;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto interval = std::chrono::milliseconds(1);
  while (!poll()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(interval, deadline - now));
    interval = std::min(interval * 2, std::chrono::milliseconds(20));
  }
  return status_;
}

bool Process::running() { return pid_ > 0 && !poll(); }

bool Process::poll() {
  if (status_) return true;
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    status_ = status;
    return true;
  }
  if (r < 0 && errno == ECHILD) {
    // Reaped elsewhere (e.g. someone called waitpid(-1)): the status is lost.
    status_ = -1;
    return true;
  }
  return false;
}

void Process::kill_and_reap() {
  if (pid_ <= 0 || status_) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  status_ = (r == pid_) ? status : -1;
}

std::string describe_wait_status(int status) {
  if (status == -1) return "unknown status (reaped elsewhere)";
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + " (" + (name ? name : "?") + ")" +
           (WCOREDUMP(status) ? ", core dumped" : "");
  }
  return "wait status " + std::to_string(status);
}

}  // namespace canopy::testing
