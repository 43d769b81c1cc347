// REST routes for access (see rest.h): API tokens, site enrollment and
// certificate renewal. Each is an adapter over one CatalogService (or
// hub::Enrollment) operation.
#include <nlohmann/json.hpp>
#include <string>

#include "api/grpc_status.h"
#include "api/http_server.h"
#include "api/objects.h"
#include "api/rest_routes.h"

namespace canopy::api::rest_routes {
namespace {

using json = nlohmann::json;
using httplib::Request;
using httplib::Response;

// The hub's enrollment; null, with the answer made, when it has none.
hub::Enrollment* enrollment_or_reply(CatalogService* c, Response& res) {
  hub::Enrollment* enrollment = c->enrollment();
  if (enrollment == nullptr) {
    reply_status(res,
                 grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this hub does not enroll sites"));
  }
  return enrollment;
}

// An enrollment's answer: the identity (200), or, held for a fleet admin's
// approval, 202 with what the spoke polls with.
void reply_enrolled(Response& res, const hub::EnrolledSite& e) {
  if (e.pending) {
    json out = {{"site", e.site}, {"pending", true}, {"request", e.request_fingerprint}};
    if (!e.poll_secret.empty()) out["poll"] = e.poll_secret;
    return reply_json(res, out.dump(), 202);
  }
  json out = {{"site", e.site}, {"certificate", e.certificate_pem}, {"ca", e.ca_pem}};
  if (!e.nats_user.empty()) {
    out["nats"] = {
        {"user", e.nats_user}, {"password", e.nats_password}, {"leaf_user", e.nats_leaf_user}};
  }
  reply_json(res, out.dump());
}

}  // namespace

void add_access_routes(httplib::Server& server, const CatalogOf& catalog_of) {
  auto with = [&catalog_of](auto handler) { return rest_routes::with(catalog_of, handler); };
  const std::string name = kName;

  // --- Tokens.
  server.Get("/v1/tokens", with([](CatalogService* c, const std::string& auth, const Request& req,
                                   Response& res) {
               if (!check_params(req, res, {"tenant"})) return;
               v1::ListTokensRequest r;
               r.set_tenant(param(query_of(req), "tenant"));
               v1::ListTokensResponse out;
               if (auto st = c->list_tokens(auth, r, &out); !st.ok()) return reply_status(res, st);
               json items = json::array();
               for (const auto& t : out.tokens()) items.push_back(token_json(t));
               reply_json(res, json{{"items", std::move(items)}}.dump());
             }));
  server.Post(
      "/v1/tokens",
      with([](CatalogService* c, const std::string& auth, const Request& req, Response& res) {
        if (!check_params(req, res, {})) return;
        const json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object()) {
          return reply_invalid(res,
                               "the body must be a JSON object {\"role\", \"tenant\", "
                               "\"ttlSeconds\", \"description\"}");
        }
        v1::IssueTokenRequest r;
        for (const auto& [k, v] : body.items()) {
          if (k == "role" && v.is_string()) {
            r.set_role(v.get<std::string>());
          } else if (k == "tenant" && v.is_string()) {
            r.set_tenant(v.get<std::string>());
          } else if (k == "description" && v.is_string()) {
            r.set_description(v.get<std::string>());
          } else if (k == "ttlSeconds" && v.is_number_unsigned()) {
            r.set_ttl_seconds(v.get<uint64_t>());
          } else if (k == "role" || k == "tenant" || k == "description" || k == "ttlSeconds") {
            return reply_invalid(res, k + " has the wrong type (" + v.type_name() + ")");
          } else {
            return reply_invalid(res, k + " is not a field of a token request (role, "
                                          "tenant, ttlSeconds, description)");
          }
        }
        v1::IssueTokenResponse out;
        if (auto st = c->issue_token(auth, r, &out); !st.ok()) {
          return reply_status(res, st);
        }
        reply_json(res, json{{"token", token_json(out.token())}, {"bearer", out.bearer()}}.dump(),
                   201);
      }));
  server.Delete("/v1/tokens/" + name, with([](CatalogService* c, const std::string& auth,
                                              const Request& req, Response& res) {
                  if (!check_params(req, res, {})) return;
                  v1::RevokeTokenRequest r;
                  r.set_id(req.matches[1]);
                  v1::RevokeTokenResponse out;
                  if (auto st = c->revoke_token(auth, r, &out); !st.ok()) {
                    return reply_status(res, st);
                  }
                  reply_json(res, token_json(out.token()).dump());
                }));

  // --- Enrollment (docs/security.md).
  // A fleet admin's bootstrap token for a site, and cutting a site off.
  // Neither reads a body: a POST without one is answered.
  auto no_body = [](auto handler) {
    return [handler](const Request& req, Response& res, const httplib::ContentReader&) {
      handler(req, res);
    };
  };
  server.Post("/v1/sites/" + name + "/enrollment",
              no_body(with([](CatalogService* c, const std::string& auth, const Request& req,
                              Response& res) {
                if (!check_params(req, res, {"ttlSeconds"})) return;
                v1::EnrollSiteRequest r;
                r.set_site(req.matches[1]);
                const std::string ttl = param(query_of(req), "ttlSeconds");
                if (!ttl.empty()) {
                  if (ttl.size() > 9 || ttl.find_first_not_of("0123456789") != std::string::npos) {
                    return reply_invalid(res, "ttlSeconds must be a number of seconds");
                  }
                  r.set_ttl_seconds(std::stoull(ttl));
                }
                v1::EnrollSiteResponse out;
                if (auto st = c->enroll_site(auth, r, &out); !st.ok()) {
                  return reply_status(res, st);
                }
                reply_json(res,
                           json{{"site", out.site()},
                                {"token", out.token()},
                                {"expiresAtMs", out.expires_at_ms()},
                                {"caFingerprint", out.ca_fingerprint()}}
                               .dump(),
                           201);
              })));
  server.Post("/v1/sites/" + name + "/revoke",
              no_body(with([](CatalogService* c, const std::string& auth, const Request& req,
                              Response& res) {
                if (!check_params(req, res, {})) return;
                v1::RevokeSiteRequest r;
                r.set_site(req.matches[1]);
                v1::RevokeSiteResponse out;
                if (auto st = c->revoke_site(auth, r, &out); !st.ok()) {
                  return reply_status(res, st);
                }
                reply_json(res, json{{"site", out.site()}, {"revoked", true}}.dump());
              })));
  // Double opt-in: a fleet admin approves or denies a site waiting for it.
  for (const bool approve : {true, false}) {
    server.Post("/v1/sites/" + name + (approve ? "/approve" : "/deny"),
                no_body(with([approve](CatalogService* c, const std::string& auth,
                                       const Request& req, Response& res) {
                  if (!check_params(req, res, {})) return;
                  v1::DecideEnrollmentRequest r;
                  r.set_site(req.matches[1]);
                  r.set_approve(approve);
                  v1::DecideEnrollmentResponse out;
                  if (auto st = c->decide_enrollment(auth, r, &out); !st.ok()) {
                    return reply_status(res, st);
                  }
                  reply_json(res, json{{"site", out.site()}, {"state", out.state()}}.dump());
                })));
  }
  // Every enrolled or waiting site, with its certificate's expiry.
  server.Get(
      "/v1/enrollments",
      with([](CatalogService* c, const std::string& auth, const Request& req, Response& res) {
        if (!check_params(req, res, {})) return;
        v1::ListEnrollmentsResponse out;
        if (auto st = c->list_enrollments(auth, v1::ListEnrollmentsRequest(), &out); !st.ok()) {
          return reply_status(res, st);
        }
        json items = json::array();
        for (const auto& e : out.sites()) {
          json item = {{"site", e.site()}, {"state", e.state()}};
          if (!e.request_fingerprint().empty()) {
            item["requestFingerprint"] = e.request_fingerprint();
            item["requestedAtMs"] = e.requested_at_ms();
          }
          if (!e.cert_fingerprint().empty()) {
            item["certFingerprint"] = e.cert_fingerprint();
            item["certNotAfterMs"] = e.cert_not_after_ms();
            item["enrolledAtMs"] = e.enrolled_at_ms();
          }
          if (e.revoked_at_ms() != 0) item["revokedAtMs"] = e.revoked_at_ms();
          items.push_back(std::move(item));
        }
        reply_json(res, json{{"items", items}}.dump());
      }));
  // The hub's CA certificate (public): the spoke checks it against the
  // fingerprint it pinned before it sends its token.
  server.Get(
      "/v1/ca", with([](CatalogService* c, const std::string&, const Request&, Response& res) {
        if (c->enrollment() == nullptr) {
          return reply_status(
              res, grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this hub does not enroll sites"));
        }
        reply_json(res, json{{"ca", c->enrollment()->ca_pem()},
                             {"fingerprint", c->enrollment()->ca_fingerprint()}}
                            .dump());
      }));
  // The spoke's exchange: no bearer token; the bootstrap token in the body is
  // the credential (and is never logged).
  server.Post(
      "/v1/enroll",
      with([](CatalogService* c, const std::string&, const Request& req, Response& res) {
        if (!check_params(req, res, {})) return;
        hub::Enrollment* enrollment = enrollment_or_reply(c, res);
        if (enrollment == nullptr) return;
        const json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body.contains("token") ||
            !body["token"].is_string() || !body.contains("csr") || !body["csr"].is_string() ||
            body.size() != 2) {
          return reply_invalid(res,
                               "the body must be a JSON object {\"token\": \"canopy-enroll_...\", "
                               "\"csr\": \"<PEM certificate signing request>\"}");
        }
        auto enrolled =
            enrollment->enroll(body["token"].get<std::string>(), body["csr"].get<std::string>());
        if (!enrolled.ok()) return reply_status(res, to_grpc(enrolled.status()));
        reply_enrolled(res, *enrolled);
      }));
  // Double opt-in: the spoke asks whether a fleet admin decided; the poll
  // secret from its exchange is the credential (never logged).
  server.Post(
      "/v1/enroll/poll",
      with([](CatalogService* c, const std::string&, const Request& req, Response& res) {
        if (!check_params(req, res, {})) return;
        hub::Enrollment* enrollment = enrollment_or_reply(c, res);
        if (enrollment == nullptr) return;
        const json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || body.size() != 2 ||
            !body.contains("site") || !body["site"].is_string() || !body.contains("poll") ||
            !body["poll"].is_string()) {
          return reply_invalid(res,
                               "the body must be a JSON object {\"site\": \"<site>\", \"poll\": "
                               "\"<the poll secret of the enrollment's answer>\"}");
        }
        auto enrolled =
            enrollment->poll(body["site"].get<std::string>(), body["poll"].get<std::string>());
        if (!enrolled.ok()) return reply_status(res, to_grpc(enrolled.status()));
        reply_enrolled(res, *enrolled);
      }));

  // Rotation before expiry (docs/security.md): no bearer token; the site's
  // current certificate and a signature over the CSR with its key are the
  // credential.
  server.Post(
      "/v1/renew",
      with([](CatalogService* c, const std::string&, const Request& req, Response& res) {
        if (!check_params(req, res, {})) return;
        hub::Enrollment* enrollment = enrollment_or_reply(c, res);
        if (enrollment == nullptr) return;
        const json body = json::parse(req.body, nullptr, false);
        auto is_string = [&body](const char* k) { return body.contains(k) && body[k].is_string(); };
        if (body.is_discarded() || !body.is_object() || body.size() != 3 ||
            !is_string("certificate") || !is_string("csr") || !is_string("signature")) {
          return reply_invalid(res,
                               "the body must be a JSON object {\"certificate\": \"<current PEM "
                               "certificate>\", \"csr\": \"<PEM CSR>\", \"signature\": \"<hex "
                               "signature of the CSR with the current key>\"}");
        }
        auto renewed =
            enrollment->renew(body["certificate"].get<std::string>(),
                              body["csr"].get<std::string>(), body["signature"].get<std::string>());
        if (!renewed.ok()) return reply_status(res, to_grpc(renewed.status()));
        reply_json(res, json{{"site", renewed->site},
                             {"certificate", renewed->certificate_pem},
                             {"ca", renewed->ca_pem}}
                            .dump());
      }));
}

}  // namespace canopy::api::rest_routes
