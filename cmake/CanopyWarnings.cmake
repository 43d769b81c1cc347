# Warnings apply to Canopy's own targets through canopy_warnings; generated
# protobuf code is compiled without them.
add_library(canopy_warnings INTERFACE)
target_compile_options(canopy_warnings INTERFACE -Wall -Wextra -Wpedantic)
if(CANOPY_WERROR)
  target_compile_options(canopy_warnings INTERFACE -Werror)
endif()

if(CANOPY_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# The fuzz build instruments every library the fuzz targets link, so that
# libFuzzer sees coverage inside the store, not only in the target's own file.
if(CANOPY_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
