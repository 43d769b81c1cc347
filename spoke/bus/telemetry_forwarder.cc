// TelemetryForwarder: see telemetry_forwarder.h.
#include "spoke/bus/telemetry_forwarder.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <string_view>
#include <vector>

#include "model/names.h"
#include "spoke/bus/bus_spec.h"
#include "sync/subjects.h"

namespace canopy::spoke::bus {
namespace {

constexpr char kConsumer[] = "forwarder";
constexpr size_t kMaxRefusalLogs = 20;  // per log interval

// A batch published on the hub's subjects, awaiting its barrier's echo.
struct Flight {
  std::vector<natsMsg*> msgs;  // as fetched: acknowledged (purged) once confirmed
  uint64_t through = 0;        // the last stream sequence it covers
  std::string nonce;           // its barrier
  std::chrono::steady_clock::time_point asked;
  int64_t bytes = 0;
  uint64_t forwarded = 0, dropped = 0, oversized = 0, bad_subject = 0;
};

void destroy_all(std::vector<natsMsg*>* msgs) {
  for (natsMsg* m : *msgs) natsMsg_Destroy(m);
  msgs->clear();
}

std::vector<std::string_view> split_tokens(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    const size_t dot = s.find('.');
    out.push_back(s.substr(0, dot));
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  return out;
}

std::string js_error(const char* what, natsStatus s, jsErrCode jerr) {
  std::string m = std::string(what) + ": " + natsStatus_GetText(s);
  if (jerr != 0) m += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') m += ": " + std::string(last);
  return m;
}

}  // namespace

std::optional<std::string> telemetry_hub_subject(std::string_view site, std::string_view subject) {
  if (!model::is_dns1123_label(site)) return std::nullopt;
  const std::vector<std::string_view> t = split_tokens(subject);
  if (t.size() < 5 || t[0] != "t" || t[2] != "d" || t[4] != "telemetry") return std::nullopt;
  if (!model::is_dns1123_label(t[1]) || !model::is_dns1123_label(t[3])) return std::nullopt;
  std::string out = "tm.";
  out.append(t[1]).append(".").append(site).append(".").append(t[3]);
  for (size_t i = 5; i < t.size(); ++i) {
    if (t[i].empty()) return std::nullopt;
    out.append(".").append(t[i]);
  }
  return out;
}

TelemetryForwarder::TelemetryForwarder(TelemetryOptions options) : options_(std::move(options)) {}

StatusOr<std::unique_ptr<TelemetryForwarder>> TelemetryForwarder::start(TelemetryOptions options) {
  if (!model::is_dns1123_label(options.site)) {
    return invalid_argument("telemetry: site " + model::quote(options.site) +
                            " is not a DNS-1123 label");
  }
  if (options.batch < 1 || options.max_bytes < 1 || options.max_message < 1 ||
      options.max_age.count() < 1) {
    return invalid_argument("telemetry: batch, max_bytes, max_message and max_age must be > 0");
  }
  std::unique_ptr<TelemetryForwarder> f(new TelemetryForwarder(std::move(options)));
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) return internal_error("nats: cannot create options");
  natsStatus s = natsOptions_SetURL(opts, f->options_.nats_url.c_str());
  if (s == NATS_OK) {
    s = natsOptions_SetUserInfo(opts, f->options_.user.c_str(), f->options_.password.c_str());
  }
  if (s == NATS_OK) s = natsOptions_SetName(opts, "canopy-spoke telemetry");
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 500);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(opts, true, nullptr, nullptr);
  if (s == NATS_OK) s = natsConnection_Connect(&f->conn_, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    return unavailable(std::string("telemetry: cannot connect to the bus at ") +
                       f->options_.nats_url + ": " + natsStatus_GetText(s));
  }
  TelemetryForwarder* raw = f.get();
  f->worker_ = std::thread([raw] { raw->run(); });
  return f;
}

TelemetryForwarder::~TelemetryForwarder() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (conn_ != nullptr) {
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
  }
  log_progress(true);
}

TelemetryStats TelemetryForwarder::stats() {
  std::lock_guard lock(mu_);
  return stats_;
}

bool TelemetryForwarder::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

uint64_t TelemetryForwarder::load_last() const {
  if (options_.state_file.empty()) return 0;
  std::ifstream in(options_.state_file);
  uint64_t v = 0;
  if (in >> v) return v;
  return 0;
}

void TelemetryForwarder::save_last(uint64_t seq) const {
  if (options_.state_file.empty()) return;
  const std::string tmp = options_.state_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << seq << "\n";
    if (!out) {
      spdlog::warn("telemetry: cannot write {}", tmp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, options_.state_file, ec);
  if (ec) spdlog::warn("telemetry: cannot rename {}: {}", tmp, ec.message());
}

void TelemetryForwarder::log_progress(bool force) {
  TelemetryStats now;
  {
    std::lock_guard lock(mu_);
    now = stats_;
    const auto t = std::chrono::steady_clock::now();
    const bool changed = now.forwarded != logged_.forwarded || now.dropped != logged_.dropped ||
                         now.buffered != logged_.buffered || now.uplink != logged_.uplink ||
                         now.refused_oversized != logged_.refused_oversized ||
                         now.refused_subject != logged_.refused_subject;
    if (!changed) return;
    if (!force && now.uplink == logged_.uplink && t - last_log_ < std::chrono::seconds(5)) return;
    logged_ = now;
    last_log_ = t;
  }
  spdlog::info(
      "telemetry: uplink {}, {} buffered, {} forwarded, {} dropped by the buffer's limits, {} "
      "refused",
      now.uplink ? "up" : "down", now.buffered, now.forwarded, now.dropped,
      now.refused_oversized + now.refused_subject);
}

void TelemetryForwarder::run() {
  jsCtx* js = nullptr;
  natsSubscription* sub = nullptr;
  uint64_t last = load_last();
  // Sequences after `last` up to here were lost to the stream's limits and
  // are counted as dropped already (seen from the stream's first sequence
  // while the uplink is down, before the forwarder reaches them).
  uint64_t expired_through = 0;
  size_t refusal_logs = 0;
  auto last_refusal_reset = std::chrono::steady_clock::now();
  auto last_info = std::chrono::steady_clock::time_point{};
  // Published, awaiting their barriers' echoes, oldest first.
  std::deque<Flight> inflight;
  int64_t inflight_bytes = 0;
  // The last sequence published (0: none since the last give-back); a
  // message at or below it, or below `last`, is a redelivery and skipped.
  uint64_t sent_through = 0;
  bool linked = false;     // the last barrier was answered
  bool announced = false;  // the stream and the consumer were made once
  const size_t window = static_cast<size_t>(std::max(1, options_.pipeline));

  auto drop_inflight = [&] {
    for (Flight& f : inflight) destroy_all(&f.msgs);
    inflight.clear();
    inflight_bytes = 0;
  };
  auto set_uplink = [&](bool up) {
    const bool changed = linked != up;
    linked = up;
    {
      std::lock_guard lock(mu_);
      stats_.uplink = up;
    }
    if (changed) log_progress(true);
  };
  // Makes (or brings to the options) the stream and a fresh consumer: a
  // consumer made anew starts at the stream's first message, so what a
  // previous run fetched and did not acknowledge comes first again.
  auto setup = [&]() -> bool {
    if (js == nullptr && natsConnection_JetStream(&js, conn_, nullptr) != NATS_OK) return false;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char* subjects[std::size(kTelemetrySubjects)];
    for (size_t i = 0; i < std::size(kTelemetrySubjects); ++i) subjects[i] = kTelemetrySubjects[i];
    sc.Name = kTelemetryStream;
    sc.Subjects = subjects;
    sc.SubjectsLen = static_cast<int>(std::size(kTelemetrySubjects));
    sc.Retention = js_WorkQueuePolicy;
    sc.Discard = js_DiscardOld;
    sc.Storage = js_FileStorage;
    sc.MaxBytes = options_.max_bytes;
    sc.MaxAge = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.max_age).count();
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_AddStream(&si, js, &sc, nullptr, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {
      jerr = static_cast<jsErrCode>(0);
      s = js_UpdateStream(&si, js, &sc, nullptr, &jerr);
    }
    if (s != NATS_OK) {
      spdlog::warn("telemetry: {}; retrying", js_error("cannot make the stream", s, jerr));
      return false;
    }
    if (last > si->State.LastSeq) {
      // A stream made anew (its store lost): its sequences start again.
      spdlog::warn("telemetry: the stream is at {} but {} were forwarded: a new stream",
                   si->State.LastSeq, last);
      last = 0;
      save_last(0);
    }
    {
      std::lock_guard lock(mu_);
      stats_.buffered = si->State.Msgs;
    }
    jsStreamInfo_Destroy(si);
    jerr = static_cast<jsErrCode>(0);
    s = js_DeleteConsumer(js, kTelemetryStream, kConsumer, nullptr, &jerr);
    if (s != NATS_OK && jerr != JSConsumerNotFoundErr) {
      spdlog::warn("telemetry: {}; retrying", js_error("cannot reset the consumer", s, jerr));
      return false;
    }
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = kConsumer;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    // Long: a batch is held (and published again) until the hub answers;
    // it is never handed out twice meanwhile.
    cc.AckWait =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::hours(1)).count();
    cc.MaxAckPending = options_.batch * static_cast<int>(window);
    jsConsumerInfo* ci = nullptr;
    jerr = static_cast<jsErrCode>(0);
    s = js_AddConsumer(&ci, js, kTelemetryStream, &cc, nullptr, &jerr);
    if (s != NATS_OK) {
      spdlog::warn("telemetry: {}; retrying", js_error("cannot make the consumer", s, jerr));
      return false;
    }
    jsConsumerInfo_Destroy(ci);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = kTelemetryStream;
    so.Consumer = kConsumer;
    jerr = static_cast<jsErrCode>(0);
    s = js_PullSubscribe(&sub, js, kTelemetrySubjects[0], kConsumer, nullptr, &so, &jerr);
    if (s != NATS_OK) {
      spdlog::warn("telemetry: {}; retrying", js_error("cannot subscribe", s, jerr));
      sub = nullptr;
      return false;
    }
    // (Said once: a batch the hub did not confirm makes the consumer anew,
    // once a second while the uplink is down.)
    spdlog::log(announced ? spdlog::level::debug : spdlog::level::info,
                "telemetry: stream {} ({} bytes, {} s at most), forwarding to tm.<tenant>.{}.>",
                kTelemetryStream, options_.max_bytes, options_.max_age.count(), options_.site);
    announced = true;
    return true;
  };
  auto teardown = [&] {
    drop_inflight();
    if (sub != nullptr) {
      natsSubscription_Destroy(sub);
      sub = nullptr;
    }
  };
  // The hub did not answer: the batch goes back to the stream, so that
  // while the cut lasts the stream's limits apply to it like to the rest
  // (the oldest are dropped first, not kept in this process's memory). The
  // consumer is made anew (teardown, then setup): it starts again at the
  // stream's first message, in order. Not a NAK: a consumer's redelivery
  // queue does not survive a purge (see `acknowledge`), and newer
  // nats-servers drop from it what lies below the consumer's position.
  auto give_back = [&] {
    teardown();
    sent_through = 0;
  };
  // Acknowledges everything up to `last`: one purge of the stream below
  // last + 1 instead of an acknowledgement per message (each of which the
  // bus handles as a message and a delete from its file store). Everything
  // at or below `last` was delivered to us and forwarded, refused, skipped
  // as a redelivery, or lost to the limits. The consumer's record of what
  // it delivered goes with the purge (all of it: nats-server clears its
  // pending list); the batches still in flight above `last` are ours, held
  // in `inflight`, and what it delivered beyond them is in our
  // subscription's queue and comes with the next fetch. If the purge fails,
  // each message of the confirmed batches is acknowledged instead.
  auto acknowledge = [&](size_t confirmed) {
    jsOptions po;
    jsOptions_Init(&po);
    po.Stream.Purge.Sequence = last + 1;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    const natsStatus s = js_PurgeStream(js, kTelemetryStream, &po, &jerr);
    if (s == NATS_OK) return;
    spdlog::warn("telemetry: {}; acknowledging each message instead",
                 js_error("cannot purge the forwarded messages", s, jerr));
    for (size_t i = 0; i < confirmed; ++i) {
      for (natsMsg* m : inflight[i].msgs) natsMsg_Ack(m, nullptr);
    }
    if (natsConnection_FlushTimeout(conn_, 5000) != NATS_OK) {
      spdlog::warn("telemetry: acknowledgements not confirmed by the bus");
    }
  };
  // The barrier: a nonce out on the barrier subject, its echo back on the ack
  // subject (sync/subjects.h). The subscription is made once; the bus sees
  // it before the first nonce (one connection, in order) and passes the
  // interest up the leaf link ahead of it. Echoes of earlier nonces (a reply
  // that came after its timeout, a second hub of the level) are skipped.
  const std::string barrier = sync::telemetry_barrier_subject(options_.site);
  const std::string barrier_ack = sync::telemetry_barrier_ack_subject(options_.site);
  natsSubscription* acks = nullptr;
  const std::string nonce_prefix = std::to_string(std::random_device{}()) + "-";
  uint64_t nonces = 0;
  // Publishes a new nonce into *nonce; false if it could not be sent.
  auto send_nonce = [&](std::string* nonce) -> bool {
    if (acks == nullptr &&
        natsConnection_SubscribeSync(&acks, conn_, barrier_ack.c_str()) != NATS_OK) {
      acks = nullptr;
      return false;
    }
    *nonce = nonce_prefix + std::to_string(++nonces);
    return natsConnection_PublishString(conn_, barrier.c_str(), nonce->c_str()) == NATS_OK;
  };
  // One barrier, waited for (with nothing in flight).
  auto ask_barrier = [&]() -> bool {
    std::string nonce;
    if (!send_nonce(&nonce)) return false;
    const auto deadline = std::chrono::steady_clock::now() + options_.barrier_timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      natsMsg* echo = nullptr;
      if (natsSubscription_NextMsg(&echo, acks, left.count()) != NATS_OK) return false;
      const bool ours = std::string_view(natsMsg_GetData(echo),
                                         static_cast<size_t>(natsMsg_GetDataLength(echo))) == nonce;
      natsMsg_Destroy(echo);
      if (ours) return true;
    }
  };
  auto refresh_buffered = [&](bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_info < std::chrono::seconds(1)) return;
    last_info = now;
    jsStreamInfo* si = nullptr;
    if (js_GetStreamInfo(&si, js, kTelemetryStream, nullptr, nullptr) != NATS_OK) return;
    // Every sequence before the stream's first is gone: forwarded, or lost
    // to the limits (counted now, not when the uplink is back). A batch in
    // in flight is ours to forward whatever the stream has done since.
    uint64_t gone = si->State.FirstSeq > 0 ? si->State.FirstSeq - 1 : 0;
    if (!inflight.empty()) {
      jsMsgMetaData* meta = nullptr;
      if (natsMsg_GetMetaData(&meta, inflight.front().msgs.front()) == NATS_OK) {
        gone = std::min(gone, meta->Sequence.Stream - 1);
        jsMsgMetaData_Destroy(meta);
      } else {
        gone = 0;
      }
    }
    const uint64_t counted = std::max(last, expired_through);
    std::lock_guard lock(mu_);
    stats_.buffered = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    if (gone > counted) {
      stats_.dropped += gone - counted;
      spdlog::warn(
          "telemetry: {} message(s) up to sequence {} were dropped by the buffer's limits "
          "before they could be forwarded",
          gone - counted, gone);
      expired_through = gone;
    }
  };

  // What the stream has now, up to `batch` messages and batch_max_bytes (many
  // small ones per barrier, a bound on what large ones hold in memory); when
  // nothing is there and `wait`, up to a second for the first. False when
  // the bus failed the fetch (it restarted: its consumer may be gone).
  auto fetch = [&](std::vector<natsMsg*>* out, bool wait) -> bool {
    natsMsgList list{};
    jsFetchRequest req;
    jsFetchRequest_Init(&req);
    req.Batch = options_.batch;
    req.MaxBytes = options_.batch_max_bytes;
    req.NoWait = true;
    req.Expires = 1'000'000'000;  // 1 s, in nanoseconds
    natsStatus s = natsSubscription_FetchRequest(&list, sub, &req);
    if (wait && ((s == NATS_OK && list.Count == 0) || s == NATS_NOT_FOUND || s == NATS_TIMEOUT)) {
      natsMsgList_Destroy(&list);
      list = natsMsgList{};
      req.NoWait = false;
      req.Batch = 1;
      s = natsSubscription_FetchRequest(&list, sub, &req);
    }
    if (s == NATS_OK) {
      for (int i = 0; i < list.Count; ++i) {
        out->push_back(list.Msgs[i]);
        list.Msgs[i] = nullptr;
      }
    }
    natsMsgList_Destroy(&list);
    if (s == NATS_OK || s == NATS_NOT_FOUND || s == NATS_TIMEOUT) return true;
    spdlog::info("telemetry: fetch: {}; setting up again", natsStatus_GetText(s));
    return false;
  };
  // Publishes a fetched batch on the hub's subjects and its nonce after it.
  // False if a publish failed (the connection to the bus is down).
  auto send = [&](Flight* f) -> bool {
    uint64_t seq_after = std::max({last, expired_through, sent_through});
    for (natsMsg* m : f->msgs) {
      jsMsgMetaData* meta = nullptr;
      if (natsMsg_GetMetaData(&meta, m) != NATS_OK) continue;
      const uint64_t seq = meta->Sequence.Stream;
      const int64_t ts_ns = meta->Timestamp;
      jsMsgMetaData_Destroy(meta);
      if (seq <= seq_after) continue;     // seen already (a redelivery)
      f->dropped += seq - seq_after - 1;  // lost to the limits before they were forwarded
      seq_after = seq;
      const char* subject = natsMsg_GetSubject(m);
      const int len = natsMsg_GetDataLength(m);
      f->bytes += len;
      std::string why;
      std::optional<std::string> hub_subject = telemetry_hub_subject(options_.site, subject);
      if (len > options_.max_message) {
        ++f->oversized;
        why = std::to_string(len) + " bytes, over the limit of " +
              std::to_string(options_.max_message) + " (bus.limits.telemetry_max_message)";
      } else if (!hub_subject) {
        ++f->bad_subject;
        why = "not t.<tenant>.d.<device>.telemetry[.<rest>] with DNS-1123 names";
      }
      if (!why.empty()) {
        if (std::chrono::steady_clock::now() - last_refusal_reset > std::chrono::seconds(10)) {
          refusal_logs = 0;
          last_refusal_reset = std::chrono::steady_clock::now();
        }
        if (refusal_logs++ < kMaxRefusalLogs) {
          std::lock_guard lock(mu_);
          spdlog::warn(
              "telemetry: message {} on {} refused: {} ({} refused since start)", seq, subject, why,
              stats_.refused_oversized + stats_.refused_subject + f->oversized + f->bad_subject);
        }
        continue;
      }
      natsMsg* out = nullptr;
      natsStatus s = natsMsg_Create(&out, hub_subject->c_str(), nullptr, natsMsg_GetData(m), len);
      if (s == NATS_OK) s = natsMsgHeader_Set(out, "Canopy-Seq", std::to_string(seq).c_str());
      if (s == NATS_OK) {
        s = natsMsgHeader_Set(out, "Canopy-Time-Ms", std::to_string(ts_ns / 1'000'000).c_str());
      }
      if (s == NATS_OK) s = natsConnection_PublishMsg(conn_, out);
      natsMsg_Destroy(out);
      if (s != NATS_OK) return false;
      ++f->forwarded;
    }
    f->through = seq_after;
    sent_through = seq_after;
    f->asked = std::chrono::steady_clock::now();
    return send_nonce(&f->nonce);
  };
  // The first `confirmed` batches in flight reached the hub.
  auto confirm = [&](size_t confirmed) {
    // Remembered before the acknowledgement, so that a batch delivered
    // again (the acknowledgement lost with a crash or a restart of the bus)
    // is recognised by its sequence numbers and skipped.
    last = inflight[confirmed - 1].through;
    save_last(last);
    acknowledge(confirmed);
    uint64_t dropped = 0;
    for (size_t i = 0; i < confirmed; ++i) {
      Flight& f = inflight.front();
      {
        std::lock_guard lock(mu_);
        stats_.forwarded += f.forwarded;
        stats_.dropped += f.dropped;
        stats_.refused_oversized += f.oversized;
        stats_.refused_subject += f.bad_subject;
      }
      dropped += f.dropped;
      inflight_bytes -= f.bytes;
      destroy_all(&f.msgs);
      inflight.pop_front();
    }
    if (dropped > 0) {
      spdlog::warn(
          "telemetry: {} message(s) before sequence {} were dropped by the buffer's limits",
          dropped, last);
    }
  };
  // Takes the echoes that have come, waiting up to `wait_ms` for the first;
  // returns how many batches in flight they confirm (an echo confirms its
  // batch and every one before it; echoes of given-back batches, or from a
  // second hub of the level, match nothing and are skipped).
  auto take_echoes = [&](int64_t wait_ms) -> size_t {
    size_t confirmed = 0;
    natsMsg* echo = nullptr;
    while (natsSubscription_NextMsg(&echo, acks, wait_ms) == NATS_OK) {
      const std::string_view got(natsMsg_GetData(echo),
                                 static_cast<size_t>(natsMsg_GetDataLength(echo)));
      for (size_t i = confirmed; i < inflight.size(); ++i) {
        if (inflight[i].nonce == got) {
          confirmed = i + 1;
          break;
        }
      }
      natsMsg_Destroy(echo);
      wait_ms = 0;
    }
    return confirmed;
  };

  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    if (sub == nullptr) {
      if (!natsConnection_IsClosed(conn_) &&
          natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED && setup()) {
        continue;
      }
      teardown();
      if (!sleep_for(options_.retry)) break;
      continue;
    }
    // Another batch out while the window has room.
    bool sent = false;
    if (inflight.size() < window && inflight_bytes < options_.batch_max_bytes) {
      Flight f;
      if (!fetch(&f.msgs, inflight.empty())) {
        destroy_all(&f.msgs);
        give_back();
        if (!sleep_for(options_.retry)) break;
        continue;
      }
      refresh_buffered(false);
      log_progress(false);
      if (!f.msgs.empty()) {
        // Before the first publish after a cut: a barrier answered means the
        // hub's subscriptions have reached the site (they precede the reply
        // on the link), so nothing published next is dropped for want of
        // interest.
        bool ok = linked || ask_barrier();
        if (ok) set_uplink(true);
        ok = ok && send(&f);
        inflight_bytes += f.bytes;
        inflight.push_back(std::move(f));
        if (!ok) {
          // Not sent, or no hub: what is out goes back to the stream (a
          // subscriber at the hub may see some of it twice, with the same
          // Canopy-Seq).
          give_back();
          set_uplink(false);
          refresh_buffered(false);
          log_progress(false);
          if (!sleep_for(options_.retry)) break;
          continue;
        }
        sent = true;
      }
    }
    if (inflight.empty()) continue;
    // The echoes: only those already here while another batch may follow at
    // once; else until one comes or the oldest batch's time is up.
    const auto deadline = inflight.front().asked + options_.barrier_timeout;
    int64_t wait_ms = 0;
    if (!sent || inflight.size() >= window || inflight_bytes >= options_.batch_max_bytes) {
      wait_ms = std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::milliseconds>(
                                         deadline - std::chrono::steady_clock::now())
                                         .count());
    }
    if (const size_t confirmed = take_echoes(wait_ms); confirmed > 0) {
      confirm(confirmed);
      refresh_buffered(inflight.empty());
      log_progress(false);
    } else if (std::chrono::steady_clock::now() >= deadline) {
      // Not confirmed in time: every batch out again once the hub answers.
      give_back();
      set_uplink(false);
      if (!sleep_for(options_.retry)) break;
    }
  }
  teardown();
  if (acks != nullptr) natsSubscription_Destroy(acks);
  if (js != nullptr) jsCtx_Destroy(js);
}

}  // namespace canopy::spoke::bus
