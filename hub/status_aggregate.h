// StatusAggregate: the hub's per-placement rollout state, kept current as
// placements, site records and status documents change.
//
// For each placement `t/<tenant>/placements/<name>` it knows the sites the
// placement targets and, per site, the state of the placement there:
// "failed" when any of its templates reported failed, "applied" when every
// template reported applied, "pending" otherwise — and the counts of each over
// all targeted sites. A template's outcome is the `outcome` of the site's
// status document `sites/<site>/status/<tenant>/<template>` (docs/keys.md),
// "pending" while there is none. A placement's templates are the DNS-1123
// names in its `templates` array, sorted, without duplicates (as the index
// evaluates them).
//
// Input. Like the placement index, the aggregate follows the store's committed
// changes through a store listener (which runs with the store's lock held, so
// it never calls the store) and keeps its own CRDT copy of each placement and
// status document. Which sites a placement targets is the index's answer
// (PlacementIndex::sites_for / placements_of): the aggregate asks it again
// for the placement or site that a commit touched and applies the difference
// (for a grant: each placement of the grant's tenant).
// That answer is current because the aggregate subscribes after the index
// (attach requires an attached index), and the store calls its listeners in
// subscription order. Asking the index from the store's listener is allowed:
// the index's lock is not held while the store calls listeners.
//
// Costs: a status document change updates the placements that list its
// template and target its site (O(those placements × their templates)); a
// placement change recomputes that placement's rows; a site record change
// visits the placements of that site. A query reads the counts as they are,
// reads the placement's templates from the store to tell their current
// revisions, checks the applied sites' revisions against them
// (O(applied sites × templates)) and builds only the rows of its page.
//
// Thread-safety: every method is safe from any thread (one internal mutex).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "canopy/v1/hub.pb.h"
#include "canopy/v1/store.pb.h"
#include "hub/placement_index.h"
#include "store/document.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::hub {

// What the hub's sync sessions know of a site right now (liveness is session
// state, never a document: DESIGN.md).
struct SiteLiveness {
  bool connected = false;     // a live session (not away)
  uint64_t last_seen_ms = 0;  // 0: not heard from since this hub started
};
using Liveness = std::unordered_map<std::string, SiteLiveness>;
// One site's liveness; nullopt when no session of this hub (or of a region
// below, or of a peer) knows the site. Asked for the sites a status covers
// only: a fleet's whole map costs a read per site.
using LivenessOf = std::function<std::optional<SiteLiveness>(const std::string& site)>;

class StatusAggregate {
 public:
  static constexpr size_t kLoadPageSize = 1000;

  ~StatusAggregate();
  StatusAggregate(const StatusAggregate&) = delete;
  StatusAggregate& operator=(const StatusAggregate&) = delete;

  // Subscribes a new aggregate to `store` and loads it. REQUIRES: `index` is
  // attached to `store` (subscribed before this), and both outlive the
  // aggregate, which unsubscribes when destroyed.
  static StatusOr<std::unique_ptr<StatusAggregate>> attach(Store* store, PlacementIndex* index);

  // Follows one committed change (called by the store's listener).
  void on_commit(const v1::LogEntry& entry);

  // The status of placement `name` of `tenant` as GetStatus answers it: the
  // counts over every targeted site, and the rows of the sites after
  // `page_token` in name order, at most `page_size`, with next_page_token set
  // when more follow. NotFound when the placement does not exist.
  // A site whose templates are all applied, some at an older revision than
  // the template's current one (read from the store), is "progressing".
  // With `liveness`, a site without a live session in it is "offline": its
  // row keeps what it last reported in last_state, and it counts as offline,
  // not as applied, failed or pending (O(targeted sites) per call: it is
  // asked of the targeted sites only, without this aggregate's lock held).
  StatusOr<v1::GetStatusResponse> placement_status(std::string_view tenant, std::string_view name,
                                                   const std::string& page_token, size_t page_size,
                                                   const LivenessOf& liveness = nullptr);

 private:
  enum class State { kPending, kApplied, kFailed };
  struct Reported {
    std::string outcome;  // empty: none reported
    std::string message;
    std::string hash;
    std::string revision;  // of the template; empty: not reported
    std::string health;    // read back from the cluster; empty: not reported
    std::string health_message;
    std::string drift;
  };
  struct Placement {
    std::string tenant;
    bool exists = false;
    std::vector<std::string> templates;
    std::map<std::string, State> sites;  // targeted sites and the state there
    uint32_t counts[3] = {0, 0, 0};      // by State
  };

  StatusAggregate(Store* store, PlacementIndex* index);
  Status load();

  // REQUIRES: mu_ held, for all below.
  // After the copy of `key` changed: re-reads it when it is a status document.
  void reread_status(const std::string& key);
  void placement_changed(const std::string& key, std::string_view tenant);
  void status_changed(const std::string& key, std::string_view site, std::string_view tenant,
                      std::string_view tmpl);
  void site_changed(std::string_view site);
  void refresh_sites(const std::string& key, Placement* p);
  void set_state(Placement* p, const std::string& site, std::optional<State> state);
  State state_of(const Placement& p, std::string_view site) const;
  const Reported* reported(std::string_view site, std::string_view tenant,
                           std::string_view tmpl) const;
  void index_templates(const std::string& key, const Placement& p, bool add);

  Store* store_;
  PlacementIndex* index_;
  uint64_t subscription_ = 0;

  std::mutex mu_;
  bool loaded_ = false;
  std::unordered_map<std::string, Document> docs_;  // CRDT copies
  std::unordered_map<std::string, Placement> placements_;
  std::unordered_map<std::string, std::set<std::string>> placements_of_site_;
  // "<tenant>/<template>" -> placements listing that template.
  std::unordered_map<std::string, std::set<std::string>> placements_by_template_;
  std::unordered_map<std::string, Reported> reported_;  // by status document key
};

}  // namespace canopy::hub
