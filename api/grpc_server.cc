#include "api/grpc_server.h"

#include <grpcpp/server_builder.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include "api/catalog_service.h"

namespace canopy::api {

void keep_freed_memory() {
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
}

StatusOr<std::shared_ptr<grpc::ServerCredentials>> grpc_tls_credentials(
    const TlsServerFiles& files) {
  // gRPC checks the pair only when it listens, and says no more than that
  // it cannot.
  CANOPY_RETURN_IF_ERROR(check_server_tls(files));
  auto cert = read_tls_file("tls_cert_file", files.cert_file);
  if (!cert.ok()) return cert.status();
  auto key = read_tls_file("tls_key_file", files.key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (files.requires_client_cert()) {
    auto ca = read_tls_file("tls_client_ca_file", files.client_ca_file);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

GrpcServer::GrpcServer(std::unique_ptr<grpc::Server> server,
                       std::unique_ptr<grpc::ServerCompletionQueue> cq, CatalogService* catalog)
    : server_(std::move(server)), cq_(std::move(cq)), catalog_(catalog) {
  if (catalog_ == nullptr) return;
  // Asked before any thread runs, so that a Shutdown right after this waits
  // for them.
  for (int i = 0; i < kPutThreads; ++i) catalog_->request_put(cq_.get());
  for (int i = 0; i < kPutThreads; ++i) {
    threads_.emplace_back([this] { catalog_->serve_puts(cq_.get()); });
  }
}

GrpcServer::~GrpcServer() { Shutdown(); }

void GrpcServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(deadline);
  // A Put in flight is finished by the store's completion, which queues its
  // last event here, and the calls still asked for end refused: the queue
  // shuts down only after every one has ended.
  if (catalog_ != nullptr) catalog_->wait_for_puts();
  if (cq_ != nullptr) cq_->Shutdown();
  for (auto& t : threads_) t.join();
}

std::unique_ptr<GrpcServer> start_grpc_server(
    const std::string& listen_addr, std::vector<grpc::Service*> services, int* bound_port,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  grpc::ServerBuilder builder;
  CatalogService* catalog = nullptr;
  for (grpc::Service* s : services) {
    if (auto* c = dynamic_cast<CatalogService*>(s); c != nullptr) {
      CANOPY_CHECK(catalog == nullptr);
      catalog = c;
    }
  }
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  if (catalog != nullptr) cq = builder.AddCompletionQueue();
  int port = 0;
  builder.AddListeningPort(listen_addr,
                           credentials ? credentials : grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  // A port another process holds is an error, not a shared listener.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // The sync server runs each call on a thread of its own, and a write
  // blocks for its group commit's fsync, so many calls are in a handler at
  // once. A thread that finishes a call goes back to polling; past
  // MAX_POLLERS idle pollers (2 by default) it exits, and the next burst
  // creates threads again: at a few thousand writes a second that churn of
  // thread creation and exit cost more than the calls' own work. Idle
  // threads are kept instead (they sleep in the completion queue).
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, kMaxIdlePollers);
  for (grpc::Service* s : services) builder.RegisterService(s);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    spdlog::error("gRPC server: cannot listen on {}", listen_addr);
    if (server != nullptr) server->Shutdown();
    if (cq != nullptr) {
      cq->Shutdown();
      void* tag = nullptr;
      bool ok = false;
      while (cq->Next(&tag, &ok)) {
      }
    }
    return nullptr;
  }
  if (bound_port != nullptr) *bound_port = port;
  spdlog::info("gRPC server listening on {} (port {}{})", listen_addr, port,
               credentials ? ", TLS" : "");
  return std::make_unique<GrpcServer>(std::move(server), std::move(cq), catalog);
}

}  // namespace canopy::api
