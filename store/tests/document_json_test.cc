// Unit tests of canonical JSON (store/canonical_json.h), RFC 7386 merge
// patch (store/merge_patch.h), and the pure checks of keys, deltas and
// documents (validate_key, validate_delta, parse_document).

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "store/canonical_json.h"
#include "store/document.h"
#include "store/merge_patch.h"
#include "store/tests/document_test_util.h"

namespace canopy {
namespace {

using json = nlohmann::json;
using namespace store_test;

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
