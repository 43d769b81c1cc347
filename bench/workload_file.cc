// Workload files: one JSON line per change (workload.h).
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "workload.h"

namespace canopy::bench {
namespace {

// Insertion-ordered: a workload file keeps each document's own key order.
using Json = nlohmann::ordered_json;

void set_error(std::string* error, std::string msg) {
  if (error) *error = std::move(msg);
}

}  // namespace

bool write_workload(const std::string& path, const std::vector<Change>& changes,
                    std::string* error) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    set_error(error, "cannot open " + path + " for writing");
    return false;
  }
  std::string line;
  for (const Change& c : changes) {
    // Built by hand so that the stored document text is copied verbatim, in its own key order.
    line = "{\"op\":\"";
    line += kind_name(c.kind);
    line += "\",\"key\":";
    line += Json(c.key).dump();
    if (c.kind == Change::kCreate) {
      line += ",\"doc\":";
      line += c.json.empty() ? "{}" : c.json;
    } else if (c.kind == Change::kPatch) {
      line += ",\"patch\":";
      line += c.json.empty() ? "{}" : c.json;
    }
    line += "}\n";
    out.write(line.data(), static_cast<std::streamsize>(line.size()));
  }
  out.flush();
  if (!out) {
    set_error(error, "write to " + path + " failed");
    return false;
  }
  return true;
}

bool read_workload(const std::string& path, std::vector<Change>* changes, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    set_error(error, "cannot open " + path);
    return false;
  }
  changes->clear();
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      set_error(error, where + "not a JSON object");
      return false;
    }
    auto op = j.find("op");
    auto key = j.find("key");
    if (op == j.end() || !op->is_string() || key == j.end() || !key->is_string()) {
      set_error(error, where + "missing \"op\" or \"key\"");
      return false;
    }
    Change c;
    c.key = key->get<std::string>();
    const std::string& o = op->get_ref<const std::string&>();
    const char* field = nullptr;
    if (o == "create") {
      c.kind = Change::kCreate;
      field = "doc";
    } else if (o == "patch") {
      c.kind = Change::kPatch;
      field = "patch";
    } else if (o == "remove") {
      c.kind = Change::kRemove;
    } else {
      set_error(error, where + "unknown op \"" + o + "\"");
      return false;
    }
    if (field) {
      auto body = j.find(field);
      if (body == j.end() || !body->is_object()) {
        set_error(error, where + "\"" + field + "\" must be an object");
        return false;
      }
      c.json = body->dump();
    }
    changes->push_back(std::move(c));
  }
  if (in.bad()) {
    set_error(error, "read from " + path + " failed");
    return false;
  }
  return true;
}

}  // namespace canopy::bench
