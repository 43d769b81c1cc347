#include "api/grpc_status.h"

namespace canopy::api {
namespace {

// The numbering is shared: check every code once, at compile time.
#define CANOPY_SAME_CODE(ours, theirs) \
  static_assert(static_cast<int>(StatusCode::ours) == static_cast<int>(grpc::StatusCode::theirs))
CANOPY_SAME_CODE(kOk, OK);
CANOPY_SAME_CODE(kCancelled, CANCELLED);
CANOPY_SAME_CODE(kUnknown, UNKNOWN);
CANOPY_SAME_CODE(kInvalidArgument, INVALID_ARGUMENT);
CANOPY_SAME_CODE(kDeadlineExceeded, DEADLINE_EXCEEDED);
CANOPY_SAME_CODE(kNotFound, NOT_FOUND);
CANOPY_SAME_CODE(kAlreadyExists, ALREADY_EXISTS);
CANOPY_SAME_CODE(kPermissionDenied, PERMISSION_DENIED);
CANOPY_SAME_CODE(kResourceExhausted, RESOURCE_EXHAUSTED);
CANOPY_SAME_CODE(kFailedPrecondition, FAILED_PRECONDITION);
CANOPY_SAME_CODE(kAborted, ABORTED);
CANOPY_SAME_CODE(kOutOfRange, OUT_OF_RANGE);
CANOPY_SAME_CODE(kUnimplemented, UNIMPLEMENTED);
CANOPY_SAME_CODE(kInternal, INTERNAL);
CANOPY_SAME_CODE(kUnavailable, UNAVAILABLE);
CANOPY_SAME_CODE(kDataLoss, DATA_LOSS);
CANOPY_SAME_CODE(kUnauthenticated, UNAUTHENTICATED);
#undef CANOPY_SAME_CODE

}  // namespace

grpc::Status to_grpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

Status from_grpc(const grpc::Status& status) {
  if (status.ok()) return ok_status();
  const int code = static_cast<int>(status.error_code());
  if (code < 0 || code > static_cast<int>(StatusCode::kUnauthenticated)) {
    return Status(StatusCode::kUnknown, status.error_message());
  }
  return Status(static_cast<StatusCode>(code), status.error_message());
}

}  // namespace canopy::api
