// The Catalog service's Watch through the real gRPC server: changes of a
// kind and tenant, resuming from a position, bad requests, a watcher that
// falls behind, and shutdown.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "api/tests/catalog_service_fixture.h"

namespace canopy::api {
namespace {

// A watch stream read one event at a time (a message may carry several).
class Events {
 public:
  explicit Events(std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader)
      : reader_(std::move(reader)) {}
  grpc::ClientReader<v1::WatchResponse>* operator->() { return reader_.get(); }
  // The next event; false when the stream ended.
  bool Read(v1::WatchEvent* out) {
    while (next_ == static_cast<size_t>(message_.events_size())) {
      if (!reader_->Read(&message_)) return false;
      next_ = 0;
    }
    *out = message_.events(static_cast<int>(next_++));
    return true;
  }
  // Messages read so far are not counted; for tests of batching.
  const v1::WatchResponse& message() const { return message_; }

 private:
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> reader_;
  v1::WatchResponse message_;
  size_t next_ = 0;
};

Events watch(v1::Catalog::Stub* stub, grpc::ClientContext* ctx, const v1::WatchRequest& req) {
  return Events(stub->Watch(ctx, req));
}

// Reads the next event, failing the test when the stream ends.
v1::WatchEvent next_event(Events& reader) {
  v1::WatchEvent ev;
  EXPECT_TRUE(reader.Read(&ev));
  return ev;
}

TEST_F(CatalogServiceTest, WatchDeliversChangesOfItsKindAndTenant) {
  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  Events reader = watch(stub_.get(), &ctx, req);
  reader->WaitForInitialMetadata();  // the watch is established

  put_ok("template", "acme-2", "web", config_map("web"));      // another tenant
  put_ok("placement", "acme", "shop", eu_placement({"web"}));  // another kind
  put_ok("template", "acme", "web", config_map("web"));
  v1::WatchEvent ev = next_event(reader);
  EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
  EXPECT_EQ(ev.object().kind(), "template");
  EXPECT_EQ(ev.object().tenant(), "acme");
  EXPECT_EQ(ev.object().name(), "web");
  EXPECT_EQ(ev.object().json(), config_map("web").dump());
  const uint64_t v1_version = ev.object().version();

  json changed = config_map("web");
  changed["data"]["greeting"] = "bonjour";
  put_ok("template", "acme", "web", changed);
  ev = next_event(reader);
  EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
  EXPECT_EQ(ev.object().json(), changed.dump());
  EXPECT_GT(ev.object().version(), v1_version);

  // Changes that arrive by replication are events too.
  ASSERT_TRUE(store_->patch("t/acme/templates/web", R"({"data":{"greeting":"hola"}})").ok());
  ev = next_event(reader);
  EXPECT_EQ(json::parse(ev.object().json())["data"]["greeting"], "hola");

  ASSERT_TRUE(remove("template", "acme", "web").ok());
  ev = next_event(reader);
  EXPECT_EQ(ev.type(), v1::WatchEvent::DELETE);
  EXPECT_EQ(ev.object().name(), "web");
  EXPECT_TRUE(ev.object().json().empty());

  ctx.TryCancel();
  v1::WatchEvent ignored;
  while (reader.Read(&ignored)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(CatalogServiceTest, WatchResumesFromAPosition) {
  put_ok("template", "acme", "a", config_map("a"));
  std::string position;
  {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::WatchRequest req;
    req.set_kind("template");
    req.set_tenant("acme");
    Events reader = watch(stub_.get(), &ctx, req);
    reader->WaitForInitialMetadata();
    put_ok("template", "acme", "b", config_map("b"));
    v1::WatchEvent ev = next_event(reader);
    EXPECT_EQ(ev.object().name(), "b");
    position = ev.position();
    ctx.TryCancel();
  }
  ASSERT_FALSE(position.empty());
  // While nobody watches: one change, another tenant's, another kind's.
  put_ok("template", "acme", "c", config_map("c"));
  put_ok("template", "acme-2", "d", config_map("d"));
  ASSERT_TRUE(remove("template", "acme", "a").ok());

  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  req.set_from(position);
  Events reader = watch(stub_.get(), &ctx, req);
  v1::WatchEvent ev = next_event(reader);
  EXPECT_EQ(ev.object().name(), "c");
  EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
  ev = next_event(reader);
  EXPECT_EQ(ev.object().name(), "a");
  EXPECT_EQ(ev.type(), v1::WatchEvent::DELETE);
  // And then live changes, as any watch.
  put_ok("template", "acme", "e", config_map("e"));
  ev = next_event(reader);
  EXPECT_EQ(ev.object().name(), "e");
  ctx.TryCancel();
  v1::WatchEvent ignored;
  while (reader.Read(&ignored)) {
  }

  // A position from another log, or one the log no longer reaches.
  for (const std::string& from : {std::string("1.1"), std::string("12"), std::string("x.y")}) {
    grpc::ClientContext c2;
    authorize(&c2);
    req.set_from(from);
    Events r2 = watch(stub_.get(), &c2, req);
    while (r2.Read(&ignored)) {
    }
    const grpc::Status st = r2->Finish();
    EXPECT_EQ(st.error_code(),
              from == "1.1" ? grpc::StatusCode::OUT_OF_RANGE : grpc::StatusCode::INVALID_ARGUMENT)
        << from << ": " << st.error_message();
  }
  ASSERT_TRUE(store_->trim_log(store_->last_log_index()).ok());
  grpc::ClientContext c3;
  authorize(&c3);
  req.set_from(position);
  Events r3 = watch(stub_.get(), &c3, req);
  while (r3.Read(&ignored)) {
  }
  EXPECT_EQ(r3->Finish().error_code(), grpc::StatusCode::OUT_OF_RANGE);
}

TEST_F(CatalogServiceTest, WatchRefusesBadRequests) {
  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("Acme");
  Events reader = watch(stub_.get(), &ctx, req);
  v1::WatchEvent ev;
  EXPECT_FALSE(reader.Read(&ev));
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find(R"(tenant "Acme")"), std::string::npos);
}

// A watcher that falls behind is ended; the writers never wait for it.
TEST_F(CatalogServiceTest, WatchThatFallsBehindIsEnded) {
  stop();
  std::mutex mu;
  std::condition_variable cv;
  bool stalled = false, release = false;
  CatalogOptions options;
  options.watch_queue_limit = 5;
  options.before_watch_send = [&] {
    std::unique_lock lock(mu);
    if (stalled) return;  // only the first event stalls
    stalled = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  };
  start(std::move(options));

  grpc::ClientContext ctx;

  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  Events reader = watch(stub_.get(), &ctx, req);
  reader->WaitForInitialMetadata();

  put_ok("template", "acme", "first", config_map("first"));
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return stalled; }));
  }
  // The stream is stuck in its first send: five changes fill its queue, the
  // sixth overflows it.
  const auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) put_ok("template", "acme", "t" + std::to_string(i), config_map("x"));
  put_ok("template", "acme", "t0", config_map("y"));
  put_ok("template", "acme", "t5", config_map("x"));
  for (int i = 6; i < 50; ++i) put_ok("template", "acme", "t" + std::to_string(i), config_map("x"));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();

  v1::WatchEvent ev;
  ASSERT_TRUE(reader.Read(&ev));
  EXPECT_EQ(ev.object().name(), "first");
  EXPECT_FALSE(reader.Read(&ev));
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(st.error_message(),
            "watch fell behind by more than 5 changes; re-list and watch again");
  // Every write went in.
  EXPECT_EQ(list_all("template", "acme", 100).size(), 51u);
}

TEST_F(CatalogServiceTest, ShutdownEndsWatches) {
  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("site");
  Events reader = watch(stub_.get(), &ctx, req);
  reader->WaitForInitialMetadata();
  service_->shutdown();
  v1::WatchEvent ev;
  EXPECT_FALSE(reader.Read(&ev));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace canopy::api
