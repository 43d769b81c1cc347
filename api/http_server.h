// HttpServer: an HTTP server (cpp-httplib) on its own thread, with the
// start/stop lifecycle of the daemons' parts.
//
// With TLS files (api/tls.h) it serves HTTPS on the same listener (HTTP/1.1
// keep-alive as before); a bad file makes start() fail, naming it.
//
// Routes are added to server() before start(). stop() is idempotent and waits
// for the serving thread; httplib's own stop is a no-op until the server
// runs, so stop() first waits (briefly) for it to run.
#pragma once

#include <httplib.h>

#include <memory>
#include <string>
#include <thread>

#include "api/tls.h"
#include "daemon/process.h"
#include "store/status.h"

namespace canopy::api {

class HttpServer {
 public:
  // Connections waiting to be accepted.
  static constexpr int kListenBacklog = 1024;

  explicit HttpServer(TlsServerFiles tls = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  httplib::Server& server() { return *server_; }
  bool tls() const { return tls_.enabled(); }

  // Binds `listen` ("host:port"; port 0 picks a free one) and serves on a new
  // thread. Unavailable when the address cannot be bound.
  Status start(const std::string& listen);
  void stop();
  // This server as a part of a daemon (daemon::run_until_signal): `name`
  // for the logs, listening on `listen`.
  daemon::Part part(std::string name, std::string listen);
  // The bound port, after start().
  int port() const { return port_; }

 private:
  TlsServerFiles tls_;
  Status tls_status_;  // what setting up TLS said
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  int listen_fd_ = -1;  // the listening socket, as the socket-options hook saw it
};

// Sets a JSON body ("<json>\n") and, unless 0, the status code.
void reply_json(httplib::Response& res, const std::string& json_text, int status = 0);
// The HTTP status of a status code (the store's, gRPC's: the same codes):
// 400 for bad input, 404 not found, 503 while unavailable (a full disk), ...
int http_status(StatusCode code);
// {"error": message} with `status`.
void reply_error(httplib::Response& res, int status, const std::string& message);

}  // namespace canopy::api
