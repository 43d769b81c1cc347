#include "workload.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <random>
#include <string_view>
#include <utility>

#include "workload_vocabulary.h"

namespace canopy::bench {
namespace {

using namespace workload_internal;

// ---------------------------------------------------------------------------------------------
// Randomness. std::mt19937_64 is fully specified by the standard; the distributions below are
// our own so that a seed gives the same stream with every standard library.

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  uint64_t next() { return engine_(); }

  // Uniform in [0, n), n > 0 (rejection sampling, no modulo bias).
  size_t below(size_t n) {
    const uint64_t bound = static_cast<uint64_t>(n);
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do {
      x = engine_();
    } while (x >= limit);
    return static_cast<size_t>(x % bound);
  }

  // Uniform in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(below(static_cast<size_t>(hi - lo + 1)));
  }

  // Uniform in [0, 1).
  double unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  bool chance(double p) { return unit() < p; }

  template <typename Container>
  const auto& pick(const Container& c) {
    return c[below(std::size(c))];
  }

  // Index drawn with the given relative weights.
  size_t weighted(std::initializer_list<unsigned> weights) {
    unsigned total = 0;
    for (unsigned w : weights) total += w;
    size_t r = below(total);
    size_t i = 0;
    for (unsigned w : weights) {
      if (r < w) return i;
      r -= w;
      ++i;
    }
    return weights.size() - 1;
  }

  std::string hex(size_t len) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s(len, '0');
    for (char& c : s) c = kDigits[below(16)];
    return s;
  }

 private:
  std::mt19937_64 engine_;
};

// ---------------------------------------------------------------------------------------------
// The generator.

struct LiveDoc {
  std::string key;
  DocKind kind;
  std::string tenant;
  std::string ns;
  std::string app;
  std::string name;
  Json doc;
};

class Generator {
 public:
  explicit Generator(const WorkloadOptions& options) : options_(options), rng_(options.seed) {}

  std::vector<Change> run() {
    std::vector<Change> out;
    out.reserve(options_.initial_docs + options_.changes);
    for (size_t i = 0; i < options_.initial_docs; ++i) {
      tick();
      out.push_back(create());
    }
    for (size_t i = 0; i < options_.changes; ++i) {
      tick();
      const size_t r = rng_.below(100);
      if (r < 70 && !live_.empty()) {
        out.push_back(patch());
      } else if (r >= 90 && !live_.empty()) {
        out.push_back(remove());
      } else {
        out.push_back(create());
      }
    }
    return out;
  }

 private:
  // Simulated wall clock: starts at 2024-03-04T08:00:00Z and moves 1-20 s per change.
  void tick() { now_ += rng_.range(1, 20); }
  std::string now() const { return rfc3339(now_); }

  // ----- creation -----------------------------------------------------------------------------

  Change create() {
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

  std::string version() {
    return std::to_string(rng_.range(0, 4)) + "." + std::to_string(rng_.range(0, 40)) + "." +
           std::to_string(rng_.range(0, 25));
  }

  std::string image(const std::string& repo) {
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

  std::string cpu() {
    static constexpr std::array<std::string_view, 7> kCpu = {"50m",  "100m", "250m", "500m",
                                                             "750m", "1",    "2"};
    return str(rng_.pick(kCpu));
  }
  std::string memory() {
    static constexpr std::array<std::string_view, 7> kMem = {"64Mi",  "128Mi", "256Mi", "512Mi",
                                                             "768Mi", "1Gi",   "2Gi"};
    return str(rng_.pick(kMem));
  }

  Json labels(const LiveDoc& d, const std::string& ver) {
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

  Json metadata(const LiveDoc& d, const std::string& ver) {
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
  std::pair<std::string, Json> padding_annotation(const LiveDoc& d, size_t n) {
    switch (rng_.below(8)) {
      case 0:
        return {"argocd.argoproj.io/tracking-id",
                d.app + ":" + d.ns + "/" + d.name + ":" + d.tenant};
      case 1:
        return {"argocd.argoproj.io/sync-wave", std::to_string(rng_.range(-2, 5))};
      case 2:
        return {"runbook.canopy.io/url",
                "https://runbooks." + d.tenant + ".example/" + d.ns + "/" + d.app};
      case 3:
        return {"config.canopy.io/checksum-" + std::to_string(n), rng_.hex(64)};
      case 4:
        return {
            "vault.hashicorp.com/agent-inject-secret-" + str(rng_.pick(kWords)) + "-" +
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
  void pad_annotations(const LiveDoc& d, Json& annotations, size_t* size, size_t target) {
    for (size_t n = 0; *size < target; ++n) {
      auto [k, v] = padding_annotation(d, n);
      if (annotations.contains(k)) continue;
      const size_t add = member_bytes(k, v);
      if (*size + add > kMaxDocBytes) break;
      annotations[k] = std::move(v);
      *size += add;
    }
  }

  Json env_var(const LiveDoc& d, const EnvTemplate& t) {
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

  std::string env_value(const LiveDoc& d, std::string_view name) {
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
      return "service.namespace=" + d.ns +
             ",deployment.environment=" + str(rng_.pick(kEnvironments));
    if (name == "JAVA_OPTS")
      return "-XX:MaxRAMPercentage=75.0 -XX:+UseG1GC -Dfile.encoding=UTF-8 -Duser.timezone=UTC";
    if (name == "GOMAXPROCS") return std::to_string(rng_.range(1, 8));
    if (name == "S3_BUCKET") return d.tenant + "-" + d.ns + "-" + str(rng_.pick(kWords));
    if (name == "AWS_REGION") return str(rng_.pick(kRegions));
    return rng_.hex(16);
  }

  Json container(const LiveDoc& d, const std::string& name, const std::string& repo, bool main) {
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

  Json deployment(const LiveDoc& d) {
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
        {"matchLabels",
         {{"app.kubernetes.io/name", d.app}, {"app.kubernetes.io/instance", d.name}}}};
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
      pod["tolerations"] = Json::array({{{"key", "dedicated"},
                                         {"operator", "Equal"},
                                         {"value", d.ns},
                                         {"effect", "NoSchedule"}}});
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

  static std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  }

  // A config file body of about `bytes` characters.
  std::string config_file(const LiveDoc& d, const std::string& name, size_t bytes) {
    std::string s;
    size_t n = 0;
    if (name.ends_with(".yaml")) {
      s = "server:\n  port: 8080\n  shutdownTimeout: 30s\nlogging:\n  level: " +
          str(rng_.pick(kLogLevels)) + "\n";
      while (s.size() < bytes) {
        const std::string w = str(rng_.pick(kWords));
        s += w + "_" + std::to_string(n++) +
             ":\n  enabled: " + (rng_.chance(0.5) ? "true" : "false") +
             "\n  ttl: " + std::to_string(rng_.range(5, 3600)) + "s\n  endpoint: http://" + w +
             "." + d.ns + ".svc:8080\n";
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
        s += "  location /" + w + "/" + std::to_string(n++) + " {\n    proxy_pass http://" + w +
             "." + d.ns + ".svc:8080;\n    proxy_read_timeout " +
             std::to_string(rng_.range(5, 120)) + "s;\n  }\n";
      }
      s += "}\n";
    }
    return s;
  }

  Json config_map(const LiveDoc& d) {
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

  Json service_port(const std::string& name, int64_t port, const std::string& target) {
    return {{"name", name}, {"port", port}, {"targetPort", target}, {"protocol", "TCP"}};
  }

  Json service(const LiveDoc& d) {
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

  // ----- patches ------------------------------------------------------------------------------

  // Builds a merge patch touching one field of `doc` (the working copy, already updated).
  Json mutation(const LiveDoc& d, const Json& doc) {
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

  static Json at_path(std::initializer_list<const char*> path, Json leaf) {
    Json out = std::move(leaf);
    for (auto it = std::rbegin(path); it != std::rend(path); ++it) {
      Json wrap = Json::object();
      wrap[*it] = std::move(out);
      out = std::move(wrap);
    }
    return out;
  }

  Json replicas(const Json& doc) {
    const int64_t cur = doc["spec"]["replicas"].get<int64_t>();
    int64_t next = cur;
    while (next == cur) next = std::max<int64_t>(0, cur + rng_.range(-3, 4));
    return at_path({"spec", "replicas"}, next);
  }

  Json containers_patch(Json containers) {
    return at_path({"spec", "template", "spec", "containers"}, std::move(containers));
  }

  Json image_tag(const Json& doc) {
    Json containers = doc["spec"]["template"]["spec"]["containers"];
    Json& c = containers[rng_.below(containers.size())];
    std::string img = c["image"].get<std::string>();
    img = img.substr(0, img.rfind(':')) + ":" +
          (rng_.chance(0.7) ? version() : "sha-" + rng_.hex(12));
    c["image"] = img;
    return containers_patch(std::move(containers));
  }

  Json env_change(const LiveDoc& d, const Json& doc) {
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

  Json resources(const Json& doc) {
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

  Json restart(const Json&) {
    return at_path(
        {"spec", "template", "metadata", "annotations", "kubectl.kubernetes.io/restartedAt"},
        now());
  }

  Json annotation(const LiveDoc& d, const Json& doc) {
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

  Json label(const Json& doc) {
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
  std::string data_key(const Json& doc) {
    const Json& data = doc["data"];
    if (data.empty()) return {};
    auto it = data.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(rng_.below(data.size())));
    return it.key();
  }

  Json data_update(const Json& doc) {
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
        const std::string value =
            std::to_string(rng_.range(1, 900)) + (rng_.chance(0.5) ? "s" : "");
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

  Json data_add(const Json&) {
    return at_path(
        {"data", (upper(str(rng_.pick(kWords))) + "_" + std::to_string(rng_.below(1000))).c_str()},
        std::to_string(rng_.range(0, 1000000)));
  }

  Json data_remove(const Json& doc) {
    if (doc["data"].size() <= 2) return data_add(doc);
    const std::string k = data_key(doc);
    return at_path({"data", k.c_str()}, nullptr);
  }

  Json ports(const Json& doc) {
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

  Json session_affinity(const Json& doc) {
    return at_path({"spec", "sessionAffinity"},
                   doc["spec"]["sessionAffinity"] == "None" ? "ClientIP" : "None");
  }

  Change patch() {
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

  Change remove() {
    const size_t i = rng_.below(live_.size());
    Change c{Change::kRemove, live_[i].key, {}};
    std::swap(live_[i], live_.back());
    live_.pop_back();
    return c;
  }

  WorkloadOptions options_;
  Rng rng_;
  int64_t now_ = 1709539200;  // 2024-03-04T08:00:00Z
  uint64_t next_id_ = 1;
  std::vector<LiveDoc> live_;
};

}  // namespace

const char* kind_name(Change::Kind kind) {
  switch (kind) {
    case Change::kCreate:
      return "create";
    case Change::kPatch:
      return "patch";
    case Change::kRemove:
      return "remove";
  }
  return "?";
}

std::vector<Change> generate_workload(const WorkloadOptions& options) {
  return Generator(options).run();
}

}  // namespace canopy::bench
