// Unit tests of the merge rules of Document (store/document.h), driven by
// hand-made deltas so that every stamp, dot and arrival order is explicit.

#include "store/document.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "store/canonical_json.h"
#include "store/tests/test_util.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using store_test::make_delta;
using store_test::make_object_op;
using store_test::remove_op;
using store_test::set_op;
using store_test::state_bytes;

constexpr char kKey[] = "t/acme/doc";

// Applies `deltas` in order to a fresh document; collects reported overwrites.
Document apply_all(const std::vector<v1::Delta>& deltas,
                   std::vector<Overwrite>* overwrites = nullptr) {
  Document d;
  for (const auto& delta : deltas) d.apply(delta, overwrites);
  return d;
}

// The base document {"a":1,"b":{"c":2}} written by replica 1, seq 1 at HLC 100.
v1::Delta base_delta() {
  return make_delta(kKey, 1, 1, 100, {set_op({"a"}, "1"), set_op({"b", "c"}, "2")});
}

std::string op_string(const v1::FieldOp& op) {
  std::string s;
  for (const auto& p : op.path()) s += "/" + p;
  s += " " + v1::FieldOp::Kind_Name(op.kind());
  if (op.kind() == v1::FieldOp::SET) s += " " + op.value();
  if (op.has_prev()) {
    s += " prev=" + std::to_string(op.prev().replica()) + ":" + std::to_string(op.prev().seq());
  }
  return s;
}

std::vector<std::string> op_strings(const std::vector<v1::FieldOp>& ops) {
  std::vector<std::string> out;
  for (const auto& op : ops) out.push_back(op_string(op));
  std::sort(out.begin(), out.end());
  return out;
}

// Writes `target` over `d` as replica `replica` would: diff, stamp, apply.
v1::Delta write(Document* d, const json& target, uint64_t replica, uint64_t seq, uint64_t hlc) {
  std::vector<v1::FieldOp> ops;
  d->diff(target, &ops);
  v1::Delta delta = make_delta(kKey, replica, seq, hlc, std::move(ops));
  d->apply(delta, nullptr);
  return delta;
}

// --- Object fields merge key by key.

TEST(DocumentMerge, ObjectFieldsMergeKeyByKey) {
  const v1::Delta base = base_delta();
  // Replica 2 edits a; replica 3 edits b.c; neither sees the other.
  const v1::Delta a = make_delta(kKey, 2, 1, 200, {set_op({"a"}, "10", {1, 1})});
  const v1::Delta c = make_delta(kKey, 3, 1, 150, {set_op({"b", "c"}, "20", {1, 1})});
  const v1::Delta d = make_delta(kKey, 3, 2, 160, {set_op({"b", "d"}, "\"new\"")});
  std::vector<Overwrite> ow;
  Document x = apply_all({base, a, c, d}, &ow);
  Document y = apply_all({base, d, c, a}, &ow);
  EXPECT_EQ(x.to_json(), R"({"a":10,"b":{"c":20,"d":"new"}})");
  EXPECT_EQ(y.to_json(), x.to_json());
  EXPECT_EQ(state_bytes(x), state_bytes(y));
  EXPECT_TRUE(ow.empty()) << "edits of different fields are not conflicts";
}

// --- Scalars: last writer wins by (HLC, replica).

TEST(DocumentMerge, ScalarLastWriterWinsByHlc) {
  const v1::Delta base = base_delta();
  // Replica 9 writes earlier than replica 2: the HLC decides, not the replica id.
  const v1::Delta early = make_delta(kKey, 9, 1, 200, {set_op({"a"}, "\"early\"", {1, 1})});
  const v1::Delta late = make_delta(kKey, 2, 1, 300, {set_op({"a"}, "\"late\"", {1, 1})});
  EXPECT_EQ(apply_all({base, early, late}).to_json(), R"({"a":"late","b":{"c":2}})");
  EXPECT_EQ(apply_all({base, late, early}).to_json(), R"({"a":"late","b":{"c":2}})");
}

TEST(DocumentMerge, ReplicaIdBreaksHlcTies) {
  const v1::Delta base = base_delta();
  const v1::Delta low = make_delta(kKey, 2, 1, 200, {set_op({"a"}, "\"two\"", {1, 1})});
  const v1::Delta high = make_delta(kKey, 3, 1, 200, {set_op({"a"}, "\"three\"", {1, 1})});
  const Document x = apply_all({base, low, high});
  const Document y = apply_all({base, high, low});
  EXPECT_EQ(x.to_json(), R"({"a":"three","b":{"c":2}})");
  EXPECT_EQ(state_bytes(x), state_bytes(y));
}

TEST(DocumentMerge, ArraysAreWholeValues) {
  const v1::Delta base = make_delta(kKey, 1, 1, 100, {set_op({"list"}, "[1,2,3]")});
  const v1::Delta a = make_delta(kKey, 2, 1, 200, {set_op({"list"}, "[1,2,3,4]", {1, 1})});
  const v1::Delta b = make_delta(kKey, 3, 1, 210, {set_op({"list"}, "[0]", {1, 1})});
  // No element-wise merge: the later array replaces the whole value.
  EXPECT_EQ(apply_all({base, a, b}).to_json(), R"({"list":[0]})");
  EXPECT_EQ(apply_all({base, b, a}).to_json(), R"({"list":[0]})");
  // An array holding objects is still one opaque value.
  const v1::Delta objs =
      make_delta(kKey, 4, 1, 220, {set_op({"list"}, R"([{"x":1},{"y":[2]}])", {3, 1})});
  EXPECT_EQ(apply_all({base, a, b, objs}).to_json(), R"({"list":[{"x":1},{"y":[2]}]})");
}

// --- Key removal leaves a stamped tombstone.

TEST(DocumentMerge, RemoveBeatsConcurrentOlderSet) {
  const v1::Delta base = base_delta();
  const v1::Delta set = make_delta(kKey, 2, 1, 250, {set_op({"a"}, "5", {1, 1})});
  const v1::Delta rm = make_delta(kKey, 3, 1, 300, {remove_op({"a"}, {1, 1})});
  const Document x = apply_all({base, set, rm});
  const Document y = apply_all({base, rm, set});
  EXPECT_EQ(x.to_json(), R"({"b":{"c":2}})");
  EXPECT_EQ(y.to_json(), x.to_json());
  EXPECT_EQ(state_bytes(x), state_bytes(y));
}

TEST(DocumentMerge, NewerSetAfterRemoveResurrects) {
  const v1::Delta base = base_delta();
  const v1::Delta rm = make_delta(kKey, 3, 1, 300, {remove_op({"a"}, {1, 1})});
  const v1::Delta set = make_delta(kKey, 2, 1, 400, {set_op({"a"}, "5")});
  EXPECT_EQ(apply_all({base, rm, set}).to_json(), R"({"a":5,"b":{"c":2}})");
  EXPECT_EQ(apply_all({base, set, rm}).to_json(), R"({"a":5,"b":{"c":2}})");
}

TEST(DocumentMerge, RemovedObjectHidesItsOldChildren) {
  const v1::Delta base = base_delta();
  const v1::Delta rm = make_delta(kKey, 2, 1, 200, {remove_op({"b"})});
  const v1::Delta older_child = make_delta(kKey, 3, 1, 150, {set_op({"b", "x"}, "1")});
  const v1::Delta newer_child = make_delta(kKey, 3, 2, 250, {set_op({"b", "y"}, "2")});
  EXPECT_EQ(apply_all({base, rm}).to_json(), R"({"a":1})");
  // A child written before the removal stays hidden in every order; one written
  // after it brings the object back with that child only.
  EXPECT_EQ(apply_all({base, older_child, rm}).to_json(), R"({"a":1})");
  EXPECT_EQ(apply_all({base, rm, older_child}).to_json(), R"({"a":1})");
  EXPECT_EQ(apply_all({base, rm, newer_child, older_child}).to_json(), R"({"a":1,"b":{"y":2}})");
  EXPECT_EQ(apply_all({newer_child, older_child, rm, base}).to_json(), R"({"a":1,"b":{"y":2}})");
}

// --- Deleting a document.

TEST(DocumentMerge, DeleteThenLaterFieldWrite) {
  const v1::Delta base = base_delta();
  const v1::Delta del = make_delta(kKey, 2, 1, 200, {remove_op({})});
  const v1::Delta before = make_delta(kKey, 3, 1, 150, {set_op({"z"}, "\"before\"")});
  const v1::Delta after = make_delta(kKey, 3, 2, 250, {set_op({"q"}, "\"after\"")});

  Document deleted = apply_all({base, del});
  EXPECT_FALSE(deleted.exists());
  EXPECT_EQ(deleted.to_json(), "");
  EXPECT_TRUE(deleted.to_value().is_null());

  // A write concurrent with the delete but stamped before it does not survive.
  Document x = apply_all({base, before, del});
  Document y = apply_all({del, before, base});
  EXPECT_FALSE(x.exists());
  EXPECT_EQ(state_bytes(x), state_bytes(y));

  // Only the fields written after the delete survive it.
  const std::vector<std::vector<v1::Delta>> orders = {
      {base, before, del, after}, {after, del, before, base}, {del, after, base, before}};
  for (const auto& order : orders) {
    Document d = apply_all(order);
    EXPECT_TRUE(d.exists());
    EXPECT_EQ(d.to_json(), R"({"q":"after"})");
    EXPECT_EQ(state_bytes(d), state_bytes(apply_all(orders[0])));
  }
}

TEST(DocumentMerge, RecreateAfterDeleteWithDiff) {
  Document d;
  write(&d, json{{"a", 1}, {"b", 2}}, 1, 1, 100);
  d.apply(make_delta(kKey, 1, 2, 200, {remove_op({})}), nullptr);
  ASSERT_FALSE(d.exists());
  // Recreating with the same content writes every field again, with no prev.
  std::vector<v1::FieldOp> ops;
  d.diff(json{{"a", 1}}, &ops);
  EXPECT_EQ(op_strings(ops), std::vector<std::string>{"/a SET 1"});
  write(&d, json{{"a", 1}}, 1, 3, 300);
  EXPECT_EQ(d.to_json(), R"({"a":1})");
  // Recreating as an empty object is one MAKE_OBJECT at the root.
  d.apply(make_delta(kKey, 1, 4, 400, {remove_op({})}), nullptr);
  ops.clear();
  d.diff(json::object(), &ops);
  EXPECT_EQ(op_strings(ops), std::vector<std::string>{" MAKE_OBJECT prev=1:4"});
}

// --- Type changes.

TEST(DocumentMerge, ObjectReplacedByScalarAndBack) {
  Document d;
  write(&d, json::parse(R"({"a":{"x":1,"y":2}})"), 1, 1, 100);
  const v1::Delta to_scalar = write(&d, json::parse(R"({"a":5})"), 1, 2, 200);
  ASSERT_EQ(to_scalar.ops_size(), 1);
  EXPECT_EQ(op_string(to_scalar.ops(0)), "/a SET 5");
  EXPECT_EQ(d.to_json(), R"({"a":5})");

  const v1::Delta to_object = write(&d, json::parse(R"({"a":{"z":3}})"), 1, 3, 300);
  EXPECT_EQ(d.to_json(), R"({"a":{"z":3}})") << "the fields from before the scalar stay hidden";

  const v1::Delta to_array = write(&d, json::parse(R"({"a":[{"z":3}]})"), 1, 4, 400);
  EXPECT_EQ(d.to_json(), R"({"a":[{"z":3}]})");

  // Every replica that gets the same deltas in another order agrees.
  Document e = apply_all({to_array, to_object, to_scalar});
  std::vector<v1::FieldOp> first_ops;
  Document fresh;
  fresh.diff(json::parse(R"({"a":{"x":1,"y":2}})"), &first_ops);
  e.apply(make_delta(kKey, 1, 1, 100, first_ops), nullptr);
  EXPECT_EQ(e.to_json(), d.to_json());
  EXPECT_EQ(state_bytes(e), state_bytes(d));
}

TEST(DocumentMerge, ConcurrentTypeChangeAndFieldEditNewerWins) {
  const v1::Delta base = make_delta(kKey, 1, 1, 100, {set_op({"a", "x"}, "1")});
  const v1::Delta scalar = make_delta(kKey, 2, 1, 300, {set_op({"a"}, "\"flat\"")});
  const v1::Delta edit_older = make_delta(kKey, 3, 1, 290, {set_op({"a", "y"}, "2")});
  const v1::Delta edit_newer = make_delta(kKey, 3, 1, 310, {set_op({"a", "y"}, "2")});

  // The type change is newer: the scalar wins.
  for (const auto& order : std::vector<std::vector<v1::Delta>>{
           {base, scalar, edit_older}, {base, edit_older, scalar}, {edit_older, scalar, base}}) {
    EXPECT_EQ(apply_all(order).to_json(), R"({"a":"flat"})");
  }
  // The field edit is newer: the node is an object again, holding only what
  // was written after the type change.
  for (const auto& order : std::vector<std::vector<v1::Delta>>{
           {base, scalar, edit_newer}, {base, edit_newer, scalar}, {edit_newer, scalar, base}}) {
    EXPECT_EQ(apply_all(order).to_json(), R"({"a":{"y":2}})");
  }
}

TEST(DocumentMerge, EmptyObjectMakeObject) {
  Document d;
  EXPECT_FALSE(d.exists());
  std::vector<v1::FieldOp> ops;
  d.diff(json::object(), &ops);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].kind(), v1::FieldOp::MAKE_OBJECT);
  EXPECT_EQ(ops[0].path_size(), 0);
  d.apply(make_delta(kKey, 1, 1, 100, ops), nullptr);
  EXPECT_TRUE(d.exists());
  EXPECT_EQ(d.to_json(), "{}");

  // A nested empty object, and an empty object replacing a scalar.
  write(&d, json::parse(R"({"e":{},"s":1})"), 1, 2, 200);
  EXPECT_EQ(d.to_json(), R"({"e":{},"s":1})");
  ops.clear();
  d.diff(json::parse(R"({"e":{},"s":{}})"), &ops);
  EXPECT_EQ(op_strings(ops), std::vector<std::string>{"/s MAKE_OBJECT prev=1:2"});
  d.apply(make_delta(kKey, 1, 3, 300, ops), nullptr);
  EXPECT_EQ(d.to_json(), R"({"e":{},"s":{}})");
  // A concurrent older MAKE_OBJECT does not hide a newer scalar.
  Document e;
  e.apply(make_delta(kKey, 1, 1, 100, {set_op({"s"}, "1")}), nullptr);
  e.apply(make_delta(kKey, 2, 1, 90, {make_object_op({"s"})}), nullptr);
  EXPECT_EQ(e.to_json(), R"({"s":1})");
}

// --- diff().

TEST(DocumentDiff, MinimalOpsWithPrevDots) {
  Document d;
  d.apply(make_delta(kKey, 1, 1, 100,
                     {set_op({"a"}, "1"), set_op({"b", "c"}, "2"), set_op({"b", "k"}, "\"keep\""),
                      set_op({"d"}, "[1]"), make_object_op({"o"})}),
          nullptr);
  d.apply(make_delta(kKey, 2, 7, 200, {set_op({"b", "c"}, "3", {1, 1})}), nullptr);
  ASSERT_EQ(d.to_json(), R"({"a":1,"b":{"c":3,"k":"keep"},"d":[1],"o":{}})");

  std::vector<v1::FieldOp> ops;
  d.diff(json::parse(R"({"a":1,"b":{"c":4,"k":"keep"},"e":true,"o":{}})"), &ops);
  EXPECT_EQ(op_strings(ops), (std::vector<std::string>{
                                 "/b/c SET 4 prev=2:7",
                                 "/d REMOVE prev=1:1",
                                 "/e SET true",
                             }));

  // The same document: no ops at all.
  ops.clear();
  d.diff(d.to_value(), &ops);
  EXPECT_TRUE(ops.empty());

  // Removing an object removes the node, not each of its fields.
  ops.clear();
  d.diff(json::parse(R"({"a":1,"d":[1],"o":{}})"), &ops);
  EXPECT_EQ(op_strings(ops), std::vector<std::string>{"/b REMOVE"});

  // An equal array is not rewritten; a changed one is one SET.
  ops.clear();
  d.diff(json::parse(R"({"a":1,"b":{"c":3,"k":"keep"},"d":[1,2],"o":{}})"), &ops);
  EXPECT_EQ(op_strings(ops), std::vector<std::string>{"/d SET [1,2] prev=1:1"});
}

TEST(DocumentDiff, AppliedDiffReachesTarget) {
  Document d;
  const std::vector<std::string> targets = {
      R"({"a":1})",
      R"({"a":{"b":{"c":[1,{"x":null}]}},"s":"\u00e9\n"})",
      R"({"a":{"b":{}},"n":null})",
      R"({"a":"flat","n":null,"z":{"y":{"x":{}}}})",
      R"({})",
      R"({"a":{"b":{"c":1}}})",
  };
  uint64_t seq = 0;
  for (const auto& t : targets) {
    ++seq;
    write(&d, json::parse(t), 1, seq, 100 * seq);
    EXPECT_EQ(d.to_json(), json::parse(t).dump()) << "after writing " << t;
    EXPECT_EQ(d.to_value(), json::parse(t));
  }
}

// --- Conflicts.

TEST(DocumentConflicts, ConcurrentWritesReportedInBothOrders) {
  const v1::Delta base = base_delta();
  const v1::Delta a = make_delta(kKey, 2, 1, 200, {set_op({"a"}, "\"two\"", {1, 1})});
  const v1::Delta b = make_delta(kKey, 3, 1, 210, {set_op({"a"}, "\"three\"", {1, 1})});
  for (const auto& order : std::vector<std::vector<v1::Delta>>{{base, a, b}, {base, b, a}}) {
    std::vector<Overwrite> ow;
    Document d = apply_all(order, &ow);
    EXPECT_EQ(d.to_json(), R"({"a":"three","b":{"c":2}})");
    ASSERT_EQ(ow.size(), 1u);
    EXPECT_EQ(ow[0].path, std::vector<std::string>{"a"});
    EXPECT_EQ(ow[0].loser, (Stamp{200, 2}));
    EXPECT_EQ(ow[0].loser_seq, 1u);
    EXPECT_EQ(ow[0].loser_value, "\"two\"");
    EXPECT_FALSE(ow[0].loser_removed);
    EXPECT_EQ(ow[0].winner, (Stamp{210, 3}));
    EXPECT_EQ(ow[0].winner_seq, 1u);
  }
}

TEST(DocumentConflicts, ConcurrentRemoveReported) {
  const v1::Delta base = base_delta();
  const v1::Delta set = make_delta(kKey, 2, 1, 200, {set_op({"a"}, "7", {1, 1})});
  const v1::Delta rm = make_delta(kKey, 3, 1, 300, {remove_op({"a"}, {1, 1})});
  std::vector<Overwrite> ow;
  apply_all({base, set, rm}, &ow);
  ASSERT_EQ(ow.size(), 1u);
  EXPECT_EQ(ow[0].loser_value, "7");
  EXPECT_EQ(ow[0].winner, (Stamp{300, 3}));
  ow.clear();
  // The newer remove arrives first: the older set lands behind the tombstone,
  // its writer never saw the remove, and it is reported the same way.
  apply_all({base, rm, set}, &ow);
  ASSERT_EQ(ow.size(), 1u);
  EXPECT_EQ(ow[0].loser_value, "7");
  EXPECT_EQ(ow[0].loser, (Stamp{200, 2}));
  EXPECT_EQ(ow[0].winner, (Stamp{300, 3}));
}

TEST(DocumentConflicts, ReAddAfterRemoveIsCausal) {
  // A field removed and later written again by a writer that saw the removal
  // is a causal overwrite of the tombstone, not a conflict.
  Document writer;
  const v1::Delta d1 = write(&writer, json::parse(R"({"a":1,"b":2})"), 1, 1, 100);
  const v1::Delta d2 = write(&writer, json::parse(R"({"b":2})"), 1, 2, 200);
  const v1::Delta d3 = write(&writer, json::parse(R"({"a":3,"b":2})"), 1, 3, 300);
  ASSERT_EQ(d3.ops_size(), 1);
  EXPECT_EQ(op_string(d3.ops(0)), "/a SET 3 prev=1:2");
  std::vector<Overwrite> ow;
  Document reader = apply_all({d1, d2, d3}, &ow);
  EXPECT_TRUE(ow.empty());
  EXPECT_EQ(reader.to_json(), R"({"a":3,"b":2})");
}

TEST(DocumentConflicts, CausalOverwriteNotReported) {
  const v1::Delta base = base_delta();
  const v1::Delta a = make_delta(kKey, 2, 1, 200, {set_op({"a"}, "2", {1, 1})});
  const v1::Delta b = make_delta(kKey, 3, 1, 300, {set_op({"a"}, "3", {2, 1})});
  const v1::Delta rm = make_delta(kKey, 2, 2, 400, {remove_op({"a"}, {3, 1})});
  std::vector<Overwrite> ow;
  Document d = apply_all({base, a, b, rm}, &ow);
  EXPECT_TRUE(ow.empty());
  EXPECT_EQ(d.to_json(), R"({"b":{"c":2}})");
}

TEST(DocumentConflicts, DuplicateApplyReportsNothing) {
  const v1::Delta base = base_delta();
  const v1::Delta a = make_delta(kKey, 2, 1, 200, {set_op({"a"}, "2")});
  std::vector<Overwrite> ow;
  Document d = apply_all({base, a}, &ow);
  const size_t first = ow.size();
  d.apply(a, &ow);
  EXPECT_EQ(ow.size(), first) << "applying the same write again is not a conflict";
  EXPECT_EQ(d.to_json(), R"({"a":2,"b":{"c":2}})");
  // (An older write delivered again is reported at the Document level; the
  // store never gets there because its version vector drops seen dots first.)
}

// A causal overwrite that arrives before the value it overwrote is not a
// conflict: the register keeps the dot its writer saw. Also after the state
// went through serialization (a transfer, or a reload from disk). A write
// that neither saw, arriving late, still is. (Only the direct predecessor is
// known: had the field held a third, older value when the overwrite arrived,
// that overwrite would be reported, as its writer's prev is not that value.)
TEST(DocumentConflicts, CausalOverwriteArrivingFirstNotReported) {
  const v1::Delta base = base_delta();
  const v1::Delta a = make_delta(kKey, 2, 1, 200, {set_op({"z"}, "2")});
  const v1::Delta b = make_delta(kKey, 3, 1, 300, {set_op({"z"}, "3", {2, 1})});
  std::vector<Overwrite> ow;
  Document d = apply_all({base, b, a}, &ow);
  EXPECT_TRUE(ow.empty());
  EXPECT_EQ(d.to_json(), R"({"a":1,"b":{"c":2},"z":3})");

  Document e = apply_all({base, b});
  v1::NodeState s;
  e.to_proto(&s);
  auto back = Document::from_proto(s);
  ASSERT_TRUE(back.ok());
  back->apply(a, &ow);
  EXPECT_TRUE(ow.empty()) << "the prev dot did not survive serialization";

  // Written at 250 by a replica that saw nothing at z: concurrent with both.
  const v1::Delta c = make_delta(kKey, 4, 1, 250, {set_op({"z"}, "4")});
  back->apply(c, &ow);
  ASSERT_EQ(ow.size(), 1u);
  EXPECT_EQ(ow[0].loser.replica, 4u);
  EXPECT_EQ(ow[0].winner.replica, 3u);
}

// A delete of the whole document by a writer that saw none of it loses every
// value shown, each at its own path (the walk below the root builds them).
// Also after the state went through a form without its causal context (a
// state written before documents kept one, or joined from such a transfer):
// the context is rebuilt from the registers, and the writes are still known
// as unseen.
TEST(DocumentConflicts, ConcurrentDeleteReportsEveryValueAtItsPath) {
  const v1::Delta base = base_delta();
  const v1::Delta del = make_delta(kKey, 2, 1, 200, {remove_op({})});
  const auto check = [&](Document* d) {
    std::vector<Overwrite> ow;
    d->apply(del, &ow);
    std::vector<std::vector<std::string>> paths;
    for (const Overwrite& o : ow) {
      EXPECT_EQ(o.winner, (Stamp{200, 2}));
      paths.push_back(o.path);
    }
    std::sort(paths.begin(), paths.end());
    EXPECT_EQ(paths, (std::vector<std::vector<std::string>>{{"a"}, {"b", "c"}}));
    EXPECT_FALSE(d->exists());
  };
  Document plain = apply_all({base});
  check(&plain);

  v1::NodeState s;
  apply_all({base}).to_proto(&s);
  ASSERT_GT(s.doc_seen_size(), 0);
  s.clear_doc_seen();
  auto loaded = Document::from_proto(s);
  ASSERT_TRUE(loaded.ok());
  check(&*loaded);
  Document joined;
  joined.merge(s);
  check(&joined);

  // The same delete by a writer that had seen the base reports nothing.
  v1::Delta seen_del = del;
  v1::Dot* dot = seen_del.add_seen();
  dot->set_replica(1);
  dot->set_seq(1);
  Document d = apply_all({base});
  std::vector<Overwrite> ow;
  d.apply(seen_del, &ow);
  EXPECT_TRUE(ow.empty());
}

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

// --- Canonical JSON.

TEST(DocumentJson, CanonicalEqualsNlohmannDump) {
  const std::vector<std::string> docs = {
      R"({"z":1,"a":2,"m":{"y":[3,2,1],"b":null}})",
      R"({"unicode":"h\u00e9llo \u4e16\u754c","esc":"tab\tquote\"back\\slash\u0001","e":""})",
      R"({"num":[0,-1,1.5,1e20,-2.25e-7,18446744073709551615,-9223372036854775808]})",
      R"({"nested":{"deeper":{"deepest":{"x":[{"b":1,"a":2}]}}},"B":1,"_":2,"0":3})",
      R"({"bools":[true,false],"empty_obj":{},"empty_arr":[],"k e y":"v"})",
  };
  uint64_t seq = 0;
  for (const auto& text : docs) {
    ++seq;
    const json value = json::parse(text);
    Document d;
    write(&d, value, 1, seq, 100);
    EXPECT_EQ(d.to_json(), value.dump()) << text;
    EXPECT_EQ(d.to_value(), value) << text;
    EXPECT_EQ(d.to_value().dump(), d.to_json());
  }
}

// --- RFC 7386 merge patch: the examples of Appendix A, and section 3.

struct PatchCase {
  const char* target;
  const char* patch;
  const char* result;
};

TEST(MergePatch, Rfc7386AppendixA) {
  const PatchCase cases[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", R"(null)", R"(null)"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(apply_merge_patch(json::parse(c.target), json::parse(c.patch)), json::parse(c.result))
        << c.target << " + " << c.patch;
  }
}

TEST(MergePatch, Rfc7386Section3Example) {
  const json target = json::parse(R"({
    "title": "Goodbye!",
    "author": {"givenName": "John", "familyName": "Doe"},
    "tags": ["example", "sample"],
    "content": "This will be unchanged"
  })");
  const json patch = json::parse(R"({
    "title": "Hello!",
    "phoneNumber": "+01-123-456-7890",
    "author": {"familyName": null},
    "tags": ["example"]
  })");
  const json want = json::parse(R"({
    "title": "Hello!",
    "author": {"givenName": "John"},
    "tags": ["example"],
    "content": "This will be unchanged",
    "phoneNumber": "+01-123-456-7890"
  })");
  EXPECT_EQ(apply_merge_patch(target, patch), want);

  // Through the document: the diff of the patched value touches only the
  // patched fields.
  Document d;
  write(&d, target, 1, 1, 100);
  std::vector<v1::FieldOp> ops;
  d.diff(apply_merge_patch(d.to_value(), patch), &ops);
  EXPECT_EQ(op_strings(ops), (std::vector<std::string>{
                                 "/author/familyName REMOVE prev=1:1",
                                 "/phoneNumber SET \"+01-123-456-7890\"",
                                 "/tags SET [\"example\"] prev=1:1",
                                 "/title SET \"Hello!\" prev=1:1",
                             }));
}

// --- validate_key / validate_delta / parse_document (messages are checked in
// bad_input_test.cc against the store; here the pure functions).

TEST(DocumentValidation, KeysWithInvalidUtf8DoNotThrow) {
  // The message quotes the key; bytes that are not UTF-8 must not make the
  // quoting throw.
  Status st = validate_key("bad\xff");
  EXPECT_FALSE(st.ok());
  st = validate_key(std::string("a") + std::string(600, '\xc3'));
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("longer than 512"), std::string::npos) << st.message();
}

TEST(DocumentValidation, DeltaValuesMustBeCanonical) {
  const DocumentLimits limits;
  auto check = [&](const std::string& value) {
    return validate_delta(make_delta(kKey, 1, 1, 1, {set_op({"a"}, value)}), limits);
  };
  EXPECT_TRUE(check("1").ok());
  EXPECT_TRUE(check("[1,{\"a\":2}]").ok());
  EXPECT_TRUE(check("\"s\"").ok());
  EXPECT_TRUE(check("null").ok());
  for (const std::string bad : {" {\"a\":1}", "{\"a\":1}", "[1, 2]", " 1", "1 ", "\"\\u0061\"",
                                "[{\"b\":1,\"a\":2}]", "tru", ""}) {
    Status st = check(bad);
    EXPECT_FALSE(st.ok()) << "value " << bad;
    EXPECT_NE(st.message().find("SET value"), std::string::npos) << st.message();
  }
}

TEST(DocumentValidation, DeltaPathsMustBeUtf8) {
  Status st =
      validate_delta(make_delta(kKey, 1, 1, 1, {set_op({"ok", "bad\xfe"}, "1")}), DocumentLimits{});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("UTF-8"), std::string::npos) << st.message();
}

// The one-pass canonical check agrees with nlohmann's parse-and-dump on
// random values (all accepted) and on random corruptions of them.
TEST(DocumentValidation, CanonicalCheckAgreesWithParseAndDump) {
  std::mt19937_64 rng(7);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<std::string> strings = {
      "",   "a",     "x-y", "\xc3\xa9t\xc3\xa9",        "\x7f",
      "\n", "a\"b",  "\\",  std::string("\x01\x1f", 2), "\t",
      "/",  "\b\f\r"};
  std::function<json(int)> gen = [&](int depth) -> json {
    switch (depth > 3 ? pick(5) : pick(8)) {
      case 0:
        return static_cast<int64_t>(rng()) >> pick(64);
      case 1:
        return strings[pick(strings.size())];
      case 2:
        return pick(2) == 0;
      case 3:
        return nullptr;
      case 4:
        return static_cast<double>(static_cast<int64_t>(rng() % 100000)) / 64.0;
      case 5:
      case 6: {
        json a = json::array();
        for (size_t i = pick(4); i > 0; --i) a.push_back(gen(depth + 1));
        return a;
      }
      default: {
        json o = json::object();
        for (size_t i = pick(4); i > 0; --i) o[strings[pick(strings.size())]] = gen(depth + 1);
        return o;
      }
    }
  };
  auto reference = [](const std::string& v) {
    json parsed = json::parse(v, nullptr, /*allow_exceptions=*/false);
    return !parsed.is_discarded() && !parsed.is_object() && parsed.dump() == v;
  };
  const std::string noise = " \t,:[]{}\"\\u0-19e.tfn";
  size_t accepted = 0, checked = 0;
  for (int i = 0; i < 20000; ++i) {
    json a = json::array({gen(0)});
    const std::string text = pick(2) == 0 ? a.dump() : a[0].dump();
    if (text[0] != '{') {
      ASSERT_TRUE(canonical_json_value(text)) << text;
    }
    std::string bad = text;
    switch (pick(3)) {
      case 0:
        bad.insert(pick(bad.size() + 1), 1, noise[pick(noise.size())]);
        break;
      case 1:
        bad.erase(pick(bad.size()), 1);
        break;
      default:
        bad[pick(bad.size())] = noise[pick(noise.size())];
    }
    const bool want = reference(bad);
    ASSERT_EQ(canonical_json_value(bad), want) << bad;
    accepted += want ? 1 : 0;
    ++checked;
  }
  EXPECT_GT(accepted, 0u);
  EXPECT_GT(checked - accepted, checked / 2);
}

}  // namespace
}  // namespace canopy
