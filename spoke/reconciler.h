// Reconciler: makes a site's applier hold what the site's store says, and
// reports what happened as status documents.
//
// One pass (reconcile_once):
//   1. reads the desired documents (`t/`, `sites/<site>/overrides/`) from the
//      store, parsing only those whose bytes changed since the last pass, and
//      the site record `sites/<site>` (the site's labels, as the hub decided
//      them; until the record arrives nothing is rendered or pruned);
//   2. plans and renders the site (model/render.h), re-rendering only the templates
//      whose inputs (template, matching overrides, local override) changed;
//   3. hands every rendered object to the applier (apply_all: the applier
//      skips objects it already holds);
//   4. prunes: removes every inventory id that no rendered object has and no
//      failed template still holds (a template that fails to render or apply
//      keeps what it had applied: a bad override must not tear a workload
//      down). Pruning is skipped in a pass with a global failure (a placement
//      or override too malformed to evaluate), since the desired set is then
//      not known;
//   5. writes `sites/<site>/status/<tenant>/<template>` (docs/keys.md) for each
//      template only when the document would change, and deletes the status
//      documents of templates no longer desired once their objects are gone.
//      So a pass over an unchanged store writes nothing and replicates
//      nothing.
//
// Status documents: {"template", "hash", "outcome", "message", "file"}. On
// "applied", hash is the rendered object's and file is the applier's id of it.
// On "failed", message says why, and hash and file still describe what is
// applied (kept from the last success; empty when nothing was): the status
// document is also the record of which id a failed template keeps. A removed
// object's status document is deleted (the "removed" outcome of docs/keys.md
// is not written by this reconciler).
//
// Cost: a pass over 1,000 unchanged objects scans the store and stats the
// files, renders and writes nothing, and parses only its rendered objects'
// text. Memory: between passes the reconciler holds the desired documents'
// hashes and, of the templates, only their keys: a render reads its template
// from the store again (unless the pass just parsed it); of the rendered
// objects it holds their text, parsed again for the applier during a pass
// and dropped after it, so a spoke does not keep its scope as parsed JSON
// (several times its size) while it idles. The daemon calls it whenever the
// store changes (debounced), its own status writes included: the second pass
// after a change finds nothing to do.
//
// Thread-safety: REQUIRES external synchronization; `store` and `applier` must
// outlive the reconciler.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/render.h"
#include "spoke/applier.h"
#include "store/status.h"

namespace canopy {
class Store;
}  // namespace canopy

namespace canopy::spoke {

struct ReconcilerOptions {
  model::RenderLimits limits;
  // Threads for the bulk work of a pass that has much to do (parsing,
  // rendering, status writes, which then share the store's group commits);
  // 0: the number of cores, at most 8. Small passes run on the caller's thread.
  size_t threads = 0;
  // Threads writing status documents when many change at once: the writes
  // wait on fsyncs, not on cores, and with group commit concurrent writers
  // share them (1,000 status documents: ~60 fsyncs instead of ~1,000).
  size_t store_write_threads = 16;
  // Asked before each prune; false skips it. The spoke answers false until
  // its scope is known complete (its sync session caught up with the hub
  // once since start): a spoke whose store was lost or restored from an old
  // backup must not delete what is desired but has not arrived again.
  std::function<bool()> may_prune;
};

struct ReconcileStats {
  size_t documents_parsed = 0;  // desired documents parsed in this pass (new or changed)
  size_t rendered = 0;          // objects rendered successfully (memoized or not)
  size_t renders_computed = 0;  // of which rendered in this pass
  size_t failed = 0;            // templates that failed to render or apply
  size_t global_failures = 0;   // placements or overrides that could not be evaluated
  size_t changed = 0;           // applies that changed something
  size_t unchanged = 0;         // applies that found the object as rendered
  size_t drifted = 0;           // applies that reported drift (ApplyOutcome::drift)
  size_t pruned = 0;            // inventory ids removed
  bool prune_skipped = false;   // because of a global failure or an inventory error
  size_t status_written = 0;
  size_t status_removed = 0;
  size_t held = 0;     // rendered at a revision the hub's rollout has not released here yet
  size_t waiting = 0;  // listed by a placement, not here yet while the scope is incomplete
};

class Reconciler {
 public:
  // `site` is the site's name; its labels are those of its record in the
  // store (`sites/<site>`, written by the hub), never the spoke's own
  // configuration: the hub chose the site's scope by that record.
  Reconciler(Store* store, std::string site, Applier* applier, ReconcilerOptions options = {});

  // One pass (see above). Failures to render (bad input) are reported in
  // status documents only: retrying cannot fix them, a new input will. Applier
  // and store errors (disk full, directory gone, API down) are reported too,
  // and the first one is returned after the pass has done all it could: the
  // caller retries the pass with backoff.
  Status reconcile_once();

  const model::SiteRecord& site() const { return site_; }
  const ReconcileStats& last_stats() const { return stats_; }
  // Failures of the last pass, for logs and the local API.
  const std::vector<model::RenderFailure>& last_failures() const { return failures_; }

 private:
  // The revision (model::template_revision) of a template at this site, as
  // the last pass planned it: the template document last read and the hub
  // overrides of it that apply here; empty when the template is unknown.
  std::string revision_of(const std::string& template_key) const;
  std::string revision_of(const model::ObjectPlan& plan) const;
  struct Seen {
    uint64_t text_hash = 0;
    uint64_t generation = 0;
  };
  struct CurrentStatus {
    std::string key;
    std::string tenant;
    std::string name;
    nlohmann::json doc;
  };
  struct Memo {
    uint64_t fingerprint = 0;
    bool ok = false;
    // When ok. Between passes `object.object` is null and `text` holds it
    // serialized (a parsed Deployment takes several times its text); a pass
    // parses it again for the applier and drops it when done.
    model::RenderedObject object;
    std::string text;
    std::string error;  // when not
  };

  Status refresh_desired();
  // Reads the site record `sites/<site>`: its labels are the site's labels.
  Status refresh_site();
  uint64_t fingerprint(const model::ObjectPlan& plan) const;

  Store* store_;
  model::SiteRecord site_;
  bool site_known_ = false;
  std::string site_error_;
  Applier* applier_;
  model::RenderLimits limits_;
  size_t threads_;
  size_t store_write_threads_;
  std::function<bool()> may_prune_;

  model::DesiredState desired_;
  std::unordered_map<std::string, Seen> seen_;  // desired key -> hash of its bytes
  uint64_t generation_ = 0;
  std::map<std::string, Memo> memo_;  // template key -> last render
  // Template key -> revision_of(plan), for the templates the last pass planned.
  std::unordered_map<std::string, std::string> revisions_;
  ReconcileStats stats_;
  std::vector<model::RenderFailure> failures_;
  std::set<std::string> logged_global_;  // global failures already logged
};

}  // namespace canopy::spoke
