#include "spoke/bus/twin_reports.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <vector>

#include "model/documents.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::spoke::bus {
namespace {

using json = nlohmann::json;

constexpr char kReportSubjects[] = "t.*.d.*.reported";

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// t.<tenant>.d.<id>.reported -> (tenant, id); false for anything else.
bool parse_subject(std::string_view s, std::string_view* tenant, std::string_view* id) {
  std::string_view parts[5];
  size_t n = 0;
  while (n < 5) {
    const size_t dot = s.find('.');
    parts[n++] = s.substr(0, dot);
    if (dot == std::string_view::npos) {
      s = {};
      break;
    }
    s.remove_prefix(dot + 1);
  }
  if (n != 5 || !s.empty() || parts[0] != "t" || parts[2] != "d" || parts[4] != "reported") {
    return false;
  }
  *tenant = parts[1];
  *id = parts[3];
  return model::is_dns1123_label(*tenant) && model::is_dns1123_label(*id);
}

}  // namespace

TwinReports::TwinReports(Store* store, TwinReportOptions options, Known known)
    : store_(store),
      options_(std::move(options)),
      known_(std::move(known)),
      coalescer_(options_.interval),
      refusal_interval_start_(std::chrono::steady_clock::now()) {}

StatusOr<std::unique_ptr<TwinReports>> TwinReports::start(Store* store, TwinReportOptions options,
                                                          Known known) {
  std::unique_ptr<TwinReports> r(new TwinReports(store, std::move(options), std::move(known)));
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) return internal_error("nats: cannot create options");
  natsStatus s = natsOptions_SetURL(opts, r->options_.nats_url.c_str());
  if (s == NATS_OK) {
    s = natsOptions_SetUserInfo(opts, r->options_.user.c_str(), r->options_.password.c_str());
  }
  if (s == NATS_OK) s = natsOptions_SetName(opts, "canopy-spoke twin reports");
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 500);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(opts, true, nullptr, nullptr);
  // The subscription's pending limit: past it, nats.c drops (a slow consumer)
  // rather than grow without bound.
  if (s == NATS_OK) s = natsConnection_Connect(&r->conn_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    return unavailable(std::string("twin reports: cannot connect to the bus at ") +
                       r->options_.nats_url + ": " + natsStatus_GetText(s));
  }
  s = natsConnection_SubscribeSync(&r->sub_, r->conn_, kReportSubjects);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(r->sub_, 100'000, 64 << 20);
  if (s != NATS_OK) {
    return unavailable(std::string("twin reports: cannot subscribe: ") + natsStatus_GetText(s));
  }
  // Connected: the bus has the subscription before start returns, so no
  // report published after it is missed for want of interest. (Not yet
  // connected: the subscription goes out with the connection.)
  if (natsConnection_Status(r->conn_) == NATS_CONN_STATUS_CONNECTED &&
      natsConnection_FlushTimeout(r->conn_, 5000) != NATS_OK) {
    spdlog::warn("twin reports: the bus did not confirm the subscription; going on");
  }
  TwinReports* raw = r.get();
  r->reader_ = std::thread([raw] { raw->read_loop(); });
  r->flusher_ = std::thread([raw] { raw->flush_loop(); });
  return r;
}

TwinReports::~TwinReports() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (reader_.joinable()) reader_.join();
  if (flusher_.joinable()) flusher_.join();
  if (sub_ != nullptr) {
    natsSubscription_Unsubscribe(sub_);
    natsSubscription_Destroy(sub_);
  }
  if (conn_ != nullptr) {
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
  }
  flush();
}

TwinReportStats TwinReports::stats() {
  std::lock_guard lock(mu_);
  return stats_;
}

void TwinReports::refuse(uint64_t* counter, std::string_view subject, const std::string& why) {
  ++*counter;
  if (refusal_logs_ >= kMaxRefusalLogs) {
    ++refusals_quiet_;
    return;
  }
  ++refusal_logs_;
  const uint64_t total =
      stats_.refused_malformed + stats_.refused_oversized + stats_.refused_unknown;
  spdlog::warn("twin: report on {} refused: {} ({} refused since start)", subject, why, total);
}

void TwinReports::ingest(std::string_view subject, std::string_view payload, uint64_t at_ms) {
  std::string_view tenant;
  std::string_view id;
  const bool named = parse_subject(subject, &tenant, &id);
  const bool is_known = named && known_(tenant, id);
  std::lock_guard lock(mu_);
  if (!named)
    return refuse(&stats_.refused_malformed, subject, "not t.<tenant>.d.<device>.reported");
  if (!is_known) {
    return refuse(&stats_.refused_unknown, subject,
                  "unknown device " + std::string(id) + " of tenant " + std::string(tenant) +
                      " (no device document at this site)");
  }
  if (payload.size() > options_.max_payload) {
    return refuse(&stats_.refused_oversized, subject,
                  std::to_string(payload.size()) + " bytes exceed the limit of " +
                      std::to_string(options_.max_payload));
  }
  json doc = json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return refuse(&stats_.refused_malformed, subject, "not valid JSON");
  if (!doc.is_object()) {
    return refuse(&stats_.refused_malformed, subject,
                  std::string("a report is a JSON object of fields, not ") + doc.type_name());
  }
  if (doc.size() > options_.max_fields) {
    return refuse(&stats_.refused_oversized, subject,
                  std::to_string(doc.size()) + " fields exceed the limit of " +
                      std::to_string(options_.max_fields));
  }
  for (const auto& [k, v] : doc.items()) {
    if (!model::is_twin_field(k)) {
      return refuse(&stats_.refused_malformed, subject,
                    "field " + model::quote(k) +
                        " is not a twin field name (1-128 characters of A-Z, a-z, 0-9, '_', '-')");
    }
  }
  ++stats_.accepted;
  if (coalescer_.add({std::string(tenant), std::string(id)}, std::move(doc), at_ms)) {
    wake_ = true;
    cv_.notify_all();
  }
}

void TwinReports::log_quiet_refusals_locked() {
  if (refusals_quiet_ > 0) {
    spdlog::warn("twin: {} more report(s) refused in the last interval (not logged one by one)",
                 refusals_quiet_);
  }
  refusal_logs_ = 0;
  refusals_quiet_ = 0;
  refusal_interval_start_ = std::chrono::steady_clock::now();
}

void TwinReports::flush() {
  std::lock_guard flushing(flush_mu_);
  std::vector<ReportCoalescer::Due> batch;
  {
    std::lock_guard lock(mu_);
    batch = coalescer_.take_all();
    log_quiet_refusals_locked();
  }
  write(std::move(batch));
}

void TwinReports::write(std::vector<ReportCoalescer::Due> batch) {
  uint64_t writes = 0;
  uint64_t failures = 0;
  uint64_t commits = 0;
  // The devices due at once are written in commits of up to kWritesPerCommit
  // documents (Store::put_values): one write batch and one fsync each, not
  // one per device; each document is still its own delta up the uplink.
  constexpr size_t kWritesPerCommit = 512;
  std::vector<std::pair<std::string, json>> docs;
  auto commit = [&] {
    if (docs.empty()) return;
    std::vector<StatusOr<v1::Delta>> results = store_->put_values(docs);
    ++commits;
    for (size_t i = 0; i < results.size(); ++i) {
      if (!results[i].ok()) {
        ++failures;
        spdlog::error("twin: cannot write {}: {}", docs[i].first, results[i].status().to_string());
      } else {
        ++writes;
      }
    }
    docs.clear();
  };
  for (auto& [device, fields] : batch) {
    std::string key = model::reported_key(options_.site, device.first, device.second);
    json doc = json::object();
    if (auto current = store_->get(key); current.ok()) {
      json parsed = json::parse(*current, nullptr, false);
      if (parsed.is_object() && model::parse_reported(parsed).ok()) doc = std::move(parsed);
    }
    for (auto& [name, value] : fields) {
      doc[name] = {{"value", std::move(value.first)}, {"atMs", value.second}};
    }
    docs.emplace_back(std::move(key), std::move(doc));
    if (docs.size() == kWritesPerCommit) commit();
  }
  commit();
  std::lock_guard lock(mu_);
  stats_.writes += writes;
  stats_.write_failures += failures;
  stats_.commits += commits;
}

void TwinReports::read_loop() {
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    natsMsg* m = nullptr;
    const natsStatus s = natsSubscription_NextMsg(&m, sub_, 200);
    if (s != NATS_OK) {
      if (s != NATS_TIMEOUT) std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    ingest(natsMsg_GetSubject(m),
           std::string_view(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m))),
           now_ms());
    natsMsg_Destroy(m);
  }
}

void TwinReports::flush_loop() {
  using SteadyClock = std::chrono::steady_clock;
  std::unique_lock lock(mu_);
  while (!stopping_) {
    // Wake when the earliest pending device is due (at once for a report
    // after a quiet interval: ingest notifies), and at least once an
    // interval, so quiet devices are forgotten and refusals logged.
    const auto now = SteadyClock::now();
    auto until = now + options_.interval;
    if (auto next = coalescer_.next_due(); next && *next < until) until = *next;
    if (until > now) cv_.wait_until(lock, until, [&] { return stopping_ || wake_; });
    wake_ = false;
    if (stopping_) return;
    const auto at = SteadyClock::now();
    std::vector<ReportCoalescer::Due> batch = coalescer_.take_due(at);
    if (at - refusal_interval_start_ >= options_.interval) log_quiet_refusals_locked();
    if (batch.empty()) continue;
    lock.unlock();
    {
      std::lock_guard flushing(flush_mu_);
      write(std::move(batch));
    }
    lock.lock();
  }
}

}  // namespace canopy::spoke::bus
