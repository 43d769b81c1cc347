#include "tests/kubeapi/fake_apiserver.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

std::vector<X509*> read_certs(const std::string& pem) {
  std::vector<X509*> out;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.push_back(cert);
  ERR_clear_error();
  BIO_free(bio);
  return out;
}

std::string header(const httplib::Request& req, const char* name) {
  return req.has_header(name) ? req.get_header_value(name) : "";
}

}  // namespace

// OpenSSL objects for the listening socket, owned by the server.
struct FakeApiServer::Tls {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  X509_STORE* client_cas = nullptr;
  std::vector<X509*> ca_certs;

  ~Tls() {
    X509_free(cert);
    EVP_PKEY_free(key);
    X509_STORE_free(client_cas);
    for (X509* c : ca_certs) X509_free(c);
  }

  // The user named by a verified client certificate on `ssl`, or "".
  std::string client_user(const SSL* ssl) const {
    if (ssl == nullptr || client_cas == nullptr) return "";
    X509* peer = SSL_get1_peer_certificate(ssl);
    if (peer == nullptr) return "";
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
    std::string user;
    if (X509_STORE_CTX_init(ctx, client_cas, peer, chain) == 1) {
      X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
      if (X509_verify_cert(ctx) == 1) {
        char cn[256] = {0};
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
        user = cn;
      }
    }
    X509_STORE_CTX_free(ctx);
    X509_free(peer);
    ERR_clear_error();
    return user;
  }

  bool configure(SSL_CTX& ctx) const {
    SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate(&ctx, cert) != 1 || SSL_CTX_use_PrivateKey(&ctx, key) != 1) {
      return false;
    }
    if (client_cas != nullptr) {
      STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
      for (X509* c : ca_certs) sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(c)));
      SSL_CTX_set_client_CA_list(&ctx, names);
      // Ask for a certificate, accept any: authentication verifies it.
      SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
    }
    return true;
  }
};

FakeApiServer::FakeApiServer(FakeApiServerOptions options)
    : options_(std::move(options)), api_(options_.api), tls_(std::make_unique<Tls>()) {}

FakeApiServer::~FakeApiServer() { stop(); }

StatusOr<std::unique_ptr<FakeApiServer>> FakeApiServer::start(FakeApiServerOptions options) {
  std::unique_ptr<FakeApiServer> s(new FakeApiServer(std::move(options)));
  Tls& tls = *s->tls_;
  std::vector<X509*> certs = read_certs(s->options_.server_cert_pem);
  if (certs.empty()) return invalid_argument("server_cert_pem: no PEM certificate");
  tls.cert = certs[0];
  for (size_t i = 1; i < certs.size(); ++i) X509_free(certs[i]);
  BIO* bio = BIO_new_mem_buf(s->options_.server_key_pem.data(),
                             static_cast<int>(s->options_.server_key_pem.size()));
  tls.key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (tls.key == nullptr) return invalid_argument("server_key_pem: no PEM private key");
  if (!s->options_.client_ca_pem.empty()) {
    tls.ca_certs = read_certs(s->options_.client_ca_pem);
    if (tls.ca_certs.empty()) return invalid_argument("client_ca_pem: no PEM certificate");
    tls.client_cas = X509_STORE_new();
    for (X509* c : tls.ca_certs) X509_STORE_add_cert(tls.client_cas, c);
  }
  const Tls* tls_ptr = s->tls_.get();
  s->server_ = std::make_unique<httplib::SSLServer>(
      [tls_ptr](SSL_CTX& ctx) { return tls_ptr->configure(ctx); });
  if (!s->server_->is_valid()) return internal_error("TLS context setup failed");
  // Each open watch holds a thread; the default pool (8) would stall.
  s->server_->new_task_queue = [] { return new httplib::ThreadPool(kMaxConnections); };
  s->server_->set_keep_alive_max_count(kMaxRequestsPerConnection);
  // Go's net/http (kube-apiserver) sets TCP_NODELAY on every connection;
  // without it a response written in two parts waits for the client's
  // delayed ACK (40 ms a request on Linux).
  s->server_->set_tcp_nodelay(true);

  FakeApiServer* self = s.get();
  auto handler = [self](const httplib::Request& req, httplib::Response& res) {
    ServedRequest served{req.method, req.target, header(req, "Accept"), header(req, "Content-Type"),
                         "",         0};
    served.user = self->tls_->client_user(req.ssl);
    std::string auth = header(req, "Authorization");
    if (served.user.empty() && auth.rfind("Bearer ", 0) == 0) {
      auto it = self->options_.tokens.find(auth.substr(7));
      if (it != self->options_.tokens.end()) served.user = it->second;
    }
    ApiResponse out;
    std::optional<Fault> fault;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      for (auto it = self->faults_.begin(); it != self->faults_.end() && !served.user.empty();
           ++it) {
        if (req.path.rfind(it->path_prefix, 0) != 0) continue;
        fault = *it;
        if (it->count > 0 && --it->count == 0) self->faults_.erase(it);
        break;
      }
    }
    if (served.user.empty()) {
      out = unauthorized();
    } else if (fault && fault->code == 429) {
      out = too_many_requests(fault->retry_after_seconds);
    } else if (fault) {
      out = status_failure(fault->code, fault->code == 503 ? "ServiceUnavailable" : "InternalError",
                           "injected fault");
      if (fault->retry_after_seconds > 0) {
        out.headers.emplace_back("Retry-After", std::to_string(fault->retry_after_seconds));
      }
    } else {
      ApiRequest api_req{
          req.method, req.path, {}, header(req, "Content-Type"), header(req, "User-Agent"),
          req.body};
      for (const auto& [k, v] : req.params) api_req.query.emplace(k, v);
      out = self->api_.handle(api_req);
    }
    res.status = out.code;
    for (const auto& [k, v] : out.headers) res.set_header(k, v);
    if (out.watch) {
      // kube-apiserver never compresses a watch. Debian's cpp-httplib
      // compresses a chunked application/json body whenever the client accepts
      // gzip or br (Go's client always does), and its compressor holds every
      // event until the stream ends: kubectl's watches would see nothing. The
      // request object is httplib's own mutable local; only the header goes.
      const_cast<httplib::Request&>(req).headers.erase("Accept-Encoding");
      auto w = out.watch;
      res.set_chunked_content_provider(
          "application/json", [self, w](size_t, httplib::DataSink& sink) {
            while (!self->stopping_.load()) {
              auto events = self->api_.poll_watch(*w, std::chrono::milliseconds(100));
              if (!events) break;
              if (!events->empty()) return sink.write(events->data(), events->size());
              if (!sink.is_writable()) return false;
            }
            sink.done();
            return true;
          });
    } else if (!out.text.empty() || out.body.is_null()) {
      res.set_content(out.text, "text/plain; charset=utf-8");
    } else {
      res.set_content(out.body.dump(), "application/json");
    }
    served.code = out.code;
    std::lock_guard<std::mutex> lock(self->mu_);
    if (self->log_.size() >= kMaxLoggedRequests) self->log_.erase(self->log_.begin());
    self->log_.push_back(std::move(served));
  };
  s->server_->Get(".*", handler);
  s->server_->Post(".*", handler);
  s->server_->Put(".*", handler);
  s->server_->Patch(".*", handler);
  s->server_->Delete(".*", handler);

  int port = s->options_.port;
  if (port == 0) {
    port = s->server_->bind_to_any_port("127.0.0.1");
  } else if (!s->server_->bind_to_port("127.0.0.1", port)) {
    port = -1;
  }
  if (port <= 0) return unavailable("cannot bind 127.0.0.1:" + std::to_string(s->options_.port));
  s->port_ = port;
  s->thread_ = std::thread([self] { self->server_->listen_after_bind(); });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!s->server_->is_running()) {
    if (std::chrono::steady_clock::now() > deadline) return internal_error("server did not start");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return s;
}

void FakeApiServer::arm_fault(const Fault& fault) {
  std::lock_guard<std::mutex> lock(mu_);
  faults_.push_back(fault);
}

void FakeApiServer::disarm_faults() {
  std::lock_guard<std::mutex> lock(mu_);
  faults_.clear();
}

std::vector<ServedRequest> FakeApiServer::served_requests() {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

void FakeApiServer::stop() {
  stopping_.store(true);
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace canopy::kubeapi
