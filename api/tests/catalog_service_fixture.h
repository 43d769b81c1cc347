// The fixture shared by the Catalog service tests (catalog_service_test.cc,
// catalog_watch_test.cc, catalog_views_test.cc, catalog_access_test.cc): the
// real gRPC server on 127.0.0.1 and the generated client stub, over a real
// store, placement index and status aggregate.
#pragma once

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "api/catalog_service.h"
#include "api/grpc_server.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_store.h"

namespace canopy::api {

using json = nlohmann::json;

inline v1::Object object(std::string_view kind, std::string_view tenant, std::string_view name,
                         const std::string& text) {
  v1::Object o;
  o.set_kind(std::string(kind));
  o.set_tenant(std::string(tenant));
  o.set_name(std::string(name));
  o.set_json(text);
  return o;
}

inline json config_map(const std::string& name) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", "shop"}}},
          {"data", {{"greeting", "hello"}}}};
}

inline json eu_placement(const std::vector<std::string>& templates) {
  return {{"templates", templates}, {"selector", {{"matchLabels", {{"region", "eu"}}}}}};
}

class CatalogServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = open_test_store(dir_, "hub");
    ASSERT_NE(store_, nullptr);
    auth_ = std::make_unique<Authenticator>(store_.get(), SystemClock::instance());
    auto index = hub::PlacementIndex::attach(store_.get());
    ASSERT_TRUE(index.ok()) << index.status().to_string();
    index_ = std::move(index).value();
    auto status = hub::StatusAggregate::attach(store_.get(), index_.get());
    ASSERT_TRUE(status.ok()) << status.status().to_string();
    status_ = std::move(status).value();
    auto admin = auth_->issue(TokenRequest{model::Role::kFleetAdmin, "", 0, "test"});
    ASSERT_TRUE(admin.ok()) << admin.status().to_string();
    bearer_ = admin->bearer;
    // acme may place on every site (grants are tested in GrantsDecide...).
    ASSERT_TRUE(store_->put_value("t/acme/grants/all", nlohmann::json{{"allSites", true}}).ok());
    start({});
  }

  // Sends the current token (bearer_) with a call.
  void authorize(grpc::ClientContext* ctx) const {
    if (!bearer_.empty()) ctx->AddMetadata("authorization", "Bearer " + bearer_);
  }
  std::string issue(model::Role role, const std::string& tenant) {
    auto t = auth_->issue(TokenRequest{role, tenant, 0, "test"});
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? t->bearer : std::string();
  }

  void TearDown() override { stop(); }

  void start(CatalogOptions options) {
    service_ = std::make_unique<CatalogService>(store_.get(), index_.get(), status_.get(),
                                                auth_.get(), std::move(options));
    int port = 0;
    server_ = start_grpc_server("127.0.0.1:0", {service_.get()}, &port);
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    port_ = port;
    stub_ = v1::Catalog::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                     grpc::InsecureChannelCredentials()));
  }

  void stop() {
    if (server_ == nullptr) return;
    service_->shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_.reset();
    service_.reset();
  }

  grpc::Status put(const v1::Object& obj, v1::PutResponse* out = nullptr) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::PutRequest req;
    *req.mutable_object() = obj;
    v1::PutResponse resp;
    grpc::Status st = stub_->Put(&ctx, req, &resp);
    if (out != nullptr) *out = resp;
    return st;
  }
  void put_ok(std::string_view kind, std::string_view tenant, std::string_view name,
              const json& doc) {
    grpc::Status st = put(object(kind, tenant, name, doc.dump()));
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  grpc::Status get(std::string_view kind, std::string_view tenant, std::string_view name,
                   v1::Object* out = nullptr) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::GetRequest req;
    req.set_kind(std::string(kind));
    req.set_tenant(std::string(tenant));
    req.set_name(std::string(name));
    v1::GetResponse resp;
    grpc::Status st = stub_->Get(&ctx, req, &resp);
    if (out != nullptr) *out = resp.object();
    return st;
  }
  grpc::Status remove(std::string_view kind, std::string_view tenant, std::string_view name,
                      std::string_view site = "") {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::DeleteRequest req;
    req.set_kind(std::string(kind));
    req.set_tenant(std::string(tenant));
    req.set_name(std::string(name));
    req.set_site(std::string(site));
    v1::DeleteResponse resp;
    return stub_->Delete(&ctx, req, &resp);
  }
  grpc::Status list(std::string_view kind, std::string_view tenant, uint32_t page_size,
                    const std::string& token, v1::ListResponse* out) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::ListRequest req;
    req.set_kind(std::string(kind));
    req.set_tenant(std::string(tenant));
    req.set_page_size(page_size);
    req.set_page_token(token);
    return stub_->List(&ctx, req, out);
  }
  // Every name of a kind, page by page.
  std::vector<std::string> list_all(std::string_view kind, std::string_view tenant,
                                    uint32_t page_size, int* pages = nullptr) {
    std::vector<std::string> names;
    std::string token;
    int n = 0;
    do {
      v1::ListResponse resp;
      grpc::Status st = list(kind, tenant, page_size, token, &resp);
      EXPECT_TRUE(st.ok()) << st.error_message();
      if (!st.ok()) break;
      EXPECT_LE(resp.objects_size(),
                static_cast<int>(page_size == 0 ? kDefaultPageSize : page_size));
      for (const auto& o : resp.objects()) names.push_back(o.name());
      token = resp.next_page_token();
      ++n;
    } while (!token.empty() && n < 1000);
    if (pages != nullptr) *pages = n;
    return names;
  }
  void site(const std::string& name, const json& labels) {
    ASSERT_TRUE(store_->put_value("sites/" + name, {{"name", name}, {"labels", labels}}).ok());
  }

  canopy::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<hub::PlacementIndex> index_;
  std::unique_ptr<hub::StatusAggregate> status_;
  std::unique_ptr<Authenticator> auth_;
  std::string bearer_;  // sent with every call (authorize); the fleet admin's at first
  std::unique_ptr<CatalogService> service_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<v1::Catalog::Stub> stub_;
  int port_ = 0;
};

}  // namespace canopy::api
