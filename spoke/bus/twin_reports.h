// TwinReports: devices' reported twins, from the site bus into the store.
//
// A device reports by publishing a JSON object of fields on
// t/<tenant>/d/<id>/reported (`{"temp": 21.5, "door": "open"}`). The spoke
// sees it through its own NATS connection to the bus (the CANOPY account,
// which imports every tenant's t.<tenant>.>: bus_spec.h), subscribed to
// t.*.d.*.reported. Each report is checked: at most `max_payload` bytes, a
// JSON object of at most `max_fields` fields named by model::is_twin_field,
// from a device that has a document at the site (DeviceDocumentsWatch::
// known). A refused report is logged with its reason (at most
// kMaxRefusalLogs lines an interval, then a count) and counted by reason;
// nothing else changes.
//
// Accepted reports are coalesced at the leading edge (ReportCoalescer): a
// device's report after a quiet interval (`interval`, 1 s by default) is
// written into `sites/<site>/reported/<tenant>/<id>` (model/documents.h: each
// field's value and when it was reported) as soon as it arrives; reports
// within an interval of the device's last write are kept in memory, the
// latest value of each field winning, and written when that interval ends.
// So a quiet device's report reaches the store (and the uplink) at once, and
// a device reporting 1,000 times a second still costs at most one store
// write, and one uplink delta, an interval.
//
// Thread-safety: one thread reads the subscription and one writes; stats()
// from any thread. Destroying it stops both and writes what is pending.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "spoke/bus/report_coalescer.h"
#include "store/status.h"
#include "store/store.h"

// nats.c's handles (nats/nats.h), declared here to keep nats.h private.
typedef struct __natsConnection natsConnection;
typedef struct __natsSubscription natsSubscription;

namespace canopy::spoke::bus {

inline constexpr size_t kMaxRefusalLogs = 20;

struct TwinReportOptions {
  std::string nats_url;  // the bus's client listener, nats://127.0.0.1:<client_port>
  std::string user;      // the spoke's user in CANOPY (kSpokeUser)
  std::string password;
  std::string site;
  std::chrono::milliseconds interval{1000};
  size_t max_payload = 16 * 1024;
  size_t max_fields = 64;
};

struct TwinReportStats {
  uint64_t accepted = 0;           // reports taken (before coalescing)
  uint64_t refused_malformed = 0;  // not a JSON object of twin fields
  uint64_t refused_oversized = 0;  // over max_payload bytes or max_fields fields
  uint64_t refused_unknown = 0;    // no device document at the site
  uint64_t writes = 0;             // reported documents written
  uint64_t commits = 0;            // store commits they took (Store::put_values)
  uint64_t write_failures = 0;
};

class TwinReports {
 public:
  // `known(tenant, id)`: whether the device has a document at the site.
  using Known = std::function<bool(std::string_view tenant, std::string_view id)>;

  // Connects (retrying in the background until the bus answers) and
  // subscribes. `store` must outlive the result.
  static StatusOr<std::unique_ptr<TwinReports>> start(Store* store, TwinReportOptions options,
                                                      Known known);
  ~TwinReports();
  TwinReports(const TwinReports&) = delete;
  TwinReports& operator=(const TwinReports&) = delete;

  TwinReportStats stats();

  // One report, as received on `subject`; `now_ms` is when. Public for the
  // tests of the checks.
  void ingest(std::string_view subject, std::string_view payload, uint64_t now_ms);
  // Writes what is pending now, due or not.
  void flush();

 private:
  TwinReports(Store* store, TwinReportOptions options, Known known);
  void refuse(uint64_t* counter, std::string_view subject, const std::string& why);
  void read_loop();
  void flush_loop();
  // Writes each device's fields into its reported document.
  void write(std::vector<ReportCoalescer::Due> batch);
  // Logs the refusals not logged one by one; a new logging interval starts.
  void log_quiet_refusals_locked();

  Store* const store_;
  const TwinReportOptions options_;
  const Known known_;
  natsConnection* conn_ = nullptr;
  natsSubscription* sub_ = nullptr;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool wake_ = false;  // a device's due time may be earlier than the writer's wait
  TwinReportStats stats_;
  size_t refusal_logs_ = 0;                                       // this interval
  uint64_t refusals_quiet_ = 0;                                   // not logged this interval
  ReportCoalescer coalescer_;                                     // guarded by mu_
  std::chrono::steady_clock::time_point refusal_interval_start_;  // guarded by mu_
  std::mutex flush_mu_;                                           // one flush at a time
  std::thread reader_;
  std::thread flusher_;
};

}  // namespace canopy::spoke::bus
