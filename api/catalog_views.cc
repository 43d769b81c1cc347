// CatalogService's computed, read-only views of a tenant's objects: Render
// (what one site would apply for one placement) and ListConflicts (writes
// this hub saw lose to concurrent ones). Declared in catalog_service.h.
#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "api/catalog_service.h"
#include "api/grpc_status.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"
#include "model/render.h"
#include "store/hlc.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

constexpr size_t kScanPage = 1000;

// The documents directly under `prefix` (no further '/'), by key.
Status read_direct(Store* store, const std::string& prefix, std::map<std::string, json>* out) {
  std::string after;
  while (true) {
    auto page = store->scan(prefix, after, kScanPage);
    if (!page.ok()) return page.status();
    for (const auto& item : page->items) {
      if (std::string_view(item.key).substr(prefix.size()).find('/') != std::string_view::npos) {
        continue;
      }
      json doc = json::parse(item.json, nullptr, false);
      if (!doc.is_discarded()) (*out)[item.key] = std::move(doc);
    }
    if (page->next_after.empty()) return ok_status();
    after = page->next_after;
  }
}

// The document at `key`; nullopt when absent or deleted.
StatusOr<std::optional<json>> read_doc(Store* store, const std::string& key) {
  auto text = store->get(key);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) return std::optional<json>();
    return text.status();
  }
  json doc = json::parse(*text, nullptr, false);
  if (doc.is_discarded()) return internal_error("stored document " + key + " is not JSON");
  return std::optional<json>(std::move(doc));
}

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// RFC 6901: "/a/b", with '~' and '/' escaped.
std::string json_pointer(const google::protobuf::RepeatedPtrField<std::string>& path) {
  std::string out;
  for (const auto& p : path) {
    out += '/';
    for (char c : p) {
      if (c == '~') {
        out += "~0";
      } else if (c == '/') {
        out += "~1";
      } else {
        out += c;
      }
    }
  }
  return out;
}

std::string hex_of(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

bool unhex(std::string_view text, std::string* out) {
  if (text.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out->clear();
  for (size_t i = 0; i < text.size(); i += 2) {
    const int hi = nibble(text[i]), lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi << 4 | lo));
  }
  return true;
}

std::string_view kind_of(model::KeyKind kind) {
  switch (kind) {
    case model::KeyKind::kTemplate:
      return kTemplate;
    case model::KeyKind::kPlacement:
      return kPlacement;
    case model::KeyKind::kOverride:
      return kOverride;
    case model::KeyKind::kGrant:
      return kGrant;
    default:
      return {};
  }
}

}  // namespace

grpc::Status CatalogService::render(std::string_view authorization,
                                    const v1::RenderRequest& request,
                                    v1::RenderResponse* response) {
  auto who = authorize(authorization, model::Action::kRead, request.tenant());
  if (!who.ok()) return to_grpc(who.status());
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"tenant", &request.tenant()},
        {"site", &request.site()},
        {"placement", &request.placement()}}) {
    if (Status st = check_label(field, *value); !st.ok()) return to_grpc(st);
  }
  const std::string& tenant = request.tenant();
  const std::string& site = request.site();

  // The site, as its spoke would read its record. A tenant's token learns
  // nothing of a site not granted to it; the fleet admin learns why.
  auto site_doc = read_doc(store_, model::site_key(site));
  if (!site_doc.ok()) return to_grpc(site_doc.status());
  const bool granted = index_->granted(tenant, site);
  if (!site_doc->has_value() || (!granted && !who->tenant.empty())) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, not_found_message(kSite, "", site));
  }
  if (!granted) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "site " + quote(site) + " is not granted to tenant " + quote(tenant) +
                            ": no placement of the tenant reaches it");
  }
  auto record = model::parse_site(site, **site_doc);
  if (!record.ok()) return to_grpc(record.status());

  const std::string pkey = model::placement_key(tenant, request.placement());
  auto placement_doc = read_doc(store_, pkey);
  if (!placement_doc.ok()) return to_grpc(placement_doc.status());
  if (!placement_doc->has_value()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        not_found_message(kPlacement, tenant, request.placement()));
  }
  auto placement = model::parse_placement(**placement_doc);
  if (!placement.ok()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        subject(kPlacement, request.placement()) +
                            " cannot be read: " + placement.status().message());
  }
  if (!placement->choice.matches(*record)) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        subject(kPlacement, request.placement()) + " does not choose site " +
                            quote(site) + " (neither listed nor matched by its selector)");
  }

  // Exactly the documents the site renders this placement's templates from:
  // the placement, its templates, the tenant's overrides and the site's own
  // local overrides (the renderer picks the matching ones, as at the site).
  model::DesiredState desired;
  desired.placements[pkey] = std::move(**placement_doc);
  for (const auto& name : placement->templates) {
    const std::string tkey = model::template_key(tenant, name);
    auto doc = read_doc(store_, tkey);
    if (!doc.ok()) return to_grpc(doc.status());
    if (doc->has_value()) desired.templates[tkey] = std::move(**doc);
  }
  if (Status st = read_direct(store_, prefix_of(kOverride, tenant), &desired.overrides); !st.ok()) {
    return to_grpc(st);
  }
  if (Status st = read_direct(store_, model::site_subtree(site) + "overrides/" + tenant + "/",
                              &desired.local_overrides);
      !st.ok()) {
    return to_grpc(st);
  }
  auto result = model::render_site(*record, desired);
  if (!result.ok()) return to_grpc(result.status());
  for (const auto& o : result->objects) {
    v1::RenderedManifest* m = response->add_manifests();
    m->set_template_(o.template_name);
    m->set_json(o.object.dump());
    m->set_hash(o.hash);
    m->set_file(o.file_name);
  }
  for (const auto& f : result->failures) {
    v1::RenderFailure* out = response->add_failures();
    out->set_template_(f.template_name);
    out->set_error(f.error);
  }
  return grpc::Status::OK;
}

grpc::Status CatalogService::list_conflicts(std::string_view authorization,
                                            const v1::ListConflictsRequest& request,
                                            v1::ListConflictsResponse* response) {
  auto who = authorize(authorization, model::Action::kRead, request.tenant());
  if (!who.ok()) return to_grpc(who.status());
  if (Status st = check_label("tenant", request.tenant()); !st.ok()) return to_grpc(st);
  const std::string& kind = request.kind();
  if (!kind.empty() && kind != kTemplate && kind != kPlacement && kind != kOverride &&
      kind != kGrant) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "kind " + quote(kind) + " is not one of template, placement, override, grant (or empty)");
  }
  std::string prefix = "t/" + request.tenant() + "/";
  if (!request.name().empty()) {
    if (kind.empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name needs a kind");
    }
    auto key = object_key(kind, request.tenant(), request.name());
    if (!key.ok()) return to_grpc(key.status());
    prefix = *key;
    prefix.push_back('\0');  // the records of exactly this document
  } else if (!kind.empty()) {
    prefix = prefix_of(kind, request.tenant());
  }
  std::string after;
  if (!request.page_token().empty() &&
      (!unhex(request.page_token(), &after) || !after.starts_with(prefix))) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "page_token " + quote(request.page_token()) + " is not one this service returned");
  }
  const size_t page_size = request.page_size() == 0
                               ? kDefaultPageSize
                               : std::min<uint32_t>(request.page_size(), kMaxPageSize);
  std::string next;
  const auto records = store_->conflicts_in(prefix, after, page_size, &next);
  std::map<std::string, std::optional<json>> current;  // documents read for this page
  for (const auto& r : records) {
    const model::ParsedKey k = model::parse_key(r.key());
    const std::string_view object_kind = kind_of(k.kind);
    if (object_kind.empty()) continue;  // not an object (the tenant's record)
    v1::Conflict* c = response->add_conflicts();
    c->set_kind(std::string(object_kind));
    c->set_name(std::string(k.name));
    c->set_path(json_pointer(r.path()));
    c->set_lost_removed(r.loser_removed());
    if (!r.loser_removed()) c->set_lost_json(r.loser_value());
    c->set_lost_writer(hex16(r.loser().replica()));
    c->set_lost_at_ms(hlc_physical_ms(r.loser_hlc()));
    c->set_won_writer(hex16(r.winner().replica()));
    c->set_won_at_ms(hlc_physical_ms(r.winner_hlc()));
    c->set_reason(r.reason() == v1::ConflictRecord::CLOCK_SKEW ? "clock-skew" : "concurrent");
    auto [it, fresh] = current.try_emplace(r.key());
    if (fresh) {
      auto doc = read_doc(store_, r.key());
      if (!doc.ok()) return to_grpc(doc.status());
      it->second = std::move(*doc);
    }
    if (it->second.has_value()) {
      const json* at = &*it->second;
      for (const auto& p : r.path()) {
        if (!at->is_object() || !at->contains(p)) {
          at = nullptr;
          break;
        }
        at = &(*at)[p];
      }
      if (at != nullptr) c->set_current_json(at->dump());
    }
  }
  if (!next.empty()) response->set_next_page_token(hex_of(next));
  return grpc::Status::OK;
}

}  // namespace canopy::api
