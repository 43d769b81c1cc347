// canopy_sync_bench's hub: the real hub::Hub in a process of its own (this
// executable re-executed with --hub-role), so that its memory is the hub's
// alone, driven over two pipes by "k=v" command lines (hub_main in
// sync_bench_hub.cc lists them). HubProcess is the bench's handle on it.
#pragma once

#include "bench/sync_bench_util.h"

namespace canopy::bench_sync {

struct HubArgs {
  int in_fd = -1;
  int out_fd = -1;
  int sites = 0;
  std::string nats_url;
  std::string dir;
  size_t max_catchups = 64;
  std::string name;                       // empty: kHubName
  std::string peers;                      // HubConfig::peers (the failover case's two hubs)
  std::string tls_ca, tls_cert, tls_key;  // HubConfig::nats_*_file (tls:// URLs)
  // The hier case. In the root's process: the site records name R regional
  // hubs (region_name(i % R)). In the regions' process (--regions-role): the
  // R regional hubs, children of `parent`.
  int regions = 0;
  std::string parent;
};

// Regional hub r of the hier case.
inline std::string region_name(int r) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "region-%03d", r);
  return buf;
}

// The hub process's main; never returns.
[[noreturn]] void hub_main(const HubArgs& a);
// The regions' process's main (R real hub::Hub with a parent, one process, so
// that their memory and CPU are theirs alone); never returns.
[[noreturn]] void regions_main(const HubArgs& a);

class HubProcess {
 public:
  // `extra`: more arguments (the hier case's --regions, or --regions-role
  // for the regions' process instead of a hub).
  HubProcess(const std::string& nats_url, int sites, size_t max_catchups,
             const std::string& name = kHubName, const std::string& peers = "",
             const std::vector<std::string>& extra = {}) {
    int to_hub[2], from_hub[2];
    if (pipe(to_hub) != 0 || pipe(from_hub) != 0) die("pipe");
    std::vector<std::string> args = {
        "/proc/self/exe", "--hub-role",
        "--in-fd",        std::to_string(to_hub[0]),
        "--out-fd",       std::to_string(from_hub[1]),
        "--sites",        std::to_string(sites),
        "--nats",         nats_url,
        "--dir",          dir_.path().string(),
        "--max-catchups", std::to_string(max_catchups),
        "--hub-name",     name,
    };
    if (!peers.empty()) {
      args.push_back("--hub-peers");
      args.push_back(peers);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    if (nats_url.rfind("tls://", 0) == 0) {
      for (const auto& [flag, file] : {std::pair{"--tls-ca", g_tls.ca_file},
                                       {"--tls-cert", g_tls.cert_file},
                                       {"--tls-key", g_tls.key_file}}) {
        args.push_back(flag);
        args.push_back(file);
      }
    }
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec: this process has threads.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(2, 1);  // the hub's stdout must not mix with the JSON lines
      close(to_hub[1]);
      close(from_hub[0]);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    close(to_hub[0]);
    close(from_hub[1]);
    to_ = fdopen(to_hub[1], "w");
    from_ = fdopen(from_hub[0], "r");
    fcntl(to_hub[1], F_SETFD, FD_CLOEXEC);
    fcntl(from_hub[0], F_SETFD, FD_CLOEXEC);
    ready_ = parse_kv(read_line());
    if (!ready_.count("ready")) die("hub did not start");
  }
  // SIGKILL: the hub dies as a crashed process does, mid-whatever.
  void kill_now() {
    if (to_ == nullptr) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    fclose(to_);
    fclose(from_);
    to_ = nullptr;
    from_ = nullptr;
    killed_ = true;
  }
  ~HubProcess() {
    if (killed_) return;
    const int64_t t0 = now_ns();
    if (to_ != nullptr) {
      std::fprintf(to_, "quit\n");
      std::fflush(to_);
      read_line();
      fclose(to_);
      fclose(from_);
    }
    const int64_t t1 = now_ns();
    int status = 0;
    waitpid(pid_, &status, 0);
    logf("hub stopped in %.1f s, exited %.1f s later", static_cast<double>(t1 - t0) / 1e9,
         static_cast<double>(now_ns() - t1) / 1e9);
  }
  std::map<std::string, std::string> call(const std::string& cmd) {
    std::fprintf(to_, "%s\n", cmd.c_str());
    std::fflush(to_);
    return parse_kv(read_line());
  }
  const std::map<std::string, std::string>& ready() const { return ready_; }
  pid_t pid() const { return pid_; }

 private:
  std::string read_line() {
    char* line = nullptr;
    size_t cap = 0;
    if (getline(&line, &cap, from_) <= 0) {
      free(line);
      die("the hub process went away");
    }
    std::string s(line);
    free(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }

  testing::TempDir dir_{"canopy-sync-bench-hub-"};
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  std::map<std::string, std::string> ready_;
  bool killed_ = false;
};

}  // namespace canopy::bench_sync
