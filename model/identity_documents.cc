// Identity documents of the catalogue (see documents.h): devices and their
// reported twins, bootstrap tokens, site identities and pending enrollments.
#include <algorithm>
#include <initializer_list>

#include "model/document_fields.h"
#include "model/documents.h"
#include "model/names.h"

namespace canopy::model {

using namespace fields;

namespace {

bool is_bcrypt_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '/';
}

// The key's name and the document's copy of it, when it has one.
Status same_name(const json& doc, std::string_view f, std::string_view want) {
  const json* v = field(doc, f);
  if (v == nullptr) return ok_status();
  if (!v->is_string() || v->get_ref<const std::string&>() != want) {
    return invalid_argument(std::string(f) + " " + v->dump() + " differs from the key's " +
                            quote(want));
  }
  return ok_status();
}

constexpr std::string_view kNoClearPassword =
    "a clear password is never stored: send credential.passwordHash, a bcrypt hash of it "
    "(e.g. `htpasswd -nbBC 10 \"\" PASSWORD | cut -c2-`)";

Status string_field(const json& doc, std::string_view name, std::string* out) {
  const json* f = field(doc, name);
  if (f == nullptr) return invalid_argument(std::string(name) + " is missing");
  if (!f->is_string()) {
    return invalid_argument(std::string(name) + " must be a string, not " + f->type_name());
  }
  *out = f->get<std::string>();
  return ok_status();
}

}  // namespace

bool is_bcrypt_hash(std::string_view h) {
  if (h.size() != 60 || h[0] != '$' || h[1] != '2' || h[3] != '$' || h[6] != '$') return false;
  if (h[2] != 'a' && h[2] != 'b' && h[2] != 'y') return false;
  if (h[4] < '0' || h[4] > '9' || h[5] < '0' || h[5] > '9') return false;
  const int cost = (h[4] - '0') * 10 + (h[5] - '0');
  if (cost < 4 || cost > 31) return false;
  for (char c : h.substr(7)) {
    if (!is_bcrypt_char(c)) return false;
  }
  return true;
}

bool is_twin_field(std::string_view name) {
  if (name.empty() || name.size() > kMaxTwinField) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

StatusOr<Device> parse_device(std::string_view site, std::string_view tenant, std::string_view id,
                              const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "device"));
  if (field(doc, "password") != nullptr) {
    return invalid_argument("password: " + std::string(kNoClearPassword));
  }
  CANOPY_RETURN_IF_ERROR(
      only_fields(doc, {"tenant", "site", "id", "labels", "scope", "credential", "desired"}));
  for (auto [f, v] : {std::pair<std::string_view, std::string_view>{"site", site},
                      {"tenant", tenant},
                      {"id", id}}) {
    if (!is_dns1123_label(v)) {
      return invalid_argument(std::string(f) + " " + quote(v) + " is not " +
                              std::string(kLabelRule));
    }
    CANOPY_RETURN_IF_ERROR(same_name(doc, f, v));
  }
  Device out;
  out.site = std::string(site);
  out.tenant = std::string(tenant);
  out.id = std::string(id);
  if (const json* labels = field(doc, "labels")) {
    CANOPY_RETURN_IF_ERROR(check_labels(*labels, "labels"));
    for (const auto& [k, v] : labels->items()) out.labels.emplace(k, v.get<std::string>());
  }
  if (const json* scope = field(doc, "scope")) {
    if (!scope->is_string() || (scope->get_ref<const std::string&>() != kDeviceScopeDevice &&
                                scope->get_ref<const std::string&>() != kDeviceScopeTenant)) {
      return invalid_argument("scope " + scope->dump() +
                              " is not \"device\" (its own topics) or \"tenant\" (its "
                              "tenant's topics: a gateway)");
    }
    out.scope = scope->get<std::string>();
  }
  const json* credential = field(doc, "credential");
  if (credential == nullptr) {
    return invalid_argument(
        "credential is missing: {\"passwordHash\": \"<bcrypt hash>\"} (a device without one "
        "cannot connect)");
  }
  if (!credential->is_object()) {
    return invalid_argument(std::string("credential must be an object, not ") +
                            credential->type_name());
  }
  if (field(*credential, "password") != nullptr) {
    return invalid_argument("credential.password: " + std::string(kNoClearPassword));
  }
  if (Status st = only_fields(*credential, {"passwordHash"}); !st.ok()) {
    return invalid_argument("credential: " + st.message());
  }
  const json* hash = field(*credential, "passwordHash");
  if (hash == nullptr) return invalid_argument("credential.passwordHash is missing");
  if (!hash->is_string() || !is_bcrypt_hash(hash->get_ref<const std::string&>())) {
    // Never echo the value: it may be a password sent in the wrong field.
    return invalid_argument(
        "credential.passwordHash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 "
        "characters); " +
        std::string(kNoClearPassword));
  }
  out.password_hash = hash->get<std::string>();
  if (const json* desired = field(doc, "desired")) {
    if (!desired->is_object()) {
      return invalid_argument(std::string("desired must be an object of fields, not ") +
                              desired->type_name());
    }
    if (desired->size() > kMaxTwinFields) {
      return invalid_argument("desired has " + std::to_string(desired->size()) +
                              " fields; the limit is " + std::to_string(kMaxTwinFields));
    }
    for (const auto& [k, v] : desired->items()) {
      if (!is_twin_field(k)) {
        return invalid_argument("desired field " + quote(k) +
                                " is not a twin field name (1-128 characters of A-Z, a-z, 0-9, "
                                "'_', '-')");
      }
    }
    // Nulls are removed fields (a merge may leave them).
    for (const auto& [k, v] : desired->items()) {
      if (!v.is_null()) out.desired[k] = v;
    }
  }
  return out;
}

StatusOr<Reported> parse_reported(const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "reported"));
  Reported out;
  for (const auto& [k, v] : doc.items()) {
    if (v.is_null()) continue;
    if (!is_twin_field(k)) {
      return invalid_argument("reported field " + quote(k) + " is not a twin field name");
    }
    if (!v.is_object()) {
      return invalid_argument("reported." + k + " must be {\"value\": ..., \"atMs\": N}");
    }
    CANOPY_RETURN_IF_ERROR(only_fields(v, {"value", "atMs"}));
    ReportedField f;
    if (auto it = v.find("value"); it != v.end()) f.value = *it;
    const json* at = field(v, "atMs");
    if (at == nullptr || !at->is_number_integer() || at->get<int64_t>() < 0) {
      return invalid_argument("reported." + k + ".atMs must be ms since the epoch");
    }
    f.at_ms = at->get<uint64_t>();
    out.emplace(k, std::move(f));
  }
  return out;
}

StatusOr<BootstrapTokenRecord> parse_bootstrap_record(std::string_view id, const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "bootstrap token"));
  CANOPY_RETURN_IF_ERROR(
      only_fields(doc, {"site", "hash", "createdAtMs", "expiresAtMs", "usedAtMs"}));
  if (id.size() != kTokenIdChars || !std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return invalid_argument("bootstrap token id " + quote(id) + " is not " +
                            std::to_string(kTokenIdChars) + " lowercase hex digits");
  }
  BootstrapTokenRecord out;
  out.id = std::string(id);
  CANOPY_RETURN_IF_ERROR(string_field(doc, "site", &out.site));
  if (!is_dns1123_label(out.site)) {
    return invalid_argument("site " + quote(out.site) + " is not " + std::string(kLabelRule));
  }
  CANOPY_RETURN_IF_ERROR(string_field(doc, "hash", &out.hash));
  if (!is_hex_digest(out.hash)) {
    return invalid_argument("hash must be a SHA-256 digest in 64 lowercase hex digits");
  }
  auto created = millis_field(doc, "createdAtMs");
  if (!created.ok()) return created.status();
  out.created_at_ms = *created;
  auto expires = millis_field(doc, "expiresAtMs");
  if (!expires.ok()) return expires.status();
  if (*expires == 0) return invalid_argument("expiresAtMs is missing: a bootstrap token expires");
  out.expires_at_ms = *expires;
  auto used = millis_field(doc, "usedAtMs");
  if (!used.ok()) return used.status();
  out.used_at_ms = *used;
  return out;
}

json bootstrap_record_document(const BootstrapTokenRecord& t) {
  return {{"site", t.site},
          {"hash", t.hash},
          {"createdAtMs", t.created_at_ms},
          {"expiresAtMs", t.expires_at_ms},
          {"usedAtMs", t.used_at_ms}};
}

StatusOr<SiteIdentity> parse_site_identity(std::string_view site, const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "site identity"));
  CANOPY_RETURN_IF_ERROR(only_fields(
      doc, {"natsUser", "natsPasswordHash", "certFingerprint", "previousCertFingerprint",
            "certNotAfterMs", "enrolledAtMs", "revoked", "revokedAtMs"}));
  if (!is_dns1123_label(site)) {
    return invalid_argument("site " + quote(site) + " is not " + std::string(kLabelRule));
  }
  SiteIdentity out;
  out.site = std::string(site);
  CANOPY_RETURN_IF_ERROR(string_field(doc, "natsUser", &out.nats_user));
  CANOPY_RETURN_IF_ERROR(string_field(doc, "natsPasswordHash", &out.nats_password_hash));
  // What goes into nats-server's configuration must not break out of its
  // quoted string.
  for (const std::string* v : {&out.nats_user, &out.nats_password_hash}) {
    if (v->empty() || !std::all_of(v->begin(), v->end(), [](char c) {
          return c > 0x20 && c < 0x7f && c != '"' && c != '\\';
        })) {
      return invalid_argument(
          "natsUser and natsPasswordHash must be printable ASCII without "
          "quotes, backslashes or spaces");
    }
  }
  CANOPY_RETURN_IF_ERROR(string_field(doc, "certFingerprint", &out.cert_fingerprint));
  if (field(doc, "previousCertFingerprint") != nullptr) {
    CANOPY_RETURN_IF_ERROR(
        string_field(doc, "previousCertFingerprint", &out.previous_cert_fingerprint));
  }
  auto not_after = millis_field(doc, "certNotAfterMs");
  if (!not_after.ok()) return not_after.status();
  out.cert_not_after_ms = *not_after;
  auto enrolled = millis_field(doc, "enrolledAtMs");
  if (!enrolled.ok()) return enrolled.status();
  out.enrolled_at_ms = *enrolled;
  auto revoked = bool_field(doc, "revoked");
  if (!revoked.ok()) return revoked.status();
  out.revoked = *revoked;
  auto revoked_at = millis_field(doc, "revokedAtMs");
  if (!revoked_at.ok()) return revoked_at.status();
  out.revoked_at_ms = *revoked_at;
  return out;
}

json site_identity_document(const SiteIdentity& i) {
  json doc = {{"natsUser", i.nats_user},
              {"natsPasswordHash", i.nats_password_hash},
              {"certFingerprint", i.cert_fingerprint},
              {"certNotAfterMs", i.cert_not_after_ms},
              {"enrolledAtMs", i.enrolled_at_ms},
              {"revoked", i.revoked},
              {"revokedAtMs", i.revoked_at_ms}};
  if (!i.previous_cert_fingerprint.empty()) {
    doc["previousCertFingerprint"] = i.previous_cert_fingerprint;
  }
  return doc;
}

StatusOr<PendingEnrollment> parse_pending_enrollment(std::string_view site, const json& doc) {
  CANOPY_RETURN_IF_ERROR(require_object(doc, "pending enrollment"));
  CANOPY_RETURN_IF_ERROR(only_fields(
      doc, {"tokenId", "csr", "request", "pollHash", "requestedAtMs", "state", "decidedAtMs"}));
  if (!is_dns1123_label(site)) {
    return invalid_argument("site " + quote(site) + " is not " + std::string(kLabelRule));
  }
  PendingEnrollment out;
  out.site = std::string(site);
  CANOPY_RETURN_IF_ERROR(string_field(doc, "tokenId", &out.token_id));
  CANOPY_RETURN_IF_ERROR(string_field(doc, "csr", &out.csr_pem));
  CANOPY_RETURN_IF_ERROR(string_field(doc, "request", &out.request_fingerprint));
  CANOPY_RETURN_IF_ERROR(string_field(doc, "pollHash", &out.poll_hash));
  CANOPY_RETURN_IF_ERROR(string_field(doc, "state", &out.state));
  if (out.state != "pending" && out.state != "approved" && out.state != "denied") {
    return invalid_argument("state must be pending, approved or denied, not " + quote(out.state));
  }
  auto requested = millis_field(doc, "requestedAtMs");
  if (!requested.ok()) return requested.status();
  out.requested_at_ms = *requested;
  auto decided = millis_field(doc, "decidedAtMs");
  if (!decided.ok()) return decided.status();
  out.decided_at_ms = *decided;
  return out;
}

json pending_enrollment_document(const PendingEnrollment& p) {
  return {{"tokenId", p.token_id},
          {"csr", p.csr_pem},
          {"request", p.request_fingerprint},
          {"pollHash", p.poll_hash},
          {"requestedAtMs", p.requested_at_ms},
          {"state", p.state},
          {"decidedAtMs", p.decided_at_ms}};
}

}  // namespace canopy::model
