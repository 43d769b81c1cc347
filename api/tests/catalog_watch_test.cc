// The Catalog service's Watch through the real gRPC server: changes of a
// kind and tenant, resuming from a position, bad requests, a watcher that
// falls behind, and shutdown.
#include <grpcpp/support/channel_arguments.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/http_server.h"
#include "api/rest.h"
#include "api/tests/catalog_service_fixture.h"
#include "tests/support/wait.h"

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

// A before_watch_send hook whose first call waits until release(): the
// stream stalls in its first send.
class FirstSendStall {
 public:
  std::function<void()> hook() {
    return [this] {
      std::unique_lock lock(mu_);
      if (stalled_) return;  // only the first send stalls
      stalled_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    };
  }
  bool wait_stalled() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return stalled_; });
  }
  void release() {
    {
      std::lock_guard lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stalled_ = false, released_ = false;
};

// A stream that outlives any test here ends with DEADLINE_EXCEEDED: a missing
// event fails the read instead of hanging the test (one did, once, under
// load).
constexpr std::chrono::seconds kWatchDeadline{120};
void bound(grpc::ClientContext* ctx) {
  if (ctx->deadline() == std::chrono::system_clock::time_point::max()) {
    ctx->set_deadline(std::chrono::system_clock::now() + kWatchDeadline);
  }
}

Events watch(v1::Catalog::Stub* stub, grpc::ClientContext* ctx, const v1::WatchRequest& req) {
  bound(ctx);
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

// A metadata-only watcher gets the same events as a full one, at the same
// positions and versions, without the documents; both share one prefix.
TEST_F(CatalogServiceTest, MetadataOnlyWatchGetsEventsWithoutDocuments) {
  grpc::ClientContext full_ctx, lean_ctx;
  authorize(&full_ctx);
  authorize(&lean_ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  Events full = watch(stub_.get(), &full_ctx, req);
  req.set_metadata_only(true);
  Events lean = watch(stub_.get(), &lean_ctx, req);
  full->WaitForInitialMetadata();
  lean->WaitForInitialMetadata();
  put_ok("template", "acme", "web", config_map("web"));
  put_ok("template", "acme", "api", config_map("api"));
  ASSERT_TRUE(remove("template", "acme", "web").ok());
  std::string first_position;
  for (int i = 0; i < 3; ++i) {
    const v1::WatchEvent f = next_event(full);
    const v1::WatchEvent l = next_event(lean);
    if (i == 0) first_position = l.position();
    EXPECT_EQ(l.type(), f.type()) << i;
    EXPECT_EQ(l.position(), f.position()) << i;
    EXPECT_EQ(l.object().kind(), "template");
    EXPECT_EQ(l.object().tenant(), "acme");
    EXPECT_EQ(l.object().name(), f.object().name()) << i;
    EXPECT_EQ(l.object().version(), f.object().version()) << i;
    EXPECT_TRUE(l.object().json().empty()) << i << ": " << l.object().json();
    if (f.type() == v1::WatchEvent::PUT) {
      EXPECT_FALSE(f.object().json().empty()) << i;
    }
  }
  // A resumed metadata-only watch replays without documents too.
  grpc::ClientContext resume_ctx;
  authorize(&resume_ctx);
  req.set_from(first_position);
  Events resumed = watch(stub_.get(), &resume_ctx, req);
  const v1::WatchEvent r1 = next_event(resumed);
  const v1::WatchEvent r2 = next_event(resumed);
  EXPECT_EQ(r1.object().name(), "api");
  EXPECT_EQ(r2.object().name(), "web");
  EXPECT_EQ(r2.type(), v1::WatchEvent::DELETE);
  EXPECT_TRUE(r1.object().json().empty()) << r1.object().json();
  resume_ctx.TryCancel();
  full_ctx.TryCancel();
  lean_ctx.TryCancel();
  v1::WatchEvent ignored;
  while (full.Read(&ignored)) {
  }
  while (lean.Read(&ignored)) {
  }
  while (resumed.Read(&ignored)) {
  }
}

// Devices live under their sites (sites/<site>/devices/<tenant>/<name>): a
// device watch names the site, and sees that tenant's devices there only.
TEST_F(CatalogServiceTest, WatchDeliversATenantsDevicesOfOneSite) {
  site("lyon", {{"region", "eu"}});
  site("paris", {{"region", "eu"}});
  const std::string hash = "$2b$04$UrDXCYlPNQURswfF2MBrOuNJzRtHfFCBQ52iWsLO/KBXfxi89YwZC";
  ASSERT_TRUE(store_->put_value("t/globex/grants/all", json{{"allSites", true}}).ok());
  auto device = [&](const std::string& tenant, const std::string& where, const std::string& name,
                    int speed) {
    v1::Object o = object(
        "device", tenant, name,
        json{{"credential", {{"passwordHash", hash}}}, {"desired", {{"speed", speed}}}}.dump());
    o.set_site(where);
    return put(o);
  };
  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("device");
  req.set_tenant("acme");
  req.set_site("lyon");
  Events reader = watch(stub_.get(), &ctx, req);
  reader->WaitForInitialMetadata();

  // The index learns of the sites and grants asynchronously.
  ASSERT_TRUE(canopy::testing::wait_until([&] { return device("globex", "lyon", "valve", 1).ok(); },
                                          std::chrono::milliseconds(10000),
                                          std::chrono::milliseconds(20)));
  ASSERT_TRUE(device("acme", "paris", "pump", 1).ok());  // another site
  ASSERT_TRUE(device("acme", "lyon", "pump", 2).ok());
  v1::WatchEvent ev = next_event(reader);
  EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
  EXPECT_EQ(ev.object().kind(), "device");
  EXPECT_EQ(ev.object().tenant(), "acme");
  EXPECT_EQ(ev.object().site(), "lyon");
  EXPECT_EQ(ev.object().name(), "pump");
  EXPECT_EQ(json::parse(ev.object().json())["desired"]["speed"], 2);
  ASSERT_TRUE(remove("device", "acme", "pump", "lyon").ok());
  ev = next_event(reader);
  EXPECT_EQ(ev.type(), v1::WatchEvent::DELETE);
  EXPECT_EQ(ev.object().site(), "lyon");
  EXPECT_EQ(ev.object().name(), "pump");
  ctx.TryCancel();
  v1::WatchEvent ignored;
  while (reader.Read(&ignored)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // Refused: no site, a site on another kind, another tenant's token, and
  // (as a read) a site not granted to the tenant.
  auto refused = [&](const v1::WatchRequest& r, const std::string& bearer) {
    grpc::ClientContext c;
    c.AddMetadata("authorization", "Bearer " + bearer);
    Events e = watch(stub_.get(), &c, r);
    v1::WatchEvent none;
    EXPECT_FALSE(e.Read(&none));
    return e->Finish();
  };
  v1::WatchRequest bad = req;
  bad.clear_site();
  grpc::Status st = refused(bad, bearer_);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("site is missing"), std::string::npos) << st.error_message();
  bad = req;
  bad.set_kind("template");
  EXPECT_EQ(refused(bad, bearer_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused(req, issue(model::Role::kViewer, "globex")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(store_->remove("t/acme/grants/all").ok());
  ASSERT_TRUE(store_->put_value("t/acme/grants/lyon", json{{"sites", {"lyon"}}}).ok());
  bad = req;
  bad.set_site("paris");
  const std::string viewer = issue(model::Role::kViewer, "acme");
  ASSERT_TRUE(canopy::testing::wait_until(
      [&] { return refused(bad, viewer).error_code() == grpc::StatusCode::NOT_FOUND; },
      std::chrono::milliseconds(10000), std::chrono::milliseconds(20)));
  grpc::ClientContext ok_ctx;
  ok_ctx.AddMetadata("authorization", "Bearer " + viewer);
  Events granted = watch(stub_.get(), &ok_ctx, req);
  granted->WaitForInitialMetadata();
  ASSERT_TRUE(device("acme", "lyon", "pump", 3).ok());
  ev = next_event(granted);
  EXPECT_EQ(ev.object().name(), "pump");
  ok_ctx.TryCancel();
  while (granted.Read(&ignored)) {
  }
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
  FirstSendStall stall;
  CatalogOptions options;
  options.watch_queue_limit = 5;
  options.before_watch_send = stall.hook();
  start(std::move(options));

  grpc::ClientContext ctx;

  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  Events reader = watch(stub_.get(), &ctx, req);
  reader->WaitForInitialMetadata();

  put_ok("template", "acme", "first", config_map("first"));
  ASSERT_TRUE(stall.wait_stalled());
  // The stream is stuck in its first send: five changes fill its queue, the
  // sixth overflows it.
  const auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) put_ok("template", "acme", "t" + std::to_string(i), config_map("x"));
  put_ok("template", "acme", "t0", config_map("y"));
  put_ok("template", "acme", "t5", config_map("x"));
  for (int i = 6; i < 50; ++i) put_ok("template", "acme", "t" + std::to_string(i), config_map("x"));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  stall.release();

  v1::WatchEvent ev;
  ASSERT_TRUE(reader.Read(&ev));
  EXPECT_EQ(ev.object().name(), "first");
  const std::string first_position = ev.position();
  EXPECT_FALSE(reader.Read(&ev));
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // The error says where to resume: after the last event the client got.
  EXPECT_EQ(st.error_message(), "watch fell behind by more than 5 changes; watch again from " +
                                    first_position + " to miss nothing");
  const auto trailer = ctx.GetServerTrailingMetadata().find("canopy-resume-from");
  ASSERT_NE(trailer, ctx.GetServerTrailingMetadata().end());
  EXPECT_EQ(std::string(trailer->second.data(), trailer->second.size()), first_position);
  // Every write went in.
  EXPECT_EQ(list_all("template", "acme", 100).size(), 51u);

  // A watch from there gets every object changed since (more than the
  // queue's limit: a replay is bounded separately), each at its last state,
  // in the order of their last changes, then live changes.
  stall.release();
  grpc::ClientContext again_ctx;
  authorize(&again_ctx);
  req.set_from(first_position);
  Events again = watch(stub_.get(), &again_ctx, req);
  std::vector<std::string> names;
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(again.Read(&ev)) << again->Finish().error_message();
    names.push_back(ev.object().name());
    if (ev.object().name() == "t0") {
      EXPECT_EQ(json::parse(ev.object().json())["metadata"]["name"], "y");
    }
  }
  std::vector<std::string> expected = {"t1", "t2", "t3", "t4", "t0"};
  for (int i = 5; i < 50; ++i) expected.push_back("t" + std::to_string(i));
  EXPECT_EQ(names, expected);
  put_ok("template", "acme", "live", config_map("live"));
  ASSERT_TRUE(again.Read(&ev));
  EXPECT_EQ(ev.object().name(), "live");
  again_ctx.TryCancel();
  while (again.Read(&ev)) {
  }
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

// A stub on a connection of its own (streams on one connection share its
// flow control), without BDP probing so that its windows stay small.
std::unique_ptr<v1::Catalog::Stub> own_connection(int port, int n) {
  grpc::ChannelArguments args;
  args.SetInt("canopy.test.connection", n);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return v1::Catalog::NewStub(grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                                        grpc::InsecureChannelCredentials(), args));
}

// The index in "<epoch>.<index>".
uint64_t index_of(const std::string& position) {
  return std::stoull(position.substr(position.find('.') + 1));
}

// Many watchers of several tenants and kinds share the fan-out: each gets
// exactly the changes of its kind and tenant, in order, positions rising.
TEST_F(CatalogServiceTest, WatchFanOutGivesEachWatcherExactlyItsEvents) {
  struct Stream {
    std::string kind, tenant;
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<Events> events;
  };
  const std::vector<std::pair<std::string, std::string>> scopes = {
      {"template", "acme"}, {"template", "acme-2"}, {"template", "globex"}, {"placement", "acme"}};
  std::vector<Stream> streams;
  for (int copy = 0; copy < 5; ++copy) {
    for (const auto& [kind, tenant] : scopes) {
      Stream st{kind, tenant, std::make_unique<grpc::ClientContext>(), nullptr};
      authorize(st.ctx.get());
      v1::WatchRequest req;
      req.set_kind(kind);
      req.set_tenant(tenant);
      st.events = std::make_unique<Events>(watch(stub_.get(), st.ctx.get(), req));
      (*st.events)->WaitForInitialMetadata();
      streams.push_back(std::move(st));
    }
  }
  // Interleaved writes: ten of each scope, some names written twice.
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> written;
  for (int i = 0; i < 10; ++i) {
    for (const auto& [kind, tenant] : scopes) {
      const std::string name = "o" + std::to_string(i);
      if (kind == "placement") {
        put_ok(kind, tenant, name, eu_placement({"web"}));
      } else {
        put_ok(kind, tenant, name, config_map(name));
      }
      written[{kind, tenant}].push_back(name);
    }
  }
  // A last write of each scope tells the reader it has seen everything.
  for (const auto& [kind, tenant] : scopes) {
    if (kind == "placement") {
      put_ok(kind, tenant, "end", eu_placement({"web"}));
    } else {
      put_ok(kind, tenant, "end", config_map("end"));
    }
  }
  for (auto& st : streams) {
    std::vector<std::string> got;
    uint64_t last = 0;
    v1::WatchEvent ev;
    while (st.events->Read(&ev)) {
      EXPECT_EQ(ev.object().kind(), st.kind);
      EXPECT_EQ(ev.object().tenant(), st.tenant);
      EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
      EXPECT_GT(index_of(ev.position()), last);
      last = index_of(ev.position());
      if (ev.object().name() == "end") break;
      got.push_back(ev.object().name());
    }
    EXPECT_EQ(got, (written[{st.kind, st.tenant}])) << st.kind << " of " << st.tenant;
    st.ctx->TryCancel();
    while (st.events->Read(&ev)) {
    }
    EXPECT_EQ((*st.events)->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
}

// Changes pending while a stream sends leave together, in one message, in
// order; a resume from a position in the middle of that message replays
// exactly what came after it.
TEST_F(CatalogServiceTest, WatchBatchesPendingEventsAndResumesMidBatch) {
  stop();
  FirstSendStall stall;
  CatalogOptions options;
  options.before_watch_send = stall.hook();
  start(std::move(options));

  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  bound(&ctx);
  auto reader = stub_->Watch(&ctx, req);
  reader->WaitForInitialMetadata();
  put_ok("template", "acme", "first", config_map("first"));
  ASSERT_TRUE(stall.wait_stalled());
  std::vector<std::string> names;
  for (int i = 0; i < 10; ++i) {
    names.push_back("b" + std::to_string(i));
    put_ok("template", "acme", names.back(), config_map(names.back()));
  }
  stall.release();

  // Every event once, in order, positions rising; the ten that were pending
  // together leave in fewer messages than events (in one, unless the first
  // send stalled before the fan-out had them all).
  v1::WatchResponse message;
  std::vector<std::string> got_names;
  std::vector<std::string> positions;
  std::string mid;  // a position inside a message of several events
  int messages = 0;
  uint64_t last = 0;
  while (got_names.size() < 11 && reader->Read(&message)) {
    ++messages;
    for (int i = 0; i < message.events_size(); ++i) {
      const v1::WatchEvent& ev = message.events(i);
      got_names.push_back(ev.object().name());
      EXPECT_EQ(json::parse(ev.object().json()), config_map(ev.object().name()));
      EXPECT_GT(index_of(ev.position()), last);
      last = index_of(ev.position());
      if (ev.object().name() != "first") positions.push_back(ev.position());
      if (i + 1 < message.events_size() && ev.object().name() != "first" && mid.empty()) {
        mid = ev.position();
      }
    }
  }
  std::vector<std::string> want = {"first"};
  want.insert(want.end(), names.begin(), names.end());
  EXPECT_EQ(got_names, want);
  EXPECT_LE(messages, 3);
  ASSERT_FALSE(mid.empty());
  ctx.TryCancel();
  while (reader->Read(&message)) {
  }
  reader->Finish();

  // Resume from inside a message: exactly the events after that position.
  const size_t after =
      static_cast<size_t>(std::find(positions.begin(), positions.end(), mid) - positions.begin());
  ASSERT_LT(after + 1, names.size());
  grpc::ClientContext c2;
  authorize(&c2);
  req.set_from(mid);
  Events resumed = watch(stub_.get(), &c2, req);
  std::vector<std::string> got;
  v1::WatchEvent ev;
  const size_t expected = names.size() - after - 1;
  while (got.size() < expected && resumed.Read(&ev)) got.push_back(ev.object().name());
  EXPECT_EQ(got,
            std::vector<std::string>(names.begin() + static_cast<long>(after) + 1, names.end()));
  EXPECT_EQ(ev.position(), positions.back());
  // Nothing more until the next change.
  put_ok("template", "acme", "later", config_map("later"));
  ASSERT_TRUE(resumed.Read(&ev));
  EXPECT_EQ(ev.object().name(), "later");
  c2.TryCancel();
  while (resumed.Read(&ev)) {
  }
}

// A watcher that stops reading is ended with RESOURCE_EXHAUSTED once its
// queue passes the limit; the writers and another watcher of the same
// objects go on at their pace.
TEST_F(CatalogServiceTest, SlowWatcherIsEndedWithoutSlowingOthers) {
  stop();
  CatalogOptions options;
  options.watch_queue_limit = 20;
  start(std::move(options));
  auto slow_stub = own_connection(port_, 1);
  auto fast_stub = own_connection(port_, 2);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  grpc::ClientContext slow_ctx;
  authorize(&slow_ctx);
  Events slow = watch(slow_stub.get(), &slow_ctx, req);
  slow->WaitForInitialMetadata();
  grpc::ClientContext fast_ctx;
  authorize(&fast_ctx);
  Events fast = watch(fast_stub.get(), &fast_ctx, req);
  fast->WaitForInitialMetadata();

  // The fast watcher reads as the writes go.
  std::vector<std::string> fast_got;
  std::thread reader([&] {
    v1::WatchEvent ev;
    while (fast.Read(&ev)) {
      fast_got.push_back(ev.object().name());
      if (ev.object().name() == "t199") return;
    }
  });
  // 200 changes of 16 KiB each: far more than the slow stream's window.
  json big = config_map("x");
  big["data"]["padding"] = std::string(16 << 10, 'p');
  const auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) put_ok("template", "acme", "t" + std::to_string(i), big);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(20));
  reader.join();
  ASSERT_EQ(fast_got.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(fast_got[i], "t" + std::to_string(i));

  // The slow one gets what was sent before it fell behind, then the end
  // with the position to resume from: that of the last event it got.
  v1::WatchEvent ev;
  std::vector<std::string> slow_got;
  std::string last_position;
  while (slow.Read(&ev)) {
    slow_got.push_back(ev.object().name());
    last_position = ev.position();
  }
  EXPECT_LT(slow_got.size(), 200u);
  const grpc::Status st = slow->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  const auto trailer = slow_ctx.GetServerTrailingMetadata().find("canopy-resume-from");
  ASSERT_NE(trailer, slow_ctx.GetServerTrailingMetadata().end());
  const std::string resume(trailer->second.data(), trailer->second.size());
  if (!last_position.empty()) {
    EXPECT_EQ(resume, last_position);
  }
  EXPECT_EQ(st.error_message(), "watch fell behind by more than 20 changes; watch again from " +
                                    resume + " to miss nothing");

  // Resumed from there, it gets the rest: with what it got, every change
  // exactly once and in order.
  grpc::ClientContext resumed_ctx;
  authorize(&resumed_ctx);
  v1::WatchRequest from = req;
  from.set_from(resume);
  Events resumed = watch(slow_stub.get(), &resumed_ctx, from);
  while (slow_got.size() < 200) {
    ASSERT_TRUE(resumed.Read(&ev)) << resumed->Finish().error_message();
    slow_got.push_back(ev.object().name());
  }
  for (int i = 0; i < 200; ++i) EXPECT_EQ(slow_got[i], "t" + std::to_string(i));
  resumed_ctx.TryCancel();
  while (resumed.Read(&ev)) {
  }

  // The fast one is still live.
  put_ok("template", "acme", "after", config_map("after"));
  ASSERT_TRUE(fast.Read(&ev));
  EXPECT_EQ(ev.object().name(), "after");
  fast_ctx.TryCancel();
  while (fast.Read(&ev)) {
  }
}

// Over REST too: a watcher that falls behind gets an error line naming the
// position to watch again from, and a watch from there gets the rest.
TEST_F(CatalogServiceTest, RestWatchThatFallsBehindSaysWhereToResume) {
  stop();
  FirstSendStall stall;
  CatalogOptions options;
  options.watch_queue_limit = 5;
  options.before_watch_send = stall.hook();
  start(std::move(options));
  HttpServer http;
  add_rest_routes(http.server(), [this] { return service_.get(); });
  ASSERT_TRUE(http.start("127.0.0.1:0").ok());

  // Reads NDJSON lines of `path` until `enough` of them (0: the stream's end).
  std::mutex mu;
  auto read_lines = [&](const std::string& path, std::vector<json>* lines, size_t enough) {
    httplib::Client client("127.0.0.1", http.port());
    client.set_read_timeout(20, 0);
    std::string pending;
    client.Get(path, {{"Authorization", "Bearer " + bearer_}}, [&](const char* data, size_t size) {
      std::lock_guard lock(mu);
      pending.append(data, size);
      for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
        lines->push_back(json::parse(pending.substr(0, nl)));
        pending.erase(0, nl + 1);
      }
      return enough == 0 || lines->size() < enough;
    });
  };
  std::vector<json> lines;
  std::thread reader([&] { read_lines("/v1/watch?kind=template&tenant=acme", &lines, 0); });
  ASSERT_TRUE(canopy::testing::wait_until(
      [&] {
        std::lock_guard lock(mu);
        return !lines.empty();
      },
      std::chrono::seconds(10)));
  put_ok("template", "acme", "first", config_map("first"));
  ASSERT_TRUE(stall.wait_stalled());
  EXPECT_EQ(service_->watch_stats().watchers, 1u);
  for (int i = 0; i < 10; ++i) put_ok("template", "acme", "t" + std::to_string(i), config_map("x"));
  // The fan-out hands changes over on its own thread: wait until it has
  // ended the stalled stream before letting that stream drain its queue.
  const bool overflowed = canopy::testing::wait_until(
      [&] { return service_->watch_stats().fell_behind == 1; }, std::chrono::seconds(10));
  stall.release();
  reader.join();  // the server ends the stream
  ASSERT_TRUE(overflowed);
  EXPECT_TRUE(canopy::testing::wait_until([&] { return service_->watch_stats().watchers == 0; },
                                          std::chrono::seconds(10)));

  // BOOKMARK, "first" (the stall held the stream until its queue
  // overflowed, so none of t0..), then the error naming the position of the
  // last change it was handed.
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["type"], "BOOKMARK");
  EXPECT_EQ(lines[1]["type"], "PUT");
  EXPECT_EQ(lines[1]["object"]["name"], "first");
  EXPECT_EQ(lines[1]["object"]["document"], config_map("first"));
  const std::string position = lines[1]["position"];
  const json& error = lines.back()["error"];
  EXPECT_EQ(error["code"], "RESOURCE_EXHAUSTED");
  EXPECT_EQ(error["resume_from"], position);
  EXPECT_EQ(error["message"], "watch fell behind by more than 5 changes; watch again from " +
                                  position + " to miss nothing");

  // Resumed from there: every change it missed, in order, none twice.
  std::vector<json> resumed;
  read_lines("/v1/watch?kind=template&tenant=acme&from=" + position, &resumed, 11);
  ASSERT_EQ(resumed.size(), 11u);
  EXPECT_EQ(resumed[0]["type"], "BOOKMARK");
  for (size_t k = 0; k < 10; ++k) {
    EXPECT_EQ(resumed[k + 1]["object"]["name"], "t" + std::to_string(k)) << resumed[k + 1];
  }
  http.stop();
}

}  // namespace
}  // namespace canopy::api
