// security.handshake, part 1: enrollment of S sites (default 1,000) against
// the real canopy-hub, through its real enrollment API, as sites do it
// (docs/security.md): per site a bootstrap token (POST
// /v1/sites/<site>/enrollment as the fleet admin) and the exchange (POST
// /v1/enroll with a CSR the "site" made with its own new EC key). The hub
// manages its nats-server's users (nats_auth_file): each enrollment signs a
// certificate, bcrypt-hashes a fresh password, rewrites the authorization
// file and sends nats-server SIGHUP, all of it in the measured time.
//
//   canopy_handshake_bench [--sites 1000] [--threads 8]
//
// Figures (JSON lines, bench/report.h): total wall time, per-site exchange
// latency p50/p99 (token and exchange), enrollments per second, and the hub
// process's CPU seconds (utime + stime from /proc/<pid>/stat) spent over the
// run. The sites' key generation and CSR happen in this process, outside the
// hub's CPU figure but inside each site's latency (as at a real site).
//
// Part 2, the TLS overhead on the fan-out, is canopy_sync_bench --case
// fanout --tls-compare (bench/sync_bench.cc), run after this one by the
// same registry line.
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/report.h"
#include "daemon/identity.h"
#include "tests/support/free_port.h"
#include "tests/support/nats_server.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace canopy::bench {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr char kBench[] = "security.handshake";

[[noreturn]] void die(const std::string& what) { fail_bench(kBench, what); }

// utime + stime of `pid`, in seconds.
double cpu_seconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  double utime = 0, stime = 0;
  for (int i = 3; fields >> f; ++i) {
    if (i == 14) utime = std::stod(f);
    if (i == 15) {
      stime = std::stod(f);
      break;
    }
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

bool healthy(int port, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    httplib::Client cli("127.0.0.1", port);
    cli.set_connection_timeout(1, 0);
    auto res = cli.Get("/healthz");
    if (res && res->status == 200) {
      json j = json::parse(res->body, nullptr, false);
      if (j.is_object() && j.value("nats_connected", false)) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

int run(int sites, int threads) {
  testing::TempDir dir("canopy-handshake-");
  const std::string data = dir.file("hub");
  const std::string pid_file = dir.file("nats.pid");
  testing::NatsServerOptions no;
  no.extra_config = "include \"canopy-auth.conf\"\npid_file: \"" + pid_file + "\"\n";
  testing::NatsServer nats(no);
  const std::string auth = nats.dir().file("canopy-auth.conf");
  {
    testing::Process w;
    testing::ProcessOptions po;
    po.log_path = dir.file("write-auth.log");
    std::string err;
    if (!w.start({CANOPY_HUB_BINARY, "--name", "hub", "--data", data, "--nats-auth-file", auth,
                  "--write-nats-auth"},
                 po, &err)) {
      die("canopy-hub --write-nats-auth: " + err);
    }
    w.wait_exit(std::chrono::seconds(60));
  }
  std::string err;
  if (!nats.start(&err)) die("nats-server: " + err);
  const int http_port = testing::pick_free_port();
  const int grpc_port = testing::pick_free_port();
  testing::Process hub;
  testing::ProcessOptions po;
  po.log_path = dir.file("hub.log");
  if (!hub.start({CANOPY_HUB_BINARY, "--name", "hub", "--data", data, "--nats", nats.url(),
                  "--grpc", "127.0.0.1:" + std::to_string(grpc_port), "--health",
                  "127.0.0.1:" + std::to_string(http_port), "--nats-auth-file", auth,
                  "--nats-pid-file", pid_file, "--log-level", "warn"},
                 po, &err)) {
    die("canopy-hub: " + err);
  }
  if (!healthy(http_port, std::chrono::seconds(60))) die("canopy-hub not healthy in 60 s");
  std::string token;
  std::ifstream(data + "/admin.token") >> token;
  if (token.empty()) die("no admin token in " + data);

  std::atomic<int> next{0};
  std::mutex mu;
  std::vector<double> token_ms, exchange_ms, site_ms;
  std::atomic<int> failures{0};
  const double cpu_before = cpu_seconds(hub.pid());
  const auto start = Clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      httplib::Client cli("127.0.0.1", http_port);
      cli.set_read_timeout(60, 0);
      cli.set_keep_alive(true);
      for (int i = next++; i < sites; i = next++) {
        const std::string site = "site-" + std::to_string(i);
        const auto t0 = Clock::now();
        auto issued = cli.Post("/v1/sites/" + site + "/enrollment?ttlSeconds=3600",
                               {{"Authorization", "Bearer " + token}}, "", "application/json");
        const auto t1 = Clock::now();
        if (!issued || issued->status != 201) {
          if (failures++ < 3) {
            std::fprintf(stderr, "token for %s: %s\n", site.c_str(),
                         issued ? issued->body.c_str() : "no answer");
          }
          continue;
        }
        const std::string bootstrap = json::parse(issued->body).value("token", "");
        auto key = daemon::generate_private_key();
        auto csr = key.ok() ? daemon::make_csr(*key, site) : key.status();
        if (!csr.ok()) die("CSR: " + csr.status().message());
        const auto t2 = Clock::now();
        auto enrolled = cli.Post("/v1/enroll", json{{"token", bootstrap}, {"csr", *csr}}.dump(),
                                 "application/json");
        const auto t3 = Clock::now();
        if (!enrolled || enrolled->status != 200) {
          if (failures++ < 3) {
            std::fprintf(stderr, "exchange for %s: %d %s\n", site.c_str(),
                         enrolled ? enrolled->status : 0,
                         enrolled ? enrolled->body.c_str() : "no answer");
          }
          continue;
        }
        auto ms = [](auto a, auto b) {
          return std::chrono::duration<double, std::milli>(b - a).count();
        };
        std::lock_guard lock(mu);
        token_ms.push_back(ms(t0, t1));
        exchange_ms.push_back(ms(t2, t3));
        site_ms.push_back(ms(t0, t3));
      }
    });
  }
  for (auto& w : workers) w.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = cpu_seconds(hub.pid()) - cpu_before;
  if (failures > 0) die(std::to_string(failures.load()) + " enrollments failed");
  std::fprintf(stderr,
               "%d sites enrolled by %d threads in %.1f s; hub CPU %.1f s; nats-server reloaded "
               "once per enrollment\n",
               sites, threads, wall_s, cpu);
  const std::string s = "_s" + std::to_string(sites);
  emit_figure(kBench, "enroll_total_s" + s, std::round(wall_s * 10) / 10);
  emit_figure(kBench, "enroll_per_s" + s, std::round(sites / wall_s * 10) / 10);
  emit_figure(kBench, "enroll_site_p50_ms" + s, std::round(percentile(site_ms, 0.5) * 10) / 10);
  emit_figure(kBench, "enroll_site_p99_ms" + s, std::round(percentile(site_ms, 0.99) * 10) / 10);
  emit_figure(kBench, "enroll_exchange_p50_ms" + s,
              std::round(percentile(exchange_ms, 0.5) * 10) / 10);
  emit_figure(kBench, "enroll_exchange_p99_ms" + s,
              std::round(percentile(exchange_ms, 0.99) * 10) / 10);
  emit_figure(kBench, "enroll_token_p99_ms" + s, std::round(percentile(token_ms, 0.99) * 10) / 10);
  emit_figure(kBench, "enroll_hub_cpu_s" + s, std::round(cpu * 100) / 100);
  emit_figure(kBench, "enroll_hub_cpu_ms_per_site" + s, std::round(cpu * 1000 / sites * 10) / 10);
  hub.kill(SIGTERM);
  hub.wait_exit(std::chrono::seconds(20));
  return 0;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  int sites = 1000, threads = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--sites") {
      sites = std::atoi(argv[i + 1]);
    } else if (a == "--threads") {
      threads = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: canopy_handshake_bench [--sites N] [--threads T]\n");
      return 2;
    }
  }
  if (sites < 1 || threads < 1) {
    std::fprintf(stderr, "--sites and --threads must be at least 1\n");
    return 2;
  }
  return canopy::bench::run(sites, threads);
}
