// The Catalog service through the real gRPC server on 127.0.0.1 and the
// generated client stub, over a real store and placement index.
#include "api/catalog_service.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "api/grpc_server.h"
#include "api/grpc_status.h"
#include "model/render.h"
#include "tests/support/temp_dir.h"

namespace canopy::api {
namespace {

using json = nlohmann::json;

v1::Object object(std::string_view kind, std::string_view tenant, std::string_view name,
                  const std::string& text) {
  v1::Object o;
  o.set_kind(std::string(kind));
  o.set_tenant(std::string(tenant));
  o.set_name(std::string(name));
  o.set_json(text);
  return o;
}

json config_map(const std::string& name) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"name", name}, {"namespace", "shop"}}},
          {"data", {{"greeting", "hello"}}}};
}

json eu_placement(const std::vector<std::string>& templates) {
  return {{"templates", templates}, {"selector", {{"matchLabels", {{"region", "eu"}}}}}};
}

class CatalogServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o;
    o.path = dir_.file("hub");
    o.durability = Durability::kNone;
    auto s = Store::open(o);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    store_ = std::move(s).value();
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
  grpc::Status remove(std::string_view kind, std::string_view tenant, std::string_view name) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::DeleteRequest req;
    req.set_kind(std::string(kind));
    req.set_tenant(std::string(tenant));
    req.set_name(std::string(name));
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
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Catalog::Stub> stub_;
  int port_ = 0;
};

TEST_F(CatalogServiceTest, PutGetDelete) {
  v1::PutResponse put_resp;
  ASSERT_TRUE(put(object("template", "acme", "web", config_map("web").dump(2)), &put_resp).ok());
  EXPECT_EQ(put_resp.object().json(), config_map("web").dump());  // canonical
  EXPECT_GT(put_resp.object().version(), 0u);
  EXPECT_EQ(put_resp.object().kind(), "template");
  EXPECT_EQ(put_resp.object().tenant(), "acme");
  EXPECT_EQ(put_resp.object().name(), "web");

  v1::Object got;
  ASSERT_TRUE(get("template", "acme", "web", &got).ok());
  EXPECT_EQ(got.json(), config_map("web").dump());
  EXPECT_EQ(got.version(), put_resp.object().version());
  auto stored = store_->get("t/acme/templates/web");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(*stored, got.json());

  // A replacement drops the fields it no longer has and bumps the version.
  json changed = config_map("web");
  changed.erase("data");
  ASSERT_TRUE(put(object("template", "acme", "web", changed.dump()), &put_resp).ok());
  EXPECT_EQ(put_resp.object().json(), changed.dump());
  EXPECT_GT(put_resp.object().version(), got.version());

  // Each kind lands at its key.
  put_ok("placement", "acme", "shop", eu_placement({"web"}));
  put_ok("override", "acme", "web-small", {{"template", "web"}, {"patch", {{"data", nullptr}}}});
  put_ok("site", "", "lyon", {{"labels", {{"region", "eu"}}}});
  EXPECT_TRUE(store_->get("t/acme/placements/shop").ok());
  EXPECT_TRUE(store_->get("t/acme/overrides/web-small").ok());
  auto site_doc = store_->get("sites/lyon");
  ASSERT_TRUE(site_doc.ok());
  EXPECT_EQ(json::parse(*site_doc)["name"], "lyon");  // filled in
  // The index follows: the site now holds the template.
  EXPECT_TRUE(index_->in_scope("lyon", "t/acme/templates/web"));

  ASSERT_TRUE(remove("template", "acme", "web").ok());
  grpc::Status st = get("template", "acme", "web");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), R"(template "web" of tenant "acme" not found)");
  st = remove("template", "acme", "web");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(), R"(template "web" of tenant "acme" not found)");
  st = remove("placement", "acme", "never");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  st = get("site", "", "paris");
  EXPECT_EQ(st.error_message(), R"(site "paris" not found)");
}

TEST_F(CatalogServiceTest, AcceptsEverySelectorForm) {
  const json exprs = {{"key", "tier"}, {"operator", "In"}, {"values", {"shop", "cell-tower"}}};
  put_ok("placement", "acme", "exprs",
         {{"templates", {"web"}}, {"selector", {{"matchExpressions", {exprs}}}}});
  put_ok("placement", "acme", "both",
         {{"templates", {"web"}},
          {"selector",
           {{"matchLabels", {{"region", "eu-west"}}},
            {"matchExpressions",
             {exprs,
              {{"key", "legacy"}, {"operator", "DoesNotExist"}},
              {{"key", "arch"}, {"operator", "NotIn"}, {"values", {"s390x"}}},
              {{"key", "zone"}, {"operator", "Exists"}}}}}}});
  put_ok("override", "acme", "tier",
         {{"template", "web"},
          {"patch", json::object()},
          {"selector", {{"matchExpressions", {exprs}}}}});
}

TEST_F(CatalogServiceTest, ListPaginates) {
  std::vector<std::string> want;
  for (int i = 0; i < 25; ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "web-%02d", i);
    put_ok("template", "acme", name, config_map(name));
    if (i != 7) want.push_back(name);
  }
  ASSERT_TRUE(remove("template", "acme", "web-07").ok());
  // Neighbours that must not show up: another tenant whose name extends
  // "acme", another kind, a key below a template's.
  put_ok("template", "acme-2", "other", config_map("other"));
  put_ok("placement", "acme", "shop", eu_placement({"web-01"}));
  ASSERT_TRUE(store_->put("t/acme/templates/web-01/extra", R"({"a":1})").ok());

  int pages = 0;
  EXPECT_EQ(list_all("template", "acme", 10, &pages), want);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(list_all("template", "acme", 24, &pages), want);
  EXPECT_EQ(pages, 1);
  EXPECT_EQ(list_all("template", "acme", 0), want);  // default page size
  EXPECT_EQ(list_all("placement", "acme", 10), std::vector<std::string>{"shop"});
  EXPECT_TRUE(list_all("override", "acme", 10).empty());

  v1::ListResponse resp;
  ASSERT_TRUE(list("template", "acme", 1, "", &resp).ok());
  ASSERT_EQ(resp.objects_size(), 1);
  EXPECT_EQ(resp.objects(0).json(), config_map("web-00").dump());
  EXPECT_GT(resp.objects(0).version(), 0u);
  EXPECT_EQ(resp.next_page_token(), "web-00");

  grpc::Status st = list("template", "acme", 10, "not a token", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("page_token"), std::string::npos);
  st = list("template", "", 10, "", &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "tenant is missing");
}

TEST_F(CatalogServiceTest, ListSitesSkipsTheirSubtrees) {
  std::vector<std::string> want;
  for (int i = 0; i < 12; ++i) {
    const std::string name = "site-" + std::to_string(100 + i);
    put_ok("site", "", name, {{"labels", {{"region", "eu"}}}});
    ASSERT_TRUE(store_->put("sites/" + name + "/status/acme/web", R"({"outcome":"applied"})").ok());
    want.push_back(name);
  }
  int pages = 0;
  EXPECT_EQ(list_all("site", "", 5, &pages), want);
  EXPECT_EQ(pages, 3);
}

struct BadPut {
  std::string what;
  v1::Object object;
  grpc::StatusCode code;
  std::string message;  // a part of the message
};

std::vector<BadPut> bad_puts() {
  const std::string big(DocumentLimits{}.max_doc_bytes + 100, 'x');
  json deep = json::object();
  for (int i = 0; i < 80; ++i) deep = json{{"d", deep}};
  json deep_template = config_map("deep");
  deep_template["spec"] = deep;
  json big_template = config_map("big");
  big_template["data"] = {{"blob", big}};
  auto tmpl = [](json doc) { return object("template", "acme", "web", doc.dump()); };
  auto without = [](json doc, const std::string& field) {
    doc.erase(field);
    return doc;
  };
  auto with = [](json doc, const json::json_pointer& at, const json& v) {
    doc[at] = v;
    return doc;
  };
  auto plc = [](const json& doc) { return object("placement", "acme", "shop", doc.dump()); };
  auto ovr = [](const json& doc) { return object("override", "acme", "small", doc.dump()); };
  const auto IA = grpc::StatusCode::INVALID_ARGUMENT;
  const json cm = config_map("web");
  return {
      {"no kind", object("", "acme", "web", cm.dump()), IA, "object.kind is missing"},
      {"unknown kind", object("deployment", "acme", "web", cm.dump()), IA,
       R"(object.kind "deployment" is not one of template, placement, override, grant, site, tenant)"},
      {"no tenant", object("template", "", "web", cm.dump()), IA, "object.tenant is missing"},
      {"bad tenant", object("template", "Acme", "web", cm.dump()), IA,
       R"(object.tenant "Acme" is not a DNS-1123 label)"},
      {"bad name", object("template", "acme", "Web_1", cm.dump()), IA,
       R"(object.name "Web_1" is not a DNS-1123 label)"},
      {"name ends with -", object("template", "acme", "web-", cm.dump()), IA,
       R"(object.name "web-" is not a DNS-1123 label)"},
      {"long name", object("template", "acme", std::string(64, 'a'), cm.dump()), IA,
       "is not a DNS-1123 label"},
      {"name with slash", object("template", "acme", "a/b", cm.dump()), IA,
       R"(object.name "a/b" is not)"},
      {"site with tenant", object("site", "acme", "lyon", R"({"labels":{}})"), IA,
       "object.tenant must be empty for kind site"},
      {"no json", object("template", "acme", "web", ""), IA,
       R"(template "web": object.json is missing)"},
      {"malformed json", object("template", "acme", "web", R"({"apiVersion": "v1",)"), IA,
       R"(template "web": object.json is not valid JSON: )"},
      {"array json", object("template", "acme", "web", "[1,2]"), IA,
       R"(template "web": object.json must be a JSON object, not array)"},
      {"string json", object("template", "acme", "web", R"("web")"), IA,
       "object.json must be a JSON object, not string"},
      {"oversized", tmpl(big_template), IA,
       "exceeds the limit of " + std::to_string(DocumentLimits{}.max_doc_bytes)},
      {"too deep", tmpl(deep_template), IA, "nests deeper than 64"},
      {"no apiVersion", tmpl(without(cm, "apiVersion")), IA,
       R"(template "web": apiVersion is missing)"},
      {"kind not a string", tmpl(with(cm, "/kind"_json_pointer, 5)), IA,
       "kind must be a string, not number"},
      {"no metadata", tmpl(without(cm, "metadata")), IA, "metadata is missing"},
      {"no metadata.name", tmpl(with(cm, "/metadata"_json_pointer, json::object())), IA,
       "metadata.name is missing"},
      {"bad metadata.name", tmpl(with(cm, "/metadata/name"_json_pointer, "Web_1")), IA,
       R"(template "web": metadata.name "Web_1" is not a DNS-1123 subdomain)"},
      {"bad namespace", tmpl(with(cm, "/metadata/namespace"_json_pointer, "my ns")), IA,
       R"(metadata.namespace "my ns" is not a DNS-1123 label)"},
      {"placement without templates", plc({{"sites", {"lyon"}}}), IA,
       R"(placement "shop": templates is missing)"},
      {"templates not an array", plc({{"templates", "web"}, {"sites", {"lyon"}}}), IA,
       "templates must be an array of names, not string"},
      {"bad template name", plc({{"templates", {"web", "Web"}}, {"sites", {"lyon"}}}), IA,
       R"(templates[1] "Web" is not a DNS-1123 label)"},
      {"template not a string", plc({{"templates", {1}}, {"sites", {"lyon"}}}), IA,
       "templates[0] must be a string"},
      {"placement choosing no sites", plc({{"templates", {"web"}}}), IA,
       "sites or selector is missing or empty"},
      {"selector not an object", plc({{"templates", {"web"}}, {"selector", "region=eu"}}), IA,
       "selector must be an object"},
      {"label value not a string",
       plc({{"templates", {"web"}}, {"selector", {{"matchLabels", {{"region", 1}}}}}}), IA,
       "selector.matchLabels.region must be a string, not number"},
      {"bad site name", plc({{"templates", {"web"}}, {"sites", {"Lyon"}}}), IA,
       R"(sites[0] "Lyon" is not a DNS-1123 label)"},
      {"override without template", ovr({{"patch", json::object()}}), IA,
       R"(override "small": template is missing)"},
      {"override without patch", ovr({{"template", "web"}}), IA, "patch is missing"},
      {"patch not an object", ovr({{"template", "web"}, {"patch", {1, 2}}}), IA,
       "patch must be an object (a JSON merge patch), not array"},
      {"site name differs", object("site", "", "lyon", R"({"name":"paris"})"), IA,
       R"(site "lyon": name "paris" differs from the site's name "lyon")"},
      {"site label not a string", object("site", "", "lyon", R"({"labels":{"tier":2}})"), IA,
       "labels.tier must be a string"},
      // What every site checks is checked here (model/documents.h).
      {"template label not a string",
       tmpl(with(cm, "/metadata/labels"_json_pointer, json{{"tier", 3}})), IA,
       "metadata.labels.tier must be a string, not number"},
      {"bad selector operator",
       plc({{"templates", {"web"}},
            {"selector",
             {{"matchExpressions", {{{"key", "tier"}, {"operator", "in"}, {"values", {"a"}}}}}}}}),
       IA, R"(selector.matchExpressions[0].operator "in" is not one of In, NotIn)"},
      {"misspelt field",
       plc({{"templates", {"web"}}, {"sites", {"lyon"}}, {"selecter", json::object()}}), IA,
       R"(placement "shop": "selecter" is not a field)"},
  };
}

TEST_F(CatalogServiceTest, BadInputIsRefusedAndChangesNothing) {
  // Objects that exist already must keep their content too.
  put_ok("template", "acme", "web", config_map("web"));
  put_ok("placement", "acme", "shop", eu_placement({"web"}));
  const uint64_t index_before = store_->last_log_index();
  auto web_before = store_->get("t/acme/templates/web");
  auto shop_before = store_->get("t/acme/placements/shop");

  for (const BadPut& c : bad_puts()) {
    SCOPED_TRACE(c.what);
    grpc::Status st = put(c.object);
    EXPECT_EQ(st.error_code(), c.code) << st.error_message();
    EXPECT_NE(st.error_message().find(c.message), std::string::npos)
        << "message: " << st.error_message() << "\nwanted: " << c.message;
  }
  {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::PutRequest empty;
    v1::PutResponse resp;
    grpc::Status st = stub_->Put(&ctx, empty, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(st.error_message(), "object is missing");
  }
  EXPECT_EQ(store_->last_log_index(), index_before);
  EXPECT_EQ(*store_->get("t/acme/templates/web"), *web_before);
  EXPECT_EQ(*store_->get("t/acme/placements/shop"), *shop_before);
  EXPECT_FALSE(store_->get("t/acme/overrides/small").ok());
  EXPECT_FALSE(store_->get("sites/lyon").ok());

  // Reads and deletes check their names the same way.
  grpc::Status st = get("template", "acme", "Web");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find(R"(name "Web" is not a DNS-1123 label)"), std::string::npos);
  st = remove("template", "acme", "../web");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  st = remove("secret", "acme", "web");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find(R"(kind "secret")"), std::string::npos);
  EXPECT_EQ(store_->last_log_index(), index_before);
}

// Reads the next event, failing the test when the stream ends.
v1::WatchEvent next_event(grpc::ClientReader<v1::WatchEvent>* reader) {
  v1::WatchEvent ev;
  EXPECT_TRUE(reader->Read(&ev));
  return ev;
}

TEST_F(CatalogServiceTest, WatchDeliversChangesOfItsKindAndTenant) {
  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("acme");
  auto reader = stub_->Watch(&ctx, req);
  reader->WaitForInitialMetadata();  // the watch is established

  put_ok("template", "acme-2", "web", config_map("web"));      // another tenant
  put_ok("placement", "acme", "shop", eu_placement({"web"}));  // another kind
  put_ok("template", "acme", "web", config_map("web"));
  v1::WatchEvent ev = next_event(reader.get());
  EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
  EXPECT_EQ(ev.object().kind(), "template");
  EXPECT_EQ(ev.object().tenant(), "acme");
  EXPECT_EQ(ev.object().name(), "web");
  EXPECT_EQ(ev.object().json(), config_map("web").dump());
  const uint64_t v1_version = ev.object().version();

  json changed = config_map("web");
  changed["data"]["greeting"] = "bonjour";
  put_ok("template", "acme", "web", changed);
  ev = next_event(reader.get());
  EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
  EXPECT_EQ(ev.object().json(), changed.dump());
  EXPECT_GT(ev.object().version(), v1_version);

  // Changes that arrive by replication are events too.
  ASSERT_TRUE(store_->patch("t/acme/templates/web", R"({"data":{"greeting":"hola"}})").ok());
  ev = next_event(reader.get());
  EXPECT_EQ(json::parse(ev.object().json())["data"]["greeting"], "hola");

  ASSERT_TRUE(remove("template", "acme", "web").ok());
  ev = next_event(reader.get());
  EXPECT_EQ(ev.type(), v1::WatchEvent::DELETE);
  EXPECT_EQ(ev.object().name(), "web");
  EXPECT_TRUE(ev.object().json().empty());

  ctx.TryCancel();
  v1::WatchEvent ignored;
  while (reader->Read(&ignored)) {
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
    auto reader = stub_->Watch(&ctx, req);
    reader->WaitForInitialMetadata();
    put_ok("template", "acme", "b", config_map("b"));
    v1::WatchEvent ev = next_event(reader.get());
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
  auto reader = stub_->Watch(&ctx, req);
  v1::WatchEvent ev = next_event(reader.get());
  EXPECT_EQ(ev.object().name(), "c");
  EXPECT_EQ(ev.type(), v1::WatchEvent::PUT);
  ev = next_event(reader.get());
  EXPECT_EQ(ev.object().name(), "a");
  EXPECT_EQ(ev.type(), v1::WatchEvent::DELETE);
  // And then live changes, as any watch.
  put_ok("template", "acme", "e", config_map("e"));
  ev = next_event(reader.get());
  EXPECT_EQ(ev.object().name(), "e");
  ctx.TryCancel();
  v1::WatchEvent ignored;
  while (reader->Read(&ignored)) {
  }

  // A position from another log, or one the log no longer reaches.
  for (const std::string& from : {std::string("1.1"), std::string("12"), std::string("x.y")}) {
    grpc::ClientContext c2;
    authorize(&c2);
    req.set_from(from);
    auto r2 = stub_->Watch(&c2, req);
    while (r2->Read(&ignored)) {
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
  auto r3 = stub_->Watch(&c3, req);
  while (r3->Read(&ignored)) {
  }
  EXPECT_EQ(r3->Finish().error_code(), grpc::StatusCode::OUT_OF_RANGE);
}

TEST_F(CatalogServiceTest, AStaleVersionIsRefused) {
  v1::PutResponse first;
  ASSERT_TRUE(put(object("template", "acme", "web", config_map("web").dump()), &first).ok());
  const uint64_t v = first.object().version();
  json changed = config_map("web");
  changed["data"]["x"] = "1";
  v1::Object o = object("template", "acme", "web", changed.dump());
  o.set_version(v);
  v1::PutResponse second;
  ASSERT_TRUE(put(o, &second).ok());
  // The same version again is now stale: refused, nothing written.
  const uint64_t index = store_->last_log_index();
  changed["data"]["x"] = "2";
  o.set_json(changed.dump());
  grpc::Status st = put(o);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_NE(st.error_message().find("is stale"), std::string::npos) << st.error_message();
  EXPECT_EQ(store_->last_log_index(), index);
  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::DeleteRequest del;
  del.set_kind("template");
  del.set_tenant("acme");
  del.set_name("web");
  del.set_version(v);
  v1::DeleteResponse dr;
  EXPECT_EQ(stub_->Delete(&ctx, del, &dr).error_code(), grpc::StatusCode::ABORTED);
  grpc::ClientContext ctx2;
  authorize(&ctx2);
  del.set_version(second.object().version());
  EXPECT_TRUE(stub_->Delete(&ctx2, del, &dr).ok());
}

TEST_F(CatalogServiceTest, ListFiltersByLabelSelector) {
  for (const char* name : {"a", "b", "c"}) {
    json doc = config_map(name);
    doc["metadata"]["labels"] = {{"tier", std::string(name) == "b" ? "back" : "front"}};
    put_ok("template", "acme", name, doc);
  }
  put_ok("site", "", "lyon", {{"labels", {{"region", "eu"}}}});
  put_ok("site", "", "nyc", {{"labels", {{"region", "us"}}}});
  auto names = [&](std::string_view kind, std::string_view tenant, const std::string& selector) {
    grpc::ClientContext ctx;
    authorize(&ctx);
    v1::ListRequest req;
    req.set_kind(std::string(kind));
    req.set_tenant(std::string(tenant));
    req.set_label_selector(selector);
    v1::ListResponse resp;
    grpc::Status st = stub_->List(&ctx, req, &resp);
    std::vector<std::string> out;
    if (!st.ok()) out.push_back("error: " + st.error_message());
    for (const auto& o : resp.objects()) out.push_back(o.name());
    return out;
  };
  EXPECT_EQ(names("template", "acme", "tier=front"), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(names("template", "acme", "tier!=front"), (std::vector<std::string>{"b"}));
  EXPECT_EQ(names("template", "acme", ""), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(names("site", "", "region in (eu)"), (std::vector<std::string>{"lyon"}));
  auto bad = names("template", "acme", "tier in (");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("label_selector"), std::string::npos) << bad[0];
}

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

TEST_F(CatalogServiceTest, WatchRefusesBadRequests) {
  grpc::ClientContext ctx;
  authorize(&ctx);
  v1::WatchRequest req;
  req.set_kind("template");
  req.set_tenant("Acme");
  auto reader = stub_->Watch(&ctx, req);
  v1::WatchEvent ev;
  EXPECT_FALSE(reader->Read(&ev));
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
  auto reader = stub_->Watch(&ctx, req);
  reader->WaitForInitialMetadata();

  put_ok("template", "acme", "first", config_map("first"));
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return stalled; }));
  }
  // The stream is stuck in its first send: five changes fill its queue, a
  // repeated change of a queued key takes no room, the sixth key overflows it.
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
  ASSERT_TRUE(reader->Read(&ev));
  EXPECT_EQ(ev.object().name(), "first");
  EXPECT_FALSE(reader->Read(&ev));
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
  auto reader = stub_->Watch(&ctx, req);
  reader->WaitForInitialMetadata();
  service_->shutdown();
  v1::WatchEvent ev;
  EXPECT_FALSE(reader->Read(&ev));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

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
  CatalogOptions options;
  options.liveness = [&] {
    std::lock_guard lock(mu);
    return live;
  };
  start(std::move(options));
  for (const char* s : {"a", "b", "c"}) site(s, {{"region", "eu"}});
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
    v1::WatchEvent ev;
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

TEST_F(CatalogServiceTest, ServerRefusesAPortInUse) {
  CatalogService second(store_.get(), index_.get(), status_.get(), auth_.get());
  int port = 0;
  EXPECT_EQ(start_grpc_server("127.0.0.1:" + std::to_string(port_), {&second}, &port), nullptr);
  EXPECT_EQ(port, 0);
}

TEST(GrpcStatus, MapsCodesOneToOne) {
  for (int c = 0; c <= 16; ++c) {
    const Status s(static_cast<StatusCode>(c), c == 0 ? "" : "why");
    const grpc::Status g = to_grpc(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    EXPECT_EQ(g.error_message(), s.message());
    EXPECT_EQ(from_grpc(g).code(), s.code());
  }
}

}  // namespace
}  // namespace canopy::api
