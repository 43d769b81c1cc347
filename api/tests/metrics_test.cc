// Tests of MetricsText, the Prometheus text exposition writer: the exact
// lines it writes, escaping, families written once, values, the names it
// refuses, and that Prometheus's own `promtool check metrics` accepts a page.

#include "api/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "tests/support/temp_dir.h"

namespace canopy::api {
namespace {

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

TEST(MetricsTextTest, CounterAndGaugeLines) {
  MetricsText page;
  page.counter("canopy_things", "Things done.").add(3);
  page.gauge("canopy_level", "Current level.").add(0.5);
  EXPECT_EQ(page.text(),
            "# HELP canopy_things_total Things done.\n"
            "# TYPE canopy_things_total counter\n"
            "canopy_things_total 3\n"
            "# HELP canopy_level Current level.\n"
            "# TYPE canopy_level gauge\n"
            "canopy_level 0.5\n");
}

TEST(MetricsTextTest, CounterKeepsAnExistingTotalSuffix) {
  MetricsText page;
  page.counter("canopy_x_total", "X.").add(1, {{"a", "1"}});
  // The same family, by either name.
  page.counter("canopy_x", "X.").add(2, {{"a", "2"}});
  EXPECT_EQ(page.text(),
            "# HELP canopy_x_total X.\n"
            "# TYPE canopy_x_total counter\n"
            "canopy_x_total{a=\"1\"} 1\n"
            "canopy_x_total{a=\"2\"} 2\n");
}

TEST(MetricsTextTest, FamiliesAreWrittenOnceWithTheirSamplesGrouped) {
  MetricsText page;
  page.gauge("canopy_a", "A.").add(1, {{"site", "x"}});
  page.gauge("canopy_b", "B.").add(2);
  page.gauge("canopy_a", "A.").add(3, {{"site", "y"}});
  const std::string text = page.text();
  EXPECT_EQ(count(text, "# TYPE canopy_a gauge\n"), 1u);
  EXPECT_EQ(count(text, "# HELP canopy_a "), 1u);
  EXPECT_EQ(text,
            "# HELP canopy_a A.\n"
            "# TYPE canopy_a gauge\n"
            "canopy_a{site=\"x\"} 1\n"
            "canopy_a{site=\"y\"} 3\n"
            "# HELP canopy_b B.\n"
            "# TYPE canopy_b gauge\n"
            "canopy_b 2\n");
}

TEST(MetricsTextTest, AFamilyWithoutSamplesIsStillDescribed) {
  MetricsText page;
  page.gauge("canopy_site_lag", "Lag.");
  EXPECT_EQ(page.text(), "# HELP canopy_site_lag Lag.\n# TYPE canopy_site_lag gauge\n");
}

TEST(MetricsTextTest, LabelValuesAreEscaped) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value(R"(a\b)"), R"(a\\b)");
  EXPECT_EQ(escape_label_value(R"(say "hi")"), R"(say \"hi\")");
  EXPECT_EQ(escape_label_value("two\nlines"), R"(two\nlines)");
  EXPECT_EQ(escape_label_value("\\\"\n"), R"(\\\"\n)");
  // Everything else, UTF-8 included, goes through as is.
  EXPECT_EQ(escape_label_value("caf\xc3\xa9 {x=1}, 'y'"), "caf\xc3\xa9 {x=1}, 'y'");

  MetricsText page;
  page.gauge("canopy_g", "G.").add(1, {{"path", "C:\\dir\n\"q\""}, {"b", ""}});
  EXPECT_EQ(count(page.text(), "canopy_g{path=\"C:\\\\dir\\n\\\"q\\\"\",b=\"\"} 1\n"), 1u)
      << page.text();
}

TEST(MetricsTextTest, HelpIsEscapedButQuotesAreNot) {
  EXPECT_EQ(escape_help("a \"quoted\" \\ word\nnext"), R"(a "quoted" \\ word\nnext)");
  MetricsText page;
  page.gauge("canopy_g", "line one\nline two").add(1);
  EXPECT_EQ(count(page.text(), "# HELP canopy_g line one\\nline two\n"), 1u) << page.text();
}

TEST(MetricsTextTest, Values) {
  EXPECT_EQ(format_metric_value(0), "0");
  EXPECT_EQ(format_metric_value(-0.0), "0");
  EXPECT_EQ(format_metric_value(42), "42");
  EXPECT_EQ(format_metric_value(-7), "-7");
  EXPECT_EQ(format_metric_value(1e15), "1000000000000000");
  EXPECT_EQ(format_metric_value(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(format_metric_value(0.25), "0.25");
  EXPECT_EQ(format_metric_value(1.5e300), "1.5e+300");
  EXPECT_EQ(format_metric_value(0.1), "0.1");
  EXPECT_EQ(format_metric_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(format_metric_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_metric_value(-std::numeric_limits<double>::infinity()), "-Inf");
  // Shortest form that reads back to the same double.
  const double third = 1.0 / 3.0;
  EXPECT_EQ(std::stod(format_metric_value(third)), third);
}

TEST(MetricsTextTest, Names) {
  EXPECT_TRUE(valid_metric_name("canopy_hub_sessions"));
  EXPECT_TRUE(valid_metric_name("_x:y9"));
  EXPECT_FALSE(valid_metric_name(""));
  EXPECT_FALSE(valid_metric_name("9lives"));
  EXPECT_FALSE(valid_metric_name("canopy-hub"));
  EXPECT_FALSE(valid_metric_name("canopy hub"));
  EXPECT_TRUE(valid_label_name("site"));
  EXPECT_TRUE(valid_label_name("_x1"));
  EXPECT_FALSE(valid_label_name(""));
  EXPECT_FALSE(valid_label_name("__name__"));
  EXPECT_FALSE(valid_label_name("a:b"));
  EXPECT_FALSE(valid_label_name("1a"));
}

using MetricsTextDeathTest = ::testing::Test;

TEST_F(MetricsTextDeathTest, BadNamesAndRepeatsAreBugs) {
  EXPECT_DEATH(MetricsText().gauge("bad-name", "x"), "valid_metric_name");
  EXPECT_DEATH(MetricsText().gauge("g", "x").add(1, {{"bad-label", "v"}}), "valid_label_name");
  EXPECT_DEATH(MetricsText().gauge("g", "x").add(1, {{"__reserved", "v"}}), "valid_label_name");
  EXPECT_DEATH(MetricsText().gauge("g_total", "x"), "kTotal");
  EXPECT_DEATH(
      {
        MetricsText page;
        page.gauge("g", "x");
        page.counter("g", "x");  // g_total: another family, fine
        page.gauge("g", "other help");
      },
      "help_ == help");
  // One series twice would make Prometheus refuse the whole scrape.
  EXPECT_DEATH(MetricsText().gauge("g", "x").add(1, {{"site", "a"}}).add(2, {{"site", "a"}}),
               "label_sets_");
  EXPECT_DEATH(MetricsText().counter("c", "x").add(1).add(2), "label_sets_");
}

// Prometheus's own linter accepts a page with every feature: counters and
// gauges, labels needing escapes, several samples per family, odd values.
TEST(MetricsTextTest, PromtoolAcceptsAPage) {
  MetricsText page;
  page.counter("canopy_test_events", "Events, by kind.")
      .add(3, {{"kind", "a"}})
      .add(4, {{"kind", "b \"quoted\"\nnext"}});
  page.gauge("canopy_test_level_bytes", "A level in bytes.\nSecond line.").add(1.5e9);
  page.gauge("canopy_test_ratio", "A ratio.")
      .add(std::numeric_limits<double>::quiet_NaN(), {{"site", "x"}})
      .add(std::numeric_limits<double>::infinity(), {{"site", "y"}})
      .add(0.125, {{"site", "z\n"}});
  page.gauge("canopy_test_empty", "No samples.");
  canopy::testing::TempDir dir;
  const std::string in = dir.file("page.txt"), out = dir.file("promtool.out");
  std::ofstream(in) << page.text();
  const std::string cmd =
      std::string(PROMTOOL_BIN) + " check metrics < " + in + " > " + out + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream result(out);
  std::stringstream ss;
  ss << result.rdbuf();
  EXPECT_EQ(rc, 0) << cmd << "\n" << ss.str() << "\npage:\n" << page.text();
  EXPECT_EQ(ss.str(), "") << page.text();
}

}  // namespace
}  // namespace canopy::api
