// FakeApiServer: a stand-in for kube-apiserver, for tests of Kubernetes
// clients (the spoke's kube applier) on a machine that cannot run Kubernetes.
// Its faithfulness is checked with the real kubectl (kubectl_test.cc).
//
// Parts, the real behaviour each stands for, and what each leaves out:
//   - Transport (this file): HTTPS only, TLS 1.2+, HTTP/1.1 with keep-alive
//     (idle connections closed after 5 s), on 127.0.0.1, at most
//     kMaxConnections served at once. Like kube-apiserver it asks for a client certificate but
//     does not require one (Go's tls.RequestClientCert) and verifies it in
//     authentication. No HTTP/2.
//   - Authentication (this file): a certificate that verifies against the
//     client CA for client authentication authenticates its common name; else
//     a known bearer token authenticates its user; else 401 with a Status
//     (reason Unauthorized), as with --anonymous-auth=false. Expired, unknown
//     or wrong-CA certificates are 401 too (not a TLS failure), as in the
//     real server. No authorization: every authenticated user may do
//     anything (no RBAC, no 403s). No impersonation, no token review.
//   - Faults (this file): arm_fault() makes the next N matching requests fail
//     with 429 and Retry-After (what max-in-flight / API priority and
//     fairness send) or any other code (500, 503, ...), after authentication.
//   - Requests, discovery, OpenAPI: api_handler.h, resource_registry.h.
//   - Objects, resourceVersion, generation, CRDs, Namespaces:
//     object_store.h. Selectors: label_selector.h.
//   - Server-side apply and managedFields: server_side_apply.h, field_set.h.
//   - Status objects of errors: kube_status.h.
//
// Thread-safe. The server runs on its own threads until stop() or
// destruction.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "store/status.h"
#include "tests/kubeapi/api_handler.h"

namespace httplib {
class SSLServer;
}

namespace canopy::kubeapi {

struct FakeApiServerOptions {
  std::string server_cert_pem;  // for 127.0.0.1
  std::string server_key_pem;
  std::string client_ca_pem;                  // empty: no client-certificate authentication
  std::map<std::string, std::string> tokens;  // bearer token -> user name
  int port = 0;                               // 0: any free port
  ApiHandlerOptions api;
};

struct Fault {
  int code = 429;
  int count = 1;                // requests that fail; -1: until disarm_faults()
  int retry_after_seconds = 1;  // sent as Retry-After (and in the Status) when > 0
  std::string path_prefix;      // only requests whose path starts with it
};

// One request as served, for tests that check what a client sent.
struct ServedRequest {
  std::string method;
  std::string target;  // path and query
  std::string accept;
  std::string content_type;
  std::string user;  // empty if unauthenticated
  int code = 0;
};

class FakeApiServer {
 public:
  static StatusOr<std::unique_ptr<FakeApiServer>> start(FakeApiServerOptions options);
  ~FakeApiServer();
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  ApiHandler& api() { return api_; }

  void arm_fault(const Fault& fault);
  void disarm_faults();
  // The last requests served, oldest first (at most kMaxLoggedRequests).
  std::vector<ServedRequest> served_requests();
  void stop();

  static constexpr size_t kMaxLoggedRequests = 10000;
  // Connections served at once (open watches count): more wait in a queue.
  static constexpr int kMaxConnections = 64;
  // Requests on one keep-alive connection before the server closes it.
  static constexpr int kMaxRequestsPerConnection = 10000;

 private:
  explicit FakeApiServer(FakeApiServerOptions options);
  struct Tls;

  FakeApiServerOptions options_;
  ApiHandler api_;
  std::unique_ptr<Tls> tls_;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};  // ends open watches
  int port_ = 0;
  std::mutex mu_;
  std::vector<Fault> faults_;
  std::vector<ServedRequest> log_;
};

}  // namespace canopy::kubeapi
