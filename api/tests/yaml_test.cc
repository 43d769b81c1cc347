// api/yaml.h: YAML documents to JSON as the YAML 1.2 core schema reads them,
// the one conversion kubectl-canopy's files and the REST API's YAML bodies use.
#include "api/yaml.h"

#include <gtest/gtest.h>

namespace canopy::api {
namespace {

using json = nlohmann::json;

TEST(Yaml, ScalarsFollowTheCoreSchema) {
  auto doc = parse_yaml_document(R"(
plain: 1
quoted: "1"
big: 18446744073709551615
neg: -3
float: 2.5
yes_is_a_string: yes
on: true
nothing: ~
hex: 0x1f
tagged: !!str 42
list: [a, "b", 3]
)");
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  EXPECT_EQ((*doc)["plain"], 1);
  EXPECT_EQ((*doc)["quoted"], "1");
  EXPECT_EQ((*doc)["big"], 18446744073709551615ULL);
  EXPECT_EQ((*doc)["neg"], -3);
  EXPECT_EQ((*doc)["float"], 2.5);
  EXPECT_EQ((*doc)["yes_is_a_string"], "yes");  // YAML 1.2, not 1.1
  EXPECT_EQ((*doc)["on"], true);
  EXPECT_TRUE((*doc)["nothing"].is_null());
  EXPECT_EQ((*doc)["hex"], 31);
  EXPECT_EQ((*doc)["tagged"], "42");
  EXPECT_EQ((*doc)["list"], json({"a", "b", 3}));
}

TEST(Yaml, JsonIsYaml) {
  auto doc = parse_yaml_document(R"({"a": {"b": [1, 2]}, "c": "d"})");
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  EXPECT_EQ(*doc, json::parse(R"({"a": {"b": [1, 2]}, "c": "d"})"));
}

TEST(Yaml, BadInputIsRefusedNamingWhereAndWhy) {
  auto bad = parse_yaml_document("a: [1, 2\nb: 3\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid YAML"), std::string::npos);
  EXPECT_NE(bad.status().message().find("line"), std::string::npos);
  auto two = parse_yaml_document("a: 1\n---\nb: 2\n");
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("exactly one YAML document, not 2"), std::string::npos);
  EXPECT_FALSE(parse_yaml_document("").ok());
  auto inf = parse_yaml_document("spec:\n  ratio: .inf\n");
  ASSERT_FALSE(inf.ok());
  EXPECT_NE(inf.status().message().find("spec.ratio: .inf has no JSON equivalent"),
            std::string::npos)
      << inf.status().message();
  auto key = parse_yaml_document("? [a, b]\n: 1\n");
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("a mapping key is not a string"), std::string::npos);
  std::string deep;
  for (int i = 0; i < kMaxYamlDepth + 5; ++i) deep += "[";
  EXPECT_FALSE(parse_yaml_document(deep).ok());
}

}  // namespace
}  // namespace canopy::api
