// Document (declared in document.h): the CRDT node tree and its storage,
// causal contexts, applying deltas and joining states (with the conflict
// reports), and tombstone collection. The JSON views and diff are in
// document_json.cc, (de)serialization in document_proto.cc, key and delta
// checks in document_validate.cc.
#include "store/document.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "store/document_detail.h"

namespace canopy {

using document_detail::name_prefix;
using document_detail::obj_stamp;
using document_detail::reg_stamp;

namespace {

// Bytes that may stay unreclaimed in a document before it is compacted.
constexpr size_t kMinGarbageBytes = 4096;
constexpr size_t kMinGarbageEntries = 256;

}  // namespace

Document::Span Document::put(std::string_view s) {
  if (s.empty()) return Span{};
  if (bytes_.size() + s.size() > UINT32_MAX) throw std::length_error("document state too large");
  Span out{static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(s.size())};
  bytes_.append(s);
  return out;
}

void Document::set_value(Node* n, std::string_view v) {
  if (v.size() <= n->value.len) {
    // In place: an overwrite is mostly of a value of about the same size.
    if (!v.empty()) std::memcpy(bytes_.data() + n->value.off, v.data(), v.size());
    garbage_bytes_ += n->value.len - v.size();
    n->value.len = static_cast<uint32_t>(v.size());
    if (v.empty()) n->value.off = 0;
    return;
  }
  garbage_bytes_ += n->value.len;
  n->value = put(v);
}

const Document::Node& Document::root() const {
  static const Node kEmpty;
  return nodes_.empty() ? kEmpty : nodes_[0];
}

int Document::compare_names(const Kid& k, std::string_view key) const {
  // The first 8 bytes agree (the prefixes are equal): compare the rest.
  const std::string_view name = str(nodes_[k.node].name);
  const int c = name.substr(8).compare(key.substr(8));
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

const Document::Node* Document::find_child(const Node& parent, std::string_view key) const {
  const uint64_t kp = name_prefix(key);
  const Kid* b = kids_of(parent);
  uint32_t lo = 0, hi = parent.nkids;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    const int c = compare(b[mid], key, kp);
    if (c == 0) return &nodes_[b[mid].node];
    if (c < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return nullptr;
}

uint32_t Document::new_node(std::string_view name) {
  if (nodes_.size() >= UINT32_MAX) throw std::length_error("document state too large");
  const auto index = static_cast<uint32_t>(nodes_.size());
  const Span span = put(name);
  nodes_.emplace_back().name = span;
  return index;
}

void Document::insert_kid(uint32_t parent, uint32_t pos, const Kid& kid) {
  Node& p = nodes_[parent];
  if (p.nkids == p.kids_cap) {
    const uint32_t cap = p.kids_cap == 0 ? 4 : p.kids_cap * 2;
    if (p.kids_cap != 0 && p.kids + p.kids_cap == kids_.size()) {
      kids_.resize(kids_.size() + (cap - p.kids_cap));  // the last list grows in place
    } else {
      if (kids_.size() + cap > UINT32_MAX) throw std::length_error("document state too large");
      const auto off = static_cast<uint32_t>(kids_.size());
      kids_.resize(kids_.size() + cap);
      std::copy_n(kids_.data() + p.kids, p.nkids, kids_.data() + off);
      garbage_kids_ += p.kids_cap;
      p.kids = off;
    }
    p.kids_cap = cap;
  }
  Kid* b = kids_.data() + p.kids;
  std::copy_backward(b + pos, b + p.nkids, b + p.nkids + 1);
  b[pos] = kid;
  ++p.nkids;
}

size_t Document::memory_bytes() const {
  return sizeof(Document) + nodes_.capacity() * sizeof(Node) + kids_.capacity() * sizeof(Kid) +
         bytes_.capacity() + causal_.capacity() * sizeof(Causal) + seen_.capacity() * sizeof(Dot);
}

uint32_t Document::get_or_insert(uint32_t parent, std::string_view key) {
  const uint64_t kp = name_prefix(key);
  const Node& p = nodes_[parent];
  const Kid* b = kids_of(p);
  const uint32_t n = p.nkids;
  uint32_t pos = n;
  // No search when `key` sorts last (ops of a delta come in key order).
  const int last = n == 0 ? -1 : compare(b[n - 1], key, kp);
  if (last == 0) return b[n - 1].node;
  if (last > 0) {
    uint32_t lo = 0, hi = n - 1;  // b[hi] > key
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo) / 2;
      if (compare(b[mid], key, kp) < 0) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (compare(b[lo], key, kp) == 0) return b[lo].node;
    pos = lo;
  }
  const uint32_t index = new_node(key);
  insert_kid(parent, pos, Kid{kp, index, static_cast<uint32_t>(key.size())});
  return index;
}

void Document::copy_node(const Document& from, const Node& n, uint32_t into) {
  {
    Node& out = nodes_[into];
    out.reg = n.reg;
    out.obj = n.obj;
    out.reg_seq = n.reg_seq;
    out.prev_seq = n.prev_seq;
    out.prev_foreign = n.prev_foreign;
    out.obj_seq = n.obj_seq;
    out.reg_removed = n.reg_removed;
    out.value = put(from.str(n.value));
  }
  const Causal& c = from.causal(static_cast<uint32_t>(&n - from.nodes_.data()));
  if (c.prev_replica != 0 || c.reg_ctx.len != 0 || c.obj_ctx.len != 0) {
    const Causal copy{c.prev_replica, put(from.str(c.reg_ctx)), put(from.str(c.obj_ctx))};
    causal_at(into) = copy;
  }
  if (n.nkids == 0) return;
  const auto off = static_cast<uint32_t>(kids_.size());
  kids_.resize(kids_.size() + n.nkids);
  nodes_[into].kids = off;
  nodes_[into].nkids = n.nkids;
  nodes_[into].kids_cap = n.nkids;
  const Kid* k = from.kids_of(n);
  for (uint32_t i = 0; i < n.nkids; ++i) {
    const uint32_t c = new_node(from.str(from.nodes_[k[i].node].name));
    kids_[off + i] = Kid{k[i].prefix, c, k[i].len};
  }
  for (uint32_t i = 0; i < n.nkids; ++i) {
    copy_node(from, from.nodes_[k[i].node], kids_[off + i].node);
  }
}

void Document::maybe_compact() {
  const bool bytes = garbage_bytes_ > kMinGarbageBytes && garbage_bytes_ * 2 > bytes_.size();
  const bool kids = garbage_kids_ > kMinGarbageEntries && garbage_kids_ * 2 > kids_.size();
  const bool nodes = garbage_nodes_ > kMinGarbageEntries && garbage_nodes_ * 2 > nodes_.size();
  if (!bytes && !kids && !nodes) return;
  Document d;
  d.nodes_.reserve(nodes_.size() - std::min(garbage_nodes_, nodes_.size()));
  d.kids_.reserve(kids_.size() - std::min(garbage_kids_, kids_.size()));
  d.bytes_.reserve(bytes_.size() - std::min(garbage_bytes_, bytes_.size()));
  d.nodes_.emplace_back();
  d.copy_node(*this, nodes_[0], 0);
  d.seen_ = std::move(seen_);
  *this = std::move(d);
}

struct Document::Incoming {
  const v1::Delta& delta;
  const v1::FieldOp& op;
  Stamp stamp;
  uint64_t seq;
  // True when the incoming write had seen the write (replica, seq).
  bool saw(uint64_t replica, uint64_t s) const {
    if (replica == stamp.replica) return true;
    if (op.prev().replica() == replica && op.prev().seq() == s) return true;
    for (const v1::Dot& d : delta.seen()) {
      if (d.replica() == replica) return s <= d.seq();
    }
    return false;
  }
};

void Document::see(uint64_t replica, uint64_t seq) {
  auto it = std::lower_bound(seen_.begin(), seen_.end(), replica,
                             [](const Dot& d, uint64_t r) { return d.replica < r; });
  if (it != seen_.end() && it->replica == replica) {
    it->seq = std::max(it->seq, seq);
  } else {
    seen_.insert(it, Dot{replica, seq});
  }
}

Document::Causal& Document::causal_at(uint32_t i) {
  if (i >= causal_.size()) causal_.resize(nodes_.size());
  return causal_[i];
}

Document::Dot Document::reg_prev(uint32_t i) const {
  const Node& n = nodes_[i];
  if (n.prev_seq == 0) return Dot{};
  return Dot{n.prev_foreign ? causal(i).prev_replica : n.reg.replica, n.prev_seq};
}

void Document::set_reg_causal(uint32_t i, Dot prev, Span ctx) {
  Node& n = nodes_[i];
  n.prev_seq = prev.seq;
  // A prev with seq 0 names no write: it is no prev.
  n.prev_foreign = prev.seq != 0 && prev.replica != n.reg.replica;
  if (!n.prev_foreign && ctx.len == 0 && i >= causal_.size()) return;
  const bool foreign = n.prev_foreign;
  Causal& c = causal_at(i);
  // (A context shared by the registers of one delta counts once for each:
  // compaction comes a little early, never late.)
  garbage_bytes_ += c.reg_ctx.len;
  c.prev_replica = foreign ? prev.replica : 0;
  c.reg_ctx = ctx;
}

void Document::set_obj_causal(uint32_t i, uint64_t seq, Span ctx) {
  nodes_[i].obj_seq = seq;
  if (ctx.len == 0 && i >= causal_.size()) return;
  Causal& c = causal_at(i);
  garbage_bytes_ += c.obj_ctx.len;
  c.obj_ctx = ctx;
}

bool Document::seen_by(uint64_t writer,
                       const google::protobuf::RepeatedPtrField<v1::Dot>& seen) const {
  // Both lists are sorted by replica (validate_delta checks a delta's): one
  // merge-like pass. An unsorted `seen` can only make this answer false.
  auto it = seen.begin();
  for (const Dot& d : seen_) {
    if (d.replica == writer) continue;
    while (it != seen.end() && it->replica() < d.replica) ++it;
    if (it == seen.end() || it->replica() != d.replica || it->seq() < d.seq) return false;
  }
  return true;
}

void Document::see_registers(const Node& n) {
  if (!n.reg.zero() && n.reg_seq != 0) see(n.reg.replica, n.reg_seq);
  const Kid* k = kids_of(n);
  for (uint32_t i = 0; i < n.nkids; ++i) see_registers(nodes_[k[i].node]);
}

Document::Span Document::put_context(const google::protobuf::RepeatedPtrField<v1::Dot>& seen) {
  if (seen.empty()) return Span{};
  std::string packed(seen.size() * 16, '\0');
  char* p = packed.data();
  for (const v1::Dot& d : seen) {
    const uint64_t r = d.replica(), q = d.seq();
    std::memcpy(p, &r, 8);
    std::memcpy(p + 8, &q, 8);
    p += 16;
  }
  return put(packed);
}

bool Document::has_seen(uint64_t writer, Dot prev, Span ctx, uint64_t replica, uint64_t seq) const {
  if (replica == writer) return true;
  if (prev.replica == replica && prev.seq == seq) return true;
  const std::string_view c = str(ctx);
  for (size_t i = 0; i + 16 <= c.size(); i += 16) {
    uint64_t r = 0, q = 0;
    std::memcpy(&r, c.data() + i, 8);
    std::memcpy(&q, c.data() + i + 8, 8);
    if (r == replica) return seq <= q;
  }
  return false;
}

void Document::causal_context(uint64_t writer, v1::Delta* delta) const {
  delta->clear_seen();
  for (const Dot& d : seen_) {
    if (d.replica == writer) continue;
    v1::Dot* out = delta->add_seen();
    out->set_replica(d.replica);
    out->set_seq(d.seq);
  }
}

void Document::report_loser(const Node& loser, const std::vector<std::string>& path,
                            const Incoming& in, std::vector<Overwrite>* out) const {
  if (in.saw(loser.reg.replica, loser.reg_seq)) return;
  Overwrite& o = out->emplace_back();
  o.path = path;
  o.loser = loser.reg;
  o.loser_seq = loser.reg_seq;
  o.loser_removed = loser.reg_removed;
  o.loser_value = str(loser.value);
  o.winner = in.stamp;
  o.winner_seq = in.seq;
}

void Document::report_subtree(const Node& n, Stamp clear, std::vector<std::string>* path,
                              const Incoming& in, std::vector<Overwrite>* out) const {
  // Every level: a tombstone raises no `obj`, so one can show (stand, as a
  // removal) below a node that is itself hidden. The path grows only for a
  // report (names are copied then): the walk itself allocates nothing.
  thread_local std::vector<uint32_t> trail;  // nodes below `n` down to the loser
  const size_t base = path->size();
  const auto walk = [&](const auto& self, const Node& at, Stamp c) -> void {
    const Kid* k = kids_of(at);
    for (uint32_t i = 0; i < at.nkids; ++i) {
      const Node& child = nodes_[k[i].node];
      if (!child.reg.zero() && child.reg > c && child.reg > child.obj && child.reg < in.stamp &&
          !in.saw(child.reg.replica, child.reg_seq)) {
        path->resize(base);
        for (uint32_t t : trail) path->emplace_back(str(nodes_[t].name));
        path->emplace_back(str(child.name));
        report_loser(child, *path, in, out);
      }
      if (child.nkids != 0) {
        trail.push_back(k[i].node);
        self(self, child, std::max(c, child.reg));
        trail.pop_back();
      }
    }
  };
  trail.clear();
  walk(walk, n, clear);
  path->resize(base);
}

void Document::apply(const v1::Delta& delta, std::vector<Overwrite>* overwrites) {
  const Stamp s{delta.hlc(), delta.dot().replica()};
  const uint64_t seq = delta.dot().seq();
  if (nodes_.empty()) nodes_.emplace_back();
  // The root and, after a compaction, its child list come first in their
  // vectors: start fetching them while the first pass reads the delta.
  __builtin_prefetch(nodes_.data());
  __builtin_prefetch(reinterpret_cast<const char*>(nodes_.data()) + 64);
  __builtin_prefetch(kids_.data());
  // When the incoming write had seen every write the document holds (always,
  // for a document with one writer), none of them can be lost to it unseen:
  // the reports of writes it supersedes, and their walks, are skipped.
  const bool saw_all = overwrites == nullptr || seen_by(s.replica, delta.seen());
  see(s.replica, seq);
  for (const v1::Dot& d : delta.seen()) see(d.replica(), d.seq());
  // The nodes along the previous op's path, each with the clear stamp it
  // inherits and the node whose register sets it. Ops of a delta usually
  // come sorted by path (diff() writes them so), and consecutive ops then
  // share a prefix that is walked only once. Reuse is correct in any order:
  // an op changes only its target's register, which no level up to the
  // target's depth depends on, and nodes are held by index, which an
  // insertion does not change.
  struct Level {
    uint32_t node;
    uint32_t clear_node;
    Stamp clear;
  };
  thread_local std::vector<Level> stack;
  thread_local std::vector<int> shared;  // path elements each op shares with the one before
  {
    // A first pass finds the shared prefixes, and so a bound on the nodes,
    // child entries and bytes the delta may add: room for them is made in
    // one step rather than by growing as they come.
    shared.clear();
    size_t add_nodes = 0, add_bytes = 16 * static_cast<size_t>(delta.seen_size());
    // (Path elements through iterators: RepeatedPtrField<std::string>::Get
    // is an out-of-line call into libprotobuf.)
    const google::protobuf::RepeatedPtrField<std::string>* prev = nullptr;
    for (const v1::FieldOp& op : delta.ops()) {
      const auto& path = op.path();
      const int depth = path.size();
      const auto at = path.begin();
      int common = 0;
      if (prev != nullptr) {
        const int limit = std::min(depth, prev->size());
        const auto prev_at = prev->begin();
        while (common < limit && at[common] == prev_at[common]) ++common;
      }
      prev = &path;
      shared.push_back(common);
      for (int i = common; i < depth; ++i) add_bytes += at[i].size();
      add_nodes += static_cast<size_t>(depth - common);
      add_bytes += op.value().size();
    }
    // With some room to spare: the next small change then fits without
    // moving the whole document.
    const auto grow = [](auto* v, size_t add, size_t spare) {
      const size_t want = v->size() + add;
      if (want > v->capacity()) {
        v->reserve(std::max(want + want / 8 + spare, v->capacity() + v->capacity() / 2));
      }
    };
    grow(&nodes_, add_nodes, 4);
    grow(&kids_, 2 * add_nodes, 8);
    grow(&bytes_, add_bytes, 64);
  }
  // The context the delta's registers keep, stored once when first needed.
  Span ctx;
  bool ctx_stored = delta.seen().empty();
  const auto stored_ctx = [&] {
    if (!ctx_stored) {
      ctx = put_context(delta.seen());
      ctx_stored = true;
    }
    return ctx;
  };
  thread_local std::vector<std::string> report_path;
  stack.clear();
  stack.push_back({0, 0, Stamp{}});
  // Levels [0, raised) of the stack hold nodes whose `obj` this delta raised.
  int raised = 0;
  for (int k = 0; k < delta.ops_size(); ++k) {
    const v1::FieldOp& op = delta.ops(k);
    const auto& path = op.path();
    const int depth = path.size();
    const auto at = path.begin();
    const int common = shared[static_cast<size_t>(k)];
    const Incoming in{delta, op, s, seq};
    // A SET below a node, or an explicit object, makes the node an object: its
    // register, if it showed, is superseded. A REMOVE raises nothing.
    const bool raises = op.kind() != v1::FieldOp::REMOVE;
    const auto raise = [&](int level) {
      Node& n = nodes_[stack[static_cast<size_t>(level)].node];
      if (!(n.obj < s)) return;
      if (!saw_all && s > n.reg && !n.reg.zero() &&
          n.reg > stack[static_cast<size_t>(level)].clear && n.reg > n.obj &&
          !in.saw(n.reg.replica, n.reg_seq)) {
        report_path.assign(at, at + level);
        report_loser(n, report_path, in, overwrites);
      }
      n.obj = s;
      set_obj_causal(stack[static_cast<size_t>(level)].node, seq, stored_ctx());
    };
    stack.resize(static_cast<size_t>(common) + 1);
    if (raises) {
      for (int i = std::min(raised, common); i < common; ++i) raise(i);
    }
    for (int i = common; i < depth; ++i) {
      if (raises) raise(i);
      // Fields, not a copy of the Level: a copy goes through the stack in
      // pieces that the loads after it cannot be forwarded from.
      const uint32_t up = stack[static_cast<size_t>(i)].node;
      Stamp clear = stack[static_cast<size_t>(i)].clear;
      uint32_t clear_node = stack[static_cast<size_t>(i)].clear_node;
      if (clear < nodes_[up].reg) {
        clear = nodes_[up].reg;
        clear_node = up;
      }
      const uint32_t child = get_or_insert(up, at[i]);
      stack.push_back({child, clear_node, clear});
    }
    raised = raises ? depth : std::min(raised, common);
    const uint32_t target = stack.back().node;
    const Stamp clear = stack.back().clear;
    if (op.kind() == v1::FieldOp::MAKE_OBJECT) {
      raise(depth);
      continue;
    }
    Node* n = &nodes_[target];
    const bool removed = op.kind() == v1::FieldOp::REMOVE;
    if (n->reg == s) continue;  // the same write again
    if (overwrites != nullptr) {
      if (!saw_all && s > clear && s > n->reg) {
        // The register takes the write: what showed at its path older than
        // the write is superseded — its register, and the registers below
        // (values of an object it replaces; tombstones newer than a removal
        // of the node, which raise no `obj`; with newer writes below keeping
        // the node an object, the older ones).
        // (The path is copied only for a report: this runs for every op.)
        if (!n->reg.zero() && n->reg > clear && n->reg > n->obj &&
            !in.saw(n->reg.replica, n->reg_seq)) {
          report_path.assign(path.begin(), path.end());
          report_loser(*n, report_path, in, overwrites);
        }
        if (n->nkids != 0) {
          report_path.assign(path.begin(), path.end());
          report_subtree(*n, std::max(clear, n->reg), &report_path, in, overwrites);
        }
      }
      if (!(s > clear && s > n->reg && s > n->obj)) {
        // Superseded on arrival, by the greatest of the register at its path,
        // the ancestor register that clears it and the newest write below it.
        // (A duplicate never gets here: the store drops seen dots first.)
        Stamp best = n->reg;
        uint64_t best_seq = n->reg_seq;
        Dot best_prev = reg_prev(target);
        Span best_ctx = causal(target).reg_ctx;
        if (clear > best) {
          const uint32_t c = stack.back().clear_node;
          best = nodes_[c].reg;
          best_seq = nodes_[c].reg_seq;
          best_prev = reg_prev(c);
          best_ctx = causal(c).reg_ctx;
        }
        if (n->obj > best) {
          best = n->obj;
          best_seq = n->obj_seq;
          best_prev = Dot{};
          best_ctx = causal(target).obj_ctx;
        }
        if (best > s && !has_seen(best.replica, best_prev, best_ctx, s.replica, seq)) {
          Overwrite& o = overwrites->emplace_back();
          o.path.assign(path.begin(), path.end());
          o.loser = s;
          o.loser_seq = seq;
          o.loser_removed = removed;
          o.loser_value = removed ? std::string() : op.value();
          o.winner = best;
          o.winner_seq = best_seq;
        }
      }
    }
    if (s > n->reg) {
      const Span c = stored_ctx();
      n = &nodes_[target];
      n->reg = s;
      n->reg_seq = seq;
      n->reg_removed = removed;
      set_value(n, removed ? std::string_view() : std::string_view(op.value()));
      set_reg_causal(target, Dot{op.prev().replica(), op.prev().seq()}, c);
    }
  }
  maybe_compact();
}

void Document::join(uint32_t into, const v1::NodeState& from) {
  {
    Node& n = nodes_[into];
    const Stamp r = reg_stamp(from);
    if (r > n.reg) {
      n.reg = r;
      n.reg_seq = from.reg_seq();
      n.reg_removed = from.reg_removed();
      set_value(&n, from.reg_value());
      set_reg_causal(into, Dot{from.reg_prev().replica(), from.reg_prev().seq()},
                     put_context(from.reg_seen()));
      // The context covers every register's write (see apply()), also for a
      // state whose doc_seen does not list it.
      if (from.reg_seq() != 0) see(r.replica, from.reg_seq());
    }
    if (obj_stamp(from) > nodes_[into].obj) {
      nodes_[into].obj = obj_stamp(from);
      set_obj_causal(into, from.obj_seq(), put_context(from.obj_seen()));
    }
  }
  for (const v1::ChildState& c : from.children()) {
    join(get_or_insert(into, c.name()), c.node());
  }
}

void Document::merge(const v1::NodeState& state) {
  if (nodes_.empty()) nodes_.emplace_back();
  for (const v1::Dot& d : state.doc_seen()) see(d.replica(), d.seq());
  join(0, state);
  maybe_compact();
}

bool Document::exists() const { return root().obj > root().reg; }

uint64_t Document::node_max_hlc(const Node& n) const {
  uint64_t m = std::max(n.reg.hlc, n.obj.hlc);
  const Kid* k = kids_of(n);
  for (uint32_t i = 0; i < n.nkids; ++i) m = std::max(m, node_max_hlc(nodes_[k[i].node]));
  return m;
}

uint64_t Document::max_hlc() const { return node_max_hlc(root()); }

bool Document::node_empty(const Node& n) { return n.reg.zero() && n.obj.zero() && n.nkids == 0; }

bool Document::empty() const { return node_empty(root()); }

size_t Document::collect(uint32_t index, Stamp clear, uint64_t stable_hlc) {
  size_t dropped = 0;
  // No node is added here: references into nodes_ stay valid.
  Node& n = nodes_[index];
  // Forget entries no longer visible under the ancestors' clear stamp.
  if (!(n.reg > clear)) {
    n.reg = Stamp{};
    n.reg_seq = 0;
    n.reg_removed = false;
    set_value(&n, std::string_view());
    set_reg_causal(index, Dot{}, Span{});
  }
  if (!(n.obj > clear)) {
    n.obj = Stamp{};
    set_obj_causal(index, 0, Span{});
  }
  const Stamp c = std::max(clear, n.reg);
  for (uint32_t i = 0; i < n.nkids;) {
    Kid* k = kids_.data() + n.kids;
    const uint32_t child = k[i].node;
    dropped += collect(child, c, stable_hlc);
    if (node_empty(nodes_[child])) {
      std::copy(k + i + 1, k + n.nkids, k + i);
      --n.nkids;
      ++garbage_nodes_;
      garbage_bytes_ += nodes_[child].name.len + nodes_[child].value.len;
      garbage_kids_ += nodes_[child].kids_cap;
    } else {
      ++i;
    }
  }
  // A stable tombstone: every replica has it, and nothing older can still
  // arrive. Everything it dominated is gone (above), so it can go too, with
  // the object stamp it beat.
  if (n.reg_removed && n.reg.hlc < stable_hlc && n.reg > n.obj) {
    n.reg = Stamp{};
    n.reg_seq = 0;
    n.reg_removed = false;
    n.obj = Stamp{};
    set_reg_causal(index, Dot{}, Span{});
    set_obj_causal(index, 0, Span{});
    ++dropped;
  }
  return dropped;
}

bool Document::has_tombstones() const {
  if (nodes_.empty()) return false;
  std::vector<uint32_t> todo{0};
  while (!todo.empty()) {
    const Node& n = nodes_[todo.back()];
    todo.pop_back();
    if (n.reg_removed) return true;
    const Kid* k = kids_of(n);
    for (uint32_t i = 0; i < n.nkids; ++i) todo.push_back(k[i].node);
  }
  return false;
}

size_t Document::collect_tombstones(uint64_t stable_hlc) {
  if (nodes_.empty()) return 0;
  const size_t dropped = collect(0, Stamp{}, stable_hlc);
  // Every write the context names is stable: a later one has seen them all.
  if (empty()) seen_.clear();
  maybe_compact();
  return dropped;
}

}  // namespace canopy
