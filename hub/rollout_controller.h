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
// Stateless: each step derives the wave from the sites' status documents (a
// site added in the middle of the name order shifts the later waves).
// Left out (docs/rollouts.md): a rollout state document, site-side holds.
#pragma once

#include <cstddef>
#include <optional>
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
};

class RolloutController {
 public:
  // REQUIRES: `store` and `index` outlive the controller; `index` follows `store`.
  RolloutController(Store* store, PlacementIndex* index, Clock* clock = SystemClock::instance())
      : store_(store), index_(index), clock_(clock) {}

  StatusOr<RolloutStep> step();

 private:
  Status step_placement(const std::string& key, RolloutStep* out);
  // The site's active hold (model::Hold) that ends last, if any.
  std::optional<model::Hold> hold_of(const std::string& site);

  Store* store_;
  PlacementIndex* index_;
  Clock* clock_;
  std::vector<std::string> paused_logged_;
};

}  // namespace canopy::hub
