// KubeClient: requests to a Kubernetes API server over HTTPS (OpenSSL, through
// cpp-httplib), one keep-alive connection, with timeouts and retries.
//
// Retries: a request that fails in transport (refused, reset, timed out) or is
// answered 429, 500, 502, 503 or 504 is sent again, up to `max_attempts` in
// all, after a backoff that doubles from `backoff_initial` to `backoff_max`
// with jitter, or after the server's Retry-After (seconds, capped at
// `retry_after_max`) when it gives one — what kube-apiserver's max-in-flight
// and priority-and-fairness limits ask of clients. Every request the spoke
// sends is idempotent (server-side apply, GET, DELETE with a uid precondition),
// so a retry after a lost answer is safe. TLS verification failures are not
// retried: they do not heal by waiting.
//
// Errors name what failed: "TLS: the server's certificate does not verify
// (self-signed certificate in certificate chain) against the CA of <source>",
// "client certificate (CN=x) expired at 2026-...", "cannot connect to
// https://...: Connection refused".
//
// Thread-safety: REQUIRES external synchronization (one connection).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "spoke/kube/kubeconfig.h"
#include "store/status.h"

namespace httplib {
class ClientImpl;
}

namespace canopy::spoke::kube {

struct KubeClientOptions {
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds request_timeout{30000};
  int max_attempts = 4;
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{5000};
  std::chrono::milliseconds retry_after_max{10000};
  std::string user_agent = "canopy-spoke";
  // How the client waits between attempts (tests shorten it).
  std::function<void(std::chrono::milliseconds)> sleep;
};

struct KubeResponse {
  int code = 0;
  std::string body;
  int attempts = 0;
  // The body as JSON; discarded when it is not JSON.
  nlohmann::json json() const;
  // The same without `metadata.managedFields` of the object, or of each of a
  // list's `items`: the server's record of field owners, often the largest
  // part of an object, which the applier never reads (a LIST of 1,000
  // Deployments then parses into about half the memory).
  nlohmann::json object_json() const;
};

class KubeClient {
 public:
  // Checks the endpoint (URL, PEM data, a client certificate's validity
  // period) without connecting.
  static StatusOr<std::unique_ptr<KubeClient>> create(KubeEndpoint endpoint,
                                                      KubeClientOptions options = {});
  ~KubeClient();
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  // One request with retries (above). An HTTP answer of any code is a
  // response; Unavailable (or FailedPrecondition for TLS verification) when
  // no answer came.
  StatusOr<KubeResponse> request(const std::string& method, const std::string& path,
                                 const std::string& body = "",
                                 const std::string& content_type = "");

  const KubeEndpoint& endpoint() const { return endpoint_; }
  // Requests sent, retries included (for benchmarks and tests).
  uint64_t requests_sent() const { return sent_; }

 private:
  KubeClient(KubeEndpoint endpoint, KubeClientOptions options);
  Status connect();
  std::string bearer_token();

  KubeEndpoint endpoint_;
  KubeClientOptions options_;
  bool https_ = true;
  std::string host_;
  int port_ = 443;
  std::unique_ptr<httplib::ClientImpl> http_;
  std::string token_;
  int64_t token_mtime_ns_ = -1;
  uint64_t sent_ = 0;
  uint64_t jitter_state_ = 0x9e3779b97f4a7c15ull;
};

// The error a non-2xx response stands for, with the message of the
// Kubernetes Status object it carries: 404 NotFound, 409 Aborted (a conflict;
// AlreadyExists for reason AlreadyExists), 401 Unauthenticated, 403
// PermissionDenied, 400/422 InvalidArgument, 429 and 5xx Unavailable.
Status status_of(const KubeResponse& response, const std::string& what);

}  // namespace canopy::spoke::kube
