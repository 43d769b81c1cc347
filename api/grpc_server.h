// Starting the hub's gRPC server.
//
// Transport security: plain TCP unless TLS files are given (api/tls.h):
// then TLS, and with a client CA, client certificates required and verified
// (REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY). gRPC logs a failed
// handshake itself ("Handshake failed with fatal error ...", on stderr).
#pragma once

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/tls.h"
#include "store/status.h"

namespace canopy::api {

// Largest request or response message: a document (1 MiB by default) plus its
// envelope, with room to spare.
inline constexpr int kMaxGrpcMessageBytes = 4 << 20;

// Threads the server keeps waiting for calls once a burst of concurrent
// calls has passed (grpc_server.cc).
inline constexpr int kMaxIdlePollers = 128;

class CatalogService;

// A started gRPC server, with the threads that serve the catalog's Put from
// the server's completion queue (CatalogService::serve_puts): a write waits
// for its fsync on no thread (the store finishes it), and it shares no
// threads with the watch streams (gRPC's callback threads) either.
class GrpcServer {
 public:
  GrpcServer(std::unique_ptr<grpc::Server> server, std::unique_ptr<grpc::ServerCompletionQueue> cq,
             CatalogService* catalog);
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Stops taking calls and cancels those still open at `deadline` (open
  // watch streams), then waits for the Puts in flight to finish and stops
  // the threads that serve them. Idempotent.
  void Shutdown(std::chrono::system_clock::time_point deadline);
  void Shutdown() { Shutdown(std::chrono::system_clock::now()); }

 private:
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  CatalogService* catalog_;
  std::vector<std::thread> threads_;
  bool shut_down_ = false;
};

// Threads serving the catalog's Puts from the completion queue.
inline constexpr int kPutThreads = 2;

// Listens on `listen_addr` ("host:port"; port 0 picks a free one, written to
// `*bound_port` when not null) and serves `services`, which must outlive the
// server, with `credentials` (null: plain TCP). At most one of them may be a
// CatalogService. Returns nullptr when the address cannot be bound. Shut the
// server down with a deadline (Shutdown(deadline)) so that open watch streams
// are cancelled rather than waited for.
std::unique_ptr<GrpcServer> start_grpc_server(
    const std::string& listen_addr, std::vector<grpc::Service*> services, int* bound_port,
    std::shared_ptr<grpc::ServerCredentials> credentials = nullptr);

// Keeps freed heap memory in the process instead of handing it back to the
// kernel at once (glibc's M_TRIM_THRESHOLD 256 MiB, M_MMAP_THRESHOLD
// 16 MiB). Watch streams allocate and free buffers of tens to hundreds of
// KiB at a high rate; with glibc's defaults those pages go back to the
// kernel and are faulted in and zeroed again, which cost api.watch about a
// fifth of its CPU (docs/api-performance.md). The price: up to that much
// freed memory stays mapped. Call once at start, before threads.
void keep_freed_memory();

// TLS credentials from the files (read now; errors name the file).
StatusOr<std::shared_ptr<grpc::ServerCredentials>> grpc_tls_credentials(
    const TlsServerFiles& files);

}  // namespace canopy::api
