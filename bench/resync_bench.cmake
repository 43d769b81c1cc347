# Resync and offline-restart benchmarks (included from bench/CMakeLists.txt).
#   canopy_resync_bench           sync.resync: bytes and time of a spoke's resync
#                                 after a disconnection (log catch-up and
#                                 fingerprint reconciliation), over the in-memory bus
#   canopy_offline_restart_bench  spoke.offline_restart: a real canopy-spoke cut off
#                                 from NATS, restarted, timed until its manifests
#                                 directory holds every desired object again

add_executable(canopy_resync_bench ${CMAKE_CURRENT_LIST_DIR}/resync_bench.cc)
target_link_libraries(canopy_resync_bench PRIVATE canopy_sync canopy_hub_core canopy_store
  canopy_warnings PkgConfig::SPDLOG)

add_executable(canopy_offline_restart_bench ${CMAKE_CURRENT_LIST_DIR}/offline_restart_bench.cc)
target_link_libraries(canopy_offline_restart_bench PRIVATE canopy_store canopy_test_support
  canopy_warnings PkgConfig::SPDLOG)
# The benchmark runs the real daemon; it finds it beside itself in the build tree.
target_compile_definitions(canopy_offline_restart_bench PRIVATE
  CANOPY_SPOKE_BINARY="$<TARGET_FILE:canopy-spoke>")
add_dependencies(canopy_offline_restart_bench canopy-spoke)

if(NOT TARGET benchmarks)
  add_custom_target(benchmarks)
endif()
add_dependencies(benchmarks canopy_resync_bench canopy_offline_restart_bench)
