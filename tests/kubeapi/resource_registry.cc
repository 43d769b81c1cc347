#include "tests/kubeapi/resource_registry.h"

#include <algorithm>
#include <functional>
#include <set>

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

constexpr const char* kVerbs[] = {"create", "delete", "get", "list", "patch", "update", "watch"};

ResourceType builtin(std::string group, std::string resource, std::string singular,
                     std::string kind, bool namespaced, std::vector<std::string> short_names,
                     bool workload) {
  ResourceType t;
  t.group = std::move(group);
  t.version = "v1";
  t.resource = std::move(resource);
  t.singular = std::move(singular);
  t.kind = std::move(kind);
  t.namespaced = namespaced;
  t.short_names = std::move(short_names);
  t.status_subresource = workload;
  t.has_generation = workload;
  if (workload) t.categories = {"all"};
  return t;
}

json version_ref(const std::string& group, const std::string& version) {
  return json{{"groupVersion", group + "/" + version}, {"version", version}};
}

std::string url_prefix(const ResourceType& t) {
  return t.group.empty() ? "/api/" + t.version : "/apis/" + t.group + "/" + t.version;
}

std::string openapi_key(const std::string& group, const std::string& version) {
  return group.empty() ? "api/" + version : "apis/" + group + "/" + version;
}

json patch_operation(const ResourceType& t) {
  json params = json::array();
  for (const char* name : {"dryRun", "fieldManager", "fieldValidation", "force"}) {
    params.push_back(
        json{{"name", name},
             {"in", "query"},
             {"schema", json{{"type", std::string(name) == "force" ? "boolean" : "string"}}}});
  }
  return json{{"operationId", "patch" + t.kind},
              {"parameters", params},
              {"x-kubernetes-action", "patch"},
              {"x-kubernetes-group-version-kind",
               json{{"group", t.group}, {"version", t.version}, {"kind", t.kind}}}};
}

}  // namespace

ResourceRegistry::ResourceRegistry() {
  types_ = {
      builtin("", "namespaces", "namespace", "Namespace", false, {"ns"}, false),
      builtin("", "configmaps", "configmap", "ConfigMap", true, {"cm"}, false),
      builtin("", "secrets", "secret", "Secret", true, {}, false),
      builtin("", "services", "service", "Service", true, {"svc"}, false),
      builtin("", "serviceaccounts", "serviceaccount", "ServiceAccount", true, {"sa"}, false),
      builtin("apps", "deployments", "deployment", "Deployment", true, {"deploy"}, true),
      builtin("apps", "statefulsets", "statefulset", "StatefulSet", true, {"sts"}, true),
      builtin("apps", "daemonsets", "daemonset", "DaemonSet", true, {"ds"}, true),
      builtin("batch", "jobs", "job", "Job", true, {}, true),
      builtin("apiextensions.k8s.io", "customresourcedefinitions", "customresourcedefinition",
              "CustomResourceDefinition", false, {"crd", "crds"}, true),
  };
  // Namespaces and Services have a status subresource but no generation.
  for (auto& t : types_) {
    if (t.resource == "namespaces" || t.resource == "services") t.status_subresource = true;
    if (t.resource == "services") t.categories = {"all"};
    if (t.resource == "customresourcedefinitions") t.categories = {"api-extensions"};
  }
}

const ResourceType* ResourceRegistry::find(const std::string& group, const std::string& version,
                                           const std::string& resource) const {
  for (const auto& t : types_) {
    if (t.group == group && t.version == version && t.resource == resource) return &t;
  }
  return nullptr;
}

const ResourceType* ResourceRegistry::find_kind(const std::string& group_version,
                                                const std::string& kind) const {
  for (const auto& t : types_) {
    if (t.group_version() == group_version && t.kind == kind) return &t;
  }
  return nullptr;
}

void ResourceRegistry::add_crd(const json& crd) {
  const json& spec = crd.value("spec", json::object());
  const json& names = spec.value("names", json::object());
  std::string group = spec.value("group", "");
  std::string plural = names.value("plural", "");
  remove_crd(group, plural);
  for (const auto& v : spec.value("versions", json::array())) {
    if (!v.value("served", false)) continue;
    ResourceType t;
    t.group = group;
    t.version = v.value("name", "");
    t.resource = plural;
    t.singular = names.value("singular", "");
    if (t.singular.empty()) {
      std::string kind = names.value("kind", "");
      std::transform(kind.begin(), kind.end(), std::back_inserter(t.singular),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    }
    t.kind = names.value("kind", "");
    t.namespaced = spec.value("scope", "Namespaced") == "Namespaced";
    t.short_names = names.value("shortNames", std::vector<std::string>{});
    t.categories = names.value("categories", std::vector<std::string>{});
    const json subresources = v.value("subresources", json::object());
    t.status_subresource = subresources.contains("status");
    t.has_generation = true;
    t.custom = true;
    types_.push_back(std::move(t));
  }
}

void ResourceRegistry::remove_crd(const std::string& group, const std::string& plural) {
  types_.remove_if(
      [&](const ResourceType& t) { return t.custom && t.group == group && t.resource == plural; });
}

std::vector<std::string> ResourceRegistry::group_versions(const std::string& group) const {
  std::vector<std::string> out;
  for (const auto& t : types_) {
    if (t.group == group && std::find(out.begin(), out.end(), t.version) == out.end()) {
      out.push_back(t.version);
    }
  }
  return out;
}

json ResourceRegistry::version_document() const {
  return json{{"major", "1"},
              {"minor", "32"},
              {"gitVersion", "v1.32.0-canopy-test"},
              {"gitCommit", "0000000000000000000000000000000000000000"},
              {"gitTreeState", "clean"},
              {"buildDate", "2026-01-01T00:00:00Z"},
              {"goVersion", "go1.23.0"},
              {"compiler", "gc"},
              {"platform", "linux/amd64"}};
}

json ResourceRegistry::core_versions() const {
  return json{{"kind", "APIVersions"},
              {"versions", json::array({"v1"})},
              {"serverAddressByClientCIDRs",
               json::array({json{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", "127.0.0.1"}}})}};
}

json ResourceRegistry::group_list() const {
  json groups = json::array();
  std::vector<std::string> seen;
  for (const auto& t : types_) {
    if (t.group.empty() || std::find(seen.begin(), seen.end(), t.group) != seen.end()) continue;
    seen.push_back(t.group);
    groups.push_back(*group(t.group));
  }
  return json{{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", groups}};
}

std::optional<json> ResourceRegistry::group(const std::string& group) const {
  std::vector<std::string> versions = group_versions(group);
  if (group.empty() || versions.empty()) return std::nullopt;
  json v = json::array();
  for (const auto& version : versions) v.push_back(version_ref(group, version));
  return json{{"kind", "APIGroup"},
              {"apiVersion", "v1"},
              {"name", group},
              {"versions", v},
              {"preferredVersion", v[0]}};
}

std::optional<json> ResourceRegistry::resource_list(const std::string& group,
                                                    const std::string& version) const {
  json resources = json::array();
  for (const auto& t : types_) {
    if (t.group != group || t.version != version) continue;
    json r{{"name", t.resource},
           {"singularName", t.singular},
           {"namespaced", t.namespaced},
           {"kind", t.kind},
           {"verbs", kVerbs},
           {"shortNames", t.short_names},
           {"categories", t.categories}};
    if (t.short_names.empty()) r.erase("shortNames");
    if (t.categories.empty()) r.erase("categories");
    resources.push_back(r);
    if (t.status_subresource) {
      resources.push_back(json{{"name", t.resource + "/status"},
                               {"singularName", ""},
                               {"namespaced", t.namespaced},
                               {"kind", t.kind},
                               {"verbs", json::array({"get", "patch", "update"})}});
    }
  }
  if (resources.empty()) return std::nullopt;
  return json{{"kind", "APIResourceList"},
              {"apiVersion", "v1"},
              {"groupVersion", group.empty() ? version : group + "/" + version},
              {"resources", resources}};
}

json ResourceRegistry::openapi_v3_root() const {
  json paths = json::object();
  std::set<std::pair<std::string, std::string>> gvs;
  for (const auto& t : types_) gvs.insert({t.group, t.version});
  for (const auto& [group, version] : gvs) {
    std::string key = openapi_key(group, version);
    size_t hash = std::hash<std::string>{}(openapi_v3(group, version)->dump());
    paths[key] =
        json{{"serverRelativeURL", "/openapi/v3/" + key + "?hash=" + std::to_string(hash)}};
  }
  return json{{"paths", paths}};
}

std::optional<json> ResourceRegistry::openapi_v3(const std::string& group,
                                                 const std::string& version) const {
  json paths = json::object();
  for (const auto& t : types_) {
    if (t.group != group || t.version != version) continue;
    std::string base = url_prefix(t) + (t.namespaced ? "/namespaces/{namespace}/" : "/");
    paths[base + t.resource + "/{name}"] = json{{"patch", patch_operation(t)}};
  }
  if (paths.empty()) return std::nullopt;
  return json{{"openapi", "3.0.0"},
              {"info", json{{"title", "Kubernetes"}, {"version", "v1.32.0"}}},
              {"paths", paths},
              {"components", json{{"schemas", json::object()}}}};
}

}  // namespace canopy::kubeapi
