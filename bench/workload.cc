// The workload generator (workload.h): the stream of changes, and the names
// of their kinds. Documents are made in workload_create.cc, patches in
// workload_patch.cc; the generator's state is in workload_generator.h.
#include "workload.h"

#include <vector>

#include "workload_generator.h"

namespace canopy::bench {
namespace workload_internal {

std::vector<Change> Generator::run() {
  std::vector<Change> out;
  out.reserve(options_.initial_docs + options_.changes);
  for (size_t i = 0; i < options_.initial_docs; ++i) {
    tick();
    out.push_back(create());
  }
  for (size_t i = 0; i < options_.changes; ++i) {
    tick();
    const size_t r = rng_.below(100);
    if (r < 70 && !live_.empty()) {
      out.push_back(patch());
    } else if (r >= 90 && !live_.empty()) {
      out.push_back(remove());
    } else {
      out.push_back(create());
    }
  }
  return out;
}

}  // namespace workload_internal

using workload_internal::Generator;

const char* kind_name(Change::Kind kind) {
  switch (kind) {
    case Change::kCreate:
      return "create";
    case Change::kPatch:
      return "patch";
    case Change::kRemove:
      return "remove";
  }
  return "?";
}

std::vector<Change> generate_workload(const WorkloadOptions& options) {
  return Generator(options).run();
}

}  // namespace canopy::bench
