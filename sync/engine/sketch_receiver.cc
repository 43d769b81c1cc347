#include "sync/engine/sketch_receiver.h"

namespace canopy::sync {

SketchReceiver::SketchReceiver(uint64_t round, std::vector<std::pair<std::string, uint64_t>> docs)
    : round_(round) {
  std::vector<uint64_t> ids;
  ids.reserve(docs.size());
  keys_.reserve(docs.size());
  for (auto& [key, id] : docs) {
    ids.push_back(id);
    keys_.emplace(id, std::move(key));
  }
  decoder_ = std::make_unique<SketchDecoder>(ids);
}

void SketchReceiver::on_parent_sent(const std::string& key) {
  if (!decoded_) touched_.insert(key);
  only_here_.erase(key);
}

SketchReceiver::Answer SketchReceiver::on_sketch(const v1::Sketch& k, v1::SketchReply* reply,
                                                 std::string* why) {
  if (decoded_) return Answer::kNone;
  reply->set_round(round_);
  auto whole = [&](const char* reason) {
    *why = reason;
    decoder_.reset();
    reply->set_whole(true);
    return Answer::kWhole;
  };
  if (!decoder_) return whole("an earlier message of this round did not decode");
  const int n = k.counts_size();
  if (k.round() != round_ || k.ids_size() != n || k.checks_size() != n ||
      k.offset() != decoder_->size()) {
    return whole("a sketch message out of shape or out of order");
  }
  if (keys_.empty()) return whole("we hold no documents");
  std::vector<SketchSymbol> symbols(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    symbols[static_cast<size_t>(i)] = SketchSymbol{k.counts(i), k.ids(i), k.checks(i)};
  }
  decoder_->add(symbols);
  if (decoder_->decoded()) {
    for (uint64_t id : decoder_->local_only()) {
      auto it = keys_.find(id);
      if (it == keys_.end()) return whole("the sketch decoded to an id we do not hold");
      if (!touched_.contains(it->second)) only_here_.insert(it->second);
    }
    reply->set_decoded(true);
    for (uint64_t id : decoder_->remote_only()) reply->add_wanted(id);
    decoded_ = true;
    decoder_.reset();
    keys_.clear();
    touched_.clear();
    return Answer::kDecoded;
  }
  // Past twice the size of both sets, no honest sketch is still undecodable.
  if (decoder_->failed() || decoder_->size() > 2 * (k.items() + keys_.size()) + 64) {
    return whole("the sketch does not decode");
  }
  reply->set_received(decoder_->size());
  return Answer::kMore;
}

}  // namespace canopy::sync
