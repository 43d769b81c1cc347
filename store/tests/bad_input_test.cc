// Bad input at the store's boundary: malformed or oversized documents, invalid
// keys, corrupted or invalid deltas, clocks far ahead, corrupt stored state.
// Every refusal must say what was wrong and leave the store exactly as it was.

#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "store/doc_merge.h"
#include "store/hlc.h"
#include "store/store.h"
#include "store/tests/test_util.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using store_test::make_batch;
using store_test::make_delta;
using store_test::make_object_op;
using store_test::open_store;
using store_test::remove_op;
using store_test::set_op;
using store_test::snapshot;
using store_test::StoreSnapshot;
using store_test::TempDir;

constexpr uint64_t kStart = 1'700'000'000'000;
constexpr uint64_t kRemote = 77;

std::string nested(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += R"({"n":)";
  s += "1";
  for (int i = 0; i < depth; ++i) s += "}";
  return s;
}

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }

  void reopen(const std::function<void(StoreOptions*)>& tweak = {}) {
    store_.reset();
    store_ = open_store(dir_.sub("s"), &clock_, Durability::kNone, 1, tweak);
    ASSERT_NE(store_, nullptr);
    if (store_->last_log_index() == 0) {
      CANOPY_ASSERT_OK(store_->put("k/existing", R"({"a":1,"b":{"c":[1,2]}})"));
      CANOPY_ASSERT_OK(store_->put("k/other", R"({"x":"y"})"));
      auto remote =
          make_delta("k/remote", kRemote, 1, hlc_from_ms(kStart), {set_op({"r"}, "true")});
      CANOPY_ASSERT_OK(store_->apply_remote(make_batch({remote}), kRemote));
    }
    before_ = snapshot(*store_);
  }

  // A refusal: the code, a message naming the problem, and no change at all.
  template <typename R>
  void expect_refused(const R& result, StatusCode code, const std::string& needle,
                      const std::string& what) {
    const Status st = store_test::status_of(result);
    EXPECT_FALSE(st.ok()) << what << " was accepted";
    EXPECT_EQ(st.code(), code) << what << ": " << st.to_string();
    EXPECT_NE(st.message().find(needle), std::string::npos)
        << what << ": message \"" << st.message() << "\" does not say \"" << needle << "\"";
    EXPECT_EQ(snapshot(*store_), before_) << what << " changed the store";
  }

  // Writes under the store's feet: closes the store, opens its RocksDB
  // directory raw (with the documents' merge operator, which whoever opens
  // that family needs) and hands `write` the database and the "docs" family.
  void write_raw(const std::function<void(rocksdb::DB*, rocksdb::ColumnFamilyHandle*)>& write) {
    store_.reset();
    rocksdb::Options options;
    rocksdb::ColumnFamilyOptions docs_cf;
    docs_cf.merge_operator = make_doc_merge_operator(64);
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {"docs", docs_cf}, {"log", {}}, {"conflicts", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir_.sub("s"), cfs, &handles, &db).ok());
    write(db, handles[1]);
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }

  TempDir dir_;
  ManualClock clock_{kStart};
  std::unique_ptr<Store> store_;
  StoreSnapshot before_;
};

TEST_F(BadInputTest, MalformedJson) {
  for (const std::string text :
       {"{", R"({"a":})", "", "nul", R"({"a":1}})", "{'a':1}", "{\"a\":\"\xff\"}", R"({"a":01})",
        R"({"a":1,})", "/* comment */ {}"}) {
    for (const char* key : {"k/new", "k/existing"}) {
      expect_refused(store_->put(key, text), StatusCode::kInvalidArgument, "not valid JSON",
                     "put " + std::string(key) + " " + text);
      expect_refused(store_->patch(key, text), StatusCode::kInvalidArgument, "not valid JSON",
                     "patch " + std::string(key) + " " + text);
    }
  }
  // The message names the document.
  auto st = store_->put("k/named", "{");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("k/named"), std::string::npos) << st.status().message();
}

TEST_F(BadInputTest, DocumentNotAnObject) {
  const std::pair<const char*, const char*> cases[] = {
      {"[1,2]", "not array"}, {R"("text")", "not string"}, {"42", "not number"},
      {"4.5", "not number"},  {"null", "not null"},        {"true", "not boolean"},
  };
  for (const auto& [text, needle] : cases) {
    expect_refused(store_->put("k/new", text), StatusCode::kInvalidArgument, needle,
                   std::string("put ") + text);
    expect_refused(store_->put("k/existing", text), StatusCode::kInvalidArgument, needle,
                   std::string("put over an object ") + text);
    expect_refused(store_->patch("k/existing", text), StatusCode::kInvalidArgument, needle,
                   std::string("patch ") + text);
  }
  for (const json& value : {json::array({1}), json("s"), json(1), json()}) {
    expect_refused(store_->put_value("k/existing", value), StatusCode::kInvalidArgument,
                   "must be a JSON object", "put_value " + value.dump());
  }
}

TEST_F(BadInputTest, DocumentOverSmallLimit) {
  reopen([](StoreOptions* o) { o->limits.max_doc_bytes = 100; });
  const std::string big = json{{"pad", std::string(200, 'x')}}.dump();
  expect_refused(store_->put("k/new", big), StatusCode::kInvalidArgument,
                 "exceeds the limit of 100", "put of 200 bytes");
  expect_refused(store_->put_value("k/new", json::parse(big)), StatusCode::kInvalidArgument,
                 "exceeds the limit of 100", "put_value of 200 bytes");
  expect_refused(store_->patch("k/existing", big), StatusCode::kInvalidArgument,
                 "exceeds the limit of 100", "patch of 200 bytes");
  // A patch that is small itself but grows the document past the limit.
  CANOPY_ASSERT_OK(store_->put("k/grow", json{{"p1", std::string(40, 'x')}}.dump()));
  before_ = snapshot(*store_);
  expect_refused(store_->patch("k/grow", json{{"p2", std::string(60, 'x')}}.dump()),
                 StatusCode::kInvalidArgument, "exceeds the limit of 100", "growing patch");
  // A remote delta larger than the limit.
  auto remote = make_delta("k/new", kRemote, 2, hlc_from_ms(kStart),
                           {set_op({"pad"}, json(std::string(200, 'x')).dump())});
  expect_refused(store_->apply_remote(make_batch({remote}), kRemote), StatusCode::kInvalidArgument,
                 "exceed the document limit of 100", "remote delta of 200 bytes");
  // Just under the limit is fine.
  CANOPY_EXPECT_OK(store_->put("k/fits", json{{"pad", std::string(80, 'x')}}.dump()));
}

TEST_F(BadInputTest, DocumentOverDefaultLimit) {
  const std::string big = json{{"pad", std::string(1'100'000, 'x')}}.dump();
  expect_refused(store_->put("k/new", big), StatusCode::kInvalidArgument,
                 "exceeds the limit of 1048576", "put of 1.1 MiB");
  expect_refused(store_->put_value("k/new", json::parse(big)), StatusCode::kInvalidArgument,
                 "exceeds the limit of 1048576", "put_value of 1.1 MiB");
  auto remote = make_delta("k/new", kRemote, 2, hlc_from_ms(kStart),
                           {set_op({"pad"}, json(std::string(1'100'000, 'x')).dump())});
  expect_refused(store_->apply_remote(make_batch({remote}), kRemote), StatusCode::kInvalidArgument,
                 "exceed the document limit of 1048576", "remote delta of 1.1 MiB");
  // Just under the limit is accepted.
  CANOPY_EXPECT_OK(store_->put("k/fits", json{{"pad", std::string(1'000'000, 'x')}}.dump()));
}

TEST_F(BadInputTest, DocumentDeeperThanLimit) {
  reopen([](StoreOptions* o) { o->limits.max_depth = 4; });
  expect_refused(store_->put("k/deep", nested(6)), StatusCode::kInvalidArgument,
                 "nests deeper than 4", "put nesting 6");
  expect_refused(store_->put_value("k/deep", json::parse(nested(6))), StatusCode::kInvalidArgument,
                 "nests deeper than 4", "put_value nesting 6");
  expect_refused(store_->patch("k/existing", nested(6)), StatusCode::kInvalidArgument,
                 "nests deeper than 4", "patch nesting 6");
  CANOPY_ASSERT_OK(store_->put("k/ok", nested(4)));
  // Whatever was accepted can be read back after a restart.
  reopen([](StoreOptions* o) { o->limits.max_depth = 4; });
  auto scan = store_->scan("", "", 100);
  CANOPY_ASSERT_OK(scan);
  EXPECT_EQ(scan->items.size(), 4u);
  EXPECT_EQ(*store_->get("k/ok"), json::parse(nested(4)).dump());
}

TEST_F(BadInputTest, InvalidKeys) {
  const std::pair<std::string, const char*> cases[] = {
      {"", "key is empty"},
      {"a b", "character ' ' is not allowed"},
      {"a//b", "empty path segment"},
      {"/a", "empty path segment"},
      {"a/", "empty path segment"},
      {std::string("a\x01z"), "is not allowed"},
      {"a\nb", "is not allowed"},
      {std::string("nul\0z", 5), "is not allowed"},
      {"caf\xc3\xa9", "is not allowed"},
      {"bad\xff", "is not allowed"},
      {"a?b", "'?' is not allowed"},
      {std::string(513, 'k'), "longer than 512"},
      {"x" + std::string(600, '\xc3'), "longer than 512"},
  };
  for (const auto& [key, needle] : cases) {
    const std::string what = "key " + json(key).dump(-1, ' ', true, json::error_handler_t::replace);
    expect_refused(store_->put(key, "{}"), StatusCode::kInvalidArgument, needle, "put " + what);
    expect_refused(store_->put_value(key, json::object()), StatusCode::kInvalidArgument, needle,
                   "put_value " + what);
    expect_refused(store_->patch(key, "{}"), StatusCode::kInvalidArgument, needle, "patch " + what);
    expect_refused(store_->remove(key), StatusCode::kInvalidArgument, needle, "remove " + what);
    expect_refused(store_->get(key), StatusCode::kInvalidArgument, needle, "get " + what);
    auto remote = make_delta(key, kRemote, 2, hlc_from_ms(kStart), {set_op({"a"}, "1")});
    expect_refused(store_->apply_remote(make_batch({remote}), kRemote),
                   StatusCode::kInvalidArgument, needle, "remote delta for " + what);
    v1::DocState state;
    state.set_key(key);
    expect_refused(store_->apply_states({state}, kRemote), StatusCode::kInvalidArgument, needle,
                   "state of " + what);
  }
  // The longest allowed key works.
  CANOPY_EXPECT_OK(store_->put(std::string(512, 'k'), "{}"));
}

TEST_F(BadInputTest, DeltasWithBadFields) {
  const uint64_t t = hlc_from_ms(kStart);
  const v1::Delta good = make_delta("k/existing", kRemote, 2, t, {set_op({"a"}, "2")});
  v1::FieldOp unknown_kind = set_op({"a"}, "1");
  unknown_kind.set_kind(static_cast<v1::FieldOp::Kind>(7));
  v1::FieldOp remove_with_value = remove_op({"a"});
  remove_with_value.set_value("1");
  std::vector<std::string> too_deep(65, "d");

  const std::pair<v1::Delta, const char*> cases[] = {
      {make_delta("k/existing", kRemote, 3, t, {set_op({"a"}, R"({"x":1})")}),
       "SET value is not a JSON scalar or array"},
      {make_delta("k/existing", kRemote, 3, t, {set_op({"a"}, R"( {"x":1})")}),
       "SET value is not a JSON scalar or array"},
      {make_delta("k/existing", kRemote, 3, t, {set_op({"a"}, "not json")}),
       "SET value is not a JSON scalar or array"},
      {make_delta("k/existing", kRemote, 3, t, {set_op({"a"}, "")}),
       "SET value is not a JSON scalar or array"},
      {make_delta("k/existing", kRemote, 3, t, {set_op({"a"}, "[1, 2]")}), "canonical form"},
      {make_delta("k/existing", 0, 3, t, {set_op({"a"}, "1")}), "dot has a zero replica or seq"},
      {make_delta("k/existing", kRemote, 0, t, {set_op({"a"}, "1")}),
       "dot has a zero replica or seq"},
      {make_delta("k/existing", kRemote, 3, 0, {set_op({"a"}, "1")}), "zero HLC stamp"},
      {make_delta("k/existing", kRemote, 3, t, {unknown_kind}), "unknown op kind 7"},
      {make_delta("k/existing", kRemote, 3, t, {}), "no ops"},
      {make_delta("k/existing", kRemote, 3, t, {set_op({}, "1")}), "SET at the document root"},
      {make_delta("k/existing", kRemote, 3, t, {remove_with_value}), "value on a REMOVE"},
      {make_delta("k/existing", kRemote, 3, t, {set_op(too_deep, "1")}), "path deeper than 64"},
      {make_delta("k/existing", kRemote, 3, t, {set_op({"ok", "bad\xfe"}, "1")}), "not UTF-8"},
      {make_delta("k//bad", kRemote, 3, t, {set_op({"a"}, "1")}), "empty path segment"},
  };
  uint64_t refused = store_->stats().refused_deltas;
  for (const auto& [bad, needle] : cases) {
    // One bad delta refuses the whole batch, good ones included.
    expect_refused(store_->apply_remote(make_batch({good, bad}), kRemote),
                   StatusCode::kInvalidArgument, needle, "delta " + bad.ShortDebugString());
    EXPECT_EQ(store_->stats().refused_deltas, ++refused);
  }
  // The good delta alone is accepted.
  auto ok = store_->apply_remote(make_batch({good}), kRemote);
  CANOPY_ASSERT_OK(ok);
  EXPECT_EQ(ok->applied, 1u);
  EXPECT_EQ(*store_->get("k/existing"), R"({"a":2,"b":{"c":[1,2]}})");
}

TEST_F(BadInputTest, StatesWithBadFields) {
  v1::DocState object_value;
  object_value.set_key("k/s");
  object_value.mutable_root()->set_obj_hlc(5);
  object_value.mutable_root()->set_obj_replica(kRemote);
  auto* c = object_value.mutable_root()->add_children();
  c->set_name("a");
  c->mutable_node()->set_reg_hlc(5);
  c->mutable_node()->set_reg_replica(kRemote);
  c->mutable_node()->set_reg_value(R"({"x":1})");
  expect_refused(store_->apply_states({object_value}, kRemote), StatusCode::kInvalidArgument,
                 "not a JSON scalar or array", "state with an object register");
  c->mutable_node()->clear_reg_value();
  expect_refused(store_->apply_states({object_value}, kRemote), StatusCode::kInvalidArgument,
                 "not a JSON scalar or array", "state with a live register without value");

  // A state whose document is over the size limit, after a good one in the
  // same call: the whole call is refused.
  reopen([](StoreOptions* o) { o->limits.max_doc_bytes = 1000; });
  v1::DocState good;
  good.set_key("k/small");
  good.mutable_root()->set_obj_hlc(5);
  good.mutable_root()->set_obj_replica(kRemote);
  auto* g = good.mutable_root()->add_children();
  g->set_name("a");
  g->mutable_node()->set_reg_hlc(5);
  g->mutable_node()->set_reg_replica(kRemote);
  g->mutable_node()->set_reg_seq(1);
  g->mutable_node()->set_reg_value("1");
  v1::DocState big = good;
  big.set_key("k/big");
  big.mutable_root()->mutable_children(0)->mutable_node()->set_reg_value(
      json(std::string(1200, 'x')).dump());
  expect_refused(store_->apply_states({good, big}, kRemote), StatusCode::kInvalidArgument,
                 "exceed the limit of 1000", "state over the size limit");
  CANOPY_EXPECT_OK(store_->apply_states({good}, kRemote));
  EXPECT_EQ(*store_->get("k/small"), R"({"a":1})");
}

// Serialized batches with flipped bits and truncated: either the bytes do not
// parse, or the store refuses the batch and is unchanged, or (where the damage
// made another valid delta) the store takes it and stays readable. Never a
// crash, never a half-applied batch.
TEST_F(BadInputTest, CorruptedDeltaBytes) {
  TempDir src_dir;
  auto src = open_store(src_dir.sub("src"), &clock_, Durability::kNone, 5);
  ASSERT_NE(src, nullptr);
  v1::DeltaBatch batch;
  for (const auto& [key, text] : std::vector<std::pair<std::string, std::string>>{
           {"c/one", R"({"a":{"b":[1,"two",{"three":3}]},"s":"str\u00e9"})"},
           {"c/two", R"({"n":null,"f":1.5,"e":{}})"},
       }) {
    auto d = src->put(key, text);
    CANOPY_ASSERT_OK(d);
    *batch.add_deltas() = *d;
  }
  auto d = src->patch("c/one", R"({"a":null,"z":true})");
  CANOPY_ASSERT_OK(d);
  *batch.add_deltas() = *d;
  d = src->remove("c/two");
  CANOPY_ASSERT_OK(d);
  *batch.add_deltas() = *d;
  const std::string bytes = batch.SerializeAsString();
  ASSERT_GT(bytes.size(), 100u);

  std::vector<std::string> corrupted;
  for (size_t len = 0; len < bytes.size(); ++len) corrupted.push_back(bytes.substr(0, len));
  std::mt19937_64 rng(12345);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string c = bytes;
    c[i] = static_cast<char>(c[i] ^ (1 << (i % 8)));
    corrupted.push_back(c);
    c = bytes;
    c[i] = static_cast<char>(rng());
    corrupted.push_back(c);
  }

  // Protobuf logs each string field that is not UTF-8; many corruptions make one.
  auto* const previous_log_handler = google::protobuf::SetLogHandler(nullptr);
  size_t unparsable = 0, refused = 0, accepted = 0;
  for (const std::string& c : corrupted) {
    v1::DeltaBatch parsed;
    if (!parsed.ParseFromString(c)) {
      ++unparsable;
      continue;
    }
    const StoreSnapshot before = snapshot(*store_);
    auto r = store_->apply_remote(parsed, 5);
    if (!r.ok()) {
      ++refused;
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
      EXPECT_FALSE(r.status().message().empty());
      EXPECT_EQ(snapshot(*store_), before) << "a refused batch changed the store";
      continue;
    }
    ++accepted;
    // Whatever was taken must read back as JSON objects and reload cleanly:
    // in the store (where a dot seen before is a duplicate) and on a fresh
    // document (where every op lands).
    for (const auto& dl : parsed.deltas()) {
      Document fresh;
      fresh.apply(dl, nullptr);
      if (fresh.exists()) {
        const json v = json::parse(fresh.to_json(), nullptr, false);
        EXPECT_TRUE(v.is_object()) << fresh.to_json();
        EXPECT_EQ(v, fresh.to_value());
      }
      v1::NodeState fresh_state;
      fresh.to_proto(&fresh_state);
      CANOPY_EXPECT_OK(Document::from_proto(fresh_state));
      auto got = store_->get(dl.key());
      if (got.ok()) {
        const json v = json::parse(*got, nullptr, false);
        EXPECT_TRUE(v.is_object()) << *got;
        EXPECT_EQ(v.dump(), *got) << "not canonical";
      } else {
        EXPECT_EQ(got.status().code(), StatusCode::kNotFound) << got.status().to_string();
      }
      auto st = store_->state(dl.key());
      CANOPY_ASSERT_OK(st);
      if (st->has_value()) CANOPY_EXPECT_OK(Document::from_proto((*st)->root()));
    }
  }
  google::protobuf::SetLogHandler(previous_log_handler);
  EXPECT_GT(unparsable, 0u);
  EXPECT_GT(refused, 0u);
  EXPECT_EQ(unparsable + refused + accepted, corrupted.size());
  // The store is still sound: reopen and read everything.
  reopen();
  CANOPY_EXPECT_OK(store_->scan("", "", 10000));
  RecordProperty("unparsable", static_cast<int>(unparsable));
  RecordProperty("refused", static_cast<int>(refused));
  RecordProperty("accepted", static_cast<int>(accepted));
}

// A replica whose clock runs years ahead: its delta is applied (nothing is
// dropped), counted, recorded as a CLOCK_SKEW conflict where it overwrote a
// value its writer had not seen, and the local clock does not follow it.
TEST_F(BadInputTest, DeltaFromFarFutureIsAppliedAndSurfaced) {
  auto local = store_->put("site/s1", R"({"labels":{"tier":"edge"},"name":"s1"})");
  CANOPY_ASSERT_OK(local);
  const uint64_t years = 5ull * 365 * 24 * 3600 * 1000;
  const uint64_t future = hlc_from_ms(kStart + years);
  const v1::Delta skewed =
      make_delta("site/s1", kRemote, 2, future,
                 {set_op({"labels", "tier"}, "\"future\""), set_op({"new"}, "1")});

  auto r = store_->apply_remote(make_batch({skewed}), kRemote);
  CANOPY_ASSERT_OK(r);
  EXPECT_EQ(r->applied, 1u);
  EXPECT_EQ(r->skewed, 1u);
  EXPECT_EQ(store_->stats().skewed_deltas, 1u);
  EXPECT_EQ(*store_->get("site/s1"), R"({"labels":{"tier":"future"},"name":"s1","new":1})");

  auto records = store_->conflicts("site/s1");
  ASSERT_EQ(records.size(), 1u) << "one overwritten value; the new field overwrote nothing";
  EXPECT_EQ(records[0].reason(), v1::ConflictRecord::CLOCK_SKEW);
  EXPECT_EQ(records[0].loser_value(), "\"edge\"");
  EXPECT_EQ(records[0].loser().replica(), 1u);
  EXPECT_EQ(records[0].winner().replica(), kRemote);
  EXPECT_EQ(records[0].winner_hlc(), future);

  // The local clock did not jump: a write elsewhere is stamped near the wall clock.
  clock_.advance_ms(10);
  auto elsewhere = store_->put("site/s2", "{}");
  CANOPY_ASSERT_OK(elsewhere);
  EXPECT_LE(hlc_physical_ms(elsewhere->hlc()), kStart + 10);

  // A later local write to the field still wins, as a causal overwrite.
  auto fix = store_->patch("site/s1", R"({"labels":{"tier":"edge"}})");
  CANOPY_ASSERT_OK(fix);
  EXPECT_GT(fix->hlc(), future);
  ASSERT_EQ(fix->ops_size(), 1);
  EXPECT_EQ(fix->ops(0).prev().replica(), kRemote);
  EXPECT_EQ(fix->ops(0).prev().seq(), 2u);
  EXPECT_EQ(*store_->get("site/s1"), R"({"labels":{"tier":"edge"},"name":"s1","new":1})");
  EXPECT_EQ(store_->conflicts("site/s1").size(), 1u);

  // A peer that got the same deltas agrees, and sees no concurrent conflict.
  TempDir peer_dir;
  auto peer = open_store(peer_dir.sub("p"), &clock_, Durability::kNone, 3);
  ASSERT_NE(peer, nullptr);
  CANOPY_ASSERT_OK(peer->apply_remote(make_batch({*local}), 1));
  CANOPY_ASSERT_OK(peer->apply_remote(make_batch({skewed}), kRemote));
  CANOPY_ASSERT_OK(peer->apply_remote(make_batch({*fix}), 1));
  EXPECT_EQ(*peer->get("site/s1"), *store_->get("site/s1"));
  for (const auto& rec : peer->conflicts("site/s1")) {
    EXPECT_NE(rec.reason(), v1::ConflictRecord::CONCURRENT) << rec.ShortDebugString();
  }
}

// Changes stored as merge operands (doc_merge.h) that do not decode: reading
// the document says so and names it; the other documents read as before.
TEST_F(BadInputTest, CorruptMergeOperands) {
  const std::string existing = *store_->get("k/existing");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"k/unknown-kind", std::string("x") + "\x0a\x01k"},
      {"k/bad-delta", std::string(1, kDeltaOperand) + "\xff\xff\xff"},
      {"k/bad-state", std::string(1, kStateOperand) + "\x0a\x05"
                                                      "ab"},
      {"k/empty", ""},
  };
  write_raw([&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* docs) {
    for (const auto& [key, operand] : bad) {
      ASSERT_TRUE(db->Merge(rocksdb::WriteOptions(), docs, key, operand).ok());
    }
  });
  store_ = open_store(dir_.sub("s"), &clock_, Durability::kNone, 1);
  ASSERT_NE(store_, nullptr);
  for (const auto& [key, operand] : bad) {
    auto got = store_->get(key);
    ASSERT_FALSE(got.ok()) << key;
    EXPECT_EQ(got.status().code(), StatusCode::kDataLoss)
        << key << ": " << got.status().to_string();
    EXPECT_NE(got.status().message().find(key), std::string::npos) << got.status().message();
  }
  EXPECT_EQ(*store_->get("k/existing"), existing);
}

// A document whose stored state is corrupt: reads say so, and a batch that
// touches it changes nothing, not even the documents before it in the batch.
TEST_F(BadInputTest, CorruptStoredDocument) {
  write_raw([](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* docs) {
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), docs, "k/other", "\xff\xff garbage").ok());
  });
  store_ = open_store(dir_.sub("s"), &clock_, Durability::kNone, 1);
  ASSERT_NE(store_, nullptr);
  auto got = store_->get("k/other");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find("k/other"), std::string::npos) << got.status().message();

  const std::string existing = *store_->get("k/existing");
  const std::string vv = store_->version_vector().to_proto().SerializeAsString();
  const uint64_t index = store_->last_log_index();
  const uint64_t t = hlc_from_ms(kStart + 1);
  const v1::Delta good = make_delta("k/existing", kRemote, 2, t, {set_op({"a"}, "9")});
  const v1::Delta hits_corrupt = make_delta("k/other", kRemote, 3, t, {set_op({"x"}, "1")});
  auto r = store_->apply_remote(make_batch({good, hits_corrupt}), kRemote);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(*store_->get("k/existing"), existing);
  EXPECT_EQ(store_->version_vector().to_proto().SerializeAsString(), vv);
  EXPECT_EQ(store_->last_log_index(), index);

  // The good delta was not half-taken: it still applies.
  auto again = store_->apply_remote(make_batch({good}), kRemote);
  CANOPY_ASSERT_OK(again);
  EXPECT_EQ(again->applied, 1u);
  EXPECT_EQ(again->duplicates, 0u);
  EXPECT_EQ(*store_->get("k/existing"), R"({"a":9,"b":{"c":[1,2]}})");
  EXPECT_EQ(store_->last_log_index(), index + 1);

  // A local write to the corrupt document fails the same way.
  auto w = store_->put("k/other", "{}");
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace canopy
