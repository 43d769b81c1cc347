#include "spoke/kube/kube_applier.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "model/render.h"
#include "store/file_io.h"

namespace canopy::spoke::kube {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string str_at(const json& obj, const char* key) {
  if (!obj.is_object()) return {};
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& member(const json& obj, const char* key) {
  static const json null_json;
  if (!obj.is_object()) return null_json;
  auto it = obj.find(key);
  return it == obj.end() ? null_json : *it;
}

std::string annotation(const json& object, const char* key) {
  return str_at(member(member(object, "metadata"), "annotations"), key);
}

ObjectRef ref_of(const json& object) {
  const json& meta = member(object, "metadata");
  return ObjectRef{str_at(object, "apiVersion"), str_at(object, "kind"), str_at(meta, "namespace"),
                   str_at(meta, "name")};
}

// 0: Namespaces, 1: CRDs, 2: the rest. Applied in this order, removed in
// the reverse.
int stage(const std::string& kind) {
  if (kind == "Namespace") return 0;
  if (kind == "CustomResourceDefinition") return 1;
  return 2;
}

bool all_named_objects(const json& a) {
  if (!a.is_array() || a.empty()) return false;
  for (const json& e : a) {
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string()) return false;
  }
  return true;
}

uint64_t hash_json(const json& j) {
  const std::string s = j.dump();
  return XXH3_64bits(s.data(), s.size());
}

void diff(const json& a, const json& b, const std::string& path, std::vector<std::string>* out,
          size_t limit) {
  if (out->size() >= limit || a == b) return;
  if (a.is_object() && b.is_object()) {
    for (const auto& [k, v] : a.items()) {
      diff(v, b.contains(k) ? b[k] : json(), path + "." + k, out, limit);
    }
    return;
  }
  if (a.is_array() && b.is_array() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i) {
      const std::string label =
          a[i].is_object() && a[i].contains("name") && a[i]["name"].is_string()
              ? a[i]["name"].get<std::string>()
              : std::to_string(i);
      diff(a[i], b[i], path + "[" + label + "]", out, limit);
    }
    return;
  }
  out->push_back(path.empty() ? "." : path);
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

}  // namespace

std::string object_id(const ObjectRef& r) {
  return r.api_version + "/" + r.kind + "/" + r.ns + "/" + r.name;
}

std::optional<ObjectRef> parse_object_id(const std::string& id) {
  // apiVersion may hold one '/'; kind, namespace and name hold none.
  ObjectRef r;
  size_t end = id.size();
  std::string* parts[] = {&r.name, &r.ns, &r.kind};
  for (std::string* p : parts) {
    const size_t slash = id.rfind('/', end == 0 ? 0 : end - 1);
    if (slash == std::string::npos || end == 0) return std::nullopt;
    *p = id.substr(slash + 1, end - slash - 1);
    end = slash;
  }
  r.api_version = id.substr(0, end);
  if (r.api_version.empty() || r.kind.empty() || r.name.empty()) return std::nullopt;
  if (std::count(r.api_version.begin(), r.api_version.end(), '/') > 1) return std::nullopt;
  return r;
}

json project_fields(const json& applied, const json& live) {
  if (applied.is_object()) {
    json out = json::object();
    for (const auto& [k, v] : applied.items()) {
      const json& l = member(live, k.c_str());
      out[k] = project_fields(v, l);
    }
    return out;
  }
  if (all_named_objects(applied)) {
    json out = json::array();
    for (const json& a : applied) {
      json match;
      if (live.is_array()) {
        for (const json& l : live) {
          if (l.is_object() && l.contains("name") && l["name"] == a["name"]) {
            match = l;
            break;
          }
        }
      }
      out.push_back(match.is_null() ? json() : project_fields(a, match));
    }
    return out;
  }
  if (applied.is_array() && live.is_array() && applied.size() == live.size()) {
    json out = json::array();
    for (size_t i = 0; i < applied.size(); ++i) out.push_back(project_fields(applied[i], live[i]));
    return out;
  }
  return live;  // a scalar, or a list whose length changed: the live value whole
}

std::vector<std::string> differing_paths(const json& a, const json& b, size_t limit) {
  std::vector<std::string> out;
  diff(a, b, "", &out, limit);
  return out;
}

namespace {

// The fields of a rendered object that drift is measured on: all but
// apiVersion, kind, status and the metadata other than labels and
// annotations (the server owns the rest).
json tracked_fields(const json& object) {
  json t = object;
  t.erase("apiVersion");
  t.erase("kind");
  t.erase("status");
  if (t.contains("metadata") && t["metadata"].is_object()) {
    json meta = json::object();
    for (const char* k : {"labels", "annotations"}) {
      if (t["metadata"].contains(k)) meta[k] = t["metadata"][k];
    }
    t["metadata"] = std::move(meta);
  }
  return t;
}

uint64_t baseline_of(const json& rendered, const json& live) {
  return hash_json(project_fields(tracked_fields(rendered), live));
}

// `s` percent-encoded for a query value (a continue token is opaque).
std::string query_escape(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace

KubeApplier::KubeApplier(KubeApplierOptions options) : options_(std::move(options)) {}
KubeApplier::~KubeApplier() = default;

StatusOr<std::unique_ptr<KubeApplier>> KubeApplier::open(KubeApplierOptions options) {
  if (options.inventory_path.empty())
    return invalid_argument("kube applier: inventory path required");
  std::unique_ptr<KubeApplier> a(new KubeApplier(std::move(options)));
  auto client = KubeClient::create(a->options_.endpoint, a->options_.client);
  if (!client.ok()) return client.status();
  a->client_ = std::move(client).value();
  a->discovery_ = std::make_unique<Discovery>(a->client_.get());
  if (Status s = a->load_inventory(); !s.ok()) return s;
  a->next_audit_ = Clock::now();  // audit at the first pass
  a->progress_backoff_ = a->options_.progress_interval;
  return a;
}

Status KubeApplier::load_inventory() {
  std::ifstream in(options_.inventory_path);
  if (!in) return ok_status();  // none yet: nothing applied
  std::ostringstream s;
  s << in.rdbuf();
  const json doc = json::parse(s.str(), nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("objects") || !doc["objects"].is_object()) {
    // Refuse rather than start empty: an empty inventory would orphan what
    // was applied, and a guessed one could prune what is not ours.
    return data_loss("kube inventory " + options_.inventory_path +
                     ": not an inventory document (move it aside to start over; objects it "
                     "listed are then no longer pruned)");
  }
  for (const auto& [id, v] : doc["objects"].items()) {
    if (!parse_object_id(id) || !v.is_object()) {
      return data_loss("kube inventory " + options_.inventory_path + ": bad entry '" + id + "'");
    }
    Entry e;
    e.hash = str_at(v, "hash");
    e.uid = str_at(v, "uid");
    if (v.contains("baseline") && v["baseline"].is_number_unsigned()) {
      e.baseline = v["baseline"].get<uint64_t>();
    }
    entries_.emplace(id, std::move(e));
  }
  return ok_status();
}

Status KubeApplier::save_inventory() {
  json objects = json::object();
  for (const auto& [id, e] : entries_) {
    objects[id] = {{"hash", e.hash}, {"uid", e.uid}, {"baseline", e.baseline}};
  }
  const std::string text =
      json{{"server", options_.endpoint.server}, {"objects", std::move(objects)}}.dump(1);
  if (Status st = write_file_atomically(options_.inventory_path, text, 0600); !st.ok()) {
    return unavailable("kube inventory: cannot write " + st.message());
  }
  return ok_status();
}

std::string KubeApplier::id_of(const model::RenderedObject& object) const {
  return object_id(ref_of(object.object));
}

StatusOr<ResourceType> KubeApplier::type_of(const ObjectRef& ref) {
  return discovery_->resolve(ref.api_version, ref.kind);
}

model::ApplyPolicy KubeApplier::policy_of(const model::RenderedObject& object) const {
  model::ApplyPolicy p;
  if (auto it = policies_.find(object.template_key); it != policies_.end()) p = it->second;
  p.force_conflicts |= annotation(object.object, kForceAnnotation) == "true";
  p.report_drift |= annotation(object.object, kDriftAnnotation) == "report";
  return p;
}

StatusOr<ApplyOutcome> KubeApplier::apply(const model::RenderedObject& object) {
  auto r = apply_all({&object});
  return std::move(r[0]);
}

Status KubeApplier::write(Work& w) {
  auto type = type_of(w.ref);
  if (!type.ok()) return type.status();
  const json& object = w.object->object;
  const bool force = policy_of(*w.object).force_conflicts;
  const std::string ns = type->namespaced ? (w.ref.ns.empty() ? "default" : w.ref.ns) : "";
  const std::string path = type->object_path(ns, w.ref.name) + "?fieldManager=" + kFieldManager +
                           (force ? "&force=true" : "");
  auto r = client_->request("PATCH", path, object.dump(), "application/apply-patch+yaml");
  if (!r.ok()) return r.status();
  if (r->code != 200 && r->code != 201) {
    Status s =
        status_of(*r, "apply " + w.ref.kind + " " + (ns.empty() ? "" : ns + "/") + w.ref.name);
    if (r->code == 409) {
      ++stats_.conflicts;
      return Status(s.code(), s.message() +
                                  " (another field manager owns these fields; a placement "
                                  "with apply: {forceConflicts: true} takes them)");
    }
    return s;
  }
  const json live = r->object_json();
  Entry& e = entries_[w.id];
  e.drift.clear();
  e.hash = w.object->hash;
  e.uid = str_at(member(live, "metadata"), "uid");
  e.baseline = baseline_of(object, live);
  e.health = health_of(live);
  e.read = true;
  e.read_at = Clock::now();
  ++stats_.applies;
  w.changed = true;
  return ok_status();
}

Status KubeApplier::wait_established(const std::string& crd_name) {
  const auto deadline = Clock::now() + options_.crd_wait;
  while (true) {
    auto r = client_->request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + crd_name);
    if (!r.ok()) return r.status();
    if (r->code == 200) {
      const json crd = r->json();
      if (health_of(crd).state == kHealthy) return ok_status();
    } else if (r->code != 404) {
      return status_of(*r, "CustomResourceDefinition " + crd_name);
    }
    if (Clock::now() >= deadline) {
      return unavailable("CustomResourceDefinition " + crd_name + " not Established after " +
                         std::to_string(options_.crd_wait.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void KubeApplier::observe(Work* w, Entry& e, const json* live) {
  e.read = true;
  e.read_at = Clock::now();
  if (live == nullptr) {
    e.health = {kDegraded, "not found in the cluster"};
    if (w != nullptr && !e.hash.empty()) {
      w->drift_paths = "the object was deleted";
      w->repair = true;
    }
    return;
  }
  e.health = health_of(*live);
  if (w == nullptr || e.hash.empty() || e.hash != w->object->hash) return;
  const json projected = project_fields(tracked_fields(w->object->object), *live);
  if (hash_json(projected) == e.baseline) {
    e.drift.clear();
    return;
  }
  auto paths = differing_paths(tracked_fields(w->object->object), projected);
  w->drift_paths = paths.empty() ? "fields changed in the cluster" : join(paths);
  w->repair = true;
}

Status KubeApplier::audit(std::vector<Work>& work, bool full) {
  std::map<std::string, Work*> by_id;
  for (Work& w : work) by_id[w.id] = &w;
  if (full) {
    ++stats_.audits;
    // One LIST per kind in the inventory.
    std::map<std::string, ObjectRef> kinds;  // apiVersion/kind -> a ref
    for (const auto& [id, e] : entries_) {
      auto ref = parse_object_id(id);
      if (ref) kinds.emplace(ref->api_version + "/" + ref->kind, *ref);
    }
    for (const auto& [key, ref] : kinds) {
      auto type = type_of(ref);
      if (!type.ok()) {
        if (type.status().code() == StatusCode::kNotFound) continue;  // kind gone
        return type.status();
      }
      // The entries of this kind, by the id of the live object each stands
      // for. A cluster-scoped object's template may name a namespace; the
      // server ignores it, and so does the match.
      std::map<std::string, std::vector<std::string>> wanted;
      for (const auto& [id, e] : entries_) {
        auto er = parse_object_id(id);
        if (!er || er->api_version != ref.api_version || er->kind != ref.kind) continue;
        std::string match = id;
        if (!type->namespaced && !er->ns.empty())
          match = object_id({er->api_version, er->kind, "", er->name});
        wanted[match].push_back(id);
      }
      // Page by page, so that at most a page of parsed objects is held.
      std::set<std::string> seen;
      std::string next;
      do {
        std::string path = type->collection_path("") +
                           "?labelSelector=" + std::string(model::kManagedByLabel) + "%3D" +
                           std::string(model::kManagedByValue) +
                           "&limit=" + std::to_string(std::max(1, options_.audit_page_size));
        if (!next.empty()) path += "&continue=" + query_escape(next);
        auto r = client_->request("GET", path);
        if (!r.ok()) return r.status();
        if (r->code != 200) return status_of(*r, "list " + type->resource);
        json list = r->object_json();
        if (!list.is_object() || !list.contains("items") || !list["items"].is_array()) {
          return unavailable("list " + type->resource + ": not a list");
        }
        for (json& item : list["items"]) {
          // Items of a list carry no apiVersion and kind of their own.
          item["apiVersion"] = ref.api_version;
          item["kind"] = ref.kind;
          ObjectRef ir = ref_of(item);
          std::vector<std::string> ids = {object_id(ir)};
          // Templates may leave the namespace out of a namespaced object.
          if (type->namespaced && ir.ns == "default") {
            ir.ns.clear();
            ids.push_back(object_id(ir));
          }
          for (const std::string& live_id : ids) {
            auto m = wanted.find(live_id);
            if (m == wanted.end()) continue;
            for (const std::string& id : m->second) {
              if (!seen.insert(id).second) continue;
              auto w = by_id.find(id);
              observe(w == by_id.end() ? nullptr : w->second, entries_.at(id), &item);
            }
          }
        }
        const json* md = list.contains("metadata") ? &list["metadata"] : nullptr;
        next = md != nullptr && md->is_object() && md->contains("continue") &&
                       (*md)["continue"].is_string()
                   ? (*md)["continue"].get<std::string>()
                   : "";
      } while (!next.empty());
      for (const auto& [match, ids] : wanted) {
        for (const std::string& id : ids) {
          if (seen.count(id) > 0) continue;
          auto w = by_id.find(id);
          observe(w == by_id.end() ? nullptr : w->second, entries_.at(id), nullptr);
        }
      }
    }
    return ok_status();
  }
  // Objects still progressing: a GET each.
  for (Work& w : work) {
    auto it = entries_.find(w.id);
    if (it == entries_.end() || it->second.health.state != kProgressing || w.write) continue;
    auto type = type_of(w.ref);
    if (!type.ok()) continue;
    const std::string ns = type->namespaced ? (w.ref.ns.empty() ? "default" : w.ref.ns) : "";
    auto r = client_->request("GET", type->object_path(ns, w.ref.name));
    if (!r.ok()) return r.status();
    if (r->code == 404) {
      observe(&w, it->second, nullptr);
    } else if (r->code == 200) {
      const json live = r->object_json();
      observe(&w, it->second, &live);
    }
  }
  return ok_status();
}

std::vector<StatusOr<ApplyOutcome>> KubeApplier::apply_all(
    const std::vector<const model::RenderedObject*>& objects) {
  std::vector<Work> work(objects.size());
  bool new_ids = false;
  for (size_t i = 0; i < objects.size(); ++i) {
    Work& w = work[i];
    w.object = objects[i];
    w.ref = ref_of(w.object->object);
    w.id = object_id(w.ref);
    auto it = entries_.find(w.id);
    w.write = it == entries_.end() || it->second.hash != w.object->hash;
    if (it == entries_.end()) {
      entries_.emplace(w.id, Entry{});
      new_ids = true;
    }
  }
  std::vector<StatusOr<ApplyOutcome>> out;
  out.reserve(work.size());
  if (new_ids) {
    if (Status s = save_inventory(); !s.ok()) {
      for (size_t i = 0; i < work.size(); ++i) out.emplace_back(s);
      return out;
    }
  }

  Status down;  // the cluster did not answer: fail the rest at once
  auto run = [&](Work& w) {
    if (!down.ok()) {
      w.status = down;
      return;
    }
    w.status = write(w);
    if (w.status.code() == StatusCode::kUnavailable &&
        w.status.message().find("cannot reach") != std::string::npos) {
      down = w.status;
    }
  };
  // Namespaces, then CRDs (and wait for them), then the rest.
  std::vector<size_t> order(work.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return stage(work[a].ref.kind) < stage(work[b].ref.kind);
  });
  bool crds_done = false;
  for (size_t i : order) {
    Work& w = work[i];
    if (!crds_done && stage(w.ref.kind) == 2) {
      crds_done = true;
      for (Work& c : work) {
        if (!c.write || !c.status.ok() || stage(c.ref.kind) != 1 || !down.ok()) continue;
        if (Status s = wait_established(c.ref.name); !s.ok()) {
          spdlog::warn("kube: {}", s.to_string());
        }
        // Its kinds are served now, even if discovery read the group
        // before the CRD existed (a pass that failed a moment ago).
        const json& spec = member(c.object->object, "spec");
        for (const json& v : member(spec, "versions")) {
          discovery_->invalidate(str_at(spec, "group") + "/" + str_at(v, "name"));
        }
      }
    }
    if (w.write) run(w);
  }

  // Health and drift.
  const auto now = Clock::now();
  if (down.ok()) {
    size_t progressing = 0;
    bool wrote = false;
    for (const Work& w : work) {
      wrote |= w.changed;
      auto it = entries_.find(w.id);
      progressing += it != entries_.end() && it->second.health.state == kProgressing;
    }
    // Objects still progressing are read again soon after a write, then
    // less and less often (doubling up to the audit interval): a workload
    // that never becomes ready must not cost a request per object every
    // few seconds. More than a few: one LIST per kind instead of a GET each.
    if (wrote) progress_backoff_ = options_.progress_interval;
    const bool full =
        now >= next_audit_ || (progressing > kMaxProgressReads && now >= next_progress_);
    if (full || (progressing > 0 && now >= next_progress_)) {
      Status s = audit(work, full);
      if (!s.ok()) {
        spdlog::warn("kube: reading back objects: {}", s.to_string());
      } else if (full) {
        next_audit_ = now + options_.audit_interval;
      }
      next_progress_ = now + progress_backoff_;
      progress_backoff_ = std::min(progress_backoff_ * 2, options_.audit_interval);
    }
    for (Work& w : work) {
      if (!w.repair || !w.status.ok()) continue;
      Entry& e = entries_[w.id];
      if (policy_of(*w.object).report_drift) {
        e.drift = "drifted: " + w.drift_paths + " (policy report: not repaired)";
        continue;
      }
      Status s = write(w);
      if (s.ok()) {
        ++stats_.drift_repaired;
        e.drift = "repaired: " + w.drift_paths;
        spdlog::info("kube: {} drifted ({}); applied again", w.id, w.drift_paths);
      } else {
        e.drift = "drifted: " + w.drift_paths + "; repair failed: " + s.message();
      }
    }
  }

  bool changed_inventory = new_ids;
  for (Work& w : work) {
    if (!w.status.ok()) {
      out.emplace_back(w.status);
      continue;
    }
    const Entry& e = entries_[w.id];
    changed_inventory |= w.changed;
    ApplyOutcome o;
    o.changed = w.changed && !w.repair;
    const std::string ns = w.ref.ns.empty() ? "" : w.ref.ns + "/";
    o.message = "server-side applied " + w.ref.kind + " " + ns + w.ref.name;
    if (e.read) {
      o.health = e.health.state;
      o.health_message = e.health.message;
    }
    o.drift = e.drift;
    out.emplace_back(std::move(o));
  }
  if (changed_inventory) {
    if (Status s = save_inventory(); !s.ok()) {
      spdlog::error("kube: {}", s.to_string());
    }
  }
  return out;
}

Status KubeApplier::remove(const std::string& id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return ok_status();  // not ours: never touched
  auto ref = parse_object_id(id);
  if (!ref) {
    entries_.erase(it);
    return save_inventory();
  }
  auto forget = [&] {
    entries_.erase(id);
    return save_inventory();
  };
  auto type = type_of(*ref);
  if (!type.ok()) {
    // The kind is no longer served (its CRD was removed, with its objects).
    if (type.status().code() == StatusCode::kNotFound) return forget();
    return type.status();
  }
  const std::string ns = type->namespaced ? (ref->ns.empty() ? "default" : ref->ns) : "";
  const std::string path = type->object_path(ns, ref->name);
  auto r = client_->request("GET", path);
  if (!r.ok()) return r.status();
  if (r->code == 404) return forget();
  if (r->code != 200) return status_of(*r, "read " + id + " before deleting it");
  const json live = r->json();
  const json& meta = member(live, "metadata");
  if (str_at(member(meta, "labels"), std::string(model::kManagedByLabel).c_str()) !=
      model::kManagedByValue) {
    ++stats_.left_unlabelled;
    spdlog::warn("kube: {} no longer carries {}={}: left in the cluster, no longer managed", id,
                 model::kManagedByLabel, model::kManagedByValue);
    return forget();
  }
  const json options = {{"apiVersion", "v1"},
                        {"kind", "DeleteOptions"},
                        {"propagationPolicy", "Background"},
                        {"preconditions", {{"uid", str_at(meta, "uid")}}}};
  auto d = client_->request("DELETE", path, options.dump(), "application/json");
  if (!d.ok()) return d.status();
  if (d->code != 200 && d->code != 202 && d->code != 404) return status_of(*d, "delete " + id);
  ++stats_.deleted;
  return forget();
}

StatusOr<std::vector<std::string>> KubeApplier::inventory() {
  // Prune order: the rest, then CRDs, then Namespaces (each id parsed once).
  std::vector<std::pair<int, const std::string*>> staged;
  staged.reserve(entries_.size());
  for (const auto& [id, e] : entries_) {
    auto ref = parse_object_id(id);
    staged.emplace_back(-stage(ref ? ref->kind : ""), &id);
  }
  std::stable_sort(staged.begin(), staged.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> ids;
  ids.reserve(staged.size());
  for (const auto& [s, id] : staged) ids.push_back(*id);
  return ids;
}

std::optional<std::chrono::milliseconds> KubeApplier::next_check() const {
  const auto now = Clock::now();
  auto until = [&](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        std::max(t - now, Clock::duration{}));
  };
  for (const auto& [id, e] : entries_) {
    if (e.health.state == kProgressing) return std::min(until(next_progress_), until(next_audit_));
  }
  return until(next_audit_);
}

}  // namespace canopy::spoke::kube
