#include "hub/template_revisions.h"

#include <xxhash.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "model/documents.h"
#include "model/keys.h"
#include "model/render.h"

namespace canopy::hub {

StatusOr<TemplateRevisions> TemplateRevisions::read(Store* store, PlacementIndex* index,
                                                    std::string_view tenant,
                                                    std::string_view name) {
  auto text = store->get(model::template_key(tenant, name));
  if (!text.ok()) return text.status();
  TemplateRevisions r;
  r.template_hash_ = XXH3_64bits(text->data(), text->size());
  r.base_ = model::template_revision(r.template_hash_);
  const std::string prefix = model::tenant_kind_prefix(tenant, "override");
  std::string after;
  while (true) {
    auto page = store->scan(prefix, after, 1000);
    if (!page.ok()) return page.status();
    for (const ScanItem& item : page->items) {
      const nlohmann::json doc = nlohmann::json::parse(item.json, nullptr, false);
      if (doc.is_discarded()) continue;
      auto o = model::parse_override(doc);
      // An override the model refuses applies nowhere (the index and the
      // spoke's plan skip it too).
      if (!o.ok() || o->template_name != name) continue;
      Override& ov = r.overrides_.emplace_back();
      ov.text_hash = XXH3_64bits(item.json.data(), item.json.size());
      ov.sites = index->sites_for(item.key);
    }
    if (page->next_after.empty()) break;
    after = std::move(page->next_after);
  }
  return r;
}

std::string TemplateRevisions::at(std::string_view site) const {
  std::vector<uint64_t> hashes;
  for (const Override& o : overrides_) {
    if (std::binary_search(o.sites.begin(), o.sites.end(), site)) hashes.push_back(o.text_hash);
  }
  return model::template_revision(template_hash_, hashes);
}

}  // namespace canopy::hub
