// Seeded property tests of convergence.
//
// Each case runs 3-7 replicas that write random JSON documents (puts, merge
// patches, deletes) and exchange the resulting deltas with random delays,
// reordering and duplication (plus the odd whole-state transfer and restart).
// When everything is delivered, every replica must hold byte-identical
// canonical documents, byte-identical serialized states and the same version
// vector. Most cases run replicas as plain Documents with a writer that mirrors
// Store::write_local (diff, stamp above the document's max HLC, next seq); a few
// run real Stores on RocksDB and are also checked against the Document model.
// A third property checks the join of states directly: commutative,
// associative, idempotent, and equal to applying the union of the deltas.
//
// CANOPY_PROPERTY_CASES sets the number of cases (default 10000; 1000 in
// sanitizer and unoptimized builds); CANOPY_SEED=N replays case N alone. A
// failing case prints `seed=N`.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "store/document.h"
#include "store/hlc.h"
#include "store/store.h"
#include "store/tests/test_util.h"
#include "store/version_vector.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using store_test::state_bytes;
using store_test::TempDir;

constexpr uint64_t kStart = 1'700'000'000'000;
constexpr uint64_t kMaxSkewMs = 60'000;
constexpr int kMaxFailures = 5;

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// The seeds to run: CANOPY_SEED alone, or 1..count.
std::vector<uint64_t> seeds(uint64_t count) {
  const uint64_t one = env_u64("CANOPY_SEED", 0);
  if (one != 0) return {one};
  std::vector<uint64_t> out;
  for (uint64_t s = 1; s <= count; ++s) out.push_back(s);
  return out;
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CANOPY_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
#define CANOPY_TEST_SANITIZED 1
#endif

// A case costs ~20x more in a sanitizer or unoptimized build: those run a
// tenth of the cases by default, which keeps them within the suite's budget.
#ifdef CANOPY_TEST_SANITIZED
constexpr uint64_t kDefaultCases = 1'000;
#else
constexpr uint64_t kDefaultCases = 10'000;
#endif

uint64_t property_cases() { return env_u64("CANOPY_PROPERTY_CASES", kDefaultCases); }

// --- Random documents and patches.

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}

  uint64_t below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  std::mt19937_64& rng() { return rng_; }

  std::string name() {
    static const char* const kNames[] = {"a", "b", "c", "d", "e"};
    return kNames[below(5)];
  }

  json scalar() {
    switch (below(7)) {
      case 0:
        return nullptr;
      case 1:
        return chance(0.5);
      case 2:
        return static_cast<int>(below(11)) - 5;
      case 3: {
        static const char* const kStrings[] = {"", "x", "h\u00e9", "a b", "q\"t", "\n"};
        return kStrings[below(6)];
      }
      case 4: {
        static const double kDoubles[] = {0.5, -2.25, 1e3, 3.14159};
        return kDoubles[below(4)];
      }
      default:
        return static_cast<int>(below(1000));
    }
  }

  json value(int depth) {
    const uint64_t r = below(10);
    if (r < 5 || depth >= 3) return scalar();
    if (r < 7) {
      json arr = json::array();
      const uint64_t n = below(4);
      for (uint64_t i = 0; i < n; ++i) arr.push_back(chance(0.2) ? object(depth + 1) : scalar());
      return arr;
    }
    return object(depth + 1);
  }

  json object(int depth) {
    json obj = json::object();
    const uint64_t n = below(depth == 0 ? 5 : 4);
    for (uint64_t i = 0; i < n; ++i) obj[name()] = value(depth);
    return obj;
  }

  json patch(int depth) {
    json p = json::object();
    const uint64_t n = 1 + below(3);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t r = below(10);
      if (r < 3) {
        p[name()] = nullptr;  // removes the field
      } else if (r < 6 && depth < 3) {
        p[name()] = patch(depth + 1);
      } else {
        json v = value(depth);
        p[name()] = v.is_null() ? json(0) : v;
      }
    }
    return p;
  }

 private:
  std::mt19937_64 rng_;
};

// --- Document-level replicas.

struct Replica {
  uint64_t id = 0;
  int64_t clock_offset_ms = 0;
  std::map<std::string, Document> docs;
  VersionVector vv;
  uint64_t next_seq = 1;
  Hlc hlc;
  size_t duplicates = 0;
};

struct InFlight {
  size_t to = 0;
  v1::Delta delta;
};

// What one case did, for the failure message.
struct Trace {
  std::ostringstream log;
  bool verbose = false;
};

std::string describe(const v1::Delta& d) {
  std::string s = d.key() + " " + std::to_string(d.dot().replica()) + ":" +
                  std::to_string(d.dot().seq()) + " hlc=" + std::to_string(d.hlc()) + " [";
  for (const auto& op : d.ops()) {
    std::string path;
    for (const auto& p : op.path()) path += "/" + p;
    s += " " + v1::FieldOp::Kind_Name(op.kind()) + " " + path;
    if (op.kind() == v1::FieldOp::SET) s += "=" + op.value();
  }
  return s + " ]";
}

// Mirrors Store::Impl::write_local: diff against the current document, stamp
// above both the clock and everything the document holds, take the next seq.
// Returns false (and no delta) when the write changes nothing.
bool local_write(Replica* r, const std::string& key, const std::optional<json>& target,
                 uint64_t wall_ms, v1::Delta* out, std::string* error) {
  Document& doc = r->docs[key];
  v1::Delta delta;
  delta.set_key(key);
  if (target.has_value()) {
    std::vector<v1::FieldOp> ops;
    doc.diff(*target, &ops);
    for (auto& op : ops) *delta.add_ops() = std::move(op);
  } else {
    if (!doc.exists()) return false;
    delta.add_ops()->set_kind(v1::FieldOp::REMOVE);
  }
  if (delta.ops_size() == 0) return false;
  uint64_t stamp = r->hlc.tick(wall_ms);
  const uint64_t seen = doc.max_hlc();
  if (seen >= stamp) stamp = seen + 1;
  const uint64_t seq = r->next_seq++;
  delta.mutable_dot()->set_replica(r->id);
  delta.mutable_dot()->set_seq(seq);
  delta.set_hlc(stamp);
  Status valid = validate_delta(delta, DocumentLimits{});
  if (!valid.ok()) {
    *error = "a local write made an invalid delta: " + valid.to_string() + " " + describe(delta);
    return false;
  }
  doc.apply(delta, nullptr);
  r->vv.add(r->id, seq);
  // The writer sees exactly what it wrote.
  const json now = doc.to_value();
  if (target.has_value() ? now != *target : !now.is_null()) {
    *error = "after a local write of " + (target ? target->dump() : std::string("(delete)")) +
             " the document shows " + now.dump() + "; delta " + describe(delta);
    return false;
  }
  *out = std::move(delta);
  return true;
}

// Mirrors Store::Impl::apply_remote for one delta.
void receive(Replica* r, const v1::Delta& d, uint64_t wall_ms) {
  if (r->vv.contains(d.dot().replica(), d.dot().seq())) {
    ++r->duplicates;
    return;
  }
  r->hlc.observe(d.hlc(), wall_ms, kMaxSkewMs);
  std::vector<Overwrite> overwrites;
  r->docs[d.key()].apply(d, &overwrites);
  r->vv.add(d.dot().replica(), d.dot().seq());
}

// Canonical JSON and serialized state of every key, "" for absent.
std::map<std::string, std::pair<std::string, std::string>> view(const Replica& r,
                                                                const std::set<std::string>& keys) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  for (const auto& k : keys) {
    auto it = r.docs.find(k);
    if (it == r.docs.end()) {
      out[k] = {"", ""};
    } else {
      out[k] = {it->second.to_json(), state_bytes(it->second)};
    }
  }
  return out;
}

// Checks invariants of one document that hold at every replica at any time.
std::string check_document(const std::string& key, const Document& d) {
  const std::string text = d.to_json();
  if (d.exists()) {
    const json v = json::parse(text, nullptr, false);
    if (!v.is_object()) return key + ": to_json is not a JSON object: " + text;
    if (v.dump() != text) return key + ": to_json is not canonical: " + text;
    if (d.to_value() != v) return key + ": to_value differs from to_json";
  } else if (!text.empty() || !d.to_value().is_null()) {
    return key + ": a missing document shows " + text;
  }
  v1::NodeState s;
  d.to_proto(&s);
  auto back = Document::from_proto(s);
  if (!back.ok()) return key + ": state does not load: " + back.status().to_string();
  if (state_bytes(*back) != s.SerializeAsString()) return key + ": state does not round-trip";
  if (back->to_json() != text) return key + ": reloaded state shows another document";
  return "";
}

// One simulated case with Document replicas. Returns "" or what went wrong.
std::string run_document_case(uint64_t seed, Trace* trace) {
  Gen g(seed);
  const size_t n = 3 + g.below(5);
  const size_t nkeys = 1 + g.below(5);
  const size_t steps = 20 + g.below(80);
  std::vector<Replica> replicas(n);
  for (size_t i = 0; i < n; ++i) {
    // Distinct ids in a small range, so that HLC ties break by id now and then.
    replicas[i].id = 1 + 3 * i + g.below(3);
    replicas[i].clock_offset_ms = static_cast<int64_t>(g.below(201)) - 100;
  }
  if (g.chance(0.1)) replicas[g.below(n)].clock_offset_ms = 2 * kMaxSkewMs;  // runaway clock
  std::vector<std::string> keys;
  for (size_t k = 0; k < nkeys; ++k) keys.push_back("t/k" + std::to_string(k));

  uint64_t now = kStart;
  std::vector<InFlight> in_flight;
  std::string error;
  auto wall = [&](const Replica& r) { return now + r.clock_offset_ms; };
  auto deliver_one = [&](size_t i) {
    InFlight m = std::move(in_flight[i]);
    in_flight[i] = std::move(in_flight.back());
    in_flight.pop_back();
    if (trace->verbose)
      trace->log << "  deliver to " << replicas[m.to].id << ": " << describe(m.delta) << "\n";
    receive(&replicas[m.to], m.delta, wall(replicas[m.to]));
    if (g.chance(0.05)) in_flight.push_back(std::move(m));  // delivered twice
  };

  for (size_t step = 0; step < steps && error.empty(); ++step) {
    now += g.below(20);
    const uint64_t action = g.below(100);
    if (action < 45) {
      Replica& r = replicas[g.below(n)];
      const std::string& key = keys[g.below(nkeys)];
      std::optional<json> target;
      const uint64_t kind = g.below(10);
      if (kind < 4) {
        target = g.object(0);
      } else if (kind < 8) {
        auto it = r.docs.find(key);
        const json current =
            it != r.docs.end() && it->second.exists() ? it->second.to_value() : json::object();
        target = apply_merge_patch(current, g.patch(0));
      }
      v1::Delta d;
      if (local_write(&r, key, target, wall(r), &d, &error)) {
        if (trace->verbose) trace->log << "write at " << r.id << ": " << describe(d) << "\n";
        for (size_t to = 0; to < n; ++to) {
          if (replicas[to].id == r.id) continue;
          in_flight.push_back({to, d});
        }
      }
    } else if (action < 90) {
      const uint64_t count = 1 + g.below(6);
      for (uint64_t i = 0; i < count && !in_flight.empty(); ++i)
        deliver_one(g.below(in_flight.size()));
    } else if (action < 95) {
      // A whole-state transfer of one key (a key entering a scope).
      Replica& from = replicas[g.below(n)];
      Replica& to = replicas[g.below(n)];
      const std::string& key = keys[g.below(nkeys)];
      auto it = from.docs.find(key);
      if (it != from.docs.end()) {
        v1::NodeState s;
        it->second.to_proto(&s);
        to.docs[key].merge(s);
        if (trace->verbose)
          trace->log << "state of " << key << " from " << from.id << " to " << to.id << "\n";
      }
    } else {
      // A restart: documents come back from their serialized (pruned) state.
      Replica& r = replicas[g.below(n)];
      for (auto& [k, d] : r.docs) {
        v1::NodeState s;
        d.to_proto(&s);
        auto back = Document::from_proto(s);
        if (!back.ok()) {
          error = "state of " + k + " does not reload: " + back.status().to_string();
          break;
        }
        d = std::move(back).value();
      }
      if (trace->verbose) trace->log << "restart " << r.id << "\n";
    }
  }
  if (!error.empty()) return error;
  // Deliver everything left, in random order, duplicates included.
  while (!in_flight.empty()) deliver_one(g.below(in_flight.size()));

  std::set<std::string> all_keys;
  for (const auto& r : replicas) {
    for (const auto& [k, d] : r.docs) {
      all_keys.insert(k);
      std::string bad = check_document(k, d);
      if (!bad.empty()) return "replica " + std::to_string(r.id) + ": " + bad;
    }
  }
  const auto first = view(replicas[0], all_keys);
  for (size_t i = 1; i < n; ++i) {
    const auto other = view(replicas[i], all_keys);
    for (const auto& k : all_keys) {
      if (first.at(k).first != other.at(k).first) {
        return "replicas " + std::to_string(replicas[0].id) + " and " +
               std::to_string(replicas[i].id) + " differ at " + k + ": " + first.at(k).first +
               " vs " + other.at(k).first;
      }
      if (first.at(k).second != other.at(k).second) {
        return "replicas " + std::to_string(replicas[0].id) + " and " +
               std::to_string(replicas[i].id) + " hold different state bytes at " + k +
               " (documents " + first.at(k).first + ")";
      }
    }
    if (!(replicas[i].vv == replicas[0].vv)) {
      return "version vectors differ: " + replicas[0].vv.to_proto().ShortDebugString() + " vs " +
             replicas[i].vv.to_proto().ShortDebugString();
    }
  }
  // Collecting stable tombstones everywhere keeps the replicas identical and
  // changes no visible document.
  uint64_t stable = 0;
  for (const auto& r : replicas) {
    for (const auto& [k, d] : r.docs) stable = std::max(stable, d.max_hlc() + 1);
  }
  for (auto& r : replicas) {
    for (auto& [k, d] : r.docs) d.collect_tombstones(stable);
  }
  const auto collected = view(replicas[0], all_keys);
  for (const auto& k : all_keys) {
    if (collected.at(k).first != first.at(k).first) return "tombstone collection changed " + k;
  }
  for (size_t i = 1; i < n; ++i) {
    if (view(replicas[i], all_keys) != collected) return "replicas differ after collection";
  }
  return "";
}

// Runs `run` for every seed; stops after a few failures, each with its seed.
template <typename Run>
void for_each_seed(const std::vector<uint64_t>& all, const char* what, Run run) {
  int failures = 0;
  for (uint64_t seed : all) {
    Trace trace;
    trace.verbose = all.size() == 1;
    const std::string error = run(seed, &trace);
    if (error.empty()) continue;
    ADD_FAILURE() << what << " seed=" << seed << ": " << error
                  << "\n  replay with CANOPY_SEED=" << seed << "\n"
                  << trace.log.str();
    if (++failures == kMaxFailures) break;
  }
}

TEST(Convergence, DocumentReplicas) {
  for_each_seed(seeds(property_cases()), "document replicas", run_document_case);
}

// --- The join of states.

// Applies `deltas` in a random order to a fresh document.
Document apply_shuffled(std::vector<v1::Delta> deltas, std::mt19937_64& rng) {
  std::shuffle(deltas.begin(), deltas.end(), rng);
  Document d;
  for (const auto& delta : deltas) d.apply(delta, nullptr);
  return d;
}

std::string join(const std::string& a, const std::string& b) {
  v1::NodeState sa, sb;
  sa.ParseFromString(a);
  sb.ParseFromString(b);
  auto d = Document::from_proto(sa);
  if (!d.ok()) return "!" + d.status().to_string();
  d->merge(sb);
  return state_bytes(*d);
}

std::string run_join_case(uint64_t seed, Trace*) {
  Gen g(seed);
  // A history of one document written by a few replicas that sometimes see
  // each other's writes and sometimes do not.
  const size_t writers = 2 + g.below(3);
  std::vector<Replica> rs(writers);
  for (size_t i = 0; i < writers; ++i) rs[i].id = i + 1;
  std::vector<v1::Delta> history;
  uint64_t now = kStart;
  std::string error;
  const std::string key = "t/doc";
  const size_t writes = 3 + g.below(12);
  for (size_t w = 0; w < writes && error.empty(); ++w) {
    now += g.below(5);
    Replica& r = rs[g.below(writers)];
    // Catch up on a random part of the history first.
    for (const auto& d : history) {
      if (g.chance(0.6)) receive(&r, d, now);
    }
    std::optional<json> target;
    const uint64_t kind = g.below(10);
    if (kind < 4) {
      target = g.object(0);
    } else if (kind < 9) {
      const Document& doc = r.docs[key];
      target = apply_merge_patch(doc.exists() ? doc.to_value() : json::object(), g.patch(0));
    }
    v1::Delta d;
    if (local_write(&r, key, target, now, &d, &error)) history.push_back(d);
  }
  if (!error.empty()) return error;

  auto subset = [&] {
    std::vector<v1::Delta> s;
    for (const auto& d : history) {
      if (g.chance(0.5)) s.push_back(d);
    }
    return s;
  };
  const auto s1 = subset(), s2 = subset(), s3 = subset();
  const std::string a = state_bytes(apply_shuffled(s1, g.rng()));
  const std::string b = state_bytes(apply_shuffled(s2, g.rng()));
  const std::string c = state_bytes(apply_shuffled(s3, g.rng()));
  if (state_bytes(apply_shuffled(s1, g.rng())) != a) return "applying deltas depends on order";
  if (join(a, b) != join(b, a)) return "join is not commutative";
  if (join(join(a, b), c) != join(a, join(b, c))) return "join is not associative";
  if (join(a, a) != a) return "join is not idempotent";
  if (join(join(a, b), b) != join(a, b)) return "join does not absorb what it holds";
  std::vector<v1::Delta> u = s1;
  u.insert(u.end(), s2.begin(), s2.end());
  if (join(a, b) != state_bytes(apply_shuffled(u, g.rng()))) {
    return "the join of two states differs from applying both sets of deltas";
  }
  // Applying a delta on top of a joined state equals joining its state.
  if (!history.empty()) {
    const v1::Delta& d = history[g.below(history.size())];
    v1::NodeState sa;
    sa.ParseFromString(a);
    auto x = Document::from_proto(sa);
    if (!x.ok()) return "state does not load";
    x->apply(d, nullptr);
    Document one;
    one.apply(d, nullptr);
    if (state_bytes(*x) != join(a, state_bytes(one))) return "apply(d) differs from join(state(d))";
  }
  return "";
}

TEST(Convergence, JoinIsCommutativeAssociativeIdempotent) {
  for_each_seed(seeds(property_cases()), "join", run_join_case);
}

// --- Real stores.

std::string run_store_case(uint64_t seed, Trace* trace) {
  Gen g(seed ^ 0x5bd1e995);
  const size_t n = 3 + g.below(3);
  const size_t nkeys = 1 + g.below(4);
  const size_t steps = 30 + g.below(40);
  // Durability is not under test here: a tmpfs keeps fsyncs from dominating.
  std::error_code ec;
  TempDir dir(std::filesystem::is_directory("/dev/shm", ec) && access("/dev/shm", W_OK) == 0
                  ? "/dev/shm"
                  : nullptr);
  std::vector<std::unique_ptr<ManualClock>> clocks;
  std::vector<std::unique_ptr<Store>> stores;
  std::vector<uint64_t> ids;
  auto open = [&](size_t i) -> std::string {
    StoreOptions o;
    o.path = dir.sub("r" + std::to_string(i));
    o.durability = Durability::kNone;
    o.replica_id = ids[i];
    o.clock = clocks[i].get();
    o.doc_cache_entries = 1 + g.below(4);  // small: exercise evictions
    auto s = Store::open(o);
    if (!s.ok()) return "open: " + s.status().to_string();
    stores[i] = std::move(s).value();
    return "";
  };
  for (size_t i = 0; i < n; ++i) {
    ids.push_back(100 + i);
    clocks.push_back(std::make_unique<ManualClock>(kStart + g.below(200)));
    stores.emplace_back();
    std::string e = open(i);
    if (!e.empty()) return e;
  }
  std::vector<std::string> keys;
  for (size_t k = 0; k < nkeys; ++k) keys.push_back("s/k" + std::to_string(k));
  std::vector<InFlight> in_flight;
  std::vector<v1::Delta> all_deltas;

  auto deliver = [&]() -> std::string {
    // A batch for one replica: a few random in-flight deltas for it.
    const size_t to = in_flight[g.below(in_flight.size())].to;
    v1::DeltaBatch batch;
    const uint64_t want = 1 + g.below(4);
    for (size_t i = 0; i < in_flight.size() && static_cast<uint64_t>(batch.deltas_size()) < want;) {
      if (in_flight[i].to == to && g.chance(0.7)) {
        *batch.add_deltas() = in_flight[i].delta;
        if (g.chance(0.1)) *batch.add_deltas() = in_flight[i].delta;  // duplicate
        in_flight[i] = std::move(in_flight.back());
        in_flight.pop_back();
      } else {
        ++i;
      }
    }
    if (batch.deltas_size() == 0) return "";
    if (trace->verbose)
      trace->log << "batch of " << batch.deltas_size() << " to " << ids[to] << "\n";
    auto r = stores[to]->apply_remote(batch, 1);
    if (!r.ok()) return "apply_remote: " + r.status().to_string();
    return "";
  };

  for (size_t step = 0; step < steps; ++step) {
    for (auto& c : clocks) c->advance_ms(g.below(20));
    const uint64_t action = g.below(100);
    if (action < 45) {
      const size_t i = g.below(n);
      const std::string& key = keys[g.below(nkeys)];
      StatusOr<v1::Delta> d = Status(StatusCode::kUnknown, "unset");
      const uint64_t kind = g.below(10);
      if (kind < 4) {
        d = stores[i]->put(key, g.object(0).dump());
      } else if (kind < 8) {
        d = stores[i]->patch(key, g.patch(0).dump());
      } else {
        d = stores[i]->remove(key);
        if (!d.ok() && d.status().code() == StatusCode::kNotFound) continue;
      }
      if (!d.ok()) return "local write: " + d.status().to_string();
      if (d->ops_size() == 0) continue;
      if (trace->verbose) trace->log << "write at " << ids[i] << ": " << describe(*d) << "\n";
      all_deltas.push_back(*d);
      for (size_t to = 0; to < n; ++to) {
        if (to != i) in_flight.push_back({to, *d});
      }
    } else if (action < 85) {
      if (!in_flight.empty()) {
        std::string e = deliver();
        if (!e.empty()) return e;
      }
    } else if (action < 93) {
      const size_t from = g.below(n), to = g.below(n);
      const std::string& key = keys[g.below(nkeys)];
      auto st = stores[from]->state(key);
      if (!st.ok()) return "state: " + st.status().to_string();
      if (st->has_value()) {
        Status s = stores[to]->apply_states({**st}, ids[from]);
        if (!s.ok()) return "apply_states: " + s.to_string();
      }
    } else {
      const size_t i = g.below(n);
      stores[i].reset();
      std::string e = open(i);
      if (!e.empty()) return "reopen: " + e;
      if (trace->verbose) trace->log << "reopen " << ids[i] << "\n";
    }
  }
  while (!in_flight.empty()) {
    std::string e = deliver();
    if (!e.empty()) return e;
  }

  // The model: every delta applied to plain Documents.
  std::map<std::string, Document> model;
  std::shuffle(all_deltas.begin(), all_deltas.end(), g.rng());
  for (const auto& d : all_deltas) model[d.key()].apply(d, nullptr);

  const auto first = store_test::snapshot(*stores[0]);
  for (size_t i = 0; i < n; ++i) {
    const auto s = store_test::snapshot(*stores[i]);
    if (s.docs != first.docs)
      return "store documents differ between replicas 0 and " + std::to_string(i);
    if (s.states != first.states)
      return "store states differ between replicas 0 and " + std::to_string(i);
    if (s.version_vector != first.version_vector) return "store version vectors differ";
  }
  for (const auto& [key, bytes] : first.states) {
    v1::DocState st;
    st.ParseFromString(bytes);
    auto it = model.find(key);
    if (it == model.end()) return "store holds " + key + " that no delta wrote";
    if (st.root().SerializeAsString() != state_bytes(it->second)) {
      return "store state of " + key + " differs from the Document model";
    }
  }
  size_t model_docs = 0;
  for (const auto& [k, d] : model) model_docs += d.exists() ? 1 : 0;
  if (model_docs != first.docs.size()) return "store and model hold different document counts";
  return "";
}

TEST(Convergence, StoreReplicas) {
  // Real stores are slower: one store case for every 500 document cases.
  const uint64_t cases = std::max<uint64_t>(3, property_cases() / 500);
  for_each_seed(seeds(cases), "store replicas", run_store_case);
}

}  // namespace
}  // namespace canopy
