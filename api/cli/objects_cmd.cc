// kubectl-canopy's commands on catalogue objects: apply, diff, get, delete
// and status (declared in client.h), and the YAML files they read.
//
// Files are multi-document YAML; each document is
//
//   apiVersion: canopy.io/v1
//   kind: Template | Placement | Override | Grant | Tenant
//   metadata: {tenant: acme, name: web}    # a Tenant has a name only
//   spec: {...}            # the stored document (docs/keys.md)
//
// apply reads and checks every document of every file before it sends
// anything, with the same checks the hub makes (api/objects.h), so a
// mistake anywhere leaves the hub untouched; then it puts tenants and grants
// first, then templates, then overrides, then placements (so a site never renders a placement
// without its templates or their overrides), each in file order.
// `get ... -o json` prints objects in this same format, so its output can be
// applied again.
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "api/cli/client.h"
#include "api/objects.h"
#include "api/yaml.h"
#include "canopy/v1/hub.grpc.pb.h"
#include "model/selector.h"
#include "store/document.h"
#include "store/hlc.h"
#include "store/status.h"

namespace canopy::cli {
namespace {

constexpr char kApiVersion[] = "canopy.io/v1";
// Deeper YAML is refused (it also stops alias cycles).

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// --- Kinds.

// "template", "Templates", "TEMPLATE" -> "template"; empty when unknown.
std::string kind_of(std::string_view word) {
  std::string k = lower(std::string(word));
  if (k.size() > 1 && k.back() == 's') k.pop_back();
  for (std::string_view known : {api::kTemplate, api::kPlacement, api::kOverride, api::kSite,
                                 api::kGrant, api::kTenantKind, api::kDevice}) {
    if (k == known) return k;
  }
  return "";
}

// "template" -> "Template", as the kind is written in files.
std::string title(std::string_view kind) {
  std::string t(kind);
  if (!t.empty()) t[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(t[0])));
  return t;
}

// "acme/web" or "site-name" for sites.
std::string ref(std::string_view tenant, std::string_view name) {
  return tenant.empty() ? std::string(name) : std::string(tenant) + "/" + std::string(name);
}

const char* yaml_type_name(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Scalar:
      return "a scalar";
    default:
      return "empty";
  }
}

// --- Reading files.

struct Item {
  std::string where;  // "shop.yaml: document 2 (line 14)"
  v1::Object object;
};

std::string read_input(const std::string& file) {
  std::stringstream buf;
  if (file == "-") {
    buf << std::cin.rdbuf();
    return buf.str();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file + ": cannot read the file: " + std::strerror(errno));
  buf << in.rdbuf();
  return buf.str();
}

// A string field of a mapping node: missing, not a string and empty are
// errors naming `field`.
std::string string_field(const YAML::Node& map, const std::string& key, const std::string& field,
                         const std::string& where) {
  const YAML::Node n = map[key];
  if (!n || n.IsNull()) fail(where + ": " + field + " is missing");
  if (!n.IsScalar()) fail(where + ": " + field + " must be a string, not " + yaml_type_name(n));
  if (n.Scalar().empty()) fail(where + ": " + field + " must not be empty");
  return n.Scalar();
}

void check_keys(const YAML::Node& map, const std::vector<std::string>& allowed,
                const std::string& field_prefix, const std::string& where) {
  for (const auto& kv : map) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(where + ": unknown field " + quote(field_prefix + key) + " (expected " + list + ")");
    }
  }
}

// One document of a file: checked as the hub would check it.
Item parse_document(const YAML::Node& doc, const std::string& where) {
  if (!doc.IsMap()) {
    fail(where + ": a document must be a mapping with apiVersion, kind, metadata and spec, not " +
         yaml_type_name(doc));
  }
  check_keys(doc, {"apiVersion", "kind", "metadata", "spec"}, "", where);
  const std::string api_version = string_field(doc, "apiVersion", "apiVersion", where);
  if (api_version != kApiVersion) {
    fail(where + ": apiVersion " + quote(api_version) + " is not " + kApiVersion);
  }
  const std::string kind_text = string_field(doc, "kind", "kind", where);
  const std::string kind = lower(kind_text);
  if (kind != api::kTemplate && kind != api::kPlacement && kind != api::kOverride &&
      kind != api::kGrant && kind != api::kTenantKind) {
    std::string m = where + ": kind " + quote(kind_text) +
                    " is not one of Template, Placement, Override, Grant, Tenant";
    if (kind_text == "Site")
      m += " (sites register themselves when their spoke connects)";
    else
      m += " (a Kubernetes manifest goes in the spec of a Template)";
    fail(m);
  }
  const YAML::Node md = doc["metadata"];
  if (!md || md.IsNull()) fail(where + ": metadata is missing");
  if (!md.IsMap()) fail(where + ": metadata must be a mapping, not " + yaml_type_name(md));
  // metadata.version is what `get -o json` prints; like the API, apply
  // ignores it.
  check_keys(md, {"tenant", "name", "version"}, "metadata.", where);
  const std::string tenant = kind == api::kTenantKind && !md["tenant"]
                                 ? std::string()
                                 : string_field(md, "tenant", "metadata.tenant", where);
  const std::string name = string_field(md, "name", "metadata.name", where);
  auto key = api::object_key(kind, tenant, name, "metadata.");
  if (!key.ok()) fail(where + ": " + key.status().message());

  const std::string subject = kind + " " + ref(tenant, name);
  const YAML::Node spec = doc["spec"];
  if (!spec || spec.IsNull()) fail(where + ": " + subject + ": spec is missing");
  if (!spec.IsMap()) {
    fail(where + ": " + subject + ": spec must be a mapping, not " + yaml_type_name(spec));
  }
  json spec_json;
  try {
    auto converted = api::yaml_to_json(spec, "spec");
    if (!converted.ok()) fail(converted.status().message());
    spec_json = std::move(converted).value();
  } catch (const Failure& f) {
    fail(where + ": " + subject + ": " + f.message);
  }

  Item item;
  item.where = where;
  item.object.set_kind(kind);
  item.object.set_tenant(tenant);
  item.object.set_name(name);
  item.object.set_json(spec_json.dump());
  auto valid = api::validate_object(item.object, DocumentLimits{});
  if (!valid.ok()) {
    // The API names fields of the stored document, which is the spec here.
    std::string m = valid.status().message();
    const std::string api_subject = kind + " " + quote(name) + ": ";
    if (m.starts_with(api_subject)) m = m.substr(api_subject.size());
    if (m.starts_with("object.json")) m = "spec" + m.substr(std::string("object.json").size());
    fail(where + ": " + subject + ": spec: " + m);
  }
  return item;
}

std::vector<Item> read_files(const std::vector<std::string>& files) {
  std::vector<Item> items;
  bool stdin_used = false;
  for (const auto& file : files) {
    if (file == "-") {
      if (stdin_used) fail("-f -: standard input can be read only once");
      stdin_used = true;
    }
    const std::string name = file == "-" ? "<stdin>" : file;
    const std::string text = read_input(file);
    std::vector<YAML::Node> docs;
    try {
      docs = YAML::LoadAll(text);
    } catch (const YAML::Exception& e) {
      fail(name + ": line " + std::to_string(e.mark.line + 1) + ", column " +
           std::to_string(e.mark.column + 1) + ": not valid YAML: " + e.msg);
    }
    for (size_t i = 0; i < docs.size(); ++i) {
      if (docs[i].IsNull()) continue;  // an empty document, e.g. after a trailing ---
      const std::string where = name + ": document " + std::to_string(i + 1) + " (line " +
                                std::to_string(docs[i].Mark().line + 1) + ")";
      items.push_back(parse_document(docs[i], where));
    }
  }
  return items;
}

// --- Output.

// "12s", "5m", "3h", "2d" since the object's last change.
std::string age(uint64_t version) {
  if (version == 0) return "-";
  const uint64_t now_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  const uint64_t then = hlc_physical_ms(version);
  return format_age(now_ms > then ? (now_ms - then) / 1000 : 0);
}

std::string labels_text(const json& labels) {
  if (!labels.is_object() || labels.empty()) return "<none>";
  std::string out;
  for (const auto& [k, v] : labels.items()) {
    out += (out.empty() ? "" : ",") + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

// Which sites a placement or override chooses: "region=eu-west" and/or
// "sites: a,b".
std::string choice_text(const json& doc) {
  std::string out;
  if (doc.contains("selector") && doc["selector"].is_object() &&
      doc["selector"].contains("matchLabels")) {
    out = labels_text(doc["selector"]["matchLabels"]);
  }
  if (doc.contains("sites") && doc["sites"].is_array() && !doc["sites"].empty()) {
    std::string sites;
    for (const auto& s : doc["sites"]) sites += (sites.empty() ? "" : ",") + s.get<std::string>();
    out += (out.empty() ? "" : " ") + std::string("sites:") + sites;
  }
  return out.empty() ? "<none>" : out;
}

std::string truncate(std::string s, size_t n) {
  if (s.size() > n) s = s.substr(0, n - 3) + "...";
  return s;
}

std::vector<std::string> row_of(const std::string& kind, const v1::Object& o) {
  const json doc = json::parse(o.json(), nullptr, false);
  const json d = doc.is_object() ? doc : json::object();
  if (kind == api::kSite) return {o.name(), labels_text(d.value("labels", json::object()))};
  if (kind == api::kDevice) {
    return {o.name(), labels_text(d.value("labels", json::object())),
            truncate(d.value("desired", json::object()).dump(), 60), age(o.version())};
  }
  if (kind == api::kTenantKind) return {o.name(), d.value("description", ""), age(o.version())};
  if (kind == api::kGrant) return {o.name(), choice_text(d), age(o.version())};
  if (kind == api::kTemplate) {
    std::string manifest = d.value("kind", "?");
    const json md = d.value("metadata", json::object());
    manifest += " " + (md.contains("namespace") ? md.value("namespace", "") + "/" : "") +
                md.value("name", "?");
    return {o.name(), manifest, age(o.version())};
  }
  if (kind == api::kPlacement) {
    std::string templates;
    for (const auto& t : d.value("templates", json::array())) {
      templates += (templates.empty() ? "" : ",") + t.get<std::string>();
    }
    return {o.name(), templates, choice_text(d), age(o.version())};
  }
  return {o.name(), d.value("template", "?"), choice_text(d),
          truncate(d.value("patch", json::object()).dump(), 60), age(o.version())};
}

std::vector<std::string> header_of(const std::string& kind) {
  if (kind == api::kSite) return {"NAME", "LABELS"};
  if (kind == api::kDevice) return {"NAME", "LABELS", "DESIRED", "CHANGED"};
  if (kind == api::kTenantKind) return {"NAME", "DESCRIPTION", "CHANGED"};
  if (kind == api::kGrant) return {"NAME", "SITES", "CHANGED"};
  if (kind == api::kTemplate) return {"NAME", "MANIFEST", "CHANGED"};
  if (kind == api::kPlacement) return {"NAME", "TEMPLATES", "SITES", "CHANGED"};
  return {"NAME", "TEMPLATE", "SITES", "PATCH", "CHANGED"};
}

// The object in the file format, so that it can be applied again.
json to_document(const v1::Object& o) {
  // The version as a string: it is a 64-bit HLC stamp, more than a JSON
  // reader's double holds exactly.
  json md = {{"name", o.name()}, {"version", std::to_string(o.version())}};
  if (!o.tenant().empty()) md["tenant"] = o.tenant();
  if (!o.site().empty()) md["site"] = o.site();
  return {{"apiVersion", kApiVersion},
          {"kind", title(o.kind())},
          {"metadata", md},
          {"spec", json::parse(o.json(), nullptr, false)}};
}

void print_objects(const std::string& kind, const std::vector<v1::Object>& objects,
                   const std::string& output, bool single) {
  if (output == "json") {
    json out;
    if (single) {
      out = to_document(objects.at(0));
    } else {
      out = {{"apiVersion", kApiVersion}, {"kind", title(kind) + "List"}, {"items", json::array()}};
      for (const auto& o : objects) out["items"].push_back(to_document(o));
    }
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  if (output == "name") {
    for (const auto& o : objects) {
      std::printf("%s/%s\n", o.kind().c_str(), ref(o.tenant(), o.name()).c_str());
    }
    return;
  }
  if (objects.empty()) {
    std::fprintf(stderr, "No %ss found.\n", kind.c_str());
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& o : objects) rows.push_back(row_of(kind, o));
  print_table(header_of(kind), rows);
}

// --- Commands.

// The hub's copy of the object `o` names; *missing when it has none.
v1::GetResponse live_object(Hub& hub, const v1::Object& o, bool* missing) {
  v1::GetRequest get;
  get.set_kind(o.kind());
  get.set_tenant(o.tenant());
  get.set_name(o.name());
  return hub.call(&v1::Catalog::Stub::Get, get, missing);
}

}  // namespace

int cmd_apply(Hub& hub, const std::vector<std::string>& files) {
  std::vector<Item> items = read_files(files);
  if (items.empty()) {
    fail("no objects in " + (files.size() != 1 ? std::string("the files given")
                             : files[0] == "-" ? std::string("<stdin>")
                                               : files[0]));
  }
  auto rank = [](const Item& i) {
    const std::string& k = i.object.kind();
    return k == api::kTenantKind ? 0
           : k == api::kGrant    ? 1
           : k == api::kTemplate ? 2
           : k == api::kOverride ? 3
                                 : 4;
  };
  std::stable_sort(items.begin(), items.end(),
                   [&](const Item& a, const Item& b) { return rank(a) < rank(b); });
  for (const Item& item : items) {
    const v1::Object& o = item.object;
    bool missing = false;
    const v1::GetResponse before = live_object(hub, o, &missing);
    v1::PutRequest put;
    *put.mutable_object() = o;
    hub.call(&v1::Catalog::Stub::Put, put);
    std::string verb = "created";
    if (!missing) {
      const json old_doc = json::parse(before.object().json(), nullptr, false);
      verb = old_doc == json::parse(o.json()) ? "unchanged" : "configured";
    }
    std::printf("%s %s %s\n", o.kind().c_str(), ref(o.tenant(), o.name()).c_str(), verb.c_str());
    std::fflush(stdout);
  }
  return 0;
}

namespace {

// The lines of `a` and `b` as a unified diff body (every line, ' ', '-' or
// '+'): a longest common subsequence of lines, fine for documents' sizes.
std::vector<std::string> line_diff(const std::vector<std::string>& a,
                                   const std::vector<std::string>& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<uint32_t>> lcs(n + 1, std::vector<uint32_t>(m + 1, 0));
  for (size_t i = n; i-- > 0;) {
    for (size_t j = m; j-- > 0;) {
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  std::vector<std::string> out;
  size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] == b[j]) {
      out.push_back(" " + a[i++]);
      ++j;
    } else if (j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      out.push_back("+" + b[j++]);
    } else {
      out.push_back("-" + a[i++]);
    }
  }
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

// kubectl diff's contract: 0 no differences, 1 differences, 2 (or more)
// an error.
int cmd_diff(Hub& hub, const std::vector<std::string>& files) {
  std::vector<Item> items = read_files(files);
  bool differs = false;
  for (const Item& item : items) {
    const v1::Object& o = item.object;
    bool missing = false;
    const v1::GetResponse live = live_object(hub, o, &missing);
    const std::string hub_text =
        missing ? std::string() : json::parse(live.object().json(), nullptr, false).dump(2);
    const std::string file_text = json::parse(o.json()).dump(2);
    if (!missing && hub_text == file_text) continue;
    differs = true;
    const std::string name = o.kind() + "/" + ref(o.tenant(), o.name());
    std::printf("--- hub/%s%s\n+++ %s (%s)\n", name.c_str(), missing ? " (absent)" : "",
                name.c_str(), item.where.c_str());
    for (const auto& l : line_diff(lines_of(hub_text), lines_of(file_text))) {
      std::printf("%s\n", l.c_str());
    }
  }
  std::fflush(stdout);
  return differs ? 1 : 0;
}

namespace {

// "acme/web" -> (acme, web); for sites, "name" -> ("", name).
void split_ref(const std::string& kind, const std::string& text, bool name_required,
               std::string* tenant, std::string* name) {
  const size_t slash = text.find('/');
  if (api::is_fleet_kind(kind)) {
    if (slash != std::string::npos) {
      fail(kind + "s belong to no tenant: give the " + kind + "'s name alone");
    }
    *name = text;
    return;
  }
  if (slash == std::string::npos) {
    if (name_required) fail(quote(text) + ": expected TENANT/NAME, e.g. acme/web");
    *tenant = text;
    return;
  }
  *tenant = text.substr(0, slash);
  *name = text.substr(slash + 1);
  if (tenant->empty() || name->empty() || name->find('/') != std::string::npos) {
    fail(quote(text) + ": expected TENANT/NAME, e.g. acme/web");
  }
}

std::string parse_kind(const std::string& word) {
  std::string kind = kind_of(word);
  if (kind.empty()) {
    fail("unknown kind " + quote(word) +
         ": expected template, placement, override, grant, site, tenant or device");
  }
  return kind;
}

// Devices belong to a site (--site); nothing else does.
void check_site(const std::string& kind, const std::string& site, const std::string& command) {
  if (kind == api::kDevice && site.empty()) {
    fail("devices belong to a site: kubectl-canopy " + command + " device ... --site SITE");
  }
  if (kind != api::kDevice && !site.empty()) {
    fail("--site is for devices only (" + kind + "s belong to no site)");
  }
}
}  // namespace

namespace {

// `get -w`: the watch is established first, then the list is printed, then
// every change; an object changed meanwhile may show twice, never not at
// all. Rows are padded to the widths of the list's table.
int watch_objects(Hub& hub, const std::string& kind, const std::string& tenant,
                  const std::string& name, const model::LabelSelector& selector,
                  const std::string& selector_text, const std::string& output,
                  const std::string& site) {
  v1::WatchRequest req;
  req.set_kind(kind);
  req.set_tenant(tenant);
  req.set_site(site);
  grpc::ClientContext ctx;
  auto reader = hub.watch(req, &ctx);
  std::vector<v1::Object> listed = list_all(hub, kind, tenant, selector_text, site);
  std::set<std::string> known;
  std::vector<std::string> header = header_of(kind);
  header.insert(header.begin(), "EVENT");
  std::vector<size_t> width;
  for (const auto& h : header) width.push_back(h.size());
  auto wanted = [&](const v1::Object& o, const json& doc) {
    if (!name.empty() && o.name() != name) return false;
    if (selector.empty()) return true;
    const json labels = doc.is_object() ? doc.value("labels", json::object()) : json::object();
    model::Labels l;
    for (const auto& [k, v] : labels.items()) {
      if (v.is_string()) l[k] = v.get<std::string>();
    }
    return selector.matches(l);
  };
  // A row padded to the list's column widths (a longer value pushes the
  // rest of its row right).
  auto print_line = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      const size_t w = i < width.size() ? width[i] : 0;
      if (i + 1 < row.size())
        line += std::string(w > row[i].size() ? w - row[i].size() + 3 : 3, ' ');
    }
    std::printf("%s\n", line.c_str());
  };
  auto emit = [&](const std::string& event, const v1::Object& o) {
    if (output == "json") {
      std::printf("%s\n", json{{"type", event}, {"object", to_document(o)}}.dump().c_str());
    } else if (output == "name") {
      std::printf("%s %s/%s\n", event.c_str(), o.kind().c_str(), ref(o.tenant(), o.name()).c_str());
    } else {
      std::vector<std::string> row =
          event == "DELETED" ? std::vector<std::string>{o.name()} : row_of(kind, o);
      row.insert(row.begin(), event);
      print_line(row);
    }
    std::fflush(stdout);
  };
  for (const auto& o : listed) {
    if (!name.empty() && o.name() != name) continue;
    known.insert(o.name());
    std::vector<std::string> row = row_of(kind, o);
    row.insert(row.begin(), "ADDED");
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  if (output == "table") print_line(header);
  for (const auto& o : listed) {
    if (name.empty() || o.name() == name) emit("ADDED", o);
  }
  v1::WatchResponse message;
  while (reader->Read(&message)) {
    for (const auto& ev : message.events()) {
      const v1::Object& o = ev.object();
      if (ev.type() == v1::WatchEvent::DELETE) {
        if (known.erase(o.name()) > 0) emit("DELETED", o);
        continue;
      }
      if (!wanted(o, json::parse(o.json(), nullptr, false))) {
        // It no longer matches: as gone, for this view.
        if (known.erase(o.name()) > 0) emit("DELETED", o);
        continue;
      }
      emit(known.insert(o.name()).second ? "ADDED" : "MODIFIED", o);
    }
  }
  hub.fail_with(reader->Finish());
}

}  // namespace

int cmd_get(Hub& hub, const std::string& kind_word, const std::string& target,
            const std::string& selector, const std::string& output, const std::string& site,
            bool watch) {
  const std::string kind = parse_kind(kind_word);
  check_site(kind, site, "get");
  std::string tenant, name;
  if (!target.empty()) split_ref(kind, target, false, &tenant, &name);
  if (!api::is_fleet_kind(kind) && tenant.empty()) {
    fail("a " + kind + " belongs to a tenant: kubectl-canopy get " + kind + " TENANT[/NAME]");
  }
  if (watch) {
    auto parsed = model::LabelSelector::parse_text(selector, "-l");
    if (!parsed.ok()) fail(std::string(parsed.status().message()));
    return watch_objects(hub, kind, tenant, name, *parsed, selector, output, site);
  }
  if (name.empty()) {
    print_objects(kind, list_all(hub, kind, tenant, selector, site), output, false);
    return 0;
  }
  if (!selector.empty()) fail("-l selects among many: give a TENANT, not TENANT/NAME");
  v1::GetRequest req;
  req.set_kind(kind);
  req.set_tenant(tenant);
  req.set_name(name);
  req.set_site(site);
  auto resp = hub.call(&v1::Catalog::Stub::Get, req);
  print_objects(kind, {resp.object()}, output, true);
  return 0;
}

int cmd_delete(Hub& hub, const std::string& kind_word, const std::string& target,
               const std::string& site) {
  const std::string kind = parse_kind(kind_word);
  check_site(kind, site, "delete");
  std::string tenant, name;
  split_ref(kind, target, true, &tenant, &name);
  v1::DeleteRequest req;
  req.set_kind(kind);
  req.set_tenant(tenant);
  req.set_name(name);
  req.set_site(site);
  hub.call(&v1::Catalog::Stub::Delete, req);
  std::printf("%s %s deleted\n", kind.c_str(), ref(tenant, name).c_str());
  return 0;
}

int cmd_twin(Hub& hub, const std::string& target, const std::string& site,
             const std::string& output) {
  std::string tenant, name;
  split_ref(std::string(api::kDevice), target, true, &tenant, &name);
  v1::GetTwinRequest req;
  req.set_tenant(tenant);
  req.set_site(site);
  req.set_device(name);
  auto resp = hub.call(&v1::Catalog::Stub::GetTwin, req);
  const json desired = json::parse(resp.desired(), nullptr, false);
  // Fields in name order, whether desired, reported or both.
  std::map<std::string, std::pair<std::string, std::string>> fields;  // desired, reported
  std::map<std::string, int64_t> at;
  if (desired.is_object()) {
    for (const auto& [k, v] : desired.items()) fields[k].first = v.dump();
  }
  for (const auto& [k, r] : resp.reported()) {
    fields[k].second = r.value();
    at[k] = r.at_ms();
  }
  if (output == "json") {
    json out = {{"tenant", tenant},
                {"site", site},
                {"device", name},
                {"desired", desired.is_object() ? desired : json::object()},
                {"reported", json::object()}};
    for (const auto& [k, r] : resp.reported()) {
      out["reported"][k] = {{"value", json::parse(r.value(), nullptr, false)}, {"atMs", r.at_ms()}};
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  if (fields.empty()) {
    std::fprintf(stderr, "device %s at site %s: nothing desired, nothing reported yet.\n",
                 ref(tenant, name).c_str(), site.c_str());
    return 0;
  }
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  std::vector<std::vector<std::string>> rows;
  for (const auto& [k, v] : fields) {
    const bool reported = at.contains(k);
    std::string ago = "-";
    if (reported)
      ago = format_age(static_cast<uint64_t>(std::max<int64_t>(0, now_ms - at[k])) / 1000);
    std::string in_sync = "-";
    if (!v.first.empty() && reported) in_sync = v.first == v.second ? "yes" : "no";
    rows.push_back({k, v.first.empty() ? "-" : truncate(v.first, 40),
                    reported ? truncate(v.second, 40) : "-", ago, in_sync});
  }
  print_table({"FIELD", "DESIRED", "REPORTED", "REPORTED-AGO", "IN-SYNC"}, rows);
  return 0;
}

namespace {

// How long ago the hub last heard from a site, "-" when not since it started.
std::string seen(uint64_t at_ms) {
  if (at_ms == 0) return "-";
  const auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  return format_age(at_ms >= now ? 0 : (now - at_ms) / 1000) + " ago";
}
}  // namespace

int cmd_status(Hub& hub, const std::string& target, const std::string& output) {
  std::string tenant, name;
  split_ref(std::string(api::kPlacement), target, true, &tenant, &name);
  v1::GetStatusRequest req;
  req.set_tenant(tenant);
  req.set_placement(name);
  req.set_page_size(api::kMaxPageSize);
  v1::GetStatusResponse all;
  while (true) {
    auto resp = hub.call(&v1::Catalog::Stub::GetStatus, req);
    if (req.page_token().empty()) {
      all = resp;
    } else {
      for (const auto& s : resp.sites()) *all.add_sites() = s;
    }
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  all.clear_next_page_token();
  if (output == "json") {
    std::string text;
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    opts.always_print_primitive_fields = true;
    opts.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(all, &text, opts).ok()) {
      fail("cannot print the status as JSON");
    }
    std::printf("%s", text.c_str());
    return 0;
  }
  std::printf(
      "placement %s: %u sites targeted, %u applied, %u progressing, %u failed, %u pending, %u "
      "offline\n",
      ref(tenant, name).c_str(), all.targeted(), all.applied(), all.progressing(), all.failed(),
      all.pending(), all.offline());
  if (all.sites().empty()) return 0;
  // One column per template, in the order the sites report them.
  std::vector<std::string> templates;
  for (const auto& s : all.sites()) {
    for (const auto& t : s.templates()) {
      if (std::find(templates.begin(), templates.end(), t.template_()) == templates.end()) {
        templates.push_back(t.template_());
      }
    }
  }
  std::vector<std::string> header = {"SITE", "STATE", "SEEN"};
  for (const auto& t : templates) header.push_back(upper(t));
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> messages;
  for (const auto& s : all.sites()) {
    // An offline site: what it last reported, and how long ago it was heard.
    const std::string state =
        s.state() == "offline" ? "offline (last " + s.last_state() + ")" : s.state();
    std::vector<std::string> row = {s.site(), state, seen(s.last_seen_ms())};
    for (const auto& t : templates) {
      std::string outcome = "-";
      for (const auto& ts : s.templates()) {
        if (ts.template_() != t) continue;
        // Applied, but an older revision of the template.
        outcome = ts.outcome() == "applied" && !ts.current() ? "applied (older)" : ts.outcome();
        // Read back from the site's cluster: "applied, progressing".
        if (ts.outcome() == "applied" && !ts.health().empty()) outcome += ", " + ts.health();
        if (!ts.message().empty() && ts.outcome() == "failed") {
          messages.push_back(s.site() + "/" + t + ": " + ts.message());
        }
        if (!ts.health_message().empty() && ts.health() != "healthy") {
          messages.push_back(s.site() + "/" + t + ": " + ts.health() + ": " + ts.health_message());
        }
        if (!ts.drift().empty()) messages.push_back(s.site() + "/" + t + ": " + ts.drift());
      }
      row.push_back(outcome);
    }
    rows.push_back(std::move(row));
  }
  print_table(header, rows);
  for (const auto& m : messages) std::printf("  %s\n", m.c_str());
  return 0;
}

}  // namespace canopy::cli
