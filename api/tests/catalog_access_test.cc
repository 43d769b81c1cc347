// Access to the Catalog service through the real gRPC server: tokens issued,
// listed and revoked, calls without a valid token, tenants limited to their
// granted sites, and tokens limited to their tenant and role.
#include <gtest/gtest.h>

#include <string>

#include "api/tests/catalog_service_fixture.h"

namespace canopy::api {
namespace {

TEST_F(CatalogServiceTest, TokensAreIssuedListedAndRevoked) {
  put_ok("tenant", "", "acme", json::object());
  auto issue_call = [&](const std::string& role, const std::string& tenant,
                        v1::IssueTokenResponse* out) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::IssueTokenRequest req;
    req.set_role(role);
    req.set_tenant(tenant);
    return stub_->IssueToken(&ctx, req, out);
  };
  v1::IssueTokenResponse admin_of_acme;
  ASSERT_TRUE(issue_call("tenant-admin", "acme", &admin_of_acme).ok());
  EXPECT_EQ(admin_of_acme.token().role(), "tenant-admin");
  EXPECT_TRUE(admin_of_acme.bearer().starts_with("canopy_" + admin_of_acme.token().id() + "_"));
  v1::IssueTokenResponse ignored;
  EXPECT_EQ(issue_call("viewer", "nobody", &ignored).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(issue_call("fleet-admin", "acme", &ignored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // The tenant admin issues editors and viewers of its tenant only.
  bearer_ = admin_of_acme.bearer();
  v1::IssueTokenResponse editor;
  ASSERT_TRUE(issue_call("editor", "acme", &editor).ok());
  EXPECT_EQ(issue_call("tenant-admin", "acme", &ignored).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(issue_call("fleet-admin", "", &ignored).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::ListTokensRequest req;
    req.set_tenant("acme");
    v1::ListTokensResponse resp;
    ASSERT_TRUE(stub_->ListTokens(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.tokens_size(), 2);
    grpc::ClientContext all;
    authorize(&all);
    EXPECT_EQ(stub_->ListTokens(&all, v1::ListTokensRequest(), &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::RevokeTokenRequest req;
    req.set_id(editor.token().id());
    v1::RevokeTokenResponse resp;
    ASSERT_TRUE(stub_->RevokeToken(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.token().revoked());
  }
  bearer_ = editor.bearer();
  EXPECT_EQ(get("template", "acme", "web").error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// Every call is authenticated; a token acts only within its role and tenant
// (model/access.h); a refusal changes nothing.
TEST_F(CatalogServiceTest, CallsWithoutAValidTokenAreRefused) {
  put_ok("template", "acme", "web", config_map("web"));
  const std::string admin = bearer_;
  for (const std::string& bad :
       {std::string(), std::string("canopy_0123456789abcdef_") + std::string(43, 'x'),
        admin.substr(0, admin.size() - 1) + (admin.back() == 'A' ? "B" : "A"), std::string("x")}) {
    bearer_ = bad;
    EXPECT_EQ(get("template", "acme", "web").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(put(object("template", "acme", "db", config_map("db").dump())).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(remove("template", "acme", "web").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::ListResponse resp;
    EXPECT_EQ(list("template", "acme", 10, "", &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // A revoked token stops working at once.
  bearer_ = issue(model::Role::kEditor, "acme");
  ASSERT_TRUE(get("template", "acme", "web").ok());
  auto id = model::parse_bearer(bearer_);
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(auth_->revoke(id->id).ok());
  const grpc::Status revoked = get("template", "acme", "web");
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(revoked.error_message().find("revoked"), std::string::npos);
  bearer_ = admin;
  EXPECT_TRUE(store_->get("t/acme/templates/web").ok());
  EXPECT_FALSE(store_->get("t/acme/templates/db").ok());
}

TEST_F(CatalogServiceTest, ATenantSeesAndPlacesOnlyOnItsGrantedSites) {
  for (const char* s : {"shop-1", "shop-2"}) site(s, {{"region", "eu"}});
  site("tower-1", {{"region", "us"}});
  // acme: the eu shops; globex: tower-1 by name.
  ASSERT_TRUE(store_->remove("t/acme/grants/all").ok());
  put_ok("grant", "acme", "eu", {{"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  put_ok("grant", "globex", "towers", {{"sites", {"tower-1"}}});
  put_ok("template", "acme", "web", config_map("web"));
  // Listing tower-1 by name does not place acme on it.
  put_ok("placement", "acme", "shop",
         {{"templates", {"web"}}, {"sites", {"tower-1", "shop-1"}}, {"selector", json::object()}});
  EXPECT_EQ(index_->sites_for("t/acme/templates/web"), (std::vector<std::string>{"shop-1"}));

  const std::string admin = bearer_;
  bearer_ = issue(model::Role::kViewer, "acme");
  EXPECT_EQ(list_all("site", "", 1), (std::vector<std::string>{"shop-1", "shop-2"}));
  EXPECT_TRUE(get("site", "", "shop-2").ok());
  const grpc::Status hidden = get("site", "", "tower-1");
  EXPECT_EQ(hidden.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(hidden.error_message(), "site \"tower-1\" not found");  // as for no site at all
  {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::GetStatusRequest req;
    req.set_tenant("acme");
    req.set_placement("shop");
    v1::GetStatusResponse resp;
    ASSERT_TRUE(stub_->GetStatus(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.targeted(), 1u);
  }
  // A tenant reads its grants, never writes them.
  v1::Object grant;
  EXPECT_TRUE(get("grant", "acme", "eu", &grant).ok());
  EXPECT_EQ(put(object("grant", "acme", "all", R"({"allSites": true})")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  bearer_ = issue(model::Role::kTenantAdmin, "globex");
  EXPECT_EQ(list_all("site", "", 10), (std::vector<std::string>{"tower-1"}));
  EXPECT_EQ(get("site", "", "shop-1").error_code(), grpc::StatusCode::NOT_FOUND);

  // A grant that widens brings the site in; the fleet admin sees every site.
  bearer_ = admin;
  put_ok("grant", "acme", "towers", {{"sites", {"tower-1"}}});
  EXPECT_EQ(index_->sites_for("t/acme/templates/web"),
            (std::vector<std::string>{"shop-1", "tower-1"}));
  EXPECT_EQ(list_all("site", "", 10), (std::vector<std::string>{"shop-1", "shop-2", "tower-1"}));
}

TEST_F(CatalogServiceTest, ATokenActsOnlyWithinItsTenantAndRole) {
  put_ok("template", "acme", "web", config_map("web"));
  put_ok("template", "globex", "web", config_map("web"));
  site("tower-1", {{"region", "eu"}});
  const std::string admin = bearer_;
  const std::string viewer = issue(model::Role::kViewer, "acme");
  const std::string editor = issue(model::Role::kEditor, "acme");

  // A viewer reads its tenant's objects and status, and writes nothing.
  bearer_ = viewer;
  EXPECT_TRUE(get("template", "acme", "web").ok());
  v1::ListResponse listed;
  EXPECT_TRUE(list("template", "acme", 10, "", &listed).ok());
  const grpc::Status denied = put(object("template", "acme", "db", config_map("db").dump()));
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(denied.error_message().find("viewer of tenant acme"), std::string::npos)
      << denied.error_message();
  EXPECT_EQ(remove("template", "acme", "web").error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // An editor writes its tenant's objects, never another tenant's.
  bearer_ = editor;
  EXPECT_TRUE(put(object("template", "acme", "db", config_map("db").dump())).ok());
  for (const auto& [code, what] :
       {std::pair{get("template", "globex", "web").error_code(), "get"},
        std::pair{put(object("template", "globex", "db", config_map("db").dump())).error_code(),
                  "put"},
        std::pair{remove("template", "globex", "web").error_code(), "delete"},
        std::pair{list("template", "globex", 10, "", &listed).error_code(), "list"}}) {
    EXPECT_EQ(code, grpc::StatusCode::PERMISSION_DENIED) << what;
  }
  {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::WatchRequest req;
    req.set_kind("template");
    req.set_tenant("globex");
    auto reader = stub_->Watch(&ctx, req);
    v1::WatchResponse ev;
    EXPECT_FALSE(reader->Read(&ev));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::GetStatusRequest req;
    req.set_tenant("globex");
    req.set_placement("eu");
    v1::GetStatusResponse resp;
    EXPECT_EQ(stub_->GetStatus(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  // Sites are the fleet's: a tenant reads those granted to it (acme has every
  // site), only a fleet admin edits them.
  EXPECT_TRUE(get("site", "", "tower-1").ok());
  EXPECT_EQ(put(object("site", "", "tower-2", R"({"labels":{}})")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  bearer_ = admin;
  v1::Object globex;
  ASSERT_TRUE(get("template", "globex", "web", &globex).ok());
  EXPECT_EQ(globex.json(), config_map("web").dump());
  EXPECT_FALSE(store_->get("t/globex/templates/db").ok());
  EXPECT_FALSE(store_->get("sites/tower-2").ok());
  EXPECT_TRUE(get("site", "", "tower-1").ok());
}

}  // namespace
}  // namespace canopy::api
