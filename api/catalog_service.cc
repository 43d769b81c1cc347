#include "api/catalog_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <unordered_set>
#include <utility>
#include <vector>

#include "api/grpc_status.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

constexpr char kLabelRule[] =
    "a DNS-1123 label (1-63 characters of [a-z0-9-], starting and ending with a letter or digit)";
constexpr char kSubdomainRule[] =
    "a DNS-1123 subdomain (up to 253 characters of [a-z0-9-.], dot-separated parts starting "
    "and ending with a letter or digit)";
// How often a watch stream without events checks whether its client left.
constexpr auto kWatchPoll = std::chrono::milliseconds(100);

std::string quote(std::string_view s) { return json(std::string(s)).dump(); }

bool is_dns1123_subdomain(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string_view part =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty()) return false;
    for (char c : part) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
    }
    if (part.front() == '-' || part.back() == '-') return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// `<kind> "<name>"`, the subject of every message about an object.
std::string subject(std::string_view kind, std::string_view name) {
  return std::string(kind) + " " + quote(name);
}

Status check_label(std::string_view field, std::string_view value) {
  if (value.empty()) return invalid_argument(std::string(field) + " is missing");
  if (!hub::is_dns1123_label(value)) {
    return invalid_argument(std::string(field) + " " + quote(value) + " is not " + kLabelRule);
  }
  return ok_status();
}

std::string prefix_of(std::string_view kind, std::string_view tenant) {
  if (kind == kSite) return std::string(hub::kSitesPrefix);
  return std::string(hub::kTenantsPrefix) + std::string(tenant) + "/" + std::string(kind) + "s/";
}

// The object's kind, tenant and name from its key.
void name_object(std::string_view kind, std::string_view tenant, std::string_view name,
                 v1::Object* out) {
  out->set_kind(std::string(kind));
  out->set_tenant(std::string(tenant));
  out->set_name(std::string(name));
}

std::string not_found_message(std::string_view kind, std::string_view tenant,
                              std::string_view name) {
  std::string m = subject(kind, name);
  if (kind != kSite) m += " of tenant " + quote(tenant);
  return m + " not found";
}

// --- Document checks. Each returns INVALID_ARGUMENT naming the field.

Status check_string_field(const json& doc, const std::string& field, const std::string& what) {
  auto it = doc.find(field);
  if (it == doc.end()) return invalid_argument(what + ": " + field + " is missing");
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    return invalid_argument(what + ": " + field + " must be a non-empty string");
  }
  return ok_status();
}

Status check_label_array(const json& doc, const std::string& field, const std::string& what) {
  const json& arr = doc.at(field);
  if (!arr.is_array()) {
    return invalid_argument(what + ": " + field + " must be an array of names, not " +
                            arr.type_name());
  }
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string f = field + "[" + std::to_string(i) + "]";
    if (!arr[i].is_string()) return invalid_argument(what + ": " + f + " must be a string");
    const std::string& name = arr[i].get_ref<const std::string&>();
    if (!hub::is_dns1123_label(name)) {
      return invalid_argument(what + ": " + f + " " + quote(name) + " is not " + kLabelRule);
    }
  }
  return ok_status();
}

Status check_string_map(const json& m, const std::string& field, const std::string& what) {
  if (!m.is_object()) {
    return invalid_argument(what + ": " + field + " must be an object, not " + m.type_name());
  }
  for (const auto& [k, v] : m.items()) {
    if (k.empty()) return invalid_argument(what + ": " + field + " has an empty key");
    if (!v.is_string()) {
      return invalid_argument(what + ": " + field + "." + k + " must be a string, not " +
                              v.type_name());
    }
  }
  return ok_status();
}

// `selector.matchLabels` and `sites`, as placements and overrides have them.
// Sets *chooses when either is present.
Status check_site_choice(const json& doc, const std::string& what, bool* chooses) {
  *chooses = false;
  auto sel = doc.find("selector");
  if (sel != doc.end()) {
    if (!sel->is_object()) {
      return invalid_argument(what + ": selector must be an object, not " + sel->type_name());
    }
    auto ml = sel->find("matchLabels");
    if (ml != sel->end()) {
      CANOPY_RETURN_IF_ERROR(check_string_map(*ml, "selector.matchLabels", what));
      *chooses = true;
    }
  }
  if (doc.contains("sites")) {
    CANOPY_RETURN_IF_ERROR(check_label_array(doc, "sites", what));
    *chooses = true;
  }
  return ok_status();
}

Status check_template(const json& doc, const std::string& what) {
  CANOPY_RETURN_IF_ERROR(check_string_field(doc, "apiVersion", what));
  CANOPY_RETURN_IF_ERROR(check_string_field(doc, "kind", what));
  auto md = doc.find("metadata");
  if (md == doc.end()) return invalid_argument(what + ": metadata is missing");
  if (!md->is_object()) {
    return invalid_argument(what + ": metadata must be an object, not " + md->type_name());
  }
  auto name = md->find("name");
  if (name == md->end()) return invalid_argument(what + ": metadata.name is missing");
  if (!name->is_string()) return invalid_argument(what + ": metadata.name must be a string");
  if (!is_dns1123_subdomain(name->get_ref<const std::string&>())) {
    return invalid_argument(what + ": metadata.name " + quote(name->get_ref<const std::string&>()) +
                            " is not " + kSubdomainRule);
  }
  auto ns = md->find("namespace");
  if (ns != md->end()) {
    if (!ns->is_string()) return invalid_argument(what + ": metadata.namespace must be a string");
    if (!hub::is_dns1123_label(ns->get_ref<const std::string&>())) {
      return invalid_argument(what + ": metadata.namespace " +
                              quote(ns->get_ref<const std::string&>()) + " is not " + kLabelRule);
    }
  }
  return ok_status();
}

Status check_placement(const json& doc, const std::string& what) {
  if (!doc.contains("templates")) return invalid_argument(what + ": templates is missing");
  CANOPY_RETURN_IF_ERROR(check_label_array(doc, "templates", what));
  bool chooses = false;
  CANOPY_RETURN_IF_ERROR(check_site_choice(doc, what, &chooses));
  if (!chooses) {
    return invalid_argument(what + ": selector.matchLabels or sites is missing (a placement " +
                            "must say which sites it targets)");
  }
  return ok_status();
}

Status check_override(const json& doc, const std::string& what) {
  auto t = doc.find("template");
  if (t == doc.end()) return invalid_argument(what + ": template is missing");
  if (!t->is_string()) return invalid_argument(what + ": template must be a string");
  if (!hub::is_dns1123_label(t->get_ref<const std::string&>())) {
    return invalid_argument(what + ": template " + quote(t->get_ref<const std::string&>()) +
                            " is not " + kLabelRule);
  }
  auto patch = doc.find("patch");
  if (patch == doc.end()) return invalid_argument(what + ": patch is missing");
  if (!patch->is_object()) {
    return invalid_argument(what + ": patch must be an object (a JSON merge patch), not " +
                            patch->type_name());
  }
  bool chooses = false;
  return check_site_choice(doc, what, &chooses);
}

Status check_site(json* doc, std::string_view name, const std::string& what) {
  auto n = doc->find("name");
  if (n == doc->end()) {
    (*doc)["name"] = std::string(name);
  } else if (!n->is_string() || n->get_ref<const std::string&>() != name) {
    return invalid_argument(what + ": name " + n->dump() + " differs from the object's name " +
                            quote(name));
  }
  auto labels = doc->find("labels");
  if (labels != doc->end()) CANOPY_RETURN_IF_ERROR(check_string_map(*labels, "labels", what));
  return ok_status();
}

}  // namespace

StatusOr<std::string> object_key(std::string_view kind, std::string_view tenant,
                                 std::string_view name, std::string_view field_prefix) {
  const std::string p(field_prefix);
  if (kind.empty()) return invalid_argument(p + "kind is missing");
  if (kind != kTemplate && kind != kPlacement && kind != kOverride && kind != kSite) {
    return invalid_argument(p + "kind " + quote(kind) +
                            " is not one of template, placement, override, site");
  }
  if (kind == kSite) {
    if (!tenant.empty()) {
      return invalid_argument(p + "tenant must be empty for kind site (sites belong to no tenant)");
    }
  } else {
    CANOPY_RETURN_IF_ERROR(check_label(p + "tenant", tenant));
  }
  CANOPY_RETURN_IF_ERROR(check_label(p + "name", name));
  return prefix_of(kind, tenant) + std::string(name);
}

StatusOr<json> validate_object(const v1::Object& object, const DocumentLimits& limits) {
  const std::string what = subject(object.kind(), object.name());
  const std::string& text = object.json();
  if (text.empty()) return invalid_argument(what + ": object.json is missing");
  if (text.size() > limits.max_doc_bytes) {
    return invalid_argument(what + ": object.json of " + std::to_string(text.size()) +
                            " bytes exceeds the limit of " + std::to_string(limits.max_doc_bytes));
  }
  {
    json probe = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (probe.is_discarded()) {
      // Parse again for the position and reason of the error.
      try {
        const json unused = json::parse(text);
        (void)unused;
      } catch (const json::parse_error& e) {
        return invalid_argument(what + ": object.json is not valid JSON: " + e.what());
      }
      return invalid_argument(what + ": object.json is not valid JSON");
    }
    if (!probe.is_object()) {
      return invalid_argument(what + ": object.json must be a JSON object, not " +
                              probe.type_name());
    }
  }
  auto parsed = parse_document(text, limits);
  if (!parsed.ok()) {
    return Status(parsed.status().code(), what + ": object.json: " + parsed.status().message());
  }
  json doc = std::move(parsed).value();
  const std::string_view kind = object.kind();
  if (kind == kTemplate) {
    CANOPY_RETURN_IF_ERROR(check_template(doc, what));
  } else if (kind == kPlacement) {
    CANOPY_RETURN_IF_ERROR(check_placement(doc, what));
  } else if (kind == kOverride) {
    CANOPY_RETURN_IF_ERROR(check_override(doc, what));
  } else if (kind == kSite) {
    CANOPY_RETURN_IF_ERROR(check_site(&doc, object.name(), what));
  }
  const size_t canonical = doc.dump().size();
  if (canonical > limits.max_doc_bytes) {
    return invalid_argument(what + ": object.json of " + std::to_string(canonical) +
                            " bytes (canonical) exceeds the limit of " +
                            std::to_string(limits.max_doc_bytes));
  }
  return doc;
}

// --- Watchers.

struct CatalogService::Watcher {
  std::string prefix;
  size_t limit = kWatchQueueLimit;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> queue;           // changed keys, oldest first
  std::unordered_set<std::string> queued;  // keys in `queue`
  bool overflowed = false;
  bool closed = false;

  // Called by the store's listener: must not block.
  void push(const std::string& key) {
    {
      std::lock_guard lock(mu);
      if (overflowed || closed) return;
      if (queued.contains(key)) return;  // the pending event will read the latest state
      if (queue.size() >= limit) {
        overflowed = true;
        queue.clear();
        queued.clear();
      } else {
        queue.push_back(key);
        queued.insert(key);
      }
    }
    cv.notify_one();
  }
  void close() {
    {
      std::lock_guard lock(mu);
      closed = true;
    }
    cv.notify_one();
  }
};

CatalogService::CatalogService(Store* store, hub::PlacementIndex* index,
                               hub::StatusAggregate* status, CatalogOptions options)
    : store_(store), index_(index), status_(status), options_(std::move(options)) {}

CatalogService::~CatalogService() { shutdown(); }

void CatalogService::shutdown() {
  std::lock_guard lock(mu_);
  shut_down_ = true;
  for (const auto& w : watchers_) w->close();
}

StatusOr<bool> CatalogService::read_object(const std::string& key, v1::Object* out) {
  auto st = store_->state(key);
  if (!st.ok()) return st.status();
  if (!st->has_value()) return false;
  auto doc = Document::from_proto((*st)->root(), options_.limits.max_depth);
  if (!doc.ok()) return doc.status();
  out->set_version(doc->max_hlc());
  if (!doc->exists()) return false;
  out->set_json(doc->to_json());
  return true;
}

grpc::Status CatalogService::Put(grpc::ServerContext*, const v1::PutRequest* request,
                                 v1::PutResponse* response) {
  if (!request->has_object()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "object is missing");
  }
  const v1::Object& obj = request->object();
  auto key = object_key(obj.kind(), obj.tenant(), obj.name(), "object.");
  if (!key.ok()) return to_grpc(key.status());
  auto doc = validate_object(obj, options_.limits);
  if (!doc.ok()) return to_grpc(doc.status());
  auto delta = store_->put_value(*key, *doc);
  if (!delta.ok()) return to_grpc(delta.status());
  spdlog::debug("catalog: put {} ({} field ops)", *key, delta->ops_size());

  v1::Object* out = response->mutable_object();
  name_object(obj.kind(), obj.tenant(), obj.name(), out);
  auto found = read_object(*key, out);
  if (!found.ok()) return to_grpc(found.status());
  if (!*found) {
    // Deleted again in the meantime: report what this call wrote.
    out->set_json(doc->dump());
    out->set_version(delta->hlc());
  }
  return grpc::Status::OK;
}

grpc::Status CatalogService::Get(grpc::ServerContext*, const v1::GetRequest* request,
                                 v1::GetResponse* response) {
  auto key = object_key(request->kind(), request->tenant(), request->name());
  if (!key.ok()) return to_grpc(key.status());
  v1::Object* out = response->mutable_object();
  name_object(request->kind(), request->tenant(), request->name(), out);
  auto found = read_object(*key, out);
  if (!found.ok()) return to_grpc(found.status());
  if (!*found) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        not_found_message(request->kind(), request->tenant(), request->name()));
  }
  return grpc::Status::OK;
}

grpc::Status CatalogService::List(grpc::ServerContext*, const v1::ListRequest* request,
                                  v1::ListResponse* response) {
  const std::string& kind = request->kind();
  // Validate kind and tenant with a placeholder name.
  auto valid = object_key(kind, request->tenant(), "x");
  if (!valid.ok()) return to_grpc(valid.status());
  const std::string& token = request->page_token();
  if (!token.empty() && !hub::is_dns1123_label(token)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token " + quote(token) + " is not one this service returned");
  }
  const size_t page_size = request->page_size() == 0
                               ? kDefaultPageSize
                               : std::min<uint32_t>(request->page_size(), kMaxPageSize);
  const std::string prefix = prefix_of(kind, request->tenant());

  auto add = [&](const std::string& name, const std::string& key) -> StatusOr<bool> {
    v1::Object obj;
    name_object(kind, request->tenant(), name, &obj);
    auto found = read_object(key, &obj);
    if (!found.ok()) return found.status();
    if (*found) *response->add_objects() = std::move(obj);
    return *found;
  };

  if (kind == kSite) {
    // The index knows the site records; the store's `sites/` range is mostly
    // status documents.
    std::string after = token;
    while (static_cast<size_t>(response->objects_size()) < page_size) {
      const auto names = index_->known_sites(after, page_size + 1);
      for (const auto& name : names) {
        if (static_cast<size_t>(response->objects_size()) == page_size) {
          response->set_next_page_token(response->objects().rbegin()->name());
          return grpc::Status::OK;
        }
        auto added = add(name, prefix + name);
        if (!added.ok()) return to_grpc(added.status());
      }
      if (names.size() < page_size + 1) break;
      after = names.back();
    }
    return grpc::Status::OK;
  }

  const std::string last = prefix + '\x7f';
  auto direct = [&prefix](std::string_view k) {
    return k.substr(prefix.size()).find('/') == std::string_view::npos;
  };
  std::string from = token.empty() ? prefix : prefix + token + '\0';
  while (true) {
    auto states = store_->states(from, last, direct, page_size + 1);
    if (!states.ok()) return to_grpc(states.status());
    for (const auto& st : *states) {
      auto doc = Document::from_proto(st.root(), options_.limits.max_depth);
      if (!doc.ok()) return to_grpc(doc.status());
      if (!doc->exists()) continue;
      if (static_cast<size_t>(response->objects_size()) == page_size) {
        response->set_next_page_token(response->objects().rbegin()->name());
        return grpc::Status::OK;
      }
      v1::Object* obj = response->add_objects();
      name_object(kind, request->tenant(), std::string_view(st.key()).substr(prefix.size()), obj);
      obj->set_json(doc->to_json());
      obj->set_version(doc->max_hlc());
    }
    if (states->size() < page_size + 1) return grpc::Status::OK;
    from = states->back().key() + '\0';
  }
}

grpc::Status CatalogService::Delete(grpc::ServerContext*, const v1::DeleteRequest* request,
                                    v1::DeleteResponse* response) {
  auto key = object_key(request->kind(), request->tenant(), request->name());
  if (!key.ok()) return to_grpc(key.status());
  auto delta = store_->remove(*key);
  if (!delta.ok()) {
    if (delta.status().code() == StatusCode::kNotFound) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          not_found_message(request->kind(), request->tenant(), request->name()));
    }
    return to_grpc(delta.status());
  }
  spdlog::debug("catalog: deleted {}", *key);
  v1::Object* out = response->mutable_object();
  name_object(request->kind(), request->tenant(), request->name(), out);
  out->set_version(delta->hlc());
  return grpc::Status::OK;
}

grpc::Status CatalogService::Watch(grpc::ServerContext* context, const v1::WatchRequest* request,
                                   grpc::ServerWriter<v1::WatchEvent>* writer) {
  const std::string& kind = request->kind();
  auto valid = object_key(kind, request->tenant(), "x");
  if (!valid.ok()) return to_grpc(valid.status());

  auto w = std::make_shared<Watcher>();
  w->prefix = prefix_of(kind, request->tenant());
  w->limit = options_.watch_queue_limit;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the hub is shutting down");
    watchers_.insert(w);
  }
  const uint64_t subscription = store_->subscribe([w](const v1::LogEntry& e) {
    const std::string& key = e.has_delta() ? e.delta().key() : e.doc().key();
    if (!key.starts_with(w->prefix)) return;
    const std::string_view name = std::string_view(key).substr(w->prefix.size());
    if (name.empty() || name.find('/') != std::string_view::npos) return;
    w->push(key);
  });
  // Tells the client the watch is established: every later change reaches it.
  writer->SendInitialMetadata();

  grpc::Status result = grpc::Status::OK;
  while (true) {
    std::string key;
    {
      std::unique_lock lock(w->mu);
      w->cv.wait_for(lock, kWatchPoll,
                     [&] { return !w->queue.empty() || w->overflowed || w->closed; });
      if (w->closed) {
        result = grpc::Status(grpc::StatusCode::UNAVAILABLE, "the hub is shutting down");
        break;
      }
      if (w->overflowed) {
        result = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              "watch fell behind by more than " + std::to_string(w->limit) +
                                  " changes; re-list and watch again");
        break;
      }
      if (!w->queue.empty()) {
        key = std::move(w->queue.front());
        w->queue.pop_front();
        w->queued.erase(key);
      }
    }
    if (context->IsCancelled()) {
      result = grpc::Status::CANCELLED;
      break;
    }
    if (key.empty()) continue;
    if (options_.before_watch_send) options_.before_watch_send();

    v1::WatchEvent event;
    v1::Object* obj = event.mutable_object();
    name_object(kind, request->tenant(), std::string_view(key).substr(w->prefix.size()), obj);
    auto found = read_object(key, obj);
    if (!found.ok()) {
      result = to_grpc(found.status());
      break;
    }
    event.set_type(*found ? v1::WatchEvent::PUT : v1::WatchEvent::DELETE);
    if (!writer->Write(event)) {
      result = grpc::Status::CANCELLED;  // the client went away
      break;
    }
  }
  store_->unsubscribe(subscription);
  {
    std::lock_guard lock(mu_);
    watchers_.erase(w);
  }
  if (result.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    spdlog::warn("catalog: watch of {} ended: {}", w->prefix, result.error_message());
  }
  return result;
}

grpc::Status CatalogService::GetStatus(grpc::ServerContext*, const v1::GetStatusRequest* request,
                                       v1::GetStatusResponse* response) {
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"tenant", &request->tenant()},
        {"placement", &request->placement()}}) {
    Status st = check_label(field, *value);
    if (!st.ok()) return to_grpc(st);
  }
  auto key = object_key(kPlacement, request->tenant(), request->placement());
  if (!key.ok()) return to_grpc(key.status());
  const std::string& token = request->page_token();
  if (!token.empty() && !hub::is_dns1123_label(token)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token " + quote(token) + " is not one this service returned");
  }
  const size_t page_size = request->page_size() == 0
                               ? kDefaultPageSize
                               : std::min<uint32_t>(request->page_size(), kMaxPageSize);

  auto status =
      status_->placement_status(request->tenant(), request->placement(), token, page_size);
  if (!status.ok()) {
    if (status.status().code() == StatusCode::kNotFound) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          not_found_message(kPlacement, request->tenant(), request->placement()));
    }
    return to_grpc(status.status());
  }
  *response = std::move(status).value();
  return grpc::Status::OK;
}

}  // namespace canopy::api
