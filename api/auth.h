// Auth: API tokens over the hub's store. A token is issued once (its bearer
// text is returned and never stored), kept as a record `tokens/<id>` with a
// SHA-256 hash of its secret (model/documents.h), and checked on every
// request: the record must exist, the hash match (in constant time), and the
// token be neither expired nor revoked. Who may then do what is
// model/access.h's rule.
//
// Token records are kept in memory once read (by id), so that a request
// costs a map look-up and one SHA-256 of its secret rather than a store read
// and a JSON parse. The cache follows the store: every committed change of a
// `tokens/` key (a revocation here, a record replicated from elsewhere, a
// dropped key) evicts that id before the write returns, so a revoked token is
// refused from the moment its revocation is acknowledged.
//
// Secrets carry 256 random bits, so a plain SHA-256 (no slow KDF) is enough:
// nothing can be guessed from the hash. No message or log line here contains
// a secret or a bearer text.
//
// Thread-safety: safe to call from any thread (the store is thread-safe).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/access.h"
#include "model/documents.h"
#include "store/clock.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::api {

// SHA-256 of `data` in lowercase hex.
std::string sha256_hex(std::string_view data);

// What to issue: a role, bound to a tenant (empty for fleet-admin), valid for
// `ttl_ms` (0: does not expire).
struct TokenRequest {
  model::Role role = model::Role::kViewer;
  std::string tenant;
  uint64_t ttl_ms = 0;
  std::string description;
};

struct IssuedToken {
  model::TokenRecord record;
  std::string bearer;  // "canopy_<id>_<secret>": shown once
};

class Authenticator {
 public:
  // `store` and `clock` must outlive the authenticator (it subscribes to
  // the store's commits until it is destroyed).
  Authenticator(Store* store, Clock* clock);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // The record of the token in an `Authorization` header value
  // ("Bearer canopy_..."), or UNAUTHENTICATED saying why (never echoing it).
  StatusOr<model::TokenRecord> authenticate(std::string_view authorization) const;

  // Issues a token and stores its record (durably, before returning).
  StatusOr<IssuedToken> issue(const TokenRequest& request);
  // Marks a token revoked; NOT_FOUND when there is no such token. A revoked
  // token stays listed (with who it was for) until it is deleted.
  Status revoke(std::string_view id);
  // The record of token `id` (NOT_FOUND when there is none).
  StatusOr<model::TokenRecord> find(std::string_view id) const;
  // Every token record, by id (tenant "" for all, else that tenant's).
  StatusOr<std::vector<model::TokenRecord>> list(std::string_view tenant) const;

  // When the store holds no token at all (a hub started on an empty data
  // directory), issues a fleet-admin token that does not expire and writes
  // its bearer text to `path` (mode 0600, created or replaced atomically).
  // Returns whether it did. Fails, leaving no token record, if the file
  // cannot be written.
  StatusOr<bool> bootstrap_admin(const std::string& path);

 private:
  // Stores the record of `bearer` as `request` describes it.
  StatusOr<IssuedToken> store_token(const model::BearerToken& bearer, const TokenRequest& request);

  // The record of token `id`, from the cache or else the store.
  StatusOr<model::TokenRecord> cached(std::string_view id) const;
  // The store's listener: forgets the record of a changed token key.
  void on_commit(const std::string& key);

  // Records kept at most; a full cache is emptied.
  static constexpr size_t kCacheEntries = 10'000;

  Store* store_;
  Clock* clock_;
  uint64_t subscription_ = 0;
  mutable std::mutex cache_mu_;
  // Token id -> its record as last read from the store.
  mutable std::unordered_map<std::string, model::TokenRecord> cache_;
  // Counts evictions: a record read before one is not cached (it may be the
  // state the eviction was about).
  mutable uint64_t evictions_ = 0;
};

}  // namespace canopy::api
