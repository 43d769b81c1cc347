// Health of a live Kubernetes object, read from its status the way kubectl
// rollout status and Flux's kstatus read it.
//
//   - observedGeneration: a status whose status.observedGeneration is below
//     metadata.generation describes an older spec: "progressing".
//   - Deployment: the Progressing condition with reason
//     ProgressDeadlineExceeded is "degraded"; fewer updated or available
//     replicas than spec.replicas (default 1), or old replicas still
//     terminating, is "progressing"; else "healthy".
//   - StatefulSet: ready and updated replicas against spec.replicas, and
//     currentRevision against updateRevision (RollingUpdate).
//   - DaemonSet: updated and available pods against desiredNumberScheduled.
//   - Job: condition Complete is "healthy", Failed is "degraded", else
//     "progressing".
//   - Any other kind with status.conditions: Ready (or Available) True is
//     "healthy", False is "degraded" (with its reason and message), Unknown
//     is "progressing"; a CustomResourceDefinition is "healthy" once
//     Established.
//   - A kind with no status to read (ConfigMap, Service, ...) is "healthy"
//     once it exists.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace canopy::spoke::kube {

inline constexpr const char* kHealthy = "healthy";
inline constexpr const char* kProgressing = "progressing";
inline constexpr const char* kDegraded = "degraded";

struct Health {
  std::string state;    // kHealthy, kProgressing or kDegraded
  std::string message;  // why, e.g. "2 of 3 replicas available"
  bool operator==(const Health&) const = default;
};

Health health_of(const nlohmann::json& live);

}  // namespace canopy::spoke::kube
