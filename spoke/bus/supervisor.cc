#include "spoke/bus/supervisor.h"

#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <vector>

#include "store/file_io.h"

namespace canopy::spoke::bus {
namespace {

constexpr size_t kRecentLines = 30;
constexpr size_t kMaxLineBytes = 16 * 1024;  // a longer line is logged in pieces
constexpr auto kPollInterval = std::chrono::milliseconds(100);
constexpr auto kStableRun = std::chrono::seconds(60);  // resets the backoff

std::string find_binary(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return ::access(name.c_str(), X_OK) == 0 ? name : "";
  }
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
      if (!dir.empty()) dirs.push_back(dir);
    }
  }
  dirs.push_back("/usr/sbin");
  dirs.push_back("/usr/local/sbin");
  for (const auto& dir : dirs) {
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           ::strsignal(WTERMSIG(status)) + ")";
  }
  return "ended with status " + std::to_string(status);
}

// nats-server's level tag ("[1234] [WRN] ...") as spdlog's level.
spdlog::level::level_enum level_of(const std::string& line) {
  if (line.find("[ERR]") != std::string::npos || line.find("[FTL]") != std::string::npos) {
    return spdlog::level::err;
  }
  if (line.find("[WRN]") != std::string::npos) return spdlog::level::warn;
  if (line.find("[DBG]") != std::string::npos || line.find("[TRC]") != std::string::npos) {
    return spdlog::level::debug;
  }
  return spdlog::level::info;
}

}  // namespace

BusSupervisor::BusSupervisor(BusSpec spec, SupervisorOptions options)
    : spec_(std::move(spec)), options_(std::move(options)) {}

BusSupervisor::~BusSupervisor() { stop(); }

pid_t BusSupervisor::pid() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pid_;
}

bool BusSupervisor::ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ready_;
}

BusSpec BusSupervisor::spec() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spec_;
}

std::string BusSupervisor::client_url() const {
  std::lock_guard<std::mutex> lock(mu_);
  return "nats://127.0.0.1:" + std::to_string(spec_.client_port);
}

std::string BusSupervisor::recent_log() const {
  std::string out;
  for (const auto& l : recent_) out += "\n  " + l;
  return out.empty() ? " (it logged nothing)" : out;
}

Status BusSupervisor::start() {
  CANOPY_CHECK(!started_);
  started_ = true;
  auto config = render_nats_config(spec_);
  if (!config.ok()) return config.status();
  binary_ = find_binary(options_.nats_server);
  if (binary_.empty()) {
    return failed_precondition("bus.nats_server: \"" + options_.nats_server +
                               "\" is not an executable (nor found in $PATH, /usr/sbin, "
                               "/usr/local/sbin); install Debian's nats-server");
  }
  std::error_code ec;
  std::filesystem::create_directories(spec_.dir, ec);
  if (ec) return unavailable("bus.dir: cannot create " + spec_.dir + ": " + ec.message());
  CANOPY_RETURN_IF_ERROR(write_file_atomically(config_path(), *config, 0600));
  spdlog::info("bus: starting {} -c {} (MQTT on {}:{}, domain {}, {} tenant(s), uplink {})",
               binary_, config_path(), spec_.mqtt_host, spec_.mqtt_port, jetstream_domain(spec_),
               spec_.tenants.size(),
               spec_.leaf_urls.empty() ? "none" : redact_url(spec_.leaf_urls.front()));
  thread_ = std::thread([this] { run(); });
  std::unique_lock<std::mutex> lock(mu_);
  const bool done =
      cv_.wait_for(lock, options_.ready_timeout, [this] { return ready_ || exited_since_start_; });
  if (ready_) return ok_status();
  const std::string why = done ? "exited before it was ready" : "was not ready in time";
  const std::string log = recent_log();
  lock.unlock();
  stop();
  return unavailable("bus: nats-server " + why + "; its last lines:" + log);
}

Status BusSupervisor::update(const BusSpec& spec) {
  CANOPY_CHECK(started_);
  auto config = render_nats_config(spec);
  if (!config.ok()) return config.status();
  const BusSpec old = this->spec();
  if (const std::string field = restart_only_difference(old, spec); !field.empty()) {
    return failed_precondition("bus." + field +
                               " changed: nats-server cannot apply that by reload, and the bus "
                               "is not restarted for a change; restart the spoke to apply it");
  }
  auto old_config = render_nats_config(old);
  CANOPY_CHECK(old_config.ok());
  if (*old_config == *config) return ok_status();
  CANOPY_RETURN_IF_ERROR(write_file_atomically(config_path(), *config, 0600));
  std::unique_lock<std::mutex> lock(mu_);
  spec_ = spec;
  if (pid_ < 0 || !ready_) {
    // Between a death and a restart: the next server reads the new file. A
    // server that started before the write and is not ready yet gets the
    // SIGHUP below once ready.
    if (!cv_.wait_for(lock, options_.ready_timeout, [this] { return pid_ > 0 && ready_; })) {
      return ok_status();  // the next start reads the new config
    }
  }
  const uint64_t ok_before = reload_ok_;
  const uint64_t failed_before = reload_failed_;
  ::kill(pid_, SIGHUP);
  const bool answered = cv_.wait_for(lock, options_.reload_timeout, [&] {
    return reload_ok_ != ok_before || reload_failed_ != failed_before || pid_ < 0;
  });
  if (answered && reload_ok_ != ok_before) {
    reloads_.fetch_add(1);
    spdlog::info("bus: reloaded ({} tenant(s))", spec.tenants.size());
    return ok_status();
  }
  const std::string why = !answered ? "nats-server did not confirm the reload in time"
                          : reload_failed_ != failed_before
                              ? "nats-server refused the reload: " + reload_error_
                              : "nats-server exited during the reload";
  spec_ = old;
  lock.unlock();
  if (Status st = write_file_atomically(config_path(), *old_config, 0600); !st.ok()) {
    spdlog::error("bus: cannot restore the previous config: {}", st.to_string());
  }
  return unavailable("bus: " + why);
}

void BusSupervisor::stop() {
  if (!thread_.joinable()) return;
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    if (pid_ > 0) ::kill(pid_, SIGINT);
    cv_.notify_all();
    if (!cv_.wait_for(lock, options_.stop_timeout, [this] { return pid_ < 0; })) {
      spdlog::warn("bus: nats-server did not stop within {} ms of SIGINT; killing it",
                   options_.stop_timeout.count());
      ::kill(pid_, SIGKILL);
    }
  }
  thread_.join();
  spdlog::info("bus: stopped");
}

pid_t BusSupervisor::spawn(int* read_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    spdlog::error("bus: pipe: {}", std::strerror(errno));
    return -1;
  }
  const std::string config = config_path();
  std::vector<char*> argv = {const_cast<char*>(binary_.c_str()), const_cast<char*>("-c"),
                             const_cast<char*>(config.c_str()), nullptr};
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) {
    spdlog::error("bus: fork: {}", std::strerror(errno));
    ::close(fds[0]);
    ::close(fds[1]);
    return -1;
  }
  if (child == 0) {
    // Only async-signal-safe calls between fork and exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the spoke blocks SIGTERM and SIGINT
    ::signal(SIGPIPE, SIG_DFL);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::execv(argv[0], argv.data());
    const char msg[] = "exec of nats-server failed\n";
    [[maybe_unused]] ssize_t w = ::write(2, msg, sizeof(msg) - 1);
    ::_exit(127);
  }
  ::close(fds[1]);
  *read_fd = fds[0];
  return child;
}

void BusSupervisor::run() {
  auto backoff = options_.min_backoff;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
    }
    int fd = -1;
    const pid_t child = spawn(&fd);
    const auto started_at = std::chrono::steady_clock::now();
    if (child > 0) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        pid_ = child;
        ready_ = false;
        if (stopping_) ::kill(child, SIGINT);  // stop() came between the check and the fork
      }
      starts_.fetch_add(1);
      pump(child, fd);  // returns once the server has exited and been reaped
      ::close(fd);
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) break;
    if (restart_asked_) {  // stopped on purpose: start again at once
      restart_asked_ = false;
      continue;
    }
    if (std::chrono::steady_clock::now() - started_at > kStableRun) backoff = options_.min_backoff;
    spdlog::warn("bus: nats-server is down; starting it again in {} ms", backoff.count());
    cv_.wait_for(lock, backoff, [this] { return stopping_; });
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

void BusSupervisor::pump(pid_t child, int fd) {
  std::string buffer;
  bool eof = false;
  auto next_probe = std::chrono::steady_clock::now();
  while (!eof) {
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(kPollInterval.count()));
    if (n > 0) {
      char chunk[4096];
      const ssize_t r = ::read(fd, chunk, sizeof(chunk));
      if (r > 0) {
        buffer.append(chunk, static_cast<size_t>(r));
      } else if (r == 0 || errno != EINTR) {
        eof = true;
      }
      size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos || buffer.size() > kMaxLineBytes) {
        const size_t len = nl == std::string::npos ? kMaxLineBytes : nl;
        on_line(buffer.substr(0, len));
        buffer.erase(0, nl == std::string::npos ? len : len + 1);
      }
    }
    // Until this server answers /healthz once, ask every kPollInterval.
    bool probe = false;
    if (!eof && std::chrono::steady_clock::now() >= next_probe) {
      std::lock_guard<std::mutex> lock(mu_);
      probe = !ready_ && !stopping_;
    }
    if (!eof) kill_if_restart_overdue(child);
    if (probe) {
      next_probe = std::chrono::steady_clock::now() + kPollInterval;
      if (probe_health()) {
        std::lock_guard<std::mutex> lock(mu_);
        ready_ = true;
        cv_.notify_all();
      }
    }
  }
  if (!buffer.empty()) on_line(buffer);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || restart_asked_) {
    spdlog::info("bus: nats-server (pid {}) {}", child, describe_exit(status));
  } else {
    spdlog::error("bus: nats-server (pid {}) {}", child, describe_exit(status));
  }
  if (!ready_) exited_since_start_ = true;
  pid_ = -1;
  ready_ = false;
  cv_.notify_all();
}

void BusSupervisor::restart(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  restart_locked(reason);
}

void BusSupervisor::restart_locked(const std::string& reason) {
  if (stopping_ || pid_ < 0 || restart_asked_) return;
  spdlog::warn("bus: restarting nats-server (pid {}): {}", pid_, reason);
  restart_asked_ = true;
  restart_asked_at_ = std::chrono::steady_clock::now();
  restart_killed_ = false;
  restarts_.fetch_add(1);
  ::kill(pid_, SIGINT);
}

void BusSupervisor::kill_if_restart_overdue(pid_t child) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!restart_asked_ || restart_killed_ || stopping_ ||
      std::chrono::steady_clock::now() - restart_asked_at_ < options_.stop_timeout) {
    return;
  }
  // A server too wedged to stop cleanly is what a restart is for.
  spdlog::warn("bus: nats-server (pid {}) did not stop within {} ms of SIGINT; killing it", child,
               options_.stop_timeout.count());
  restart_killed_ = true;
  ::kill(child, SIGKILL);
}

void BusSupervisor::on_line(const std::string& line) {
  spdlog::log(level_of(line), "bus nats-server: {}", line);
  std::lock_guard<std::mutex> lock(mu_);
  recent_.push_back(line);
  if (recent_.size() > kRecentLines) recent_.pop_front();
  switch (session_watch_.note(line, std::chrono::steady_clock::now())) {
    case SessionStoreWatch::Verdict::kRestart:
      restart_locked("its MQTT session store failed to save or delete sessions " +
                     std::to_string(session_watch_.options().threshold) +
                     " times; a restart rebuilds it from the site's JetStream");
      break;
    case SessionStoreWatch::Verdict::kHeldBack:
      spdlog::error(
          "bus: nats-server's MQTT session store still fails after a restart; "
          "not restarting it again within {} s of that one",
          session_watch_.options().cooldown.count());
      break;
    case SessionStoreWatch::Verdict::kNone:
    case SessionStoreWatch::Verdict::kCounted:
      break;
  }
  if (line.find("Reloaded server configuration") != std::string::npos) {
    ++reload_ok_;
    cv_.notify_all();
  } else if (const size_t at = line.find("Failed to reload server configuration");
             at != std::string::npos) {
    ++reload_failed_;
    reload_error_ = line.substr(at);
    cv_.notify_all();
  }
}

bool BusSupervisor::probe_health() const {
  int port;
  {
    std::lock_guard<std::mutex> lock(mu_);
    port = spec_.monitor_port;
  }
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(0, 300'000);
  client.set_read_timeout(1, 0);
  auto res = client.Get("/healthz");
  return res && res->status == 200;
}

}  // namespace canopy::spoke::bus
