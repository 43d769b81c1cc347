// Deterministic simulation of a federation under faults, run seed by seed:
// the world, what it does to it, what it checks and the variables that choose
// the seeds (CANOPY_SIM_FIRST, CANOPY_SIM_SEEDS, CANOPY_SEED, ...) are
// described in sim_world.h.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/simulation/sim_world.h"

namespace canopy::sim {
namespace {

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v == nullptr ? fallback : std::strtoull(v, nullptr, 10);
}

TEST(Simulation, FederationConvergesUnderFaults) {
  spdlog::set_level(std::getenv("CANOPY_SEED") != nullptr ? spdlog::level::debug
                                                          : spdlog::level::err);
  const char* one = std::getenv("CANOPY_SEED");
  const uint64_t first =
      one != nullptr ? std::strtoull(one, nullptr, 10) : env_u64("CANOPY_SIM_FIRST", 1);
  const uint64_t count = one != nullptr ? 1 : env_u64("CANOPY_SIM_SEEDS", 10000);
  const int steps = static_cast<int>(env_u64("CANOPY_SIM_STEPS", 150));
  int failures = 0;
  uint64_t failed_writes = 0;
  uint64_t scope_changes = 0;
  uint64_t rendered = 0;
  uint64_t failovers = 0;
  uint64_t redirects = 0;
  uint64_t moves = 0;
  for (uint64_t seed = first; seed < first + count && failures < 10; ++seed) {
    World world(seed);
    world.chaos(steps);
    world.heal();
    failed_writes += world.failed_writes();
    failovers += world.failovers();
    redirects += world.redirects();
    moves += world.moves();
    const std::string problem = world.check();
    scope_changes += world.scope_changes();
    rendered += world.rendered_objects();
    if (!problem.empty()) {
      ++failures;
      ADD_FAILURE() << "seed=" << seed << ": " << problem << "\n  replay: CANOPY_SEED=" << seed
                    << " CANOPY_SIM_STEPS=" << steps << " ./simulation_test";
    }
  }
  // The injected write failures must fire, or the runs test nothing of them.
  std::printf(
      "seeds %llu..%llu: %llu injected write failures fired, %llu scope changes, %llu "
      "rendered lines compared, %llu failovers, %llu redirects followed, %llu site moves\n",
      static_cast<unsigned long long>(first), static_cast<unsigned long long>(first + count - 1),
      static_cast<unsigned long long>(failed_writes),
      static_cast<unsigned long long>(scope_changes), static_cast<unsigned long long>(rendered),
      static_cast<unsigned long long>(failovers), static_cast<unsigned long long>(redirects),
      static_cast<unsigned long long>(moves));
  if (count >= 50) {
    EXPECT_GT(failed_writes, 0u);
    EXPECT_GT(scope_changes, 0u);
    EXPECT_GT(rendered, 0u);
    EXPECT_GT(redirects, 0u);
    if (std::getenv("CANOPY_SIM_MOVES") != nullptr) {
      EXPECT_GT(moves, 0u);
    }
    if (std::getenv("CANOPY_SIM_ACTIVE_ACTIVE") != nullptr) {
      EXPECT_GT(failovers, 0u);
    }
  }
}

}  // namespace
}  // namespace canopy::sim
