# Resync and offline-restart benchmarks (included from bench/CMakeLists.txt).
#   canopy_resync_bench           sync.resync: bytes and time of a spoke's resync
#                                 after a disconnection (log catch-up and
#                                 fingerprint reconciliation), over the in-memory bus
#   canopy_offline_restart_bench  spoke.offline_restart: a real canopy-spoke cut off
#                                 from NATS, restarted, timed until its manifests
#                                 directory holds every desired object again
#   canopy_spoke_footprint_bench  spoke.footprint: resident memory, idle CPU and
#                                 binary size of a real canopy-spoke with 1,000
#                                 objects, and its memory after a garbage flood

add_executable(canopy_resync_bench ${CMAKE_CURRENT_LIST_DIR}/resync_bench.cc)
target_link_libraries(canopy_resync_bench PRIVATE canopy_sync canopy_hub_core canopy_store
  canopy_warnings PkgConfig::SPDLOG)

# The catalogue the spoke benchmarks give their site.
add_library(canopy_bench_site_catalog STATIC ${CMAKE_CURRENT_LIST_DIR}/site_catalog.cc)
target_include_directories(canopy_bench_site_catalog PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(canopy_bench_site_catalog PUBLIC canopy_store nlohmann_json::nlohmann_json
  PRIVATE canopy_warnings)

add_executable(canopy_offline_restart_bench ${CMAKE_CURRENT_LIST_DIR}/offline_restart_bench.cc)
target_link_libraries(canopy_offline_restart_bench PRIVATE canopy_bench_site_catalog canopy_store
  canopy_test_support canopy_warnings PkgConfig::SPDLOG)
# The benchmark runs the real daemon; it finds it beside itself in the build tree.
target_compile_definitions(canopy_offline_restart_bench PRIVATE
  CANOPY_SPOKE_BINARY="$<TARGET_FILE:canopy-spoke>")
add_dependencies(canopy_offline_restart_bench canopy-spoke)

add_executable(canopy_spoke_footprint_bench ${CMAKE_CURRENT_LIST_DIR}/spoke_footprint_bench.cc)
target_link_libraries(canopy_spoke_footprint_bench PRIVATE canopy_bench_site_catalog canopy_store
  canopy_test_support canopy_warnings PkgConfig::NATS PkgConfig::HTTPLIB Threads::Threads)
target_compile_definitions(canopy_spoke_footprint_bench PRIVATE
  CANOPY_SPOKE_BINARY="$<TARGET_FILE:canopy-spoke>"
  CANOPY_HUB_BINARY="$<TARGET_FILE:canopy-hub>"
  CANOPY_TEST_APISERVER_BINARY="$<TARGET_FILE:canopy-test-apiserver>")
add_dependencies(canopy_spoke_footprint_bench canopy-spoke canopy-hub canopy-test-apiserver)

if(NOT TARGET benchmarks)
  add_custom_target(benchmarks)
endif()
add_dependencies(benchmarks canopy_resync_bench canopy_offline_restart_bench
  canopy_spoke_footprint_bench)
