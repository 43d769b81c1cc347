// device.connections: 100,000 concurrent MQTT connections held by one site's
// device bus for 60 s, and the same against Debian's mosquitto in the same
// run (issue 14, benchmark 2).
//
// Canopy's broker is the site bus as the spoke runs it: BusSupervisor (the
// spoke's code) renders the config from a BusSpec and supervises Debian's
// nats-server; the devices are users of their tenants' accounts (--tenants
// accounts, devices spread over them), MQTT only, one bcrypt hash of cost
// --bcrypt-cost shared by all (a real site has one hash per device; the
// server's work per CONNECT is the same), each allowed only its own topics;
// the leaf remote points at a hub nats-server, as on a site. mosquitto
// (Debian's, persistence off) gets the same devices in a password_file (its
// own PBKDF2-SHA512 hash from mosquitto_passwd, one for all) and an ACL
// pattern giving each client its own t/+/d/<client id>/# subtree. Each
// broker's max_connections is set in its generated config to the count plus
// a margin; no system setting is changed (they are printed on stderr).
//
// The devices are one process, one thread: bench/mqtt_swarm.h (epoll,
// non-blocking sockets, CONNECT/CONNACK then PINGREQ every --ping seconds,
// source addresses 127.0.0.2... at --per-source connections each, --window
// connects in flight). The fd limit is raised with setrlimit before any
// broker starts, so the brokers inherit it.
//
// Per broker: connections held at the end of the hold (target: all),
// connect failures and refusals, connections lost during the hold (target
// 0), time to connect all and the rate, the broker's RSS (VmRSS from /proc)
// before and after, its growth per held connection, the kernel's TCP buffer
// memory (/proc/net/sockstat, both ends of each loopback connection), and
// the broker's CPU seconds for the connects and its CPU share while holding.
//
//   canopy_device_connections_bench [--connections 100000] [--hold 60]
//       [--ping 30] [--window 64] [--per-source 2000] [--tenants 4]
//       [--bcrypt-cost 4] [--connect-limit 900] [--brokers canopy,mosquitto]
//       [--fit-fd-limit 0|1]
//
// The fd limit: raising the hard RLIMIT_NOFILE takes CAP_SYS_RESOURCE. Without
// it the run stops and says how many connections the host allows, or with
// --fit-fd-limit 1 runs that many; connections_tried (target 100000) and
// *_held show the shortfall.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/mqtt_swarm.h"
#include "bench/report.h"
#include "daemon/password_hash.h"
#include "spoke/bus/supervisor.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace canopy::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kBench[] = "device.connections";
constexpr char kDevicePassword[] = "device-pw";
// max_connections in each broker's config: the devices plus this margin
// (the spoke's own connections, a monitoring client).
constexpr int kConnectionMargin = 64;

struct Args {
  int connections = 100'000;
  int hold_s = 60;
  int ping_s = 30;
  int window = 64;
  int per_source = 2'000;
  int tenants = 4;
  int bcrypt_cost = daemon::kMinBcryptCost;
  int connect_limit_s = 900;
  std::string brokers = "canopy,mosquitto";
  // 1: when the fd limit cannot be raised to --connections, run as many as
  // it allows (connections_tried says how many) instead of stopping.
  int fit_fd_limit = 0;
};

// The issue's target: connections held by one site.
constexpr int kTargetConnections = 100'000;

[[noreturn]] void die(const std::string& what) { fail_bench(kBench, what); }

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// VmRSS of `pid` in kB.
double rss_kb(pid_t pid) {
  std::istringstream in(read_all("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("VmRSS:")) return std::stod(line.substr(6));
  }
  die("no VmRSS for pid " + std::to_string(pid));
}

// User + system CPU time of `pid`, in seconds.
double cpu_seconds(pid_t pid) {
  const std::string stat = read_all("/proc/" + std::to_string(pid) + "/stat");
  // Fields after the command name (which may hold spaces) start after ')'.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::vector<std::string> f;
  for (std::string x; rest >> x;) f.push_back(x);
  if (f.size() < 13) die("cannot read /proc/" + std::to_string(pid) + "/stat");
  // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
  return (std::stod(f[11]) + std::stod(f[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The kernel's TCP buffer memory in MiB ("TCP: ... mem <pages>").
double kernel_tcp_mem_mb() {
  std::istringstream in(read_all("/proc/net/sockstat"));
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("TCP:")) continue;
    const auto at = line.find(" mem ");
    if (at == std::string::npos) break;
    return std::stod(line.substr(at + 5)) * static_cast<double>(sysconf(_SC_PAGESIZE)) /
           (1024.0 * 1024.0);
  }
  return 0;
}

std::string sysctl(const std::string& name) {
  std::string path = "/proc/sys/" + name;
  for (char& c : path) {
    if (c == '.') c = '/';
  }
  std::string v = read_all(path);
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
  for (char& c : v) {
    if (c == '\t') c = ' ';
  }
  return v.empty() ? "?" : v;
}

// Each process (these devices, and the broker: it inherits the limit) holds
// one descriptor per connection plus its own files, these many at most.
constexpr int kFdsBeyondConnections = 1000;

// Raises RLIMIT_NOFILE to `want` (soft, and hard when below): the brokers
// started later inherit it. Raising the hard limit takes CAP_SYS_RESOURCE;
// without it the run stops and says how many connections this host allows.
// With `fit`, it raises the soft limit to the hard one instead and returns
// the connections that allows.
int raise_fd_limit(int connections, bool fit) {
  const rlim_t want = static_cast<rlim_t>(connections) + kFdsBeyondConnections;
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur >= want) return connections;
  rlimit up{want, std::max(want, rl.rlim_max)};
  if (::setrlimit(RLIMIT_NOFILE, &up) == 0) return connections;
  const int err = errno;
  const long most = static_cast<long>(rl.rlim_max) - kFdsBeyondConnections;
  if (fit && most > 0) {
    rlimit hard{rl.rlim_max, rl.rlim_max};
    if (::setrlimit(RLIMIT_NOFILE, &hard) != 0) die("setrlimit to the hard limit failed");
    std::fprintf(stderr,
                 "RLIMIT_NOFILE: hard limit %ld and no CAP_SYS_RESOURCE to raise it: "
                 "%ld connections instead of %d\n",
                 static_cast<long>(rl.rlim_max), most, connections);
    return static_cast<int>(std::min<long>(most, connections));
  }
  die("setrlimit(RLIMIT_NOFILE, " + std::to_string(want) + "): " + std::strerror(err) +
      "; the hard limit is " + std::to_string(rl.rlim_max) +
      " and raising it takes CAP_SYS_RESOURCE (fs.nr_open = " + sysctl("fs.nr_open") +
      "), so this host allows at most --connections " + std::to_string(std::max(0L, most)));
}

void readable_by_all(const std::string& path) {
  namespace fs = std::filesystem;
  fs::permissions(path,
                  fs::perms::group_read | fs::perms::others_read |
                      (fs::is_directory(path) ? fs::perms::group_exec | fs::perms::others_exec
                                              : fs::perms::none),
                  fs::perm_options::add);
}

std::string device_id(int i) { return "dev-" + std::to_string(i); }
// "t<n>"; built without operator+ on a literal, which GCC 12's -Wrestrict
// misreads when inlined.
std::string tenant_name(int t) {
  std::string name = std::to_string(t);
  name.insert(name.begin(), 't');
  return name;
}
std::string tenant_of(const Args& a, int i) { return tenant_name(i % a.tenants); }

// --- The site bus: the spoke's BusSupervisor on Debian's nats-server.
class CanopyBroker {
 public:
  explicit CanopyBroker(const Args& a) : a_(a) {}
  ~CanopyBroker() { stop(); }
  void start() {
    const int leaf_port = testing::pick_free_port();
    testing::NatsServerOptions o;
    o.extra_config = "leafnodes { listen: \"127.0.0.1:" + std::to_string(leaf_port) + "\" }";
    hub_ = std::make_unique<testing::NatsServer>(o);
    std::string err;
    if (!hub_->start(&err)) die("hub nats-server: " + err);
    spoke::bus::BusSpec spec;
    spec.site = "shop-1";
    spec.dir = dir_.file("bus");
    spec.client_port = testing::pick_free_port();
    spec.mqtt_port = testing::pick_free_port();
    spec.monitor_port = testing::pick_free_port();
    spec.leaf_urls = {"nats-leaf://127.0.0.1:" + std::to_string(leaf_port)};
    spec.limits.max_connections = a_.connections + kConnectionMargin;
    spec.spoke_password_hash =
        *daemon::bcrypt_hash(daemon::random_password(32), daemon::kMinBcryptCost);
    auto hash = daemon::bcrypt_hash(kDevicePassword, a_.bcrypt_cost);
    if (!hash.ok()) die("bcrypt: " + hash.status().to_string());
    for (int t = 0; t < a_.tenants; ++t) spec.tenants.push_back({tenant_name(t), {}});
    for (int i = 0; i < a_.connections; ++i) {
      spec.tenants[static_cast<size_t>(i % a_.tenants)].devices.push_back(
          {device_id(i), *hash, spoke::bus::DeviceScope::kDevice});
    }
    port_ = spec.mqtt_port;
    spoke::bus::SupervisorOptions so;
    so.ready_timeout = std::chrono::minutes(5);
    bus_ = std::make_unique<spoke::bus::BusSupervisor>(std::move(spec), so);
    if (Status s = bus_->start(); !s.ok()) die("site bus: " + s.to_string());
  }
  void stop() {
    if (bus_) bus_->stop();
    bus_.reset();
    hub_.reset();
  }
  pid_t pid() const { return bus_->pid(); }
  int port() const { return port_; }
  SwarmCredentials credentials(int i) const {
    return {device_id(i), device_id(i) + "@" + tenant_of(a_, i), kDevicePassword};
  }

 private:
  const Args& a_;
  testing::TempDir dir_{"canopy-bench-conns-"};
  std::unique_ptr<testing::NatsServer> hub_;
  std::unique_ptr<spoke::bus::BusSupervisor> bus_;
  int port_ = 0;
};

// --- Debian's mosquitto with a password file and an ACL pattern.
class MosquittoBroker {
 public:
  explicit MosquittoBroker(const Args& a) : a_(a) {}
  ~MosquittoBroker() { stop(); }
  void start() {
    // One hash made by mosquitto_passwd itself, given to every device.
    const std::string one = dir_.file("one.passwd");
    testing::Process mk;
    std::string err;
    if (!mk.start({"mosquitto_passwd", "-c", "-b", one, "dev", kDevicePassword}, {}, &err)) {
      die("mosquitto_passwd: " + err);
    }
    const auto st = mk.wait_exit(std::chrono::seconds(30));
    if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) die("mosquitto_passwd failed");
    const std::string line = read_all(one);
    const auto colon = line.find(':');
    if (colon == std::string::npos) die("mosquitto_passwd wrote no hash");
    std::string hash = line.substr(colon + 1);
    while (!hash.empty() && hash.back() == '\n') hash.pop_back();
    const std::string passwd = dir_.file("passwd");
    {
      std::ofstream out(passwd);
      for (int i = 0; i < a_.connections; ++i) {
        out << device_id(i) << "@" << tenant_of(a_, i) << ":" << hash << "\n";
      }
    }
    // Started as root, mosquitto drops to its own user before it reads these.
    readable_by_all(dir_.path().string());
    readable_by_all(passwd);
    const std::string acl = dir_.file("acl");
    std::ofstream(acl) << "pattern readwrite t/+/d/%c/#\n";
    port_ = testing::pick_free_port();
    const std::string conf = dir_.file("mosquitto.conf");
    std::ofstream(conf) << "listener " << port_ << " 127.0.0.1\n"
                        << "max_connections " << a_.connections + kConnectionMargin << "\n"
                        << "allow_anonymous false\n"
                        << "password_file " << passwd << "\n"
                        << "acl_file " << acl << "\n"
                        << "persistence false\n"
                        << "log_dest stderr\nlog_type error\nlog_type warning\n";
    testing::ProcessOptions po;
    po.log_path = dir_.file("mosquitto.log");
    if (!proc_.start({"/usr/sbin/mosquitto", "-c", conf}, po, &err)) die("mosquitto: " + err);
    // Ready when a device can connect.
    SwarmOptions so;
    so.port = port_;
    so.sources = plan_sources(1, 1);
    so.credentials = [this](int i) { return credentials(i); };
    for (int tries = 0;; ++tries) {
      MqttSwarm probe(so);
      if (probe.connect_all(1, std::chrono::seconds(5)) && probe.stats().up == 1) break;
      if (tries == 50) die("mosquitto never accepted a device: " + probe.stats().first_error);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  void stop() { proc_.kill(SIGKILL); }
  pid_t pid() const { return proc_.pid(); }
  int port() const { return port_; }
  SwarmCredentials credentials(int i) const {
    return {device_id(i), device_id(i) + "@" + tenant_of(a_, i), kDevicePassword};
  }

 private:
  const Args& a_;
  testing::TempDir dir_{"canopy-bench-conns-mosq-"};
  testing::Process proc_;
  int port_ = 0;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Connects every device to the broker `pid` listening on `port`, holds them,
// and reports under `name`_*.
template <typename Broker>
void measure(const std::string& name, const Broker& broker, const Args& a) {
  std::this_thread::sleep_for(std::chrono::seconds(2));  // let startup settle
  const pid_t pid = broker.pid();
  const double rss0 = rss_kb(pid);
  const double cpu0 = cpu_seconds(pid);
  const double tcp0 = kernel_tcp_mem_mb();
  SwarmOptions so;
  so.port = broker.port();
  so.sources = plan_sources(a.connections, a.per_source);
  so.per_source = a.per_source;
  so.window = a.window;
  so.ping_every = std::chrono::seconds(a.ping_s);
  so.keep_alive_s = static_cast<uint16_t>(2 * a.ping_s);
  so.credentials = [&broker](int i) { return broker.credentials(i); };
  if (so.sources.empty()) die("--per-source too small for --connections");
  MqttSwarm swarm(so);
  const auto t0 = Clock::now();
  if (!swarm.connect_all(a.connections, std::chrono::seconds(a.connect_limit_s))) {
    die(name + ": " + swarm.stats().first_error);
  }
  const double connect_s = seconds_since(t0);
  const SwarmStats after_connect = swarm.stats();
  const double rss1 = rss_kb(pid);
  const double cpu1 = cpu_seconds(pid);
  std::fprintf(
      stderr, "%s: %ld up, %ld failed, %ld refused in %.1f s; RSS %.0f MiB; holding %d s\n",
      name.c_str(), static_cast<long>(after_connect.up), static_cast<long>(after_connect.failed),
      static_cast<long>(after_connect.refused), connect_s, rss1 / 1024, a.hold_s);
  const auto t1 = Clock::now();
  swarm.hold(std::chrono::seconds(a.hold_s));
  const double hold_s = seconds_since(t1);
  const double rss2 = rss_kb(pid);
  const double cpu2 = cpu_seconds(pid);
  const double tcp2 = kernel_tcp_mem_mb();
  const SwarmStats s = swarm.stats();
  if (!s.first_error.empty())
    std::fprintf(stderr, "%s: first error: %s\n", name.c_str(), s.first_error.c_str());
  std::fprintf(stderr, "%s: %ld held after %.1f s, %ld lost, pings %ld sent %ld answered\n",
               name.c_str(), static_cast<long>(s.up), hold_s, static_cast<long>(s.lost),
               static_cast<long>(s.pings_sent), static_cast<long>(s.pongs));
  const std::string all = std::to_string(kTargetConnections);
  const bool canopy = name == "canopy";
  emit_figure(kBench, name + "_held", static_cast<double>(s.up), canopy ? all : "");
  emit_figure(kBench, name + "_lost", static_cast<double>(s.lost), canopy ? "0" : "");
  emit_figure(kBench, name + "_connect_failed", static_cast<double>(s.failed + s.refused),
              canopy ? "0" : "");
  emit_figure(kBench, name + "_connect_all_s", connect_s);
  emit_figure(kBench, name + "_connects_per_s",
              static_cast<double>(after_connect.up) / std::max(connect_s, 1e-9));
  emit_figure(kBench, name + "_pings_unanswered", static_cast<double>(s.pings_unanswered));
  emit_figure(kBench, name + "_rss_base_mb", rss0 / 1024);
  emit_figure(kBench, name + "_rss_held_mb", rss2 / 1024);
  emit_figure(kBench, name + "_kb_per_conn",
              s.up > 0 ? (std::max(rss1, rss2) - rss0) / static_cast<double>(s.up) : 0);
  emit_figure(kBench, name + "_kernel_tcp_kb_per_conn",
              s.up > 0 ? (tcp2 - tcp0) * 1024 / static_cast<double>(s.up) : 0);
  emit_figure(kBench, name + "_cpu_connect_s", cpu1 - cpu0);
  emit_figure(
      kBench, name + "_cpu_ms_per_connect",
      after_connect.up > 0 ? (cpu1 - cpu0) * 1000 / static_cast<double>(after_connect.up) : 0);
  emit_figure(kBench, name + "_cpu_hold_pct", (cpu2 - cpu1) * 100 / std::max(hold_s, 1e-9));
  swarm.close_all();
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::string v = argv[i + 1];
    int* field = nullptr;
    if (k == "--brokers") {
      a.brokers = v;
      continue;
    }
    if (k == "--connections") field = &a.connections;
    if (k == "--hold") field = &a.hold_s;
    if (k == "--ping") field = &a.ping_s;
    if (k == "--window") field = &a.window;
    if (k == "--per-source") field = &a.per_source;
    if (k == "--tenants") field = &a.tenants;
    if (k == "--bcrypt-cost") field = &a.bcrypt_cost;
    if (k == "--connect-limit") field = &a.connect_limit_s;
    if (k == "--fit-fd-limit") field = &a.fit_fd_limit;
    if (field == nullptr) die("unknown argument " + k);
    *field = std::atoi(v.c_str());
  }
  if (argc % 2 == 0) die("every argument takes a value");
  if (a.connections < 1 || a.hold_s < 0 || a.ping_s < 1 || a.window < 1 || a.per_source < 1 ||
      a.tenants < 1 || a.connect_limit_s < 1 || a.bcrypt_cost < daemon::kMinBcryptCost ||
      a.bcrypt_cost > daemon::kMaxBcryptCost) {
    die("bad arguments");
  }
  if (a.connections > static_cast<int>(spoke::bus::kMaxDevices)) {
    die("--connections: a site bus has at most " + std::to_string(spoke::bus::kMaxDevices) +
        " devices (spoke/bus/bus_spec.h kMaxDevices)");
  }
  return a;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  using namespace canopy::bench;
  spdlog::set_default_logger(spdlog::stderr_color_mt("bench"));
  spdlog::set_level(spdlog::level::warn);
  Args a = parse(argc, argv);
  a.connections = raise_fd_limit(a.connections, a.fit_fd_limit != 0);
  emit_figure(kBench, "connections_tried", a.connections, std::to_string(kTargetConnections));
  for (const char* k : {"net.ipv4.ip_local_port_range", "net.core.somaxconn",
                        "net.ipv4.tcp_max_syn_backlog", "fs.file-max", "fs.nr_open"}) {
    std::fprintf(stderr, "%s = %s\n", k, sysctl(k).c_str());
  }
  std::fprintf(stderr, "%d connections from %zu source addresses, window %d, hold %d s\n",
               a.connections, plan_sources(a.connections, a.per_source).size(), a.window, a.hold_s);
  if (a.brokers.find("canopy") != std::string::npos) {
    CanopyBroker b(a);
    b.start();
    measure("canopy", b, a);
    b.stop();
  }
  if (a.brokers.find("mosquitto") != std::string::npos) {
    MosquittoBroker b(a);
    b.start();
    measure("mosquitto", b, a);
    b.stop();
  }
  std::fflush(nullptr);
  std::_Exit(0);
}
