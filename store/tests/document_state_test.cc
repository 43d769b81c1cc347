// Unit tests of Document's serialized state (proto round trip, pruning,
// refusals), tombstone collection, compaction, causal fields and the
// documents' storage blocks.

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "store/document.h"
#include "store/tests/document_test_util.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace store_test;

// --- Serialized state.

TEST(DocumentState, ProtoRoundTrip) {
  Document d;
  write(&d, json::parse(R"({"a":1,"b":{"c":[1,2],"d":{}},"s":"x"})"), 1, 1, 100);
  d.apply(make_delta(kKey, 2, 1, 200, {remove_op({"s"}, {1, 1}), set_op({"b", "e"}, "null")}),
          nullptr);
  v1::NodeState s;
  d.to_proto(&s);
  auto back = Document::from_proto(s);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->to_json(), d.to_json());
  EXPECT_EQ(state_bytes(*back), state_bytes(d));
  EXPECT_EQ(back->max_hlc(), 200u);

  // Through bytes, as the store keeps it.
  v1::NodeState parsed;
  ASSERT_TRUE(parsed.ParseFromString(s.SerializeAsString()));
  auto again = Document::from_proto(parsed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(state_bytes(*again), state_bytes(d));
}

TEST(DocumentState, PruningDropsWhatCanNeverShowAgain) {
  Document d;
  write(&d, json::parse(R"({"a":1,"b":{"c":2}})"), 1, 1, 100);
  d.apply(make_delta(kKey, 1, 2, 200, {remove_op({})}), nullptr);
  v1::NodeState s;
  d.to_proto(&s);
  EXPECT_EQ(s.children_size(), 0) << s.DebugString();
  EXPECT_TRUE(s.reg_removed());
  EXPECT_EQ(s.reg_hlc(), 200u);

  // An overwritten object's old fields are pruned too.
  Document e;
  write(&e, json::parse(R"({"a":{"x":1,"y":2}})"), 1, 1, 100);
  write(&e, json::parse(R"({"a":3})"), 1, 2, 200);
  e.to_proto(&s);
  ASSERT_EQ(s.children_size(), 1);
  EXPECT_EQ(s.children(0).name(), "a");
  EXPECT_EQ(s.children(0).node().children_size(), 0) << s.DebugString();
}

TEST(DocumentState, JoinIsOrderIndependent) {
  const v1::Delta base = base_delta();
  const v1::Delta a = make_delta(kKey, 2, 1, 200, {set_op({"a"}, "2", {1, 1}), remove_op({"b"})});
  const v1::Delta b = make_delta(kKey, 3, 1, 150, {set_op({"b", "x"}, "[true]")});
  const v1::Delta c = make_delta(kKey, 3, 2, 250, {set_op({"b", "y"}, "\"y\"")});
  const v1::Delta del = make_delta(kKey, 4, 1, 120, {remove_op({})});

  Document x = apply_all({base, a});
  Document y = apply_all({b, c, del});
  v1::NodeState xs, ys;
  x.to_proto(&xs);
  y.to_proto(&ys);

  Document xy = x;
  xy.merge(ys);
  Document yx = y;
  yx.merge(xs);
  EXPECT_EQ(state_bytes(xy), state_bytes(yx));
  EXPECT_EQ(xy.to_json(), R"({"a":2,"b":{"y":"y"}})");
  // Joining states gives the same bytes as applying every delta.
  EXPECT_EQ(state_bytes(xy), state_bytes(apply_all({del, c, a, b, base})));
  // Idempotent.
  Document xx = x;
  xx.merge(xs);
  EXPECT_EQ(state_bytes(xx), state_bytes(x));
}

TEST(DocumentState, FromProtoRefusesBadStates) {
  v1::NodeState s;
  auto* c = s.add_children();
  c->set_name("b");
  c->mutable_node()->set_reg_hlc(1);
  c->mutable_node()->set_reg_replica(1);
  c->mutable_node()->set_reg_value("1");
  c = s.add_children();
  c->set_name("a");
  c->mutable_node()->set_reg_hlc(1);
  c->mutable_node()->set_reg_replica(1);
  c->mutable_node()->set_reg_value("1");
  s.set_obj_hlc(1);
  s.set_obj_replica(1);
  auto d = Document::from_proto(s);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("not sorted"), std::string::npos) << d.status().message();

  v1::NodeState obj;
  obj.set_reg_hlc(1);
  obj.set_reg_replica(1);
  obj.set_reg_value(R"({"a":1})");
  d = Document::from_proto(obj);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("not a JSON scalar or array"), std::string::npos);

  v1::NodeState deep;
  v1::NodeState* n = &deep;
  for (int i = 0; i < 10; ++i) {
    auto* child = n->add_children();
    child->set_name("x");
    n = child->mutable_node();
  }
  d = Document::from_proto(deep, 5);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("deeper than the limit"), std::string::npos);
}

TEST(DocumentState, FromProtoRefusesLiveRegisterWithoutValue) {
  // A live, non-removed register must hold a value: otherwise to_json would
  // print `"a":` and to_value would throw.
  v1::NodeState s;
  s.set_obj_hlc(5);
  s.set_obj_replica(1);
  auto* c = s.add_children();
  c->set_name("a");
  c->mutable_node()->set_reg_hlc(5);
  c->mutable_node()->set_reg_replica(1);
  auto d = Document::from_proto(s);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("not a JSON scalar or array"), std::string::npos)
      << d.status().message();
}

// --- Tombstone collection.

TEST(DocumentTombstones, CollectStableTombstones) {
  Document d;
  write(&d, json::parse(R"({"a":1,"b":{"c":2},"k":true})"), 1, 1, 100);
  write(&d, json::parse(R"({"k":true})"), 1, 2, 200);  // removes a and b
  v1::NodeState before;
  d.to_proto(&before);
  EXPECT_EQ(before.children_size(), 3);

  EXPECT_EQ(d.collect_tombstones(150), 0u) << "tombstones newer than the stable stamp stay";
  EXPECT_EQ(d.collect_tombstones(201), 2u);
  v1::NodeState after;
  d.to_proto(&after);
  ASSERT_EQ(after.children_size(), 1) << after.DebugString();
  EXPECT_EQ(after.children(0).name(), "k");
  EXPECT_EQ(d.to_json(), R"({"k":true})");
  EXPECT_EQ(d.collect_tombstones(1000), 0u);

  // A deleted document collects down to nothing.
  d.apply(make_delta(kKey, 1, 3, 300, {remove_op({})}), nullptr);
  EXPECT_FALSE(d.empty());
  EXPECT_EQ(d.collect_tombstones(301), 1u);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(state_bytes(d), "");
}

// Child names are searched by their first 8 bytes, zero-padded, and the
// rest: names that agree in those bytes, shorter than 8 bytes or holding
// zero bytes, still sort bytewise and are found again, in any arrival order.
TEST(DocumentState, NamesThatShareTheirPaddedPrefixStayApart) {
  using namespace std::string_literals;
  const std::vector<std::string> names = {
      "ab"s,       "ab\0"s,     "ab\0\0\0\0\0\0"s, "ab\0\0\0\0\0\0\0"s, "ab\0\0\0\0\0\0x"s,
      "ab\1"s,     "abcdefgh"s, "abcdefghi"s,      "abcdefgh\0"s,       "abcdefghij"s,
      "abcdefgi"s, "b"s};
  std::mt19937_64 rng(11);
  for (int round = 0; round < 20; ++round) {
    std::vector<size_t> order(names.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    Document d;
    uint64_t seq = 0;
    for (size_t i : order) {
      ++seq;
      d.apply(make_delta(kKey, 1, seq, 100 + seq, {set_op({names[i]}, std::to_string(i))}),
              nullptr);
    }
    // Each name once more, overwritten: found, not added again.
    for (size_t i : order) {
      ++seq;
      d.apply(make_delta(kKey, 1, seq, 100 + seq, {set_op({names[i]}, std::to_string(i + 100))}),
              nullptr);
    }
    const json v = d.to_value();
    ASSERT_EQ(v.size(), names.size());
    for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(v.at(names[i]), i + 100) << i;
    v1::NodeState s;
    d.to_proto(&s);
    ASSERT_EQ(s.children_size(), static_cast<int>(names.size()));
    for (int i = 1; i < s.children_size(); ++i) {
      EXPECT_LT(s.children(i - 1).name(), s.children(i).name()) << i;
    }
    // Its state reads back as itself.
    auto back = Document::from_proto(s);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(state_bytes(*back), state_bytes(d));
  }
}

// A document reclaims the space of overwritten values, removed fields and
// moved child lists as it goes; none of that may change what it holds. Many
// writes to one document, with names that share long prefixes and values that
// grow and shrink, checked against the targets written and against the same
// deltas applied in reverse order to a fresh document.
TEST(DocumentState, ManyWritesKeepTheStateThroughCompaction) {
  std::mt19937_64 rng(7);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<std::string> names = {"a",
                                          "b",
                                          "name",
                                          "namespace",
                                          "annotations",
                                          "app.kubernetes.io/name",
                                          "app.kubernetes.io/version",
                                          "app.kubernetes.io/n",
                                          "x\u00e9",
                                          "labels",
                                          "z",
                                          "zz"};
  std::function<json(int)> random_object = [&](int depth) {
    json o = json::object();
    const size_t n = 1 + pick(depth == 0 ? 8 : 5);
    for (size_t i = 0; i < n; ++i) {
      const std::string& k = names[pick(names.size())];
      if (depth < 2 && pick(3) == 0) {
        o[k] = random_object(depth + 1);
      } else if (pick(4) == 0) {
        o[k] = json::array({pick(100), std::string(pick(40), 'v')});
      } else {
        o[k] = std::string(1 + pick(pick(2) == 0 ? 8 : 300), static_cast<char>('a' + pick(26)));
      }
    }
    return o;
  };
  Document d;
  std::vector<v1::Delta> deltas;
  uint64_t hlc = 100;
  for (uint64_t seq = 1; seq <= 400; ++seq) {
    const json target = random_object(0);
    deltas.push_back(write(&d, target, 1, seq, hlc += 10));
    ASSERT_EQ(d.to_json(), target.dump()) << "after write " << seq;
    if (seq % 50 == 0) {
      d.collect_tombstones(hlc);
      ASSERT_EQ(d.to_json(), target.dump()) << "after collecting at write " << seq;
    }
  }
  Document reversed;
  for (auto it = deltas.rbegin(); it != deltas.rend(); ++it) reversed.apply(*it, nullptr);
  EXPECT_EQ(reversed.to_json(), d.to_json());
  reversed.collect_tombstones(hlc + 1);
  d.collect_tombstones(hlc + 1);
  EXPECT_EQ(state_bytes(reversed), state_bytes(d));
  // A state carried over merges into a fresh document as the same state.
  v1::NodeState s;
  d.to_proto(&s);
  Document joined;
  joined.merge(s);
  EXPECT_EQ(state_bytes(joined), state_bytes(d));
}

// Three replicas take turns writing one document, each having seen every
// write before its own: registers hold other replicas' prevs and causal
// contexts (kept beside the nodes). They survive compaction and the proto
// round trip, join to the same state in any order, and no write is reported
// lost: each was seen by every write that superseded it.
TEST(DocumentState, CausalFieldsKeptThroughCompactionAndProto) {
  std::mt19937_64 rng(11);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<std::string> names = {"a", "b", "c", "labels", "spec"};
  std::function<json(int)> random_object = [&](int depth) {
    json o = json::object();
    const size_t n = 1 + pick(4);
    for (size_t i = 0; i < n; ++i) {
      const std::string& k = names[pick(names.size())];
      if (depth < 2 && pick(3) == 0) {
        o[k] = random_object(depth + 1);
      } else {
        o[k] = std::string(1 + pick(60), static_cast<char>('a' + pick(26)));
      }
    }
    return o;
  };
  Document d;
  std::vector<v1::Delta> deltas;
  uint64_t seqs[4] = {0, 0, 0, 0};
  uint64_t hlc = 100;
  for (int i = 0; i < 300; ++i) {
    const uint64_t replica = 1 + pick(3);
    const json target = random_object(0);
    std::vector<v1::FieldOp> ops;
    d.diff(target, &ops);
    v1::Delta delta = make_delta(kKey, replica, ++seqs[replica], hlc += 10, std::move(ops));
    d.causal_context(replica, &delta);
    d.apply(delta, nullptr);
    ASSERT_EQ(d.to_json(), target.dump()) << "after write " << i;
    deltas.push_back(std::move(delta));
  }
  v1::NodeState s;
  d.to_proto(&s);
  // The state holds what the side table keeps: another replica's prev and a
  // context somewhere.
  bool foreign_prev = false, context = false;
  const std::function<void(const v1::NodeState&)> scan = [&](const v1::NodeState& n) {
    if (n.has_reg_prev() && n.reg_prev().replica() != n.reg_replica()) foreign_prev = true;
    if (n.reg_seen_size() > 0 || n.obj_seen_size() > 0) context = true;
    for (const auto& c : n.children()) scan(c.node());
  };
  scan(s);
  EXPECT_TRUE(foreign_prev);
  EXPECT_TRUE(context);

  auto back = Document::from_proto(s);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(state_bytes(*back), state_bytes(d));
  Document joined;
  joined.merge(s);
  EXPECT_EQ(state_bytes(joined), state_bytes(d));

  std::vector<Overwrite> ow;
  Document reversed;
  for (auto it = deltas.rbegin(); it != deltas.rend(); ++it) reversed.apply(*it, &ow);
  EXPECT_EQ(reversed.to_json(), d.to_json());
  EXPECT_EQ(state_bytes(reversed), state_bytes(d));
  EXPECT_TRUE(ow.empty()) << ow.size() << " writes reported lost, the first by replica "
                          << (ow.empty() ? 0 : ow[0].loser.replica);
}

// Documents' storage blocks, of every size class and beyond, hold what is
// written to them while others are taken and given back.
TEST(DocumentStorage, BlocksKeepTheirBytes) {
  std::mt19937_64 rng(3);
  struct Block {
    char* p;
    size_t n;
    char fill;
  };
  std::vector<Block> live;
  auto check = [](const Block& b) {
    for (size_t i = 0; i < b.n; i += 1 + b.n / 64) {
      if (b.p[i] != b.fill) return false;
    }
    return b.p[b.n - 1] == b.fill;
  };
  for (int round = 0; round < 3000; ++round) {
    if (!live.empty() && rng() % 3 == 0) {
      const size_t i = rng() % live.size();
      ASSERT_TRUE(check(live[i])) << "block of " << live[i].n << " bytes";
      document_storage_release(live[i].p, live[i].n);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    const size_t n = 1 + rng() % (rng() % 8 == 0 ? (size_t{3} << 20) : 4096);
    const char fill = static_cast<char>(rng());
    char* p = static_cast<char*>(document_storage_allocate(n));
    std::fill(p, p + n, fill);
    live.push_back({p, n, fill});
  }
  for (const Block& b : live) {
    ASSERT_TRUE(check(b)) << "block of " << b.n << " bytes";
    document_storage_release(b.p, b.n);
  }
}

}  // namespace
}  // namespace canopy
