// The Catalog service's identity operations (see catalog_service.h): API
// tokens (issue, list, revoke) and site enrollment (enroll, revoke, list,
// decide).
#include <spdlog/spdlog.h>

#include <string>
#include <utility>

#include "api/catalog_service.h"
#include "api/grpc_status.h"
#include "model/access.h"
#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::api {
namespace {

void token_info(const model::TokenRecord& r, v1::TokenInfo* out) {
  out->set_id(r.id);
  out->set_role(std::string(model::role_name(r.role)));
  out->set_tenant(r.tenant);
  out->set_created_at_ms(r.created_at_ms);
  out->set_expires_at_ms(r.expires_at_ms);
  out->set_revoked(r.revoked);
  out->set_description(r.description);
}

}  // namespace

// --- Tokens.

grpc::Status CatalogService::issue_token(std::string_view authorization,
                                         const v1::IssueTokenRequest& request,
                                         v1::IssueTokenResponse* response) {
  auto who = auth_->authenticate(authorization);
  if (!who.ok()) return to_grpc(who.status());
  auto role = model::parse_role(request.role());
  if (!role.ok()) return to_grpc(Status(role.status().code(), "role: " + role.status().message()));
  if (*role == model::Role::kFleetAdmin) {
    if (!request.tenant().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "tenant must be empty for a fleet-admin token");
    }
  } else if (Status st = check_label("tenant", request.tenant()); !st.ok()) {
    return to_grpc(st);
  }
  const bool own_tenant = who->role == model::Role::kFleetAdmin || who->tenant == request.tenant();
  if (!model::may_issue(who->role, *role) || !own_tenant) {
    const std::string holder = model::holder_text(who->role, who->tenant);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "token " + who->id + " (" + holder + ") may not issue a " + request.role() +
                            " token" +
                            (request.tenant().empty() ? "" : " of tenant " + request.tenant()));
  }
  if (!request.tenant().empty()) {
    v1::Object tenant;
    auto found = read_object(model::tenant_key(request.tenant()), &tenant);
    if (!found.ok()) return to_grpc(found.status());
    if (!*found) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "tenant " + quote(request.tenant()) + " does not exist; create it first");
    }
  }
  constexpr uint64_t kMaxTtlSeconds = 10ull * 365 * 24 * 3600;
  if (request.ttl_seconds() > kMaxTtlSeconds) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "ttl_seconds " + std::to_string(request.ttl_seconds()) +
                            " exceeds ten years; use 0 for a token that does not expire");
  }
  if (request.description().size() > 1024) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "description of " + std::to_string(request.description().size()) +
                            " bytes exceeds the limit of 1024");
  }
  TokenRequest wanted;
  wanted.role = *role;
  wanted.tenant = request.tenant();
  wanted.ttl_ms = request.ttl_seconds() * 1000;
  wanted.description = request.description();
  auto issued = auth_->issue(wanted);
  if (!issued.ok()) return to_grpc(issued.status());
  // The id only: never the bearer text.
  spdlog::info("catalog: token {} ({}) issued by token {}", issued->record.id, request.role(),
               who->id);
  token_info(issued->record, response->mutable_token());
  response->set_bearer(std::move(issued->bearer));
  return grpc::Status::OK;
}

grpc::Status CatalogService::list_tokens(std::string_view authorization,
                                         const v1::ListTokensRequest& request,
                                         v1::ListTokensResponse* response) {
  if (!request.tenant().empty()) {
    if (Status st = check_label("tenant", request.tenant()); !st.ok()) return to_grpc(st);
  }
  // A tenant's tokens need kManage on it; every token needs the fleet.
  auto who = authorize(
      authorization, request.tenant().empty() ? model::Action::kAdminister : model::Action::kManage,
      request.tenant());
  if (!who.ok()) return to_grpc(who.status());
  auto records = auth_->list(request.tenant());
  if (!records.ok()) return to_grpc(records.status());
  for (const auto& r : *records) token_info(r, response->add_tokens());
  return grpc::Status::OK;
}

grpc::Status CatalogService::revoke_token(std::string_view authorization,
                                          const v1::RevokeTokenRequest& request,
                                          v1::RevokeTokenResponse* response) {
  auto who = auth_->authenticate(authorization);
  if (!who.ok()) return to_grpc(who.status());
  if (request.id().size() != model::kTokenIdChars ||
      request.id().find_first_not_of("0123456789abcdef") != std::string::npos) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "id " + quote(request.id()) + " is not a token id (16 hex digits)");
  }
  auto target = auth_->find(request.id());
  // Whether a token exists is itself only for those who may revoke it.
  const bool exists = target.ok();
  if (!exists && target.status().code() != StatusCode::kNotFound) {
    return to_grpc(target.status());
  }
  const bool allowed =
      who->role == model::Role::kFleetAdmin ||
      (exists && who->tenant == target->tenant && model::may_issue(who->role, target->role));
  if (!allowed) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "token " + who->id + " may not revoke token " + request.id());
  }
  if (!exists) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "token " + request.id() + " not found");
  }
  if (Status st = auth_->revoke(request.id()); !st.ok()) return to_grpc(st);
  spdlog::info("catalog: token {} revoked by token {}", request.id(), who->id);
  target->revoked = true;
  token_info(*target, response->mutable_token());
  return grpc::Status::OK;
}

grpc::Status CatalogService::enroll_site(std::string_view authorization,
                                         const v1::EnrollSiteRequest& request,
                                         v1::EnrollSiteResponse* response) {
  auto who = authorize(authorization, model::Action::kAdminister, "");
  if (!who.ok()) return to_grpc(who.status());
  if (options_.enrollment == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this hub does not enroll sites");
  }
  // A site enrolled under a region's name would be given the region's scope
  // at its first hello (the parent knows children by name).
  if (Status st = check_not_a_region(request.site()); !st.ok()) return to_grpc(st);
  constexpr uint64_t kDefaultTtlSeconds = 3600;
  const uint64_t ttl = request.ttl_seconds() == 0 ? kDefaultTtlSeconds : request.ttl_seconds();
  auto issued = options_.enrollment->issue(request.site(), ttl);
  if (!issued.ok()) return to_grpc(issued.status());
  response->set_site(issued->site);
  response->set_token(issued->text);
  response->set_expires_at_ms(issued->expires_at_ms);
  response->set_ca_fingerprint(issued->ca_fingerprint);
  return grpc::Status::OK;
}

grpc::Status CatalogService::revoke_site(std::string_view authorization,
                                         const v1::RevokeSiteRequest& request,
                                         v1::RevokeSiteResponse* response) {
  auto who = authorize(authorization, model::Action::kAdminister, "");
  if (!who.ok()) return to_grpc(who.status());
  if (options_.enrollment == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this hub does not enroll sites");
  }
  if (Status st = options_.enrollment->revoke(request.site()); !st.ok()) return to_grpc(st);
  spdlog::info("catalog: site {} revoked by token {}", request.site(), who->id);
  response->set_site(request.site());
  return grpc::Status::OK;
}

grpc::Status CatalogService::list_enrollments(std::string_view authorization,
                                              const v1::ListEnrollmentsRequest&,
                                              v1::ListEnrollmentsResponse* response) {
  auto who = authorize(authorization, model::Action::kAdminister, "");
  if (!who.ok()) return to_grpc(who.status());
  if (options_.enrollment == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this hub does not enroll sites");
  }
  auto ids = options_.enrollment->identities();
  if (!ids.ok()) return to_grpc(ids.status());
  auto pending = options_.enrollment->pending_enrollments();
  if (!pending.ok()) return to_grpc(pending.status());
  std::map<std::string, v1::SiteEnrollment> by_site;
  for (const auto& i : *ids) {
    v1::SiteEnrollment& e = by_site[i.site];
    e.set_site(i.site);
    e.set_state(i.revoked ? "revoked" : "enrolled");
    e.set_cert_fingerprint(i.cert_fingerprint);
    e.set_cert_not_after_ms(i.cert_not_after_ms);
    e.set_enrolled_at_ms(i.enrolled_at_ms);
    e.set_revoked_at_ms(i.revoked_at_ms);
  }
  // A site that asks again (a new token) shows its new request.
  for (const auto& p : *pending) {
    v1::SiteEnrollment& e = by_site[p.site];
    e.set_site(p.site);
    e.set_state(p.state);
    e.set_request_fingerprint(p.request_fingerprint);
    e.set_requested_at_ms(p.requested_at_ms);
  }
  for (auto& entry : by_site) *response->add_sites() = std::move(entry.second);
  return grpc::Status::OK;
}

grpc::Status CatalogService::decide_enrollment(std::string_view authorization,
                                               const v1::DecideEnrollmentRequest& request,
                                               v1::DecideEnrollmentResponse* response) {
  auto who = authorize(authorization, model::Action::kAdminister, "");
  if (!who.ok()) return to_grpc(who.status());
  if (options_.enrollment == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this hub does not enroll sites");
  }
  if (Status st = options_.enrollment->decide(request.site(), request.approve()); !st.ok()) {
    return to_grpc(st);
  }
  spdlog::info("catalog: enrollment of site {} {} by token {}", request.site(),
               request.approve() ? "approved" : "denied", who->id);
  response->set_site(request.site());
  response->set_state(request.approve() ? "approved" : "denied");
  return grpc::Status::OK;
}

}  // namespace canopy::api
