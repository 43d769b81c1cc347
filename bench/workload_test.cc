#include "workload.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace canopy::bench {
namespace {

using Json = nlohmann::ordered_json;

WorkloadOptions small_options(uint64_t seed = 7) {
  WorkloadOptions o;
  o.seed = seed;
  o.initial_docs = 200;
  o.changes = 4000;
  return o;
}

// Leaves (scalars, arrays, nulls) a merge patch touches.
size_t count_leaves(const Json& patch) {
  if (!patch.is_object()) return 1;
  size_t n = 0;
  for (const auto& [k, v] : patch.items()) n += count_leaves(v);
  return n;
}

// The stream most tests inspect, generated once.
const std::vector<Change>& shared_stream() {
  static const std::vector<Change> stream = generate_workload(small_options());
  return stream;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(testing::TempDir()) / name).string();
}

TEST(Workload, SameSeedSameStream) {
  const auto a = generate_workload(small_options(7));
  const auto b = generate_workload(small_options(7));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a, b);
}

TEST(Workload, DifferentSeedDifferentStream) {
  WorkloadOptions o = small_options(7);
  o.changes = 200;
  const auto a = generate_workload(o);
  o.seed = 8;
  const auto b = generate_workload(o);
  EXPECT_NE(a, b);
}

TEST(Workload, InitialPopulationThenMix) {
  const WorkloadOptions o = small_options();
  const auto& changes = shared_stream();
  ASSERT_EQ(changes.size(), o.initial_docs + o.changes);
  for (size_t i = 0; i < o.initial_docs; ++i) EXPECT_EQ(changes[i].kind, Change::kCreate) << i;

  size_t counts[3] = {0, 0, 0};
  for (size_t i = o.initial_docs; i < changes.size(); ++i) ++counts[changes[i].kind];
  const double n = static_cast<double>(o.changes);
  EXPECT_NEAR(counts[Change::kPatch] / n, 0.70, 0.025);
  EXPECT_NEAR(counts[Change::kCreate] / n, 0.20, 0.02);
  EXPECT_NEAR(counts[Change::kRemove] / n, 0.10, 0.015);
}

TEST(Workload, CreatedDocsAreManifestsOfBoundedSize) {
  const auto& changes = shared_stream();
  std::map<std::string, size_t> kinds;
  size_t created = 0;
  for (const Change& c : changes) {
    if (c.kind != Change::kCreate) continue;
    ++created;
    EXPECT_GE(c.json.size(), kMinDocBytes) << c.key;
    EXPECT_LE(c.json.size(), kMaxDocBytes) << c.key;
    const Json doc = Json::parse(c.json);
    ASSERT_TRUE(doc.is_object());
    ASSERT_TRUE(doc.contains("apiVersion"));
    ASSERT_TRUE(doc.contains("metadata"));
    const std::string kind = doc.at("kind").get<std::string>();
    ++kinds[kind];
    // t/<tenant>/template/<group>/<Kind>/<namespace>/<name>
    const std::string ns = doc["metadata"]["namespace"].get<std::string>();
    const std::string name = doc["metadata"]["name"].get<std::string>();
    EXPECT_TRUE(c.key.starts_with("t/")) << c.key;
    EXPECT_TRUE(c.key.ends_with("/" + kind + "/" + ns + "/" + name)) << c.key;
    EXPECT_NE(c.key.find("/template/"), std::string::npos) << c.key;
    if (kind == "Deployment") {
      EXPECT_TRUE(doc["spec"]["template"]["spec"]["containers"].is_array());
      EXPECT_TRUE(doc["spec"]["template"]["spec"]["containers"][0]["env"].is_array());
    } else if (kind == "ConfigMap") {
      EXPECT_TRUE(doc["data"].is_object());
    } else {
      EXPECT_EQ(kind, "Service");
      EXPECT_TRUE(doc["spec"]["ports"].is_array());
    }
  }
  EXPECT_EQ(kinds.size(), 3u);
  for (const auto& [kind, n] : kinds) EXPECT_GT(n, created / 10) << kind;
}

TEST(Workload, SizesSpreadOverTheRange) {
  const auto& changes = shared_stream();
  size_t small = 0, large = 0;
  for (const Change& c : changes) {
    if (c.kind != Change::kCreate) continue;
    small += c.json.size() < 2048;
    large += c.json.size() > 7 * 1024;
  }
  EXPECT_GT(small, 0u);
  EXPECT_GT(large, 0u);
}

// Replays the stream: creations use new keys, patches and removals name live documents, and each
// patch touches 1-3 fields.
TEST(Workload, ChangesRespectTheLiveSet) {
  const auto& changes = shared_stream();
  std::map<std::string, Json> live;
  std::set<std::string> ever;
  for (const Change& c : changes) {
    switch (c.kind) {
      case Change::kCreate:
        ASSERT_TRUE(ever.insert(c.key).second) << "key reused: " << c.key;
        live[c.key] = Json::parse(c.json);
        break;
      case Change::kPatch: {
        auto it = live.find(c.key);
        ASSERT_NE(it, live.end()) << "patch of a dead key: " << c.key;
        const Json patch = Json::parse(c.json);
        ASSERT_TRUE(patch.is_object());
        const size_t leaves = count_leaves(patch);
        EXPECT_GE(leaves, 1u) << c.json;
        EXPECT_LE(leaves, 3u) << c.json;
        it->second.merge_patch(patch);
        ASSERT_TRUE(it->second.is_object());
        break;
      }
      case Change::kRemove:
        ASSERT_EQ(live.erase(c.key), 1u) << "removal of a dead key: " << c.key;
        EXPECT_TRUE(c.json.empty());
        break;
    }
  }
  EXPECT_GT(live.size(), 0u);
}

TEST(Workload, RoundTripThroughFile) {
  const auto& changes = shared_stream();
  const std::string path = temp_path("canopy_workload_roundtrip.jsonl");
  std::string error;
  ASSERT_TRUE(write_workload(path, changes, &error)) << error;
  std::vector<Change> back;
  ASSERT_TRUE(read_workload(path, &back, &error)) << error;
  EXPECT_EQ(back, changes);

  // One JSON object per line, in the documented shape.
  std::ifstream in(path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const Json first = Json::parse(line);
  EXPECT_EQ(first["op"], "create");
  EXPECT_TRUE(first["doc"].is_object());
  std::remove(path.c_str());
}

TEST(Workload, ReadRejectsMalformedLines) {
  const std::string path = temp_path("canopy_workload_bad.jsonl");
  {
    std::ofstream out(path);
    out << "{\"op\":\"remove\",\"key\":\"t/a/template/core/Service/x/y\"}\n";
    out << "\n";
    out << "{\"op\":\"frobnicate\",\"key\":\"k\"}\n";
  }
  std::vector<Change> back;
  std::string error;
  EXPECT_FALSE(read_workload(path, &back, &error));
  EXPECT_NE(error.find(":3:"), std::string::npos) << error;

  {
    std::ofstream out(path);
    out << "{\"op\":\"patch\",\"key\":\"k\",\"patch\":[1]}\n";
  }
  EXPECT_FALSE(read_workload(path, &back, &error));
  EXPECT_FALSE(read_workload(temp_path("does-not-exist.jsonl"), &back, &error));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace canopy::bench
