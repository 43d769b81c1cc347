#include "api/rest.h"

#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <charconv>
#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "api/grpc_status.h"
#include "api/http_server.h"
#include "api/objects.h"
#include "api/openapi_json.h"
#include "api/rest_routes.h"
#include "api/yaml.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;
using httplib::Request;
using httplib::Response;

using rest_routes::check_params;
using rest_routes::param;
using rest_routes::query_of;
using rest_routes::reply_invalid;
using rest_routes::reply_status;

constexpr const char* kNdjson = "application/x-ndjson";

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

json error_json(const grpc::Status& status) {
  return {
      {"error", {{"code", code_name(status.error_code())}, {"message", status.error_message()}}}};
}

}  // namespace

namespace rest_routes {

void reply_status(Response& res, const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    res.set_header("WWW-Authenticate", "Bearer");
  }
  reply_json(res, error_json(status).dump(), http_status_of(status.error_code()));
}

void reply_invalid(Response& res, const std::string& message) {
  reply_status(res, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message));
}

httplib::Params query_of(const Request& req) {
  httplib::Params out;
  const size_t q = req.target.find('?');
  if (q != std::string::npos) httplib::detail::parse_query_text(req.target.substr(q + 1), out);
  return out;
}

std::string param(const httplib::Params& params, const std::string& name) {
  auto it = params.find(name);
  return it == params.end() ? std::string() : it->second;
}

bool check_params(const Request& req, Response& res,
                  std::initializer_list<std::string_view> allowed) {
  const httplib::Params params = query_of(req);
  for (const auto& [name, value] : params) {
    bool known = false;
    for (std::string_view a : allowed) known = known || name == a;
    if (!known) {
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      reply_invalid(res,
                    std::string("query parameter ") + quote(name) + " is not known here" +
                        (list.empty() ? std::string(" (none are)") : " (known: " + list + ")"));
      return false;
    }
    if (params.count(name) > 1) {
      reply_invalid(res,
                    std::string("query parameter ") + quote(name) + " is given more than once");
      return false;
    }
  }
  return true;
}

}  // namespace rest_routes

namespace {

json object_json(const v1::Object& o) {
  json out = {{"kind", o.kind()},
              {"tenant", o.tenant()},
              {"name", o.name()},
              {"version", std::to_string(o.version())}};
  if (!o.site().empty()) out["site"] = o.site();
  if (!o.json().empty()) out["document"] = json::parse(o.json(), nullptr, false);
  return out;
}

// object_json(o).dump() without parsing the document again: the service
// answers documents in their canonical text (nlohmann's dump()), which is
// what a parse and dump would write, so it is spliced in as it is.
std::string object_text(const v1::Object& o) {
  if (o.json().empty() || !o.site().empty()) return object_json(o).dump();
  std::string out;
  out.reserve(o.json().size() + o.kind().size() + o.tenant().size() + o.name().size() + 80);
  out += R"({"document":)";
  out += o.json();
  out += R"(,"kind":)";
  out += json(o.kind()).dump();
  out += R"(,"name":)";
  out += json(o.name()).dump();
  out += R"(,"tenant":)";
  out += json(o.tenant()).dump();
  out += R"(,"version":")";
  out += std::to_string(o.version());
  out += "\"}";
  return out;
}

bool parse_u64(std::string_view text, uint64_t* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

// `?limit=` as a page size (0 when absent: the service's default), or false
// after answering 400.
bool page_limit(const httplib::Params& q, Response& res, uint32_t* limit) {
  *limit = 0;
  if (!q.contains("limit")) return true;
  uint64_t n = 0;
  if (!parse_u64(param(q, "limit"), &n) || n == 0 || n > kMaxPageSize) {
    reply_invalid(res, std::string("limit ") + quote(param(q, "limit")) +
                           " is not a number from 1 to " + std::to_string(kMaxPageSize));
    return false;
  }
  *limit = static_cast<uint32_t>(n);
  return true;
}

// `If-Match: "<version>"` (quotes and a weak W/ prefix allowed). 0 when absent.
bool if_match(const Request& req, Response& res, uint64_t* version) {
  *version = 0;
  if (!req.has_header("If-Match")) return true;
  const std::string header = req.get_header_value("If-Match");
  std::string_view v = header;
  if (v.starts_with("W/")) v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (!parse_u64(v, version) || *version == 0) {
    reply_invalid(res,
                  std::string("If-Match ") + quote(header) + " is not a version this hub returned");
    return false;
  }
  return true;
}

// `"<version>"`. (Built by appending: GCC 12 at -O3 warns falsely about
// `"literal" + std::string&&`.)
std::string etag(uint64_t version) {
  std::string out = "\"";
  out += std::to_string(version);
  out += '"';
  return out;
}

std::string_view singular(std::string_view plural) {
  return plural.substr(0, plural.size() - 1);  // templates -> template, ...
}

}  // namespace

int http_status_of(grpc::StatusCode code) {
  // The store's codes are gRPC's (api/grpc_status.cc checks each).
  return http_status(static_cast<StatusCode>(code));
}

void add_rest_routes(httplib::Server& server, std::function<CatalogService*()> catalog_of,
                     RestOptions options) {
  const size_t threads = options.max_watches + 16;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_payload_max_length(options.max_body_bytes);
  // Small request and response bodies: without TCP_NODELAY, Nagle's
  // algorithm and the peer's delayed ACK add ~40 ms to a keep-alive request.
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(10'000);
  auto watches = std::make_shared<std::atomic<size_t>>(0);

  auto with = [catalog_of](auto handler) { return rest_routes::with(catalog_of, handler); };

  server.Get("/openapi.json", [](const Request&, Response& res) {
    res.set_content(std::string(kOpenApiJson), "application/json");
  });

  // --- Objects: get, put, delete, list.
  auto get_object = [](CatalogService* c, const std::string& auth, std::string_view kind,
                       const std::string& tenant, const std::string& name, const Request& req,
                       Response& res, const std::string& site = "") {
    if (!check_params(req, res, {})) return;
    v1::GetRequest r;
    r.set_site(site);
    r.set_kind(std::string(kind));
    r.set_tenant(tenant);
    r.set_name(name);
    v1::GetResponse out;
    if (auto st = c->get(auth, r, &out); !st.ok()) return reply_status(res, st);
    res.set_header("ETag", etag(out.object().version()));
    reply_json(res, object_text(out.object()));
  };
  auto put_object = [](CatalogService* c, const std::string& auth, std::string_view kind,
                       const std::string& tenant, const std::string& name, const Request& req,
                       Response& res, const std::string& site = "") {
    if (!check_params(req, res, {})) return;
    const std::string type = req.get_header_value("Content-Type");
    // YAML bodies are converted by the CLI's own conversion (api/yaml.h);
    // the document is then checked as if it had come as JSON.
    const bool yaml = type.starts_with("application/yaml") || type.starts_with("text/yaml") ||
                      type.starts_with("application/x-yaml");
    if (!type.empty() && !yaml && type.find("json") == std::string::npos &&
        !type.starts_with("application/x-www-form-urlencoded")) {
      return reply_status(res, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                            std::string("Content-Type ") + quote(type) +
                                                " is neither JSON nor YAML"));
    }
    v1::PutRequest r;
    v1::Object* o = r.mutable_object();
    o->set_site(site);
    o->set_kind(std::string(kind));
    o->set_tenant(tenant);
    o->set_name(name);
    if (yaml) {
      auto doc = parse_yaml_document(req.body);
      if (!doc.ok()) return reply_status(res, to_grpc(doc.status()));
      o->set_json(doc->dump());
    } else {
      o->set_json(req.body);
    }
    uint64_t version = 0;
    if (!if_match(req, res, &version)) return;
    o->set_version(version);
    v1::PutResponse out;
    if (auto st = c->put(auth, r, &out); !st.ok()) return reply_status(res, st);
    res.set_header("ETag", etag(out.object().version()));
    reply_json(res, object_text(out.object()));
  };
  auto delete_object = [](CatalogService* c, const std::string& auth, std::string_view kind,
                          const std::string& tenant, const std::string& name, const Request& req,
                          Response& res, const std::string& site = "") {
    if (!check_params(req, res, {})) return;
    v1::DeleteRequest r;
    r.set_site(site);
    r.set_kind(std::string(kind));
    r.set_tenant(tenant);
    r.set_name(name);
    uint64_t version = 0;
    if (!if_match(req, res, &version)) return;
    r.set_version(version);
    v1::DeleteResponse out;
    if (auto st = c->remove(auth, r, &out); !st.ok()) return reply_status(res, st);
    reply_json(res, object_json(out.object()).dump());
  };
  auto list_objects = [](CatalogService* c, const std::string& auth, std::string_view kind,
                         const std::string& tenant, const Request& req, Response& res,
                         const std::string& site = "") {
    if (!check_params(req, res, {"labelSelector", "limit", "continue"})) return;
    const httplib::Params q = query_of(req);
    v1::ListRequest r;
    r.set_site(site);
    r.set_kind(std::string(kind));
    r.set_tenant(tenant);
    r.set_label_selector(param(q, "labelSelector"));
    r.set_page_token(param(q, "continue"));
    uint32_t limit = 0;
    if (!page_limit(q, res, &limit)) return;
    r.set_page_size(limit);
    v1::ListResponse out;
    if (auto st = c->list(auth, r, &out); !st.ok()) return reply_status(res, st);
    json items = json::array();
    for (const auto& o : out.objects()) items.push_back(object_json(o));
    reply_json(res, json{{"items", std::move(items)}, {"continue", out.next_page_token()}}.dump());
  };

  const std::string kinds = "(templates|placements|overrides|grants)";
  const std::string name = rest_routes::kName;
  server.Get("/v1/tenants/" + name + "/" + kinds + "/" + name,
             with([get_object](CatalogService* c, const std::string& auth, const Request& req,
                               Response& res) {
               get_object(c, auth, singular(req.matches[2].str()), req.matches[1], req.matches[3],
                          req, res);
             }));
  server.Put("/v1/tenants/" + name + "/" + kinds + "/" + name,
             with([put_object](CatalogService* c, const std::string& auth, const Request& req,
                               Response& res) {
               put_object(c, auth, singular(req.matches[2].str()), req.matches[1], req.matches[3],
                          req, res);
             }));
  server.Delete("/v1/tenants/" + name + "/" + kinds + "/" + name,
                with([delete_object](CatalogService* c, const std::string& auth, const Request& req,
                                     Response& res) {
                  delete_object(c, auth, singular(req.matches[2].str()), req.matches[1],
                                req.matches[3], req, res);
                }));
  server.Get("/v1/tenants/" + name + "/" + kinds,
             with([list_objects](CatalogService* c, const std::string& auth, const Request& req,
                                 Response& res) {
               list_objects(c, auth, singular(req.matches[2].str()), req.matches[1], req, res);
             }));
  // Devices: /v1/tenants/<tenant>/sites/<site>/devices[/<device>].
  const std::string devices = "/v1/tenants/" + name + "/sites/" + name + "/devices";
  server.Get(devices + "/" + name, with([get_object](CatalogService* c, const std::string& auth,
                                                     const Request& req, Response& res) {
               get_object(c, auth, kDevice, req.matches[1], req.matches[3], req, res,
                          req.matches[2]);
             }));
  server.Put(devices + "/" + name, with([put_object](CatalogService* c, const std::string& auth,
                                                     const Request& req, Response& res) {
               put_object(c, auth, kDevice, req.matches[1], req.matches[3], req, res,
                          req.matches[2]);
             }));
  server.Delete(
      devices + "/" + name, with([delete_object](CatalogService* c, const std::string& auth,
                                                 const Request& req, Response& res) {
        delete_object(c, auth, kDevice, req.matches[1], req.matches[3], req, res, req.matches[2]);
      }));
  server.Get(devices + "/" + name + "/twin", with([](CatalogService* c, const std::string& auth,
                                                     const Request& req, Response& res) {
               if (!check_params(req, res, {})) return;
               json twin;
               if (auto st = c->get_twin(auth, req.matches[1].str(), req.matches[2].str(),
                                         req.matches[3].str(), &twin);
                   !st.ok()) {
                 return reply_status(res, st);
               }
               reply_json(res, twin.dump());
             }));
  server.Get(devices, with([list_objects](CatalogService* c, const std::string& auth,
                                          const Request& req, Response& res) {
               list_objects(c, auth, kDevice, req.matches[1], req, res, req.matches[2]);
             }));
  server.Get("/v1/tenants", with([list_objects](CatalogService* c, const std::string& auth,
                                                const Request& req, Response& res) {
               list_objects(c, auth, kTenantKind, "", req, res);
             }));
  server.Get("/v1/tenants/" + name, with([get_object](CatalogService* c, const std::string& auth,
                                                      const Request& req, Response& res) {
               get_object(c, auth, kTenantKind, "", req.matches[1], req, res);
             }));
  server.Put("/v1/tenants/" + name, with([put_object](CatalogService* c, const std::string& auth,
                                                      const Request& req, Response& res) {
               put_object(c, auth, kTenantKind, "", req.matches[1], req, res);
             }));
  server.Delete("/v1/tenants/" + name,
                with([delete_object](CatalogService* c, const std::string& auth, const Request& req,
                                     Response& res) {
                  delete_object(c, auth, kTenantKind, "", req.matches[1], req, res);
                }));
  server.Get("/v1/sites",
             with([list_objects](CatalogService* c, const std::string& auth, const Request& req,
                                 Response& res) { list_objects(c, auth, kSite, "", req, res); }));
  server.Get("/v1/sites/" + name, with([get_object](CatalogService* c, const std::string& auth,
                                                    const Request& req, Response& res) {
               get_object(c, auth, kSite, "", req.matches[1], req, res);
             }));
  server.Put("/v1/sites/" + name, with([put_object](CatalogService* c, const std::string& auth,
                                                    const Request& req, Response& res) {
               put_object(c, auth, kSite, "", req.matches[1], req, res);
             }));
  server.Delete("/v1/sites/" + name,
                with([delete_object](CatalogService* c, const std::string& auth, const Request& req,
                                     Response& res) {
                  delete_object(c, auth, kSite, "", req.matches[1], req, res);
                }));

  // --- Status.
  server.Get(
      "/v1/tenants/" + name + "/placements/" + name + "/status",
      with([](CatalogService* c, const std::string& auth, const Request& req, Response& res) {
        if (!check_params(req, res, {"limit", "continue"})) return;
        const httplib::Params q = query_of(req);
        v1::GetStatusRequest r;
        r.set_tenant(req.matches[1]);
        r.set_placement(req.matches[2]);
        r.set_page_token(param(q, "continue"));
        uint32_t limit = 0;
        if (!page_limit(q, res, &limit)) return;
        r.set_page_size(limit);
        v1::GetStatusResponse out;
        if (auto st = c->get_status(auth, r, &out); !st.ok()) return reply_status(res, st);
        std::string text;
        google::protobuf::util::JsonPrintOptions print;
        print.always_print_primitive_fields = true;
        (void)google::protobuf::util::MessageToJsonString(out, &text, print);
        reply_json(res, text);
      }));

  // --- Rollouts: pause and resume, at the version read (a concurrent edit
  // of the placement answers 409 and changes nothing). `curl -X POST` sends
  // no Content-Length, which httplib refuses (400, no body) before routing
  // unless the route reads the content itself: these take no body, so they
  // take it as a content reader and ignore it.
  for (const bool paused : {true, false}) {
    auto handler = with(
        [paused](CatalogService* c, const std::string& auth, const Request& req, Response& res) {
          if (!check_params(req, res, {})) return;
          v1::GetRequest g;
          g.set_kind(std::string(kPlacement));
          g.set_tenant(req.matches[1]);
          g.set_name(req.matches[2]);
          v1::GetResponse got;
          if (auto st = c->get(auth, g, &got); !st.ok()) return reply_status(res, st);
          auto doc = with_rollout_paused(json::parse(got.object().json(), nullptr, false), paused);
          if (!doc.ok()) return reply_status(res, to_grpc(doc.status()));
          v1::PutRequest p;
          *p.mutable_object() = got.object();
          p.mutable_object()->set_json(doc->dump());
          v1::PutResponse out;
          if (auto st = c->put(auth, p, &out); !st.ok()) return reply_status(res, st);
          res.set_header("ETag", etag(out.object().version()));
          reply_json(res, object_json(out.object()).dump());
        });
    server.Post("/v1/tenants/" + name + "/placements/([^/:]+):" + (paused ? "pause" : "resume"),
                [handler](const Request& req, Response& res, const httplib::ContentReader&) {
                  handler(req, res);
                });
  }

  // --- Render and conflicts.
  server.Get(
      "/v1/tenants/" + name + "/render",
      with([](CatalogService* c, const std::string& auth, const Request& req, Response& res) {
        if (!check_params(req, res, {"site", "placement"})) return;
        const httplib::Params q = query_of(req);
        v1::RenderRequest r;
        r.set_tenant(req.matches[1]);
        r.set_site(param(q, "site"));
        r.set_placement(param(q, "placement"));
        v1::RenderResponse out;
        if (auto st = c->render(auth, r, &out); !st.ok()) return reply_status(res, st);
        json manifests = json::array();
        for (const auto& m : out.manifests()) {
          manifests.push_back({{"template", m.template_()},
                               {"file", m.file()},
                               {"hash", m.hash()},
                               {"manifest", json::parse(m.json(), nullptr, false)}});
        }
        json failures = json::array();
        for (const auto& f : out.failures()) {
          failures.push_back({{"template", f.template_()}, {"error", f.error()}});
        }
        reply_json(
            res,
            json{{"manifests", std::move(manifests)}, {"failures", std::move(failures)}}.dump());
      }));
  server.Get(
      "/v1/tenants/" + name + "/conflicts",
      with([](CatalogService* c, const std::string& auth, const Request& req, Response& res) {
        if (!check_params(req, res, {"kind", "name", "limit", "continue"})) return;
        const httplib::Params q = query_of(req);
        v1::ListConflictsRequest r;
        r.set_tenant(req.matches[1]);
        r.set_kind(param(q, "kind"));
        r.set_name(param(q, "name"));
        r.set_page_token(param(q, "continue"));
        uint32_t limit = 0;
        if (!page_limit(q, res, &limit)) return;
        r.set_page_size(limit);
        v1::ListConflictsResponse out;
        if (auto st = c->list_conflicts(auth, r, &out); !st.ok()) return reply_status(res, st);
        json items = json::array();
        for (const auto& k : out.conflicts()) {
          json item = {{"kind", k.kind()},
                       {"name", k.name()},
                       {"path", k.path()},
                       {"reason", k.reason()},
                       {"lost", {{"writer", k.lost_writer()}, {"atMs", k.lost_at_ms()}}},
                       {"won", {{"writer", k.won_writer()}, {"atMs", k.won_at_ms()}}}};
          if (k.lost_removed()) {
            item["lost"]["removed"] = true;
          } else {
            item["lost"]["value"] = json::parse(k.lost_json(), nullptr, false);
          }
          item["current"] =
              k.current_json().empty() ? json() : json::parse(k.current_json(), nullptr, false);
          items.push_back(std::move(item));
        }
        reply_json(res,
                   json{{"items", std::move(items)}, {"continue", out.next_page_token()}}.dump());
      }));

  rest_routes::add_access_routes(server, catalog_of);

  // --- Watch.
  server.Get("/v1/watch",
             with([watches, limit = options.max_watches](CatalogService* c, const std::string& auth,
                                                         const Request& req, Response& res) {
               if (!check_params(req, res, {"kind", "tenant", "from", "site", "metadataOnly"})) {
                 return;
               }
               v1::WatchRequest r;
               const httplib::Params q = query_of(req);
               r.set_kind(param(q, "kind"));
               r.set_tenant(param(q, "tenant"));
               r.set_from(param(q, "from"));
               r.set_site(param(q, "site"));
               const std::string metadata_only = param(q, "metadataOnly");
               if (metadata_only != "" && metadata_only != "true" && metadata_only != "false") {
                 return reply_invalid(
                     res, "metadataOnly " + quote(metadata_only) + " is not true or false");
               }
               r.set_metadata_only(metadata_only == "true");
               if (auto st = c->check_watch(auth, r); !st.ok()) return reply_status(res, st);
               if (watches->fetch_add(1) >= limit) {
                 watches->fetch_sub(1);
                 return reply_status(
                     res, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                       std::to_string(limit) +
                                           " REST watches are open; use gRPC or try later"));
               }
               res.set_chunked_content_provider(
                   kNdjson,
                   [c, auth, r, watches](size_t, httplib::DataSink& sink) {
                     auto write_line = [&sink](const json& j) {
                       const std::string line = j.dump() + "\n";
                       return sink.write(line.data(), line.size());
                     };
                     WatchSink ws;
                     ws.established = [&](const std::string& position) {
                       // Tells the client where it stands before any event.
                       write_line({{"type", "BOOKMARK"}, {"position", position}});
                     };
                     ws.send = [&sink](const v1::WatchEvent& e) {
                       // What write_line of the event as JSON writes, without
                       // parsing the document again (object_text).
                       std::string line = R"({"object":)";
                       line += object_text(e.object());
                       line += R"(,"position":)";
                       line += json(e.position()).dump();
                       line += e.type() == v1::WatchEvent::PUT ? R"(,"type":"PUT"})"
                                                               : R"(,"type":"DELETE"})";
                       line += '\n';
                       return sink.write(line.data(), line.size());
                     };
                     ws.cancelled = [&] { return sink.is_writable && !sink.is_writable(); };
                     std::string resume_from;
                     const grpc::Status st = c->watch(auth, r, ws, &resume_from);
                     if (!st.ok() && st.error_code() != grpc::StatusCode::CANCELLED) {
                       json line = error_json(st);
                       if (!resume_from.empty()) line["error"]["resume_from"] = resume_from;
                       write_line(line);
                     }
                     sink.done();
                     return true;
                   },
                   [watches](bool) { watches->fetch_sub(1); });
             }));
}

}  // namespace canopy::api
