// kubectl-canopy's settings file, and `label site`.
//
// Settings: a YAML file, by default $XDG_CONFIG_HOME/canopy/config.yaml (else
// ~/.config/canopy/config.yaml), or --config / $CANOPY_CONFIG:
//
//   hub: 127.0.0.1:7400          # the hub's gRPC address
//   tokenFile: ~/.canopy/token   # a file whose first line is the API token
//   token: canopy_...            # or the token itself (prefer tokenFile)
//   timeout: 5                   # seconds per call
//   ca: ~/.canopy/hub-ca.crt     # TLS: the CA that issued the hub's certificate
//   cert: ~/.canopy/me.crt       # TLS: a client certificate and its key (mTLS)
//   key: ~/.canopy/me.key
//   tls: true                    # TLS with the system's CAs (implied by ca)
//
// Flags win over the environment, which wins over the file.
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "api/cli/client.h"

namespace canopy::cli {
namespace {

std::string expand_home(const std::string& path) {
  const char* home = std::getenv("HOME");
  if (path.starts_with("~/") && home != nullptr) return std::string(home) + path.substr(1);
  return path;
}

}  // namespace

std::string default_settings_path() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  if (xdg != nullptr && *xdg != '\0') return std::string(xdg) + "/canopy/config.yaml";
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') return "";
  return std::string(home) + "/.config/canopy/config.yaml";
}

Settings read_settings(const std::string& path, bool must_exist) {
  Settings out;
  if (path.empty()) return out;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (must_exist) fail("settings file " + path + " does not exist");
    return out;
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    fail("settings file " + path + ": " + e.what());
  }
  if (root.IsNull()) return out;
  if (!root.IsMap()) fail("settings file " + path + ": not a map of settings");
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!kv.second.IsScalar()) fail("settings file " + path + ": " + key + " must be a scalar");
    const std::string value = kv.second.as<std::string>();
    if (key == "hub") {
      out.hub = value;
    } else if (key == "token") {
      out.token = value;
    } else if (key == "tokenFile") {
      out.token_file = expand_home(value);
    } else if (key == "ca") {
      out.ca = expand_home(value);
    } else if (key == "cert") {
      out.cert = expand_home(value);
    } else if (key == "key") {
      out.key = expand_home(value);
    } else if (key == "tls") {
      if (value != "true" && value != "false") {
        fail("settings file " + path + ": tls must be true or false, not " + value);
      }
      out.tls = value == "true";
    } else if (key == "timeout") {
      char* end = nullptr;
      const long t = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || t < 1 || t > 3600) {
        fail("settings file " + path + ": timeout must be 1..3600 seconds, not " + value);
      }
      out.timeout_s = static_cast<int>(t);
    } else {
      fail("settings file " + path + ": unknown setting " + quote(key) +
           " (known: hub, token, tokenFile, timeout, ca, cert, key, tls)");
    }
  }
  return out;
}

int cmd_label_site(Hub& hub, const std::string& site, const std::vector<std::string>& changes,
                   bool overwrite) {
  if (changes.empty()) fail("label site needs at least one KEY=VALUE or KEY-");
  v1::GetRequest get;
  get.set_kind(std::string(api::kSite));
  get.set_name(site);
  const v1::GetResponse got = hub.call(&v1::Catalog::Stub::Get, get);
  json doc = json::parse(got.object().json(), nullptr, false);
  if (!doc.is_object()) fail("site " + quote(site) + ": the hub's record is not a JSON object");
  if (!doc.contains("labels") || !doc["labels"].is_object()) doc["labels"] = json::object();
  json& labels = doc["labels"];
  for (const std::string& c : changes) {
    if (c.size() > 1 && c.back() == '-' && c.find('=') == std::string::npos) {
      const std::string key = c.substr(0, c.size() - 1);
      if (!labels.contains(key)) fail("label " + quote(key) + " not found on site " + site);
      labels.erase(key);
      continue;
    }
    const size_t eq = c.find('=');
    if (eq == std::string::npos || eq == 0) {
      fail("label change " + quote(c) + " is neither KEY=VALUE nor KEY-");
    }
    const std::string key = c.substr(0, eq), value = c.substr(eq + 1);
    if (labels.contains(key) && labels[key] != value && !overwrite) {
      fail("site " + site + " already has label " + key + "=" + labels[key].dump() +
           "; --overwrite replaces it");
    }
    labels[key] = value;
  }
  // The version read: a concurrent edit makes this one fail (ABORTED), never
  // silently undoes it.
  v1::PutRequest put;
  *put.mutable_object() = got.object();
  put.mutable_object()->set_json(doc.dump());
  hub.call(&v1::Catalog::Stub::Put, put);
  std::printf("site/%s labeled\n", site.c_str());
  return 0;
}

}  // namespace canopy::cli
