#include "model/selector.h"

#include <gtest/gtest.h>

#include <string>

namespace canopy::model {
namespace {

using nlohmann::json;

LabelSelector parse_ok(const json& v) {
  auto s = LabelSelector::parse(v);
  EXPECT_TRUE(s.ok()) << v.dump() << ": " << s.status().to_string();
  return s.ok() ? std::move(s).value() : LabelSelector();
}

std::string parse_error(const json& v) {
  auto s = LabelSelector::parse(v);
  EXPECT_FALSE(s.ok()) << v.dump();
  return s.ok() ? std::string() : s.status().message();
}

json expr(const std::string& key, const std::string& op, json values = nullptr) {
  json e = {{"key", key}, {"operator", op}};
  if (!values.is_null()) e["values"] = std::move(values);
  return e;
}

TEST(Selector, EveryOperator) {
  const Labels eu_shop = {{"region", "eu-west"}, {"tier", "shop"}};
  const Labels us_tower = {{"region", "us-east"}, {"tier", "cell-tower"}, {"legacy", "yes"}};
  const Labels bare = {};
  struct Case {
    json selector;
    bool eu, us, none;
  };
  const Case cases[] = {
      {{{"matchLabels", {{"region", "eu-west"}}}}, true, false, false},
      {{{"matchExpressions", {expr("tier", "In", {"shop", "cell-tower"})}}}, true, true, false},
      {{{"matchExpressions", {expr("region", "NotIn", {"eu-west"})}}}, false, true, true},
      {{{"matchExpressions", {expr("legacy", "Exists")}}}, false, true, false},
      {{{"matchExpressions", {expr("legacy", "DoesNotExist")}}}, true, false, true},
      {{{"matchLabels", {{"region", "eu-west"}}},
        {"matchExpressions",
         {expr("tier", "In", {"shop", "cell-tower"}), expr("legacy", "DoesNotExist")}}},
       true,
       false,
       false},
      // Empty: no site (a Canopy rule; Kubernetes would select all).
      {json::object(), false, false, false},
      {{{"matchLabels", json::object()}, {"matchExpressions", json::array()}}, false, false, false},
      // Nulls count as absent.
      {{{"matchLabels", {{"region", "eu-west"}, {"tier", nullptr}}}, {"matchExpressions", nullptr}},
       true,
       false,
       false},
  };
  for (const Case& c : cases) {
    LabelSelector s = parse_ok(c.selector);
    EXPECT_EQ(s.matches(eu_shop), c.eu) << c.selector.dump();
    EXPECT_EQ(s.matches(us_tower), c.us) << c.selector.dump();
    EXPECT_EQ(s.matches(bare), c.none) << c.selector.dump();
  }
}

TEST(Selector, BadSelectorsNameTheField) {
  EXPECT_EQ(parse_error(json::array()), "selector must be an object, not array");
  EXPECT_NE(parse_error({{"matchLabel", {{"a", "b"}}}}).find("selector.matchLabel is not a field"),
            std::string::npos);
  EXPECT_NE(parse_error({{"matchLabels", {{"region", 1}}}})
                .find("selector.matchLabels.region must be a string"),
            std::string::npos);
  EXPECT_NE(parse_error({{"matchLabels", {{"bad key", "x"}}}}).find("is not a label key"),
            std::string::npos);
  EXPECT_NE(parse_error({{"matchLabels", {{"k", "bad value"}}}}).find("is not a label value"),
            std::string::npos);
  EXPECT_NE(parse_error({{"matchExpressions", {expr("k", "in", {"a"})}}})
                .find("selector.matchExpressions[0].operator \"in\" is not one of In, NotIn"),
            std::string::npos);
  EXPECT_NE(parse_error({{"matchExpressions", {expr("k", "In")}}})
                .find("selector.matchExpressions[0].values must not be empty for operator In"),
            std::string::npos);
  EXPECT_NE(parse_error({{"matchExpressions", {expr("k", "Exists", {"a"})}}})
                .find("values must be empty for operator Exists"),
            std::string::npos);
  EXPECT_NE(parse_error({{"matchExpressions", {{{"operator", "Exists"}}}}})
                .find("selector.matchExpressions[0].key is missing"),
            std::string::npos);
  EXPECT_NE(
      parse_error({{"matchExpressions", {json{{"key", "k"}, {"operator", "Exists"}, {"x", 1}}}}})
          .find("matchExpressions[0].x is not a field of a requirement"),
      std::string::npos);
  EXPECT_NE(parse_error({{"matchExpressions", "k in (a)"}}).find("must be an array"),
            std::string::npos);
}

TEST(Selector, Limits) {
  json many = json::object();
  for (size_t i = 0; i <= LabelSelector::kMaxRequirements; ++i) {
    many["k" + std::to_string(i)] = "v";
  }
  EXPECT_NE(parse_error({{"matchLabels", many}}).find("the limit is"), std::string::npos);
  json values = json::array();
  for (size_t i = 0; i <= LabelSelector::kMaxValues; ++i) values.push_back("v" + std::to_string(i));
  EXPECT_NE(parse_error({{"matchExpressions", {expr("k", "In", values)}}}).find("the limit is"),
            std::string::npos);
}

TEST(Selector, CandidatePairsCoverEveryMatch) {
  LabelSelector ml = parse_ok({{"matchLabels", {{"a", "1"}, {"b", "2"}}}});
  auto p = ml.candidate_pairs();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->size(), 1u);
  LabelSelector in = parse_ok(
      {{"matchExpressions", {expr("a", "In", {"1", "2", "3"}), expr("b", "In", {"x", "y"})}}});
  p = in.candidate_pairs();
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, (std::vector<std::pair<std::string, std::string>>{{"b", "x"}, {"b", "y"}}));
  EXPECT_FALSE(parse_ok({{"matchExpressions", {expr("a", "NotIn", {"1"})}}}).candidate_pairs());
  EXPECT_FALSE(LabelSelector().candidate_pairs());
}

TEST(Selector, RoundTripsThroughJson) {
  LabelSelector s =
      parse_ok({{"matchLabels", {{"region", "eu"}}},
                {"matchExpressions",
                 {expr("tier", "In", {"b", "a", "a"}), expr("legacy", "DoesNotExist")}}});
  EXPECT_EQ(parse_ok(s.to_json()), s);
  EXPECT_EQ(s.expressions()[0].values, (std::vector<std::string>{"a", "b"}));
}

TEST(Selector, ParsesKubectlsTextForm) {
  auto s = LabelSelector::parse_text("region=eu, tier in (a, b),zone!=z1, gpu, !legacy, x==y");
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_TRUE(s->matches({{"region", "eu"}, {"tier", "b"}, {"gpu", ""}, {"x", "y"}}));
  EXPECT_FALSE(s->matches({{"region", "eu"}, {"tier", "c"}, {"gpu", ""}, {"x", "y"}}));
  EXPECT_FALSE(
      s->matches({{"region", "eu"}, {"tier", "a"}, {"gpu", ""}, {"x", "y"}, {"zone", "z1"}}));
  EXPECT_FALSE(
      s->matches({{"region", "eu"}, {"tier", "a"}, {"gpu", ""}, {"x", "y"}, {"legacy", "1"}}));
  auto notin = LabelSelector::parse_text("tier notin (a)");
  ASSERT_TRUE(notin.ok());
  EXPECT_TRUE(notin->matches({}));
  EXPECT_FALSE(notin->matches({{"tier", "a"}}));
  EXPECT_TRUE(LabelSelector::parse_text("  ")->empty());
}

TEST(Selector, RefusesUnreadableText) {
  for (const char* bad : {"a=b=c", "tier in (a", "tier in a,b)", "a b", "=x", "!", "k between (a)",
                          "a=b,,c=d", "Bad Key=1", "a=" /* empty value is allowed below */}) {
    auto s = LabelSelector::parse_text(bad);
    if (std::string_view(bad) == "a=") {
      EXPECT_TRUE(s.ok()) << bad;  // Kubernetes allows an empty label value
      continue;
    }
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("labelSelector"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace canopy::model
