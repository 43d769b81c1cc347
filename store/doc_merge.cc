#include "store/doc_merge.h"

#include <spdlog/spdlog.h>

#include "canopy/v1/store.pb.h"
#include "store/document.h"

namespace canopy {
namespace {

class DocMergeOperator : public rocksdb::MergeOperator {
 public:
  explicit DocMergeOperator(size_t max_depth) : max_depth_(max_depth) {}

  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    Document doc;
    if (in.existing_value != nullptr) {
      v1::DocState base;
      if (!base.ParseFromArray(in.existing_value->data(),
                               static_cast<int>(in.existing_value->size()))) {
        return fail(in, "its stored state is corrupt");
      }
      auto parsed = Document::from_proto(base.root(), max_depth_);
      if (!parsed.ok()) return fail(in, parsed.status().message());
      doc = std::move(parsed).value();
    }
    for (const rocksdb::Slice& op : in.operand_list) {
      if (op.empty()) return fail(in, "an empty operand");
      const char* body = op.data() + 1;
      const int size = static_cast<int>(op.size() - 1);
      if (op[0] == kDeltaOperand) {
        v1::Delta delta;
        if (!delta.ParseFromArray(body, size)) return fail(in, "a corrupt delta operand");
        doc.apply(delta, nullptr);
      } else if (op[0] == kStateOperand) {
        v1::NodeState state;
        if (!state.ParseFromArray(body, size)) return fail(in, "a corrupt state operand");
        doc.merge(state);
      } else {
        return fail(in, "an operand of unknown kind");
      }
    }
    v1::DocState merged;
    merged.set_key(in.key.ToString());
    doc.to_proto(merged.mutable_root());
    out->new_value.clear();
    return merged.SerializeToString(&out->new_value);
  }

  const char* Name() const override { return "canopy.DocMerge.v1"; }

 private:
  static bool fail(const MergeOperationInput& in, std::string_view why) {
    spdlog::error("store: cannot fold the changes of document {}: {}", in.key.ToString(), why);
    return false;  // RocksDB reports the read as corrupt
  }

  size_t max_depth_;
};

}  // namespace

std::shared_ptr<rocksdb::MergeOperator> make_doc_merge_operator(size_t max_depth) {
  return std::make_shared<DocMergeOperator>(max_depth);
}

}  // namespace canopy
