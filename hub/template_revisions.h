#pragma once
// The revision each site should apply of one template: the template's text
// and the hub overrides of it in that site's scope (model::template_revision
// with override hashes), as the site's spoke computes it from its own plan.
// The rollout controller releases and counts by it, and the status aggregate
// tells current outcomes from older ones by it, so that a changed override
// rolls out in waves like a changed template and shows as progressing until
// the sites it applies to report it.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hub/placement_index.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::hub {

class TemplateRevisions {
 public:
  // Reads the template `t/<tenant>/templates/<name>` and the tenant's hub
  // overrides of it; which sites each override applies to is the index's
  // answer (PlacementIndex::sites_for). NotFound when the template is absent.
  // Must not be called with the index's lock or the store's held (it asks
  // both).
  static StatusOr<TemplateRevisions> read(Store* store, PlacementIndex* index,
                                          std::string_view tenant, std::string_view name);

  // The revision at `site`.
  std::string at(std::string_view site) const;
  // The template's own revision (a site no override applies to).
  const std::string& base() const { return base_; }

 private:
  struct Override {
    uint64_t text_hash = 0;
    std::vector<std::string> sites;  // sorted
  };
  uint64_t template_hash_ = 0;
  std::string base_;
  std::vector<Override> overrides_;  // key order
};

}  // namespace canopy::hub
