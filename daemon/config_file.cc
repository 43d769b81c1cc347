#include "daemon/config_file.h"

namespace canopy::daemon {

Status load_config_map(const std::string& path, const std::set<std::string>& known,
                       YAML::Node* root) {
  try {
    *root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return invalid_argument("config " + path + ": cannot read the file");
  } catch (const YAML::Exception& e) {
    return invalid_argument("config " + path + ": not valid YAML: " + e.what());
  }
  if (!root->IsMap()) return invalid_argument("config " + path + ": must be a YAML mapping");
  try {
    for (const auto& kv : *root) {
      const std::string key = kv.first.as<std::string>();
      if (!known.count(key)) {
        return invalid_argument("config " + path + ": unknown setting \"" + key + "\"");
      }
    }
  } catch (const YAML::Exception& e) {
    return invalid_argument("config " + path + ": " + e.what());
  }
  return ok_status();
}

std::vector<std::string> nats_urls_of(const YAML::Node& node) {
  std::vector<std::string> urls;
  if (node.IsSequence()) {
    for (const auto& u : node) urls.push_back(u.as<std::string>());
  } else {
    urls.push_back(node.as<std::string>());
  }
  return urls;
}

std::string node_list_of(const YAML::Node& node) {
  if (!node.IsSequence()) return node.as<std::string>();
  std::string out;
  for (const auto& n : node) {
    if (!out.empty()) out += ',';
    out += n.as<std::string>();
  }
  return out;
}

Status validate_nats_urls(const std::vector<std::string>& urls) {
  if (urls.empty()) return invalid_argument("nats: at least one URL is required");
  for (const auto& u : urls) {
    if (!u.starts_with("nats://") && !u.starts_with("tls://")) {
      return invalid_argument("nats: \"" + u + "\" is not a nats:// URL");
    }
  }
  return ok_status();
}

Status validate_log_level(const std::string& level) {
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
  if (!levels.count(level)) {
    return invalid_argument("log_level: \"" + level +
                            "\" is not one of trace, debug, info, warn, error");
  }
  return ok_status();
}

Status validate_listen(const std::string& address) {
  if (!address.empty() && address.find(':') == std::string::npos) {
    return invalid_argument("listen address \"" + address + "\" must be host:port");
  }
  return ok_status();
}

}  // namespace canopy::daemon
