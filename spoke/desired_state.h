// Loading the documents rendering reads (model/render.h) from a site's store.
#pragma once

#include <string>

#include "model/render.h"
#include "store/status.h"

namespace canopy {
class Store;
}  // namespace canopy

namespace canopy::spoke {

// Scans the prefixes of model::desired_prefixes(site) page by page. Documents
// that are not valid JSON objects are DataLoss.
StatusOr<model::DesiredState> load_desired_state(Store& store, const std::string& site);

}  // namespace canopy::spoke
