#include "tests/kubeapi/api_handler.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <regex>
#include <sstream>
#include <vector>

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

constexpr int kMaxYamlDepth = 64;

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream in(path);
  std::string seg;
  while (std::getline(in, seg, '/')) {
    if (!seg.empty()) out.push_back(seg);
  }
  return out;
}

std::string media_type(const std::string& content_type) {
  std::string m = content_type.substr(0, content_type.find(';'));
  m.erase(std::remove_if(m.begin(), m.end(), [](unsigned char c) { return std::isspace(c); }),
          m.end());
  std::transform(m.begin(), m.end(), m.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return m;
}

std::string param(const ApiRequest& r, const std::string& key) {
  auto it = r.query.find(key);
  return it == r.query.end() ? "" : it->second;
}

bool truthy(const std::string& v) { return v == "true" || v == "1"; }

json plain_scalar(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted
  static const std::regex kInt("[-+]?[0-9]+");
  static const std::regex kFloat("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (std::regex_match(s, kInt)) {
    try {
      return std::stoll(s);
    } catch (const std::out_of_range&) {
      return s;
    }
  }
  if (std::regex_match(s, kFloat)) return std::stod(s);
  return s;
}

StatusOr<json> yaml_to_json(const YAML::Node& node, int depth) {
  if (depth > kMaxYamlDepth) return invalid_argument("YAML nested deeper than 64 levels");
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return json(nullptr);
    case YAML::NodeType::Scalar:
      return plain_scalar(node);
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) {
        auto v = yaml_to_json(item, depth + 1);
        if (!v.ok()) return v;
        out.push_back(*v);
      }
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) return invalid_argument("a mapping key is not a scalar");
        auto v = yaml_to_json(kv.second, depth + 1);
        if (!v.ok()) return v;
        out[kv.first.Scalar()] = *v;
      }
      return out;
    }
  }
  return json(nullptr);
}

ApiResponse ok_json(json body) { return ApiResponse{200, std::move(body), "", {}, nullptr}; }

}  // namespace

StatusOr<json> parse_yaml_or_json(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_discarded()) return j;
  try {
    return yaml_to_json(YAML::Load(text), 0);
  } catch (const YAML::Exception& e) {
    return invalid_argument(e.what());
  }
}

ApiHandler::ApiHandler(ApiHandlerOptions options)
    : deployment_controller_(options.deployment_controller),
      store_(&registry_, options.clock, options.crd_establish_delay, options.seed) {}

ApiResponse ApiHandler::handle(const ApiRequest& request) {
  ApiResponse out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    store_.tick();
    out = handle_locked(request);
    if (deployment_controller_) run_deployment_controller(request, out);
  }
  changed_.notify_all();
  return out;
}

// Stands for the deployment controller of a cluster at rest: once a
// Deployment's spec is written, it reports every replica updated, ready and
// available at the new generation (what kube-controller-manager writes once
// the pods run), as a separate status write after the client's.
void ApiHandler::run_deployment_controller(const ApiRequest& request, const ApiResponse& out) {
  if (out.code != 200 && out.code != 201) return;
  if (request.method != "POST" && request.method != "PUT" && request.method != "PATCH") return;
  if (!out.body.is_object() || out.body.value("kind", "") != "Deployment") return;
  if (request.path.size() >= 7 &&
      request.path.compare(request.path.size() - 7, 7, "/status") == 0) {
    return;
  }
  const json& meta = out.body["metadata"];
  const int64_t replicas = out.body.contains("spec") && out.body["spec"].contains("replicas") &&
                                   out.body["spec"]["replicas"].is_number_integer()
                               ? out.body["spec"]["replicas"].get<int64_t>()
                               : 1;
  const json status = {{"observedGeneration", meta.value("generation", int64_t{1})},
                       {"replicas", replicas},
                       {"updatedReplicas", replicas},
                       {"readyReplicas", replicas},
                       {"availableReplicas", replicas}};
  store_.set_status("apps", "deployments", meta.value("namespace", ""), meta.value("name", ""),
                    status);
}

std::optional<std::string> ApiHandler::poll_watch(WatchStream& w, std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mu_);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (w.ended || std::chrono::steady_clock::now() >= w.deadline) return std::nullopt;
    store_.tick();
    std::string events =
        store_.watch_events(w.type, w.ns, w.labels, w.fields, w.initial, &w.cursor, &w.ended);
    w.initial = false;
    if (!events.empty() || attempt == 1) return events;
    changed_.wait_for(lock, wait);
  }
  return std::string();
}

std::optional<json> ApiHandler::object(const std::string& group, const std::string& resource,
                                       const std::string& ns, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  store_.tick();
  return store_.find(group, resource, ns, name);
}

bool ApiHandler::set_status(const std::string& group, const std::string& resource,
                            const std::string& ns, const std::string& name, const json& status) {
  bool ok;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ok = store_.set_status(group, resource, ns, name, status);
  }
  changed_.notify_all();
  return ok;
}

int64_t ApiHandler::resource_version() {
  std::lock_guard<std::mutex> lock(mu_);
  return store_.resource_version();
}

ApiResponse ApiHandler::handle_locked(const ApiRequest& r) {
  std::vector<std::string> seg = split_path(r.path);
  auto text_404 = [] { return ApiResponse{404, nullptr, "404 page not found\n", {}, nullptr}; };
  if (seg.empty()) return text_404();
  bool read = r.method == "GET";
  if (seg[0] == "healthz" || seg[0] == "readyz" || seg[0] == "livez") {
    return ApiResponse{200, nullptr, "ok", {}, nullptr};
  }
  if (seg[0] == "version" && seg.size() == 1 && read) return ok_json(registry_.version_document());
  if (seg[0] == "openapi" && read) {
    if (seg.size() == 2 && seg[1] == "v3") return ok_json(registry_.openapi_v3_root());
    std::optional<json> doc;
    if (seg.size() == 4 && seg[1] == "v3" && seg[2] == "api")
      doc = registry_.openapi_v3("", seg[3]);
    if (seg.size() == 5 && seg[1] == "v3" && seg[2] == "apis") {
      doc = registry_.openapi_v3(seg[3], seg[4]);
    }
    if (doc) return ok_json(*doc);
    return text_404();
  }
  if (seg[0] == "api") {
    if (seg.size() == 1)
      return read ? ok_json(registry_.core_versions()) : method_not_allowed(r.method);
    if (seg.size() == 2 && read) {
      auto list = registry_.resource_list("", seg[1]);
      return list ? ok_json(*list) : resource_not_served();
    }
    std::string prefix = "/api/" + seg[1];
    return handle_resource(r, "", seg[1], r.path.substr(prefix.size()));
  }
  if (seg[0] == "apis") {
    if (seg.size() == 1)
      return read ? ok_json(registry_.group_list()) : method_not_allowed(r.method);
    if (seg.size() == 2 && read) {
      auto group = registry_.group(seg[1]);
      return group ? ok_json(*group) : resource_not_served();
    }
    if (seg.size() == 3 && read) {
      auto list = registry_.resource_list(seg[1], seg[2]);
      return list ? ok_json(*list) : resource_not_served();
    }
    if (seg.size() < 3) return resource_not_served();
    std::string prefix = "/apis/" + seg[1] + "/" + seg[2];
    return handle_resource(r, seg[1], seg[2], r.path.substr(prefix.size()));
  }
  return text_404();
}

ApiResponse ApiHandler::watch(const ResourceType& type, const std::string& ns,
                              const Selector& labels, const Selector& fields, const ApiRequest& r) {
  auto w = std::make_shared<WatchStream>();
  w->type = type;
  w->ns = ns;
  w->labels = labels;
  w->fields = fields;
  std::string rv = param(r, "resourceVersion");
  if (!rv.empty() && rv != "0") {
    char* end = nullptr;
    long long v = std::strtoll(rv.c_str(), &end, 10);
    if (end == rv.c_str() || *end != '\0' || v < 0) {
      return bad_request("invalid resource version: " + rv);
    }
    w->initial = false;
    w->cursor = v;
  }
  int seconds = kMaxWatchSeconds;
  std::string timeout = param(r, "timeoutSeconds");
  if (!timeout.empty()) seconds = std::clamp(std::atoi(timeout.c_str()), 0, kMaxWatchSeconds);
  w->deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  ApiResponse out;
  out.watch = std::move(w);
  return out;
}

ApiResponse ApiHandler::handle_resource(const ApiRequest& r, const std::string& group,
                                        const std::string& version, const std::string& rest) {
  std::vector<std::string> seg = split_path(rest);
  std::string ns;
  bool namespace_subresource =
      seg.size() == 3 && seg[0] == "namespaces" && (seg[2] == "status" || seg[2] == "finalize");
  if (seg.size() >= 3 && seg[0] == "namespaces" && !namespace_subresource) {
    ns = seg[1];
    seg.erase(seg.begin(), seg.begin() + 2);
  }
  if (seg.empty() || seg.size() > 3) return resource_not_served();
  const ResourceType* type = registry_.find(group, version, seg[0]);
  if (type == nullptr) return resource_not_served();
  if (!type->namespaced && !ns.empty()) return resource_not_served();
  std::string name = seg.size() >= 2 ? seg[1] : "";
  bool status_only = seg.size() == 3;
  if (status_only && (seg[2] != "status" || !type->status_subresource)) {
    return resource_not_served();
  }
  if (type->namespaced && ns.empty() && !(name.empty() && r.method == "GET")) {
    return resource_not_served();
  }
  if (!param(r, "dryRun").empty()) return bad_request("dryRun is not supported by this server");

  WriteRequest w;
  w.ns = ns;
  w.name = name;
  w.status_only = status_only;
  w.manager = param(r, "fieldManager");
  if (w.manager.empty()) w.manager = r.user_agent.substr(0, r.user_agent.find('/'));
  w.force = truthy(param(r, "force"));

  if (r.method == "GET") {
    if (!name.empty()) return store_.get(*type, ns, name);
    auto labels = parse_label_selector(param(r, "labelSelector"));
    if (!labels.ok())
      return bad_request("unable to parse requirement: " + labels.status().message());
    auto fields = parse_field_selector(param(r, "fieldSelector"));
    if (!fields.ok()) return bad_request(fields.status().message());
    if (truthy(param(r, "watch"))) return watch(*type, ns, *labels, *fields, r);
    size_t limit = 0;
    if (const std::string l = param(r, "limit"); !l.empty()) {
      // The real server ignores a limit of 0 or less, and refuses one that
      // is not a number.
      char* end = nullptr;
      const long long n = std::strtoll(l.c_str(), &end, 10);
      if (end == l.c_str() || *end != '\0') {
        return bad_request("limit: Invalid value: \"" + l + "\": not an integer");
      }
      if (n > 0) limit = static_cast<size_t>(n);
    }
    return store_.list(*type, ns, *labels, *fields, limit, param(r, "continue"));
  }
  if (r.method == "DELETE") {
    if (name.empty() || status_only) return method_not_allowed(r.method);
    return store_.remove(*type, ns, name);
  }
  bool collection = name.empty();
  if ((r.method == "POST") != collection) return method_not_allowed(r.method);
  std::string media = media_type(r.content_type);
  if (r.method == "POST" || r.method == "PUT") {
    if (media != "application/json" && media != "application/yaml") {
      // kube-apiserver also takes protobuf; this fake does not, and says so.
      return unsupported_media_type(r.content_type, {"application/json", "application/yaml"});
    }
    auto body = parse_yaml_or_json(r.body);
    if (!body.ok() ||
        (media == "application/json" && json::parse(r.body, nullptr, false).is_discarded())) {
      return bad_request("couldn't get version/kind; json parse error: " +
                         (body.ok() ? std::string("invalid JSON") : body.status().message()));
    }
    w.body = *body;
    return r.method == "POST" ? store_.create(*type, w) : store_.update(*type, w);
  }
  if (r.method != "PATCH") return method_not_allowed(r.method);
  if (media == "application/apply-patch+yaml") {
    auto body = parse_yaml_or_json(r.body);
    if (!body.ok()) return bad_request("error decoding YAML: " + body.status().message());
    if (param(r, "fieldManager").empty()) {
      return bad_request("PATCH " + r.path + ": fieldManager is required for apply requests");
    }
    w.body = *body;
    return store_.apply(*type, w);
  }
  if (media == "application/merge-patch+json" ||
      media == "application/strategic-merge-patch+json") {
    json body = json::parse(r.body, nullptr, false);
    if (body.is_discarded()) return bad_request("error decoding patch: invalid JSON");
    w.body = body;
    return store_.merge_patch(*type, w);
  }
  return unsupported_media_type(
      r.content_type, {"application/merge-patch+json", "application/strategic-merge-patch+json",
                       "application/apply-patch+yaml"});
}

}  // namespace canopy::kubeapi
