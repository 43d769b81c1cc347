// Starting the hub's gRPC server.
//
// Transport security: insecure credentials for now; mTLS for hubs and spokes
// and TLS with bearer tokens for users arrive in a later issue, as a
// credentials argument here.
#pragma once

#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <vector>

namespace canopy::api {

// Largest request or response message: a document (1 MiB by default) plus its
// envelope, with room to spare.
inline constexpr int kMaxGrpcMessageBytes = 4 << 20;

// Threads the server keeps waiting for calls once a burst of concurrent
// calls has passed (grpc_server.cc).
inline constexpr int kMaxIdlePollers = 128;

// Listens on `listen_addr` ("host:port"; port 0 picks a free one, written to
// `*bound_port` when not null) and serves `services`, which must outlive the
// server. Returns nullptr when the address cannot be bound. Shut the server
// down with a deadline (Shutdown(deadline)) so that open watch streams are
// cancelled rather than waited for.
std::unique_ptr<grpc::Server> start_grpc_server(const std::string& listen_addr,
                                                std::vector<grpc::Service*> services,
                                                int* bound_port);

}  // namespace canopy::api
