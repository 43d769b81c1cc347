// Conversion between canopy::Status and grpc::Status.
//
// canopy::StatusCode uses gRPC's canonical codes with the same numbers, so the
// mapping is one to one and the message passes through unchanged: an API
// handler returns `to_grpc(store_call_status)` and the client sees the code and
// the reason the store gave.
#pragma once

#include <grpcpp/support/status.h>

#include "store/status.h"

namespace canopy::api {

grpc::Status to_grpc(const Status& status);
Status from_grpc(const grpc::Status& status);

}  // namespace canopy::api
