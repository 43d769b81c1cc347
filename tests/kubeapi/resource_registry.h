// ResourceRegistry: the kinds the test API server serves, and the discovery
// and OpenAPI documents that describe them.
//
// Stands for: kube-apiserver's discovery endpoints (/api, /api/v1, /apis,
// /apis/<group>/<version>, all in their plain, non-aggregated form) and the
// paths part of /openapi/v3. Built in: v1 Namespace, ConfigMap, Secret,
// Service, ServiceAccount; apps/v1 Deployment, StatefulSet, DaemonSet;
// batch/v1 Job; apiextensions.k8s.io/v1 CustomResourceDefinition. A CRD adds
// its served versions once Established (add_crd / remove_crd).
//
// Leaves out: aggregated discovery (apidiscovery.k8s.io/v2; clients that ask
// for it get the plain form with Content-Type application/json and fall back,
// as they do against servers older than 1.26), storageVersionHash, OpenAPI
// v2, and OpenAPI schemas: each /openapi/v3/<group-version> document lists
// the resource paths and their PATCH operation (with the fieldValidation
// parameter and x-kubernetes-group-version-kind), which is what kubectl reads
// to decide that the server validates fields itself. kubectl therefore does no
// client-side schema validation, and `kubectl explain` cannot work.
// Not thread-safe: the server calls it under its own lock.
#pragma once

#include <list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace canopy::kubeapi {

struct ResourceType {
  std::string group;  // "" for the core group
  std::string version;
  std::string resource;  // plural, as in URLs
  std::string singular;
  std::string kind;
  bool namespaced = true;
  std::vector<std::string> short_names;
  std::vector<std::string> categories;
  bool status_subresource = false;  // status is ignored on the main resource
  bool has_generation = false;      // metadata.generation is kept and bumped
  bool custom = false;              // served for a CRD (lists keep kind/apiVersion)

  std::string group_version() const { return group.empty() ? version : group + "/" + version; }
};

class ResourceRegistry {
 public:
  ResourceRegistry();

  const ResourceType* find(const std::string& group, const std::string& version,
                           const std::string& resource) const;
  const ResourceType* find_kind(const std::string& group_version, const std::string& kind) const;

  // Adds the served versions of `crd` (a CustomResourceDefinition object).
  void add_crd(const nlohmann::json& crd);
  void remove_crd(const std::string& group, const std::string& plural);

  nlohmann::json version_document() const;
  nlohmann::json core_versions() const;                                 // /api
  nlohmann::json group_list() const;                                    // /apis
  std::optional<nlohmann::json> group(const std::string& group) const;  // /apis/<group>
  std::optional<nlohmann::json> resource_list(const std::string& group,
                                              const std::string& version) const;
  nlohmann::json openapi_v3_root() const;  // /openapi/v3
  std::optional<nlohmann::json> openapi_v3(const std::string& group,
                                           const std::string& version) const;

 private:
  std::vector<std::string> group_versions(const std::string& group) const;

  // A list: the ResourceType a request holds stays valid while a CRD write
  // in the same request adds or removes other types.
  std::list<ResourceType> types_;
};

}  // namespace canopy::kubeapi
