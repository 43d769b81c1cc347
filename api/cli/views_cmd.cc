// kubectl-canopy render and conflicts: views the hub computes of a tenant's
// objects. `render` prints what one site would apply for one placement (YAML
// documents, as kubectl prints objects; or JSON); `conflicts` lists writes
// that lost to concurrent ones.
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "api/cli/client.h"

namespace canopy::cli {
namespace {

bool reads_as_non_string(const std::string& v) {
  if (v.empty()) return true;
  std::string lower;
  for (char c : v) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}) {
    if (lower == word) return true;
  }
  char* end = nullptr;
  std::strtod(v.c_str(), &end);
  return end == v.c_str() + v.size();  // a number
}

void emit(YAML::Emitter& out, const json& j) {
  switch (j.type()) {
    case json::value_t::object:
      out << YAML::BeginMap;
      for (const auto& [k, v] : j.items()) {
        out << YAML::Key << k << YAML::Value;
        emit(out, v);
      }
      out << YAML::EndMap;
      break;
    case json::value_t::array:
      out << YAML::BeginSeq;
      for (const auto& v : j) emit(out, v);
      out << YAML::EndSeq;
      break;
    case json::value_t::string: {
      // Plain, unless YAML would read it back as something else ("true",
      // "1", "" ...); yaml-cpp quotes what needs it for its characters.
      const std::string& v = j.get_ref<const std::string&>();
      if (reads_as_non_string(v)) out << YAML::DoubleQuoted;
      out << v;
      break;
    }
    case json::value_t::null:
      out << YAML::Null;
      break;
    default:
      out << j.dump();  // numbers and booleans as JSON spells them
  }
}

std::string age(uint64_t at_ms) {
  if (at_ms == 0) return "-";
  const auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  return at_ms >= now ? "0s" : format_age((now - at_ms) / 1000);
}

}  // namespace

std::string format_age(uint64_t seconds) {
  if (seconds < 120) return std::to_string(seconds) + "s";
  if (seconds < 2 * 3600) return std::to_string(seconds / 60) + "m";
  if (seconds < 2 * 86400) return std::to_string(seconds / 3600) + "h";
  return std::to_string(seconds / 86400) + "d";
}

int cmd_render(Hub& hub, const std::string& target, const std::string& site,
               const std::string& output) {
  const size_t slash = target.find('/');
  if (slash == std::string::npos) fail("render needs TENANT/PLACEMENT, not " + quote(target));
  v1::RenderRequest req;
  req.set_tenant(target.substr(0, slash));
  req.set_placement(target.substr(slash + 1));
  req.set_site(site);
  auto resp = hub.call(&v1::Catalog::Stub::Render, req);
  for (const auto& f : resp.failures()) {
    std::fprintf(stderr, "cannot render %s: %s\n",
                 f.template_().empty() ? "the placement" : ("template " + f.template_()).c_str(),
                 f.error().c_str());
  }
  if (output == "json") {
    json items = json::array();
    for (const auto& m : resp.manifests()) items.push_back(json::parse(m.json()));
    std::printf("%s\n",
                json{{"apiVersion", "v1"}, {"kind", "List"}, {"items", items}}.dump(2).c_str());
  } else {
    for (const auto& m : resp.manifests()) {
      YAML::Emitter out;
      emit(out, json::parse(m.json()));
      std::printf("# %s, at the site as %s\n---\n%s\n", m.template_().c_str(), m.file().c_str(),
                  out.c_str());
    }
  }
  return resp.failures().empty() ? 0 : 1;
}

int cmd_rollout_pause(Hub& hub, const std::string& target, bool paused) {
  const size_t slash = target.find('/');
  if (slash == std::string::npos) fail("rollout needs TENANT/PLACEMENT, not " + quote(target));
  v1::GetRequest get;
  get.set_kind(std::string(api::kPlacement));
  get.set_tenant(target.substr(0, slash));
  get.set_name(target.substr(slash + 1));
  const v1::GetResponse got = hub.call(&v1::Catalog::Stub::Get, get);
  auto doc = api::with_rollout_paused(json::parse(got.object().json(), nullptr, false), paused);
  if (!doc.ok()) fail("placement " + target + ": " + doc.status().message());
  // At the version read: a concurrent edit fails this one (ABORTED).
  v1::PutRequest put;
  *put.mutable_object() = got.object();
  put.mutable_object()->set_json(doc->dump());
  hub.call(&v1::Catalog::Stub::Put, put);
  std::printf("placement %s %s\n", target.c_str(), paused ? "paused" : "resumed");
  return 0;
}

int cmd_rollout_status(Hub& hub, const std::string& target, bool watch, int timeout_s) {
  const size_t slash = target.find('/');
  if (slash == std::string::npos) fail("rollout needs TENANT/PLACEMENT, not " + quote(target));
  v1::GetStatusRequest req;
  req.set_tenant(target.substr(0, slash));
  req.set_placement(target.substr(slash + 1));
  req.set_page_size(1);  // the counts are over every site
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::string last;
  while (true) {
    const v1::GetStatusResponse s = hub.call(&v1::Catalog::Stub::GetStatus, req);
    char line[256];
    std::snprintf(line, sizeof line,
                  "%u of %u sites at the current revision (%u progressing, %u pending, %u failed, "
                  "%u offline)",
                  s.applied(), s.targeted(), s.progressing(), s.pending(), s.failed(), s.offline());
    // With a rollout policy: where the rollout controller is, per template.
    std::string progress = line;
    for (const v1::TemplateRollout& t : s.rollout().templates()) {
      progress += "; " + t.template_() + ": wave " + std::to_string(t.wave()) + " of " +
                  std::to_string(t.waves()) + ", " + std::to_string(t.released()) + " released";
      if (t.held_size() > 0) progress += ", " + std::to_string(t.held_size()) + " held";
    }
    if (!s.rollout().paused().empty()) progress += "; paused: " + s.rollout().paused();
    if (progress != last) {
      std::printf("Waiting for placement %s rollout to finish: %s\n", target.c_str(),
                  progress.c_str());
      std::fflush(stdout);
      last = progress;
    }
    if (s.applied() == s.targeted()) {
      std::printf("placement %s successfully rolled out\n", target.c_str());
      return 0;
    }
    if (s.failed() > 0) {
      fail("placement " + target + ": " + std::to_string(s.failed()) +
           " sites failed the current revision (kubectl-canopy status " + target + ")");
    }
    if (!watch) return 1;
    if (std::chrono::steady_clock::now() >= deadline) {
      fail("timed out after " + std::to_string(timeout_s) + " s waiting for the rollout");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int cmd_conflicts(Hub& hub, const std::string& tenant, const std::string& kind,
                  const std::string& name, const std::string& output) {
  v1::ListConflictsRequest req;
  req.set_tenant(tenant);
  req.set_kind(kind);
  req.set_name(name);
  req.set_page_size(api::kMaxPageSize);
  std::vector<v1::Conflict> all;
  while (true) {
    auto resp = hub.call(&v1::Catalog::Stub::ListConflicts, req);
    for (const auto& c : resp.conflicts()) all.push_back(c);
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  if (output == "json") {
    json items = json::array();
    for (const auto& c : all) {
      items.push_back({{"kind", c.kind()},
                       {"name", c.name()},
                       {"path", c.path()},
                       {"reason", c.reason()},
                       {"lost", c.lost_removed() ? json("<removed>") : json(c.lost_json())},
                       {"lostWriter", c.lost_writer()},
                       {"lostAtMs", c.lost_at_ms()},
                       {"wonWriter", c.won_writer()},
                       {"wonAtMs", c.won_at_ms()},
                       {"current", c.current_json()}});
    }
    std::printf("%s\n", json{{"items", items}}.dump(2).c_str());
    return 0;
  }
  if (all.empty()) {
    std::fprintf(stderr, "No conflicts recorded for tenant %s.\n", tenant.c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : all) {
    rows.push_back({c.kind() + "/" + c.name(), c.path().empty() ? "/" : c.path(),
                    c.lost_removed() ? "<removed>" : c.lost_json(), c.lost_writer(),
                    c.current_json().empty() ? "<none>" : c.current_json(), c.won_writer(),
                    age(c.won_at_ms()), c.reason()});
  }
  print_table({"OBJECT", "FIELD", "LOST", "LOST BY", "NOW", "WON BY", "AGE", "REASON"}, rows);
  return 0;
}

}  // namespace canopy::cli
