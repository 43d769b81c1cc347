// Render: what a site should run, computed from desired state. Pure: no I/O,
// no clock, no store. The spoke renders its own site; the hub renders any site
// for a preview (`kubectl canopy render --site X`) with the same functions.
//
// Rules (docs/keys.md, authoritative):
//   - a placement `t/<tenant>/placements/<p>` matches a site as its
//     SiteChoice says (documents.h: listed in `sites`, or chosen by the label
//     selector, selector.h) — the same function the hub's index calls, so the
//     hub's scope and the site's rendering agree;
//   - each template a matching placement lists, `t/<tenant>/templates/<name>`
//     (same tenant), is rendered once, however many placements list it;
//   - rendered = template, then the `patch` of each matching hub override
//     `t/<tenant>/overrides/<o>` whose `template` names it, in key order, then
//     the site's local override `sites/<site>/overrides/<tenant>/<name>`
//     (RFC 7386 merge patches, each an object);
//   - every rendered object carries label `app.kubernetes.io/managed-by:
//     canopy` and annotations `canopy.io/template: <template key>` and
//     `canopy.io/hash: <hash>`, where hash is the hex XXH3-64 of the canonical
//     JSON (sorted keys, no spaces) of the object without `canopy.io/hash`.
//
// Bad input is reported per object: a bad template, a bad override of it, or a
// placement naming a missing template yields a RenderFailure for that template
// and the others still render. A placement or an override that the model
// refuses applies to no site (as in the hub's index) and yields a failure keyed
// by its own key, with empty `template_name` (a "global" failure): the reconciler then
// does not prune, since the desired set is not known for sure. (The hub's
// index matches no site with such a document, so a site meets one only
// briefly, while the document leaves its scope.)
#pragma once

#include <cstddef>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"
#include "store/status.h"

namespace canopy::model {

inline constexpr std::string_view kManagedByLabel = "app.kubernetes.io/managed-by";
inline constexpr std::string_view kManagedByValue = "canopy";
inline constexpr std::string_view kTemplateAnnotation = "canopy.io/template";
inline constexpr std::string_view kHashAnnotation = "canopy.io/hash";

struct RenderLimits {
  // Objects rendered for one site; templates beyond it (in key order) fail.
  size_t max_objects = 10'000;
  // Canonical JSON of one rendered object (the store's document limit; the
  // Kubernetes API refuses objects not much larger than this anyway).
  size_t max_object_bytes = 1 << 20;
};

// The documents rendering reads, by full store key. Values are JSON objects as
// stored. Keys of other shapes are ignored.
struct DesiredState {
  std::map<std::string, nlohmann::json> placements;       // t/<tenant>/placements/<p>
  std::map<std::string, nlohmann::json> templates;        // t/<tenant>/templates/<t>
  std::map<std::string, nlohmann::json> overrides;        // t/<tenant>/overrides/<o>
  std::map<std::string, nlohmann::json> local_overrides;  // sites/<site>/overrides/<tenant>/<t>
  // Not read by rendering: the rollout releases of the site's templates,
  // which decide whether the reconciler applies a new revision yet.
  std::map<std::string, nlohmann::json> releases;  // sites/<site>/releases/<tenant>/<t>
};

struct RenderedObject {
  std::string template_key;  // t/<tenant>/templates/<template>
  std::string tenant;
  std::string template_name;
  nlohmann::json object;  // with canopy's label and annotations
  std::string hash;       // 16 hex digits
  std::string file_name;  // manifest_file_name(tenant, template_name)
};

struct RenderFailure {
  std::string template_key;  // the template; for a global failure, the placement or override key
  std::string tenant;
  std::string template_name;  // empty for a global failure
  std::string error;          // names the key and the reason
  // A placement lists the template and this site does not hold it: wrong
  // at the hub, or (while the site's scope is still arriving) not here yet.
  bool missing_template = false;
};

struct RenderResult {
  std::vector<RenderedObject> objects;  // in template key order
  std::vector<RenderFailure> failures;  // in template key order, global ones first
};

// Which documents one template is rendered from, for one site.
struct ObjectPlan {
  std::string template_key;
  std::string tenant;
  std::string template_name;
  std::vector<std::string> override_keys;  // matching hub overrides, key order
  std::string local_override_key;          // empty when the site has none
};

struct SitePlan {
  std::vector<ObjectPlan> objects;      // templates to render, key order
  std::vector<RenderFailure> failures;  // templates that cannot be rendered, and global ones
};

// --- Names.
// "canopy-<length of tenant>-<tenant>-<template>.json". The length prefix makes
// the name injective even though both names may contain '-' ("a-b"/"c" and
// "a"/"b-c" differ). Only [a-z0-9-] before the one '.', because k3s names its
// Addon object after everything before the first '.' of the file name.
std::string manifest_file_name(std::string_view tenant, std::string_view template_name);
// Inverse of manifest_file_name; false when `file_name` is not one.
bool parse_manifest_file_name(std::string_view file_name, std::string* tenant,
                              std::string* template_name);

// Hex XXH3-64 of the canonical JSON of `object` (sorted keys, no spaces).
std::string object_hash(const nlohmann::json& object);
// The revision of a template: hex XXH3-64 of its document's canonical JSON as
// the store gives it (Store::get, Store::scan), the same text at the hub and
// at every site holding it. Sites report it with each outcome.
std::string template_revision(std::string_view canonical_json);
// The same from the XXH3-64 of that text, for a caller that already hashed it.
std::string template_revision(uint64_t xxh3_of_canonical_json);
// The revision of a template at one site: the template's text and the hub
// overrides of it that apply there (ObjectPlan::override_keys, key order),
// each given as the XXH3-64 of its canonical text. With no override it is
// the template's own revision. A changed override is thus a new revision at
// the sites it applies to, and a rollout governs it as it governs a changed
// template. A site's local override is not part of it: the site's operator
// changes that, not a rollout.
std::string template_revision(uint64_t template_hash, const std::vector<uint64_t>& override_hashes);
// The hash an object carries should be: object_hash of it without the
// canopy.io/hash annotation.
std::string content_hash(const nlohmann::json& rendered_object);

// --- Rendering.
SitePlan plan_site(const SiteRecord& site, const DesiredState& desired,
                   const RenderLimits& limits = {});
// Renders one planned template. InvalidArgument naming the key at fault.
StatusOr<RenderedObject> render_object(const ObjectPlan& plan, const DesiredState& desired,
                                       const RenderLimits& limits = {});
// plan_site, then render_object for each. InvalidArgument only when the site
// itself is unusable (its name is not a DNS-1123 label).
StatusOr<RenderResult> render_site(const SiteRecord& site, const DesiredState& desired,
                                   const RenderLimits& limits = {});

// --- Desired documents by key.
enum class DesiredKind { kNone, kPlacement, kTemplate, kOverride, kLocalOverride, kRelease };
// What `key` is for rendering `site`; kNone for keys rendering does not read.
DesiredKind desired_kind(std::string_view key, std::string_view site);
// Puts `doc` in the map of `kind` (no-op for kNone).
void put_desired(DesiredState* desired, DesiredKind kind, const std::string& key,
                 nlohmann::json doc);
bool erase_desired(DesiredState* desired, DesiredKind kind, const std::string& key);
// Key prefixes holding what rendering `site` reads.
std::vector<std::string> desired_prefixes(std::string_view site);

}  // namespace canopy::model
