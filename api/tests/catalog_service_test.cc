// The Catalog service through the real gRPC server on 127.0.0.1 and the
// generated client stub, over a real store and placement index: objects put,
// got, listed and deleted, bad input, stale versions, the server's port and
// status codes. Watches, status views and access are tested in
// catalog_watch_test.cc, catalog_views_test.cc and catalog_access_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api/grpc_server.h"
#include "api/grpc_status.h"
#include "api/tests/catalog_service_fixture.h"

namespace canopy::api {
namespace {

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

TEST_F(CatalogServiceTest, ASiteAndARegionNeverShareAName) {
  // A child named like a region gets the region's scope at its parent (its
  // members' objects, every tenant's grants): a name must be one or the other.
  put_ok("site", "", "lyon", {{"labels", {{"zone", "eu"}}}});
  put_ok("site", "", "paris", {{"region", "eu"}});
  grpc::Status st = put(object("site", "", "nice", json{{"region", "lyon"}}.dump()));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(st.error_message(),
            R"(site "nice": region "lyon" is a site, not a regional hub; name the regional hub )"
            R"(that serves this site, or none)");
  EXPECT_EQ(store_->get("sites/nice").status().code(), StatusCode::kNotFound);
  st = put(object("site", "", "paris", json{{"region", "lyon"}}.dump()));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(json::parse(*store_->get("sites/paris"))["region"], "eu");  // as it was

  st = put(object("site", "", "eu", json::object().dump()));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(st.error_message(),
            R"(site "eu": "eu" is the name of a region (1 site record names it as their )"
            R"(regional hub); a site may not share a region's name)");
  EXPECT_EQ(store_->get("sites/eu").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(index_->site_labels("eu").has_value());

  // Once no record names the region, its name is free for a site, and then
  // no record may name it as a region.
  put_ok("site", "", "paris", json::object());
  EXPECT_EQ(index_->sites_naming_region("eu"), 0u);
  put_ok("site", "", "eu", json::object());
  st = put(object("site", "", "paris", json{{"region", "eu"}}.dump()));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
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
  EXPECT_NE(st.error_message().find(
                ": object.version " + std::to_string(v) + " is stale: it is at version " +
                std::to_string(second.object().version()) + "; read it again and reapply"),
            std::string::npos)
      << st.error_message();
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

// The server stops while Puts are in flight: its shutdown waits for them
// (each is finished by the store), nothing hangs, and every Put that was
// answered OK is in the store.
TEST_F(CatalogServiceTest, StoppingWithPutsInFlightLosesNoAcknowledgedWrite) {
  std::atomic<bool> stop_writing{false};
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::vector<std::thread> writers;
  for (int w = 0; w < 8; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; !stop_writing; ++i) {
        const std::string name = "w" + std::to_string(w) + "-" + std::to_string(i);
        grpc::Status st = put(object("template", "acme", name, config_map(name).dump()));
        if (!st.ok()) return;  // the server went away
        std::lock_guard lock(mu);
        acknowledged.push_back(name);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop();  // the server's Shutdown, with Puts in flight
  stop_writing = true;
  for (auto& w : writers) w.join();
  ASSERT_GT(acknowledged.size(), 0u);
  for (const std::string& name : acknowledged) {
    EXPECT_TRUE(store_->get("t/acme/templates/" + name).ok()) << name;
  }
}

// Writers racing with the same version: the check and the write are atomic
// (the store's), so exactly one wins and every other is told it is stale.
TEST_F(CatalogServiceTest, RacingWritesOfOneVersionHaveOneWinner) {
  v1::PutResponse first;
  ASSERT_TRUE(put(object("template", "acme", "web", config_map("web").dump()), &first).ok());
  constexpr int kWriters = 16;
  std::vector<grpc::Status> results(kWriters);
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      json changed = config_map("web");
      changed["data"]["writer"] = std::to_string(i);
      v1::Object o = object("template", "acme", "web", changed.dump());
      o.set_version(first.object().version());
      results[i] = put(o);
    });
  }
  for (auto& w : writers) w.join();
  int won = 0;
  for (const grpc::Status& st : results) {
    if (st.ok()) {
      ++won;
    } else {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED) << st.error_message();
    }
  }
  EXPECT_EQ(won, 1);
}

// Put answers the object as its write left it, without reading it back: the
// JSON and version are what Get then reports, also for a write that changes
// nothing and for a document recreated after a delete.
TEST_F(CatalogServiceTest, PutAnswersWhatGetThenReads) {
  auto same_as_get = [&](const v1::PutResponse& resp) {
    v1::Object got;
    ASSERT_TRUE(get("template", "acme", "web", &got).ok());
    EXPECT_EQ(resp.object().json(), got.json());
    EXPECT_EQ(resp.object().version(), got.version());
  };
  json doc = config_map("web");
  doc["data"]["n"] = 1.5;
  doc["data"]["u"] = "caf\u00e9 \u2603";
  v1::PutResponse first;
  ASSERT_TRUE(put(object("template", "acme", "web", doc.dump(2)), &first).ok());
  same_as_get(first);
  // Unchanged: nothing is written, the version stays.
  const uint64_t index = store_->last_log_index();
  v1::PutResponse again;
  ASSERT_TRUE(put(object("template", "acme", "web", doc.dump()), &again).ok());
  EXPECT_EQ(store_->last_log_index(), index);
  EXPECT_EQ(again.object().version(), first.object().version());
  same_as_get(again);
  // A field dropped, another added.
  doc["data"].erase("greeting");
  doc["data"]["more"] = {1, 2, 3};
  v1::PutResponse changed;
  ASSERT_TRUE(put(object("template", "acme", "web", doc.dump()), &changed).ok());
  EXPECT_GT(changed.object().version(), first.object().version());
  same_as_get(changed);
  // Recreated after a delete: above the tombstone's version.
  ASSERT_TRUE(remove("template", "acme", "web").ok());
  v1::PutResponse recreated;
  ASSERT_TRUE(put(object("template", "acme", "web", config_map("web").dump()), &recreated).ok());
  EXPECT_GT(recreated.object().version(), changed.object().version());
  same_as_get(recreated);
  // The answered version is the one a conditional write must name.
  v1::Object o = object("template", "acme", "web", doc.dump());
  o.set_version(recreated.object().version());
  EXPECT_TRUE(put(o).ok());
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
