// Applier: where rendered objects go at a site.
//
// The reconciler hands an applier rendered objects and asks it to remove what
// is no longer desired. Two implementations are meant to fit:
//   - manifests-dir (manifests_dir_applier.h): one file per object in the
//     directory k3s deploys from; id = the file name;
//   - kube (later): server-side apply with field manager `canopy`; id = the
//     object's group/version/kind/namespace/name, inventory from the objects
//     labelled app.kubernetes.io/managed-by=canopy.
//
// Ids are opaque to the reconciler: it learns an object's id from id_of(),
// records it in the status document (`file`), and passes inventory() entries it
// no longer wants to remove(). An applier lists only what it manages, so prune
// never touches anything else.
//
// Contract: apply() is idempotent and cheap when nothing changed (it reports
// changed=false and does no write); the message of an outcome describes where
// the object went, not whether this call wrote it, so that a status document
// built from it does not change from one reconcile to the next.
//
// Thread-safety: REQUIRES external synchronization (one reconciler at a time).
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/render.h"
#include "store/status.h"

namespace canopy::spoke {

struct ApplyOutcome {
  bool changed = false;  // this call changed what the cluster gets
  std::string message;   // stable for a given object and applier
  // What the applier read back from the cluster (kube applier only; empty
  // when not known): "healthy", "progressing" or "degraded", and why.
  std::string health;
  std::string health_message;
  // Drift found in the cluster since the last apply: what, and whether it was
  // repaired; empty when none.
  std::string drift;
};

class Applier {
 public:
  virtual ~Applier() = default;

  // "manifests-dir", "kube".
  virtual std::string name() const = 0;

  // The id under which `object` is applied; what inventory() lists and
  // remove() takes.
  virtual std::string id_of(const model::RenderedObject& object) const = 0;

  virtual StatusOr<ApplyOutcome> apply(const model::RenderedObject& object) = 0;

  // Applies several objects, one result per object in order. Appliers that can
  // batch (share fsyncs, pipeline requests) override it.
  virtual std::vector<StatusOr<ApplyOutcome>> apply_all(
      const std::vector<const model::RenderedObject*>& objects) {
    std::vector<StatusOr<ApplyOutcome>> out;
    out.reserve(objects.size());
    for (const model::RenderedObject* o : objects) out.push_back(apply(*o));
    return out;
  }

  // The apply policies of the placements that place each template here
  // (template key -> policy), set before each apply_all; templates not in
  // it get the defaults. Appliers with nothing to choose ignore it.
  virtual void set_policies(std::map<std::string, model::ApplyPolicy> policies) { (void)policies; }

  // Removes the object with this id. OK when it is already gone.
  virtual Status remove(const std::string& id) = 0;

  // Ids of the objects this applier manages now.
  virtual StatusOr<std::vector<std::string>> inventory() = 0;

  // How soon the applier wants another pass even if nothing changes (to read
  // back health still progressing, or to audit for drift); nullopt: no need.
  virtual std::optional<std::chrono::milliseconds> next_check() const { return std::nullopt; }

  // Housekeeping after a reconcile (e.g. dropping tombstones that served
  // their purpose). Cheap when there is nothing to do.
  virtual Status collect_garbage() { return ok_status(); }
};

}  // namespace canopy::spoke
