// SketchReceiver: the child's side of one reconciliation by sketch
// (docs/sync-protocol.md, "Down"), without I/O: ChildSync drives it over its
// Store, and the fan-out benchmark's light children over their in-memory
// documents.
//
// It is created at the first sketch message of a round with the child's
// documents as (key, id) pairs (ids as Store::doc_hashes computes them), told
// of every key the parent sends from then on, and answers each sketch message.
// Once decoded, `only_here` names the documents to forget when the parent's
// `reconciled` message arrives.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "canopy/v1/sync.pb.h"
#include "sync/engine/sketch.h"

namespace canopy::sync {

class SketchReceiver {
 public:
  SketchReceiver(uint64_t round, std::vector<std::pair<std::string, uint64_t>> docs);

  uint64_t round() const { return round_; }
  bool decoded() const { return decoded_; }

  enum class Answer {
    kNone,     // nothing to send (the rest of a batch after decoding)
    kMore,     // reply: more symbols, please
    kDecoded,  // reply: the documents in `wanted`
    kWhole,    // reply: the whole scope (`why` says why)
  };
  // Takes the next sketch message of this round and fills `reply` (round
  // included) unless the answer is kNone.
  Answer on_sketch(const v1::Sketch& sketch, v1::SketchReply* reply, std::string* why);

  // The parent sent an entry (change or whole document) for `key`: it holds
  // the key, so the key is not ours alone.
  void on_parent_sent(const std::string& key);

  // Decoded: our documents the parent does not hold, except those it sent
  // since the round began.
  const std::set<std::string>& only_here() const { return only_here_; }

 private:
  uint64_t round_;
  std::unique_ptr<SketchDecoder> decoder_;
  std::unordered_map<uint64_t, std::string> keys_;  // our ids at the round's start
  std::set<std::string> touched_;                   // keys the parent sent since
  bool decoded_ = false;
  std::set<std::string> only_here_;
};

}  // namespace canopy::sync
