#include "tests/kubeapi/kube_status.h"

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

json details_of(const ResourceRef& ref) {
  json d{{"name", ref.name}, {"kind", ref.resource}};
  if (!ref.group.empty()) d["group"] = ref.group;
  return d;
}

std::string qualified(const ResourceRef& ref) {
  return ref.group.empty() ? ref.resource : ref.resource + "." + ref.group;
}

}  // namespace

ApiResponse status_failure(int code, const std::string& reason, const std::string& message,
                           json details) {
  json body{{"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", json::object()},
            {"status", "Failure"}, {"message", message}, {"reason", reason},
            {"code", code}};
  if (!details.is_null()) body["details"] = std::move(details);
  return ApiResponse{code, std::move(body), "", {}, nullptr};
}

ApiResponse status_success(const ResourceRef& ref, const std::string& uid) {
  json details = details_of(ref);
  details["uid"] = uid;
  return ApiResponse{200,
                     json{{"kind", "Status"},
                          {"apiVersion", "v1"},
                          {"metadata", json::object()},
                          {"status", "Success"},
                          {"details", details}},
                     "",
                     {},
                     nullptr};
}

ApiResponse not_found(const ResourceRef& ref) {
  return status_failure(404, "NotFound", qualified(ref) + " \"" + ref.name + "\" not found",
                        details_of(ref));
}

ApiResponse resource_not_served() {
  return status_failure(404, "NotFound", "the server could not find the requested resource",
                        json::object());
}

ApiResponse already_exists(const ResourceRef& ref) {
  return status_failure(409, "AlreadyExists",
                        qualified(ref) + " \"" + ref.name + "\" already exists", details_of(ref));
}

ApiResponse modified_conflict(const ResourceRef& ref) {
  return status_failure(409, "Conflict",
                        "Operation cannot be fulfilled on " + qualified(ref) + " \"" + ref.name +
                            "\": the object has been modified; please apply your changes to the "
                            "latest version and try again",
                        details_of(ref));
}

ApiResponse bad_request(const std::string& message) {
  return status_failure(400, "BadRequest", message);
}

ApiResponse method_not_allowed(const std::string& method) {
  return status_failure(405, "MethodNotAllowed",
                        "the server does not allow this method on the requested resource",
                        json{{"causes", json::array({json{{"message", method}}})}});
}

ApiResponse unsupported_media_type(const std::string& content_type,
                                   const std::vector<std::string>& accepted) {
  std::string list;
  for (const auto& a : accepted) list += (list.empty() ? "" : ", ") + a;
  return status_failure(415, "UnsupportedMediaType",
                        "the body of the request was in an unknown format (" + content_type +
                            ") - accepted media types include: " + list);
}

ApiResponse invalid(const std::string& kind, const ResourceRef& ref, const std::string& field,
                    const std::string& value, const std::string& why) {
  std::string cause = "Invalid value: " + json(value).dump() + ": " + why;
  json details = details_of(ref);
  details["kind"] = kind;
  details["causes"] =
      json::array({json{{"reason", "FieldValueInvalid"}, {"message", cause}, {"field", field}}});
  return status_failure(
      422, "Invalid", kind + " \"" + ref.name + "\" is invalid: " + field + ": " + cause, details);
}

ApiResponse unauthorized() { return status_failure(401, "Unauthorized", "Unauthorized"); }

ApiResponse too_many_requests(int retry_after_seconds) {
  ApiResponse r =
      status_failure(429, "TooManyRequests", "Too many requests, please try again later.",
                     json{{"retryAfterSeconds", retry_after_seconds}});
  r.headers.emplace_back("Retry-After", std::to_string(retry_after_seconds));
  return r;
}

}  // namespace canopy::kubeapi
