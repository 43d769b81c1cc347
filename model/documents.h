// Documents: the typed catalogue. Each kind of document (docs/keys.md) is
// parsed and validated by exactly one function here; the API refuses what it
// refuses (with the same message), the hub's index and the site's renderer
// read the same types, so a document the API accepts is one every site reads
// the same way.
//
// Parsing is strict: unknown fields are refused (a misspelt "selecter" would
// otherwise silently target nothing), except that JSON nulls count as absent,
// since a CRDT merge may leave a removed field null. Messages name the field:
// `templates[1] "Web" is not a DNS-1123 label ...`; callers prefix the
// document ("placement \"web\": ").
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "model/access.h"
#include "model/selector.h"
#include "store/status.h"

namespace canopy::model {

// Names listed by one placement or override (its `sites` and `templates`).
inline constexpr size_t kMaxListedNames = 10'000;

// The site record `sites/<site>`: {"name": "<site>", "labels": {...}}. The
// hub's record is the one source of truth for a site's labels: the spoke's
// configured labels are only its request when it first says hello.
struct SiteRecord {
  std::string name;
  Labels labels;
  // The regional hub the site syncs with; empty: its record's own hub (the
  // root, or the hub it registered at). Moving a site is changing this field
  // at the root (docs/hierarchy.md).
  std::string region = {};
};
// `name` is the site's name from the key; the document's "name", when
// present, must equal it. Other fields are allowed (they describe the site;
// no rule reads them).
StatusOr<SiteRecord> parse_site(std::string_view name, const nlohmann::json& doc);
nlohmann::json site_document(const SiteRecord& site);

// A site's session with its regional hub, `sites/<site>/presence`, written by
// that hub when the session opens or is lost (never per heartbeat), so that
// the hubs above it, which have no session with the site, can tell whether it
// is live and since when:
//   {"hub": "<regional hub>", "connected": bool, "sinceMs": <ms since 1970>}
struct SitePresence {
  std::string hub;
  bool connected = false;
  uint64_t since_ms = 0;
};
StatusOr<SitePresence> parse_presence(const nlohmann::json& doc);
nlohmann::json presence_document(const SitePresence& presence);

// Which sites a placement or an override chooses: those listed in `sites`,
// and those whose labels the selector matches.
struct SiteChoice {
  std::vector<std::string> sites;  // sorted, unique
  LabelSelector selector;

  bool matches(std::string_view site, const Labels& labels) const;
  bool matches(const SiteRecord& site) const { return matches(site.name, site.labels); }
  // Chooses no site at all.
  bool empty() const { return sites.empty() && selector.empty(); }
};

// A placement's rollout policy, `rollout`:
//   {"maxUnavailable": N, "maxFailures": F, "paused": bool,
//    "waves": [1, "10%", "50%"]}
// A new revision of one of its templates reaches at most N sites at a time
// (rolling: a site is released when one of the released sites reports the
// revision applied); the rollout pauses itself when more than F released
// sites report it failed (default 0: the first failure pauses), and waits
// while `paused`. Waves cut the targeted sites, in site name order, into
// stages: wave i ends after the first `waves[i]` sites (a count, or a
// percent of the targeted sites rounded up), and a last wave takes the rest;
// a wave starts only when every site of the waves before it reports the
// revision applied. Within a wave, maxUnavailable still holds (without it,
// the whole wave is released at once). Without maxUnavailable and waves (or
// an empty object) every site applies every revision at once, as before.
// docs/rollouts.md.
struct WaveEnd {
  uint32_t count = 0;    // sites, or
  uint32_t percent = 0;  // 1..100 of the targeted sites
};

struct Rollout {
  uint32_t max_unavailable = 0;  // 0: no limit within a wave
  uint32_t max_failures = 0;
  bool paused = false;
  std::vector<WaveEnd> waves;
  bool enabled() const { return max_unavailable > 0 || !waves.empty(); }
  // How many of `targeted` sites (in name order) the waves before wave `i`
  // and wave `i` cover; wave waves.size() (the last) covers them all.
  size_t wave_end(size_t i, size_t targeted) const;
};

// How the sites' kube applier treats the placed templates' objects
// (`"apply": {"forceConflicts": true, "drift": "report"}`; docs/kube-applier.md):
// take fields another field manager owns (server-side apply with force), and
// repair drift found in the cluster ("repair", the default) or only report
// it ("report"). A template placed by several placements at a site is forced
// if any of them forces, and only reported if any of them says report.
struct ApplyPolicy {
  bool force_conflicts = false;
  bool report_drift = false;
};

// `t/<tenant>/placements/<p>`:
//   {"templates": ["<template>", ...], "sites": [...], "selector": {...},
//    "rollout": {...}, "apply": {...}}
// `templates` is required; `sites` or a non-empty `selector` is required
// (a placement must say which sites it targets).
struct Placement {
  std::vector<std::string> templates;  // template names of the same tenant, sorted, unique
  SiteChoice choice;
  // The rollout policy: it does not change which sites are chosen, only when
  // they apply a new revision of the templates.
  Rollout rollout;
  ApplyPolicy apply;
};
StatusOr<Placement> parse_placement(const nlohmann::json& doc);

// `t/<tenant>/overrides/<o>`:
//   {"template": "<template>", "patch": {...}, "sites": [...], "selector": {...}}
// `template` and `patch` (a JSON merge patch, an object) are required. An
// override that chooses no site is valid and applies nowhere.
struct Override {
  std::string template_name;
  nlohmann::json patch;
  SiteChoice choice;
};
StatusOr<Override> parse_override(const nlohmann::json& doc);

// `sites/<site>/releases/<tenant>/<template>`: {"revision": "<rev>"}, written
// by the hub's rollout controller: the template revision
// (model::template_revision) the site may apply while a rollout governs it.
struct Release {
  std::string revision;
};
StatusOr<Release> parse_release(const nlohmann::json& doc);
nlohmann::json release_document(const Release& release);

// `t/<tenant>/rollouts/<placement>`: a placement's rollout as the hub's
// rollout controller last saw it (docs/rollouts.md), written by it only when
// it changes, kept at the hub (no site's scope holds it), shown in the
// placement's status:
//   {"paused": "<why, or empty>", "templates": [{"template": "web",
//    "revision": "<rev>", "wave": 2, "waves": 3, "targeted": 10,
//    "released": 4, "applied": 3, "failed": 0, "held": ["<site>: <why>"]}]}
// `wave` is the current wave, from 1 (== `waves` once the last has started);
// `applied` counts sites that report the revision applied and healthy.
struct TemplateRollout {
  std::string template_name;
  std::string revision;
  size_t wave = 0;
  size_t waves = 0;
  size_t targeted = 0;
  size_t released = 0;
  size_t applied = 0;
  size_t failed = 0;
  std::vector<std::string> held;
  bool operator==(const TemplateRollout&) const = default;
};
struct RolloutState {
  std::string paused;
  std::vector<TemplateRollout> templates;
  bool operator==(const RolloutState&) const = default;
};
StatusOr<RolloutState> parse_rollout_state(const nlohmann::json& doc);
nlohmann::json rollout_state_document(const RolloutState& state);

// `sites/<site>/holds/<hold>`: {"untilMs": N, "reason": "..."}, written at
// the site (its local API) for a maintenance window: until then (ms since the
// epoch, on the hub's clock), the hub releases no new revision to the site,
// and a rollout's wave that includes the site waits. Expired holds are
// ignored; a site removes its hold to end it early.
struct Hold {
  uint64_t until_ms = 0;
  std::string reason;
  bool active(uint64_t now_ms) const { return now_ms < until_ms; }
};
StatusOr<Hold> parse_hold(const nlohmann::json& doc);
nlohmann::json hold_document(const Hold& hold);

// `sites/<site>/overrides/<tenant>/<template>`: {"patch": {...}}.
struct LocalOverride {
  nlohmann::json patch;  // an object; empty when the document has none
};
StatusOr<LocalOverride> parse_local_override(const nlohmann::json& doc);

// `t/<tenant>/templates/<t>`: a Kubernetes manifest — an object with non-empty
// string apiVersion and kind, metadata.name a DNS-1123 subdomain,
// metadata.namespace (optional) a DNS-1123 label, metadata.labels (optional)
// label keys to label values, metadata.annotations (optional) strings.
// Rendering checks the same after overrides.
Status validate_manifest(const nlohmann::json& manifest);

// `sites/<site>/status/<tenant>/<template>`, written by the site:
//   {"template": "<template key>", "hash", "outcome", "message", "file",
//    "revision"}
// `revision` names the template document the outcome is about
// (model::template_revision of it): the hub tells an outcome of the current
// template from one of an older revision by it. Absent from older spokes.
enum class Outcome { kApplied, kFailed, kRemoved };
inline constexpr std::string_view kOutcomeApplied = "applied";
inline constexpr std::string_view kOutcomeFailed = "failed";
inline constexpr std::string_view kOutcomeRemoved = "removed";
struct StatusReport {
  std::string template_key;
  std::string hash;
  Outcome outcome = Outcome::kFailed;
  std::string message;
  std::string file;
  std::string revision;  // empty: not reported
  // Read back from the cluster (the kube applier), empty when not reported:
  // "healthy", "progressing" or "degraded", why, and drift found there.
  std::string health;
  std::string health_message;
  std::string drift;
};
StatusOr<StatusReport> parse_status_report(const nlohmann::json& doc);
nlohmann::json status_document(const StatusReport& report);
std::string_view outcome_name(Outcome outcome);

// `t/<tenant>`: {"name": "<tenant>", "description": "..."}, written by a
// fleet admin. A tenant exists when its record does.
struct TenantRecord {
  std::string name;
  std::string description;
};
StatusOr<TenantRecord> parse_tenant(std::string_view name, const nlohmann::json& doc);
nlohmann::json tenant_document(const TenantRecord& tenant);

// `t/<tenant>/grants/<grant>`: {"sites": [...], "selector": {...}} or
// {"allSites": true}, written by a fleet admin: sites the tenant may see and
// place on. A tenant's sites are those any of its grants chooses; a tenant
// without grants places on no site (the hub's index enforces it). A grant
// must choose something.
struct Grant {
  SiteChoice choice;
  bool all_sites = false;  // every site of the fleet, present and future

  bool grants(std::string_view site, const Labels& labels) const {
    return all_sites || choice.matches(site, labels);
  }
};
StatusOr<Grant> parse_grant(const nlohmann::json& doc);

// `tokens/<id>` (access.h): {"role": "...", "tenant": "<tenant>",
//   "hash": "<SHA-256 of the secret, 64 hex digits>", "createdAtMs": N,
//   "expiresAtMs": N, "revoked": bool, "description": "..."}
// Every role but fleet-admin needs a tenant; fleet-admin has none.
// expiresAtMs 0 (or absent) means the token does not expire.
struct TokenRecord {
  std::string id;
  Role role = Role::kViewer;
  std::string tenant;
  std::string hash;
  uint64_t created_at_ms = 0;
  uint64_t expires_at_ms = 0;
  bool revoked = false;
  std::string description;

  // Neither revoked nor expired at `now_ms`.
  bool valid_at(uint64_t now_ms) const {
    return !revoked && (expires_at_ms == 0 || now_ms < expires_at_ms);
  }
};
StatusOr<TokenRecord> parse_token(std::string_view id, const nlohmann::json& doc);
nlohmann::json token_document(const TokenRecord& token);

// Whether `hash` is a bcrypt hash nats-server accepts as a password: $2a$,
// $2b$ or $2y$, a two-digit cost in 04-31, 53 characters of bcrypt's base64
// (60 in all).
bool is_bcrypt_hash(std::string_view hash);

// `sites/<site>/devices/<tenant>/<device>`, written through the hub's API (a
// fleet admin, or a member of the tenant on a site granted to it):
//   {"tenant": "<tenant>", "site": "<site>", "id": "<device>",
//    "labels": {...}, "scope": "device" | "tenant",
//    "credential": {"passwordHash": "$2b$10$..."},
//    "desired": {"<field>": <any JSON>, ...}}
// A device of the site's bus (docs/device-bus.md): a user of its tenant's
// account on the site's nats-server. `tenant`, `site` and `id`, when present,
// must equal the key's; `credential.passwordHash` (a bcrypt hash) is
// required, and a clear password is refused wherever it is put. `scope`
// (default "device"): publish and subscribe under the device's own topics
// t/<tenant>/d/<id>/#, or ("tenant", a gateway or an application) under the
// tenant's t/<tenant>/#. `desired` (optional): the twin's desired state, which
// the spoke publishes retained on t/<tenant>/d/<id>/desired.
inline constexpr std::string_view kDeviceScopeDevice = "device";
inline constexpr std::string_view kDeviceScopeTenant = "tenant";
// `desired` holds at most this many fields, each name at most kMaxTwinField.
inline constexpr size_t kMaxTwinFields = 256;
inline constexpr size_t kMaxTwinField = 128;
struct Device {
  std::string site;
  std::string tenant;
  std::string id;
  Labels labels;
  std::string scope = std::string(kDeviceScopeDevice);
  std::string password_hash;
  nlohmann::json desired = nlohmann::json::object();
};
StatusOr<Device> parse_device(std::string_view site, std::string_view tenant, std::string_view id,
                              const nlohmann::json& doc);

// `sites/<site>/reported/<tenant>/<device>`, written by the site's spoke from
// the device's reports (docs/device-bus.md): the last value of each reported
// field and when it was reported (ms since the epoch, the spoke's clock):
//   {"<field>": {"value": <any JSON>, "atMs": N}, ...}
// Fields merge one by one (the store's CRDT rules), so a field not reported
// again keeps its value and time.
struct ReportedField {
  nlohmann::json value;
  uint64_t at_ms = 0;
};
using Reported = std::map<std::string, ReportedField, std::less<>>;
StatusOr<Reported> parse_reported(const nlohmann::json& doc);
// A twin field name: 1-128 characters of [A-Za-z0-9_-], also not starting
// with "$". What a report's keys and `desired`'s keys must be.
bool is_twin_field(std::string_view name);
// `enrollment/tokens/<id>` (access.h, parse_bootstrap_token): {"site":
//   "<site>", "hash": "<SHA-256 of the secret>", "createdAtMs": N,
//   "expiresAtMs": N, "usedAtMs": N} — a one-time token bound to one site;
//   usedAtMs 0 until a spoke exchanged it. Hub only.
struct BootstrapTokenRecord {
  std::string id;
  std::string site;
  std::string hash;
  uint64_t created_at_ms = 0;
  uint64_t expires_at_ms = 0;
  uint64_t used_at_ms = 0;
};
StatusOr<BootstrapTokenRecord> parse_bootstrap_record(std::string_view id,
                                                      const nlohmann::json& doc);
nlohmann::json bootstrap_record_document(const BootstrapTokenRecord& token);

// `enrollment/sites/<site>`: {"natsUser": "<user>", "natsPasswordHash":
//   "<bcrypt>", "certFingerprint": "sha256:<hex>", "previousCertFingerprint":
//   "sha256:<hex>" (optional), "certNotAfterMs": N,
//   "enrolledAtMs": N, "revoked": bool, "revokedAtMs": N} — what the hub
//   issued the site at its last enrollment, and whether it is cut off. The
//   hub's NATS authorization file lists every site not revoked. Hub only.
struct SiteIdentity {
  std::string site;
  std::string nats_user;
  std::string nats_password_hash;
  std::string cert_fingerprint;
  // The certificate the current one replaced at a renewal (empty before the
  // first): a site whose renewal answer was lost renews again with it.
  std::string previous_cert_fingerprint;
  uint64_t cert_not_after_ms = 0;
  uint64_t enrolled_at_ms = 0;
  bool revoked = false;
  uint64_t revoked_at_ms = 0;
};
StatusOr<SiteIdentity> parse_site_identity(std::string_view site, const nlohmann::json& doc);
nlohmann::json site_identity_document(const SiteIdentity& identity);

// `enrollment/pending/<site>`: {"tokenId": "<id>", "csr": "<PEM>",
//   "request": "sha256:<hex of the CSR>", "pollHash": "<SHA-256 of the poll
//   secret>", "requestedAtMs": N, "state": "pending" | "approved" |
//   "denied", "decidedAtMs": N} — an exchange that waits for a fleet admin
//   (double opt-in, docs/security.md). Hub only.
struct PendingEnrollment {
  std::string site;
  std::string token_id;
  std::string csr_pem;
  std::string request_fingerprint;
  std::string poll_hash;
  uint64_t requested_at_ms = 0;
  std::string state = "pending";
  uint64_t decided_at_ms = 0;
};
StatusOr<PendingEnrollment> parse_pending_enrollment(std::string_view site,
                                                     const nlohmann::json& doc);
nlohmann::json pending_enrollment_document(const PendingEnrollment& pending);

}  // namespace canopy::model
