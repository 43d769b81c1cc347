// Access: who may do what with the catalogue, in one place. The hub's API
// authenticates a request to a token record (documents.h, `tokens/<id>`) and
// asks `permits` before it reads or writes; nothing else decides.
//
// Roles, each bound to one tenant except fleet-admin, which is bound to none:
//   fleet-admin   everything: tenants, grants, site labels, any tenant's
//                 objects, tokens of any role
//   tenant-admin  its tenant's objects, rollouts and tokens (editor and viewer)
//   editor        its tenant's templates, placements and overrides
//   viewer        reads its tenant's objects, status, conflicts and renders
// A tenant sees and places only on the sites its grants choose; that is a
// filter on sites (the hub's index applies it), not an action here.
#pragma once

#include <string>
#include <string_view>

#include "store/status.h"

namespace canopy::model {

enum class Role { kFleetAdmin, kTenantAdmin, kEditor, kViewer };

StatusOr<Role> parse_role(std::string_view name);
std::string_view role_name(Role role);
// "editor of tenant acme" (no tenant: the role alone), naming a token's
// holder in messages about what it may not do.
std::string holder_text(Role role, std::string_view tenant);

enum class Action {
  kRead,        // objects, status, conflicts, renders, watch
  kWrite,       // templates, placements, overrides
  kManage,      // rollouts (pause, resume) and the tenant's tokens
  kAdminister,  // tenants, grants, site labels, fleet tokens
};

// Whether a token with `role`, bound to `bound_tenant` (empty for
// fleet-admin), may do `action` on `tenant`'s objects (empty: fleet-level
// objects such as tenants, grants and sites).
bool permits(Role role, std::string_view bound_tenant, Action action, std::string_view tenant);

// Whether a token with `role` may create a token with `wanted`: a fleet-admin
// any, a tenant-admin an editor or a viewer of its own tenant, others none.
bool may_issue(Role role, Role wanted);

// A bearer token as users hold it: "canopy_<id>_<secret>", where <id> names
// its record (`tokens/<id>`, 16 lowercase hex digits) and <secret> is 43
// characters of base64url (256 random bits). Only a hash of the secret is
// stored.
struct BearerToken {
  std::string id;
  std::string secret;
};
inline constexpr size_t kTokenIdChars = 16;
inline constexpr size_t kTokenSecretChars = 43;
StatusOr<BearerToken> parse_bearer(std::string_view text);
std::string bearer_text(const BearerToken& token);

// A site's one-time bootstrap token (docs/security.md, `kubectl canopy
// enroll`): "canopy-enroll_<id>_<secret>", <id> naming its record
// (`enrollment/tokens/<id>`, 16 lowercase hex digits), <secret> 43
// characters of base64url. Only a hash of the secret is stored. Errors never
// repeat the text (it is a secret).
inline constexpr std::string_view kBootstrapPrefix = "canopy-enroll_";
StatusOr<BearerToken> parse_bootstrap_token(std::string_view text);
std::string bootstrap_token_text(const BearerToken& token);

}  // namespace canopy::model
