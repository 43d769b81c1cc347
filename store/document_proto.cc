// Document's serialized state (declared in document.h): to_proto, and
// from_proto with the checks a state read from disk or the wire must pass.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include "store/canonical_json.h"
#include "store/document.h"
#include "store/document_detail.h"
#include "store/utf8.h"

namespace canopy {

using document_detail::name_prefix;
using document_detail::obj_stamp;
using document_detail::reg_stamp;

void Document::context_to_proto(Span ctx, google::protobuf::RepeatedPtrField<v1::Dot>* out) const {
  const std::string_view c = str(ctx);
  for (size_t i = 0; i + 16 <= c.size(); i += 16) {
    uint64_t r = 0, q = 0;
    std::memcpy(&r, c.data() + i, 8);
    std::memcpy(&q, c.data() + i + 8, 8);
    v1::Dot* d = out->Add();
    d->set_replica(r);
    d->set_seq(q);
  }
}

bool Document::serialize(const Node& n, Stamp clear, v1::NodeState* out) const {
  bool any = false;
  // (`n` is in nodes_ whenever it holds an entry: only the empty document's
  // root is not.)
  const auto index = [&] { return static_cast<uint32_t>(&n - nodes_.data()); };
  if (n.reg > clear) {
    out->set_reg_hlc(n.reg.hlc);
    out->set_reg_replica(n.reg.replica);
    out->set_reg_seq(n.reg_seq);
    if (n.prev_seq != 0) {
      const Dot prev = reg_prev(index());
      out->mutable_reg_prev()->set_replica(prev.replica);
      out->mutable_reg_prev()->set_seq(prev.seq);
    }
    context_to_proto(causal(index()).reg_ctx, out->mutable_reg_seen());
    if (n.reg_removed) {
      out->set_reg_removed(true);
    } else {
      const std::string_view v = str(n.value);
      out->set_reg_value(v.data(), v.size());
    }
    any = true;
  }
  if (n.obj > clear) {
    out->set_obj_hlc(n.obj.hlc);
    out->set_obj_replica(n.obj.replica);
    out->set_obj_seq(n.obj_seq);
    context_to_proto(causal(index()).obj_ctx, out->mutable_obj_seen());
    any = true;
  }
  const Stamp c = std::max(clear, n.reg);
  const Kid* k = kids_of(n);
  for (uint32_t i = 0; i < n.nkids; ++i) {
    const Node& child = nodes_[k[i].node];
    v1::ChildState* cs = out->add_children();
    if (serialize(child, c, cs->mutable_node())) {
      const std::string_view name = str(child.name);
      cs->set_name(name.data(), name.size());
      any = true;
    } else {
      out->mutable_children()->RemoveLast();
    }
  }
  return any;
}

void Document::to_proto(v1::NodeState* out) const {
  out->Clear();
  // A state with no entry left (all collected) is empty, context included.
  if (!serialize(root(), Stamp{}, out)) return;
  for (const Dot& d : seen_) {
    v1::Dot* o = out->add_doc_seen();
    o->set_replica(d.replica);
    o->set_seq(d.seq);
  }
}

Status Document::from_proto_node(const v1::NodeState& s, size_t depth, size_t max_depth,
                                 uint32_t out) {
  if (depth > max_depth) return invalid_argument("document state nests deeper than the limit");
  const bool live_value = !s.reg_removed() && (s.reg_hlc() != 0 || s.reg_replica() != 0);
  if ((live_value || !s.reg_value().empty()) && !canonical_json_value(s.reg_value())) {
    return invalid_argument(
        "document state holds a register that is not a JSON scalar or array in canonical form");
  }
  {
    Node& n = nodes_[out];
    n.reg = reg_stamp(s);
    n.reg_seq = s.reg_seq();
    n.reg_removed = s.reg_removed();
    n.value = put(s.reg_value());
    n.obj = obj_stamp(s);
  }
  set_reg_causal(out, Dot{s.reg_prev().replica(), s.reg_prev().seq()}, put_context(s.reg_seen()));
  set_obj_causal(out, s.obj_seq(), put_context(s.obj_seen()));
  if (s.children().empty()) return ok_status();
  // The node's child list in one piece, filled as the children are read.
  const auto count = static_cast<uint32_t>(s.children_size());
  if (kids_.size() + count > UINT32_MAX) throw std::length_error("document state too large");
  const auto off = static_cast<uint32_t>(kids_.size());
  kids_.resize(kids_.size() + count);
  nodes_[out].kids = off;
  nodes_[out].kids_cap = count;
  std::string_view last;
  bool first = true;
  for (const v1::ChildState& c : s.children()) {
    if (!first && c.name() <= last) {
      return invalid_argument("document state children are not sorted and unique");
    }
    first = false;
    last = c.name();
    if (!valid_utf8(c.name())) {
      return invalid_argument("document state has a field name that is not UTF-8");
    }
    const uint32_t child = new_node(c.name());
    Node& n = nodes_[out];
    kids_[n.kids + n.nkids] =
        Kid{name_prefix(c.name()), child, static_cast<uint32_t>(c.name().size())};
    ++n.nkids;
    CANOPY_RETURN_IF_ERROR(from_proto_node(c.node(), depth + 1, max_depth, child));
  }
  return ok_status();
}

StatusOr<Document> Document::from_proto(const v1::NodeState& state, size_t max_depth) {
  Document d;
  d.nodes_.emplace_back();
  Status st = d.from_proto_node(state, 0, max_depth, 0);
  if (!st.ok()) return st;
  for (const v1::Dot& dot : state.doc_seen()) d.see(dot.replica(), dot.seq());
  // A state written before documents kept their context has none: it is
  // rebuilt from the registers' dots, which it must cover (see apply()).
  if (state.doc_seen().empty()) d.see_registers(d.root());
  return d;
}

}  // namespace canopy
