#include "model/access.h"

#include <algorithm>
#include <optional>

namespace canopy::model {
namespace {

constexpr std::string_view kBearerPrefix = "canopy_";

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool is_base64url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

}  // namespace

StatusOr<Role> parse_role(std::string_view name) {
  if (name == "fleet-admin") return Role::kFleetAdmin;
  if (name == "tenant-admin") return Role::kTenantAdmin;
  if (name == "editor") return Role::kEditor;
  if (name == "viewer") return Role::kViewer;
  return invalid_argument("role \"" + std::string(name) +
                          "\" is not one of fleet-admin, tenant-admin, editor, viewer");
}

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kFleetAdmin:
      return "fleet-admin";
    case Role::kTenantAdmin:
      return "tenant-admin";
    case Role::kEditor:
      return "editor";
    case Role::kViewer:
      return "viewer";
  }
  return "?";
}

std::string holder_text(Role role, std::string_view tenant) {
  std::string out(role_name(role));
  if (!tenant.empty()) out += " of tenant " + std::string(tenant);
  return out;
}

bool permits(Role role, std::string_view bound_tenant, Action action, std::string_view tenant) {
  if (role == Role::kFleetAdmin) return bound_tenant.empty();
  // Every other role acts on its own tenant's objects only.
  if (bound_tenant.empty() || tenant != bound_tenant) return false;
  switch (action) {
    case Action::kRead:
      return true;
    case Action::kWrite:
      return role == Role::kTenantAdmin || role == Role::kEditor;
    case Action::kManage:
      return role == Role::kTenantAdmin;
    case Action::kAdminister:
      return false;
  }
  return false;
}

bool may_issue(Role role, Role wanted) {
  if (role == Role::kFleetAdmin) return true;
  if (role == Role::kTenantAdmin) return wanted == Role::kEditor || wanted == Role::kViewer;
  return false;
}

namespace {

// "<id>_<secret>" after `prefix`, or nullopt.
std::optional<BearerToken> split_token(std::string_view text, std::string_view prefix) {
  if (!text.starts_with(prefix)) return std::nullopt;
  text.remove_prefix(prefix.size());
  if (text.size() != kTokenIdChars + 1 + kTokenSecretChars || text[kTokenIdChars] != '_') {
    return std::nullopt;
  }
  const std::string_view id = text.substr(0, kTokenIdChars);
  const std::string_view secret = text.substr(kTokenIdChars + 1);
  if (!std::all_of(id.begin(), id.end(), is_lower_hex) ||
      !std::all_of(secret.begin(), secret.end(), is_base64url)) {
    return std::nullopt;
  }
  return BearerToken{std::string(id), std::string(secret)};
}

}  // namespace

StatusOr<BearerToken> parse_bearer(std::string_view text) {
  auto t = split_token(text, kBearerPrefix);
  if (!t) {
    return unauthenticated(
        "the token is malformed (expected canopy_<16 hex digits>_<43 characters>)");
  }
  return *t;
}

StatusOr<BearerToken> parse_bootstrap_token(std::string_view text) {
  auto t = split_token(text, kBootstrapPrefix);
  if (!t) {
    return unauthenticated(
        "the bootstrap token is malformed (expected canopy-enroll_<16 hex digits>_<43 "
        "characters>, as `kubectl canopy enroll` prints it)");
  }
  return *t;
}

std::string bootstrap_token_text(const BearerToken& token) {
  return std::string(kBootstrapPrefix) + token.id + "_" + token.secret;
}

std::string bearer_text(const BearerToken& token) {
  return std::string(kBearerPrefix) + token.id + "_" + token.secret;
}

}  // namespace canopy::model
