// Small files written so that a crash leaves the old bytes or the new ones,
// never a part: the admin token file, the kube applier's inventory.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "store/status.h"

namespace canopy {

// Writes `text` to a temporary file next to `path` (created with `mode`),
// fsyncs it, renames it over `path` and fsyncs the directory. Unavailable,
// naming the file and the reason, on any failure (the temporary file is
// removed then).
Status write_file_atomically(const std::string& path, std::string_view text, mode_t mode);

}  // namespace canopy
