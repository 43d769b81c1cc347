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
  } else {
    server_ = std::make_unique<httplib::SSLServer>([this](SSL_CTX& ctx) {
      tls_status_ = configure_server_tls(&ctx, tls_);
      return tls_status_.ok();
    });
  }
  // curl's --data-binary and -d without -H send Content-Type
  // application/x-www-form-urlencoded, which the daemons read as JSON.
  // httplib would read such a body as a query string: its pairs would join
  // the query's parameters (a document holding '&' or '=' refused as bad
  // parameters), and one over 8 KiB is answered 413 with an empty body by
  // the library before any handler runs. The header says JSON before the
  // body is read. (The Request is the server's own, mutable; httplib passes
  // it to this hook as const.)
  server_->set_pre_routing_handler([](const httplib::Request& req, httplib::Response&) {
    auto it = req.headers.find("Content-Type");
    if (it != req.headers.end() && it->second.starts_with("application/x-www-form-urlencoded")) {
      const_cast<std::string&>(it->second) = "application/json";
    }
    return httplib::Server::HandlerResponse::Unhandled;
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

int http_status(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kCancelled:
      return 499;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kFailedPrecondition:
      return 400;
    case StatusCode::kOutOfRange:
      return 410;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  reply_json(res, nlohmann::json{{"error", message}}.dump(), status);
}

}  // namespace canopy::api
