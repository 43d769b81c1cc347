// MetricsText: a page in the Prometheus text exposition format (version
// 0.0.4), what GET /metrics serves on the hub and the spoke. No client
// library: the daemons hold their own counters (the engines' stats, the
// store's) and write a page from a snapshot of them on each scrape.
//
// A page is a list of families, each written once with its HELP and TYPE
// lines and then all its samples, in the order the families were first named.
// Naming a family again returns the same family (its samples are grouped
// under the one TYPE line), so callers may add samples in any order.
//
//   MetricsText page;
//   page.counter("canopy_sync_messages_received", "Messages ...").add(n);
//   auto& lag = page.gauge("canopy_hub_site_lag_entries", "...");
//   for (...) lag.add(v, {{"site", name}});
//   std::string body = page.text();
//
// Counters get the suffix `_total` (Prometheus's convention, which promtool
// checks): "canopy_x" and "canopy_x_total" name the same counter family.
// Label values are escaped (backslash, double quote, newline); HELP text has
// its backslashes and newlines escaped. Values are written as integers when
// they are integral (up to 2^53), otherwise in the shortest form that reads
// back to the same double; NaN and infinities as NaN, +Inf, -Inf.
//
// Names are the code's own constants, so a bad one is a bug: a metric name
// outside [a-zA-Z_:][a-zA-Z0-9_:]*, a label name outside [a-zA-Z_][a-zA-Z0-9_]*
// or starting with "__", a family named again with another type or help, or
// two samples of one family with the same labels fail a CANOPY_CHECK.
//
// Thread-safety: REQUIRES external synchronization (one page per scrape).
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace canopy::api {

// The Content-Type of a page.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// Label name -> value, in the order written.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { kCounter, kGauge };

class MetricFamily {
 public:
  // Adds a sample. REQUIRES: no other sample of this family has the same
  // labels (in the same order).
  MetricFamily& add(double value, const MetricLabels& labels = {});

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }

 private:
  friend class MetricsText;
  MetricFamily(std::string name, MetricType type, std::string help)
      : name_(std::move(name)), type_(type), help_(std::move(help)) {}
  void write(std::string* out) const;

  std::string name_;
  MetricType type_;
  std::string help_;
  std::vector<std::string> samples_;  // "{labels} value", or " value"
  std::set<std::string> label_sets_;  // the rendered labels of each sample
};

class MetricsText {
 public:
  // The counter family `name` (plus `_total` unless it ends so).
  MetricFamily& counter(std::string_view name, std::string_view help);
  MetricFamily& gauge(std::string_view name, std::string_view help);

  // The page: every family named so far, in order, each ending in '\n'.
  std::string text() const;

 private:
  MetricFamily& family(std::string name, MetricType type, std::string_view help);

  std::vector<std::unique_ptr<MetricFamily>> families_;
  std::map<std::string, MetricFamily*, std::less<>> by_name_;
};

// Escapes a label value: \ -> \\, " -> \", newline -> \n.
std::string escape_label_value(std::string_view value);
// Escapes HELP text: \ -> \\, newline -> \n.
std::string escape_help(std::string_view help);
// A sample value as the format writes it (see above).
std::string format_metric_value(double value);
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

}  // namespace canopy::api
