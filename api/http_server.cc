#include "api/http_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "daemon/process.h"

namespace canopy::api {

HttpServer::HttpServer(TlsServerFiles tls) : tls_(std::move(tls)) {
  if (!tls_.enabled()) {
    server_ = std::make_unique<httplib::Server>();
    return;
  }
  server_ = std::make_unique<httplib::SSLServer>([this](SSL_CTX& ctx) {
    tls_status_ = configure_server_tls(&ctx, tls_);
    return tls_status_.ok();
  });
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start(const std::string& listen) {
  // The library listens with a backlog of 5 (compiled in): a burst of new
  // connections (many clients at once, or all reconnecting) would see SYNs
  // dropped and wait a second each. Linux lets a listening socket's backlog
  // be raised by calling listen() again, so keep the socket and do that.
  if (!tls_status_.ok()) return tls_status_;
  if (!server_->is_valid()) return invalid_argument("HTTP server: cannot set up TLS");
  listen_fd_ = -1;
  server_->set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd_ = sock;
  });
  std::string host;
  int port = 0;
  if (!daemon::split_host_port(listen, &host, &port)) {
    return invalid_argument("listen address \"" + listen + "\" must be host:port");
  }
  if (port == 0) {
    port_ = server_->bind_to_any_port(host.c_str());
    if (port_ < 0) return unavailable("cannot listen on " + listen);
  } else {
    if (!server_->bind_to_port(host.c_str(), port))
      return unavailable("cannot listen on " + listen);
    port_ = port;
  }
  if (listen_fd_ >= 0 && ::listen(listen_fd_, kListenBacklog) != 0) {
    spdlog::warn("{}: cannot raise the listen backlog: {}", listen, std::strerror(errno));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return ok_status();
}

void HttpServer::stop() {
  if (!thread_.joinable()) return;
  for (int i = 0; i < 1000 && !server_->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->stop();
  thread_.join();
}

daemon::Part HttpServer::part(std::string name, std::string listen) {
  return {name,
          [this, name, listen]() -> Status {
            CANOPY_RETURN_IF_ERROR(start(listen));
            spdlog::info("{} on {}://{}/healthz{}", name, tls() ? "https" : "http", listen,
                         tls_.requires_client_cert() ? " (client certificates required)" : "");
            return ok_status();
          },
          [this] { stop(); }};
}

void reply_json(httplib::Response& res, const std::string& json_text, int status) {
  if (status != 0) res.status = status;
  res.set_content(json_text + "\n", "application/json");
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  reply_json(res, nlohmann::json{{"error", message}}.dump(), status);
}

}  // namespace canopy::api
