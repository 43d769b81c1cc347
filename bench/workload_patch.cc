// The workload generator's patches (Generator, workload_generator.h): JSON
// merge patches that change one field of a live document each (replicas,
// image tags, env, resources, annotations, labels, data entries, ports),
// composed 1 to 3 at a time, and removals.
#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <string>
#include <utility>

#include "workload_generator.h"

namespace canopy::bench::workload_internal {

// Builds a merge patch touching one field of `doc` (the working copy, already updated).
Json Generator::mutation(const LiveDoc& d, const Json& doc) {
  switch (d.kind) {
    case DocKind::kDeployment:
      switch (rng_.weighted({30, 25, 10, 15, 5, 10, 5})) {
        case 0:
          return replicas(doc);
        case 1:
          return image_tag(doc);
        case 2:
          return env_change(d, doc);
        case 3:
          return annotation(d, doc);
        case 4:
          return restart(doc);
        case 5:
          return label(doc);
        default:
          return resources(doc);
      }
    case DocKind::kConfigMap:
      switch (rng_.weighted({50, 15, 10, 15, 10})) {
        case 0:
          return data_update(doc);
        case 1:
          return data_add(doc);
        case 2:
          return data_remove(doc);
        case 3:
          return annotation(d, doc);
        default:
          return label(doc);
      }
    case DocKind::kService:
      switch (rng_.weighted({25, 10, 40, 25})) {
        case 0:
          return ports(doc);
        case 1:
          return session_affinity(doc);
        case 2:
          return annotation(d, doc);
        default:
          return label(doc);
      }
  }
  return Json::object();
}

Json Generator::at_path(std::initializer_list<const char*> path, Json leaf) {
  Json out = std::move(leaf);
  for (auto it = std::rbegin(path); it != std::rend(path); ++it) {
    Json wrap = Json::object();
    wrap[*it] = std::move(out);
    out = std::move(wrap);
  }
  return out;
}

Json Generator::replicas(const Json& doc) {
  const int64_t cur = doc["spec"]["replicas"].get<int64_t>();
  int64_t next = cur;
  while (next == cur) next = std::max<int64_t>(0, cur + rng_.range(-3, 4));
  return at_path({"spec", "replicas"}, next);
}

Json Generator::containers_patch(Json containers) {
  return at_path({"spec", "template", "spec", "containers"}, std::move(containers));
}

Json Generator::image_tag(const Json& doc) {
  Json containers = doc["spec"]["template"]["spec"]["containers"];
  Json& c = containers[rng_.below(containers.size())];
  std::string img = c["image"].get<std::string>();
  img =
      img.substr(0, img.rfind(':')) + ":" + (rng_.chance(0.7) ? version() : "sha-" + rng_.hex(12));
  c["image"] = img;
  return containers_patch(std::move(containers));
}

Json Generator::env_change(const LiveDoc& d, const Json& doc) {
  Json containers = doc["spec"]["template"]["spec"]["containers"];
  Json& env = containers[0]["env"];
  if (rng_.chance(0.7) && !env.empty()) {
    // Change a literal value, or flip a feature flag.
    for (int tries = 0; tries < 8; ++tries) {
      Json& e = env[rng_.below(env.size())];
      if (!e.contains("value")) continue;
      const std::string name = e["name"].get<std::string>();
      if (name.starts_with("FEATURE_")) {
        e["value"] = e["value"] == "true" ? "false" : "true";
      } else {
        e["value"] = env_value(d, name);
      }
      break;
    }
  } else {
    env.push_back({{"name", "FEATURE_" + upper(str(rng_.pick(kWords))) + "_X" +
                                std::to_string(rng_.below(1000))},
                   {"value", "true"}});
  }
  return containers_patch(std::move(containers));
}

Json Generator::resources(const Json& doc) {
  Json containers = doc["spec"]["template"]["spec"]["containers"];
  Json& c = containers[rng_.below(containers.size())];
  if (rng_.chance(0.5)) {
    c["resources"]["requests"]["cpu"] = cpu();
    c["resources"]["limits"]["cpu"] = cpu();
  } else {
    c["resources"]["requests"]["memory"] = memory();
    c["resources"]["limits"]["memory"] = memory();
  }
  return containers_patch(std::move(containers));
}

Json Generator::restart(const Json&) {
  return at_path(
      {"spec", "template", "metadata", "annotations", "kubectl.kubernetes.io/restartedAt"}, now());
}

Json Generator::annotation(const LiveDoc& d, const Json& doc) {
  const Json& ann = doc["metadata"]["annotations"];
  const size_t what = rng_.weighted({45, 35, 20});
  if (what == 0) {
    // Touch a bookkeeping annotation.
    switch (rng_.below(3)) {
      case 0:
        return at_path({"metadata", "annotations", "canopy.io/updated-at"}, now());
      case 1:
        return at_path({"metadata", "annotations", "canopy.io/change-id"}, rng_.hex(16));
      default:
        return at_path({"metadata", "annotations", "config.canopy.io/checksum-0"}, rng_.hex(64));
    }
  }
  if (what == 2 && ann.size() > 3) {
    // Remove a removable annotation (never the creation bookkeeping).
    for (int tries = 0; tries < 8; ++tries) {
      auto it = ann.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(rng_.below(ann.size())));
      if (it.key().starts_with("canopy.io/") || it.key().starts_with("meta.helm.sh/")) continue;
      return at_path({"metadata", "annotations", it.key().c_str()}, nullptr);
    }
  }
  auto [k, v] = padding_annotation(d, rng_.below(64));
  return at_path({"metadata", "annotations", k.c_str()}, std::move(v));
}

Json Generator::label(const Json& doc) {
  const Json& labels = doc["metadata"]["labels"];
  switch (rng_.weighted({40, 20, 20, 20})) {
    case 0:
      return at_path({"metadata", "labels", "app.kubernetes.io/version"}, version());
    case 1:
      return at_path({"metadata", "labels", "environment"}, str(rng_.pick(kEnvironments)));
    case 2:
      return at_path({"metadata", "labels", "team"}, str(rng_.pick(kTeams)));
    default:
      if (labels.contains("canopy.io/canary"))
        return at_path({"metadata", "labels", "canopy.io/canary"}, nullptr);
      return at_path({"metadata", "labels", "canopy.io/canary"}, "true");
  }
}

// Picks a data entry; returns "" if there is none.
std::string Generator::data_key(const Json& doc) {
  const Json& data = doc["data"];
  if (data.empty()) return {};
  auto it = data.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(rng_.below(data.size())));
  return it.key();
}

Json Generator::data_update(const Json& doc) {
  const std::string k = data_key(doc);
  if (k.empty()) return data_add(doc);
  std::string v = doc["data"][k].get<std::string>();
  if (v.size() > 64) {
    // Edit one setting of a config file; the whole value is replaced, as Kubernetes does.
    const size_t pos = rng_.below(v.size());
    if (k.ends_with(".json")) {
      // Change a rollout percentage, keeping the file valid JSON.
      static constexpr std::string_view kRollout = "\"rollout\": ";
      size_t r = v.find(kRollout, pos);
      if (r == std::string::npos) r = v.find(kRollout);
      if (r != std::string::npos) {
        const size_t num = r + kRollout.size();
        const size_t end = v.find_first_not_of("0123456789", num);
        v.replace(num, end - num, std::to_string(rng_.range(0, 100)));
      } else {
        v = "{\"version\": " + std::to_string(rng_.range(1, 500)) + "}\n";
      }
    } else {
      // Keep the line's key and change its value (or add a comment to a line without one).
      size_t bol = v.rfind('\n', pos);
      bol = bol == std::string::npos ? 0 : bol + 1;
      size_t eol = v.find('\n', bol);
      if (eol == std::string::npos) eol = v.size();
      const std::string line = v.substr(bol, eol - bol);
      size_t sep = line.find('=');
      if (sep == std::string::npos) sep = line.find(": ");
      const std::string value = std::to_string(rng_.range(1, 900)) + (rng_.chance(0.5) ? "s" : "");
      const std::string edited = sep == std::string::npos
                                     ? line + " # " + value
                                     : line.substr(0, sep + (line[sep] == '=' ? 1 : 2)) + value;
      v.replace(bol, eol - bol, edited);
    }
  } else {
    v = std::to_string(rng_.range(0, 1000000));
  }
  return at_path({"data", k.c_str()}, v);
}

Json Generator::data_add(const Json&) {
  return at_path(
      {"data", (upper(str(rng_.pick(kWords))) + "_" + std::to_string(rng_.below(1000))).c_str()},
      std::to_string(rng_.range(0, 1000000)));
}

Json Generator::data_remove(const Json& doc) {
  if (doc["data"].size() <= 2) return data_add(doc);
  const std::string k = data_key(doc);
  return at_path({"data", k.c_str()}, nullptr);
}

Json Generator::ports(const Json& doc) {
  Json p = doc["spec"]["ports"];
  bool has_admin = false;
  for (const Json& e : p) has_admin |= e["name"] == "admin";
  if (has_admin && rng_.chance(0.5)) {
    Json keep = Json::array();
    for (Json& e : p)
      if (e["name"] != "admin") keep.push_back(std::move(e));
    p = std::move(keep);
  } else if (!has_admin && rng_.chance(0.5)) {
    p.push_back(service_port("admin", 8081 + static_cast<int64_t>(rng_.below(10)), "admin"));
  } else {
    Json& e = p[rng_.below(p.size())];
    e["port"] = e["port"].get<int64_t>() == 80 ? 8080 : 80;
  }
  return at_path({"spec", "ports"}, std::move(p));
}

Json Generator::session_affinity(const Json& doc) {
  return at_path({"spec", "sessionAffinity"},
                 doc["spec"]["sessionAffinity"] == "None" ? "ClientIP" : "None");
}

Change Generator::patch() {
  LiveDoc& d = live_[rng_.below(live_.size())];
  const size_t fields = 1 + rng_.weighted({55, 30, 15});
  Json working = d.doc;
  Json combined = Json::object();
  for (size_t i = 0; i < fields; ++i) {
    Json m = mutation(d, working);
    working.merge_patch(m);
    combined.update(m, /*merge_objects=*/true);
  }
  // Composing merge patches by deep merge is exact here (no patch deletes an object that a
  // later one writes into), so `working` is the document with `combined` applied.
  d.doc = std::move(working);
  return Change{Change::kPatch, d.key, combined.dump()};
}

Change Generator::remove() {
  const size_t i = rng_.below(live_.size());
  Change c{Change::kRemove, live_[i].key, {}};
  std::swap(live_[i], live_.back());
  live_.pop_back();
  return c;
}

}  // namespace canopy::bench::workload_internal
