#include "api/catalog_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "api/catalog_internal.h"
#include "api/grpc_status.h"
#include "model/access.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

// The labels a list's label selector matches for an object of `kind`.
model::Labels labels_of(std::string_view kind, std::string_view name, const json& doc) {
  model::Labels out;
  if (kind == kSite) {
    auto site = model::parse_site(name, doc);
    if (site.ok()) out = std::move(site->labels);
    return out;
  }
  if (kind == kDevice) {
    auto labels = doc.find("labels");
    if (labels == doc.end() || !labels->is_object()) return out;
    for (const auto& [k, v] : labels->items()) {
      if (v.is_string()) out.emplace(k, v.get<std::string>());
    }
    return out;
  }
  auto meta = doc.find("metadata");
  if (meta == doc.end() || !meta->is_object()) return out;
  auto labels = meta->find("labels");
  if (labels == meta->end() || !labels->is_object()) return out;
  for (const auto& [k, v] : labels->items()) {
    if (v.is_string()) out.emplace(k, v.get<std::string>());
  }
  return out;
}

}  // namespace

Status CatalogService::check_site_and_region_names(std::string_view site,
                                                   const json& record) const {
  // A site and a region never share a name: the parent gives a child named
  // like a region the region's scope (every member's objects, every tenant's
  // grants), so a site record naming a site as its region, or a site named
  // like a region, would hand one site what its region's hub holds.
  auto parsed = model::parse_site(site, record);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->region.empty() && index_->site_labels(parsed->region).has_value()) {
    return failed_precondition(subject(kSite, site) + ": region " + quote(parsed->region) +
                               " is a site, not a regional hub; name the regional hub that "
                               "serves this site, or none");
  }
  return check_not_a_region(site);
}

Status CatalogService::check_not_a_region(std::string_view site) const {
  if (const size_t naming = index_->sites_naming_region(site); naming > 0) {
    return failed_precondition(subject(kSite, site) + ": " + quote(site) +
                               " is the name of a region (" + std::to_string(naming) +
                               " site record" + (naming == 1 ? " names" : "s name") +
                               " it as their regional hub); a site may not share a region's name");
  }
  return ok_status();
}

std::string_view bearer_of(const grpc::ServerContextBase* context) {
  const auto& md = context->client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    return std::string_view(it->second.data(), it->second.size());
  }
  return {};
}

CatalogService::CatalogService(Store* store, hub::PlacementIndex* index,
                               hub::StatusAggregate* status, Authenticator* auth,
                               CatalogOptions options)
    : store_(store),
      index_(index),
      status_(status),
      auth_(auth),
      options_(std::move(options)),
      fanout_(std::make_unique<WatchFanout>(store, options_.limits, options_.watch_interval)) {}

StatusOr<model::TokenRecord> CatalogService::authorize(std::string_view authorization,
                                                       model::Action action,
                                                       std::string_view tenant) const {
  auto who = auth_->authenticate(authorization);
  if (!who.ok()) return who.status();
  if (!model::permits(who->role, who->tenant, action, tenant)) {
    const std::string holder = model::holder_text(who->role, who->tenant);
    static constexpr const char* kVerb[] = {"read", "write", "manage", "administer"};
    const std::string what = tenant.empty() ? std::string("the fleet's sites, tenants and grants")
                                            : "tenant " + quote(tenant) + "'s objects";
    return permission_denied("token " + who->id + " (" + holder + ") may not " +
                             kVerb[static_cast<int>(action)] + " " + what);
  }
  return who;
}

grpc::Status CatalogService::authorize_object(std::string_view authorization, bool write,
                                              std::string_view kind, std::string_view tenant,
                                              std::string_view name,
                                              std::string* granted_to) const {
  model::Action action = write ? model::Action::kWrite : model::Action::kRead;
  std::string_view scope = tenant;
  if (kind == kSite && !write && granted_to != nullptr) {
    // A tenant sees the sites granted to it; the fleet's readers see all.
    granted_to->clear();
    auto who = auth_->authenticate(authorization);
    if (!who.ok()) return to_grpc(who.status());
    if (model::permits(who->role, who->tenant, action, {})) return grpc::Status::OK;
    if (!who->tenant.empty() && model::permits(who->role, who->tenant, action, who->tenant)) {
      *granted_to = who->tenant;
      return grpc::Status::OK;
    }
  }
  if (kind == kSite) {
    // Sites belong to no tenant: they are the fleet's.
    scope = {};
    if (write) action = model::Action::kAdminister;
  } else if (kind == kTenantKind) {
    // A tenant's members may read its record; only a fleet admin lists or
    // writes tenants.
    scope = write ? std::string_view() : name;
    if (write) action = model::Action::kAdminister;
  } else if (kind == kGrant && write) {
    // The tenant's members read its grants; only a fleet admin grants sites.
    scope = {};
    action = model::Action::kAdminister;
  }
  auto who = authorize(authorization, action, scope);
  return who.ok() ? grpc::Status::OK : to_grpc(who.status());
}

grpc::Status CatalogService::check_device_site(std::string_view authorization,
                                               std::string_view tenant, std::string_view site,
                                               bool put, bool write, bool* hidden) const {
  *hidden = false;
  auto who = auth_->authenticate(authorization);
  if (!who.ok()) return to_grpc(who.status());
  const bool fleet = who->role == model::Role::kFleetAdmin;
  if (index_->granted(tenant, site)) return grpc::Status::OK;
  const std::string why = "site " + quote(site) + " is not granted to tenant " + quote(tenant);
  if (fleet) {
    if (!put) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        why + ": a tenant's devices live on its granted sites; grant it first");
  }
  if (!write) {
    *hidden = true;  // the tenant learns nothing of a site not granted to it
    return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      "token " + who->id + " (" + model::holder_text(who->role, who->tenant) +
                          ") may not write devices: " + why);
}

CatalogService::~CatalogService() { shutdown(); }

grpc::Status CatalogService::wait_for(const std::function<void(Done)>& start) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<grpc::Status> result;
  start([&](const grpc::Status& st) {
    std::lock_guard lock(mu);
    result = st;
    cv.notify_one();  // under the lock: the waiter cannot return before this ends
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return result.has_value(); });
  return *result;
}

void CatalogService::shutdown() { fanout_->shutdown(); }

StatusOr<bool> CatalogService::read_object(const std::string& key, v1::Object* out,
                                           bool with_json) {
  return api::read_object(store_, key, options_.limits.max_depth, out, with_json);
}

grpc::Status CatalogService::put(std::string_view authorization, const v1::PutRequest& request,
                                 v1::PutResponse* response) {
  return wait_for([&](Done done) { put_async(authorization, request, response, std::move(done)); });
}

void CatalogService::put_async(std::string_view authorization, const v1::PutRequest& request_in,
                               v1::PutResponse* response, Done done) {
  const v1::PutRequest* request = &request_in;
  if (auto a = authorize_object(authorization, true, request->object().kind(),
                                request->object().tenant(), request->object().name());
      !a.ok()) {
    return done(a);
  }
  if (!request->has_object()) {
    return done(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "object is missing"));
  }
  const v1::Object& obj = request->object();
  auto key = object_key(obj.kind(), obj.tenant(), obj.name(), "object.", obj.site());
  if (!key.ok()) return done(to_grpc(key.status()));
  if (obj.kind() == kDevice) {
    bool hidden = false;
    if (auto a = check_device_site(authorization, obj.tenant(), obj.site(), true, true, &hidden);
        !a.ok()) {
      return done(a);
    }
  }
  std::string canonical;
  auto doc = validate_object(obj, options_.limits, &canonical);
  if (!doc.ok()) return done(to_grpc(doc.status()));
  if (obj.kind() == kSite) {
    if (Status names = check_site_and_region_names(obj.name(), *doc); !names.ok()) {
      return done(to_grpc(names));
    }
  }
  // The version check is the store's, atomic with the write; no thread
  // waits for the fsync (the store reports once the write is durable).
  std::string key_text = *key;
  store_->put_value_async(
      std::move(*key), std::move(*doc), obj.version(),
      [this, request, response, key = std::move(key_text), canonical = std::move(canonical),
       done = std::move(done)](StatusOr<v1::Delta> delta) mutable {
        const v1::Object& obj = request->object();
        if (!delta.ok()) {
          if (delta.status().code() == StatusCode::kAborted) {
            return done(grpc::Status(grpc::StatusCode::ABORTED,
                                     subject(obj.kind(), obj.name()) + ": object." +
                                         delta.status().message() + "; read it again and reapply"));
          }
          return done(to_grpc(delta.status()));
        }
        spdlog::debug("catalog: put {} ({} field ops)", key, delta->ops_size());
        v1::Object* out = response->mutable_object();
        name_object(obj.kind(), obj.tenant(), obj.name(), out, obj.site());
        if (delta->ops_size() > 0) {
          // The write made the object exactly `doc`, stamped above everything
          // it held before: that is the object and its version as this call
          // left it (no read back; a later write may have changed it since,
          // as it may after any read).
          out->set_json(std::move(canonical));
          out->set_version(delta->hlc());
          return done(grpc::Status::OK);
        }
        // Nothing changed: the object is as it was, at the version it had.
        auto found = read_object(key, out);
        if (!found.ok()) return done(to_grpc(found.status()));
        if (!*found) {
          // Deleted again in the meantime: report what this call wrote.
          out->set_json(std::move(canonical));
          out->set_version(delta->hlc());
        }
        done(grpc::Status::OK);
      });
}

grpc::Status CatalogService::get(std::string_view authorization, const v1::GetRequest& request_in,
                                 v1::GetResponse* response) {
  const v1::GetRequest* request = &request_in;
  std::string granted_to;
  if (auto a = authorize_object(authorization, false, request->kind(), request->tenant(),
                                request->name(), &granted_to);
      !a.ok()) {
    return a;
  }
  if (!granted_to.empty() && !index_->granted(granted_to, request->name())) {
    // Not granted: the tenant learns nothing, not even that the site exists.
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        not_found_message(request->kind(), request->tenant(), request->name()));
  }
  auto key = object_key(request->kind(), request->tenant(), request->name(), "", request->site());
  if (!key.ok()) return to_grpc(key.status());
  const std::string missing =
      not_found_message(request->kind(), request->tenant(), request->name(), request->site());
  if (request->kind() == kDevice) {
    bool hidden = false;
    if (auto a = check_device_site(authorization, request->tenant(), request->site(), false, false,
                                   &hidden);
        !a.ok()) {
      return a;
    }
    if (hidden) return grpc::Status(grpc::StatusCode::NOT_FOUND, missing);
  }
  v1::Object* out = response->mutable_object();
  name_object(request->kind(), request->tenant(), request->name(), out, request->site());
  auto found = read_object(*key, out);
  if (!found.ok()) return to_grpc(found.status());
  if (!*found) return grpc::Status(grpc::StatusCode::NOT_FOUND, missing);
  return grpc::Status::OK;
}

grpc::Status CatalogService::get_twin(std::string_view authorization, std::string_view tenant,
                                      std::string_view site, std::string_view name, json* out) {
  v1::GetRequest request;
  request.set_kind(std::string(kDevice));
  request.set_tenant(std::string(tenant));
  request.set_site(std::string(site));
  request.set_name(std::string(name));
  v1::GetResponse device;
  if (auto st = get(authorization, request, &device); !st.ok()) return st;
  auto parsed =
      model::parse_device(site, tenant, name, json::parse(device.object().json(), nullptr, false));
  if (!parsed.ok()) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        subject(kDevice, name) + ": its document is refused: " + parsed.status().message());
  }
  json reported = json::object();
  auto text = store_->get(model::reported_key(site, tenant, name));
  if (text.ok()) {
    auto fields = model::parse_reported(json::parse(*text, nullptr, false));
    if (fields.ok()) {
      for (const auto& [k, f] : *fields) reported[k] = {{"value", f.value}, {"atMs", f.at_ms}};
    }
  } else if (text.status().code() != StatusCode::kNotFound) {
    return to_grpc(text.status());
  }
  *out = {{"desired", parsed->desired}, {"reported", std::move(reported)}};
  return grpc::Status::OK;
}

grpc::Status CatalogService::list(std::string_view authorization, const v1::ListRequest& request_in,
                                  v1::ListResponse* response) {
  const v1::ListRequest* request = &request_in;
  std::string granted_to;
  if (auto a = authorize_object(authorization, false, request->kind(), request->tenant(), "",
                                &granted_to);
      !a.ok()) {
    return a;
  }
  const std::string& kind = request->kind();
  // Validate kind and tenant with a placeholder name.
  auto valid = object_key(kind, request->tenant(), "x", "", request->site());
  if (!valid.ok()) return to_grpc(valid.status());
  if (kind == kDevice) {
    bool hidden = false;
    if (auto a = check_device_site(authorization, request->tenant(), request->site(), false, false,
                                   &hidden);
        !a.ok()) {
      return a;
    }
    if (hidden) return grpc::Status::OK;  // an ungranted site: no devices to see
  }
  auto selector = model::LabelSelector::parse_text(request->label_selector(), "label_selector");
  if (!selector.ok()) return to_grpc(selector.status());
  const bool filtered = !selector->empty();
  const std::string& token = request->page_token();
  if (!token.empty() && !model::is_dns1123_label(token)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token " + quote(token) + " is not one this service returned");
  }
  const size_t page_size = request->page_size() == 0
                               ? kDefaultPageSize
                               : std::min<uint32_t>(request->page_size(), kMaxPageSize);
  const std::string prefix = prefix_of(kind, request->tenant(), request->site());

  auto add = [&](const std::string& name, const std::string& key) -> StatusOr<bool> {
    v1::Object obj;
    name_object(kind, request->tenant(), name, &obj);
    auto found = read_object(key, &obj);
    if (!found.ok()) return found.status();
    if (*found && filtered &&
        !selector->matches(labels_of(kind, name, json::parse(obj.json(), nullptr, false)))) {
      return false;
    }
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
        if (!granted_to.empty() && !index_->granted(granted_to, name)) continue;
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
      const std::string_view name = std::string_view(st.key()).substr(prefix.size());
      std::string text = doc->to_json();
      if (filtered &&
          !selector->matches(labels_of(kind, name, json::parse(text, nullptr, false)))) {
        continue;
      }
      if (static_cast<size_t>(response->objects_size()) == page_size) {
        response->set_next_page_token(response->objects().rbegin()->name());
        return grpc::Status::OK;
      }
      v1::Object* obj = response->add_objects();
      name_object(kind, request->tenant(), name, obj, request->site());
      obj->set_json(std::move(text));
      obj->set_version(doc->max_hlc());
    }
    if (states->size() < page_size + 1) return grpc::Status::OK;
    from = states->back().key() + '\0';
  }
}

grpc::Status CatalogService::remove(std::string_view authorization,
                                    const v1::DeleteRequest& request,
                                    v1::DeleteResponse* response) {
  return wait_for(
      [&](Done done) { remove_async(authorization, request, response, std::move(done)); });
}

void CatalogService::remove_async(std::string_view authorization,
                                  const v1::DeleteRequest& request_in, v1::DeleteResponse* response,
                                  Done done) {
  const v1::DeleteRequest* request = &request_in;
  if (auto a = authorize_object(authorization, true, request->kind(), request->tenant(),
                                request->name());
      !a.ok()) {
    return done(a);
  }
  auto key = object_key(request->kind(), request->tenant(), request->name(), "", request->site());
  if (!key.ok()) return done(to_grpc(key.status()));
  if (request->kind() == kDevice) {
    bool hidden = false;
    if (auto a = check_device_site(authorization, request->tenant(), request->site(), false, true,
                                   &hidden);
        !a.ok()) {
      return done(a);
    }
  }
  std::string key_text = *key;
  store_->remove_async(
      std::move(*key), request->version(),
      [request, response, key = std::move(key_text),
       done = std::move(done)](StatusOr<v1::Delta> delta) mutable {
        if (!delta.ok()) {
          if (delta.status().code() == StatusCode::kNotFound) {
            return done(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                     not_found_message(request->kind(), request->tenant(),
                                                       request->name(), request->site())));
          }
          if (delta.status().code() == StatusCode::kAborted) {
            return done(grpc::Status(grpc::StatusCode::ABORTED,
                                     subject(request->kind(), request->name()) + ": " +
                                         delta.status().message() + "; read it again"));
          }
          return done(to_grpc(delta.status()));
        }
        spdlog::debug("catalog: deleted {}", key);
        v1::Object* out = response->mutable_object();
        name_object(request->kind(), request->tenant(), request->name(), out, request->site());
        out->set_version(delta->hlc());
        done(grpc::Status::OK);
      });
}

grpc::Status CatalogService::get_status(std::string_view authorization,
                                        const v1::GetStatusRequest& request_in,
                                        v1::GetStatusResponse* response) {
  const v1::GetStatusRequest* request = &request_in;
  if (auto a = authorize_object(authorization, false, kPlacement, request->tenant(), ""); !a.ok()) {
    return a;
  }
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"tenant", &request->tenant()},
        {"placement", &request->placement()}}) {
    Status st = check_label(field, *value);
    if (!st.ok()) return to_grpc(st);
  }
  auto key = object_key(kPlacement, request->tenant(), request->placement());
  if (!key.ok()) return to_grpc(key.status());
  const std::string& token = request->page_token();
  if (!token.empty() && !model::is_dns1123_label(token)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token " + quote(token) + " is not one this service returned");
  }
  const size_t page_size = request->page_size() == 0
                               ? kDefaultPageSize
                               : std::min<uint32_t>(request->page_size(), kMaxPageSize);

  hub::LivenessOf liveness;
  if (options_.liveness) liveness = options_.liveness();
  auto status = status_->placement_status(request->tenant(), request->placement(), token, page_size,
                                          liveness);
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

// --- gRPC adapters.

namespace {

// One Put on the async API: requested, then being written, then finished.
struct PutCall {
  grpc::ServerContext ctx;
  v1::PutRequest request;
  v1::PutResponse response;
  grpc::ServerAsyncResponseWriter<v1::PutResponse> responder{&ctx};
  bool finishing = false;  // its next event is the end of its Finish
};

}  // namespace

void CatalogService::request_put(grpc::ServerCompletionQueue* cq) {
  {
    std::lock_guard lock(puts_mu_);
    ++puts_outstanding_;
  }
  auto* call = new PutCall;
  RequestPut(&call->ctx, &call->request, &call->responder, cq, cq, call);
}

void CatalogService::serve_puts(grpc::ServerCompletionQueue* cq) {
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
    auto* call = static_cast<PutCall*>(tag);
    if (call->finishing || !ok) {
      // Finished, or no call came (the server is shutting down).
      delete call;
      std::lock_guard lock(puts_mu_);
      if (--puts_outstanding_ == 0) puts_cv_.notify_all();
      continue;
    }
    // Counted already: the call stays outstanding until its Finish ends.
    request_put(cq);
    call->finishing = true;
    put_async(bearer_of(&call->ctx), call->request, &call->response,
              [call](const grpc::Status& st) { call->responder.Finish(call->response, st, call); });
  }
}

void CatalogService::wait_for_puts() {
  std::unique_lock lock(puts_mu_);
  puts_cv_.wait(lock, [&] { return puts_outstanding_ == 0; });
}

grpc::Status CatalogService::Get(grpc::ServerContext* context, const v1::GetRequest* request,
                                 v1::GetResponse* response) {
  return get(bearer_of(context), *request, response);
}
grpc::Status CatalogService::List(grpc::ServerContext* context, const v1::ListRequest* request,
                                  v1::ListResponse* response) {
  return list(bearer_of(context), *request, response);
}
grpc::Status CatalogService::Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                                    v1::DeleteResponse* response) {
  return remove(bearer_of(context), *request, response);
}
grpc::Status CatalogService::GetStatus(grpc::ServerContext* context,
                                       const v1::GetStatusRequest* request,
                                       v1::GetStatusResponse* response) {
  return get_status(bearer_of(context), *request, response);
}
grpc::Status CatalogService::IssueToken(grpc::ServerContext* context,
                                        const v1::IssueTokenRequest* request,
                                        v1::IssueTokenResponse* response) {
  return issue_token(bearer_of(context), *request, response);
}
grpc::Status CatalogService::ListTokens(grpc::ServerContext* context,
                                        const v1::ListTokensRequest* request,
                                        v1::ListTokensResponse* response) {
  return list_tokens(bearer_of(context), *request, response);
}
grpc::Status CatalogService::RevokeToken(grpc::ServerContext* context,
                                         const v1::RevokeTokenRequest* request,
                                         v1::RevokeTokenResponse* response) {
  return revoke_token(bearer_of(context), *request, response);
}

grpc::Status CatalogService::Render(grpc::ServerContext* context, const v1::RenderRequest* request,
                                    v1::RenderResponse* response) {
  return render(bearer_of(context), *request, response);
}

grpc::Status CatalogService::GetTwin(grpc::ServerContext* context,
                                     const v1::GetTwinRequest* request,
                                     v1::GetTwinResponse* response) {
  json twin;
  if (auto st = get_twin(bearer_of(context), request->tenant(), request->site(), request->device(),
                         &twin);
      !st.ok()) {
    return st;
  }
  response->set_desired(twin["desired"].dump());
  for (const auto& [field, r] : twin["reported"].items()) {
    v1::ReportedField& out = (*response->mutable_reported())[field];
    out.set_value(r["value"].dump());
    out.set_at_ms(r["atMs"].get<int64_t>());
  }
  return grpc::Status::OK;
}

grpc::Status CatalogService::EnrollSite(grpc::ServerContext* context,
                                        const v1::EnrollSiteRequest* request,
                                        v1::EnrollSiteResponse* response) {
  return enroll_site(bearer_of(context), *request, response);
}
grpc::Status CatalogService::RevokeSite(grpc::ServerContext* context,
                                        const v1::RevokeSiteRequest* request,
                                        v1::RevokeSiteResponse* response) {
  return revoke_site(bearer_of(context), *request, response);
}
grpc::Status CatalogService::ListEnrollments(grpc::ServerContext* context,
                                             const v1::ListEnrollmentsRequest* request,
                                             v1::ListEnrollmentsResponse* response) {
  return list_enrollments(bearer_of(context), *request, response);
}
grpc::Status CatalogService::DecideEnrollment(grpc::ServerContext* context,
                                              const v1::DecideEnrollmentRequest* request,
                                              v1::DecideEnrollmentResponse* response) {
  return decide_enrollment(bearer_of(context), *request, response);
}

grpc::Status CatalogService::ListConflicts(grpc::ServerContext* context,
                                           const v1::ListConflictsRequest* request,
                                           v1::ListConflictsResponse* response) {
  return list_conflicts(bearer_of(context), *request, response);
}

}  // namespace canopy::api
