// Responses of the test API server: an HTTP code with a JSON body, and the
// meta.k8s.io/v1 Status objects kube-apiserver sends with its errors.
//
// Stands for: k8s.io/apimachinery/pkg/api/errors — the reason, code, message
// and details (name, group, kind = resource, causes) of NotFound,
// AlreadyExists, Conflict, Invalid, BadRequest, MethodNotAllowed,
// UnsupportedMediaType, Unauthorized and TooManyRequests, worded as the real
// server words them, so that a client's error handling meets the real shapes.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace canopy::kubeapi {

struct WatchStream;  // api_handler.h

struct ApiResponse {
  int code = 200;
  nlohmann::json body;                                       // sent as JSON unless text is set
  std::string text;                                          // a text/plain body instead
  std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
  std::shared_ptr<WatchStream> watch;  // set: stream ApiHandler::poll_watch instead
};

struct ResourceRef {
  std::string group;
  std::string resource;  // plural
  std::string name;
};

ApiResponse status_failure(int code, const std::string& reason, const std::string& message,
                           nlohmann::json details = nullptr);
ApiResponse status_success(const ResourceRef& ref, const std::string& uid);

ApiResponse not_found(const ResourceRef& ref);          // configmaps "x" not found
ApiResponse resource_not_served();                      // the server could not find ...
ApiResponse already_exists(const ResourceRef& ref);     // configmaps "x" already exists
ApiResponse modified_conflict(const ResourceRef& ref);  // the object has been modified
ApiResponse bad_request(const std::string& message);
ApiResponse method_not_allowed(const std::string& method);
ApiResponse unsupported_media_type(const std::string& content_type,
                                   const std::vector<std::string>& accepted);
// 422: `<Kind> "<name>" is invalid: <field>: Invalid value: "<value>": <why>`.
ApiResponse invalid(const std::string& kind, const ResourceRef& ref, const std::string& field,
                    const std::string& value, const std::string& why);
ApiResponse unauthorized();
ApiResponse too_many_requests(int retry_after_seconds);

}  // namespace canopy::kubeapi
