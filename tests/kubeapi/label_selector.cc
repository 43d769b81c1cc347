#include "tests/kubeapi/label_selector.h"

#include <algorithm>
#include <cctype>

namespace canopy::kubeapi {
namespace {

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Splits on commas that are not inside parentheses.
std::vector<std::string> split_top(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(trim(cur));
  return out;
}

StatusOr<std::vector<std::string>> value_set(const std::string& rest, const std::string& text) {
  std::string r = trim(rest);
  if (r.size() < 2 || r.front() != '(' || r.back() != ')') {
    return invalid_argument("unable to parse requirement: found '" + text +
                            "', expected: '(' value list ')'");
  }
  std::vector<std::string> values;
  for (const auto& v : split_top(r.substr(1, r.size() - 2))) values.push_back(v);
  return values;
}

StatusOr<Requirement> parse_requirement(const std::string& text) {
  Requirement req;
  if (!text.empty() && text[0] == '!') {
    req.key = trim(text.substr(1));
    req.op = Requirement::Op::kNotExists;
    return req;
  }
  for (const auto& [token, op] :
       {std::pair<std::string, Requirement::Op>{"!=", Requirement::Op::kNotEquals},
        {"==", Requirement::Op::kEquals},
        {"=", Requirement::Op::kEquals}}) {
    size_t pos = text.find(token);
    if (pos != std::string::npos) {
      req.key = trim(text.substr(0, pos));
      req.op = op;
      req.values = {trim(text.substr(pos + token.size()))};
      return req;
    }
  }
  for (const auto& [token, op] :
       {std::pair<std::string, Requirement::Op>{" notin ", Requirement::Op::kNotIn},
        {" in ", Requirement::Op::kIn}}) {
    size_t pos = text.find(token);
    if (pos != std::string::npos) {
      auto values = value_set(text.substr(pos + token.size()), text);
      if (!values.ok()) return values.status();
      req.key = trim(text.substr(0, pos));
      req.op = op;
      req.values = *values;
      return req;
    }
  }
  if (text.find_first_of(" ()!<>") != std::string::npos) {
    return invalid_argument("unable to parse requirement: " + text);
  }
  req.key = text;
  req.op = Requirement::Op::kExists;
  return req;
}

}  // namespace

StatusOr<Selector> parse_label_selector(const std::string& text) {
  Selector out;
  if (trim(text).empty()) return out;
  for (const auto& part : split_top(text)) {
    if (part.empty()) return invalid_argument("found '', expected: identifier");
    auto req = parse_requirement(part);
    if (!req.ok()) return req.status();
    if (req->key.empty()) return invalid_argument("found '" + part + "', expected: identifier");
    out.push_back(*req);
  }
  return out;
}

StatusOr<Selector> parse_field_selector(const std::string& text) {
  Selector out;
  if (trim(text).empty()) return out;
  for (const auto& part : split_top(text)) {
    auto req = parse_requirement(part);
    if (!req.ok()) return req.status();
    bool equality = req->op == Requirement::Op::kEquals || req->op == Requirement::Op::kNotEquals;
    if (!equality) return invalid_argument("invalid selector: '" + text + "'");
    if (req->key != "metadata.name" && req->key != "metadata.namespace") {
      return invalid_argument("field label not supported: " + req->key);
    }
    out.push_back(*req);
  }
  return out;
}

bool matches(const Selector& selector, const nlohmann::json& labels) {
  for (const auto& r : selector) {
    bool has = labels.is_object() && labels.contains(r.key) && labels[r.key].is_string();
    std::string value = has ? labels[r.key].get<std::string>() : "";
    bool in = std::find(r.values.begin(), r.values.end(), value) != r.values.end();
    switch (r.op) {
      case Requirement::Op::kEquals:
      case Requirement::Op::kIn:
        if (!has || !in) return false;
        break;
      case Requirement::Op::kNotEquals:
      case Requirement::Op::kNotIn:
        if (has && in) return false;
        break;
      case Requirement::Op::kExists:
        if (!has) return false;
        break;
      case Requirement::Op::kNotExists:
        if (has) return false;
        break;
    }
  }
  return true;
}

}  // namespace canopy::kubeapi
