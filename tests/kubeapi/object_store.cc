#include "tests/kubeapi/object_store.h"

#include <ctime>
#include <regex>

#include "store/merge_patch.h"
#include "tests/kubeapi/server_side_apply.h"

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

const std::regex kSubdomain("[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*");
const std::regex kLabel("[a-z0-9]([-a-z0-9]*[a-z0-9])?");

constexpr const char* kSubdomainWhy =
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
constexpr const char* kLabelWhy =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

std::string encode_continue(const json& token) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : token.dump()) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

// The token's JSON, or null when it is not one.
json decode_continue(const std::string& token) {
  if (token.size() % 2 != 0) return nullptr;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string text;
  for (size_t i = 0; i < token.size(); i += 2) {
    const int hi = nibble(token[i]);
    const int lo = nibble(token[i + 1]);
    if (hi < 0 || lo < 0) return nullptr;
    text += static_cast<char>(hi * 16 + lo);
  }
  return json::parse(text, nullptr, false);
}

std::string str_at(const json& object, const char* a, const char* b) {
  auto x = object.find(a);
  if (x == object.end() || !x->is_object()) return "";
  auto y = x->find(b);
  return y != x->end() && y->is_string() ? y->get<std::string>() : "";
}

// What generation tracks: everything outside metadata and status.
json spec_view(json object) {
  if (!object.is_object()) return object;
  for (const char* k : {"metadata", "status", "apiVersion", "kind"}) object.erase(k);
  return object;
}

// `object` with managedFields timestamps blanked, to tell no-op writes.
json without_times(json object) {
  auto md = object.find("metadata");
  if (md == object.end() || !md->contains("managedFields")) return object;
  for (auto& e : (*md)["managedFields"]) {
    if (e.is_object()) e.erase("time");
  }
  return object;
}

json condition(const std::string& type, const std::string& reason, const std::string& message,
               const std::string& time) {
  return json{{"type", type},
              {"status", "True"},
              {"reason", reason},
              {"message", message},
              {"lastTransitionTime", time}};
}

}  // namespace

ObjectStore::ObjectStore(ResourceRegistry* registry, Clock clock,
                         std::chrono::milliseconds crd_establish_delay, uint64_t seed)
    : registry_(registry),
      clock_(std::move(clock)),
      crd_establish_delay_(crd_establish_delay),
      random_(seed) {
  const ResourceType* ns = registry_->find("", "v1", "namespaces");
  for (const char* name : {"default", "kube-system", "kube-public", "kube-node-lease"}) {
    json object{{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}}}};
    initialize(*ns, object);
    commit(*ns, Key{"", "namespaces", "", name}, nullptr, object);
  }
}

std::string ObjectStore::now_rfc3339() const {
  std::time_t t = std::chrono::system_clock::to_time_t(clock_());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string ObjectStore::new_uid() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) out += '-';
    unsigned v = static_cast<unsigned>(random_() & 15);
    if (i == 12) v = 4;            // version 4
    if (i == 16) v = 8 | (v & 3);  // variant 10xx
    out += kHex[v];
  }
  return out;
}

void ObjectStore::tick() {
  auto now = clock_();
  for (auto it = pending_crds_.begin(); it != pending_crds_.end();) {
    if (it->second > now) {
      ++it;
      continue;
    }
    const ResourceType* crds =
        registry_->find("apiextensions.k8s.io", "v1", "customresourcedefinitions");
    Key key{crds->group, crds->resource, "", it->first};
    auto found = objects_.find(key);
    if (found != objects_.end()) {
      json next = found->second;
      next["status"]["conditions"].push_back(condition("Established", "InitialNamesAccepted",
                                                       "the initial names have been accepted",
                                                       now_rfc3339()));
      registry_->add_crd(next);
      commit(*crds, key, found->second, next);
    }
    it = pending_crds_.erase(it);
  }
}

ApiResponse ObjectStore::get(const ResourceType& type, const std::string& ns,
                             const std::string& name) {
  auto it = objects_.find(Key{type.group, type.resource, ns, name});
  if (it == objects_.end()) return not_found({type.group, type.resource, name});
  return ApiResponse{200, for_client(type, it->second), "", {}, nullptr};
}

ApiResponse ObjectStore::list(const ResourceType& type, const std::string& ns,
                              const Selector& labels, const Selector& fields, size_t limit,
                              const std::string& cont) {
  // The continue token: hex of {"rv": N, "ns": ..., "name": ...}, the last
  // object of the page before (opaque to clients; the real one is base64).
  auto it = objects_.lower_bound(Key{type.group, type.resource, "", ""});
  if (!cont.empty()) {
    json start = decode_continue(cont);
    if (!start.is_object() || !start.contains("ns") || !start["ns"].is_string() ||
        !start.contains("name") || !start["name"].is_string()) {
      return bad_request("continue key is not valid: not a token this server gave out");
    }
    it = objects_.upper_bound(Key{type.group, type.resource, start["ns"].get<std::string>(),
                                  start["name"].get<std::string>()});
  }
  json items = json::array();
  std::string next, last_ns, last_name;
  for (; it != objects_.end(); ++it) {
    const auto& [key, object] = *it;
    const auto& [group, resource, object_ns, name] = key;
    if (group != type.group || resource != type.resource) break;
    if (!ns.empty() && object_ns != ns) continue;
    const json& md = object["metadata"];
    if (!matches(labels, md.value("labels", json()))) continue;
    if (!matches(fields, json{{"metadata.name", name}, {"metadata.namespace", object_ns}})) {
      continue;
    }
    json item = for_client(type, object);
    // Typed lists of built-in kinds carry no apiVersion/kind per item.
    if (!type.custom) {
      item.erase("apiVersion");
      item.erase("kind");
    }
    if (limit != 0 && items.size() == limit) {
      // One more matches: this page ends before it.
      next = encode_continue(json{{"rv", revision_}, {"ns", last_ns}, {"name", last_name}});
      break;
    }
    last_ns = object_ns;
    last_name = name;
    items.push_back(std::move(item));
  }
  json metadata = {{"resourceVersion", std::to_string(revision_)}};
  if (!next.empty()) metadata["continue"] = next;
  return ApiResponse{200,
                     json{{"apiVersion", type.group_version()},
                          {"kind", type.kind + "List"},
                          {"metadata", metadata},
                          {"items", items}},
                     "",
                     {},
                     nullptr};
}

std::optional<ApiResponse> ObjectStore::check_namespace(const ResourceType& type,
                                                        const std::string& ns) const {
  if (!type.namespaced || objects_.count(Key{"", "namespaces", "", ns}) > 0) return std::nullopt;
  return not_found({"", "namespaces", ns});
}

std::optional<ApiResponse> ObjectStore::check_body(const ResourceType& type,
                                                   const WriteRequest& req,
                                                   const json& body) const {
  if (!body.is_object()) return bad_request("the body of the request is not a JSON/YAML object");
  std::string api_version = body.value("apiVersion", "");
  std::string kind = body.value("kind", "");
  if (kind.empty()) return bad_request("Object 'Kind' is missing in '" + body.dump() + "'");
  if (api_version != type.group_version()) {
    return bad_request("the API version in the data (" + api_version +
                       ") does not match the expected API version (" + type.group_version() + ")");
  }
  if (kind != type.kind) {
    return bad_request("the kind in the data (" + kind + ") does not match the expected kind (" +
                       type.kind + ")");
  }
  std::string body_ns = str_at(body, "metadata", "namespace");
  if (type.namespaced && !body_ns.empty() && body_ns != req.ns) {
    return bad_request(
        "the namespace of the provided object does not match the namespace sent on the request");
  }
  std::string name = str_at(body, "metadata", "name");
  if (!req.name.empty() && !name.empty() && name != req.name) {
    return bad_request("the name of the object (" + name +
                       ") does not match the name on the URL (" + req.name + ")");
  }
  if (name.empty()) name = req.name;
  ResourceRef ref{type.group, type.resource, name};
  if (name.empty()) {
    return status_failure(422, "Invalid",
                          type.kind +
                              " \"\" is invalid: metadata.name: Required value: name or "
                              "generateName is required");
  }
  bool label = type.resource == "namespaces";
  if (name.size() > (label ? 63u : 253u) || !std::regex_match(name, label ? kLabel : kSubdomain)) {
    return invalid(type.kind, ref, "metadata.name", name, label ? kLabelWhy : kSubdomainWhy);
  }
  if (type.resource == "customresourcedefinitions") {
    const json spec = body.value("spec", json::object());
    std::string plural = spec.value("names", json::object()).value("plural", "");
    std::string want = plural + "." + spec.value("group", "");
    if (name != want) {
      return invalid(type.kind, ref, "metadata.name", name,
                     "must be spec.names.plural+\".\"+spec.group");
    }
  }
  return std::nullopt;
}

void ObjectStore::initialize(const ResourceType& type, json& object) {
  json& md = object["metadata"];
  md["uid"] = new_uid();
  md["creationTimestamp"] = now_rfc3339();
  if (type.has_generation) md["generation"] = 1;
  if (type.resource == "namespaces") {
    md["labels"]["kubernetes.io/metadata.name"] = md["name"];
    object["spec"]["finalizers"] = json::array({"kubernetes"});
    object["status"] = json{{"phase", "Active"}};
  }
  if (type.resource == "customresourcedefinitions") {
    const json& spec = object["spec"];
    json stored = json::array();
    for (const auto& v : spec.value("versions", json::array())) {
      if (v.value("storage", false)) stored.push_back(v.value("name", ""));
    }
    object["status"] =
        json{{"acceptedNames", spec.value("names", json::object())},
             {"storedVersions", stored},
             {"conditions", json::array({condition("NamesAccepted", "NoConflicts",
                                                   "no conflicts found", now_rfc3339())})}};
  }
}

json ObjectStore::commit(const ResourceType& type, const Key& key, const json& previous,
                         json next) {
  if (type.namespaced) next["metadata"]["namespace"] = std::get<2>(key);
  if (!previous.is_null()) {
    if (without_times(next) == without_times(previous)) return previous;
    if (type.has_generation && spec_view(next) != spec_view(previous)) {
      next["metadata"]["generation"] = previous["metadata"].value("generation", 0) + 1;
    }
  }
  next["metadata"]["resourceVersion"] = std::to_string(++revision_);
  objects_[key] = next;
  record(previous.is_null() ? "ADDED" : "MODIFIED", key, next);
  return next;
}

json ObjectStore::for_client(const ResourceType& type, json object) const {
  object["apiVersion"] = type.group_version();
  object["kind"] = type.kind;
  return object;
}

ApiResponse ObjectStore::create(const ResourceType& type, const WriteRequest& req) {
  json body = req.body;
  if (body.is_object() && body.contains("metadata") && body["metadata"].is_object() &&
      str_at(body, "metadata", "name").empty()) {
    std::string prefix = str_at(body, "metadata", "generateName");
    if (!prefix.empty()) {
      static constexpr char kChars[] = "bcdfghjklmnpqrstvwxz2456789";
      for (int i = 0; i < 5; ++i) prefix += kChars[random_() % (sizeof kChars - 1)];
      body["metadata"]["name"] = prefix;
    }
  }
  if (auto bad = check_body(type, req, body)) return *bad;
  if (auto missing = check_namespace(type, req.ns)) return *missing;
  std::string name = str_at(body, "metadata", "name");
  Key key{type.group, type.resource, req.ns, name};
  if (objects_.count(key) > 0) return already_exists({type.group, type.resource, name});
  json object = strip_untracked(body, false);
  object["metadata"]["name"] = name;
  if (type.status_subresource) object.erase("status");
  object = record_update(nullptr, std::move(object), req.manager, type.group_version(),
                         now_rfc3339(), type.status_subresource);
  initialize(type, object);
  json stored = commit(type, key, nullptr, std::move(object));
  if (type.resource == "customresourcedefinitions") after_crd_write(stored);
  return ApiResponse{201, for_client(type, stored), "", {}, nullptr};
}

ApiResponse ObjectStore::update(const ResourceType& type, const WriteRequest& req) {
  if (auto bad = check_body(type, req, req.body)) return *bad;
  Key key{type.group, type.resource, req.ns, req.name};
  auto it = objects_.find(key);
  if (it == objects_.end()) return not_found({type.group, type.resource, req.name});
  const json& live = it->second;
  std::string want_rv = str_at(req.body, "metadata", "resourceVersion");
  if (!want_rv.empty() && want_rv != live["metadata"].value("resourceVersion", "")) {
    return modified_conflict({type.group, type.resource, req.name});
  }
  json next = live;
  if (req.status_only) {
    next["status"] = req.body.value("status", json::object());
  } else {
    json status = live.value("status", json());
    next = strip_untracked(req.body, false);
    for (const char* k : {"name", "uid", "creationTimestamp", "generation", "managedFields"}) {
      if (live["metadata"].contains(k)) next["metadata"][k] = live["metadata"][k];
    }
    if (type.status_subresource) {
      next.erase("status");
      if (!status.is_null()) next["status"] = status;
    }
    next = record_update(live, std::move(next), req.manager, type.group_version(), now_rfc3339(),
                         type.status_subresource);
  }
  json stored = commit(type, key, live, std::move(next));
  if (type.resource == "customresourcedefinitions") after_crd_write(stored);
  return ApiResponse{200, for_client(type, stored), "", {}, nullptr};
}

ApiResponse ObjectStore::merge_patch(const ResourceType& type, const WriteRequest& req) {
  Key key{type.group, type.resource, req.ns, req.name};
  auto it = objects_.find(key);
  if (it == objects_.end()) return not_found({type.group, type.resource, req.name});
  if (!req.body.is_object()) return bad_request("the patch is not a JSON object");
  json patched = apply_merge_patch(it->second, req.body);
  WriteRequest full = req;
  full.body = for_client(type, patched);
  return update(type, full);
}

ApiResponse ObjectStore::apply(const ResourceType& type, const WriteRequest& req) {
  if (auto bad = check_body(type, req, req.body)) return *bad;
  if (auto missing = check_namespace(type, req.ns)) return *missing;
  Key key{type.group, type.resource, req.ns, req.name};
  auto it = objects_.find(key);
  json live = it == objects_.end() ? json() : it->second;
  ApplyInput in;
  in.live = live;
  in.applied = strip_untracked(req.body, type.status_subresource && !req.status_only);
  if (req.status_only) in.applied = json{{"status", req.body.value("status", json::object())}};
  in.manager = req.manager;
  in.api_version = type.group_version();
  in.time = now_rfc3339();
  in.force = req.force;
  if (req.status_only) in.subresource = "status";
  ApplyOutput out = server_side_apply(in);
  if (!out.conflicts.empty()) {
    json causes = json::array();
    for (const auto& c : out.conflicts) {
      causes.push_back(json{{"type", "FieldManagerConflict"},
                            {"message", "conflict with " + c.manager},
                            {"field", path_string(c.path)}});
    }
    return status_failure(409, "Conflict", conflict_message(out.conflicts),
                          json{{"causes", causes}});
  }
  json next = std::move(out.object);
  next["metadata"]["name"] = req.name;
  if (live.is_null()) {
    initialize(type, next);
  } else {
    for (const char* k : {"uid", "creationTimestamp", "generation", "resourceVersion"}) {
      if (live["metadata"].contains(k)) next["metadata"][k] = live["metadata"][k];
    }
  }
  json stored = commit(type, key, live, std::move(next));
  if (type.resource == "customresourcedefinitions") after_crd_write(stored);
  return ApiResponse{live.is_null() ? 201 : 200, for_client(type, stored), "", {}, nullptr};
}

void ObjectStore::after_crd_write(const json& crd) {
  std::string name = crd["metadata"].value("name", "");
  bool established = false;
  for (const auto& c : crd["status"].value("conditions", json::array())) {
    established =
        established || (c.value("type", "") == "Established" && c.value("status", "") == "True");
  }
  if (established) {
    registry_->add_crd(crd);  // versions may have changed
  } else if (pending_crds_.count(name) == 0) {
    pending_crds_[name] = clock_() + crd_establish_delay_;
  }
}

void ObjectStore::remove_related(const ResourceType& type, const json& object) {
  std::string name = object["metadata"].value("name", "");
  auto erase_if_recorded = [&](auto predicate) {
    for (auto it = objects_.begin(); it != objects_.end();) {
      if (!predicate(it->first)) {
        ++it;
        continue;
      }
      ++revision_;
      it->second["metadata"]["resourceVersion"] = std::to_string(revision_);
      record("DELETED", it->first, it->second);
      it = objects_.erase(it);
    }
  };
  if (type.resource == "namespaces") {
    erase_if_recorded([&](const Key& key) { return std::get<2>(key) == name; });
  } else if (type.resource == "customresourcedefinitions") {
    const json& spec = object["spec"];
    std::string group = spec.value("group", "");
    std::string plural = spec.value("names", json::object()).value("plural", "");
    erase_if_recorded(
        [&](const Key& key) { return std::get<0>(key) == group && std::get<1>(key) == plural; });
    registry_->remove_crd(group, plural);
    pending_crds_.erase(name);
  }
}

ApiResponse ObjectStore::remove(const ResourceType& type, const std::string& ns,
                                const std::string& name) {
  Key key{type.group, type.resource, ns, name};
  auto it = objects_.find(key);
  if (it == objects_.end()) return not_found({type.group, type.resource, name});
  json object = it->second;
  objects_.erase(it);
  ++revision_;
  object["metadata"]["resourceVersion"] = std::to_string(revision_);
  record("DELETED", key, object);
  remove_related(type, object);
  if (type.resource == "namespaces") {
    object["metadata"]["deletionTimestamp"] = now_rfc3339();
    object["metadata"]["resourceVersion"] = std::to_string(revision_);
    object["status"]["phase"] = "Terminating";
    return ApiResponse{200, for_client(type, object), "", {}, nullptr};
  }
  return status_success({type.group, type.resource, name}, object["metadata"].value("uid", ""));
}

std::optional<json> ObjectStore::find(const std::string& group, const std::string& resource,
                                      const std::string& ns, const std::string& name) const {
  auto it = objects_.find(Key{group, resource, ns, name});
  if (it == objects_.end()) return std::nullopt;
  return it->second;
}

bool ObjectStore::set_status(const std::string& group, const std::string& resource,
                             const std::string& ns, const std::string& name, const json& status) {
  auto it = objects_.find(Key{group, resource, ns, name});
  if (it == objects_.end()) return false;
  json next = it->second;
  next["status"] = status;
  ++revision_;
  next["metadata"]["resourceVersion"] = std::to_string(revision_);
  it->second = next;
  record("MODIFIED", it->first, next);
  return true;
}

void ObjectStore::record(const char* type, const Key& key, const json& object) {
  events_.push_back(Event{revision_, type, key, object});
  while (events_.size() > kMaxEvents) {
    events_since_ = events_.front().revision;
    events_.pop_front();
  }
}

std::string ObjectStore::watch_events(const ResourceType& type, const std::string& ns,
                                      const Selector& labels, const Selector& fields, bool initial,
                                      int64_t* cursor, bool* expired) {
  std::string out;
  auto wanted = [&](const Key& key, const json& object) {
    const auto& [group, resource, object_ns, name] = key;
    return group == type.group && resource == type.resource && (ns.empty() || object_ns == ns) &&
           matches(labels, object["metadata"].value("labels", json())) &&
           matches(fields, json{{"metadata.name", name}, {"metadata.namespace", object_ns}});
  };
  auto line = [&](const char* event, const json& object) {
    out += json{{"type", event}, {"object", for_client(type, object)}}.dump() + "\n";
  };
  if (initial) {
    for (const auto& [key, object] : objects_) {
      if (wanted(key, object)) line("ADDED", object);
    }
    *cursor = revision_;
    return out;
  }
  if (*cursor < events_since_) {
    *expired = true;
    json status = status_failure(410, "Expired",
                                 "too old resource version: " + std::to_string(*cursor) + " (" +
                                     std::to_string(events_since_) + ")")
                      .body;
    return json{{"type", "ERROR"}, {"object", status}}.dump() + "\n";
  }
  for (const auto& e : events_) {
    if (e.revision > *cursor && wanted(e.key, e.object)) line(e.type, e.object);
  }
  *cursor = revision_;
  return out;
}

}  // namespace canopy::kubeapi
