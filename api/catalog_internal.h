// Private to CatalogService's files (catalog_service.cc, catalog_watch.cc):
// include nowhere else.
#pragma once

#include <grpcpp/server_context.h>

#include <string_view>

namespace canopy::api {

// The request's `authorization` metadata ("Bearer <token>"), empty when
// there is none.
std::string_view bearer_of(const grpc::ServerContextBase* context);

}  // namespace canopy::api
