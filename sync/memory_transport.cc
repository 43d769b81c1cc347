#include "sync/memory_transport.h"

#include <utility>

namespace canopy::sync {
namespace internal {
// Defined in transport.cc.
Status check_publish_subject(std::string_view subject);
Status check_subscription_pattern(std::string_view pattern);
}  // namespace internal

namespace {

std::pair<std::string, std::string> link_key(std::string_view a, std::string_view b) {
  if (b < a) std::swap(a, b);
  return {std::string(a), std::string(b)};
}

bool valid_probability(double p) { return p >= 0.0 && p <= 1.0; }

}  // namespace

// --- MemoryNetwork ---------------------------------------------------------

MemoryNetwork::MemoryNetwork(uint64_t seed) : seed_(seed), rng_(seed) {}

MemoryNetwork::~MemoryNetwork() {
  for (auto& [name, endpoint] : endpoints_) endpoint->network_ = nullptr;
}

std::unique_ptr<MemoryTransport> MemoryNetwork::endpoint(std::string name) {
  CANOPY_CHECK(endpoints_.find(name) == endpoints_.end());
  std::unique_ptr<MemoryTransport> endpoint(new MemoryTransport(this, name));
  endpoints_.emplace(std::move(name), endpoint.get());
  return endpoint;
}

void MemoryNetwork::set_faults(const MemoryFaults& faults) {
  CANOPY_CHECK(valid_probability(faults.drop));
  CANOPY_CHECK(valid_probability(faults.duplicate) && faults.duplicate < 1.0);
  CANOPY_CHECK(valid_probability(faults.reorder));
  faults_ = faults;
}

void MemoryNetwork::set_connected(std::string_view name, bool connected) {
  if (connected == is_connected(name)) return;
  if (connected) {
    disconnected_.erase(disconnected_.find(name));
  } else {
    disconnected_.emplace(name);
  }
  auto it = endpoints_.find(name);
  if (it != endpoints_.end()) it->second->fire_state(connected);
}

bool MemoryNetwork::is_connected(std::string_view name) const {
  return disconnected_.find(name) == disconnected_.end();
}

void MemoryNetwork::partition(std::string_view a, std::string_view b, bool cut) {
  if (cut) {
    cuts_.insert(link_key(a, b));
  } else {
    cuts_.erase(link_key(a, b));
  }
}

bool MemoryNetwork::partitioned(std::string_view a, std::string_view b) const {
  return cuts_.count(link_key(a, b)) != 0;
}

double MemoryNetwork::unit() {
  // 53 random bits: every double in [0, 1) on a 2^-53 grid.
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

size_t MemoryNetwork::below(size_t n) {
  CANOPY_CHECK(n > 0);
  // Rejection sampling keeps the draw uniform.
  const uint64_t bound = static_cast<uint64_t>(n);
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do {
    x = rng_();
  } while (x >= limit);
  return static_cast<size_t>(x % bound);
}

Status MemoryNetwork::publish(MemoryTransport& from, std::string_view subject,
                              std::string_view data) {
  CANOPY_RETURN_IF_ERROR(internal::check_publish_subject(subject));
  if (data.size() > max_payload_) {
    return resource_exhausted("publish to \"" + std::string(subject) + "\": payload of " +
                              std::to_string(data.size()) + " bytes exceeds max_payload " +
                              std::to_string(max_payload_));
  }
  if (!is_connected(from.name())) {
    return unavailable("publish to \"" + std::string(subject) + "\": endpoint \"" + from.name() +
                       "\" is disconnected");
  }
  if (queue_.size() >= max_in_flight_) {
    return resource_exhausted("publish to \"" + std::string(subject) +
                              "\": " + std::to_string(queue_.size()) +
                              " messages in flight, limit " + std::to_string(max_in_flight_));
  }
  queue_.push_back(
      InFlight{next_seq_++, from.name(), Message{std::string(subject), std::string(data)}});
  ++stats_.published;
  return ok_status();
}

uint64_t MemoryNetwork::subscribe(MemoryTransport& owner, std::string_view pattern,
                                  Transport::Handler handler) {
  const uint64_t id = next_seq_++;
  subscriptions_.emplace(
      id, Subscription{&owner, std::string(pattern), id,
                       std::make_shared<const Transport::Handler>(std::move(handler))});
  return id;
}

void MemoryNetwork::unsubscribe(const MemoryTransport& owner, uint64_t id) {
  auto it = subscriptions_.find(id);
  if (it != subscriptions_.end() && it->second.owner == &owner) subscriptions_.erase(it);
}

void MemoryNetwork::detach(MemoryTransport& endpoint) {
  for (auto it = subscriptions_.begin(); it != subscriptions_.end();) {
    if (it->second.owner == &endpoint) {
      it = subscriptions_.erase(it);
    } else {
      ++it;
    }
  }
  auto it = endpoints_.find(endpoint.name());
  if (it != endpoints_.end() && it->second == &endpoint) endpoints_.erase(it);
}

bool MemoryNetwork::deliver_one() {
  if (queue_.empty()) return false;
  size_t index = 0;
  if (queue_.size() > 1 && chance(faults_.reorder)) {
    index = below(queue_.size());
    if (index != 0) ++stats_.reordered;
  }
  InFlight message = std::move(queue_[index]);
  queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(index));
  if (chance(faults_.drop)) {
    ++stats_.dropped;
    return true;
  }
  if (chance(faults_.duplicate)) {
    queue_.push_back(message);
    ++stats_.duplicated;
  }

  // Receivers are fixed before any handler runs; a handler that unsubscribes
  // another subscription (or itself) stops its later deliveries, and one that
  // subscribes does not receive this message (it was published earlier).
  std::vector<uint64_t> receivers;
  for (const auto& [id, sub] : subscriptions_) {
    if (sub.created_seq < message.seq && subject_matches(sub.pattern, message.message.subject)) {
      receivers.push_back(id);
    }
  }
  if (receivers.empty()) ++stats_.no_subscriber;
  for (uint64_t id : receivers) {
    auto it = subscriptions_.find(id);
    if (it == subscriptions_.end()) continue;
    const std::string& receiver = it->second.owner->name();
    if (!is_connected(receiver) || partitioned(message.from, receiver)) {
      ++stats_.undeliverable;
      continue;
    }
    // Held across the call: the handler may unsubscribe itself.
    std::shared_ptr<const Transport::Handler> handler = it->second.handler;
    ++stats_.handled;
    Message copy = message.message;  // each receiver's own: a handler may take it
    (*handler)(copy);
  }
  return true;
}

size_t MemoryNetwork::deliver_all(size_t max_steps) {
  size_t steps = 0;
  while (steps < max_steps && deliver_one()) ++steps;
  return steps;
}

// --- MemoryTransport -------------------------------------------------------

MemoryTransport::MemoryTransport(MemoryNetwork* network, std::string name)
    : network_(network), name_(std::move(name)) {}

MemoryTransport::~MemoryTransport() {
  if (network_ != nullptr) network_->detach(*this);
}

Status MemoryTransport::publish(std::string_view subject, std::string_view data) {
  if (network_ == nullptr) return unavailable("endpoint \"" + name_ + "\": network is gone");
  return network_->publish(*this, subject, data);
}

StatusOr<uint64_t> MemoryTransport::subscribe(std::string_view pattern, Handler handler) {
  if (network_ == nullptr) return unavailable("endpoint \"" + name_ + "\": network is gone");
  CANOPY_RETURN_IF_ERROR(internal::check_subscription_pattern(pattern));
  if (!handler)
    return invalid_argument("subscribe to \"" + std::string(pattern) + "\": no handler");
  return network_->subscribe(*this, pattern, std::move(handler));
}

void MemoryTransport::unsubscribe(uint64_t id) {
  if (network_ != nullptr) network_->unsubscribe(*this, id);
}

size_t MemoryTransport::max_payload() const {
  return network_ != nullptr ? network_->max_payload() : MemoryNetwork::kDefaultMaxPayload;
}

bool MemoryTransport::connected() const {
  return network_ != nullptr && network_->is_connected(name_);
}

void MemoryTransport::on_state_change(StateHandler handler) {
  if (handler) state_handlers_.push_back(std::make_shared<const StateHandler>(std::move(handler)));
}

void MemoryTransport::fire_state(bool connected) {
  // A copy: a handler may register another one.
  std::vector<std::shared_ptr<const StateHandler>> handlers = state_handlers_;
  for (const auto& handler : handlers) (*handler)(connected);
}

}  // namespace canopy::sync
