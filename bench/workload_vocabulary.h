// The workload generator's vocabulary (tenants, apps, images, sentences ...)
// and small helpers of its documents. Internal to the workload generator
// (workload*.cc).
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace canopy::bench::workload_internal {

// Insertion-ordered, so manifests keep the familiar apiVersion/kind/metadata/spec order.
using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------------------------
// Vocabulary.

inline constexpr std::array<std::string_view, 8> kTenants = {
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"};
inline constexpr std::array<std::string_view, 12> kNamespaces = {
    "shop",    "payments", "auth",  "search", "checkout", "catalog",
    "billing", "identity", "media", "ingest", "platform", "observability"};
inline constexpr std::array<std::string_view, 24> kApps = {
    "web",      "api",       "worker",     "gateway",  "frontend", "backend",
    "cart",     "inventory", "orders",     "pricing",  "notifier", "scheduler",
    "indexer",  "renderer",  "ledger",     "profile",  "session",  "recommender",
    "exporter", "collector", "reconciler", "uploader", "resizer",  "mailer"};
inline constexpr std::array<std::string_view, 6> kComponents = {"server",   "worker", "consumer",
                                                                "frontend", "cache",  "controller"};
inline constexpr std::array<std::string_view, 4> kEnvironments = {"production", "staging", "canary",
                                                                  "development"};
inline constexpr std::array<std::string_view, 8> kTeams = {
    "storefront", "payments-core", "identity", "search-relevance",
    "platform",   "sre",           "data-eng", "growth"};
inline constexpr std::array<std::string_view, 6> kRegistries = {
    "registry.acme.example",
    "ghcr.io/acme",
    "quay.io/acme",
    "registry.gitlab.example/acme",
    "europe-docker.pkg.dev/acme-prod/apps",
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com"};
inline constexpr std::array<std::string_view, 6> kSidecars = {
    "envoy", "fluent-bit", "otel-collector", "vault-agent", "cloud-sql-proxy", "oauth2-proxy"};
inline constexpr std::array<std::string_view, 6> kRegions = {
    "eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1", "sa-east-1"};
inline constexpr std::array<std::string_view, 5> kLogLevels = {"debug", "info", "warn", "error",
                                                               "trace"};
inline constexpr std::array<std::string_view, 32> kWords = {
    "checkout", "search",   "express",  "pricing",  "bundles",   "coupons",  "wishlist", "reviews",
    "returns",  "shipping", "tracking", "loyalty",  "giftcards", "invoices", "refunds",  "taxes",
    "currency", "locale",   "catalog",  "ranking",  "audit",     "export",   "import",   "webhooks",
    "sso",      "mfa",      "sessions", "throttle", "caching",   "preview",  "beta",     "dark"};
inline constexpr std::array<std::string_view, 14> kSentences = {
    "Serves the public storefront behind the edge gateway.",
    "Consumes order events and updates the read model.",
    "Owned by the on-call rotation; page before scaling below two replicas.",
    "Do not edit by hand: rendered from the platform template.",
    "Scaled by the HPA between business hours; keep requests conservative.",
    "Talks to the primary database through the connection pooler.",
    "Rolled out with the canary analysis pipeline.",
    "Holds feature flags evaluated at request time.",
    "Exposes metrics on the admin port for Prometheus.",
    "Migrated from the legacy VM fleet in the last quarter.",
    "Batch jobs run nightly; expect CPU spikes around 02:00 UTC.",
    "Only reachable from inside the mesh.",
    "PCI scope: changes need a second reviewer.",
    "Backed by a regional object store bucket with versioning on."};

struct EnvTemplate {
  std::string_view name;
  enum Source { kValue, kSecret, kConfigMap, kField } source;
};
inline constexpr std::array<EnvTemplate, 28> kEnvPool = {{
    {"LOG_LEVEL", EnvTemplate::kValue},
    {"LOG_FORMAT", EnvTemplate::kValue},
    {"HTTP_PORT", EnvTemplate::kValue},
    {"GRPC_PORT", EnvTemplate::kValue},
    {"DATABASE_HOST", EnvTemplate::kValue},
    {"DATABASE_PORT", EnvTemplate::kValue},
    {"DATABASE_NAME", EnvTemplate::kValue},
    {"DATABASE_USER", EnvTemplate::kSecret},
    {"DATABASE_PASSWORD", EnvTemplate::kSecret},
    {"REDIS_URL", EnvTemplate::kValue},
    {"KAFKA_BROKERS", EnvTemplate::kValue},
    {"OTEL_EXPORTER_OTLP_ENDPOINT", EnvTemplate::kValue},
    {"OTEL_SERVICE_NAME", EnvTemplate::kValue},
    {"OTEL_RESOURCE_ATTRIBUTES", EnvTemplate::kValue},
    {"JAVA_OPTS", EnvTemplate::kValue},
    {"GOMAXPROCS", EnvTemplate::kValue},
    {"POD_NAME", EnvTemplate::kField},
    {"POD_NAMESPACE", EnvTemplate::kField},
    {"NODE_NAME", EnvTemplate::kField},
    {"POD_IP", EnvTemplate::kField},
    {"CACHE_TTL_SECONDS", EnvTemplate::kConfigMap},
    {"MAX_CONNECTIONS", EnvTemplate::kConfigMap},
    {"REQUEST_TIMEOUT_MS", EnvTemplate::kConfigMap},
    {"S3_BUCKET", EnvTemplate::kValue},
    {"AWS_REGION", EnvTemplate::kValue},
    {"SENTRY_DSN", EnvTemplate::kSecret},
    {"API_KEY", EnvTemplate::kSecret},
    {"JWT_SIGNING_KEY", EnvTemplate::kSecret},
}};

enum class DocKind { kDeployment, kConfigMap, kService };

// ---------------------------------------------------------------------------------------------
// Helpers.

// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
inline void civil_from_days(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2 ? 1 : 0);
}

inline std::string rfc3339(int64_t unix_seconds) {
  int64_t days = unix_seconds / 86400;
  int64_t secs = unix_seconds % 86400;
  int64_t y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lldZ",
                static_cast<long long>(y), m, d, static_cast<long long>(secs / 3600),
                static_cast<long long>(secs / 60 % 60), static_cast<long long>(secs % 60));
  return buf;
}

inline std::string str(std::string_view s) { return std::string(s); }

inline size_t json_size(const Json& j) { return j.dump().size(); }

// Bytes that adding `key: value` adds to a non-empty object in compact JSON.
inline size_t member_bytes(const std::string& key, const Json& value) {
  return Json(key).dump().size() + 1 + value.dump().size() + 1;
}

// Bytes that appending `value` adds to a non-empty array in compact JSON.
inline size_t element_bytes(const Json& value) { return value.dump().size() + 1; }

}  // namespace canopy::bench::workload_internal
