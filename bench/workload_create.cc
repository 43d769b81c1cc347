// The workload generator's documents (Generator, workload_generator.h):
// Deployment, ConfigMap and Service manifests with their labels,
// annotations, containers and config files, padded to the sizes workload.h
// describes.
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "workload_generator.h"

namespace canopy::bench::workload_internal {

Change Generator::create() {
  LiveDoc d;
  const size_t k = rng_.weighted({40, 35, 25});
  d.kind = k == 0 ? DocKind::kDeployment : k == 1 ? DocKind::kConfigMap : DocKind::kService;
  d.tenant = str(rng_.pick(kTenants));
  d.ns = str(rng_.pick(kNamespaces));
  d.app = str(rng_.pick(kApps));
  const uint64_t id = next_id_++;
  std::string group;
  std::string kind;
  switch (d.kind) {
    case DocKind::kDeployment:
      d.name = d.app + "-" + std::to_string(id);
      group = "apps";
      kind = "Deployment";
      d.doc = deployment(d);
      break;
    case DocKind::kConfigMap:
      d.name = d.app + "-config-" + std::to_string(id);
      group = "core";
      kind = "ConfigMap";
      d.doc = config_map(d);
      break;
    case DocKind::kService:
      d.name = d.app + "-" + std::to_string(id);
      group = "core";
      kind = "Service";
      d.doc = service(d);
      break;
  }
  d.key = "t/" + d.tenant + "/template/" + group + "/" + kind + "/" + d.ns + "/" + d.name;
  Change c{Change::kCreate, d.key, d.doc.dump()};
  live_.push_back(std::move(d));
  return c;
}

std::string Generator::version() {
  return std::to_string(rng_.range(0, 4)) + "." + std::to_string(rng_.range(0, 40)) + "." +
         std::to_string(rng_.range(0, 25));
}

std::string Generator::image(const std::string& repo) {
  std::string tag;
  switch (rng_.below(3)) {
    case 0:
      tag = version();
      break;
    case 1:
      tag = "v" + version();
      break;
    default:
      tag = "sha-" + rng_.hex(12);
      break;
  }
  return str(rng_.pick(kRegistries)) + "/" + repo + ":" + tag;
}

std::string Generator::cpu() {
  static constexpr std::array<std::string_view, 7> kCpu = {"50m",  "100m", "250m", "500m",
                                                           "750m", "1",    "2"};
  return str(rng_.pick(kCpu));
}

std::string Generator::memory() {
  static constexpr std::array<std::string_view, 7> kMem = {"64Mi",  "128Mi", "256Mi", "512Mi",
                                                           "768Mi", "1Gi",   "2Gi"};
  return str(rng_.pick(kMem));
}

Json Generator::labels(const LiveDoc& d, const std::string& ver) {
  Json l = Json::object();
  l["app.kubernetes.io/name"] = d.app;
  l["app.kubernetes.io/instance"] = d.name;
  l["app.kubernetes.io/version"] = ver;
  l["app.kubernetes.io/component"] = str(rng_.pick(kComponents));
  l["app.kubernetes.io/part-of"] = d.ns;
  l["app.kubernetes.io/managed-by"] = rng_.chance(0.5) ? "canopy" : "Helm";
  if (rng_.chance(0.7)) l["team"] = str(rng_.pick(kTeams));
  if (rng_.chance(0.6)) l["environment"] = str(rng_.pick(kEnvironments));
  if (rng_.chance(0.3)) l["tier"] = rng_.chance(0.5) ? "frontend" : "backend";
  return l;
}

Json Generator::metadata(const LiveDoc& d, const std::string& ver) {
  Json m = Json::object();
  m["name"] = d.name;
  m["namespace"] = d.ns;
  m["labels"] = labels(d, ver);
  Json a = Json::object();
  a["canopy.io/owner"] = str(rng_.pick(kTeams)) + "@" + d.tenant + ".example";
  a["canopy.io/created-at"] = now();
  if (m["labels"]["app.kubernetes.io/managed-by"] == "Helm") {
    a["meta.helm.sh/release-name"] = d.app;
    a["meta.helm.sh/release-namespace"] = d.ns;
  }
  if (rng_.chance(0.5)) a["description"] = str(rng_.pick(kSentences));
  m["annotations"] = std::move(a);
  return m;
}

// An annotation for padding; `n` keeps the keys of parameterised ones distinct.
std::pair<std::string, Json> Generator::padding_annotation(const LiveDoc& d, size_t n) {
  switch (rng_.below(8)) {
    case 0:
      return {"argocd.argoproj.io/tracking-id", d.app + ":" + d.ns + "/" + d.name + ":" + d.tenant};
    case 1:
      return {"argocd.argoproj.io/sync-wave", std::to_string(rng_.range(-2, 5))};
    case 2:
      return {"runbook.canopy.io/url",
              "https://runbooks." + d.tenant + ".example/" + d.ns + "/" + d.app};
    case 3:
      return {"config.canopy.io/checksum-" + std::to_string(n), rng_.hex(64)};
    case 4:
      return {"vault.hashicorp.com/agent-inject-secret-" + str(rng_.pick(kWords)) + "-" +
                  std::to_string(n),
              "secret/data/" + d.tenant + "/" + d.ns + "/" + d.app + "/" + str(rng_.pick(kWords))};
    case 5:
      return {"notes.canopy.io/" + std::to_string(n), str(rng_.pick(kSentences))};
    case 6:
      return {"reloader.stakater.com/search", "true"};
    default:
      return {"external-dns.alpha.kubernetes.io/hostname",
              d.app + "." + d.ns + "." + d.tenant + ".example"};
  }
}

// Adds annotations to `annotations` (part of `doc`, whose size is *size) until *size reaches
// `target` or the next one would exceed kMaxDocBytes.
void Generator::pad_annotations(const LiveDoc& d, Json& annotations, size_t* size, size_t target) {
  for (size_t n = 0; *size < target; ++n) {
    auto [k, v] = padding_annotation(d, n);
    if (annotations.contains(k)) continue;
    const size_t add = member_bytes(k, v);
    if (*size + add > kMaxDocBytes) break;
    annotations[k] = std::move(v);
    *size += add;
  }
}

Json Generator::env_var(const LiveDoc& d, const EnvTemplate& t) {
  Json e = Json::object();
  e["name"] = str(t.name);
  switch (t.source) {
    case EnvTemplate::kValue:
      e["value"] = env_value(d, t.name);
      break;
    case EnvTemplate::kSecret:
      e["valueFrom"] = {{"secretKeyRef",
                         {{"name", d.app + "-secrets"},
                          {"key", [&] {
                             std::string s(t.name);
                             std::transform(s.begin(), s.end(), s.begin(), [](char c) {
                               return c == '_' ? '-'
                                               : static_cast<char>(
                                                     std::tolower(static_cast<unsigned char>(c)));
                             });
                             return s;
                           }()}}}};
      break;
    case EnvTemplate::kConfigMap:
      e["valueFrom"] = {{"configMapKeyRef", {{"name", d.app + "-config"}, {"key", str(t.name)}}}};
      break;
    case EnvTemplate::kField: {
      std::string path = t.name == "POD_NAME"        ? "metadata.name"
                         : t.name == "POD_NAMESPACE" ? "metadata.namespace"
                         : t.name == "NODE_NAME"     ? "spec.nodeName"
                                                     : "status.podIP";
      e["valueFrom"] = {{"fieldRef", {{"apiVersion", "v1"}, {"fieldPath", path}}}};
      break;
    }
  }
  return e;
}

std::string Generator::env_value(const LiveDoc& d, std::string_view name) {
  if (name == "LOG_LEVEL") return str(rng_.pick(kLogLevels));
  if (name == "LOG_FORMAT") return rng_.chance(0.7) ? "json" : "text";
  if (name == "HTTP_PORT") return "8080";
  if (name == "GRPC_PORT") return "9090";
  if (name == "DATABASE_HOST") return d.ns + "-db.databases.svc.cluster.local";
  if (name == "DATABASE_PORT") return "5432";
  if (name == "DATABASE_NAME") return d.ns + "_" + d.app;
  if (name == "REDIS_URL")
    return "redis://" + d.ns + "-redis-master:6379/" + std::to_string(rng_.below(16));
  if (name == "KAFKA_BROKERS")
    return "kafka-0.kafka-headless:9092,kafka-1.kafka-headless:9092,kafka-2.kafka-headless:9092";
  if (name == "OTEL_EXPORTER_OTLP_ENDPOINT") return "http://otel-collector.observability:4317";
  if (name == "OTEL_SERVICE_NAME") return d.app;
  if (name == "OTEL_RESOURCE_ATTRIBUTES")
    return "service.namespace=" + d.ns + ",deployment.environment=" + str(rng_.pick(kEnvironments));
  if (name == "JAVA_OPTS")
    return "-XX:MaxRAMPercentage=75.0 -XX:+UseG1GC -Dfile.encoding=UTF-8 -Duser.timezone=UTC";
  if (name == "GOMAXPROCS") return std::to_string(rng_.range(1, 8));
  if (name == "S3_BUCKET") return d.tenant + "-" + d.ns + "-" + str(rng_.pick(kWords));
  if (name == "AWS_REGION") return str(rng_.pick(kRegions));
  return rng_.hex(16);
}

Json Generator::container(const LiveDoc& d, const std::string& name, const std::string& repo,
                          bool main) {
  Json c = Json::object();
  c["name"] = name;
  c["image"] = image(repo);
  c["imagePullPolicy"] = "IfNotPresent";
  if (main) {
    c["ports"] = Json::array({{{"name", "http"}, {"containerPort", 8080}, {"protocol", "TCP"}}});
    if (rng_.chance(0.5))
      c["ports"].push_back({{"name", "metrics"}, {"containerPort", 9090}, {"protocol", "TCP"}});
    Json env = Json::array();
    const size_t n = 3 + rng_.below(6);
    std::vector<size_t> idx(kEnvPool.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    for (size_t i = 0; i < n; ++i) {
      std::swap(idx[i], idx[i + rng_.below(idx.size() - i)]);
      env.push_back(env_var(d, kEnvPool[idx[i]]));
    }
    c["env"] = std::move(env);
  }
  c["resources"] = {{"requests", {{"cpu", cpu()}, {"memory", memory()}}},
                    {"limits", {{"cpu", cpu()}, {"memory", memory()}}}};
  if (main) {
    c["readinessProbe"] = {{"httpGet", {{"path", "/readyz"}, {"port", "http"}}},
                           {"initialDelaySeconds", 5},
                           {"periodSeconds", 10}};
    c["livenessProbe"] = {{"httpGet", {{"path", "/healthz"}, {"port", "http"}}},
                          {"initialDelaySeconds", 15},
                          {"periodSeconds", 20},
                          {"failureThreshold", 3}};
    c["volumeMounts"] =
        Json::array({{{"name", "config"}, {"mountPath", "/etc/" + d.app}, {"readOnly", true}}});
  }
  c["securityContext"] = {{"allowPrivilegeEscalation", false},
                          {"readOnlyRootFilesystem", true},
                          {"capabilities", {{"drop", Json::array({"ALL"})}}}};
  return c;
}

Json Generator::deployment(const LiveDoc& d) {
  const std::string ver = version();
  Json doc = Json::object();
  doc["apiVersion"] = "apps/v1";
  doc["kind"] = "Deployment";
  doc["metadata"] = metadata(d, ver);
  doc["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
      std::to_string(rng_.range(1, 40));
  Json spec = Json::object();
  spec["replicas"] = rng_.range(1, 12);
  spec["revisionHistoryLimit"] = 10;
  spec["progressDeadlineSeconds"] = 600;
  spec["selector"] = {
      {"matchLabels", {{"app.kubernetes.io/name", d.app}, {"app.kubernetes.io/instance", d.name}}}};
  spec["strategy"] = {{"type", "RollingUpdate"},
                      {"rollingUpdate", {{"maxSurge", "25%"}, {"maxUnavailable", 0}}}};
  Json tmeta = Json::object();
  tmeta["labels"] = {{"app.kubernetes.io/name", d.app}, {"app.kubernetes.io/instance", d.name}};
  tmeta["annotations"] = {{"prometheus.io/scrape", "true"},
                          {"prometheus.io/port", "9090"},
                          {"checksum/config", rng_.hex(64)}};
  Json pod = Json::object();
  pod["serviceAccountName"] = d.app;
  pod["terminationGracePeriodSeconds"] = 30;
  pod["securityContext"] = {{"runAsNonRoot", true}, {"runAsUser", 10001}, {"fsGroup", 10001}};
  Json containers = Json::array({container(d, d.app, d.ns + "/" + d.app, true)});
  if (rng_.chance(0.35)) {
    const std::string side = str(rng_.pick(kSidecars));
    containers.push_back(container(d, side, "sidecars/" + side, false));
  }
  pod["containers"] = std::move(containers);
  pod["volumes"] =
      Json::array({{{"name", "config"}, {"configMap", {{"name", d.app + "-config"}}}}});
  if (rng_.chance(0.3))
    pod["nodeSelector"] = {{"kubernetes.io/os", "linux"}, {"node-pool", "general"}};
  if (rng_.chance(0.2))
    pod["tolerations"] = Json::array(
        {{{"key", "dedicated"}, {"operator", "Equal"}, {"value", d.ns}, {"effect", "NoSchedule"}}});
  Json tmpl = Json::object();
  tmpl["metadata"] = std::move(tmeta);
  tmpl["spec"] = std::move(pod);
  spec["template"] = std::move(tmpl);
  doc["spec"] = std::move(spec);

  // Most deployments are 1.5-5 KiB; a few carry long env lists and many annotations.
  const size_t target = rng_.chance(0.85) ? static_cast<size_t>(rng_.range(1536, 5120))
                                          : static_cast<size_t>(rng_.range(5120, 9728));
  size_t size = json_size(doc);
  Json& env = doc["spec"]["template"]["spec"]["containers"][0]["env"];
  // Feature flags in the env list first, then annotations.
  for (size_t n = 0; size < target && n < 24; ++n) {
    Json e = {{"name", "FEATURE_" + upper(str(rng_.pick(kWords))) + "_" + std::to_string(n)},
              {"value", rng_.chance(0.6) ? "true" : "false"}};
    const size_t add = element_bytes(e);
    if (size + add > kMaxDocBytes) break;
    env.push_back(std::move(e));
    size += add;
  }
  pad_annotations(d, doc["metadata"]["annotations"], &size, target);
  return doc;
}

std::string Generator::upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// A config file body of about `bytes` characters.
std::string Generator::config_file(const LiveDoc& d, const std::string& name, size_t bytes) {
  std::string s;
  size_t n = 0;
  if (name.ends_with(".yaml")) {
    s = "server:\n  port: 8080\n  shutdownTimeout: 30s\nlogging:\n  level: " +
        str(rng_.pick(kLogLevels)) + "\n";
    while (s.size() < bytes) {
      const std::string w = str(rng_.pick(kWords));
      s += w + "_" + std::to_string(n++) +
           ":\n  enabled: " + (rng_.chance(0.5) ? "true" : "false") +
           "\n  ttl: " + std::to_string(rng_.range(5, 3600)) + "s\n  endpoint: http://" + w + "." +
           d.ns + ".svc:8080\n";
    }
  } else if (name.ends_with(".properties")) {
    while (s.size() < bytes) {
      s += d.app + "." + str(rng_.pick(kWords)) + "." + std::to_string(n++) + "=" +
           std::to_string(rng_.range(0, 100000)) + "\n";
    }
  } else if (name.ends_with(".json")) {
    s = "{\n";
    while (s.size() < bytes) {
      s += "  \"" + str(rng_.pick(kWords)) + "-" + std::to_string(n++) +
           "\": {\"enabled\": " + (rng_.chance(0.5) ? "true" : "false") +
           ", \"rollout\": " + std::to_string(rng_.range(0, 100)) + "},\n";
    }
    s += "  \"version\": " + std::to_string(rng_.range(1, 500)) + "\n}\n";
  } else {  // nginx.conf
    s = "worker_processes auto;\nevents { worker_connections 1024; }\nhttp {\n";
    while (s.size() < bytes) {
      const std::string w = str(rng_.pick(kWords));
      s += "  location /" + w + "/" + std::to_string(n++) + " {\n    proxy_pass http://" + w + "." +
           d.ns + ".svc:8080;\n    proxy_read_timeout " + std::to_string(rng_.range(5, 120)) +
           "s;\n  }\n";
    }
    s += "}\n";
  }
  return s;
}

Json Generator::config_map(const LiveDoc& d) {
  const std::string ver = version();
  Json doc = Json::object();
  doc["apiVersion"] = "v1";
  doc["kind"] = "ConfigMap";
  doc["metadata"] = metadata(d, ver);
  Json data = Json::object();
  data["LOG_LEVEL"] = str(rng_.pick(kLogLevels));
  data["CACHE_TTL_SECONDS"] = std::to_string(rng_.range(10, 3600));
  data["MAX_CONNECTIONS"] = std::to_string(rng_.range(10, 500));
  data["REQUEST_TIMEOUT_MS"] = std::to_string(rng_.range(100, 30000));
  doc["data"] = std::move(data);

  // Sizes spread log-uniformly over 1-9.75 KiB: many small ConfigMaps, some large ones.
  const double lo = 1024.0, hi = 9984.0;
  const auto target = static_cast<size_t>(lo * std::pow(hi / lo, rng_.unit()));
  size_t size = json_size(doc);
  Json& out = doc["data"];
  static constexpr std::array<std::string_view, 6> kFiles = {
      "application.yaml", "application.properties", "feature-flags.json", "nginx.conf",
      "routes.yaml",      "logging.properties"};
  for (size_t f = 0; f < kFiles.size() && size + 64 < target; ++f) {
    const std::string name = str(kFiles[(f + rng_.below(kFiles.size())) % kFiles.size()]);
    if (out.contains(name)) continue;
    const size_t room = std::min(target - size, kMaxDocBytes - size);
    const size_t want = std::min(room, static_cast<size_t>(rng_.range(256, 4096)));
    if (want < 128) break;
    // Line-based bodies overshoot by up to one line and escaping adds bytes; aim low.
    size_t aim = want * 3 / 4;
    Json v = config_file(d, name, aim);
    size_t add = member_bytes(name, v);
    while (size + add > kMaxDocBytes && aim > 64) {
      aim /= 2;
      v = config_file(d, name, aim);
      add = member_bytes(name, v);
    }
    if (size + add > kMaxDocBytes) break;
    out[name] = std::move(v);
    size += add;
  }
  // Top up with plain key/value entries.
  for (size_t n = 0; size < target; ++n) {
    const std::string k = upper(str(rng_.pick(kWords))) + "_" + std::to_string(n);
    Json v = std::to_string(rng_.range(0, 1000000));
    const size_t add = member_bytes(k, v);
    if (size + add > kMaxDocBytes) break;
    out[k] = std::move(v);
    size += add;
  }
  return doc;
}

Json Generator::service_port(const std::string& name, int64_t port, const std::string& target) {
  return {{"name", name}, {"port", port}, {"targetPort", target}, {"protocol", "TCP"}};
}

Json Generator::service(const LiveDoc& d) {
  const std::string ver = version();
  Json doc = Json::object();
  doc["apiVersion"] = "v1";
  doc["kind"] = "Service";
  doc["metadata"] = metadata(d, ver);
  Json spec = Json::object();
  const size_t type = rng_.weighted({75, 10, 15});
  spec["type"] = type == 0 ? "ClusterIP" : type == 1 ? "NodePort" : "LoadBalancer";
  spec["selector"] = {{"app.kubernetes.io/name", d.app}, {"app.kubernetes.io/instance", d.name}};
  Json ports = Json::array({service_port("http", 80, "http")});
  if (rng_.chance(0.5)) ports.push_back(service_port("metrics", 9090, "metrics"));
  if (rng_.chance(0.3)) ports.push_back(service_port("grpc", 9000, "grpc"));
  spec["ports"] = std::move(ports);
  spec["sessionAffinity"] = rng_.chance(0.9) ? "None" : "ClientIP";
  spec["ipFamilies"] = Json::array({"IPv4"});
  spec["ipFamilyPolicy"] = "SingleStack";
  spec["internalTrafficPolicy"] = "Cluster";
  if (type == 2) {
    spec["externalTrafficPolicy"] = "Local";
    doc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"] = "nlb";
    doc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] =
        "internet-facing";
  }
  doc["spec"] = std::move(spec);
  const size_t target = static_cast<size_t>(rng_.range(1024, 3072));
  size_t size = json_size(doc);
  pad_annotations(d, doc["metadata"]["annotations"], &size, target);
  return doc;
}

}  // namespace canopy::bench::workload_internal
