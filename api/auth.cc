#include "api/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "daemon/identity.h"
#include "model/keys.h"
#include "store/file_io.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

constexpr char kHex[] = "0123456789abcdef";
constexpr char kBase64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string hex(const unsigned char* p, size_t n) {
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 0xf]);
  }
  return out;
}

// Base64url without padding: 32 bytes give 43 characters.
std::string base64url(const unsigned char* p, size_t n) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | p[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kBase64Url[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kBase64Url[(acc << (6 - bits)) & 0x3f]);
  return out;
}

StatusOr<model::BearerToken> new_bearer() {
  std::array<unsigned char, model::kTokenIdChars / 2> id{};
  std::array<unsigned char, 32> secret{};
  if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1 ||
      RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) {
    return unavailable("no random bytes for a new token (OpenSSL RAND_bytes failed)");
  }
  model::BearerToken t{hex(id.data(), id.size()), base64url(secret.data(), secret.size())};
  OPENSSL_cleanse(secret.data(), secret.size());
  return t;
}

}  // namespace

std::string sha256_hex(std::string_view data) { return daemon::sha256_hex(data); }

Authenticator::Authenticator(Store* store, Clock* clock) : store_(store), clock_(clock) {
  subscription_ = store_->subscribe([this](const v1::LogEntry& e) {
    const std::string& key = e.has_delta() ? e.delta().key() : e.doc().key();
    if (key.starts_with(model::kTokensPrefix)) on_commit(key);
  });
}

Authenticator::~Authenticator() { store_->unsubscribe(subscription_); }

void Authenticator::on_commit(const std::string& key) {
  const model::ParsedKey k = model::parse_key(key);
  std::lock_guard lock(cache_mu_);
  ++evictions_;
  if (k.kind == model::KeyKind::kToken) {
    cache_.erase(std::string(k.name));
  } else {
    cache_.clear();  // not a token record's key: forget everything to be safe
  }
}

StatusOr<model::TokenRecord> Authenticator::cached(std::string_view id) const {
  uint64_t evictions = 0;
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = cache_.find(std::string(id)); it != cache_.end()) return it->second;
    evictions = evictions_;
  }
  auto record = find(id);
  if (record.ok()) {
    std::lock_guard lock(cache_mu_);
    if (evictions_ == evictions) {
      if (cache_.size() >= kCacheEntries) cache_.clear();
      cache_.emplace(std::string(id), *record);
    }
  }
  return record;
}

StatusOr<model::TokenRecord> Authenticator::find(std::string_view id) const {
  auto text = store_->get(model::token_key(id));
  if (!text.ok()) return text.status();
  json doc = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return data_loss("token record " + std::string(id) + " is not JSON");
  return model::parse_token(id, doc);
}

StatusOr<model::TokenRecord> Authenticator::authenticate(std::string_view authorization) const {
  while (!authorization.empty() &&
         std::isspace(static_cast<unsigned char>(authorization.front()))) {
    authorization.remove_prefix(1);
  }
  while (!authorization.empty() && std::isspace(static_cast<unsigned char>(authorization.back()))) {
    authorization.remove_suffix(1);
  }
  if (authorization.empty()) return unauthenticated("no token (Authorization: Bearer <token>)");
  // The scheme is case-insensitive (RFC 7235).
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() < kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), authorization.begin(), [](char a, char b) {
        return a == std::tolower(static_cast<unsigned char>(b));
      })) {
    return unauthenticated("the Authorization header must be \"Bearer <token>\"");
  }
  authorization.remove_prefix(kScheme.size());
  while (!authorization.empty() && authorization.front() == ' ') authorization.remove_prefix(1);
  auto bearer = model::parse_bearer(authorization);
  if (!bearer.ok()) return bearer.status();
  auto record = cached(bearer->id);
  const std::string hash = sha256_hex(bearer->secret);
  if (!record.ok()) {
    if (record.status().code() == StatusCode::kNotFound) {
      return unauthenticated("the token is not valid");
    }
    return record.status();  // the store failed: not the client's fault
  }
  if (hash.size() != record->hash.size() ||
      CRYPTO_memcmp(hash.data(), record->hash.data(), hash.size()) != 0) {
    return unauthenticated("the token is not valid");
  }
  if (record->revoked) return unauthenticated("the token " + record->id + " was revoked");
  if (!record->valid_at(clock_->now_ms())) {
    return unauthenticated("the token " + record->id + " has expired");
  }
  return record;
}

StatusOr<IssuedToken> Authenticator::issue(const TokenRequest& request) {
  auto bearer = new_bearer();
  if (!bearer.ok()) return bearer.status();
  return store_token(*bearer, request);
}

StatusOr<IssuedToken> Authenticator::store_token(const model::BearerToken& bearer,
                                                 const TokenRequest& request) {
  model::TokenRecord r;
  r.id = bearer.id;
  r.role = request.role;
  r.tenant = request.tenant;
  r.hash = sha256_hex(bearer.secret);
  r.created_at_ms = clock_->now_ms();
  r.expires_at_ms = request.ttl_ms == 0 ? 0 : r.created_at_ms + request.ttl_ms;
  r.description = request.description;
  // The record goes through the one parser, so that what is stored is valid.
  const json doc = model::token_document(r);
  auto checked = model::parse_token(r.id, doc);
  if (!checked.ok()) return checked.status();
  auto put = store_->put_value(model::token_key(r.id), doc);
  if (!put.ok()) return put.status();
  return IssuedToken{std::move(r), model::bearer_text(bearer)};
}

Status Authenticator::revoke(std::string_view id) {
  auto record = find(id);
  if (!record.ok()) return record.status();
  if (record->revoked) return ok_status();
  return store_->patch(model::token_key(id), R"({"revoked":true})").status();
}

StatusOr<std::vector<model::TokenRecord>> Authenticator::list(std::string_view tenant) const {
  std::vector<model::TokenRecord> out;
  std::string after;
  while (true) {
    auto page = store_->scan(model::kTokensPrefix, after, 1000);
    if (!page.ok()) return page.status();
    for (const ScanItem& item : page->items) {
      const model::ParsedKey k = model::parse_key(item.key);
      if (k.kind != model::KeyKind::kToken) continue;
      json doc = json::parse(item.json, nullptr, /*allow_exceptions=*/false);
      auto r = model::parse_token(k.name, doc);
      if (!r.ok()) continue;  // an invalid record authenticates nobody either
      if (tenant.empty() || r->tenant == tenant) out.push_back(std::move(r).value());
    }
    if (page->next_after.empty()) break;
    after = page->next_after;
  }
  return out;
}

StatusOr<bool> Authenticator::bootstrap_admin(const std::string& path) {
  auto page = store_->scan(model::kTokensPrefix, "", 1);
  if (!page.ok()) return page.status();
  if (!page->items.empty()) return false;
  auto bearer = new_bearer();
  if (!bearer.ok()) return bearer.status();
  // The file first: a record whose secret nobody holds would lock the fleet
  // out (and stop the next start from bootstrapping).
  if (Status st = write_file_atomically(path, model::bearer_text(*bearer) + "\n", 0600); !st.ok()) {
    return unavailable("admin token file " + st.message());
  }
  TokenRequest request;
  request.role = model::Role::kFleetAdmin;
  request.description = "bootstrap fleet-admin token (" + path + ")";
  auto stored = store_token(*bearer, request);
  if (!stored.ok()) {
    ::unlink(path.c_str());
    return stored.status();
  }
  return true;
}

}  // namespace canopy::api
