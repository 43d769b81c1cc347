// CatalogService's watches (declared in catalog_service.h): the checks of a
// watch request, opening it on the fan-out, the blocking watch() REST uses,
// and the gRPC stream (a callback reactor).
#include <grpc/slice.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <string>

#include "api/catalog_internal.h"
#include "api/catalog_service.h"
#include "api/grpc_status.h"
#include "model/access.h"
#include "model/keys.h"
#include "model/names.h"

namespace canopy::api {
namespace {

// How often a watch stream without events checks whether its client left.
constexpr auto kWatchPoll = std::chrono::milliseconds(100);

// OUT_OF_RANGE: a watch cannot resume from `from`.
grpc::Status too_old(const std::string& from) {
  return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                      "from " + quote(from) +
                          ": the hub's log no longer reaches back that far (or the position is "
                          "another hub's); list again and watch again");
}

bool parse_position(std::string_view text, uint64_t* epoch, uint64_t* index) {
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == text.size()) return false;
  auto number = [](std::string_view digits, uint64_t* out) {
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *out);
    return ec == std::errc() && end == digits.data() + digits.size();
  };
  return number(text.substr(0, dot), epoch) && number(text.substr(dot + 1), index);
}

}  // namespace

grpc::Status CatalogService::check_watch(std::string_view authorization,
                                         const v1::WatchRequest& request) {
  if (auto a = authorize_object(authorization, false, request.kind(), request.tenant(), "");
      !a.ok()) {
    return a;
  }
  // Validate kind, tenant and site with a placeholder name.
  auto valid = object_key(request.kind(), request.tenant(), "x", "", request.site());
  if (!valid.ok()) return to_grpc(valid.status());
  if (request.kind() == kDevice) {
    // A tenant's devices live under each of its sites: one site's at a time,
    // on a site granted to the tenant (a fleet admin: any site).
    bool hidden = false;
    if (auto g = check_device_site(authorization, request.tenant(), request.site(), false, false,
                                   &hidden);
        !g.ok()) {
      return g;
    }
    if (hidden) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          not_found_message(kSite, "", request.site()));
    }
  }
  if (request.from().empty()) return grpc::Status::OK;
  uint64_t epoch = 0;
  uint64_t index = 0;
  if (!parse_position(request.from(), &epoch, &index)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "from " + quote(request.from()) + " is not a position this hub returned");
  }
  if (epoch != store_->log_epoch() || index + 1 < store_->first_log_index()) {
    return too_old(request.from());
  }
  return grpc::Status::OK;
}

namespace {

// Why `w` ended. REQUIRES: w.mu held.
grpc::Status watch_end_status(const WatchQueue& w, uint64_t epoch) {
  switch (w.end) {
    case WatchEnd::kOverflow:
      return to_grpc(fell_behind(w.limit, position_text(epoch, w.taken)));
    case WatchEnd::kShutdown:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the hub is shutting down");
    case WatchEnd::kError:
      return grpc::Status(grpc::StatusCode::INTERNAL,
                          "the hub could not read a changed object; re-list and watch again");
    case WatchEnd::kCancelled:
    case WatchEnd::kNone:
      break;
  }
  return grpc::Status::CANCELLED;
}

}  // namespace

grpc::Status CatalogService::start_watch(std::string_view authorization,
                                         const v1::WatchRequest& request,
                                         std::shared_ptr<WatchQueue>* out, std::string* position) {
  if (auto checked = check_watch(authorization, request); !checked.ok()) return checked;
  std::optional<uint64_t> from;
  if (!request.from().empty()) {
    uint64_t from_epoch = 0;
    uint64_t from_index = 0;
    parse_position(request.from(), &from_epoch, &from_index);
    if (from_epoch == 0 || from_epoch != fanout_->epoch()) return too_old(request.from());
    from = from_index;
  }
  uint64_t start = 0;
  auto w = fanout_->open(request.kind(), request.tenant(), request.site(),
                         prefix_of(request.kind(), request.tenant(), request.site()), from,
                         options_.watch_queue_limit, options_.watch_replay_limit, &start,
                         request.metadata_only());
  if (!w.ok()) {
    if (w.status().code() == StatusCode::kOutOfRange) return too_old(request.from());
    return to_grpc(w.status());
  }
  *out = std::move(w).value();
  *position = position_text(fanout_->epoch(), start);
  return grpc::Status::OK;
}

grpc::Status CatalogService::watch(std::string_view authorization, const v1::WatchRequest& request,
                                   const WatchSink& sink, std::string* resume_from) {
  std::shared_ptr<WatchQueue> w;
  std::string position;
  if (auto st = start_watch(authorization, request, &w, &position); !st.ok()) return st;
  {
    std::lock_guard lock(w->mu);
    w->wake = [q = w.get()] { q->cv.notify_one(); };
  }
  // Tells the client the watch is established: every later change reaches it.
  if (sink.established) sink.established(position);

  grpc::Status result = grpc::Status::OK;
  while (true) {
    std::vector<WatchItemPtr> batch;
    {
      std::unique_lock lock(w->mu);
      w->cv.wait_for(lock, kWatchPoll,
                     [&] { return !w->items.empty() || w->end != WatchEnd::kNone; });
      if (w->end != WatchEnd::kNone) {
        result = watch_end_status(*w, fanout_->epoch());
        if (w->end == WatchEnd::kOverflow && resume_from != nullptr) {
          *resume_from = position_text(fanout_->epoch(), w->taken);
        }
        break;
      }
      batch = w->take(w->items.size());
    }
    if (sink.cancelled && sink.cancelled()) {
      result = grpc::Status::CANCELLED;
      break;
    }
    bool sent = true;
    for (const auto& item : batch) {
      if (options_.before_watch_send) options_.before_watch_send();
      if (!sink.send(item->event)) {
        sent = false;
        break;
      }
    }
    if (!sent) {
      result = grpc::Status::CANCELLED;  // the client went away
      break;
    }
  }
  {
    std::lock_guard lock(w->mu);
    w->wake = nullptr;
  }
  fanout_->close(w);
  if (result.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    spdlog::warn("catalog: watch of {} ended: {}", w->prefix, result.error_message());
  }
  return result;
}

// One gRPC watch stream. Every member below `w_` is guarded by `w_->mu`: the
// fan-out calls pump() (as `wake`) with it held, and so do the reactions.
// At most one write is in flight; when it completes, what is pending
// meanwhile leaves as the next message.
class CatalogService::WatchReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  WatchReactor(CatalogService* service, grpc::CallbackServerContext* context,
               const grpc::ByteBuffer* request)
      : service_(service), context_(context) {
    v1::WatchRequest req;
    grpc::Slice bytes;
    if (!request->DumpToSingleSlice(&bytes).ok() ||
        !req.ParseFromArray(bytes.begin(), static_cast<int>(bytes.size()))) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the request is not a WatchRequest"));
      return;
    }
    std::string position;
    if (auto st = service->start_watch(bearer_of(context), req, &w_, &position); !st.ok()) {
      Finish(st);
      return;
    }
    std::lock_guard lock(w_->mu);
    w_->wake = [this] { pump(); };
    // The initial metadata tells the client the watch is established.
    StartSendInitialMetadata();
  }

  void OnSendInitialMetadataDone(bool ok) override {
    std::lock_guard lock(w_->mu);
    ready_ = true;
    if (!ok) w_->end_with(WatchEnd::kCancelled);
    pump();
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard lock(w_->mu);
    writing_ = false;
    if (!ok) w_->end_with(WatchEnd::kCancelled);
    pump();
  }
  void OnCancel() override {
    if (w_ == nullptr) return;
    std::lock_guard lock(w_->mu);
    w_->end_with(WatchEnd::kCancelled);
    pump();
  }
  void OnDone() override {
    if (w_ != nullptr) {
      grpc::Status why;
      {
        std::lock_guard lock(w_->mu);
        w_->wake = nullptr;
        if (w_->end == WatchEnd::kOverflow) why = watch_end_status(*w_, service_->fanout_->epoch());
      }
      service_->fanout_->close(w_);
      if (!why.ok())
        spdlog::warn("catalog: watch of {} ended: {}", w_->prefix, why.error_message());
    }
    delete this;
  }

 private:
  // A message carries at most this many bytes of events (one event always
  // fits: a document is at most 1 MiB, a client receives 4 MiB).
  static constexpr size_t kMessageBytes = 2 << 20;
  static constexpr size_t kMessageEvents = 4096;

  // Sends what is pending, or ends the stream. REQUIRES: w_->mu held.
  void pump() {
    if (finished_ || writing_ || !ready_) return;
    if (w_->end != WatchEnd::kNone) {
      finished_ = true;
      const uint64_t epoch = service_->fanout_->epoch();
      if (w_->end == WatchEnd::kOverflow) {
        // Machine-readable: where a new watch misses nothing.
        context_->AddTrailingMetadata(std::string(kResumeFromTrailer),
                                      position_text(epoch, w_->taken));
      }
      Finish(watch_end_status(*w_, epoch));
      return;
    }
    if (w_->items.empty()) return;
    if (service_->options_.before_watch_send) service_->options_.before_watch_send();
    // The message is the events' shared encodings, copied once into one
    // slice (one allocation a message, not one an event).
    size_t count = 0;
    size_t bytes = 0;
    for (const auto& item : w_->items) {
      if (count == kMessageEvents || (count > 0 && bytes + item->framed.size() > kMessageBytes)) {
        break;
      }
      bytes += item->framed.size();
      ++count;
    }
    grpc_slice buffer = grpc_slice_malloc(bytes);
    char* out = reinterpret_cast<char*>(GRPC_SLICE_START_PTR(buffer));
    for (size_t i = 0; i < count; ++i) {
      const WatchItem& item = *w_->items.front();
      std::memcpy(out, item.framed.data(), item.framed.size());
      out += item.framed.size();
      w_->note_taken(item);
      w_->items.pop_front();
    }
    grpc::Slice slice(buffer, grpc::Slice::STEAL_REF);
    message_ = grpc::ByteBuffer(&slice, 1);
    writing_ = true;
    StartWrite(&message_);
  }

  CatalogService* service_;
  grpc::CallbackServerContext* context_;
  std::shared_ptr<WatchQueue> w_;
  bool ready_ = false;
  bool writing_ = false;
  bool finished_ = false;
  grpc::ByteBuffer message_;
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* CatalogService::Watch(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new WatchReactor(this, context, request);
}

}  // namespace canopy::api
