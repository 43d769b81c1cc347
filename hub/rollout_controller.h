// RolloutController: moves placements' rollouts along (docs/rollouts.md).
//
// For each placement with a rollout policy (model::Rollout) and each of its
// templates, the template's current revision is model::template_revision of
// its document. A targeted site (PlacementIndex::sites_for) applies that
// revision only once its release document
// `sites/<site>/releases/<tenant>/<template>` names it (the spoke's
// reconciler holds it otherwise). Each step() releases the revision to more
// sites, in site name order, so that at most `maxUnavailable` sites hold a
// release they have not yet reported applied at that revision, and only to
// the sites of the current wave (`waves`: the first wave whose sites have not
// all reported it applied, with the waves before it); it releases
// nothing while the policy is `paused`, nor to a site with an active hold
// (`sites/<site>/holds/<hold>`, written at the site: it waits, and so does
// its wave), nor once more than `maxFailures`
// released sites report that revision failed (the rollout has paused itself:
// fix the template, or raise maxFailures, and it goes on). A release is a
// local write at the hub that replicates to the site like its site record.
//
// step() reads the store (placements, templates, releases, status documents:
// O(targeted sites × templates) point reads per placement with a policy) and
// is called from the hub's rollout thread, never from a store listener.
//
// Each step derives the wave from the sites' status documents (a site added
// in the middle of the name order shifts the later waves), and records what
// it saw in the placement's rollout state document
// (`t/<tenant>/rollouts/<placement>`, model::RolloutState: the wave, counts,
// held sites, why it is paused), written only when that changes and removed
// with the placement or its policy. The hub runs a step when a document a
// rollout depends on changes, and when a hold ends (RolloutStep), not on a
// timer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "hub/placement_index.h"
#include "model/documents.h"
#include "store/clock.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::hub {

struct RolloutStep {
  size_t placements = 0;            // placements with a policy seen
  size_t released = 0;              // release documents written
  std::vector<std::string> paused;  // "<tenant>/<placement>: why", for each paused one
  std::vector<std::string> held;    // "<site>: why", sites a release waited for (a hold)
  // When the first of those holds ends (UINT64_MAX: none): a step then may
  // release what the hold kept back.
  uint64_t next_hold_end_ms = UINT64_MAX;
};

class RolloutController {
 public:
  // REQUIRES: `store` and `index` outlive the controller; `index` follows `store`.
  RolloutController(Store* store, PlacementIndex* index, Clock* clock = SystemClock::instance())
      : store_(store), index_(index), clock_(clock) {}

  StatusOr<RolloutStep> step();

 private:
  // Steps the placement at `key`; adds its rollout state key to `live`.
  Status step_placement(const std::string& key, RolloutStep* out, std::set<std::string>* live);
  // Writes the rollout state document at `key` unless it already says `state`.
  Status save_state(const std::string& key, const model::RolloutState& state);
  // The site's active hold (model::Hold) that ends last, if any.
  std::optional<model::Hold> hold_of(const std::string& site);

  Store* store_;
  PlacementIndex* index_;
  Clock* clock_;
  std::vector<std::string> paused_logged_;
  std::map<std::string, model::RolloutState> written_;  // state key -> as last written
};

}  // namespace canopy::hub
