// Discovery: which resource, path and scope serve an apiVersion and kind —
// what kubectl's RESTMapper learns from /api and /apis.
//
// It reads one group-version's document (/api/v1, /apis/<group>/<version>)
// the first time a kind of it is needed, caches it, and reads it again when a
// kind it lacks is asked for (a CustomResourceDefinition installed since, by
// the same placement), at most once per `refresh_after` per group-version, so
// a kind that never appears costs one request per interval, not one per
// object. A cluster with 30 group-versions costs the spoke only the few its
// objects use. /api and /apis are read by refresh_all() (kubectl
// api-resources does the same walk), for tools and tests.
//
// Thread-safety: REQUIRES external synchronization.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "spoke/kube/kube_client.h"
#include "store/status.h"

namespace canopy::spoke::kube {

struct ResourceType {
  std::string group;     // "" for the core group
  std::string version;   // "v1"
  std::string kind;      // "Deployment"
  std::string resource;  // "deployments"
  bool namespaced = true;

  std::string api_version() const { return group.empty() ? version : group + "/" + version; }
  // /api/v1 or /apis/<group>/<version>
  std::string group_version_path() const;
  // The collection path, in `ns` for a namespaced type (all namespaces when
  // empty).
  std::string collection_path(const std::string& ns) const;
  std::string object_path(const std::string& ns, const std::string& name) const;
};

class Discovery {
 public:
  explicit Discovery(KubeClient* client,
                     std::chrono::milliseconds refresh_after = std::chrono::seconds(5));

  // NotFound when the server does not serve the kind (yet); Unavailable and
  // others when discovery itself failed.
  StatusOr<ResourceType> resolve(const std::string& api_version, const std::string& kind);

  // Forgets what is known of `api_version`: the next resolve reads it again
  // (a CRD of that group just became Established).
  void invalidate(const std::string& api_version) { cache_.erase(api_version); }

  // Reads /api and /apis and every group-version: every type the server serves.
  StatusOr<std::vector<ResourceType>> refresh_all();

  uint64_t documents_read() const { return documents_read_; }

 private:
  struct GroupVersion {
    std::map<std::string, ResourceType> kinds;
    std::chrono::steady_clock::time_point read_at{};
    bool found = false;
  };
  Status read_group_version(const std::string& api_version, GroupVersion* gv);

  KubeClient* client_;
  std::chrono::milliseconds refresh_after_;
  std::map<std::string, GroupVersion> cache_;  // api version -> kinds
  uint64_t documents_read_ = 0;
};

}  // namespace canopy::spoke::kube
