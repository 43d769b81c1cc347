// Unit tests of the merge rules of Document (store/document.h), driven by
// hand-made deltas so that every stamp, dot and arrival order is explicit.
// The serialized state, tombstones and storage are tested in
// document_state_test.cc; canonical JSON, merge patch and validation in
// document_json_test.cc.

#include "store/document.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "store/tests/document_test_util.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace store_test;

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

}  // namespace
}  // namespace canopy
