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
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <utility>

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

std::string last_error_detail() {
  natsStatus ignored;
  const char* text = nats_GetLastError(&ignored);
  return text != nullptr ? std::string(text) : std::string();
}

// Maps a NATS.c status to a canonical one; `what` names the operation.
Status from_nats(natsStatus s, const std::string& what) {
  if (s == NATS_OK) return ok_status();
  std::string message = what + ": " + natsStatus_GetText(s);
  const std::string detail = last_error_detail();
  if (!detail.empty() && detail != natsStatus_GetText(s)) message += " (" + detail + ")";
  switch (s) {
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_NOT_YET_CONNECTED:
    case NATS_IO_ERROR:
    case NATS_STALE_CONNECTION:
    case NATS_SECURE_CONNECTION_REQUIRED:
    case NATS_DRAINING:
    case NATS_INSUFFICIENT_BUFFER:  // the reconnect buffer is full
      return unavailable(std::move(message));
    case NATS_NOT_PERMITTED:
    case NATS_CONNECTION_AUTH_FAILED:
      return permission_denied(std::move(message));
    case NATS_MAX_PAYLOAD:
    case NATS_NO_MEMORY:
    case NATS_SLOW_CONSUMER:
      return resource_exhausted(std::move(message));
    case NATS_TIMEOUT:
      return Status(StatusCode::kDeadlineExceeded, std::move(message));
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_TIMEOUT:
      return invalid_argument(std::move(message));
    default:
      return internal_error(std::move(message));
  }
}

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
  return ok_status();
}

}  // namespace

// One subscription's handler, and who is running it.
struct NatsTransport::Subscription {
  Subscription(uint64_t id, std::string pattern, Handler handler)
      : id(id), pattern(std::move(pattern)), handler(std::move(handler)) {}

  // Runs the handler unless deactivated.
  void deliver(const Message& message) {
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
  void* key = nullptr;               // in subscriptions(); set before subscribing
  natsSubscription* nsub = nullptr;  // set once subscribed, under Core::mu

  std::mutex mu;  // guards the fields below
  std::condition_variable idle;
  Handler handler;
  bool active = true;
  bool running = false;
  std::thread::id runner;
};

struct NatsTransport::Core {
  explicit Core(NatsOptions o) : options(std::move(o)) {}

  // Calls the state handlers if `connected` differs from what they last saw.
  void report(bool connected) {
    std::lock_guard dispatch(dispatch_mu);
    std::vector<std::shared_ptr<const StateHandler>> handlers;
    {
      std::lock_guard lock(mu);
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

  const NatsOptions options;
  natsConnection* conn = nullptr;
  void* key = nullptr;  // in cores()

  std::mutex mu;  // guards the fields below
  uint64_t next_id = 1;
  std::map<uint64_t, std::shared_ptr<Subscription>> subs;
  std::vector<std::shared_ptr<const StateHandler>> state_handlers;
  bool reported_connected = false;
  bool shutting_down = false;

  // Held while state handlers run, so that the destructor can wait them out.
  std::mutex dispatch_mu;
  std::atomic<uint64_t> slow_consumer_events{0};
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
    natsMsg_Destroy(msg);
    sub->deliver(message);
  }

  static void on_connected(natsConnection* nc, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    spdlog::info("nats: connection \"{}\" connected to {}", core->options.name, connected_url(nc));
    core->report(true);
  }

  static void on_reconnected(natsConnection* nc, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    spdlog::info("nats: connection \"{}\" reconnected to {}", core->options.name,
                 connected_url(nc));
    core->report(true);
  }

  static void on_disconnected(natsConnection*, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    spdlog::warn("nats: connection \"{}\" lost its server; reconnecting", core->options.name);
    core->report(false);
  }

  static void on_closed(natsConnection*, void* closure) {
    std::shared_ptr<Core> core = cores().find(closure);
    if (core == nullptr) return;
    spdlog::error("nats: connection \"{}\" closed; it will not reconnect", core->options.name);
    core->report(false);
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

StatusOr<std::unique_ptr<NatsTransport>> NatsTransport::connect(const NatsOptions& options) {
  std::call_once(nats_open_once, [] { nats_open_status = nats_Open(-1); });
  if (nats_open_status != NATS_OK) return from_nats(nats_open_status, "initializing NATS.c");
  CANOPY_RETURN_IF_ERROR(validate(options));

  natsOptions* raw_options = nullptr;
  if (natsOptions_Create(&raw_options) != NATS_OK) {
    return resource_exhausted("cannot create NATS options");
  }
  std::unique_ptr<natsOptions, OptionsDeleter> opts(raw_options);

  auto core = std::make_shared<Core>(options);
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
  natsStatus s =
      natsOptions_SetServers(opts.get(), servers.data(), static_cast<int>(servers.size()));
  if (s == NATS_OK && !options.name.empty())
    s = natsOptions_SetName(opts.get(), options.name.c_str());
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts.get(), options.max_reconnect);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts.get(), options.reconnect_wait_ms);
  if (s == NATS_OK) {
    s = natsOptions_SetReconnectJitter(opts.get(), options.reconnect_jitter_ms,
                                       options.reconnect_jitter_ms);
  }
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts.get(), options.reconnect_buffer_bytes);
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts.get(), options.connect_timeout_ms);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts.get(), options.ping_interval_ms);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts.get(), options.max_pings_out);
  // The connection-wide default, in force before natsSubscription_SetPendingLimits.
  if (s == NATS_OK) {
    s = natsOptions_SetMaxPendingMsgs(opts.get(), limit_to_int(options.pending_msgs_limit));
  }
  if (s == NATS_OK) {
    s = natsOptions_SetRetryOnFailedConnect(opts.get(), options.retry_on_failed_connect,
                                            &NatsCallbacks::on_connected, core->key);
  }
  if (s == NATS_OK) {
    s = natsOptions_SetDisconnectedCB(opts.get(), &NatsCallbacks::on_disconnected, core->key);
  }
  if (s == NATS_OK) {
    s = natsOptions_SetReconnectedCB(opts.get(), &NatsCallbacks::on_reconnected, core->key);
  }
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts.get(), &NatsCallbacks::on_closed, core->key);
  if (s == NATS_OK)
    s = natsOptions_SetErrorHandler(opts.get(), &NatsCallbacks::on_error, core->key);
  if (s != NATS_OK) return from_nats(s, "setting NATS options");

  natsConnection* conn = nullptr;
  s = natsConnection_Connect(&conn, opts.get());
  if (s == NATS_OK) {
    core->reported_connected = true;
    spdlog::info("nats: connection \"{}\" connected to {}", options.name, connected_url(conn));
  } else if (s == NATS_NOT_YET_CONNECTED) {
    spdlog::warn("nats: connection \"{}\": no server reachable yet; retrying in the background",
                 options.name);
  } else {
    return from_nats(s, "connecting to " + options.urls.front() +
                            (options.urls.size() > 1 ? " and others" : ""));
  }
  core->conn = conn;
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
  // A state handler running now finishes; none starts after.
  { std::lock_guard dispatch(core_->dispatch_mu); }
  for (auto& [id, sub] : subs) {
    sub->deactivate();
    NatsCallbacks::subscriptions().remove(sub->key);
    natsSubscription_Destroy(sub->nsub);
  }
  NatsCallbacks::cores().remove(core_->key);
  // Flushes what is buffered (up to 500 ms), closes, and frees once NATS.c's
  // own threads let go. Callbacks still queued find no core and return.
  natsConnection_Destroy(core_->conn);
}

Status NatsTransport::publish(std::string_view subject, std::string_view data) {
  CANOPY_RETURN_IF_ERROR(internal::check_publish_subject(subject));
  const std::string subject_string(subject);
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

  natsSubscription* nsub = nullptr;
  natsStatus s = natsConnection_Subscribe(&nsub, core_->conn, sub->pattern.c_str(),
                                          &NatsCallbacks::on_message, sub->key);
  if (s == NATS_OK) {
    s = natsSubscription_SetPendingLimits(nsub, limit_to_int(core_->options.pending_msgs_limit),
                                          limit_to_int(core_->options.pending_bytes_limit));
  }
  if (s != NATS_OK) {
    Status status = from_nats(s, "subscribe to \"" + sub->pattern + "\"");
    sub->deactivate();
    NatsCallbacks::subscriptions().remove(sub->key);
    if (nsub != nullptr) natsSubscription_Destroy(nsub);
    return status;
  }
  std::lock_guard lock(core_->mu);
  sub->nsub = nsub;
  core_->subs.emplace(id, std::move(sub));
  return id;
}

void NatsTransport::unsubscribe(uint64_t id) {
  std::shared_ptr<Subscription> sub;
  {
    std::lock_guard lock(core_->mu);
    auto it = core_->subs.find(id);
    if (it == core_->subs.end()) return;
    sub = std::move(it->second);
    core_->subs.erase(it);
  }
  sub->deactivate();
  NatsCallbacks::subscriptions().remove(sub->key);
  // Removes the interest at the server; messages already queued for the
  // subscription are dropped by NATS.c (or ignored by a deactivated handler).
  natsSubscription_Destroy(sub->nsub);
}

size_t NatsTransport::max_payload() const {
  const int64_t server_max = natsConnection_GetMaxPayload(core_->conn);
  return server_max > 0 ? static_cast<size_t>(server_max) : kDefaultMaxPayload;
}

bool NatsTransport::connected() const {
  return natsConnection_Status(core_->conn) == NATS_CONN_STATUS_CONNECTED;
}

void NatsTransport::on_state_change(StateHandler handler) {
  if (!handler) return;
  std::lock_guard lock(core_->mu);
  core_->state_handlers.push_back(std::make_shared<const StateHandler>(std::move(handler)));
}

Status NatsTransport::flush(std::chrono::milliseconds timeout) {
  if (!connected()) return unavailable("flush: not connected");
  const int64_t ms = std::max<int64_t>(1, timeout.count());
  return from_nats(natsConnection_FlushTimeout(core_->conn, ms), "flush");
}

uint64_t NatsTransport::slow_consumer_events() const { return core_->slow_consumer_events.load(); }

uint64_t NatsTransport::dropped_messages() const {
  uint64_t total = 0;
  std::lock_guard lock(core_->mu);
  for (const auto& [id, sub] : core_->subs) {
    int64_t dropped = 0;
    if (natsSubscription_GetDropped(sub->nsub, &dropped) == NATS_OK && dropped > 0) {
      total += static_cast<uint64_t>(dropped);
    }
  }
  return total;
}

}  // namespace canopy::sync
