// The test API server over HTTPS, driven request by request: authentication
// (token, client certificate, expired and foreign certificates), bad input
// answered with the real codes, lists and selectors, resourceVersion and
// generation, CRDs becoming Established, and injected 429s.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "tests/kubeapi/test_cluster.h"
#include "tests/support/temp_dir.h"

namespace canopy::kubeapi {
namespace {

using nlohmann::json;

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TestClusterOptions options;
    options.api.crd_establish_delay = std::chrono::milliseconds(500);
    auto cluster = TestCluster::start(dir_.path().string(), options);
    ASSERT_TRUE(cluster.ok()) << cluster.status().to_string();
    cluster_ = std::move(*cluster);
  }

  // A client trusting the server's CA, with a client certificate if given.
  std::unique_ptr<httplib::SSLClient> client(const std::string& cert = "",
                                             const std::string& key = "") {
    auto c = cert.empty() ? std::make_unique<httplib::SSLClient>("127.0.0.1", port())
                          : std::make_unique<httplib::SSLClient>("127.0.0.1", port(), cert, key);
    c->set_ca_cert_path(dir_.file("ca.crt").c_str());
    c->enable_server_certificate_verification(true);
    return c;
  }

  // A client with the cluster's bearer token.
  std::unique_ptr<httplib::SSLClient> authed() {
    auto c = client();
    c->set_bearer_token_auth(cluster_->token().c_str());
    return c;
  }

  std::string write_pair(const std::string& name, const KeyPair& pair) {
    std::ofstream(dir_.file(name + ".crt")) << pair.cert_pem;
    std::ofstream(dir_.file(name + ".key")) << pair.key_pem;
    return dir_.file(name);
  }

  int port() { return cluster_->server().port(); }

  testing::TempDir dir_{"canopy-kubeapi-"};
  std::unique_ptr<TestCluster> cluster_;
};

json body_of(const httplib::Result& r) { return json::parse(r->body, nullptr, false); }

void expect_status(const httplib::Result& r, int code, const std::string& reason) {
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, code) << r->body;
  json b = body_of(r);
  EXPECT_EQ(b.value("kind", ""), "Status") << r->body;
  EXPECT_EQ(b.value("reason", ""), reason) << r->body;
  EXPECT_EQ(b.value("code", 0), code) << r->body;
}

constexpr const char* kApply = "application/apply-patch+yaml";

TEST_F(HttpTest, AuthenticationByTokenAndClientCertificate) {
  expect_status(client()->Get("/api"), 401, "Unauthorized");
  auto bad = client();
  bad->set_bearer_token_auth("wrong");
  expect_status(bad->Get("/api"), 401, "Unauthorized");
  auto r = authed()->Get("/api");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["kind"], "APIVersions");

  auto good = client(dir_.file("client.crt"), dir_.file("client.key"));
  r = good->Get("/version");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["minor"], "32");

  CertificateRequest expired;
  expired.common_name = "late";
  expired.not_before = std::chrono::hours(-48);
  expired.not_after = std::chrono::hours(-24);
  auto expired_pair = make_certificate(cluster_->client_ca(), expired);
  ASSERT_TRUE(expired_pair.ok());
  std::string e = write_pair("expired", *expired_pair);
  expect_status(client(e + ".crt", e + ".key")->Get("/api"), 401, "Unauthorized");

  auto other_ca = make_certificate_authority("someone-else");
  ASSERT_TRUE(other_ca.ok());
  CertificateRequest stranger;
  stranger.common_name = "canopy-admin";
  auto stranger_pair = make_certificate(*other_ca, stranger);
  ASSERT_TRUE(stranger_pair.ok());
  std::string s = write_pair("stranger", *stranger_pair);
  expect_status(client(s + ".crt", s + ".key")->Get("/api"), 401, "Unauthorized");

  // A client that does not trust the server's CA fails the handshake.
  httplib::SSLClient untrusting("127.0.0.1", port());
  untrusting.enable_server_certificate_verification(true);
  untrusting.set_ca_cert_path(dir_.file("client.crt").c_str());
  EXPECT_FALSE(untrusting.Get("/api"));
}

TEST_F(HttpTest, BadInputGetsTheRealCodes) {
  auto c = authed();
  expect_status(
      c->Patch("/api/v1/namespaces/default/configmaps/x?fieldManager=t", "kind: [unclosed", kApply),
      400, "BadRequest");
  expect_status(c->Post("/api/v1/namespaces/default/configmaps", "{not json", "application/json"),
                400, "BadRequest");
  expect_status(c->Post("/api/v1/namespaces/default/configmaps", "x", "text/plain"), 415,
                "UnsupportedMediaType");
  expect_status(
      c->Patch("/api/v1/namespaces/default/configmaps/x", "[]", "application/json-patch+json"), 415,
      "UnsupportedMediaType");
  expect_status(c->Get("/api/v1/namespaces/default/widgets"), 404, "NotFound");
  expect_status(c->Get("/apis/nope.example.com/v1"), 404, "NotFound");
  auto r = c->Get("/not/an/api");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, "404 page not found\n");
  std::string cm = R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}})";
  expect_status(c->Patch("/api/v1/namespaces/default/configmaps/x", cm, kApply), 400,
                "BadRequest");  // apply without fieldManager
  r = c->Post("/api/v1/namespaces/nope/configmaps", cm, "application/json");
  expect_status(r, 404, "NotFound");
  EXPECT_EQ(body_of(r)["message"], "namespaces \"nope\" not found");
  r = c->Post("/api/v1/namespaces/default/configmaps", cm, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body;
  r = c->Post("/api/v1/namespaces/default/configmaps", cm, "application/json");
  expect_status(r, 409, "AlreadyExists");
  EXPECT_EQ(body_of(r)["message"], "configmaps \"x\" already exists");
  r = c->Get("/apis/apps/v1/namespaces/default/deployments/none");
  expect_status(r, 404, "NotFound");
  EXPECT_EQ(body_of(r)["message"], "deployments.apps \"none\" not found");
  EXPECT_EQ(body_of(r)["details"],
            json({{"name", "none"}, {"group", "apps"}, {"kind", "deployments"}}));
  r = c->Post("/api/v1/namespaces/default/configmaps",
              R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}})",
              "application/json");
  expect_status(r, 422, "Invalid");
  EXPECT_EQ(body_of(r)["details"]["causes"][0]["field"], "metadata.name");
  r = c->Post("/api/v1/namespaces/default/configmaps",
              R"({"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"y"}})",
              "application/json");
  expect_status(r, 400, "BadRequest");
}

TEST_F(HttpTest, ListsSelectorsAndResourceVersions) {
  auto c = authed();
  for (const auto& [name, tier] : {std::pair{"a", "front"}, {"b", "back"}, {"c", "front"}}) {
    std::string body = std::string("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":") +
                       "{\"name\":\"" + name + "\",\"labels\":{\"tier\":\"" + tier + "\"}}}";
    auto r = c->Post("/api/v1/namespaces/default/configmaps", body, "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << r->body;
  }
  auto r = c->Get("/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dfront");
  ASSERT_TRUE(r);
  json list = body_of(r);
  EXPECT_EQ(list["kind"], "ConfigMapList");
  ASSERT_EQ(list["items"].size(), 2u) << r->body;
  EXPECT_EQ(list["items"][0]["metadata"]["name"], "a");
  EXPECT_FALSE(list["items"][0].contains("kind"));  // typed lists carry no kind per item
  EXPECT_EQ(list["metadata"]["resourceVersion"],
            std::to_string(cluster_->server().api().resource_version()));
  r = c->Get("/api/v1/configmaps?fieldSelector=metadata.name%3Db");
  ASSERT_TRUE(r);
  ASSERT_EQ(body_of(r)["items"].size(), 1u) << r->body;
  expect_status(c->Get("/api/v1/configmaps?fieldSelector=status.phase%3Dx"), 400, "BadRequest");
  expect_status(c->Get("/api/v1/configmaps?labelSelector=a%20in%20b"), 400, "BadRequest");

  r = c->Delete("/api/v1/namespaces/default/configmaps/a");
  ASSERT_TRUE(r);
  EXPECT_EQ(body_of(r)["status"], "Success") << r->body;
  EXPECT_EQ(body_of(r)["details"]["name"], "a");
  r = c->Delete("/api/v1/namespaces/default");
  ASSERT_TRUE(r);
  EXPECT_EQ(body_of(r)["status"]["phase"], "Terminating") << r->body;
  r = c->Get("/api/v1/configmaps");
  ASSERT_TRUE(r);
  EXPECT_TRUE(body_of(r)["items"].empty()) << r->body;
}

TEST_F(HttpTest, GenerationFollowsSpecAndStatusIsIgnoredOnApply) {
  auto c = authed();
  auto apply = [&](int replicas, const std::string& label) {
    std::string body =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
        "  labels: {v: \"" +
        label + "\"}\nspec:\n  replicas: " + std::to_string(replicas) +
        "\nstatus:\n  readyReplicas: 9\n";
    return c->Patch("/apis/apps/v1/namespaces/default/deployments/web?fieldManager=canopy", body,
                    kApply);
  };
  auto r = apply(1, "a");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body;
  json d = body_of(r);
  EXPECT_EQ(d["metadata"]["generation"], 1);
  EXPECT_FALSE(d.contains("status")) << r->body;
  r = apply(1, "b");
  json d2 = body_of(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(d2["metadata"]["generation"], 1);
  EXPECT_NE(d2["metadata"]["resourceVersion"], d["metadata"]["resourceVersion"]);
  r = apply(3, "b");
  EXPECT_EQ(body_of(r)["metadata"]["generation"], 2);
  std::string rv = body_of(r)["metadata"]["resourceVersion"];
  r = apply(3, "b");  // no change: no write
  EXPECT_EQ(body_of(r)["metadata"]["resourceVersion"], rv);
  ASSERT_TRUE(cluster_->server().api().set_status("apps", "deployments", "default", "web",
                                                  json{{"observedGeneration", 2}}));
  r = c->Get("/apis/apps/v1/namespaces/default/deployments/web");
  EXPECT_EQ(body_of(r)["status"]["observedGeneration"], 2);
}

TEST_F(HttpTest, CrdIsServedOnceEstablished) {
  auto c = authed();
  std::string crd = R"({"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
    "metadata":{"name":"NAME"},"spec":{"group":"example.com","scope":"Cluster",
    "names":{"plural":"gadgets","singular":"gadget","kind":"Gadget"},
    "versions":[{"name":"v1","served":true,"storage":true}]}})";
  std::string bad = crd;
  bad.replace(bad.find("NAME"), 4, "gadgets");
  expect_status(
      c->Post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad, "application/json"),
      422, "Invalid");
  std::string good = crd;
  good.replace(good.find("NAME"), 4, "gadgets.example.com");
  auto r =
      c->Post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", good, "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 201) << r->body;
  expect_status(c->Get("/apis/example.com/v1"), 404, "NotFound");
  expect_status(c->Get("/apis/example.com/v1/gadgets"), 404, "NotFound");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((r = c->Get("/apis/example.com/v1")) && r->status == 404 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(body_of(r)["resources"][0]["kind"], "Gadget");
  r = c->Get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com");
  bool established = false;
  json stored = body_of(r);
  for (const auto& cond : stored["status"]["conditions"]) {
    established = established || (cond["type"] == "Established" && cond["status"] == "True");
  }
  EXPECT_TRUE(established) << r->body;
  r = c->Patch("/apis/example.com/v1/gadgets/g1?fieldManager=canopy",
               "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {n: 1}\n",
               kApply);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body;
  r = c->Delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  expect_status(c->Get("/apis/example.com/v1/gadgets/g1"), 404, "NotFound");
  EXPECT_FALSE(cluster_->server().api().object("example.com", "gadgets", "", "g1"));
}

TEST_F(HttpTest, ArmedFaultsAnswer429WithRetryAfter) {
  auto c = authed();
  cluster_->server().arm_fault(Fault{429, 2, 3, "/api/v1"});
  for (int i = 0; i < 2; ++i) {
    auto r = c->Get("/api/v1/namespaces");
    expect_status(r, 429, "TooManyRequests");
    EXPECT_EQ(r->get_header_value("Retry-After"), "3");
    EXPECT_EQ(body_of(r)["details"]["retryAfterSeconds"], 3);
  }
  auto r = c->Get("/api/v1/namespaces");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  cluster_->server().arm_fault(Fault{503, -1, 0, ""});
  expect_status(c->Get("/api"), 503, "ServiceUnavailable");
  expect_status(c->Get("/version"), 503, "ServiceUnavailable");
  cluster_->server().disarm_faults();
  r = c->Get("/api");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Lines of a watch of `path` that ends by its timeoutSeconds, while
// `during` runs.
std::vector<json> watch_while(httplib::SSLClient& c, const std::string& path,
                              const std::function<void()>& during) {
  std::string body;
  std::thread watcher([&] {
    c.Get(path.c_str(), [&](const char* data, size_t n) {
      body.append(data, n);
      return true;
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  during();
  watcher.join();
  std::vector<json> events;
  std::stringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) events.push_back(json::parse(line));
  return events;
}

TEST_F(HttpTest, WatchStreamsEventsFromAResourceVersion) {
  auto c = authed();
  std::string cm =
      R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"w"},"data":{"k":"1"}})";
  auto watcher = authed();
  std::string rv = std::to_string(cluster_->server().api().resource_version());
  auto events = watch_while(
      *watcher,
      "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=2&resourceVersion=" + rv, [&] {
        ASSERT_EQ(c->Post("/api/v1/namespaces/default/configmaps", cm, "application/json")->status,
                  201);
        ASSERT_EQ(c->Patch("/api/v1/namespaces/default/configmaps/w", R"({"data":{"k":"2"}})",
                           "application/merge-patch+json")
                      ->status,
                  200);
        ASSERT_EQ(c->Delete("/api/v1/namespaces/default/configmaps/w")->status, 200);
      });
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["type"], "ADDED");
  EXPECT_EQ(events[0]["object"]["kind"], "ConfigMap");
  EXPECT_EQ(events[1]["type"], "MODIFIED");
  EXPECT_EQ(events[1]["object"]["data"]["k"], "2");
  EXPECT_EQ(events[2]["type"], "DELETED");

  // Without a resourceVersion the watch starts with the current objects.
  events = watch_while(*watcher, "/api/v1/namespaces?watch=true&timeoutSeconds=1", [] {});
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0]["object"]["metadata"]["name"], "default");

  // A resourceVersion older than the event log is 410 Expired.
  ASSERT_EQ(c->Post("/api/v1/namespaces/default/configmaps", cm, "application/json")->status, 201);
  for (size_t i = 0; i <= ObjectStore::kMaxEvents; ++i) {
    cluster_->server().api().set_status("", "configmaps", "default", "w", json{{"i", i}});
  }
  events = watch_while(*watcher,
                       "/api/v1/configmaps?watch=1&timeoutSeconds=1&resourceVersion=" + rv, [] {});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["type"], "ERROR");
  EXPECT_EQ(events[0]["object"]["code"], 410);
  EXPECT_EQ(events[0]["object"]["reason"], "Expired");
}

}  // namespace
}  // namespace canopy::kubeapi
