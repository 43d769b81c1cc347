// kubectl-canopy tokens: list, issue and revoke API tokens. A token's bearer
// text is printed once, when it is issued; listings show ids and roles only.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "api/cli/client.h"

namespace canopy::cli {

std::string format_utc(uint64_t ms) {
  if (ms == 0) return "never";
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int cmd_tokens_list(Hub& hub, const std::string& tenant, const std::string& output) {
  v1::ListTokensRequest req;
  req.set_tenant(tenant);
  auto resp = hub.call(&v1::Catalog::Stub::ListTokens, req);
  if (output == "json") {
    json items = json::array();
    for (const auto& t : resp.tokens()) items.push_back(api::token_json(t));
    std::printf("%s\n", json{{"items", items}}.dump(2).c_str());
    return 0;
  }
  if (output == "name") {
    for (const auto& t : resp.tokens()) std::printf("token/%s\n", t.id().c_str());
    return 0;
  }
  if (resp.tokens().empty()) {
    std::fprintf(stderr, "No tokens found.\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : resp.tokens()) {
    rows.push_back({t.id(), t.role(), t.tenant().empty() ? "<fleet>" : t.tenant(),
                    t.revoked() ? "revoked" : "active", format_utc(t.expires_at_ms()),
                    t.description()});
  }
  print_table({"ID", "ROLE", "TENANT", "STATE", "EXPIRES", "DESCRIPTION"}, rows);
  return 0;
}

int cmd_tokens_issue(Hub& hub, const std::string& role, const std::string& tenant,
                     uint64_t ttl_seconds, const std::string& description,
                     const std::string& output) {
  v1::IssueTokenRequest req;
  req.set_role(role);
  req.set_tenant(tenant);
  req.set_ttl_seconds(ttl_seconds);
  req.set_description(description);
  auto resp = hub.call(&v1::Catalog::Stub::IssueToken, req);
  if (output == "json") {
    std::printf(
        "%s\n",
        json{{"token", api::token_json(resp.token())}, {"bearer", resp.bearer()}}.dump(2).c_str());
    return 0;
  }
  // The bearer text alone on stdout, so that `$(kubectl canopy tokens issue
  // ...)` captures it; what it is goes to stderr.
  std::fprintf(stderr, "token %s issued (%s%s, expires %s); it is shown only now:\n",
               resp.token().id().c_str(), role.c_str(),
               tenant.empty() ? "" : (" of tenant " + tenant).c_str(),
               format_utc(resp.token().expires_at_ms()).c_str());
  std::printf("%s\n", resp.bearer().c_str());
  return 0;
}

int cmd_tokens_revoke(Hub& hub, const std::string& id) {
  v1::RevokeTokenRequest req;
  req.set_id(id);
  hub.call(&v1::Catalog::Stub::RevokeToken, req);
  std::printf("token %s revoked\n", id.c_str());
  return 0;
}

}  // namespace canopy::cli
