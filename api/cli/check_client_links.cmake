# Fails when the kubectl plugin depends on the store's RocksDB (it must link
# the client library only). Run by ctest: cmake -DBINARY=<path> -P <this>.
execute_process(COMMAND ldd ${BINARY} OUTPUT_VARIABLE libs RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ldd ${BINARY} failed")
endif()
if(libs MATCHES "rocksdb")
  message(FATAL_ERROR "${BINARY} links RocksDB; it must link canopy_client only")
endif()
execute_process(COMMAND nm -C ${BINARY} OUTPUT_VARIABLE symbols)
if(symbols MATCHES "PlacementIndex|canopy::Store::")
  message(FATAL_ERROR "${BINARY} holds the placement index or the store")
endif()
message(STATUS "${BINARY}: client library only")
