#include "spoke/kube/health.h"

namespace canopy::spoke::kube {
namespace {

using nlohmann::json;

int64_t int_at(const json& obj, const char* key, int64_t fallback = 0) {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  return it != obj.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
}

std::string str_at(const json& obj, const char* key) {
  if (!obj.is_object()) return {};
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The condition of `type`, or null.
const json* condition(const json& status, const std::string& type) {
  if (!status.is_object() || !status.contains("conditions") || !status["conditions"].is_array()) {
    return nullptr;
  }
  for (const json& c : status["conditions"]) {
    if (c.is_object() && str_at(c, "type") == type) return &c;
  }
  return nullptr;
}

std::string describe(const json& c) {
  std::string out = str_at(c, "type") + "=" + str_at(c, "status");
  if (const std::string r = str_at(c, "reason"); !r.empty()) out += " (" + r + ")";
  if (const std::string m = str_at(c, "message"); !m.empty()) out += ": " + m;
  return out;
}

std::string of(int64_t n, int64_t total, const char* what) {
  return std::to_string(n) + " of " + std::to_string(total) + " " + what;
}

Health deployment(const json& spec, const json& status) {
  if (const json* p = condition(status, "Progressing");
      p != nullptr && str_at(*p, "reason") == "ProgressDeadlineExceeded") {
    return {kDegraded, describe(*p)};
  }
  const int64_t want = int_at(spec, "replicas", 1);
  const int64_t updated = int_at(status, "updatedReplicas");
  const int64_t total = int_at(status, "replicas");
  const int64_t available = int_at(status, "availableReplicas");
  if (updated < want) return {kProgressing, of(updated, want, "replicas updated")};
  if (total > updated) {
    return {kProgressing, std::to_string(total - updated) + " old replicas pending termination"};
  }
  if (available < updated) return {kProgressing, of(available, want, "replicas available")};
  return {kHealthy, of(available, want, "replicas available")};
}

Health stateful_set(const json& spec, const json& status) {
  const int64_t want = int_at(spec, "replicas", 1);
  const int64_t ready = int_at(status, "readyReplicas");
  const std::string strategy = spec.is_object() && spec.contains("updateStrategy")
                                   ? str_at(spec["updateStrategy"], "type")
                                   : std::string();
  if (strategy != "OnDelete") {
    const int64_t updated = int_at(status, "updatedReplicas");
    if (updated < want) return {kProgressing, of(updated, want, "replicas updated")};
    const std::string current = str_at(status, "currentRevision");
    const std::string update = str_at(status, "updateRevision");
    if (!update.empty() && current != update) {
      return {kProgressing, "revision " + update + " rolling out"};
    }
  }
  if (ready < want) return {kProgressing, of(ready, want, "replicas ready")};
  return {kHealthy, of(ready, want, "replicas ready")};
}

Health daemon_set(const json& status) {
  const int64_t want = int_at(status, "desiredNumberScheduled");
  const int64_t updated = int_at(status, "updatedNumberScheduled");
  const int64_t available = int_at(status, "numberAvailable");
  if (updated < want) return {kProgressing, of(updated, want, "pods updated")};
  if (available < want) return {kProgressing, of(available, want, "pods available")};
  return {kHealthy, of(available, want, "pods available")};
}

Health job(const json& status) {
  for (const json* c : {condition(status, "Failed"), condition(status, "Complete")}) {
    if (c != nullptr && str_at(*c, "status") == "True") {
      return {str_at(*c, "type") == "Failed" ? kDegraded : kHealthy, describe(*c)};
    }
  }
  return {kProgressing, std::to_string(int_at(status, "succeeded")) + " succeeded, " +
                            std::to_string(int_at(status, "active")) + " active"};
}

}  // namespace

Health health_of(const json& live) {
  if (!live.is_object()) return {kProgressing, "not read yet"};
  const std::string kind = str_at(live, "kind");
  const std::string api = str_at(live, "apiVersion");
  const json empty = json::object();
  const json& meta = live.contains("metadata") ? live["metadata"] : empty;
  const json& spec = live.contains("spec") ? live["spec"] : empty;
  const json& status = live.contains("status") ? live["status"] : empty;

  const int64_t generation = int_at(meta, "generation", 0);
  const bool has_observed = status.is_object() && status.contains("observedGeneration");
  if (has_observed && int_at(status, "observedGeneration") < generation) {
    return {kProgressing,
            "waiting for the controller to observe generation " + std::to_string(generation)};
  }
  const bool apps = api == "apps/v1";
  if (apps && kind == "Deployment") {
    if (!has_observed) return {kProgressing, "waiting for the deployment controller"};
    return deployment(spec, status);
  }
  if (apps && kind == "StatefulSet") {
    if (!has_observed) return {kProgressing, "waiting for the statefulset controller"};
    return stateful_set(spec, status);
  }
  if (apps && kind == "DaemonSet") {
    if (!has_observed) return {kProgressing, "waiting for the daemonset controller"};
    return daemon_set(status);
  }
  if (api == "batch/v1" && kind == "Job") return job(status);
  if (kind == "CustomResourceDefinition") {
    const json* e = condition(status, "Established");
    if (e != nullptr && str_at(*e, "status") == "True") return {kHealthy, "established"};
    return {kProgressing, "waiting to be established"};
  }
  for (const char* type : {"Ready", "Available"}) {
    if (const json* c = condition(status, type)) {
      const std::string s = str_at(*c, "status");
      if (s == "True") return {kHealthy, describe(*c)};
      if (s == "False") return {kDegraded, describe(*c)};
      return {kProgressing, describe(*c)};
    }
  }
  return {kHealthy, "exists"};
}

}  // namespace canopy::spoke::kube
