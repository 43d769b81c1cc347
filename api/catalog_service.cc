#include "api/catalog_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <unordered_set>
#include <utility>
#include <vector>

#include "api/grpc_status.h"
#include "model/access.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

// How often a watch stream without events checks whether its client left.
constexpr auto kWatchPoll = std::chrono::milliseconds(100);

}  // namespace

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
                               hub::StatusAggregate* status, Authenticator* auth,
                               CatalogOptions options)
    : store_(store), index_(index), status_(status), auth_(auth), options_(std::move(options)) {}

grpc::Status CatalogService::authorize(grpc::ServerContext* context, model::Action action,
                                       std::string_view kind, std::string_view tenant) const {
  std::string_view header;
  const auto& md = context->client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    header = std::string_view(it->second.data(), it->second.size());
  }
  auto who = auth_->authenticate(header);
  if (!who.ok()) return to_grpc(who.status());
  // Sites belong to no tenant: they are the fleet's.
  const std::string_view scope = kind == kSite ? std::string_view() : tenant;
  if (!model::permits(who->role, who->tenant, action, scope)) {
    std::string holder = std::string(model::role_name(who->role));
    if (!who->tenant.empty()) holder += " of tenant " + who->tenant;
    static constexpr const char* kVerb[] = {"read", "write", "manage", "administer"};
    const std::string what =
        scope.empty() ? std::string("the fleet's sites") : "tenant " + quote(scope) + "'s objects";
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "token " + who->id + " (" + holder + ") may not " +
                            kVerb[static_cast<int>(action)] + " " + what);
  }
  return grpc::Status::OK;
}

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

grpc::Status CatalogService::Put(grpc::ServerContext* context, const v1::PutRequest* request,
                                 v1::PutResponse* response) {
  const model::Action write =
      request->object().kind() == kSite ? model::Action::kAdminister : model::Action::kWrite;
  if (auto a = authorize(context, write, request->object().kind(), request->object().tenant());
      !a.ok()) {
    return a;
  }
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

grpc::Status CatalogService::Get(grpc::ServerContext* context, const v1::GetRequest* request,
                                 v1::GetResponse* response) {
  if (auto a = authorize(context, model::Action::kRead, request->kind(), request->tenant());
      !a.ok()) {
    return a;
  }
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

grpc::Status CatalogService::List(grpc::ServerContext* context, const v1::ListRequest* request,
                                  v1::ListResponse* response) {
  if (auto a = authorize(context, model::Action::kRead, request->kind(), request->tenant());
      !a.ok()) {
    return a;
  }
  const std::string& kind = request->kind();
  // Validate kind and tenant with a placeholder name.
  auto valid = object_key(kind, request->tenant(), "x");
  if (!valid.ok()) return to_grpc(valid.status());
  const std::string& token = request->page_token();
  if (!token.empty() && !model::is_dns1123_label(token)) {
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

grpc::Status CatalogService::Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                                    v1::DeleteResponse* response) {
  const model::Action write =
      request->kind() == kSite ? model::Action::kAdminister : model::Action::kWrite;
  if (auto a = authorize(context, write, request->kind(), request->tenant()); !a.ok()) return a;
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
  if (auto a = authorize(context, model::Action::kRead, request->kind(), request->tenant());
      !a.ok()) {
    return a;
  }
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

grpc::Status CatalogService::GetStatus(grpc::ServerContext* context,
                                       const v1::GetStatusRequest* request,
                                       v1::GetStatusResponse* response) {
  if (auto a = authorize(context, model::Action::kRead, kPlacement, request->tenant()); !a.ok()) {
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
