// MemoryNetwork and MemoryTransport: a deterministic in-memory message bus for
// simulation tests.
//
// A MemoryNetwork stands for a NATS server and the links to it. Endpoints
// (MemoryTransport, one per simulated node, created by endpoint()) publish
// into the network's queue of in-flight messages; nothing is delivered until
// the test calls deliver_one() or deliver_all(), which run the matching
// subscribers' handlers synchronously on the calling thread. Handlers may
// publish, subscribe and unsubscribe from inside a delivery.
//
// Faults, each drawn from the network's seeded generator:
//   - drop:      a message taken from the queue is lost;
//   - duplicate: a message taken from the queue is delivered and a copy of it
//                goes back to the end of the queue (the copy may duplicate
//                again);
//   - reorder:   deliver_one() takes a random in-flight message instead of
//                the oldest.
// And links, set by the test:
//   - set_connected(name, false) cuts an endpoint off the bus: its publishes
//     fail with Unavailable, messages for it are lost, its state handlers see
//     the transition;
//   - partition(a, b, true) cuts the pair: messages from one to the other are
//     lost, while both still talk to everyone else.
// Link faults are decided per receiving endpoint when a message is delivered,
// not when it is published: a message sent before a partition and delivered
// during it is lost; one sent during it and delivered after it heals arrives.
// As with NATS, a subscription receives only messages published after it was
// made, and a publisher receives its own messages when it subscribes to them.
//
// Determinism: for one seed, one sequence of calls gives one sequence of
// deliveries. Nothing here reads a clock, iterates an unordered container or
// depends on addresses. With every fault probability at 0 no random number is
// drawn and the queue is FIFO.
//
// Limits: payloads above max_payload() are refused with ResourceExhausted
// (as NATS does), and so are publishes while max_in_flight() messages are
// queued.
//
// REQUIRES: external synchronization; one thread drives a network and its
// endpoints. Endpoints must not be destroyed from inside their own handlers.
// A network destroyed before its endpoints detaches them: their publishes
// then fail with Unavailable and they never receive anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/status.h"
#include "sync/transport.h"

namespace canopy::sync {

class MemoryTransport;

// Fault probabilities, each in [0, 1]; duplicate must stay below 1 (a copy
// may be copied again).
struct MemoryFaults {
  double drop = 0.0;
  double duplicate = 0.0;
  double reorder = 0.0;
};

struct MemoryNetworkStats {
  uint64_t published = 0;      // accepted by publish()
  uint64_t handled = 0;        // handler invocations
  uint64_t dropped = 0;        // lost to the drop fault
  uint64_t duplicated = 0;     // copies made by the duplicate fault
  uint64_t reordered = 0;      // deliveries that skipped older messages
  uint64_t undeliverable = 0;  // (message, receiver) pairs lost to a cut link
  uint64_t no_subscriber = 0;  // messages that matched no subscription
};

class MemoryNetwork {
 public:
  static constexpr size_t kDefaultMaxPayload = size_t{1} << 20;
  static constexpr size_t kDefaultMaxInFlight = size_t{1} << 20;

  explicit MemoryNetwork(uint64_t seed);
  ~MemoryNetwork();

  MemoryNetwork(const MemoryNetwork&) = delete;
  MemoryNetwork& operator=(const MemoryNetwork&) = delete;

  // A new endpoint named `name` (a node name, one per live endpoint: a second
  // live endpoint of the same name is a CANOPY_CHECK failure). It starts
  // connected unless set_connected(name, false) is in force; a crashed node
  // is simulated by destroying its endpoint and making a new one.
  std::unique_ptr<MemoryTransport> endpoint(std::string name);

  void set_faults(const MemoryFaults& faults);
  const MemoryFaults& faults() const { return faults_; }
  void set_max_payload(size_t bytes) { max_payload_ = bytes; }
  size_t max_payload() const { return max_payload_; }
  void set_max_in_flight(size_t messages) { max_in_flight_ = messages; }
  size_t max_in_flight() const { return max_in_flight_; }

  // Connects or disconnects `name` (remembered for endpoints made later under
  // that name). Fires the live endpoint's state handlers on a change.
  void set_connected(std::string_view name, bool connected);
  bool is_connected(std::string_view name) const;
  // Cuts (cut = true) or heals the link between two endpoints, both ways.
  void partition(std::string_view a, std::string_view b, bool cut);
  bool partitioned(std::string_view a, std::string_view b) const;
  // Heals every partition (connections set by set_connected stay).
  void heal_partitions() { cuts_.clear(); }

  // Takes one message off the queue (see the faults above) and hands it to
  // every matching subscription whose endpoint is reachable, in subscription
  // order. Returns false when nothing was in flight.
  bool deliver_one();
  // Calls deliver_one() until the queue is empty or `max_steps` messages were
  // taken; returns how many were taken.
  size_t deliver_all(size_t max_steps);

  size_t in_flight() const { return queue_.size(); }
  const MemoryNetworkStats& stats() const { return stats_; }
  uint64_t seed() const { return seed_; }

 private:
  friend class MemoryTransport;

  struct InFlight {
    uint64_t seq;
    std::string from;
    Message message;
  };
  struct Subscription {
    MemoryTransport* owner;
    std::string pattern;
    uint64_t created_seq;
    std::shared_ptr<const Transport::Handler> handler;
  };

  Status publish(MemoryTransport& from, std::string_view subject, std::string_view data);
  uint64_t subscribe(MemoryTransport& owner, std::string_view pattern, Transport::Handler handler);
  void unsubscribe(const MemoryTransport& owner, uint64_t id);
  void detach(MemoryTransport& endpoint);

  // Uniform in [0, 1) and in [0, n), from the 64-bit generator directly, so
  // that runs replay across standard libraries.
  double unit();
  size_t below(size_t n);
  bool chance(double p) { return p > 0.0 && unit() < p; }

  const uint64_t seed_;
  std::mt19937_64 rng_;
  MemoryFaults faults_;
  size_t max_payload_ = kDefaultMaxPayload;
  size_t max_in_flight_ = kDefaultMaxInFlight;
  uint64_t next_seq_ = 1;  // orders messages and subscriptions together
  std::deque<InFlight> queue_;
  std::map<std::string, MemoryTransport*, std::less<>> endpoints_;
  std::map<uint64_t, Subscription> subscriptions_;  // by id == creation seq
  std::set<std::string, std::less<>> disconnected_;
  std::set<std::pair<std::string, std::string>> cuts_;  // (min, max) names
  MemoryNetworkStats stats_;
};

class MemoryTransport final : public Transport {
 public:
  ~MemoryTransport() override;

  MemoryTransport(const MemoryTransport&) = delete;
  MemoryTransport& operator=(const MemoryTransport&) = delete;

  Status publish(std::string_view subject, std::string_view data) override;
  StatusOr<uint64_t> subscribe(std::string_view pattern, Handler handler) override;
  void unsubscribe(uint64_t id) override;
  size_t max_payload() const override;
  bool connected() const override;
  void on_state_change(StateHandler handler) override;

  const std::string& name() const { return name_; }

 private:
  friend class MemoryNetwork;
  MemoryTransport(MemoryNetwork* network, std::string name);
  void fire_state(bool connected);

  MemoryNetwork* network_;  // null once the network is gone
  const std::string name_;
  std::vector<std::shared_ptr<const StateHandler>> state_handlers_;
};

}  // namespace canopy::sync
