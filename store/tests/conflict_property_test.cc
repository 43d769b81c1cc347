// Property test of conflict records on real stores: random histories of puts,
// patches and deletes on 2-3 replicas, delivered in random order and through
// any replica that holds a write (so a write can arrive before one its writer
// had seen), one replica's clock running ten minutes ahead in some cases.
//
// An independent model keeps, for every write, the set of writes to the same
// document its writer had seen (its own applied writes, and transitively what
// those had seen), and for every replica the writes it applied. After each
// application it recomputes by brute force which field writes are superseded
// (store/document.h, "Conflicts") and by what, and expects a record exactly
// for each write newly superseded by a greatest superseding write that had not
// seen it — none for causally ordered writes — with reason CLOCK_SKEW exactly
// when that winner is the incoming write and its writer's clock ran ahead.
//
// CANOPY_CONFLICT_CASES cases (default 300; 60 in sanitizer/unoptimized
// builds); CANOPY_SEED=N replays one case.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "store/clock.h"
#include "store/document.h"
#include "store/hlc.h"
#include "store/store.h"
#include "store/tests/test_util.h"

#if defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
#define CANOPY_CONFLICT_SLOW 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CANOPY_CONFLICT_SLOW 1
#endif
#endif

namespace canopy {
namespace {

using json = nlohmann::json;
using store_test::open_store;
using store_test::TempDir;

constexpr uint64_t kStart = 1'700'000'000'000;
constexpr uint64_t kFastMs = 10 * 60 * 1000;  // the fast clock's lead
constexpr int kReplicas = 3;

using DotKey = std::pair<uint64_t, uint64_t>;  // replica, seq

// One field op of a write, as the model sees it.
struct ModelOp {
  std::vector<std::string> path;
  bool removed = false;
  std::string value;
};

struct ModelWrite {
  std::string key;
  DotKey dot;
  uint64_t hlc = 0;
  int writer = 0;  // replica index
  std::vector<ModelOp> ops;
  std::set<DotKey> past;  // writes to the key its writer had seen
  v1::Delta delta;
};

bool stamp_less(const ModelWrite& a, const ModelWrite& b) {
  return std::tie(a.hlc, a.dot.first) < std::tie(b.hlc, b.dot.first);
}

bool is_prefix(const std::vector<std::string>& p, const std::vector<std::string>& q) {
  return p.size() < q.size() && std::equal(p.begin(), p.end(), q.begin());
}

// A record as compared: key, path, loser, winner, reason, loser value.
using RecordKey =
    std::tuple<std::string, std::vector<std::string>, DotKey, DotKey, int, bool, std::string>;

class ConflictProperty {
 public:
  ConflictProperty(std::vector<std::unique_ptr<Store>>* stores,
                   std::vector<std::unique_ptr<ManualClock>>* clocks, uint64_t* true_ms)
      : stores_(*stores), clocks_(*clocks), true_ms_(*true_ms) {}

  // Runs one case; returns an empty string or what went wrong.
  std::string run(uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto pick = [&](uint64_t n) { return static_cast<uint64_t>(rng() % n); };
    // A fresh stretch of time: every stamp of earlier cases lies in the past,
    // the fast clock's included.
    true_ms_ += 3 * kFastMs;
    n_ = 2 + static_cast<int>(pick(2));
    fast_ = pick(3) == 0 ? static_cast<int>(pick(static_cast<uint64_t>(n_))) : -1;
    set_clocks();
    const int nkeys = 1 + static_cast<int>(pick(2));
    std::vector<std::string> keys;
    for (int i = 0; i < nkeys; ++i) {
      keys.push_back("p/" + std::to_string(seed) + "/k" + std::to_string(i));
    }
    writes_.clear();
    applied_.assign(static_cast<size_t>(n_), {});
    superseded_.assign(static_cast<size_t>(n_), {});
    expected_.assign(static_cast<size_t>(n_), {});
    const int steps = 20 + static_cast<int>(pick(40));
    for (int step = 0; step < steps; ++step) {
      if (pick(2) == 0) {
        true_ms_ += pick(3);
        set_clocks();
      }
      if (pick(5) < 2) {
        std::string err =
            write(static_cast<int>(pick(static_cast<uint64_t>(n_))), keys[pick(keys.size())], rng);
        if (!err.empty()) return err;
      } else {
        const int from = static_cast<int>(pick(static_cast<uint64_t>(n_)));
        const int to = static_cast<int>(pick(static_cast<uint64_t>(n_)));
        if (from == to) continue;
        std::vector<size_t> lacking;
        for (size_t w : applied_[static_cast<size_t>(from)]) {
          if (!has(to, w)) lacking.push_back(w);
        }
        if (lacking.empty()) continue;
        std::string err = deliver(lacking[pick(lacking.size())], from, to);
        if (!err.empty()) return err;
      }
    }
    // Everything everywhere, in random order.
    for (int to = 0; to < n_; ++to) {
      std::vector<size_t> rest;
      for (size_t w = 0; w < writes_.size(); ++w) {
        if (!has(to, w)) rest.push_back(w);
      }
      std::shuffle(rest.begin(), rest.end(), rng);
      for (size_t w : rest) {
        std::string err = deliver(w, writes_[w].writer, to);
        if (!err.empty()) return err;
      }
    }
    for (const auto& key : keys) {
      auto first = stores_[0]->get(key);
      for (int r = 1; r < n_; ++r) {
        auto other = stores_[static_cast<size_t>(r)]->get(key);
        if (first.ok() != other.ok() || (first.ok() && *first != *other)) {
          return "replicas disagree on " + key;
        }
      }
    }
    return check_records(keys);
  }

 private:
  void set_clocks() {
    for (int r = 0; r < kReplicas; ++r) {
      clocks_[static_cast<size_t>(r)]->set_ms(true_ms_ + (r == fast_ ? kFastMs : 0));
    }
  }

  bool has(int r, size_t w) const { return applied_[static_cast<size_t>(r)].count(w) != 0; }

  static json random_value(std::mt19937_64& rng, bool nested) {
    if (nested && rng() % 3 == 0) {
      json o = json::object();
      o[rng() % 2 == 0 ? "x" : "y"] = static_cast<int>(rng() % 4);
      if (rng() % 2 == 0) o["y"] = static_cast<int>(rng() % 4);
      return o;
    }
    return static_cast<int>(rng() % 4);
  }

  std::string write(int r, const std::string& key, std::mt19937_64& rng) {
    Store& s = *stores_[static_cast<size_t>(r)];
    auto current = s.get(key);
    StatusOr<v1::Delta> d = v1::Delta();
    const int kind = static_cast<int>(rng() % 6);
    if (kind == 0 && current.ok()) {
      d = s.remove(key);
    } else if (kind <= 2) {
      // A whole document: never empty, no empty objects in it.
      json doc = json::object();
      for (const char* f : {"a", "b", "c"}) {
        if (rng() % 2 == 0) doc[f] = random_value(rng, true);
      }
      if (doc.empty()) doc["a"] = 1;
      d = s.put(key, doc.dump());
    } else {
      // A merge patch; nulls only at the top (no empty object is created),
      // and none that would create the document empty.
      json patch = json::object();
      for (const char* f : {"a", "b", "c"}) {
        const uint64_t c = rng() % 4;
        if (c == 0) patch[f] = nullptr;
        if (c == 1) patch[f] = random_value(rng, true);
      }
      const json base = current.ok() ? json::parse(*current) : json::object();
      if (!current.ok() && apply_merge_patch(base, patch).empty()) return "";
      d = s.patch(key, patch.dump());
    }
    if (!d.ok()) return "write failed: " + d.status().to_string();
    if (d->ops_size() == 0) return "";
    ModelWrite w;
    w.key = key;
    w.dot = {d->dot().replica(), d->dot().seq()};
    w.hlc = d->hlc();
    w.writer = r;
    for (const auto& op : d->ops()) {
      if (op.kind() == v1::FieldOp::MAKE_OBJECT) return "unexpected MAKE_OBJECT op";
      w.ops.push_back(
          {{op.path().begin(), op.path().end()}, op.kind() == v1::FieldOp::REMOVE, op.value()});
    }
    // What the writer had seen of this document: what it applied, and what
    // those writes had seen.
    for (size_t a : applied_[static_cast<size_t>(r)]) {
      if (writes_[a].key != key) continue;
      w.past.insert(writes_[a].dot);
      w.past.insert(writes_[a].past.begin(), writes_[a].past.end());
    }
    w.delta = *d;
    writes_.push_back(std::move(w));
    return apply_model(writes_.size() - 1, r);
  }

  std::string deliver(size_t w, int from, int to) {
    auto res = stores_[static_cast<size_t>(to)]->apply_remote(
        std::span<const v1::Delta* const>(std::vector<const v1::Delta*>{&writes_[w].delta}),
        stores_[static_cast<size_t>(from)]->replica_id());
    if (!res.ok()) return "apply_remote failed: " + res.status().to_string();
    return apply_model(w, to);
  }

  // The writes (index, op) superseding op `o` of write `l` among `applied`,
  // and the greatest of them.
  std::optional<size_t> winner_of(const std::set<size_t>& applied, size_t l, size_t o) const {
    const ModelWrite& lw = writes_[l];
    const ModelOp& lo = lw.ops[o];
    std::optional<size_t> best;
    for (size_t w : applied) {
      const ModelWrite& ww = writes_[w];
      if (ww.key != lw.key || !stamp_less(lw, ww)) continue;
      bool supersedes = false;
      for (const ModelOp& op : ww.ops) {
        if (op.path == lo.path || is_prefix(op.path, lo.path) ||
            (!op.removed && is_prefix(lo.path, op.path))) {
          supersedes = true;
          break;
        }
      }
      if (supersedes && (!best || stamp_less(writes_[*best], ww))) best = w;
    }
    return best;
  }

  std::string apply_model(size_t incoming, int r) {
    auto& applied = applied_[static_cast<size_t>(r)];
    applied.insert(incoming);
    auto& gone = superseded_[static_cast<size_t>(r)];
    const ModelWrite& in = writes_[incoming];
    for (size_t l : applied) {
      if (writes_[l].key != in.key) continue;
      for (size_t o = 0; o < writes_[l].ops.size(); ++o) {
        if (gone.count({l, o}) != 0) continue;
        const auto winner = winner_of(applied, l, o);
        if (!winner) continue;
        gone.insert({l, o});
        const ModelWrite& lw = writes_[l];
        const ModelWrite& ww = writes_[*winner];
        if (ww.past.count(lw.dot) != 0) continue;  // causally ordered
        // Blamed: the winner arrives now, written by the fast clock, and
        // judged by a replica whose clock is not the fast one.
        const bool skew = *winner == incoming && ww.writer == fast_ && r != fast_;
        expected_[static_cast<size_t>(r)].insert(
            {lw.key, lw.ops[o].path, lw.dot, ww.dot,
             skew ? v1::ConflictRecord::CLOCK_SKEW : v1::ConflictRecord::CONCURRENT,
             lw.ops[o].removed, lw.ops[o].value});
      }
    }
    return "";
  }

  std::string check_records(const std::vector<std::string>& keys) {
    for (int r = 0; r < n_; ++r) {
      std::set<RecordKey> got;
      for (const auto& key : keys) {
        for (const auto& rec : stores_[static_cast<size_t>(r)]->conflicts(key)) {
          got.insert({rec.key(),
                      {rec.path().begin(), rec.path().end()},
                      {rec.loser().replica(), rec.loser().seq()},
                      {rec.winner().replica(), rec.winner().seq()},
                      rec.reason(),
                      rec.loser_removed(),
                      rec.loser_value()});
        }
      }
      const auto& want = expected_[static_cast<size_t>(r)];
      if (got == want) continue;
      std::string out = "replica " + std::to_string(r + 1) +
                        " (fast: " + std::to_string(fast_ + 1) +
                        ") records differ from the model:\n";
      auto show = [](const RecordKey& k) {
        std::string s = std::get<0>(k) + " /";
        for (const auto& p : std::get<1>(k)) s += p + "/";
        s += " loser " + std::to_string(std::get<2>(k).first) + ":" +
             std::to_string(std::get<2>(k).second) + " winner " +
             std::to_string(std::get<3>(k).first) + ":" + std::to_string(std::get<3>(k).second) +
             (std::get<4>(k) == v1::ConflictRecord::CLOCK_SKEW ? " SKEW" : " CONCURRENT") +
             (std::get<5>(k) ? " removed" : " value " + std::get<6>(k));
        return s;
      };
      for (const auto& k : got) {
        if (want.count(k) == 0) out += "  unexpected: " + show(k) + "\n";
      }
      for (const auto& k : want) {
        if (got.count(k) == 0) out += "  missing:    " + show(k) + "\n";
      }
      out += "history:\n";
      for (const auto& w : writes_) {
        out += "  " + std::to_string(w.dot.first) + ":" + std::to_string(w.dot.second) + " hlc " +
               std::to_string(w.hlc) + " " + w.delta.ShortDebugString() + "\n";
      }
      return out;
    }
    return "";
  }

  std::vector<std::unique_ptr<Store>>& stores_;
  std::vector<std::unique_ptr<ManualClock>>& clocks_;
  uint64_t& true_ms_;
  int n_ = 0;
  int fast_ = -1;
  std::vector<ModelWrite> writes_;
  std::vector<std::set<size_t>> applied_;
  std::vector<std::set<std::pair<size_t, size_t>>> superseded_;
  std::vector<std::set<RecordKey>> expected_;
};

TEST(ConflictProperty, RecordsMatchTheCausalModel) {
  TempDir dir;
  std::vector<std::unique_ptr<ManualClock>> clocks;
  std::vector<std::unique_ptr<Store>> stores;
  for (int r = 0; r < kReplicas; ++r) {
    clocks.push_back(std::make_unique<ManualClock>(kStart));
    stores.push_back(open_store(dir.sub("r" + std::to_string(r + 1)), clocks.back().get(),
                                Durability::kNone, static_cast<uint64_t>(r + 1)));
    ASSERT_NE(stores.back(), nullptr);
  }
  uint64_t true_ms = kStart;
  ConflictProperty property(&stores, &clocks, &true_ms);
#ifdef CANOPY_CONFLICT_SLOW
  uint64_t cases = 60;
#else
  uint64_t cases = 300;
#endif
  if (const char* c = std::getenv("CANOPY_CONFLICT_CASES")) cases = std::strtoull(c, nullptr, 10);
  uint64_t first = 1;
  if (const char* s = std::getenv("CANOPY_SEED")) {
    first = std::strtoull(s, nullptr, 10);
    cases = 1;
  }
  for (uint64_t seed = first; seed < first + cases; ++seed) {
    const std::string err = property.run(seed);
    ASSERT_TRUE(err.empty()) << "seed " << seed << ": " << err << "\nreplay: CANOPY_SEED=" << seed
                             << " build/dev/store/tests/store_conflict_property_test";
  }
  RecordProperty("cases", static_cast<int>(cases));
}

}  // namespace
}  // namespace canopy
