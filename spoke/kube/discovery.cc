#include "spoke/kube/discovery.h"

namespace canopy::spoke::kube {

std::string ResourceType::group_version_path() const {
  return group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
}

std::string ResourceType::collection_path(const std::string& ns) const {
  if (namespaced && !ns.empty()) {
    return group_version_path() + "/namespaces/" + ns + "/" + resource;
  }
  return group_version_path() + "/" + resource;
}

std::string ResourceType::object_path(const std::string& ns, const std::string& name) const {
  return collection_path(ns) + "/" + name;
}

Discovery::Discovery(KubeClient* client, std::chrono::milliseconds refresh_after)
    : client_(client), refresh_after_(refresh_after) {}

Status Discovery::read_group_version(const std::string& api_version, GroupVersion* gv) {
  const auto slash = api_version.find('/');
  ResourceType base;
  if (slash == std::string::npos) {
    base.version = api_version;
  } else {
    base.group = api_version.substr(0, slash);
    base.version = api_version.substr(slash + 1);
  }
  if (base.version.empty() || base.version.find('/') != std::string::npos) {
    return invalid_argument("apiVersion '" + api_version + "' is malformed");
  }
  gv->read_at = std::chrono::steady_clock::now();
  ++documents_read_;
  auto r = client_->request("GET", base.group_version_path());
  if (!r.ok()) return r.status();
  if (r->code == 404) {
    gv->found = false;
    gv->kinds.clear();
    return ok_status();
  }
  if (r->code != 200) return status_of(*r, "discovery of " + api_version);
  const nlohmann::json doc = r->json();
  if (!doc.is_object() || !doc.contains("resources") || !doc["resources"].is_array()) {
    return unavailable("discovery of " + api_version + ": not an APIResourceList");
  }
  gv->found = true;
  gv->kinds.clear();
  for (const auto& res : doc["resources"]) {
    if (!res.is_object() || !res.contains("name") || !res.contains("kind")) continue;
    const std::string name = res["name"].get<std::string>();
    if (name.find('/') != std::string::npos) continue;  // a subresource
    ResourceType t = base;
    t.kind = res["kind"].get<std::string>();
    t.resource = name;
    t.namespaced = res.value("namespaced", false);
    gv->kinds[t.kind] = std::move(t);
  }
  return ok_status();
}

StatusOr<ResourceType> Discovery::resolve(const std::string& api_version, const std::string& kind) {
  auto [it, inserted] = cache_.try_emplace(api_version);
  GroupVersion& gv = it->second;
  auto find = [&]() -> const ResourceType* {
    auto k = gv.kinds.find(kind);
    return k == gv.kinds.end() ? nullptr : &k->second;
  };
  if (inserted ||
      (find() == nullptr && std::chrono::steady_clock::now() - gv.read_at >= refresh_after_)) {
    if (Status s = read_group_version(api_version, &gv); !s.ok()) {
      if (inserted) cache_.erase(it);
      return s;
    }
  }
  if (const ResourceType* t = find()) return *t;
  if (!gv.found) {
    return not_found("the cluster does not serve apiVersion " + api_version + " (kind " + kind +
                     ")");
  }
  return not_found("the cluster serves no kind " + kind + " in " + api_version);
}

StatusOr<std::vector<ResourceType>> Discovery::refresh_all() {
  std::vector<std::string> versions;
  auto core = client_->request("GET", "/api");
  if (!core.ok()) return core.status();
  if (core->code != 200) return status_of(*core, "discovery /api");
  const nlohmann::json core_doc = core->json();
  if (!core_doc.is_object()) return unavailable("discovery /api: not an APIVersions");
  for (const auto& v : core_doc.value("versions", nlohmann::json::array())) {
    if (v.is_string()) versions.push_back(v.get<std::string>());
  }
  auto groups = client_->request("GET", "/apis");
  if (!groups.ok()) return groups.status();
  if (groups->code != 200) return status_of(*groups, "discovery /apis");
  const nlohmann::json groups_doc = groups->json();
  if (!groups_doc.is_object()) return unavailable("discovery /apis: not an APIGroupList");
  for (const auto& g : groups_doc.value("groups", nlohmann::json::array())) {
    if (!g.is_object()) continue;
    for (const auto& v : g.value("versions", nlohmann::json::array())) {
      if (v.is_object() && v.contains("groupVersion")) {
        versions.push_back(v["groupVersion"].get<std::string>());
      }
    }
  }
  std::vector<ResourceType> out;
  for (const std::string& v : versions) {
    GroupVersion& gv = cache_[v];
    if (Status s = read_group_version(v, &gv); !s.ok()) return s;
    for (const auto& [kind, t] : gv.kinds) out.push_back(t);
  }
  return out;
}

}  // namespace canopy::spoke::kube
