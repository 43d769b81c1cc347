#include "sync/nats_transport.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "sync/nats_status.h"
#include "sync/nats_tls.h"

namespace canopy::sync {
namespace internal {
// Defined in transport.cc.
Status check_publish_subject(std::string_view subject);
Status check_subscription_pattern(std::string_view pattern);
}  // namespace internal

// How NATS.c's callbacks find their objects.
//
// NATS.c runs connection callbacks on its library thread and message
// callbacks on subscription threads, possibly after natsConnection_Destroy()
// or natsSubscription_Destroy() returned (a callback already queued still
// runs). So callbacks get no pointer to our objects, only a key, which they
// look up here: a transport or subscription that is gone is simply not found.
// A found object is held by shared_ptr for the length of the callback.
namespace {

template <typename T>
class CallbackRegistry {
 public:
  void* add(std::shared_ptr<T> object) {
    std::unique_lock lock(mu_);
    const uint64_t key = next_key_++;
    objects_.emplace(key, std::move(object));
    return reinterpret_cast<void*>(static_cast<uintptr_t>(key));
  }
  std::shared_ptr<T> find(void* closure) const {
    const auto key = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(closure));
    std::shared_lock lock(mu_);
    auto it = objects_.find(key);
    return it == objects_.end() ? nullptr : it->second.lock();
  }
  void remove(void* closure) {
    const auto key = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(closure));
    std::unique_lock lock(mu_);
    objects_.erase(key);
  }

 private:
  mutable std::shared_mutex mu_;
  uint64_t next_key_ = 1;
  std::unordered_map<uint64_t, std::weak_ptr<T>> objects_;
};

std::once_flag nats_open_once;
natsStatus nats_open_status = NATS_OK;

using internal::from_nats;
using internal::last_error_detail;

struct OptionsDeleter {
  void operator()(natsOptions* options) const { natsOptions_Destroy(options); }
};

std::string connected_url(natsConnection* nc) {
  char buffer[256];
  if (natsConnection_GetConnectedUrl(nc, buffer, sizeof(buffer)) == NATS_OK && buffer[0] != '\0') {
    return buffer;
  }
  return "(no server)";
}

int limit_to_int(int64_t limit) { return limit < 0 ? -1 : static_cast<int>(limit); }

Status validate(const NatsOptions& o) {
  if (o.urls.empty()) return invalid_argument("NatsOptions.urls is empty");
  for (const auto& url : o.urls) {
    if (url.empty()) return invalid_argument("NatsOptions.urls holds an empty URL");
  }
  auto non_negative = [](int value, const char* field) {
    return value >= 0 ? ok_status()
                      : invalid_argument(std::string("NatsOptions.") + field + " is " +
                                         std::to_string(value) + ", must be >= 0");
  };
  CANOPY_RETURN_IF_ERROR(non_negative(o.reconnect_wait_ms, "reconnect_wait_ms"));
  CANOPY_RETURN_IF_ERROR(non_negative(o.reconnect_jitter_ms, "reconnect_jitter_ms"));
  CANOPY_RETURN_IF_ERROR(non_negative(o.reconnect_buffer_bytes, "reconnect_buffer_bytes"));
  CANOPY_RETURN_IF_ERROR(non_negative(o.connect_timeout_ms, "connect_timeout_ms"));
  CANOPY_RETURN_IF_ERROR(non_negative(o.ping_interval_ms, "ping_interval_ms"));
  CANOPY_RETURN_IF_ERROR(non_negative(o.max_pings_out, "max_pings_out"));
  auto pending = [](int64_t value, const char* field) {
    return value != 0 && value <= INT_MAX
               ? ok_status()
               : invalid_argument(std::string("NatsOptions.") + field + " is " +
                                  std::to_string(value) +
                                  ", must be in 1..INT_MAX or negative (no limit)");
  };
  CANOPY_RETURN_IF_ERROR(pending(o.pending_msgs_limit, "pending_msgs_limit"));
  CANOPY_RETURN_IF_ERROR(pending(o.pending_bytes_limit, "pending_bytes_limit"));
  return internal::validate_tls(o);
}

}  // namespace

// One subscription's handler, and who is running it.
struct NatsTransport::Subscription {
  Subscription(uint64_t id, std::string pattern, Handler handler)
      : id(id), pattern(std::move(pattern)), handler(std::move(handler)) {}

  // Runs the handler unless deactivated.
  void deliver(Message& message) {
    {
      std::lock_guard lock(mu);
      if (!active) return;
      running = true;
      runner = std::this_thread::get_id();
    }
    try {
      handler(message);
    } catch (const std::exception& e) {
      spdlog::error("nats: handler of \"{}\" threw on \"{}\": {}", pattern, message.subject,
                    e.what());
    } catch (...) {
      spdlog::error("nats: handler of \"{}\" threw on \"{}\"", pattern, message.subject);
    }
    std::lock_guard lock(mu);
    running = false;
    runner = std::thread::id();
    // Deactivated from inside the handler: release its captures now.
    if (!active) handler = nullptr;
    idle.notify_all();
  }

  // No call of the handler starts after this; one running on another thread
  // is waited for.
  void deactivate() {
    std::unique_lock lock(mu);
    active = false;
    if (running && runner == std::this_thread::get_id()) return;  // deliver() releases it
    idle.wait(lock, [this] { return !running; });
    handler = nullptr;
  }

  const uint64_t id;
  const std::string pattern;
  void* key = nullptr;  // in subscriptions(); set before subscribing
  // On the current connection; null while it has none (the connection was
  // closed when it subscribed). Guarded by Core::mu.
  natsSubscription* nsub = nullptr;

  std::mutex mu;  // guards the fields below
  std::condition_variable idle;
  Handler handler;
  bool active = true;
  bool running = false;
  std::thread::id runner;
};

struct NatsTransport::Core {
  explicit Core(NatsOptions o) : options(std::move(o)) {}

  // Tells the state handlers the current connection's state if it differs
  // from what they last saw. Called after every event of every connection
  // and after a connection is replaced; it reads the state instead of
  // trusting the event, so that a late event of a replaced connection
  // changes nothing.
  void report_state() {
    std::lock_guard dispatch(dispatch_mu);
    bool connected;
    {
      std::shared_lock conn_lock(conn_mu);
      connected = natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED;
    }
    std::vector<std::shared_ptr<const StateHandler>> handlers;
    {
      std::lock_guard lock(mu);
      if (connected) {
        up_since_open = true;
        last_error.clear();
      }
      if (shutting_down || connected == reported_connected) return;
      reported_connected = connected;
      handlers = state_handlers;
    }
    for (const auto& handler : handlers) {
      try {
        (*handler)(connected);
      } catch (const std::exception& e) {
        spdlog::error("nats: state handler threw: {}", e.what());
      } catch (...) {
        spdlog::error("nats: state handler threw");
      }
    }
  }

  // Wakes the reopening thread to look at the current connection.
  void check_connection() {
    {
      std::lock_guard lock(mu);
      reopen_check = true;
    }
    reopen_cv.notify_all();
  }

  // Records why connecting failed, logging it when the reason changes.
  void set_last_error(std::string why) {
    {
      std::lock_guard lock(mu);
      if (why == last_error) return;
      last_error = why;
    }
    spdlog::warn("nats: connection \"{}\" cannot connect: {}", options.name, why);
  }

  // One attempt of the probe connection while the transport's own is not
  // connected; records its error (see the header).
  void probe_if_down();

  bool is_current(natsConnection* nc) const {
    std::shared_lock conn_lock(conn_mu);
    return nc == conn;
  }

  // One connection attempt with nats_options (up to connect_timeout_ms); with
  // retry_on_failed_connect, a connection that NATS.c goes on connecting in
  // the background.
  StatusOr<natsConnection*> open_connection() const;
  // Subscribes `sub` on `connection` with the pending limits.
  StatusOr<natsSubscription*> subscribe_on(natsConnection* connection,
                                           const Subscription& sub) const;
  // Makes `fresh` the current connection, subscribes every subscription on
  // it, and destroys the connection it replaces.
  void replace_connection(natsConnection* fresh);
  // The reopening thread: replaces a closed connection, after a backoff,
  // until the transport shuts down.
  void run_reopener();

  const NatsOptions options;
  std::unique_ptr<natsOptions, OptionsDeleter> nats_options;   // every connection's
  std::unique_ptr<natsOptions, OptionsDeleter> probe_options;  // no retries, no callbacks
  void* key = nullptr;                                         // in cores()
  std::function<uint64_t()> random;                            // the reopening thread's

  // Shared by calls on `conn`, exclusive to replace it. Taken before `mu`.
  mutable std::shared_mutex conn_mu;
  natsConnection* conn = nullptr;  // null until a connection could be created

  std::mutex mu;  // guards the fields below, and every Subscription::nsub
  uint64_t next_id = 1;
  std::map<uint64_t, std::shared_ptr<Subscription>> subs;
  std::vector<std::shared_ptr<const StateHandler>> state_handlers;
  bool reported_connected = false;
  bool shutting_down = false;
  bool reopen_check = true;     // the reopening thread has something to look at
  bool up_since_open = false;   // the current connection has been connected
  uint64_t replaced_drops = 0;  // messages dropped by subscriptions on replaced connections
  std::string last_error;       // why connecting failed; empty once connected
  std::condition_variable reopen_cv;

  // Runs run_reopener(); joined by ~NatsTransport.
  std::thread reopener;

  // Held while state handlers run, so that the destructor can wait them out.
  std::mutex dispatch_mu;
  std::atomic<uint64_t> slow_consumer_events{0};
  std::atomic<uint64_t> connections_replaced{0};
};

// NATS.c's callbacks (a friend of NatsTransport, for its nested types).
struct NatsCallbacks {
  using Core = NatsTransport::Core;
  using Subscription = NatsTransport::Subscription;

  // Never destroyed: NATS.c threads may call back during static destruction.
  static CallbackRegistry<Core>& cores() {
    static auto* registry = new CallbackRegistry<Core>();
    return *registry;
  }
  static CallbackRegistry<Subscription>& subscriptions() {
    static auto* registry = new CallbackRegistry<Subscription>();
    return *registry;
  }

  static void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    std::shared_ptr<Subscription> sub = subscriptions().find(closure);
    if (sub == nullptr) {
      natsMsg_Destroy(msg);
      return;
    }
    Message message;
    message.subject = natsMsg_GetSubject(msg);
    const char* data = natsMsg_GetData(msg);
    const int length = natsMsg_GetDataLength(msg);
    if (data != nullptr && length > 0) message.data.assign(data, static_cast<size_t>(length));
    const char* reply = natsMsg_GetReply(msg);
    NatsTransport::current_reply() = reply != nullptr ? reply : "";
    natsMsg_Destroy(msg);
    sub->deliver(message);
    NatsTransport::current_reply().clear();
  }

  static void on_connected(natsConnection* nc, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    spdlog::info("nats: connection \"{}\" connected to {}", core->options.name, connected_url(nc));
    core->report_state();
  }

  static void on_reconnected(natsConnection* nc, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    spdlog::info("nats: connection \"{}\" reconnected to {}", core->options.name,
                 connected_url(nc));
    core->report_state();
  }

  static void on_disconnected(natsConnection* nc, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    if (core->is_current(nc)) {
      spdlog::warn("nats: connection \"{}\" lost its server; reconnecting", core->options.name);
    }
    core->report_state();
  }

  static void on_closed(natsConnection* nc, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    // The connection being replaced, or the one the reopening thread is
    // opening (not current yet: it looks again once it is).
    if (core->is_current(nc)) {
      const char* text = nullptr;
      const natsStatus last = natsConnection_GetLastError(nc, &text);
      std::string why;
      if (last != NATS_OK)
        why = std::string(": ") + (text != nullptr ? text : natsStatus_GetText(last));
      spdlog::warn("nats: connection \"{}\" closed{}; a new one will be opened", core->options.name,
                   why);
    }
    core->report_state();
    core->check_connection();
  }

  static void on_error(natsConnection*, natsSubscription* nsub, natsStatus err, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    if (err == NATS_SLOW_CONSUMER) core->slow_consumer_events.fetch_add(1);
    // NATS.c 3.4 does not keep `nsub` alive for this callback: it is only
    // used while it is in `subs`, which holds it.
    std::string pattern = "(unknown)";
    int64_t dropped = -1;
    if (nsub != nullptr) {
      std::lock_guard lock(core->mu);
      for (const auto& [id, sub] : core->subs) {
        if (sub->nsub == nsub) {
          pattern = sub->pattern;
          natsSubscription_GetDropped(nsub, &dropped);
          break;
        }
      }
    }
    if (err == NATS_SLOW_CONSUMER) {
      spdlog::warn(
          "nats: connection \"{}\": slow consumer on \"{}\": handler fell behind the pending "
          "limits ({} messages, {} bytes); {} messages dropped so far",
          core->options.name, pattern, core->options.pending_msgs_limit,
          core->options.pending_bytes_limit, dropped);
    } else {
      spdlog::warn("nats: connection \"{}\": asynchronous error {}{}", core->options.name,
                   natsStatus_GetText(err), nsub != nullptr ? " on \"" + pattern + "\"" : "");
    }
  }
};

StatusOr<natsConnection*> NatsTransport::Core::open_connection() const {
  natsConnection* connection = nullptr;
  const natsStatus s = natsConnection_Connect(&connection, nats_options.get());
  if (s == NATS_OK) {
    spdlog::info("nats: connection \"{}\" connected to {}", options.name,
                 connected_url(connection));
    return connection;
  }
  if (s == NATS_NOT_YET_CONNECTED) {
    const std::string detail = last_error_detail();
    spdlog::warn("nats: connection \"{}\": no server answers yet{}; retrying in the background",
                 options.name, detail.empty() ? "" : " (" + detail + ")");
    return connection;
  }
  return from_nats(
      s, "connecting to " + options.urls.front() + (options.urls.size() > 1 ? " and others" : ""));
}

StatusOr<natsSubscription*> NatsTransport::Core::subscribe_on(natsConnection* connection,
                                                              const Subscription& sub) const {
  natsSubscription* nsub = nullptr;
  natsStatus s = natsConnection_Subscribe(&nsub, connection, sub.pattern.c_str(),
                                          &NatsCallbacks::on_message, sub.key);
  if (s == NATS_OK) {
    s = natsSubscription_SetPendingLimits(nsub, limit_to_int(options.pending_msgs_limit),
                                          limit_to_int(options.pending_bytes_limit));
  }
  if (s != NATS_OK) {
    Status status = from_nats(s, "subscribe to \"" + sub.pattern + "\"");
    natsSubscription_Destroy(nsub);
    return status;
  }
  return nsub;
}

void NatsTransport::Core::replace_connection(natsConnection* fresh) {
  natsConnection* replaced = nullptr;
  std::vector<natsSubscription*> replaced_subs;
  {
    std::unique_lock conn_lock(conn_mu);
    std::lock_guard lock(mu);
    if (shutting_down) {
      replaced = fresh;
    } else {
      replaced = conn;
      conn = fresh;
      up_since_open = false;
      connections_replaced.fetch_add(1);
      for (auto& [id, sub] : subs) {
        if (sub->nsub != nullptr) {
          int64_t dropped = 0;
          if (natsSubscription_GetDropped(sub->nsub, &dropped) == NATS_OK && dropped > 0) {
            replaced_drops += static_cast<uint64_t>(dropped);
          }
          replaced_subs.push_back(sub->nsub);
          sub->nsub = nullptr;
        }
        StatusOr<natsSubscription*> nsub = subscribe_on(fresh, *sub);
        if (nsub.ok()) {
          sub->nsub = *nsub;
        } else if (!natsConnection_IsClosed(fresh)) {
          // Not expected on an open connection; the next connection retries.
          spdlog::error("nats: connection \"{}\": {}", options.name, nsub.status().to_string());
        }  // else `fresh` closed already: the next connection subscribes it
      }
    }
  }
  for (natsSubscription* nsub : replaced_subs) natsSubscription_Destroy(nsub);
  // Closed already (or never current): no flush, quick.
  natsConnection_Destroy(replaced);
  report_state();
}

void NatsTransport::Core::probe_if_down() {
  {
    std::shared_lock conn_lock(conn_mu);
    if (natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED) return;
  }
  natsConnection* probe = nullptr;
  const natsStatus s = natsConnection_Connect(&probe, probe_options.get());
  if (s == NATS_OK) {
    natsConnection_Destroy(probe);
    return;
  }
  const std::string why = from_nats(s, "connecting to " + options.urls.front() +
                                           (options.urls.size() > 1 ? " and others" : ""))
                              .message();
  set_last_error(internal::explain_tls_failure(options, s, why));
}

void NatsTransport::Core::run_reopener() {
  uint32_t failures = 0;
  std::unique_lock lock(mu);
  while (true) {
    const bool woken =
        reopen_cv.wait_for(lock, kProbeEvery, [this] { return shutting_down || reopen_check; });
    if (shutting_down) return;
    if (!woken) {
      lock.unlock();
      probe_if_down();
      lock.lock();
      continue;
    }
    reopen_check = false;
    lock.unlock();
    bool closed;
    {
      std::shared_lock conn_lock(conn_mu);
      closed = natsConnection_IsClosed(conn);  // true for a null connection
    }
    // NATS.c closed it without saying why: ask.
    if (closed) probe_if_down();
    lock.lock();
    if (!closed) continue;
    if (up_since_open) failures = 0;
    up_since_open = false;
    const std::chrono::milliseconds delay = reopen_delay(failures, random());
    failures = std::min<uint32_t>(failures + 1, 64);  // past the cap anyway
    spdlog::info("nats: connection \"{}\": opening a new connection in {} ms", options.name,
                 delay.count());
    if (reopen_cv.wait_for(lock, delay, [this] { return shutting_down; })) return;
    lock.unlock();
    StatusOr<natsConnection*> fresh = open_connection();
    if (fresh.ok()) {
      replace_connection(*fresh);
    } else {
      // With what is wrong with our own certificate, if anything: the
      // probe's reason and this one must not take turns saying less.
      set_last_error(internal::explain_tls_failure(options, NATS_OK, fresh.status().message()));
    }
    lock.lock();
    // The new connection may have closed already (its event came while it
    // was not current), or none was made: look at once.
    reopen_check = true;
  }
}

std::chrono::milliseconds NatsTransport::reopen_delay(uint32_t failures, uint64_t random) {
  const int64_t min = kReopenBackoffMin.count();
  const int64_t max = kReopenBackoffMax.count();
  int64_t base = min;
  for (uint32_t i = 0; i < failures && base < max; ++i) base *= 2;
  base = std::min(base, max);
  const int64_t half = base / 2;
  return std::chrono::milliseconds(half +
                                   static_cast<int64_t>(random % static_cast<uint64_t>(half + 1)));
}

StatusOr<std::unique_ptr<NatsTransport>> NatsTransport::connect(const NatsOptions& options) {
  std::call_once(nats_open_once, [] { nats_open_status = nats_Open(-1); });
  if (nats_open_status != NATS_OK) return from_nats(nats_open_status, "initializing NATS.c");
  CANOPY_RETURN_IF_ERROR(validate(options));

  natsOptions* raw_options = nullptr;
  if (natsOptions_Create(&raw_options) != NATS_OK) {
    return resource_exhausted("cannot create NATS options");
  }
  auto core = std::make_shared<Core>(options);
  core->nats_options.reset(raw_options);
  natsOptions* opts = raw_options;
  if (options.random) {
    core->random = options.random;
  } else {
    core->random = [rng = std::mt19937_64(std::random_device{}())]() mutable { return rng(); };
  }
  core->key = NatsCallbacks::cores().add(core);
  // Until connect() returns a transport, the core is ours to forget.
  struct Forget {
    void* key;
    ~Forget() {
      if (key != nullptr) NatsCallbacks::cores().remove(key);
    }
  } forget{core->key};

  std::vector<const char*> servers;
  for (const auto& url : options.urls) servers.push_back(url.c_str());
  // What the connections and the probe have in common: where, who, TLS.
  auto common = [&](natsOptions* o, const std::string& name) -> Status {
    natsStatus cs = natsOptions_SetServers(o, servers.data(), static_cast<int>(servers.size()));
    if (cs == NATS_OK && !name.empty()) cs = natsOptions_SetName(o, name.c_str());
    if (cs == NATS_OK && !options.user.empty()) {
      cs = natsOptions_SetUserInfo(o, options.user.c_str(), options.password.c_str());
    }
    if (cs == NATS_OK) cs = natsOptions_SetTimeout(o, options.connect_timeout_ms);
    if (cs != NATS_OK) return from_nats(cs, "setting NATS options");
    return internal::apply_tls(o, options);
  };
  CANOPY_RETURN_IF_ERROR(common(opts, options.name));
  if (std::string problem = internal::client_cert_problem(options); !problem.empty()) {
    spdlog::error("nats: connection \"{}\": {}; the server will refuse it", options.name, problem);
    // Known before the first attempt: /healthz says it at once.
    std::lock_guard lock(core->mu);
    core->last_error = problem + "; the server will refuse it";
  }
  natsOptions* raw_probe = nullptr;
  if (natsOptions_Create(&raw_probe) != NATS_OK) {
    return resource_exhausted("cannot create NATS options");
  }
  core->probe_options.reset(raw_probe);
  CANOPY_RETURN_IF_ERROR(common(raw_probe, options.name.empty() ? "" : options.name + "-probe"));
  if (natsOptions_SetAllowReconnect(raw_probe, false) != NATS_OK) {
    return internal_error("cannot set up the NATS probe options");
  }
  natsStatus s = NATS_OK;
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, options.max_reconnect);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, options.reconnect_wait_ms);
  if (s == NATS_OK) {
    s = natsOptions_SetReconnectJitter(opts, options.reconnect_jitter_ms,
                                       options.reconnect_jitter_ms);
  }
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, options.reconnect_buffer_bytes);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts, options.ping_interval_ms);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts, options.max_pings_out);
  // The connection-wide default, in force before natsSubscription_SetPendingLimits.
  if (s == NATS_OK) {
    s = natsOptions_SetMaxPendingMsgs(opts, limit_to_int(options.pending_msgs_limit));
  }
  if (s == NATS_OK) {
    s = natsOptions_SetRetryOnFailedConnect(opts, options.retry_on_failed_connect,
                                            &NatsCallbacks::on_connected, core->key);
  }
  if (s == NATS_OK) {
    s = natsOptions_SetDisconnectedCB(opts, &NatsCallbacks::on_disconnected, core->key);
  }
  if (s == NATS_OK) {
    s = natsOptions_SetReconnectedCB(opts, &NatsCallbacks::on_reconnected, core->key);
  }
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts, &NatsCallbacks::on_closed, core->key);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts, &NatsCallbacks::on_error, core->key);
  if (s != NATS_OK) return from_nats(s, "setting NATS options");

  StatusOr<natsConnection*> conn = core->open_connection();
  if (conn.ok()) {
    // NATS.c's callbacks may run already.
    std::unique_lock conn_lock(core->conn_mu);
    std::lock_guard lock(core->mu);
    core->conn = *conn;
    core->reported_connected = natsConnection_Status(*conn) == NATS_CONN_STATUS_CONNECTED;
  } else if (!options.retry_on_failed_connect) {
    return conn.status();
  } else {
    // No connection object at all (NATS.c could not even start retrying):
    // the reopening thread makes one.
    spdlog::warn("nats: connection \"{}\": {}; retrying", options.name, conn.status().to_string());
  }
  // It looks at the connection at once: NATS.c may have closed it already.
  Core* raw_core = core.get();
  core->reopener = std::thread([raw_core] { raw_core->run_reopener(); });
  forget.key = nullptr;
  return std::unique_ptr<NatsTransport>(new NatsTransport(std::move(core)));
}

NatsTransport::NatsTransport(std::shared_ptr<Core> core) : core_(std::move(core)) {}

NatsTransport::~NatsTransport() {
  std::map<uint64_t, std::shared_ptr<Subscription>> subs;
  {
    std::lock_guard lock(core_->mu);
    core_->shutting_down = true;
    subs.swap(core_->subs);
  }
  // Waits out a connection attempt in progress; no connection is replaced
  // after this.
  core_->reopen_cv.notify_all();
  core_->reopener.join();
  // A state handler running now finishes; none starts after.
  { std::lock_guard dispatch(core_->dispatch_mu); }
  for (auto& [id, sub] : subs) {
    sub->deactivate();
    NatsCallbacks::subscriptions().remove(sub->key);
    natsSubscription_Destroy(sub->nsub);  // null-safe
  }
  NatsCallbacks::cores().remove(core_->key);
  // Flushes what is buffered (up to 500 ms), closes, and frees once NATS.c's
  // own threads let go. Callbacks still queued find no core and return.
  natsConnection_Destroy(core_->conn);  // null-safe
}

std::string& NatsTransport::current_reply() {
  thread_local std::string reply;
  return reply;
}

Status NatsTransport::publish(std::string_view subject, std::string_view data) {
  CANOPY_RETURN_IF_ERROR(internal::check_publish_subject(subject));
  const std::string subject_string(subject);
  std::shared_lock conn_lock(core_->conn_mu);
  if (core_->conn == nullptr) {
    return unavailable("publish to \"" + subject_string + "\": no connection to NATS yet");
  }
  const int64_t server_max = natsConnection_GetMaxPayload(core_->conn);
  // Before the first connection NATS.c checks nothing; hold to the default.
  if (server_max <= 0 && data.size() > kDefaultMaxPayload) {
    return resource_exhausted(
        "publish to \"" + subject_string + "\": payload of " + std::to_string(data.size()) +
        " bytes exceeds the default max_payload of " + std::to_string(kDefaultMaxPayload) +
        " bytes (not connected yet, the server's limit is unknown)");
  }
  if (data.size() > static_cast<size_t>(INT_MAX)) {
    return resource_exhausted("publish to \"" + subject_string + "\": payload of " +
                              std::to_string(data.size()) + " bytes is too large");
  }
  const natsStatus s = natsConnection_Publish(core_->conn, subject_string.c_str(), data.data(),
                                              static_cast<int>(data.size()));
  if (s == NATS_MAX_PAYLOAD) {
    return resource_exhausted("publish to \"" + subject_string + "\": payload of " +
                              std::to_string(data.size()) +
                              " bytes exceeds the server's max_payload of " +
                              std::to_string(natsConnection_GetMaxPayload(core_->conn)) + " bytes");
  }
  return from_nats(s, "publish to \"" + subject_string + "\"");
}

StatusOr<uint64_t> NatsTransport::subscribe(std::string_view pattern, Handler handler) {
  CANOPY_RETURN_IF_ERROR(internal::check_subscription_pattern(pattern));
  if (!handler)
    return invalid_argument("subscribe to \"" + std::string(pattern) + "\": no handler");
  uint64_t id;
  {
    std::lock_guard lock(core_->mu);
    id = core_->next_id++;
  }
  auto sub = std::make_shared<Subscription>(id, std::string(pattern), std::move(handler));
  sub->key = NatsCallbacks::subscriptions().add(sub);

  // Held until the subscription is in `subs`, so that a connection replaced
  // meanwhile is replaced after, and subscribes it again.
  std::shared_lock conn_lock(core_->conn_mu);
  natsSubscription* nsub = nullptr;
  if (!natsConnection_IsClosed(core_->conn)) {
    StatusOr<natsSubscription*> subscribed = core_->subscribe_on(core_->conn, *sub);
    // Closed since: the next connection subscribes it.
    if (!subscribed.ok() && !natsConnection_IsClosed(core_->conn)) {
      sub->deactivate();
      NatsCallbacks::subscriptions().remove(sub->key);
      return subscribed.status();
    }
    if (subscribed.ok()) nsub = *subscribed;
  }
  std::lock_guard lock(core_->mu);
  sub->nsub = nsub;
  core_->subs.emplace(id, std::move(sub));
  return id;
}

void NatsTransport::unsubscribe(uint64_t id) {
  std::shared_ptr<Subscription> sub;
  natsSubscription* nsub = nullptr;
  {
    std::lock_guard lock(core_->mu);
    auto it = core_->subs.find(id);
    if (it == core_->subs.end()) return;
    sub = std::move(it->second);
    core_->subs.erase(it);
    nsub = std::exchange(sub->nsub, nullptr);
  }
  sub->deactivate();
  NatsCallbacks::subscriptions().remove(sub->key);
  // Removes the interest at the server; messages already queued for the
  // subscription are dropped by NATS.c (or ignored by a deactivated handler).
  natsSubscription_Destroy(nsub);
}

size_t NatsTransport::max_payload() const {
  std::shared_lock conn_lock(core_->conn_mu);
  const int64_t server_max = core_->conn != nullptr ? natsConnection_GetMaxPayload(core_->conn) : 0;
  return server_max > 0 ? static_cast<size_t>(server_max) : kDefaultMaxPayload;
}

bool NatsTransport::connected() const {
  std::shared_lock conn_lock(core_->conn_mu);
  return natsConnection_Status(core_->conn) == NATS_CONN_STATUS_CONNECTED;
}

void NatsTransport::on_state_change(StateHandler handler) {
  if (!handler) return;
  std::lock_guard lock(core_->mu);
  core_->state_handlers.push_back(std::make_shared<const StateHandler>(std::move(handler)));
}

Status NatsTransport::flush(std::chrono::milliseconds timeout) {
  const int64_t ms = std::max<int64_t>(1, timeout.count());
  std::shared_lock conn_lock(core_->conn_mu);
  if (natsConnection_Status(core_->conn) != NATS_CONN_STATUS_CONNECTED) {
    return unavailable("flush: not connected");
  }
  return from_nats(natsConnection_FlushTimeout(core_->conn, ms), "flush");
}

uint64_t NatsTransport::slow_consumer_events() const { return core_->slow_consumer_events.load(); }

uint64_t NatsTransport::connections_replaced() const { return core_->connections_replaced.load(); }

std::string NatsTransport::last_error() const {
  std::lock_guard lock(core_->mu);
  return core_->last_error;
}

uint64_t NatsTransport::dropped_messages() const {
  std::lock_guard lock(core_->mu);
  uint64_t total = core_->replaced_drops;
  for (const auto& [id, sub] : core_->subs) {
    int64_t dropped = 0;
    if (sub->nsub != nullptr && natsSubscription_GetDropped(sub->nsub, &dropped) == NATS_OK &&
        dropped > 0) {
      total += static_cast<uint64_t>(dropped);
    }
  }
  return total;
}

}  // namespace canopy::sync
