# Workload generator for the benchmarks (included from bench/CMakeLists.txt).
#   canopy_bench_workload  library: generate_workload(), write_workload(), read_workload()
#   canopy_workload_gen    CLI: --seed N --initial N --changes N --out FILE
#   workload_test          gtest
# Needs nlohmann_json::nlohmann_json, GTest::gtest_main and the canopy_warnings interface target.

add_library(canopy_bench_workload STATIC
  ${CMAKE_CURRENT_LIST_DIR}/workload.cc
  ${CMAKE_CURRENT_LIST_DIR}/workload_create.cc
  ${CMAKE_CURRENT_LIST_DIR}/workload_patch.cc
  ${CMAKE_CURRENT_LIST_DIR}/workload_file.cc)
target_include_directories(canopy_bench_workload PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_compile_features(canopy_bench_workload PUBLIC cxx_std_20)
target_link_libraries(canopy_bench_workload
  PUBLIC nlohmann_json::nlohmann_json
  PRIVATE canopy_warnings)

add_executable(canopy_workload_gen ${CMAKE_CURRENT_LIST_DIR}/workload_gen.cc)
target_link_libraries(canopy_workload_gen PRIVATE canopy_bench_workload canopy_warnings)

add_executable(workload_test ${CMAKE_CURRENT_LIST_DIR}/workload_test.cc)
target_link_libraries(workload_test PRIVATE canopy_bench_workload GTest::gtest_main canopy_warnings)
add_test(NAME workload_test COMMAND workload_test)
