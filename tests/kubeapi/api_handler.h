// ApiHandler: one HTTP request of the Kubernetes API in, one response out —
// routing, body decoding and query parameters over the ObjectStore and
// ResourceRegistry, with no sockets (fake_apiserver.h adds TLS,
// authentication and faults). Thread-safe: one lock around each request.
//
// Stands for: kube-apiserver's request handling for
//   GET    /version, /api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v>,
//          /openapi/v3, /openapi/v3/<api/v1 | apis/<g>/<v>>, /healthz ...
//   GET    <prefix>/[namespaces/<ns>/]<resource>      list (all namespaces
//          when a namespaced resource is listed without one), with
//          labelSelector and fieldSelector
//   GET    <prefix>/[namespaces/<ns>/]<resource>/<name>
//   POST   <prefix>/[namespaces/<ns>/]<resource>       201 Created
//   PUT    .../<name>[/status]                         update
//   PATCH  .../<name>[/status]  application/apply-patch+yaml (server-side
//          apply, fieldManager required, force=true to take fields),
//          application/merge-patch+json
//   DELETE .../<name>            Status Success (a Namespace: the object)
//   GET    <collection>?watch=true[&resourceVersion=N][&timeoutSeconds=S]:
//          a stream of JSON watch events (see object_store.h), ended after
//          timeoutSeconds (default and cap kMaxWatchSeconds)
// Bodies are JSON or YAML (application/json, application/yaml); malformed
// ones are 400, other media types 415, unknown resources 404 with a Status,
// unknown paths outside /api and /apis 404 "404 page not found" as text.
// A field manager not given defaults, as in the real server, to the
// User-Agent up to its first "/".
//
// Leaves out: protobuf and CBOR bodies, Table output (clients asking for
// as=Table also accept plain JSON and get it), dryRun (400),
// deletecollection, JSON patch (415), and strategic merge patch, which is
// taken as a JSON merge patch (the same for maps; lists are replaced whole),
// the resourceVersion of a list (always the latest state), limit/continue,
// fieldValidation (accepted, not applied: there are no schemas) and
// admission of any kind beyond namespace existence.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tests/kubeapi/kube_status.h"
#include "tests/kubeapi/object_store.h"
#include "tests/kubeapi/resource_registry.h"

namespace canopy::kubeapi {

struct ApiRequest {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string path;    // without the query
  std::multimap<std::string, std::string> query;
  std::string content_type;
  std::string user_agent;
  std::string body;
};

struct ApiHandlerOptions {
  Clock clock = [] { return std::chrono::system_clock::now(); };
  // How long a new CustomResourceDefinition waits before Established.
  std::chrono::milliseconds crd_establish_delay{200};
  uint64_t seed = 1;  // uids and generated names
  // Stand in for the deployment controller of a cluster at rest: every
  // Deployment written is reported fully rolled out (status at its
  // generation, all replicas available). Off: no controller runs, statuses
  // change only by set_status() or writes to /status.
  bool deployment_controller = false;
};

// An open watch: what it selects and how far it has read.
struct WatchStream {
  ResourceType type;
  std::string ns;
  Selector labels;
  Selector fields;
  bool initial = true;  // ADDED events for current objects come first
  int64_t cursor = 0;
  std::chrono::steady_clock::time_point deadline;
  bool ended = false;
};

class ApiHandler {
 public:
  static constexpr int kMaxWatchSeconds = 1800;

  explicit ApiHandler(ApiHandlerOptions options = {});

  ApiResponse handle(const ApiRequest& request);

  // The stored object (as stored: apiVersion as written), or nullopt.
  std::optional<nlohmann::json> object(const std::string& group, const std::string& resource,
                                       const std::string& ns, const std::string& name);
  // Sets an object's status as its controller would (new resourceVersion).
  bool set_status(const std::string& group, const std::string& resource, const std::string& ns,
                  const std::string& name, const nlohmann::json& status);
  int64_t resource_version();

  // The next events of `watch` as JSON lines, waiting up to `wait` for some;
  // "" if none yet; nullopt once the watch has ended (its deadline passed,
  // or it was told its resourceVersion is too old).
  std::optional<std::string> poll_watch(WatchStream& watch, std::chrono::milliseconds wait);

 private:
  ApiResponse handle_locked(const ApiRequest& request);
  void run_deployment_controller(const ApiRequest& request, const ApiResponse& out);
  ApiResponse handle_resource(const ApiRequest& request, const std::string& group,
                              const std::string& version, const std::string& rest);
  ApiResponse watch(const ResourceType& type, const std::string& ns, const Selector& labels,
                    const Selector& fields, const ApiRequest& request);

  const bool deployment_controller_;
  std::mutex mu_;
  std::condition_variable changed_;  // notified after every request
  ResourceRegistry registry_;
  ObjectStore store_;
};

// A YAML or JSON document as JSON (YAML 1.2 core schema for plain scalars).
StatusOr<nlohmann::json> parse_yaml_or_json(const std::string& text);

}  // namespace canopy::kubeapi
