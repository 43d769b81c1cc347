#include "api/metrics.h"

#include <charconv>
#include <cmath>

#include "store/status.h"

namespace canopy::api {
namespace {

constexpr std::string_view kTotal = "_total";
// Integral values up to this magnitude are exact in a double.
constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

bool name_char(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (alpha || (colon && c == ':')) return true;
  return !first && c >= '0' && c <= '9';
}

bool valid_name(std::string_view name, bool colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, colon)) return false;
  }
  return true;
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_metric_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::trunc(value) && std::fabs(value) <= kMaxExactInteger) {
    return std::to_string(static_cast<int64_t>(value));
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  CANOPY_CHECK(ec == std::errc());
  return std::string(buf, end);
}

bool valid_metric_name(std::string_view name) { return valid_name(name, /*colon=*/true); }

bool valid_label_name(std::string_view name) {
  return valid_name(name, /*colon=*/false) && !name.starts_with("__");
}

MetricFamily& MetricFamily::add(double value, const MetricLabels& labels) {
  std::string rendered;
  if (!labels.empty()) {
    rendered += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      CANOPY_CHECK(valid_label_name(labels[i].first));
      if (i > 0) rendered += ',';
      rendered += labels[i].first;
      rendered += "=\"";
      rendered += escape_label_value(labels[i].second);
      rendered += '"';
    }
    rendered += '}';
  }
  // Two samples with one label set are one series twice: Prometheus refuses
  // the whole scrape.
  CANOPY_CHECK(label_sets_.insert(rendered).second);
  samples_.push_back(rendered + " " + format_metric_value(value));
  return *this;
}

void MetricFamily::write(std::string* out) const {
  *out += "# HELP " + name_ + " " + escape_help(help_) + "\n";
  *out += "# TYPE " + name_ + (type_ == MetricType::kCounter ? " counter\n" : " gauge\n");
  for (const std::string& s : samples_) {
    *out += name_;
    *out += s;
    *out += '\n';
  }
}

MetricFamily& MetricsText::counter(std::string_view name, std::string_view help) {
  std::string full(name);
  if (!full.ends_with(kTotal)) full += kTotal;
  return family(std::move(full), MetricType::kCounter, help);
}

MetricFamily& MetricsText::gauge(std::string_view name, std::string_view help) {
  // A gauge named like a counter reads as one (and promtool says so).
  CANOPY_CHECK(!name.ends_with(kTotal));
  return family(std::string(name), MetricType::kGauge, help);
}

MetricFamily& MetricsText::family(std::string name, MetricType type, std::string_view help) {
  CANOPY_CHECK(valid_metric_name(name));
  if (auto it = by_name_.find(name); it != by_name_.end()) {
    CANOPY_CHECK(it->second->type_ == type && it->second->help_ == help);
    return *it->second;
  }
  families_.push_back(
      std::unique_ptr<MetricFamily>(new MetricFamily(name, type, std::string(help))));
  by_name_[std::move(name)] = families_.back().get();
  return *families_.back();
}

std::string MetricsText::text() const {
  std::string out;
  for (const auto& f : families_) f->write(&out);
  return out;
}

}  // namespace canopy::api
