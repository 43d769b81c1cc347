// YAML to JSON as the YAML 1.2 core schema reads it, for kubectl-canopy's
// files and the REST API's YAML bodies: one conversion, so a document means
// the same whichever way it reaches the hub. Quoted scalars (and `!!str`) are
// strings; plain ones may be null, booleans, integers or floats; values with
// no JSON equivalent (.inf, .nan) and non-string keys are refused, naming
// the field.
#pragma once

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "store/status.h"

namespace canopy::api {

inline constexpr int kMaxYamlDepth = 100;

// `field` names the node in messages ("spec", "spec.template").
StatusOr<nlohmann::json> yaml_to_json(const YAML::Node& node, const std::string& field);
// A text of exactly one YAML (or JSON) document. InvalidArgument when it is
// malformed, empty, or holds several documents.
StatusOr<nlohmann::json> parse_yaml_document(std::string_view text);

}  // namespace canopy::api
