# The dependency rule of docs (DESIGN.md, "The picture"), checked at configure
# time: a source file of a layer may include only the layers listed for it
# ("canopy/" is the generated protobuf code, which every layer may use).
# Tests (*/tests/) may also include tests/support. Link dependencies follow
# the same order, so a violation that slipped past this check would not link.
set(CANOPY_LAYERS
  "store:store"
  "sync:store,sync"
  "daemon:store,daemon"
  "model:store,model"
  "hub:store,sync,model,daemon,hub"
  "spoke:store,sync,model,daemon,spoke"
  "api:store,sync,model,daemon,hub,spoke,api"
  "cmd:store,sync,model,daemon,hub,spoke,api,cmd")

foreach(entry ${CANOPY_LAYERS})
  string(REPLACE ":" ";" parts "${entry}")
  list(GET parts 0 layer)
  list(GET parts 1 allowed)
  string(REPLACE "," ";" allowed "${allowed}")
  list(APPEND allowed canopy)
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS
    ${CMAKE_CURRENT_SOURCE_DIR}/${layer}/*.h ${CMAKE_CURRENT_SOURCE_DIR}/${layer}/*.cc)
  foreach(source ${sources})
    set(may ${allowed})
    if(source MATCHES "/tests/")
      list(APPEND may tests)
    endif()
    file(STRINGS ${source} includes REGEX "^#include \"[a-z_]+/")
    foreach(line ${includes})
      string(REGEX REPLACE "^#include \"([a-z_]+)/.*" "\\1" target "${line}")
      if(NOT target IN_LIST may)
        file(RELATIVE_PATH rel ${CMAKE_CURRENT_SOURCE_DIR} ${source})
        message(FATAL_ERROR "${rel}: ${layer}/ may not include ${target}/ (${line}); "
                            "see cmake/CanopyLayers.cmake")
      endif()
    endforeach()
  endforeach()
endforeach()
