#include "spoke/renew.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "daemon/identity.h"
#include "spoke/enroll.h"

namespace canopy::spoke {
namespace {

using json = nlohmann::json;

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

StatusOr<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return unavailable("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

StatusOr<bool> renewal_due(const std::string& cert_pem, double renew_at, uint64_t now) {
  auto v = daemon::cert_validity(cert_pem);
  if (!v.ok()) return v.status();
  const double life = static_cast<double>(v->not_after_ms - v->not_before_ms);
  return static_cast<double>(now) >= static_cast<double>(v->not_before_ms) + renew_at * life;
}

Status complete_renewal(const std::string& data_dir) {
  const std::string dir = identity_dir(data_dir);
  const std::string key = dir + "/site.key", crt = dir + "/site.crt";
  std::error_code ec;
  namespace fs = std::filesystem;
  const bool key_next = fs::exists(key + ".next", ec);
  const bool crt_next = fs::exists(crt + ".next", ec);
  if (!crt_next) {
    // Not written whole: the old pair stays.
    if (key_next) fs::remove(key + ".next", ec);
    return ok_status();
  }
  if (key_next) {
    fs::rename(key + ".next", key, ec);
    if (ec) return unavailable("cannot rename " + key + ".next: " + ec.message());
  }
  fs::rename(crt + ".next", crt, ec);
  if (ec) return unavailable("cannot rename " + crt + ".next: " + ec.message());
  return ok_status();
}

Status renew_site_certificate(const std::string& data_dir, const std::string& hub_url_in) {
  CANOPY_RETURN_IF_ERROR(complete_renewal(data_dir));
  const std::string dir = identity_dir(data_dir);
  auto cert = read_text(dir + "/site.crt");
  if (!cert.ok()) return cert.status();
  auto key = read_text(dir + "/site.key");
  if (!key.ok()) return key.status();
  auto ca = read_text(dir + "/ca.crt");
  if (!ca.ok()) return ca.status();
  std::string hub_url = hub_url_in;
  if (hub_url.empty()) {
    auto saved = read_text(dir + "/hub-url");
    if (!saved.ok()) {
      return failed_precondition(
          "no hub URL to renew at: set hub_url (--hub-url), or enroll "
          "again (enrollment writes " +
          dir + "/hub-url)");
    }
    hub_url = *saved;
    while (!hub_url.empty() && (hub_url.back() == '\n' || hub_url.back() == ' ')) {
      hub_url.pop_back();
    }
  }
  auto site = daemon::cert_common_name(*cert);
  if (!site.ok()) return site.status();

  auto new_key = daemon::generate_private_key();
  if (!new_key.ok()) return new_key.status();
  auto csr = daemon::make_csr(*new_key, *site);
  if (!csr.ok()) return csr.status();
  auto signature = daemon::sign_bytes(*key, *csr);
  if (!signature.ok()) return signature.status();

  auto client = hub_http_client(hub_url, *ca, *cert, *key);
  if (!client.ok()) return client.status();
  const json body = {{"certificate", *cert}, {"csr", *csr}, {"signature", *signature}};
  auto res = (*client)->Post("/v1/renew", body.dump(), "application/json");
  if (!res || res->status != 200) {
    return Status(!res                 ? StatusCode::kUnavailable
                  : res->status == 403 ? StatusCode::kPermissionDenied
                  : res->status == 401 ? StatusCode::kUnauthenticated
                                       : StatusCode::kUnavailable,
                  "the hub at " + hub_url + " refused the renewal: " + hub_error(**client, res));
  }
  const json answer = json::parse(res->body, nullptr, false);
  if (!answer.is_object() || !answer.contains("certificate") ||
      !answer["certificate"].is_string()) {
    return invalid_argument("the hub's renewal answer has no certificate");
  }
  const std::string renewed = answer["certificate"].get<std::string>();
  // The CA stays the one pinned at enrollment.
  if (Status st = daemon::verify_cert(*ca, renewed, *new_key); !st.ok()) {
    return invalid_argument("the hub's renewed certificate: " + st.message());
  }
  auto cn = daemon::cert_common_name(renewed);
  if (!cn.ok() || *cn != *site) {
    return invalid_argument("the hub's renewed certificate names " + (cn.ok() ? *cn : "nothing") +
                            ", not site " + *site);
  }
  // The pair is written whole beside the old one (key, then certificate),
  // and only then renamed over it: a crash before the certificate is
  // written leaves the old pair in use; a crash after leaves a pair that
  // complete_renewal() finishes at the next start or renewal.
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/site.key.next", *new_key));
  CANOPY_RETURN_IF_ERROR(daemon::write_private_file(dir + "/site.crt.next", renewed));
  CANOPY_RETURN_IF_ERROR(complete_renewal(data_dir));
  auto fp = daemon::cert_fingerprint(renewed);
  auto v = daemon::cert_validity(renewed);
  spdlog::info("renewed the certificate of site {} at {}: {} valid until {} ms", *site, hub_url,
               fp.ok() ? *fp : "?", v.ok() ? v->not_after_ms : 0);
  return ok_status();
}

CertificateRenewer::CertificateRenewer(std::string data_dir, std::string hub_url, double renew_at)
    : data_dir_(std::move(data_dir)), hub_url_(std::move(hub_url)), renew_at_(renew_at) {}

CertificateRenewer::~CertificateRenewer() { stop(); }

void CertificateRenewer::start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void CertificateRenewer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t CertificateRenewer::renewals() const {
  std::lock_guard lock(mu_);
  return renewals_;
}

void CertificateRenewer::run() {
  const std::string cert_path = identity_dir(data_dir_) + "/site.crt";
  while (true) {
    std::chrono::milliseconds wait(60'000);
    auto cert = read_text(cert_path);
    std::error_code ec;
    if (cert.ok() && std::filesystem::exists(cert_path, ec)) {
      auto v = daemon::cert_validity(*cert);
      if (v.ok()) {
        const uint64_t life = v->not_after_ms - v->not_before_ms;
        wait = std::chrono::milliseconds(std::clamp<uint64_t>(life / 20, 1000, 600'000));
      }
      auto due = renewal_due(*cert, renew_at_, now_ms());
      if (due.ok() && *due) {
        Status st = renew_site_certificate(data_dir_, hub_url_);
        if (st.ok()) {
          std::lock_guard lock(mu_);
          ++renewals_;
        } else {
          spdlog::warn("certificate renewal failed (tried again in {} s): {}", wait.count() / 1000,
                       st.message());
        }
      } else if (!due.ok()) {
        spdlog::warn("{}: {}", cert_path, due.status().message());
      }
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, wait, [this] { return stopping_; })) return;
  }
}

}  // namespace canopy::spoke
