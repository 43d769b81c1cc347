// KubeApplier: applies rendered objects to the site's Kubernetes cluster by
// server-side apply, and reads back their health and drift.
//
// Ids. "<apiVersion>/<kind>/<namespace>/<name>" with the namespace as the
// template wrote it (empty for cluster-scoped kinds; a namespaced object
// without one goes to "default"), e.g. "apps/v1/Deployment/shop/web",
// "v1/Namespace//shop".
//
// Apply. PATCH <object> ?fieldManager=canopy with application/apply-patch+yaml
// (the object's JSON: JSON is YAML). Another manager owning a field with a
// different value is a conflict (409): reported in the status, and the fields
// are taken (force=true) only when a placement of the template says
// `apply: {forceConflicts: true}` (set_policies), or the object is annotated
// `canopy.io/force-conflicts: "true"`. An object whose hash the applier
// already applied is not sent again: a pass over 1,000 unchanged objects sends
// nothing but what the audit below needs.
//
// Ordering. Within one batch: Namespaces, then CustomResourceDefinitions, then
// waiting (up to `crd_wait`) until each CRD applied is Established and its
// group-version is read again, then everything else. inventory() lists ids in
// the reverse order (CRDs and Namespaces last), which is the order the
// reconciler prunes in.
//
// Inventory. What the applier applied, in `inventory_path` (JSON, written
// atomically: temporary file, fsync, rename, fsync of the directory). An id is
// added before its first apply is sent (write-ahead: a crash between the two
// leaves an id whose object may not exist, never an object nobody knows) and
// dropped once its object is deleted or found gone. The file survives
// restarts, so a restarted spoke prunes what it applied before and nothing
// else. remove() deletes an object only if it is in the inventory AND the
// live object carries app.kubernetes.io/managed-by=canopy; it deletes with a
// uid precondition (the object it checked, not one re-created since) and
// propagationPolicy Background. An object whose label was taken off is
// dropped from the inventory and left in the cluster (logged).
//
// Audit: health and drift. Every `audit_interval` the applier lists each kind
// it applied (one LIST per kind, all namespaces, labelSelector
// app.kubernetes.io/managed-by=canopy — on a cell tower's cluster a handful of
// requests a minute, not one per object). Objects still progressing are read
// again `progress_interval` after a write, then at doubling intervals up to
// the audit's (a GET each for up to kMaxProgressReads of them, else the
// LISTs). From each live object:
//   - health (health.h), reported with the outcome;
//   - drift: the live values of the fields the template sets (labels,
//     annotations, spec, data, ...; not status, not the server's metadata)
//     are compared with the same fields as the server returned them right
//     after canopy's apply (so values the server normalizes, like
//     quantities, are not drift). A changed value, a removed field or a
//     deleted object is drift. Unless a placement says `apply: {drift:
//     report}` (or the object is annotated `canopy.io/drift: report`), drift
//     is repaired at once by applying again
//     (with force only under canopy.io/force-conflicts, since a field
//     `kubectl edit` changed is now owned by kubectl); the outcome reports
//     what was repaired, or why it could not be.
// A first audit runs at the first pass after open(): what changed while the
// spoke was down is found then.
//
// Cluster down. The first request that gets no answer (after the client's
// retries) fails the rest of the batch at once with the same error: the
// reconciler retries the pass with backoff and reports the failure; nothing is
// pruned or forgotten.
//
// Thread-safety: REQUIRES external synchronization.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "spoke/applier.h"
#include "spoke/kube/discovery.h"
#include "spoke/kube/health.h"
#include "spoke/kube/kube_client.h"

namespace canopy::spoke::kube {

inline constexpr const char* kFieldManager = "canopy";
inline constexpr const char* kForceAnnotation = "canopy.io/force-conflicts";
inline constexpr const char* kDriftAnnotation = "canopy.io/drift";
// Objects still progressing re-read one by one; more: one LIST per kind.
inline constexpr size_t kMaxProgressReads = 20;

struct KubeApplierOptions {
  KubeEndpoint endpoint;
  KubeClientOptions client;
  std::string inventory_path;  // required
  std::chrono::milliseconds audit_interval{60000};
  std::chrono::milliseconds progress_interval{2000};
  std::chrono::milliseconds crd_wait{30000};
  // Objects per page of an audit's LIST (limit and continue, as kubectl
  // pages its own): a page is parsed whole, so this bounds what an audit
  // holds, at about 2 KB an object without managedFields. At least 1.
  int audit_page_size = 250;
};

// The parts of an id.
struct ObjectRef {
  std::string api_version;
  std::string kind;
  std::string ns;
  std::string name;
};
std::string object_id(const ObjectRef& ref);
std::optional<ObjectRef> parse_object_id(const std::string& id);

// The live values of the fields `applied` sets, in `applied`'s shape (lists
// of objects with a "name" matched by name): what drift is measured on.
nlohmann::json project_fields(const nlohmann::json& applied, const nlohmann::json& live);
// Paths (".spec.replicas", ".spec.template.spec.containers[web].image") where
// `a` and `b`, two projections, differ; at most `limit`.
std::vector<std::string> differing_paths(const nlohmann::json& a, const nlohmann::json& b,
                                         size_t limit = 5);

struct KubeApplierStats {
  uint64_t applies = 0;          // server-side apply requests that succeeded
  uint64_t conflicts = 0;        // applies refused with 409
  uint64_t audits = 0;           // full audits run
  uint64_t drift_repaired = 0;   // objects re-applied because of drift
  uint64_t deleted = 0;          // objects deleted by remove()
  uint64_t left_unlabelled = 0;  // inventory ids dropped because the label was gone
};

class KubeApplier final : public Applier {
 public:
  // Loads the inventory and checks the endpoint; does not contact the
  // server (a spoke starts while its cluster is down).
  static StatusOr<std::unique_ptr<KubeApplier>> open(KubeApplierOptions options);
  ~KubeApplier() override;

  std::string name() const override { return "kube"; }
  std::string id_of(const model::RenderedObject& object) const override;
  StatusOr<ApplyOutcome> apply(const model::RenderedObject& object) override;
  std::vector<StatusOr<ApplyOutcome>> apply_all(
      const std::vector<const model::RenderedObject*>& objects) override;
  Status remove(const std::string& id) override;
  StatusOr<std::vector<std::string>> inventory() override;
  std::optional<std::chrono::milliseconds> next_check() const override;
  void set_policies(std::map<std::string, model::ApplyPolicy> policies) override {
    policies_ = std::move(policies);
  }

  const KubeApplierStats& stats() const { return stats_; }
  KubeClient& client() { return *client_; }

 private:
  struct Entry {
    std::string hash;       // of the rendered object last applied; "" = not yet
    std::string uid;        // of the live object
    uint64_t baseline = 0;  // hash of project_fields right after the apply
    // Not persisted:
    Health health;
    std::string drift;
    bool read = false;  // health was read since open()
    std::chrono::steady_clock::time_point read_at{};
  };
  struct Work {
    const model::RenderedObject* object = nullptr;
    ObjectRef ref;
    std::string id;
    bool write = false;
    bool repair = false;
    std::string drift_paths;
    Status status;
    bool changed = false;
  };

  explicit KubeApplier(KubeApplierOptions options);
  Status load_inventory();
  Status save_inventory();
  // PATCH one object; fills its entry from the server's answer.
  Status write(Work& w);
  Status wait_established(const std::string& crd_name);
  // Reads live objects (a LIST per kind, or a GET each for `only`) and
  // updates health; marks drifted or missing objects of `work` for repair.
  Status audit(std::vector<Work>& work, bool full);
  void observe(Work* w, Entry& e, const nlohmann::json* live);
  StatusOr<ResourceType> type_of(const ObjectRef& ref);

  KubeApplierOptions options_;
  std::unique_ptr<KubeClient> client_;
  std::unique_ptr<Discovery> discovery_;
  std::map<std::string, Entry> entries_;  // the inventory
  std::chrono::steady_clock::time_point next_audit_{};
  std::chrono::steady_clock::time_point next_progress_{};
  std::chrono::milliseconds progress_backoff_{0};
  KubeApplierStats stats_;
  std::map<std::string, model::ApplyPolicy> policies_;  // template key -> policy
  // The policy for `object`: its placements', or its own annotations.
  model::ApplyPolicy policy_of(const model::RenderedObject& object) const;
};

}  // namespace canopy::spoke::kube
