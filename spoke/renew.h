// Rotation of the site certificate before it expires (docs/security.md).
//
// Once site.crt has lived `renew_at` of its lifetime (2/3 by default), the
// spoke makes a new key and CSR and posts them to the hub (POST
// <hub_url>/v1/renew) with its current certificate and a signature over the
// CSR made with the current key; the hub checks both against its CA and the
// site's identity (refused for a revoked site or an expired certificate). The
// new key and certificate replace the old ones as a pair: the certificate is
// checked to hold the new key, both are written whole beside the old ones
// (site.key.next, then site.crt.next, each 0600 and fsynced), then renamed
// over them, key first. complete_renewal() finishes a pair a crash
// interrupted, so the key and certificate in use always match.
//
// Over https the hub's certificate is verified against identity/ca.crt, and
// the site's current certificate is presented as a client certificate (for a
// hub that requires one).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "store/status.h"

namespace canopy::spoke {

inline constexpr double kDefaultRenewAt = 2.0 / 3.0;

// Whether the certificate in `cert_pem` has passed `renew_at` (0..1) of its
// lifetime at `now_ms`.
StatusOr<bool> renewal_due(const std::string& cert_pem, double renew_at, uint64_t now_ms);

// Finishes a renewal a crash interrupted: a new pair written whole
// (site.crt.next present) replaces the old one; a half-written one (only
// site.key.next) is removed. Call before reading the identity at start.
Status complete_renewal(const std::string& data_dir);

// Renews the site certificate in <data_dir>/identity now, at `hub_url`
// (empty: identity/hub-url, written at enrollment).
Status renew_site_certificate(const std::string& data_dir, const std::string& hub_url);

// Checks on a thread of its own, every lifetime/20 (1 s to 10 min), and
// renews when due; a refused or failed renewal is logged and tried again at
// the next check. Nothing to do without identity/site.crt.
class CertificateRenewer {
 public:
  CertificateRenewer(std::string data_dir, std::string hub_url, double renew_at);
  ~CertificateRenewer();
  CertificateRenewer(const CertificateRenewer&) = delete;
  CertificateRenewer& operator=(const CertificateRenewer&) = delete;

  void start();
  void stop();
  uint64_t renewals() const;

 private:
  void run();

  const std::string data_dir_;
  const std::string hub_url_;
  const double renew_at_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  uint64_t renewals_ = 0;
  std::thread thread_;
};

}  // namespace canopy::spoke
