#include "spoke/desired_state.h"

#include <nlohmann/json.hpp>

#include "store/store.h"

namespace canopy::spoke {

namespace {
constexpr size_t kScanPage = 512;
}  // namespace

StatusOr<model::DesiredState> load_desired_state(Store& store, const std::string& site) {
  model::DesiredState out;
  for (const std::string& prefix : model::desired_prefixes(site)) {
    std::string after;
    while (true) {
      auto page = store.scan(prefix, after, kScanPage);
      if (!page.ok()) return page.status();
      for (ScanItem& item : page->items) {
        const model::DesiredKind kind = model::desired_kind(item.key, site);
        if (kind == model::DesiredKind::kNone) continue;
        auto doc = nlohmann::json::parse(item.json, nullptr, /*allow_exceptions=*/false);
        if (doc.is_discarded() || !doc.is_object()) {
          return data_loss("document " + item.key + " is not a JSON object");
        }
        model::put_desired(&out, kind, item.key, std::move(doc));
      }
      if (page->next_after.empty()) break;
      after = std::move(page->next_after);
    }
  }
  return out;
}

}  // namespace canopy::spoke
