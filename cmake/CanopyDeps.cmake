# Every dependency comes from Debian's packages. NATS.c and gRPC ship no usable
# CMake config there, so they (and the rest, for uniformity) are found with
# pkg-config.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

pkg_check_modules(NATS REQUIRED IMPORTED_TARGET libnats)
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
pkg_check_modules(PROTOBUF REQUIRED IMPORTED_TARGET protobuf)
pkg_check_modules(ROCKSDB REQUIRED IMPORTED_TARGET rocksdb)
pkg_check_modules(SPDLOG REQUIRED IMPORTED_TARGET spdlog)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
pkg_check_modules(YAMLCPP REQUIRED IMPORTED_TARGET yaml-cpp)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(OpenSSL REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(GTest REQUIRED)

find_program(PROTOC protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# canopy-spoke links RocksDB (with its compression libraries) and protobuf from
# Debian's static archives (CANOPY_SPOKE_STATIC): a site machine then maps only
# the parts of them the spoke links, not 11 MB of shared library with its relocations
# (docs/kube-applier.md, footprint). Everything else, the hub and the tests
# included, links the shared libraries. A target opts in with the property
# CANOPY_STATIC_DEPS, which canopy_rocksdb reads on the target being linked.
# Off in sanitizer and fuzz builds, which instrument what they link.
if(CANOPY_SANITIZE OR CANOPY_FUZZ)
  set(CANOPY_SPOKE_STATIC_DEFAULT OFF)
else()
  set(CANOPY_SPOKE_STATIC_DEFAULT ON)
endif()
option(CANOPY_SPOKE_STATIC "Link canopy-spoke's RocksDB and protobuf statically"
  ${CANOPY_SPOKE_STATIC_DEFAULT})
add_library(canopy_rocksdb INTERFACE)
if(CANOPY_SPOKE_STATIC)
  set(CANOPY_ROCKSDB_STATIC_LIBS)
  foreach(lib rocksdb snappy lz4 zstd bz2 z gflags)
    find_library(CANOPY_STATIC_${lib} NAMES lib${lib}.a REQUIRED)
    list(APPEND CANOPY_ROCKSDB_STATIC_LIBS ${CANOPY_STATIC_${lib}})
  endforeach()
  add_library(canopy_rocksdb_static INTERFACE)
  target_include_directories(canopy_rocksdb_static INTERFACE ${ROCKSDB_INCLUDE_DIRS})
  target_link_libraries(canopy_rocksdb_static INTERFACE ${CANOPY_ROCKSDB_STATIC_LIBS}
    Threads::Threads)
  target_link_libraries(canopy_rocksdb INTERFACE
    $<IF:$<BOOL:$<TARGET_PROPERTY:CANOPY_STATIC_DEPS>>,canopy_rocksdb_static,PkgConfig::ROCKSDB>)
else()
  target_link_libraries(canopy_rocksdb INTERFACE PkgConfig::ROCKSDB)
endif()
# The same for protobuf (the spoke's messages; canopy_proto links it).
add_library(canopy_protobuf INTERFACE)
if(CANOPY_SPOKE_STATIC)
  find_library(CANOPY_STATIC_protobuf NAMES libprotobuf.a REQUIRED)
  add_library(canopy_protobuf_static INTERFACE)
  target_include_directories(canopy_protobuf_static INTERFACE ${PROTOBUF_INCLUDE_DIRS})
  target_compile_options(canopy_protobuf_static INTERFACE ${PROTOBUF_CFLAGS_OTHER})
  target_link_libraries(canopy_protobuf_static INTERFACE ${CANOPY_STATIC_protobuf}
    ${CANOPY_STATIC_z} Threads::Threads)
  target_link_libraries(canopy_protobuf INTERFACE
    $<IF:$<BOOL:$<TARGET_PROPERTY:CANOPY_STATIC_DEPS>>,canopy_protobuf_static,PkgConfig::PROTOBUF>)
else()
  target_link_libraries(canopy_protobuf INTERFACE PkgConfig::PROTOBUF)
endif()
