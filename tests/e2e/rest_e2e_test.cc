// The hub's REST API (api/rest.h) through real curl against the real
// canopy-hub binary: every operation, tokens and tenant isolation, bad input
// that stores nothing, and every path of the OpenAPI document answering.
#include <fstream>
#include <regex>

#include "tests/e2e/e2e_fixture.h"
#include "tests/support/small_disk.h"

namespace canopy::e2e {
namespace {

struct Reply {
  int status = 0;  // HTTP status; 0 when curl itself failed
  std::string body;
  std::string headers;
  json j() const { return json::parse(body, nullptr, false); }
};

class RestTest : public E2ETest {
 protected:
  void SetUp() override {
    E2ETest::SetUp();
    create_hub();
    launch_hub();
    base_ = "http://127.0.0.1:" + std::to_string(hub_->health_port);
  }

  // Runs curl with `args` (after the URL's path `path`) and the token, if any.
  Reply curl(const std::string& method, const std::string& path, const std::string& token,
             std::vector<std::string> extra = {}, int max_seconds = 10) {
    const std::string n = std::to_string(++runs_);
    const std::string body = dir_.file("body-" + n);
    const std::string headers = dir_.file("headers-" + n);
    const std::string out = dir_.file("curl-" + n + ".log");
    std::vector<std::string> argv = {"curl",
                                     "-s",
                                     "-S",
                                     "-X",
                                     method,
                                     "-o",
                                     body,
                                     "-D",
                                     headers,
                                     "-w",
                                     "%{http_code}",
                                     "-m",
                                     std::to_string(max_seconds)};
    if (!token.empty()) {
      argv.push_back("-H");
      argv.push_back("Authorization: Bearer " + token);
    }
    for (auto& e : extra) argv.push_back(std::move(e));
    argv.push_back(base_ + path);
    Process p;
    ProcessOptions po;
    po.log_path = out;
    std::string err;
    Reply r;
    if (!p.start(argv, po, &err)) {
      ADD_FAILURE() << "cannot run curl: " << err;
      return r;
    }
    p.wait_exit(std::chrono::seconds(max_seconds + 5));
    const std::string printed = read_file(out);
    // The status code is the last three characters curl printed.
    if (printed.size() >= 3) r.status = std::atoi(printed.substr(printed.size() - 3).c_str());
    r.body = read_file(body);
    r.headers = read_file(headers);
    return r;
  }
  Reply put_json(const std::string& path, const std::string& token, const json& doc,
                 std::vector<std::string> extra = {}) {
    extra.push_back("--data-binary");
    extra.push_back(doc.dump());
    return curl("PUT", path, token, std::move(extra));
  }

  static json config_map(const std::string& name, const std::string& app) {
    return {{"apiVersion", "v1"},
            {"kind", "ConfigMap"},
            {"metadata", {{"name", name}, {"labels", {{"app", app}}}}},
            {"data", {{"k", "v"}}}};
  }

  uint64_t log_index() {
    auto j = http_get_json(hub_->health_port, "/healthz");
    return j ? j->value("log_index", uint64_t{0}) : 0;
  }

  // Issues a token over REST as the fleet admin; returns its bearer text.
  std::string issue(const std::string& role, const std::string& tenant, uint64_t ttl = 0) {
    json req = {{"role", role}, {"tenant", tenant}};
    if (ttl != 0) req["ttlSeconds"] = ttl;
    Reply r = curl("POST", "/v1/tokens", token_, {"--data-binary", req.dump()});
    EXPECT_EQ(r.status, 201) << r.body;
    return r.j().value("bearer", "");
  }

  TempDir dir_{"canopy-rest-"};
  std::string base_;
  int runs_ = 0;
};

TEST_F(RestTest, EveryOperationThroughCurl) {
  // Tenants.
  Reply r = put_json("/v1/tenants/acme", token_, {{"description", "ACME shops"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["document"]["name"], "acme");
  r = curl("GET", "/v1/tenants", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["items"].size(), 1u);
  EXPECT_EQ(r.j()["items"][0]["name"], "acme");

  // Templates: put, get with ETag, conditional writes.
  r = put_json("/v1/tenants/acme/templates/web", token_, config_map("web", "shop"));
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string version = r.j()["version"];
  EXPECT_NE(r.headers.find("ETag: \"" + version + "\""), std::string::npos) << r.headers;
  r = curl("GET", "/v1/tenants/acme/templates/web", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["document"], config_map("web", "shop"));
  EXPECT_EQ(r.j()["version"], version);
  r = put_json("/v1/tenants/acme/templates/web", token_, config_map("web", "shop2"),
               {"-H", "If-Match: \"1\""});
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.j()["error"]["code"], "ABORTED");
  r = put_json("/v1/tenants/acme/templates/web", token_, config_map("web", "shop2"),
               {"-H", "If-Match: \"" + version + "\""});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.j()["version"], version);
  r = curl("DELETE", "/v1/tenants/acme/templates/web", token_,
           {"-H", "If-Match: \"" + version + "\""});
  EXPECT_EQ(r.status, 409) << "a delete with a stale version must be refused: " << r.body;

  // Lists: label selector, pages.
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(put_json("/v1/tenants/acme/templates/t" + std::to_string(i), token_,
                       config_map("t" + std::to_string(i), i % 2 == 0 ? "even" : "odd"))
                  .status,
              200);
  }
  r = curl("GET", "/v1/tenants/acme/templates?labelSelector=app%20in%20(even)", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["items"].size(), 3u);
  std::vector<std::string> names;
  std::string cont;
  do {
    r = curl("GET",
             "/v1/tenants/acme/templates?limit=2" + (cont.empty() ? "" : "&continue=" + cont),
             token_);
    ASSERT_EQ(r.status, 200) << r.body;
    const json page = r.j();
    for (const auto& o : page["items"]) names.push_back(o["name"]);
    cont = page["continue"];
  } while (!cont.empty());
  EXPECT_EQ(names, (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4", "web"}));

  // Placements and their status.
  r = put_json("/v1/tenants/acme/placements/shop", token_,
               {{"templates", {"web"}}, {"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  r = curl("GET", "/v1/tenants/acme/placements/shop/status", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["targeted"], 0);
  r = curl("GET", "/v1/tenants/acme/placements/none/status", token_);
  EXPECT_EQ(r.status, 404) << r.body;

  // Sites and grants (fleet admin).
  r = put_json("/v1/sites/lyon", token_, {{"labels", {{"region", "eu"}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  r = curl("GET", "/v1/sites?labelSelector=region%3Deu", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["items"].size(), 1u);
  r = put_json("/v1/tenants/acme/grants/eu", token_,
               {{"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  r = curl("GET", "/v1/tenants/acme/placements/shop/status", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["targeted"], 1) << r.body;

  // Watch: a bookmark, then events; resuming from a position replays what
  // came after it.
  Process watch;
  const std::string watch_out = dir_.file("watch.ndjson");
  {
    ProcessOptions po;
    po.log_path = watch_out;
    std::string err;
    ASSERT_TRUE(
        watch.start({"curl", "-s", "-N", "-m", "20", "-H", "Authorization: Bearer " + token_,
                     base_ + "/v1/watch?kind=template&tenant=acme"},
                    po, &err))
        << err;
  }
  ASSERT_TRUE(wait_until([&] { return read_file(watch_out).find("BOOKMARK") != std::string::npos; },
                         kTimeout, kPoll));
  ASSERT_EQ(curl("DELETE", "/v1/tenants/acme/templates/t0", token_).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/acme/templates/t9", token_, config_map("t9", "odd")).status, 200);
  ASSERT_TRUE(wait_until([&] { return read_file(watch_out).find("\"t9\"") != std::string::npos; },
                         kTimeout, kPoll));
  std::vector<json> lines;
  {
    std::istringstream in(read_file(watch_out));
    std::string line;
    while (std::getline(in, line)) lines.push_back(json::parse(line));
  }
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1]["type"], "DELETE");
  EXPECT_EQ(lines[1]["object"]["name"], "t0");
  EXPECT_EQ(lines[2]["type"], "PUT");
  EXPECT_EQ(lines[2]["object"]["document"], config_map("t9", "odd"));
  r = curl("GET",
           "/v1/watch?kind=template&tenant=acme&from=" + lines[1]["position"].get<std::string>(),
           token_, {"-N"}, 2);
  {
    std::istringstream in(r.body);
    std::string line;
    std::vector<std::string> seen;
    while (std::getline(in, line)) {
      json e = json::parse(line);
      if (e["type"] == "PUT" || e["type"] == "DELETE") seen.push_back(e["object"]["name"]);
    }
    EXPECT_EQ(seen, std::vector<std::string>{"t9"}) << r.body;
  }
  // metadataOnly: the same events without the documents.
  r = curl("GET",
           "/v1/watch?kind=template&tenant=acme&metadataOnly=true&from=" +
               lines[1]["position"].get<std::string>(),
           token_, {"-N"}, 2);
  {
    std::istringstream in(r.body);
    std::string line;
    int puts = 0;
    while (std::getline(in, line)) {
      json e = json::parse(line);
      if (e["type"] != "PUT") continue;
      ++puts;
      EXPECT_EQ(e["object"]["name"], "t9") << line;
      EXPECT_FALSE(e["object"].contains("document")) << line;
      EXPECT_EQ(e["object"]["version"], lines[2]["object"]["version"]) << line;
    }
    EXPECT_EQ(puts, 1) << r.body;
  }
  r = curl("GET", "/v1/watch?kind=template&tenant=acme&metadataOnly=yes", token_);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.j()["error"]["message"], "metadataOnly \"yes\" is not true or false") << r.body;
  r = curl("GET", "/v1/watch?kind=template&tenant=acme&from=1.1", token_);
  EXPECT_EQ(r.status, 410) << r.body;
  watch.kill(SIGTERM);

  // Tokens: issue, list, revoke.
  const std::string viewer = issue("viewer", "acme");
  ASSERT_FALSE(viewer.empty());
  r = curl("GET", "/v1/tokens?tenant=acme", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["items"].size(), 1u);
  const std::string id = r.j()["items"][0]["id"];
  EXPECT_EQ(r.body.find(viewer.substr(24)), std::string::npos) << "a listing shows no secret";
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/web", viewer).status, 200);
  r = curl("DELETE", "/v1/tokens/" + id, token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["revoked"], true);
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/web", viewer).status, 401);

  // Deletes.
  r = curl("DELETE", "/v1/tenants/acme/templates/web", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/web", token_).status, 404);
  EXPECT_EQ(curl("DELETE", "/v1/tenants/acme/templates/web", token_).status, 404);
}

TEST_F(RestTest, TokensAreCheckedAndTenantsIsolated) {
  ASSERT_EQ(put_json("/v1/tenants/acme", token_, json::object()).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/globex", token_, json::object()).status, 200);
  ASSERT_EQ(
      put_json("/v1/tenants/globex/templates/secret", token_, config_map("secret", "x")).status,
      200);

  // No token, a malformed one, an unknown one: 401 and nothing else.
  for (const std::string& t : {std::string(), std::string("nonsense"),
                               std::string("canopy_0123456789abcdef_") + std::string(43, 'A')}) {
    Reply r = curl("GET", "/v1/tenants/globex/templates/secret", t);
    EXPECT_EQ(r.status, 401) << t;
    EXPECT_NE(r.headers.find("WWW-Authenticate: Bearer"), std::string::npos);
    EXPECT_EQ(r.body.find("\"k\""), std::string::npos) << r.body;
  }

  const std::string editor = issue("editor", "acme");
  const std::string viewer = issue("viewer", "acme");
  // Another tenant's objects: neither read, list, watch, write nor status.
  EXPECT_EQ(curl("GET", "/v1/tenants/globex/templates/secret", editor).status, 403);
  EXPECT_EQ(curl("GET", "/v1/tenants/globex/templates", editor).status, 403);
  EXPECT_EQ(curl("GET", "/v1/watch?kind=template&tenant=globex", editor).status, 403);
  EXPECT_EQ(put_json("/v1/tenants/globex/templates/x", editor, config_map("x", "y")).status, 403);
  EXPECT_EQ(curl("GET", "/v1/tenants/globex/placements/p/status", editor).status, 403);
  EXPECT_EQ(curl("GET", "/v1/tokens?tenant=globex", editor).status, 403);
  // Fleet-level things are the fleet admin's.
  EXPECT_EQ(curl("GET", "/v1/tenants", editor).status, 403);
  EXPECT_EQ(put_json("/v1/sites/lyon", editor, {{"labels", json::object()}}).status, 403);
  EXPECT_EQ(put_json("/v1/tenants/acme/grants/all", editor,
                     {{"selector",
                       {{"matchExpressions", {{{"key", "region"}, {"operator", "Exists"}}}}}}})
                .status,
            403);
  Reply r = curl("POST", "/v1/tokens", editor,
                 {"--data-binary", json{{"role", "tenant-admin"}, {"tenant", "acme"}}.dump()});
  EXPECT_EQ(r.status, 403) << r.body;
  // Its own tenant: the editor writes, the viewer only reads.
  EXPECT_EQ(put_json("/v1/tenants/acme/templates/web", editor, config_map("web", "a")).status, 200);
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/web", viewer).status, 200);
  EXPECT_EQ(put_json("/v1/tenants/acme/templates/web", viewer, config_map("web", "b")).status, 403);
  EXPECT_EQ(curl("DELETE", "/v1/tenants/acme/templates/web", viewer).status, 403);

  // Sites: a tenant lists and reads only those granted to it.
  ASSERT_EQ(put_json("/v1/sites/lyon", token_, {{"labels", {{"region", "eu"}}}}).status, 200);
  ASSERT_EQ(put_json("/v1/sites/oslo", token_, {{"labels", {{"region", "no"}}}}).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/globex/grants/lyon", token_, {{"sites", {"lyon"}}}).status, 200);
  const std::string globex = issue("viewer", "globex");
  r = curl("GET", "/v1/sites", globex);
  ASSERT_EQ(r.status, 200) << r.body;
  json listed = json::parse(r.body);
  ASSERT_EQ(listed["items"].size(), 1u) << r.body;
  EXPECT_EQ(listed["items"][0]["name"], "lyon") << r.body;
  EXPECT_EQ(curl("GET", "/v1/sites/lyon", globex).status, 200);
  EXPECT_EQ(curl("GET", "/v1/sites/oslo", globex).status, 404);
  EXPECT_EQ(json::parse(curl("GET", "/v1/sites", editor).body)["items"].size(), 2u);

  // An expired token is refused.
  const std::string brief = issue("viewer", "acme", 1);
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/web", brief).status, 200);
  std::this_thread::sleep_for(1200ms);
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/web", brief).status, 401);

  // No token ever reaches the log.
  const std::string log = read_file(hub_->log_path());
  for (const std::string& t : {token_, editor, viewer, brief}) {
    // "canopy_<16 hex id>_<secret>": the secret is base64url and may itself
    // contain '_', so it is cut at its known offset, not at the last '_'.
    ASSERT_TRUE(t.starts_with("canopy_") && t.size() > 24 && t[23] == '_') << t;
    const std::string secret = t.substr(24);
    ASSERT_GE(secret.size(), 40u);
    EXPECT_EQ(log.find(secret), std::string::npos) << "the hub logged a token's secret";
  }
}

TEST_F(RestTest, BadInputGetsAClearErrorAndStoresNothing) {
  ASSERT_EQ(put_json("/v1/tenants/acme", token_, json::object()).status, 200);
  ASSERT_EQ(put_json("/v1/sites/lyon", token_, json::object()).status, 200);
  ASSERT_EQ(put_json("/v1/sites/paris", token_, json{{"region", "eu"}}).status, 200);
  const uint64_t before = log_index();
  struct Case {
    std::string method, path, body;
    int status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"PUT", "/v1/tenants/acme/templates/web", "{not json", 400, "not valid JSON"},
      {"PUT", "/v1/tenants/acme/templates/web", "[1,2]", 400, "must be a JSON object"},
      {"PUT", "/v1/tenants/acme/templates/Web", config_map("web", "a").dump(), 400,
       "is not a DNS-1123 label"},
      {"PUT", "/v1/tenants/acme/templates/web", json{{"kind", "ConfigMap"}}.dump(), 400,
       "apiVersion"},
      {"PUT", "/v1/tenants/acme/placements/p",
       json{{"templates", {"web"}}, {"selecter", json::object()}}.dump(), 400, "selecter"},
      {"PUT", "/v1/tenants/acme/templates/web?dryRun=1", config_map("web", "a").dump(), 400,
       "dryRun"},
      {"GET", "/v1/tenants/acme/templates?labelSelector=a%20b", "", 400, "cannot read"},
      {"GET", "/v1/tenants/acme/templates?limit=0", "", 400, "limit"},
      {"PUT", "/v1/tenants/acme/templates/web", config_map("web", "a").dump(), 400, "If-Match"},
      {"POST", "/v1/tokens", json{{"role", "king"}, {"tenant", "acme"}}.dump(), 400, "role"},
      {"POST", "/v1/tokens", json{{"role", "viewer"}, {"tenant", "acme"}, {"ttl", 5}}.dump(), 400,
       "ttl"},
      {"POST", "/v1/tokens", json{{"role", "viewer"}, {"tenant", "nobody"}}.dump(), 400,
       "does not exist"},
      {"DELETE", "/v1/tokens/xyz", "", 400, "not a token id"},
      // A site and a region never share a name.
      {"PUT", "/v1/sites/nice", json{{"region", "lyon"}}.dump(), 400,
       R"(region \"lyon\" is a site, not a regional hub)"},
      {"PUT", "/v1/sites/eu", json::object().dump(), 400, R"(\"eu\" is the name of a region)"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> extra;
    if (!c.body.empty()) extra = {"--data-binary", c.body};
    if (c.says == "If-Match") extra.insert(extra.end(), {"-H", "If-Match: soon"});
    Reply r = curl(c.method, c.path, token_, extra);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << ": " << r.body;
    EXPECT_NE(r.body.find(c.says), std::string::npos) << c.path << ": " << r.body;
    EXPECT_TRUE(r.j().contains("error")) << r.body;
  }
  // Larger than a document may be: refused before it is read.
  const std::string big(3 << 20, 'x');
  const std::string big_file = dir_.file("big.json");
  { std::ofstream(big_file) << "{\"a\":\"" << big << "\"}"; }
  Reply r =
      curl("PUT", "/v1/tenants/acme/templates/big", token_, {"--data-binary", "@" + big_file});
  EXPECT_EQ(r.status, 413) << r.body.substr(0, 200);
  EXPECT_EQ(log_index(), before) << "a refused request stored something";
}

TEST_F(RestTest, YamlBodiesAreTakenAsTheCliTakesThem) {
  ASSERT_EQ(put_json("/v1/tenants/acme", token_, json::object()).status, 200);
  const std::string yaml =
      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n"
      "  namespace: shop\ndata:\n  port: \"80\"\n  replicas: \"2\"\n";
  Reply r = curl("PUT", "/v1/tenants/acme/templates/web", token_,
                 {"-H", "Content-Type: application/yaml", "--data-binary", yaml});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["document"]["data"]["port"], "80");
  r = curl("GET", "/v1/tenants/acme/templates/web", token_);
  EXPECT_EQ(r.j()["document"]["metadata"]["namespace"], "shop");
  // Malformed YAML: 400 naming the line, nothing stored.
  const uint64_t before = log_index();
  r = curl("PUT", "/v1/tenants/acme/templates/db", token_,
           {"-H", "Content-Type: application/yaml", "--data-binary", "kind: [ConfigMap\nx: 1\n"});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("not valid YAML"), std::string::npos) << r.body;
  r = curl("PUT", "/v1/tenants/acme/templates/db", token_,
           {"-H", "Content-Type: text/plain", "--data-binary", yaml});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(log_index(), before);
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/db", token_).status, 404);
}

TEST_F(RestTest, RenderAndConflictsAnswerWithCurl) {
  ASSERT_EQ(put_json("/v1/tenants/acme", token_, json::object()).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/globex", token_, json::object()).status, 200);
  ASSERT_EQ(put_json("/v1/sites/lyon", token_, {{"labels", {{"region", "eu"}}}}).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/acme/templates/web", token_, config_map("web", "a")).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/acme/placements/shop", token_,
                     {{"templates", {"web"}}, {"sites", {"lyon"}}})
                .status,
            200);
  Reply r = curl("GET", "/v1/tenants/acme/render?site=lyon&placement=shop", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.j();
  ASSERT_EQ(j["manifests"].size(), 1u) << r.body;
  EXPECT_EQ(j["manifests"][0]["template"], "web");
  EXPECT_EQ(j["manifests"][0]["manifest"]["kind"], "ConfigMap");
  EXPECT_EQ(j["manifests"][0]["manifest"]["metadata"]["annotations"]["canopy.io/hash"],
            j["manifests"][0]["hash"]);
  EXPECT_TRUE(j["failures"].empty());
  r = curl("GET", "/v1/tenants/acme/render?placement=shop", token_);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("site"), std::string::npos) << r.body;
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/render?site=lyon&placement=shop&x=1", token_).status,
            400);

  // Rollouts: pause and resume a placement that has a policy.
  r = curl("POST", "/v1/tenants/acme/placements/shop:pause", token_);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("no rollout policy"), std::string::npos) << r.body;
  ASSERT_EQ(
      put_json("/v1/tenants/acme/placements/shop", token_,
               {{"templates", {"web"}}, {"sites", {"lyon"}}, {"rollout", {{"maxUnavailable", 1}}}})
          .status,
      200);
  r = curl("POST", "/v1/tenants/acme/placements/shop:pause", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["document"]["rollout"]["paused"], true) << r.body;
  r = curl("POST", "/v1/tenants/acme/placements/shop:resume", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["document"]["rollout"]["paused"], false) << r.body;
  EXPECT_EQ(curl("POST", "/v1/tenants/acme/placements/none:pause", token_).status, 404);
  EXPECT_EQ(curl("POST", "/v1/tenants/acme/placements/shop:pause", issue("viewer", "acme")).status,
            403);

  r = curl("GET", "/v1/tenants/acme/conflicts", token_);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.j()["items"].empty()) << r.body;
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/conflicts?kind=site", token_).status, 400);
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/conflicts?continue=zz", token_).status, 400);
  EXPECT_EQ(curl("GET", "/v1/tenants/acme/conflicts", issue("viewer", "globex")).status, 403);
}

// Devices (sites/<site>/devices/<tenant>/<device>): written by a tenant's
// members on its granted sites only, read by nobody else; a clear password
// is refused, never echoed, and nothing refused is stored.
TEST_F(RestTest, DevicesAreTenantScopedAndRefuseBadInput) {
  const std::string hash = "$2b$04$UrDXCYlPNQURswfF2MBrOuNJzRtHfFCBQ52iWsLO/KBXfxi89YwZC";
  for (const char* t : {"acme", "globex"}) {
    ASSERT_EQ(put_json(std::string("/v1/tenants/") + t, token_, json::object()).status, 200);
  }
  for (const char* s : {"lyon", "paris"}) {
    ASSERT_EQ(
        put_json(std::string("/v1/sites/") + s, token_, {{"labels", {{"region", "eu"}}}}).status,
        200);
  }
  // acme: lyon only (the fixture granted it every site); globex: lyon.
  ASSERT_EQ(curl("DELETE", "/v1/tenants/acme/grants/all", token_).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/acme/grants/lyon", token_, {{"sites", {"lyon"}}}).status, 200);
  ASSERT_EQ(put_json("/v1/tenants/globex/grants/lyon", token_, {{"sites", {"lyon"}}}).status, 200);
  const std::string acme = issue("editor", "acme");
  const std::string globex = issue("editor", "globex");
  const std::string path = "/v1/tenants/acme/sites/lyon/devices/pump-1";
  const json doc = {{"labels", {{"kind", "pump"}}},
                    {"credential", {{"passwordHash", hash}}},
                    {"desired", {{"speed", 3}}}};

  Reply r;
  ASSERT_TRUE(
      wait_until([&] { return (r = put_json(path, acme, doc)).status == 200; }, kTimeout, kPoll))
      << r.status << " " << r.body;
  EXPECT_EQ(r.j()["kind"], "device");
  EXPECT_EQ(r.j()["site"], "lyon");
  EXPECT_EQ(r.j()["document"]["tenant"], "acme");
  EXPECT_EQ(r.j()["document"]["site"], "lyon");
  EXPECT_EQ(r.j()["document"]["id"], "pump-1");
  r = curl("GET", path, acme);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["document"]["credential"]["passwordHash"], hash);
  r = curl("GET", "/v1/tenants/acme/sites/lyon/devices", acme);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.j()["items"].size(), 1u);
  EXPECT_EQ(r.j()["items"][0]["name"], "pump-1");
  r = curl("GET", "/v1/tenants/acme/sites/lyon/devices?labelSelector=kind%3Dvalve", acme);
  EXPECT_EQ(r.j()["items"].size(), 0u) << r.body;

  // Bad input: 400 naming the field, nothing stored, no password echoed.
  auto refused = [&](const json& bad, int status, const std::string& says,
                     const std::string& p = "/v1/tenants/acme/sites/lyon/devices/pump-2",
                     const std::string& who = "") {
    Reply b = put_json(p, who.empty() ? acme : who, bad);
    EXPECT_EQ(b.status, status) << bad.dump() << " -> " << b.body;
    const json j = b.j();
    const std::string message =
        j.is_object() && j.contains("error") ? j["error"].value("message", "") : "";
    EXPECT_NE(message.find(says), std::string::npos) << b.body;
    EXPECT_EQ(b.body.find("hunter2"), std::string::npos) << b.body;
  };
  refused({{"password", "hunter2"}}, 400, "a clear password is never stored");
  refused({{"credential", {{"password", "hunter2"}}}}, 400, "credential.password: a clear");
  refused({{"credential", {{"passwordHash", "hunter2"}}}}, 400,
          "credential.passwordHash is not a bcrypt hash");
  refused({{"labels", {{"kind", "pump"}}}}, 400, "credential is missing");
  refused({{"credential", {{"passwordHash", hash}}}, {"tenant", "globex"}}, 400,
          "tenant \"globex\" differs from the key's \"acme\"");
  refused({{"credential", {{"passwordHash", hash}}}, {"desired", {{"a/b", 1}}}}, 400,
          "desired field \"a/b\"");
  refused({{"credential", {{"passwordHash", hash}}}}, 400, "is not a DNS-1123 label",
          "/v1/tenants/acme/sites/lyon/devices/Pump");
  {
    Reply b = curl("PUT", "/v1/tenants/acme/sites/lyon/devices/pump-2", acme,
                   {"--data-binary", "{\"credential\": "});
    EXPECT_EQ(b.status, 400) << b.body;
    EXPECT_NE(b.body.find("not valid JSON"), std::string::npos) << b.body;
  }
  // Tenancy: acme's members only on acme's granted sites; globex never.
  refused({{"credential", {{"passwordHash", hash}}}}, 403,
          "site \"paris\" is not granted to tenant \"acme\"",
          "/v1/tenants/acme/sites/paris/devices/pump-2");
  refused({{"credential", {{"passwordHash", hash}}}}, 400,
          "site \"paris\" is not granted to tenant \"acme\"",
          "/v1/tenants/acme/sites/paris/devices/pump-2", token_);
  refused({{"credential", {{"passwordHash", hash}}}}, 403,
          "may not write tenant \"acme\"'s objects", "/v1/tenants/acme/sites/lyon/devices/pump-2",
          globex);
  r = curl("GET", path, globex);
  EXPECT_EQ(r.status, 403) << r.body;
  r = curl("GET", "/v1/tenants/acme/sites/lyon/devices", globex);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(curl("DELETE", path, globex).status, 403);
  r = curl("GET", "/v1/tenants/acme/sites/paris/devices/pump-1", acme);
  EXPECT_EQ(r.status, 404) << r.body;
  r = curl("GET", "/v1/tenants/acme/sites/paris/devices", acme);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["items"].size(), 0u);
  r = curl("GET", "/v1/tenants/acme/sites/lyon/devices", token_);  // the fleet admin sees all
  EXPECT_EQ(r.j()["items"].size(), 1u) << r.body;
  // Watching devices: one site at a time, a granted one.
  r = curl("GET", "/v1/watch?kind=device&tenant=acme", acme, {}, 2);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("site is missing"), std::string::npos) << r.body;
  r = curl("GET", "/v1/watch?kind=template&tenant=acme&site=lyon", acme, {}, 2);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("site must be empty for kind template"), std::string::npos) << r.body;
  r = curl("GET", "/v1/watch?kind=device&tenant=acme&site=Lyon", acme, {}, 2);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(curl("GET", "/v1/watch?kind=device&tenant=acme&site=paris", acme, {}, 2).status, 404);
  EXPECT_EQ(curl("GET", "/v1/watch?kind=device&tenant=acme&site=lyon", globex, {}, 2).status, 403);
  // Nothing refused was stored.
  r = curl("GET", "/v1/tenants/acme/sites/lyon/devices", acme);
  EXPECT_EQ(r.j()["items"].size(), 1u) << r.body;
  {
    Process watch;
    const std::string out = dir_.file("devices.ndjson");
    ProcessOptions po;
    po.log_path = out;
    std::string err;
    ASSERT_TRUE(watch.start({"curl", "-s", "-N", "-m", "20", "-H", "Authorization: Bearer " + acme,
                             base_ + "/v1/watch?kind=device&tenant=acme&site=lyon"},
                            po, &err))
        << err;
    ASSERT_TRUE(wait_until([&] { return read_file(out).find("BOOKMARK") != std::string::npos; },
                           kTimeout, kPoll));
    json changed = doc;
    changed["desired"]["speed"] = 4;
    ASSERT_EQ(put_json(path, acme, changed).status, 200);
    // globex's device on the same site is not acme's event.
    ASSERT_EQ(put_json("/v1/tenants/globex/sites/lyon/devices/valve-1", globex,
                       {{"credential", {{"passwordHash", hash}}}})
                  .status,
              200);
    ASSERT_EQ(curl("DELETE", path, acme).status, 200);
    ASSERT_TRUE(wait_until([&] { return read_file(out).find("DELETE") != std::string::npos; },
                           kTimeout, kPoll));
    watch.kill(SIGTERM);
    std::vector<json> lines;
    std::istringstream in(read_file(out));
    std::string line;
    while (std::getline(in, line)) lines.push_back(json::parse(line));
    ASSERT_EQ(lines.size(), 3u) << read_file(out);
    EXPECT_EQ(lines[1]["type"], "PUT");
    EXPECT_EQ(lines[1]["object"]["kind"], "device");
    EXPECT_EQ(lines[1]["object"]["site"], "lyon");
    EXPECT_EQ(lines[1]["object"]["name"], "pump-1");
    EXPECT_EQ(lines[1]["object"]["document"]["desired"]["speed"], 4);
    EXPECT_EQ(lines[2]["type"], "DELETE");
    EXPECT_EQ(lines[2]["object"]["name"], "pump-1");
    // Resuming from the PUT replays the deletion.
    r = curl("GET",
             "/v1/watch?kind=device&tenant=acme&site=lyon&from=" +
                 lines[1]["position"].get<std::string>(),
             acme, {"-N"}, 2);
    EXPECT_NE(r.body.find("\"DELETE\""), std::string::npos) << r.body;
    ASSERT_EQ(put_json(path, acme, doc).status, 200);
  }

  r = curl("DELETE", path, acme);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(curl("GET", path, acme).status, 404);
  EXPECT_EQ(curl("DELETE", path, acme).status, 404);
}

TEST_F(RestTest, EveryPathOfTheOpenApiDocumentAnswers) {
  Reply doc = curl("GET", "/openapi.json", "");
  ASSERT_EQ(doc.status, 200);
  const json spec = doc.j();
  ASSERT_TRUE(spec.contains("paths")) << doc.body.substr(0, 200);
  EXPECT_EQ(spec["openapi"].get<std::string>().substr(0, 2), "3.");
  // The file in the repository is the one the hub serves.
  EXPECT_EQ(spec, json::parse(read_file(CANOPY_OPENAPI_FILE)));

  ASSERT_EQ(put_json("/v1/tenants/acme", token_, json::object()).status, 200);
  const std::string viewer = issue("viewer", "acme");
  Reply tokens = curl("GET", "/v1/tokens?tenant=acme", token_);
  const std::string id = tokens.j()["items"][0]["id"];
  const std::map<std::string, std::string> values = {{"tenant", "acme"}, {"kind", "templates"},
                                                     {"name", "web"},    {"placement", "shop"},
                                                     {"site", "lyon"},   {"id", id}};
  const std::map<std::string, json> bodies = {
      {"/v1/tenants/{tenant}", json::object()},
      {"/v1/tenants/{tenant}/{kind}/{name}", config_map("web", "a")},
      {"/v1/sites/{site}", {{"labels", {{"region", "eu"}}}}},
      {"/v1/tenants/{tenant}/sites/{site}/devices/{name}",
       {{"credential",
         {{"passwordHash", "$2b$04$UrDXCYlPNQURswfF2MBrOuNJzRtHfFCBQ52iWsLO/KBXfxi89YwZC"}}}}},
      {"/v1/tokens", {{"role", "viewer"}, {"tenant", "acme"}}},
      {"/v1/enroll", {{"token", "canopy-enroll_x"}, {"csr", "x"}}},
      {"/v1/enroll/poll", {{"site", "lyon"}, {"poll", "x"}}},
      {"/v1/renew", {{"certificate", "x"}, {"csr", "x"}, {"signature", "00"}}}};
  int answered = 0;
  // PUT and POST first, DELETE last, so that reads find what they read.
  for (const std::string method : {"put", "post", "get", "delete"}) {
    for (const auto& [path, ops] : spec["paths"].items()) {
      if (!ops.contains(method)) continue;
      std::string url = path;
      for (const auto& [k, v] : values)
        url = std::regex_replace(url, std::regex("\\{" + k + "\\}"), v);
      ASSERT_EQ(url.find('{'), std::string::npos) << path;
      std::vector<std::string> extra;
      if (auto b = bodies.find(path); b != bodies.end())
        extra = {"--data-binary", b->second.dump()};
      if (path == "/v1/watch") url += "?kind=template&tenant=acme";
      std::string upper = method;
      for (char& ch : upper) ch = static_cast<char>(std::toupper(ch));
      Reply r = curl(upper, url, token_, extra, path == "/v1/watch" ? 1 : 10);
      // Answered by a route of the API: a 2xx, or an error in the API's shape.
      const std::string first_line = r.body.substr(0, r.body.find('\n'));
      const json j = json::parse(first_line, nullptr, false);
      EXPECT_TRUE(r.status / 100 == 2 || (j.is_object() && j.contains("error")))
          << upper << " " << url << " -> " << r.status << " " << r.body;
      EXPECT_FALSE(j.is_discarded()) << upper << " " << url << ": " << r.body;
      ++answered;
    }
  }
  EXPECT_GE(answered, 17);
}

// curl's --data-binary without -H sends Content-Type
// application/x-www-form-urlencoded: the body is still read as the JSON it
// is, whatever its size and whatever '&' and '=' it holds (httplib would
// parse it as a query string, and answer one over 8 KiB with an empty 413).
TEST_F(RestTest, CurlsDefaultContentTypeIsReadAsJsonAtAnySize) {
  json big = config_map("big", "web");
  big["data"] = {{"blob", std::string(40'000, 'x')}, {"query", "a=b&c=d&token=x"}};
  Reply r = put_json("/v1/tenants/acme/templates/big", token_, big);
  ASSERT_EQ(r.status, 200) << r.body;
  Reply got = curl("GET", "/v1/tenants/acme/templates/big", token_);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.j()["document"]["data"], big["data"]);
}

// A full disk under the real hub, seen with curl: the hub's data directory
// is a tmpfs of 100 MB (mounted for the test; where it cannot be, the test
// says so and is skipped), filled by a file. Writes are refused once the free
// space is below the store's reserve (68 MiB for the hub by default; 80 MiB
// here, from the config file), before RocksDB meets a full disk, and probes
// say why; once the file is gone the hub
// writes again by itself, with nothing accepted lost (docs/metrics.md, "A
// full disk").
TEST_F(RestTest, AFullDiskIsRefusedClearlyAndHealsWithoutARestart) {
  kill_hub();
  testing::SmallDisk disk;
  if (std::string why = disk.mount(hub_->data(), "100m"); !why.empty()) GTEST_SKIP() << why;
  const std::string config = dir_.file("hub-reserve.yaml");
  std::ofstream(config) << "disk_reserve_mb: 80\n";
  hub_->extra_args = {"--config", config};
  ASSERT_NO_FATAL_FAILURE(launch_hub());  // a new hub, on the tmpfs
  ASSERT_EQ(disk.fill(256 << 10), "");
  json big = config_map("big", "web");
  big["data"] = {{"blob", std::string(40'000, 'x')}};
  std::vector<std::string> accepted;
  Reply refused;
  for (int i = 0; i < 60 && refused.status != 503; ++i) {
    const std::string name = "c" + std::to_string(i);
    Reply r = put_json("/v1/tenants/acme/templates/" + name, token_, big);
    if (r.status == 200) {
      accepted.push_back(name);
    } else {
      refused = r;
    }
  }
  ASSERT_EQ(refused.status, 503) << refused.body << " (after " << accepted.size() << " accepted)";
  EXPECT_EQ(refused.j()["error"]["code"], "UNAVAILABLE") << refused.body;
  EXPECT_NE(refused.body.find("below the store's reserve of 80.0 MiB"), std::string::npos)
      << refused.body;
  auto health = http_get_json(hub_->health_port, "/healthz");
  ASSERT_TRUE(health.has_value());
  EXPECT_FALSE(health->value("store_writable", true)) << health->dump();
  EXPECT_NE(health->value("store_error", "").find("below the store's reserve"), std::string::npos)
      << health->dump();
  Reply ready = curl("GET", "/readyz", "");
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find("the store cannot write"), std::string::npos) << ready.body;
  EXPECT_NE(curl("GET", "/metrics", "").body.find("\ncanopy_store_writable 0\n"),
            std::string::npos);
  for (const std::string& name : accepted) {
    EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/" + name, token_).status, 200) << name;
  }

  ASSERT_EQ(disk.empty(), "");
  Reply again;
  ASSERT_TRUE(wait_until(
      [&] {
        again = put_json("/v1/tenants/acme/templates/after", token_, config_map("after", "web"));
        return again.status == 200;
      },
      60s, 500ms))
      << "no write succeeded within 60 s of freeing the disk: " << again.status << " "
      << again.body;
  EXPECT_EQ(curl("GET", "/readyz", "").status, 200);
  health = http_get_json(hub_->health_port, "/healthz");
  ASSERT_TRUE(health.has_value());
  EXPECT_TRUE(health->value("store_writable", false)) << health->dump();
  EXPECT_NE(curl("GET", "/metrics", "").body.find("\ncanopy_store_writable 1\n"),
            std::string::npos);
  for (const std::string& name : accepted) {
    EXPECT_EQ(curl("GET", "/v1/tenants/acme/templates/" + name, token_).status, 200) << name;
  }
  EXPECT_NE(read_file(hub_->log_path()).find("writes work again"), std::string::npos);
  kill_hub();
}

}  // namespace
}  // namespace canopy::e2e
