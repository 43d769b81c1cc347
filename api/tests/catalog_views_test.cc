// The Catalog service's views through the real gRPC server: a placement's
// status across its sites (offline ones included), what one site would
// apply (Render), and the conflicts concurrent writes left.
#include <gtest/gtest.h>

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api/tests/catalog_service_fixture.h"
#include "model/render.h"

namespace canopy::api {
namespace {

TEST_F(CatalogServiceTest, GetStatusAggregatesTheSitesOfAPlacement) {
  for (const char* s : {"a", "b", "c", "e"}) site(s, {{"region", "eu"}});
  site("d", {{"region", "us"}});
  put_ok("placement", "acme", "shop", eu_placement({"web", "db"}));
  auto status = [&](const std::string& s, const std::string& t, const json& doc) {
    ASSERT_TRUE(store_->put_value("sites/" + s + "/status/acme/" + t, doc).ok());
  };
  const json applied = {{"template", "t/acme/templates/x"}, {"outcome", "applied"}, {"hash", "ab"}};
  status("a", "web", applied);
  status("a", "db", applied);
  status("b", "web", {{"outcome", "failed"}, {"message", "image pull back-off"}});
  status("b", "db", applied);
  status("c", "web", applied);  // db not reported yet
  status("d", "web", applied);  // not targeted
  status("e", "web", applied);
  status("e", "db", {{"outcome", "removed"}});
  status("a", "other", {{"outcome", "failed"}});  // not in the placement

  grpc::ClientContext ctx;

  authorize(&ctx);
  v1::GetStatusRequest req;
  req.set_tenant("acme");
  req.set_placement("shop");
  v1::GetStatusResponse resp;
  grpc::Status st = stub_->GetStatus(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.targeted(), 4u);
  EXPECT_EQ(resp.applied(), 1u);
  EXPECT_EQ(resp.failed(), 1u);
  EXPECT_EQ(resp.pending(), 2u);
  ASSERT_EQ(resp.sites_size(), 4);
  EXPECT_EQ(resp.sites(0).site(), "a");
  EXPECT_EQ(resp.sites(0).state(), "applied");
  ASSERT_EQ(resp.sites(0).templates_size(), 2);
  EXPECT_EQ(resp.sites(0).templates(0).template_(), "db");
  EXPECT_EQ(resp.sites(0).templates(1).hash(), "ab");
  EXPECT_EQ(resp.sites(1).state(), "failed");
  EXPECT_EQ(resp.sites(1).templates(1).template_(), "web");
  EXPECT_EQ(resp.sites(1).templates(1).outcome(), "failed");
  EXPECT_EQ(resp.sites(1).templates(1).message(), "image pull back-off");
  EXPECT_EQ(resp.sites(2).state(), "pending");
  EXPECT_EQ(resp.sites(2).templates(0).outcome(), "pending");
  EXPECT_EQ(resp.sites(3).state(), "pending");
  EXPECT_EQ(resp.sites(3).templates(0).outcome(), "removed");
  EXPECT_TRUE(resp.next_page_token().empty());

  // Rows page; the counts stay over every site.
  std::vector<std::string> rows;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext pctx;
    authorize(&pctx);
    req.set_page_size(3);
    req.set_page_token(token);
    v1::GetStatusResponse page;
    ASSERT_TRUE(stub_->GetStatus(&pctx, req, &page).ok());
    EXPECT_EQ(page.targeted(), 4u);
    for (const auto& r : page.sites()) rows.push_back(r.site());
    token = page.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(rows, (std::vector<std::string>{"a", "b", "c", "e"}));
  EXPECT_EQ(pages, 2);

  // The index follows label changes: d joins as pending.
  site("d", {{"region", "eu"}});
  grpc::ClientContext ctx2;
  authorize(&ctx2);
  req.set_page_size(0);
  req.set_page_token("");
  ASSERT_TRUE(stub_->GetStatus(&ctx2, req, &resp).ok());
  EXPECT_EQ(resp.targeted(), 5u);
  EXPECT_EQ(resp.pending(), 3u);

  grpc::ClientContext ctx3;

  authorize(&ctx3);
  req.set_placement("nope");
  st = stub_->GetStatus(&ctx3, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), R"(placement "nope" of tenant "acme" not found)");
  grpc::ClientContext ctx4;
  authorize(&ctx4);
  req.set_placement("No");
  st = stub_->GetStatus(&ctx4, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find(R"(placement "No" is not a DNS-1123 label)"),
            std::string::npos);
}

TEST_F(CatalogServiceTest, SitesWithoutALiveSessionShowOfflineWithTheirLastState) {
  stop();
  hub::Liveness live = {{"a", {true, 1'000}}, {"b", {false, 500}}};  // c: never seen
  std::mutex mu;
  std::set<std::string> asked;  // the sites whose liveness GetStatus asked for
  CatalogOptions options;
  options.liveness = [&]() -> hub::LivenessOf {
    return [&](const std::string& s) -> std::optional<hub::SiteLiveness> {
      std::lock_guard lock(mu);
      asked.insert(s);
      auto it = live.find(s);
      return it == live.end() ? std::nullopt : std::optional<hub::SiteLiveness>(it->second);
    };
  };
  start(std::move(options));
  for (const char* s : {"a", "b", "c"}) site(s, {{"region", "eu"}});
  site("d", {{"region", "us"}});  // not targeted: its liveness is never asked
  put_ok("placement", "acme", "shop", eu_placement({"web"}));
  const json applied = {{"template", "t/acme/templates/web"}, {"outcome", "applied"}};
  for (const char* s : {"a", "b"}) {
    ASSERT_TRUE(store_->put_value(std::string("sites/") + s + "/status/acme/web", applied).ok());
  }
  auto status = [&] {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::GetStatusRequest req;
    req.set_tenant("acme");
    req.set_placement("shop");
    v1::GetStatusResponse resp;
    EXPECT_TRUE(stub_->GetStatus(&ctx, req, &resp).ok());
    return resp;
  };
  v1::GetStatusResponse resp = status();
  // b applied, then went silent: offline, never a stale "applied".
  EXPECT_EQ(resp.targeted(), 3u);
  EXPECT_EQ(resp.applied(), 1u);
  EXPECT_EQ(resp.pending(), 0u);
  EXPECT_EQ(resp.offline(), 2u);
  ASSERT_EQ(resp.sites_size(), 3);
  EXPECT_EQ(resp.sites(0).state(), "applied");
  EXPECT_TRUE(resp.sites(0).connected());
  EXPECT_EQ(resp.sites(0).last_seen_ms(), 1'000u);
  EXPECT_EQ(resp.sites(1).state(), "offline");
  EXPECT_EQ(resp.sites(1).last_state(), "applied");
  EXPECT_EQ(resp.sites(1).last_seen_ms(), 500u);
  EXPECT_FALSE(resp.sites(1).connected());
  EXPECT_EQ(resp.sites(2).state(), "offline");
  EXPECT_EQ(resp.sites(2).last_state(), "pending");
  EXPECT_EQ(resp.sites(2).last_seen_ms(), 0u);
  EXPECT_EQ(asked, (std::set<std::string>{"a", "b", "c"})) << "only the targeted sites are asked";
  // b comes back: its report counts again.
  {
    std::lock_guard lock(mu);
    live["b"] = {true, 2'000};
  }
  resp = status();
  EXPECT_EQ(resp.applied(), 2u);
  EXPECT_EQ(resp.offline(), 1u);
  EXPECT_EQ(resp.sites(1).state(), "applied");
}

TEST_F(CatalogServiceTest, RenderShowsWhatOneSiteWouldApply) {
  site("berlin", {{"region", "eu"}, {"tier", "shop"}});
  site("austin", {{"region", "us"}});
  put_ok("template", "acme", "web", config_map("web"));
  put_ok("placement", "acme", "shop", eu_placement({"web", "ghost"}));
  put_ok("override", "acme", "shops",
         {{"template", "web"},
          {"selector", {{"matchLabels", {{"tier", "shop"}}}}},
          {"patch", {{"data", {{"greeting", "moin"}}}}}});
  // The site's own local override applies last.
  ASSERT_TRUE(store_
                  ->put_value("sites/berlin/overrides/acme/web",
                              {{"patch", {{"data", {{"local", "yes"}}}}}})
                  .ok());
  auto render = [&](const std::string& tenant, const std::string& site,
                    const std::string& placement, v1::RenderResponse* resp) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::RenderRequest req;
    req.set_tenant(tenant);
    req.set_site(site);
    req.set_placement(placement);
    return stub_->Render(&ctx, req, resp);
  };
  v1::RenderResponse resp;
  grpc::Status st = render("acme", "berlin", "shop", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.manifests_size(), 1);
  const json m = json::parse(resp.manifests(0).json());
  EXPECT_EQ(m["data"], json({{"greeting", "moin"}, {"local", "yes"}}));
  EXPECT_EQ(m["metadata"]["annotations"]["canopy.io/template"], "t/acme/templates/web");
  EXPECT_EQ(resp.manifests(0).hash(), m["metadata"]["annotations"]["canopy.io/hash"]);
  EXPECT_EQ(resp.manifests(0).file(), model::manifest_file_name("acme", "web"));
  // The same renderer as the site's: the missing template is a failure.
  ASSERT_EQ(resp.failures_size(), 1);
  EXPECT_EQ(resp.failures(0).template_(), "ghost");

  // A site the placement does not choose, an unknown one, bad names.
  EXPECT_EQ(render("acme", "austin", "shop", &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(render("acme", "nowhere", "shop", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(render("acme", "berlin", "none", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(render("acme", "Berlin", "shop", &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Another tenant's token renders nothing of acme's; a tenant never learns
  // of a site not granted to it.
  const std::string admin = bearer_;
  bearer_ = issue(model::Role::kViewer, "globex");
  EXPECT_EQ(render("acme", "berlin", "shop", &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  bearer_ = admin;
  ASSERT_TRUE(store_->remove("t/acme/grants/all").ok());
  put_ok("grant", "acme", "us", {{"sites", {"austin"}}});
  EXPECT_EQ(render("acme", "berlin", "shop", &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  bearer_ = issue(model::Role::kViewer, "acme");
  EXPECT_EQ(render("acme", "berlin", "shop", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CatalogServiceTest, ConflictsListWhatConcurrentWritesOverwrote) {
  put_ok("template", "acme", "web", config_map("web"));
  put_ok("template", "globex", "web", config_map("web"));
  // Another replica (a second hub) edits the same fields without having seen
  // this hub's edits; then each side's change reaches the other.
  StoreOptions o;
  o.path = dir_.file("peer");
  o.durability = Durability::kNone;
  auto peer_or = Store::open(o);
  ASSERT_TRUE(peer_or.ok());
  std::unique_ptr<Store> peer = std::move(peer_or).value();
  for (const char* tenant : {"acme", "globex"}) {
    const std::string key = std::string("t/") + tenant + "/templates/web";
    // The peer starts from the hub's document.
    v1::DeltaBatch b;
    auto st = store_->states(key, key + '\x01', nullptr, 1);
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE(peer->apply_states(*st, store_->replica_id()).ok());
    auto mine = store_->patch(key, R"({"data": {"greeting": "from the hub"}})");
    auto theirs = peer->patch(key, R"({"data": {"greeting": "from the peer"}})");
    ASSERT_TRUE(mine.ok() && theirs.ok());
    *b.add_deltas() = *theirs;
    ASSERT_TRUE(store_->apply_remote(b, peer->replica_id()).ok());
  }
  auto list = [&](const std::string& tenant, const std::string& kind, const std::string& name,
                  v1::ListConflictsResponse* resp) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::ListConflictsRequest req;
    req.set_tenant(tenant);
    req.set_kind(kind);
    req.set_name(name);
    return stub_->ListConflicts(&ctx, req, resp);
  };
  v1::ListConflictsResponse resp;
  grpc::Status st = list("acme", "", "", &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.conflicts_size(), 1);
  const v1::Conflict& c = resp.conflicts(0);
  EXPECT_EQ(c.kind(), "template");
  EXPECT_EQ(c.name(), "web");
  EXPECT_EQ(c.path(), "/data/greeting");
  EXPECT_EQ(c.reason(), "concurrent");
  // Both values and both writers.
  const std::set<std::string> values = {json::parse(c.lost_json()).get<std::string>(),
                                        json::parse(c.current_json()).get<std::string>()};
  EXPECT_EQ(values, (std::set<std::string>{"from the hub", "from the peer"}));
  const std::set<std::string> writers = {c.lost_writer(), c.won_writer()};
  EXPECT_EQ(writers.size(), 2u);
  EXPECT_GT(c.won_at_ms(), 0u);
  // Filtered by object; another tenant's are never listed.
  ASSERT_TRUE(list("acme", "template", "web", &resp).ok());
  EXPECT_EQ(resp.conflicts_size(), 1);
  ASSERT_TRUE(list("acme", "placement", "", &resp).ok());
  EXPECT_EQ(resp.conflicts_size(), 0);
  EXPECT_EQ(list("acme", "", "web", &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(list("acme", "site", "", &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bearer_ = issue(model::Role::kViewer, "acme");
  ASSERT_TRUE(list("acme", "", "", &resp).ok());
  EXPECT_EQ(resp.conflicts_size(), 1);
  EXPECT_EQ(list("globex", "", "", &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

}  // namespace
}  // namespace canopy::api
