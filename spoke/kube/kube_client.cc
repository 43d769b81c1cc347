#include "spoke/kube/kube_client.h"

#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace canopy::spoke::kube {
namespace {

using std::chrono::milliseconds;

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyDeleter>;

BioPtr bio_of(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

std::string asn1_time(const ASN1_TIME* t) {
  BioPtr out(BIO_new(BIO_s_mem()));
  ASN1_TIME_print(out.get(), t);
  char* data = nullptr;
  const long n = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string common_name(X509* cert) {
  char buf[256] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof(buf));
  return buf;
}

bool retryable_code(int code) {
  return code == 429 || code == 500 || code == 502 || code == 503 || code == 504;
}

int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

}  // namespace

nlohmann::json KubeResponse::json() const {
  return nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
}

nlohmann::json KubeResponse::object_json() const {
  using nlohmann::json;
  // keys[d]: the last key read at depth d (the key of the value at depth d
  // when its container is an object; "" inside an array). The object's
  // metadata is {"metadata": ...} at depth 1; an item's, under {"items":
  // [...]}, at depth 3.
  std::vector<std::string> keys(8);
  auto callback = [&keys](int depth, json::parse_event_t event, json& parsed) {
    const auto d = static_cast<size_t>(depth);
    if (event == json::parse_event_t::array_start) {
      if (d + 1 < keys.size()) keys[d + 1].clear();
      return true;
    }
    if (event != json::parse_event_t::key || d >= keys.size()) return true;
    keys[d] = parsed.get<std::string>();
    if (keys[d] != "managedFields" || keys[d - 1] != "metadata") return true;
    return d == 2 ? false : !(d == 4 && keys[1] == "items" && keys[2].empty());
  };
  return json::parse(body, callback, /*allow_exceptions=*/false);
}

KubeClient::KubeClient(KubeEndpoint endpoint, KubeClientOptions options)
    : endpoint_(std::move(endpoint)), options_(std::move(options)) {
  if (!options_.sleep) options_.sleep = [](milliseconds d) { std::this_thread::sleep_for(d); };
}

KubeClient::~KubeClient() = default;

StatusOr<std::unique_ptr<KubeClient>> KubeClient::create(KubeEndpoint endpoint,
                                                         KubeClientOptions options) {
  std::unique_ptr<KubeClient> c(new KubeClient(std::move(endpoint), std::move(options)));
  if (Status s = c->connect(); !s.ok()) return s;
  return c;
}

Status KubeClient::connect() {
  const std::string& url = endpoint_.server;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    https_ = true;
    rest = url.substr(8);
    port_ = 443;
  } else if (url.rfind("http://", 0) == 0) {
    https_ = false;
    rest = url.substr(7);
    port_ = 80;
  } else {
    return invalid_argument(endpoint_.source + ": server '" + url + "' is not an http(s) URL");
  }
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    if (rest.substr(slash) != "/") {
      return invalid_argument(endpoint_.source + ": server '" + url +
                              "' has a path (not supported)");
    }
    rest.resize(slash);
  }
  host_ = rest;
  if (auto colon = rest.rfind(':'); colon != std::string::npos && rest.back() != ']') {
    host_ = rest.substr(0, colon);
    try {
      port_ = std::stoi(rest.substr(colon + 1));
    } catch (const std::exception&) {
      return invalid_argument(endpoint_.source + ": server '" + url + "' has a bad port");
    }
  }
  if (host_.size() > 2 && host_.front() == '[') host_ = host_.substr(1, host_.size() - 2);
  if (host_.empty())
    return invalid_argument(endpoint_.source + ": server '" + url + "' has no host");

  if (!https_) {
    if (!endpoint_.client_cert_pem.empty()) {
      return invalid_argument(endpoint_.source + ": a client certificate needs an https server");
    }
    http_ = std::make_unique<httplib::ClientImpl>(host_, port_);
  } else {
    X509Ptr cert;
    KeyPtr key;
    if (!endpoint_.client_cert_pem.empty()) {
      BioPtr cb = bio_of(endpoint_.client_cert_pem);
      cert.reset(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
      if (!cert) return invalid_argument(endpoint_.source + ": client certificate: not PEM");
      BioPtr kb = bio_of(endpoint_.client_key_pem);
      key.reset(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
      if (!key) return invalid_argument(endpoint_.source + ": client key: not PEM");
      if (X509_check_private_key(cert.get(), key.get()) != 1) {
        return invalid_argument(endpoint_.source +
                                ": the client key does not match the client "
                                "certificate (CN=" +
                                common_name(cert.get()) + ")");
      }
      if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) < 0) {
        return failed_precondition(endpoint_.source +
                                   ": client certificate (CN=" + common_name(cert.get()) +
                                   ") expired at " + asn1_time(X509_get0_notAfter(cert.get())));
      }
      if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) > 0) {
        return failed_precondition(
            endpoint_.source + ": client certificate (CN=" + common_name(cert.get()) +
            ") is not valid before " + asn1_time(X509_get0_notBefore(cert.get())));
      }
    }
    auto ssl = std::make_unique<httplib::SSLClient>(host_, port_, cert.get(), key.get());
    if (!ssl->is_valid()) return internal_error(endpoint_.source + ": cannot set up TLS");
    if (endpoint_.insecure_skip_tls_verify) {
      ssl->enable_server_certificate_verification(false);
    } else {
      ssl->enable_server_certificate_verification(true);
      if (!endpoint_.ca_pem.empty()) {
        X509_STORE* store = X509_STORE_new();
        BioPtr b = bio_of(endpoint_.ca_pem);
        int added = 0;
        while (X509* ca = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) {
          X509_STORE_add_cert(store, ca);
          X509_free(ca);
          ++added;
        }
        if (added == 0) {
          X509_STORE_free(store);
          return invalid_argument(endpoint_.source + ": certificate authority: no PEM certificate");
        }
        ssl->set_ca_cert_store(store);  // the client's TLS context owns it now
      } else {
        X509_STORE* store = X509_STORE_new();
        X509_STORE_set_default_paths(store);
        ssl->set_ca_cert_store(store);
      }
    }
    http_ = std::move(ssl);
  }
  auto secs = [](milliseconds d) { return static_cast<time_t>(d.count() / 1000); };
  auto usecs = [](milliseconds d) { return static_cast<time_t>(d.count() % 1000 * 1000); };
  http_->set_connection_timeout(secs(options_.connect_timeout), usecs(options_.connect_timeout));
  http_->set_read_timeout(secs(options_.request_timeout), usecs(options_.request_timeout));
  http_->set_write_timeout(secs(options_.request_timeout), usecs(options_.request_timeout));
  http_->set_keep_alive(true);
  // A request is written in parts (headers, body): without TCP_NODELAY each
  // waits for the server's delayed ACK.
  http_->set_tcp_nodelay(true);
  return ok_status();
}

std::string KubeClient::bearer_token() {
  if (endpoint_.token_file.empty()) return endpoint_.token;
  const int64_t m = mtime_ns(endpoint_.token_file);
  if (m != token_mtime_ns_) {
    std::ifstream in(endpoint_.token_file);
    std::ostringstream s;
    s << in.rdbuf();
    token_ = s.str();
    while (!token_.empty() && (token_.back() == '\n' || token_.back() == '\r')) token_.pop_back();
    token_mtime_ns_ = m;
  }
  return token_;
}

StatusOr<KubeResponse> KubeClient::request(const std::string& method, const std::string& path,
                                           const std::string& body,
                                           const std::string& content_type) {
  milliseconds backoff = options_.backoff_initial;
  KubeResponse out;
  Status last_error;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    httplib::Request req;
    req.method = method;
    req.path = path;
    req.body = body;
    req.headers.emplace("Accept", "application/json");
    req.headers.emplace("User-Agent", options_.user_agent);
    if (!content_type.empty()) req.headers.emplace("Content-Type", content_type);
    const std::string token = bearer_token();
    if (!token.empty()) req.headers.emplace("Authorization", "Bearer " + token);
    ++sent_;
    httplib::Result res = http_->send(req);
    milliseconds wait = backoff;
    if (!res) {
      const httplib::Error err = res.error();
      if (err == httplib::Error::SSLServerVerification) {
        auto* ssl = static_cast<httplib::SSLClient*>(http_.get());
        const long v = ssl->get_openssl_verify_result();
        std::string why = v == X509_V_OK ? "the host name does not match the certificate"
                                         : X509_verify_cert_error_string(v);
        return failed_precondition("TLS: the certificate of " + endpoint_.server +
                                   " does not verify (" + why + ") against the CA of " +
                                   endpoint_.source);
      }
      last_error = unavailable("cannot reach " + endpoint_.server + ": " + httplib::to_string(err));
    } else {
      out.code = res->status;
      out.body = std::move(res->body);
      out.attempts = attempt;
      if (!retryable_code(out.code)) return out;
      last_error = ok_status();
      if (res->has_header("Retry-After")) {
        try {
          wait = std::min(milliseconds(std::stoll(res->get_header_value("Retry-After")) * 1000),
                          options_.retry_after_max);
        } catch (const std::exception&) {
          // An HTTP date or garbage: use the backoff.
        }
      }
    }
    if (attempt == options_.max_attempts) break;
    // Jitter: up to a quarter of the wait, so spokes retrying together spread.
    jitter_state_ ^= jitter_state_ << 13;
    jitter_state_ ^= jitter_state_ >> 7;
    jitter_state_ ^= jitter_state_ << 17;
    const auto quarter = std::max<int64_t>(1, wait.count() / 4);
    options_.sleep(wait + milliseconds(static_cast<int64_t>(jitter_state_ % quarter)));
    backoff = std::min(backoff * 2, options_.backoff_max);
  }
  if (!last_error.ok()) return last_error;
  return out;
}

Status status_of(const KubeResponse& response, const std::string& what) {
  const nlohmann::json j = response.json();
  std::string message;
  std::string reason;
  if (j.is_object()) {
    if (j.contains("message") && j["message"].is_string()) message = j["message"];
    if (j.contains("reason") && j["reason"].is_string()) reason = j["reason"];
  }
  if (message.empty()) message = response.body.substr(0, 200);
  std::string text = what + ": " + std::to_string(response.code) +
                     (reason.empty() ? "" : " " + reason) + ": " + message;
  if (response.attempts > 1) text += " (after " + std::to_string(response.attempts) + " attempts)";
  const int c = response.code;
  if (c == 404) return not_found(text);
  if (c == 409) {
    return Status(reason == "AlreadyExists" ? StatusCode::kAlreadyExists : StatusCode::kAborted,
                  text);
  }
  if (c == 401) return unauthenticated(text);
  if (c == 403) return permission_denied(text);
  if (c == 400 || c == 422 || c == 415) return invalid_argument(text);
  if (c == 429 || c >= 500) return unavailable(text);
  return internal_error(text);
}

}  // namespace canopy::spoke::kube
