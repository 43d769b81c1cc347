// Rateless set reconciliation (sync/engine/sketch.h): the decoded difference
// is exactly the symmetric difference of the two sets, for differences from
// none to larger than either set, and the symbols it takes stay near the
// difference's size.
#include "sync/engine/sketch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

namespace canopy::sync {
namespace {

struct Case {
  std::vector<uint64_t> remote, local;
  std::set<uint64_t> remote_only, local_only;
};

// `common` ids on both sides, `r` only at the peer, `l` only here.
Case make_case(std::mt19937_64& rng, size_t common, size_t r, size_t l) {
  Case c;
  std::set<uint64_t> used;
  auto fresh = [&] {
    uint64_t id;
    do id = rng();
    while (!used.insert(id).second);
    return id;
  };
  for (size_t i = 0; i < common; ++i) {
    const uint64_t id = fresh();
    c.remote.push_back(id);
    c.local.push_back(id);
  }
  for (size_t i = 0; i < r; ++i) c.remote_only.insert(c.remote.emplace_back(fresh()));
  for (size_t i = 0; i < l; ++i) c.local_only.insert(c.local.emplace_back(fresh()));
  std::shuffle(c.remote.begin(), c.remote.end(), rng);
  std::shuffle(c.local.begin(), c.local.end(), rng);
  return c;
}

// Streams the peer's symbols in batches of `first`, doubling, as ParentSync
// does; returns how many symbols it took (0 if it never decoded).
size_t reconcile(const Case& c, size_t first, SketchDecoder* dec) {
  SketchEncoder enc(c.remote);
  size_t sent = 0, batch = first;
  while (sent < 64 * (c.remote.size() + c.local.size() + 8)) {
    const auto& sym = enc.extend(sent + batch);
    dec->add(std::span<const SketchSymbol>(sym).subspan(sent, batch));
    sent += batch;
    batch = sent;
    if (dec->decoded() || dec->failed()) break;
  }
  return dec->decoded() ? sent : 0;
}

TEST(SketchTest, DecodesTheSymmetricDifference) {
  std::mt19937_64 rng(7);
  const size_t shapes[][3] = {{0, 0, 0},     {1000, 0, 0},   {1000, 1, 0},  {1000, 0, 1},
                              {1000, 1, 1},  {1000, 50, 50}, {0, 300, 0},   {0, 0, 300},
                              {500, 0, 700}, {10, 2000, 5},  {20000, 3, 2}, {5000, 1000, 1000}};
  for (const auto& shape : shapes) {
    SCOPED_TRACE(::testing::Message() << "common " << shape[0] << ", only remote " << shape[1]
                                      << ", only local " << shape[2]);
    Case c = make_case(rng, shape[0], shape[1], shape[2]);
    SketchDecoder dec(c.local);
    const size_t used = reconcile(c, 8, &dec);
    ASSERT_GT(used, 0u);
    EXPECT_FALSE(dec.failed());
    EXPECT_EQ(std::set<uint64_t>(dec.remote_only().begin(), dec.remote_only().end()),
              c.remote_only);
    EXPECT_EQ(std::set<uint64_t>(dec.local_only().begin(), dec.local_only().end()), c.local_only);
    EXPECT_EQ(dec.remote_only().size(), c.remote_only.size());  // no id twice
    EXPECT_EQ(dec.local_only().size(), c.local_only.size());
  }
}

TEST(SketchTest, SymbolsNeededGrowWithTheDifferenceNotTheSets) {
  // Over many seeds: a difference of d needs about 1.4 d symbols once d is
  // not tiny, and a set of 50,000 costs no more than one of 500.
  std::mt19937_64 rng(11);
  for (size_t common : {500u, 50000u}) {
    for (size_t d : {2u, 20u, 200u, 2000u}) {
      size_t total = 0;
      const int runs = d >= 2000 ? 3 : 20;
      for (int run = 0; run < runs; ++run) {
        Case c = make_case(rng, common, d / 2, d - d / 2);
        SketchEncoder enc(c.remote);
        SketchDecoder dec(c.local);
        // One symbol at a time: the exact number needed.
        size_t n = 0;
        while (!dec.decoded()) {
          ASSERT_LT(n, 20 * d + 64) << "no decode";
          dec.add(std::span<const SketchSymbol>(enc.extend(n + 1)).subspan(n, 1));
          ++n;
        }
        total += n;
      }
      const double mean = static_cast<double>(total) / runs;
      SCOPED_TRACE(::testing::Message() << "common " << common << ", d " << d << ", mean " << mean);
      if (d >= 200) {
        EXPECT_LT(mean, 1.7 * static_cast<double>(d));
      }
      EXPECT_LT(mean, 3.0 * static_cast<double>(d) + 4);
    }
  }
}

TEST(SketchTest, SymbolsAddUpAcrossBatchesAndLateItems) {
  // The stream does not depend on how it is cut into batches, nor on whether
  // items were added before or after the first symbols were made.
  std::mt19937_64 rng(3);
  std::vector<uint64_t> ids(3000);
  for (auto& id : ids) id = rng();
  SketchEncoder whole(ids);
  SketchEncoder late;
  for (size_t i = 0; i < 1000; ++i) late.add(ids[i]);
  late.extend(37);
  for (size_t i = 1000; i < ids.size(); ++i) late.add(ids[i]);
  late.extend(100);
  late.extend(900);
  const auto& a = whole.extend(900);
  const auto& b = late.symbols();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].count, b[i].count) << i;
    EXPECT_EQ(a[i].id, b[i].id) << i;
    EXPECT_EQ(a[i].check, b[i].check) << i;
  }
  EXPECT_EQ(a[0].count, 3000);  // every item maps to symbol 0
}

TEST(SketchTest, GarbageSymbolsNeverDecodeToAWrongAnswerSilently) {
  // Symbols that are not a sketch of any set: the decoder either fails, or
  // does not decode, or (if it claims success) its answer must re-encode to
  // exactly what it was given.
  std::mt19937_64 rng(5);
  for (int run = 0; run < 200; ++run) {
    std::vector<uint64_t> local(100);
    for (auto& id : local) id = rng();
    SketchDecoder dec(local);
    std::vector<SketchSymbol> junk(64);
    for (auto& s : junk)
      s = SketchSymbol{static_cast<int64_t>(rng() % 5) - 2, rng(), static_cast<uint32_t>(rng())};
    dec.add(junk);
    if (!dec.decoded()) continue;
    std::set<uint64_t> remote(local.begin(), local.end());
    for (uint64_t id : dec.local_only()) remote.erase(id);
    for (uint64_t id : dec.remote_only()) remote.insert(id);
    SketchEncoder check(std::vector<uint64_t>(remote.begin(), remote.end()));
    const auto& sym = check.extend(junk.size());
    for (size_t i = 0; i < junk.size(); ++i) {
      EXPECT_EQ(sym[i].count, junk[i].count);
      EXPECT_EQ(sym[i].id, junk[i].id);
    }
  }
}

}  // namespace
}  // namespace canopy::sync
