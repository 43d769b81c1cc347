// Transport: the message bus under sync sessions.
//
// A subject-addressed, at-most-once message bus with NATS semantics: subjects
// are dot-separated tokens, subscriptions may use `*` (one token) and `>` (the
// rest). Messages from one publisher to one subject arrive in order or not at
// all; sync adds its own sequence numbers, acknowledgements and retransmission
// on top, so a transport may lose, and (the simulated one) duplicate or reorder.
//
// Two implementations: NatsTransport (NATS.c against a real nats-server) and
// MemoryTransport (deterministic, for the simulation). Handlers run on the
// transport's delivery thread (NATS) or inside MemoryTransport::deliver(); they
// must not block for long.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "store/status.h"

namespace canopy::sync {

struct Message {
  std::string subject;
  std::string data;
};

class Transport {
 public:
  // A handler may move the message's contents away (a queue keeps them
  // without a copy); the transport reads nothing of it after the call.
  using Handler = std::function<void(Message& message)>;
  using StateHandler = std::function<void(bool connected)>;

  virtual ~Transport() = default;

  // Queues `data` for `subject`. Unavailable while disconnected (NATS.c buffers
  // a bounded amount during reconnects; past that the publish fails).
  virtual Status publish(std::string_view subject, std::string_view data) = 0;
  // Subscribes to a subject pattern; returns a subscription id.
  virtual StatusOr<uint64_t> subscribe(std::string_view pattern, Handler handler) = 0;
  virtual void unsubscribe(uint64_t id) = 0;
  // Largest payload the bus accepts (NATS: the server's max_payload).
  virtual size_t max_payload() const = 0;
  virtual bool connected() const = 0;
  // Called on every connect/disconnect transition.
  virtual void on_state_change(StateHandler handler) = 0;
};

// True when `subject` matches `pattern` (NATS wildcard rules).
bool subject_matches(std::string_view pattern, std::string_view subject);

}  // namespace canopy::sync
