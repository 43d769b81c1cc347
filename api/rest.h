// REST: the hub's API as HTTP/JSON, on the hub's HTTP listener, for any HTTP
// client (curl, a browser, a script) without our code. Each route is an
// adapter over one CatalogService operation, so REST and gRPC cannot differ
// in what they accept, refuse or return. The paths are listed in
// api/openapi.json, served at GET /openapi.json.
//
//   GET    /v1/tenants                                     tenants
//   GET    PUT DELETE /v1/tenants/{t}                      one tenant
//   GET    /v1/tenants/{t}/{templates|placements|overrides|grants}
//   GET    PUT DELETE /v1/tenants/{t}/{...}/{name}
//   GET    /v1/tenants/{t}/placements/{p}/status           placement status
//   GET    /v1/sites, GET PUT DELETE /v1/sites/{s}         the site registry
//   GET    POST /v1/tokens, DELETE /v1/tokens/{id}         API tokens
//   GET    /v1/watch?kind=&tenant=&from=                   newline-delimited JSON
//
// Every /v1 request needs `Authorization: Bearer <token>`; without a valid one
// the answer is 401 and nothing else. An object is
//   {"kind", "tenant", "name", "version": "<decimal>", "document": {...}}
// (the version is a string: it does not fit a JSON number's 53 bits). PUT
// takes the document itself as the body; `If-Match: "<version>"` makes it
// (and DELETE) conditional: 409 when the object has moved on. Lists take
// `?labelSelector=&limit=&continue=` and answer {"items": [...], "continue"}.
// An unknown query parameter is refused. Errors are the gRPC code's HTTP
// status with {"error": {"code": "INVALID_ARGUMENT", "message": "..."}}, the
// message naming the field and the reason.
//
// Watch events are one JSON object per line: {"type": "PUT"|"DELETE",
// "object": {...}, "position": "..."}; `from=<position>` resumes after it
// (410 when the hub's log no longer reaches back that far). An error after
// the stream started arrives as a last line {"error": {...}}.
#pragma once

#include <httplib.h>

#include <cstddef>
#include <functional>

#include "api/catalog_service.h"

namespace canopy::api {

struct RestOptions {
  // Largest request body (a document and some room).
  size_t max_body_bytes = 2 << 20;
  // Watches open at once over REST: each holds one of the server's threads.
  size_t max_watches = 48;
};

// Adds the routes to `server` and sizes its thread pool for them. `catalog`
// returns the service, or nullptr while the hub is not serving yet (503).
void add_rest_routes(httplib::Server& server, std::function<CatalogService*()> catalog,
                     RestOptions options = {});

// The HTTP status for a gRPC status code.
int http_status_of(grpc::StatusCode code);

}  // namespace canopy::api
