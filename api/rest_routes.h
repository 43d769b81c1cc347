// Private to the REST adapter (rest.cc, rest_access.cc): what its route
// files share. Include nowhere else.
#pragma once

#include <httplib.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "api/catalog_service.h"

namespace canopy::api::rest_routes {

using CatalogOf = std::function<CatalogService*()>;

// The path pattern of one name (a tenant, site, object or token id).
inline constexpr const char* kName = "([^/]+)";

// An error as {"error": {"code", "message"}} with the code's HTTP status.
void reply_status(httplib::Response& res, const grpc::Status& status);
void reply_invalid(httplib::Response& res, const std::string& message);

// The query's parameters, from the URL only: httplib also files the fields
// of a form-encoded body under Request::params, and curl's `-d` labels a
// JSON body form-encoded unless told otherwise.
httplib::Params query_of(const httplib::Request& req);
std::string param(const httplib::Params& params, const std::string& name);
// Refuses query parameters other than `allowed` (a misspelt `labelSelecter`
// would otherwise list everything), and repeated ones.
bool check_params(const httplib::Request& req, httplib::Response& res,
                  std::initializer_list<std::string_view> allowed);

// Runs `handler(service, Authorization header, req, res)`, or answers 503
// while there is no service.
template <typename Handler>
httplib::Server::Handler with(CatalogOf catalog_of, Handler handler) {
  return [catalog_of = std::move(catalog_of), handler](const httplib::Request& req,
                                                       httplib::Response& res) {
    CatalogService* catalog = catalog_of();
    if (catalog == nullptr) {
      reply_status(res, grpc::Status(grpc::StatusCode::UNAVAILABLE, "the hub is starting"));
      return;
    }
    handler(catalog, req.get_header_value("Authorization"), req, res);
  };
}

// Tokens, enrollment and certificate renewal (rest_access.cc).
void add_access_routes(httplib::Server& server, const CatalogOf& catalog_of);

}  // namespace canopy::api::rest_routes
