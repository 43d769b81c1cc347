// ObjectStore: the objects of the test API server and the rules every write
// follows — what etcd plus the generic registry do in kube-apiserver.
//
// Stands for, per write:
//   - metadata.uid (random UUID), creationTimestamp (RFC 3339, seconds) and
//     metadata.resourceVersion from one global counter (etcd's revision),
//     rendered as a decimal string that clients must treat as opaque;
//   - metadata.generation (1 at creation, +1 when anything outside metadata
//     and status changes) for the kinds that keep one (workloads, CRDs and
//     custom resources; not ConfigMap, Secret, Namespace, ...);
//   - a write that changes nothing (managedFields timestamps aside) is not a
//     write: no new resourceVersion, as the real server skips the etcd update;
//   - status is ignored on the main resource and only status changes through
//     the /status subresource, for kinds with that subresource;
//   - create in a namespace that does not exist is 404 `namespaces "x" not
//     found` (the NamespaceLifecycle admission plugin);
//   - names are checked as DNS-1123 subdomains (labels for Namespaces), 422;
//   - a CustomResourceDefinition named other than <plural>.<group> is 422; a
//     valid one gets NamesAccepted at once and Established after
//     `crd_establish_delay`, and only then are its kinds discoverable and
//     served; deleting it deletes its objects;
//   - a Namespace gets status.phase Active, spec.finalizers [kubernetes] and
//     the kubernetes.io/metadata.name label.
// Server-side apply and field ownership: server_side_apply.h.
//
// Leaves out: defaulting (a Deployment read back has exactly the fields
// written, plus what is listed above), validation beyond names, admission,
// controllers (nothing fills a Deployment's status: tests call set_status),
// finalizers and graceful deletion (a delete removes the object at once; a
// Namespace delete answers with the Namespace in phase Terminating, as the
// real server does, but removes it and everything in it at once), garbage
// collection by ownerReferences, pagination (limit is ignored and no
// continue token is ever returned) and reads at an older resourceVersion
// (every read is of the latest state).
//
// Watch: every write is also an event (ADDED, MODIFIED, DELETED, with the
// object as written or, for DELETED, as it was), kept in a log of the last
// kMaxEvents, as the watch cache keeps a window of history. A watch from a
// resourceVersion older than the log is answered with an ERROR event, code
// 410, reason Expired ("too old resource version"), as the real server does.
// No bookmarks, no sendInitialEvents.
// Not thread-safe: the server calls it under its own lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <tuple>

#include "tests/kubeapi/kube_status.h"
#include "tests/kubeapi/label_selector.h"
#include "tests/kubeapi/resource_registry.h"

namespace canopy::kubeapi {

using Clock = std::function<std::chrono::system_clock::time_point()>;

struct WriteRequest {
  std::string ns;    // empty for cluster-scoped kinds
  std::string name;  // from the URL; empty for a create
  nlohmann::json body;
  std::string manager;       // field manager
  bool force = false;        // apply only
  bool status_only = false;  // the /status subresource
};

class ObjectStore {
 public:
  ObjectStore(ResourceRegistry* registry, Clock clock,
              std::chrono::milliseconds crd_establish_delay, uint64_t seed);

  // Establishes the CRDs whose delay has passed. Call before serving a request.
  void tick();

  ApiResponse get(const ResourceType& type, const std::string& ns, const std::string& name);
  // `limit` 0: everything. Otherwise at most `limit` items, and while more
  // remain, metadata.continue holds an opaque token that `cont` takes back
  // to read the next page (a malformed token is 400).
  ApiResponse list(const ResourceType& type, const std::string& ns, const Selector& labels,
                   const Selector& fields, size_t limit = 0, const std::string& cont = "");
  ApiResponse create(const ResourceType& type, const WriteRequest& req);
  ApiResponse update(const ResourceType& type, const WriteRequest& req);
  ApiResponse merge_patch(const ResourceType& type, const WriteRequest& req);
  ApiResponse apply(const ResourceType& type, const WriteRequest& req);
  ApiResponse remove(const ResourceType& type, const std::string& ns, const std::string& name);

  // The stored object, or nullopt.
  std::optional<nlohmann::json> find(const std::string& group, const std::string& resource,
                                     const std::string& ns, const std::string& name) const;
  // Replaces the object's status as a controller would; false if absent.
  bool set_status(const std::string& group, const std::string& resource, const std::string& ns,
                  const std::string& name, const nlohmann::json& status);
  int64_t resource_version() const { return revision_; }

  // Watch events (JSON lines, each {"type": ..., "object": ...}) of `type`
  // in `ns` (all if empty) matching the selectors: with `initial`, an ADDED
  // event per current object; else the events after *cursor. Advances
  // *cursor. Sets *expired (and returns a 410 ERROR event) when *cursor is
  // older than the log.
  std::string watch_events(const ResourceType& type, const std::string& ns, const Selector& labels,
                           const Selector& fields, bool initial, int64_t* cursor, bool* expired);

  static constexpr size_t kMaxEvents = 10000;

 private:
  using Key = std::tuple<std::string, std::string, std::string, std::string>;

  std::optional<ApiResponse> check_body(const ResourceType& type, const WriteRequest& req,
                                        const nlohmann::json& body) const;
  std::optional<ApiResponse> check_namespace(const ResourceType& type, const std::string& ns) const;
  // Stores `next` (previous: null for a create), bumping resourceVersion and
  // generation as needed; returns the stored object.
  nlohmann::json commit(const ResourceType& type, const Key& key, const nlohmann::json& previous,
                        nlohmann::json next);
  void initialize(const ResourceType& type, nlohmann::json& object);
  void after_crd_write(const nlohmann::json& crd);
  void remove_related(const ResourceType& type, const nlohmann::json& object);
  nlohmann::json for_client(const ResourceType& type, nlohmann::json object) const;
  void record(const char* type, const Key& key, const nlohmann::json& object);
  std::string now_rfc3339() const;
  std::string new_uid();

  ResourceRegistry* registry_;
  Clock clock_;
  std::chrono::milliseconds crd_establish_delay_;
  std::mt19937_64 random_;
  int64_t revision_ = 1;
  std::map<Key, nlohmann::json> objects_;
  std::map<std::string, std::chrono::system_clock::time_point> pending_crds_;  // name -> when
  struct Event {
    int64_t revision;
    const char* type;
    Key key;
    nlohmann::json object;
  };
  std::deque<Event> events_;
  int64_t events_since_ = 1;  // the log holds every event after this revision
};

}  // namespace canopy::kubeapi
