# canopy_sync_bench: the sync engine at fleet scale (see sync_bench.cc):
#   --case fanout|session_memory|storm|failover|hier|hier_scale
# The real hub::Hub (in a forked process) against 1,000 / 10,000 simulated
# spokes (the real ChildSync on a Store or a MemoryReplica) in one process,
# on a real nats-server started on 127.0.0.1 (canopy_test_support).
# Included from bench/CMakeLists.txt.
add_executable(canopy_sync_bench ${CMAKE_CURRENT_LIST_DIR}/sync_bench.cc
  ${CMAKE_CURRENT_LIST_DIR}/sync_bench_hier.cc ${CMAKE_CURRENT_LIST_DIR}/sync_bench_hub.cc)
target_link_libraries(canopy_sync_bench PRIVATE
  canopy_hub canopy_sync canopy_hub_core canopy_store canopy_proto canopy_test_support
  PkgConfig::SPDLOG PkgConfig::XXHASH Threads::Threads canopy_warnings)
if(NOT TARGET benchmarks)
  add_custom_target(benchmarks)
endif()
add_dependencies(benchmarks canopy_sync_bench)
