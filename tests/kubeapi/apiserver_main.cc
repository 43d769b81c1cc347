// canopy-test-apiserver: the test API server (fake_apiserver.h) as a
// process, for trying a client by hand:
//
//   canopy-test-apiserver --dir /tmp/k [--port 6443] [--crd-establish-ms 200] [--keep-pki]
//
// --keep-pki: reuse the CAs a previous run left in --dir, so that a
// restarted server is still trusted by the kubeconfigs its clients loaded.
// --deployment-controller: Deployments are reported rolled out as soon as
// they are written (a cluster at rest; see ApiHandlerOptions).
//   KUBECONFIG=/tmp/k/kubeconfig-token kubectl api-resources
//
// Writes its CA, a client certificate and two kubeconfigs into --dir (see
// test_cluster.h), prints the URL, and serves on 127.0.0.1 until SIGINT or
// SIGTERM.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/kubeapi/test_cluster.h"

int main(int argc, char** argv) {
  std::string dir;
  canopy::kubeapi::TestClusterOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    bool has_value = i + 1 < argc;
    if (arg == "--dir" && has_value) {
      dir = argv[++i];
    } else if (arg == "--port" && has_value) {
      options.port = std::atoi(argv[++i]);
    } else if (arg == "--deployment-controller") {
      options.api.deployment_controller = true;
    } else if (arg == "--keep-pki") {
      options.reuse_pki = true;
    } else if (arg == "--crd-establish-ms" && has_value) {
      options.api.crd_establish_delay = std::chrono::milliseconds(std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr,
                   "usage: canopy-test-apiserver --dir DIR [--port N] [--crd-establish-ms N] "
                   "[--keep-pki] [--deployment-controller]\n");
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "canopy-test-apiserver: --dir is required\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts
  auto cluster = canopy::kubeapi::TestCluster::start(dir, options);
  if (!cluster.ok()) {
    std::fprintf(stderr, "canopy-test-apiserver: %s\n", cluster.status().to_string().c_str());
    return 1;
  }
  std::printf("serving %s\nkubeconfigs: %s %s\n", (*cluster)->server().url().c_str(),
              (*cluster)->kubeconfig_token().c_str(), (*cluster)->kubeconfig_cert().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  std::printf("canopy-test-apiserver: signal %d, stopping\n", sig);
  return 0;
}
