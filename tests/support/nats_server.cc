#include "tests/support/nats_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/support/free_port.h"

namespace canopy::testing {
namespace {

// How often a first start() picks new ports after losing a race for them.
constexpr int kMaxPortAttempts = 3;
constexpr auto kPollInterval = std::chrono::milliseconds(20);
constexpr auto kKillWait = std::chrono::seconds(10);

void set_error(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
}

std::string find_nats_server(const std::string& configured) {
  if (!configured.empty()) return configured;
  const char* env = std::getenv("CANOPY_NATS_SERVER");
  if (env != nullptr && env[0] != '\0') return env;
  std::vector<std::string> dirs;
  const char* path = std::getenv("PATH");
  if (path != nullptr) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
      if (!dir.empty()) dirs.push_back(dir);
    }
  }
  dirs.push_back("/usr/sbin");
  dirs.push_back("/usr/local/sbin");
  for (const auto& dir : dirs) {
    std::string candidate = dir + "/nats-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "nats-server";  // Let Process report it as not found.
}

// Connects to 127.0.0.1:port and reads until the NATS greeting arrives.
bool greeting_received(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval tv{};
  tv.tv_sec = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string received;
    char buffer[512];
    while (received.size() < 4096 && received.find("INFO {") == std::string::npos) {
      ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      received.append(buffer, static_cast<size_t>(n));
    }
    ok = received.rfind("INFO {", 0) == 0;
  }
  ::close(fd);
  return ok;
}

}  // namespace

std::string tls_block(const NatsTlsFiles& tls, int indent) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  std::ostringstream out;
  out << pad << "tls {\n";
  if (!tls.cert_file.empty()) out << pad << "  cert_file: \"" << tls.cert_file << "\"\n";
  if (!tls.key_file.empty()) out << pad << "  key_file: \"" << tls.key_file << "\"\n";
  if (!tls.ca_file.empty()) out << pad << "  ca_file: \"" << tls.ca_file << "\"\n";
  if (tls.verify_and_map) {
    out << pad << "  verify_and_map: true\n";
  } else if (tls.verify) {
    out << pad << "  verify: true\n";
  }
  out << pad << "  timeout: " << tls.timeout_s << "\n" << pad << "}\n";
  return out.str();
}

NatsServer::NatsServer(NatsServerOptions options)
    : options_(std::move(options)), dir_("canopy-nats-") {}

std::string NatsServer::url() const {
  if (port_ == 0) return "";
  return (options_.tls.cert_file.empty() ? "nats://127.0.0.1:" : "tls://127.0.0.1:") +
         std::to_string(port_);
}

bool NatsServer::start(std::string* error) {
  if (process_.running()) {
    set_error(error, "nats-server is already running on " + url());
    return false;
  }
  if (port_ != 0) return launch(error) && wait_ready(error);

  std::string last_error;
  for (int attempt = 0; attempt < kMaxPortAttempts; ++attempt) {
    port_ = pick_free_port();
    do {
      monitor_port_ = pick_free_port();
    } while (monitor_port_ == port_ && port_ > 0);
    if (port_ <= 0 || monitor_port_ <= 0) {
      port_ = monitor_port_ = 0;
      set_error(error, "no free port on 127.0.0.1");
      return false;
    }
    if (!write_config(error)) {
      port_ = monitor_port_ = 0;
      return false;
    }
    if (!launch(&last_error)) break;
    if (wait_ready(&last_error)) return true;
    // Another process may have taken a port between pick and bind.
    if (last_error.find("address already in use") == std::string::npos) break;
    process_.kill(SIGKILL);
    process_.wait_exit(kKillWait);
  }
  port_ = monitor_port_ = 0;
  set_error(error, last_error);
  return false;
}

bool NatsServer::write_config(std::string* error) const {
  std::ofstream out(config_path(), std::ios::trunc);
  out << "# Written by canopy::testing::NatsServer; loopback only.\n"
      << "listen: \"127.0.0.1:" << port_ << "\"\n"
      << "http: \"127.0.0.1:" << monitor_port_ << "\"\n"
      << "max_payload: " << options_.max_payload << "\n";
  if (!options_.tls.cert_file.empty()) out << tls_block(options_.tls);
  if (!options_.extra_config.empty()) out << "\n" << options_.extra_config << "\n";
  out.close();
  if (!out) {
    set_error(error, "cannot write " + config_path());
    return false;
  }
  return true;
}

bool NatsServer::launch(std::string* error) {
  ProcessOptions process_options;
  process_options.log_path = log_path();
  process_options.cwd = dir_.path().string();
  std::string binary = find_nats_server(options_.binary);
  std::string reason;
  if (!process_.start({binary, "-c", config_path()}, process_options, &reason)) {
    set_error(error, "cannot start nats-server: " + reason);
    return false;
  }
  return true;
}

bool NatsServer::wait_ready(std::string* error) {
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (true) {
    if (!process_.running()) {
      std::optional<int> status = process_.wait_exit(std::chrono::milliseconds(0));
      set_error(error, "nats-server " + describe_wait_status(status.value_or(-1)) +
                           " before accepting clients on port " + std::to_string(port_) + "; log " +
                           log_path() + " ends with:\n" + log_tail());
      return false;
    }
    if (greeting_received(port_)) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      process_.kill(SIGKILL);
      process_.wait_exit(kKillWait);
      set_error(error, "nats-server did not accept clients on port " + std::to_string(port_) +
                           " within " + std::to_string(options_.start_timeout.count()) +
                           " ms; log " + log_path() + " ends with:\n" + log_tail());
      return false;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

bool NatsServer::stop(std::chrono::milliseconds timeout) {
  if (!process_.running()) return true;
  process_.kill(SIGTERM);
  if (process_.wait_exit(timeout)) return true;
  process_.kill(SIGKILL);
  process_.wait_exit(kKillWait);
  return false;
}

void NatsServer::kill() {
  if (!process_.running()) return;
  process_.kill(SIGKILL);
  process_.wait_exit(kKillWait);
}

bool NatsServer::running() { return process_.running(); }

std::string NatsServer::log_tail(size_t max_bytes) const {
  std::ifstream in(log_path(), std::ios::binary);
  if (!in) return "(no log)";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff start = size > static_cast<std::streamoff>(max_bytes)
                             ? size - static_cast<std::streamoff>(max_bytes)
                             : 0;
  in.seekg(start);
  std::string tail(static_cast<size_t>(size - start), '\0');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  return tail;
}

}  // namespace canopy::testing
