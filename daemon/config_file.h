// Reading a daemon's YAML config file and checking the settings every daemon
// has. Every error names the file or the setting and the reason.
#pragma once

#include <yaml-cpp/yaml.h>

#include <set>
#include <string>
#include <vector>

#include "store/status.h"

namespace canopy::daemon {

// Reads `path` into `*root`: a YAML mapping whose keys are all in `known`
// (an unknown key is an error, so a typo does not silently fall back to a
// default).
Status load_config_map(const std::string& path, const std::set<std::string>& known,
                       YAML::Node* root);

// `nats:` as one URL or a list of them. Throws YAML::Exception like yaml-cpp.
std::vector<std::string> nats_urls_of(const YAML::Node& node);

// A list of node names as one string, "a,b" (sync::parse_node_list reads
// it), from one name, a comma-separated string or a YAML list.
std::string node_list_of(const YAML::Node& node);

// At least one URL, each nats:// or tls://.
Status validate_nats_urls(const std::vector<std::string>& urls);
// trace, debug, info, warn or error.
Status validate_log_level(const std::string& level);
// Empty (not served) or host:port.
Status validate_listen(const std::string& address);

}  // namespace canopy::daemon
