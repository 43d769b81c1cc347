// Enrollment and per-site NATS permissions end to end (docs/security.md): a
// real nats-server whose users come from the authorization file the real
// canopy-hub writes (and reloads by SIGHUP), `kubectl canopy enroll` through
// the real kubectl, real canopy-spoke processes enrolling with real OpenSSL
// keys and certificates, and raw NATS.c connections holding a site's
// credentials to probe what nats-server lets them do.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "sync/subjects.h"
#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

struct CmdRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

struct Credentials {
  std::string user;
  std::string password;
};

// NATS.c's asynchronous errors of one connection (permission violations).
struct AsyncErrors {
  std::mutex mu;
  std::vector<std::string> seen;
  static void handler(natsConnection*, natsSubscription*, natsStatus s, void* closure) {
    auto* self = static_cast<AsyncErrors*>(closure);
    std::lock_guard lock(self->mu);
    self->seen.push_back(natsStatus_GetText(s));
  }
  size_t count() {
    std::lock_guard lock(mu);
    return seen.size();
  }
};

// Connects as `c`; nullptr with NATS.c's error text in *error when refused.
NatsConn connect_as(const std::string& url, const Credentials& c, AsyncErrors* errors,
                    std::string* error) {
  natsOptions* opts = nullptr;
  natsOptions_Create(&opts);
  natsOptions_SetURL(opts, url.c_str());
  natsOptions_SetUserInfo(opts, c.user.c_str(), c.password.c_str());
  natsOptions_SetMaxReconnect(opts, 0);
  if (errors != nullptr) natsOptions_SetErrorHandler(opts, &AsyncErrors::handler, errors);
  natsConnection* conn = nullptr;
  const natsStatus s = natsConnection_Connect(&conn, opts);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    if (error != nullptr)
      *error = std::string(natsStatus_GetText(s)) + ": " + nats_GetLastError(nullptr);
    return nullptr;
  }
  return NatsConn(conn);
}

int mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 0777);
}

class EnrollTest : public E2ETest {
 protected:
  // No nats-server yet: it starts with the hub's authorization file.
  void SetUp() override {}

  // The hub writes its CA and NATS authorization file, nats-server starts
  // with it (and a pid file the hub signals), then the hub starts.
  // With `leaf`, nats-server also takes sites' leaf connections on leaf_port_.
  // `hub_args` are added to canopy-hub's command line.
  void start_secure(bool leaf = false, const std::vector<std::string>& hub_args = {}) {
    create_hub();
    NatsServerOptions o;
    o.max_payload = nats_max_payload_;
    // nats-server resolves an include from its config file's directory
    // (an absolute path does not work); its pid file is where the hub looks.
    pid_file_ = hub_->dir.file("nats.pid");
    o.extra_config = "include \"canopy-auth.conf\"\npid_file: \"" + pid_file_ + "\"\n";
    if (leaf) {
      leaf_port_ = port();
      o.extra_config += "leafnodes { listen: \"127.0.0.1:" + std::to_string(leaf_port_) + "\" }\n";
    }
    nats_ = std::make_unique<NatsServer>(o);
    auth_file_ = nats_->dir().file("canopy-auth.conf");
    hub_->extra_args = {"--nats-auth-file", auth_file_, "--nats-pid-file", pid_file_};
    hub_->extra_args.insert(hub_->extra_args.end(), hub_args.begin(), hub_args.end());
    CmdRun w = run({CANOPY_HUB_BIN, "--name", kHubName, "--data", hub_->data(), "--nats-auth-file",
                    auth_file_, "--write-nats-auth"});
    ASSERT_EQ(w.exit_code, 0) << w.out;
    std::string err;
    ASSERT_TRUE(nats_->start(&err)) << err;
    launch_hub();
  }

  CmdRun run(std::vector<std::string> argv,
             std::vector<std::pair<std::string, std::string>> env = {}) {
    const std::string log = dir_.file("run-" + std::to_string(++runs_) + ".log");
    ProcessOptions po;
    po.log_path = log;
    po.env = std::move(env);
    CmdRun r;
    Process p;
    std::string err;
    if (!p.start(argv, po, &err)) {
      r.out = "cannot start " + argv[0] + ": " + err;
      return r;
    }
    auto status = p.wait_exit(60s);
    if (status && WIFEXITED(*status)) r.exit_code = WEXITSTATUS(*status);
    r.out = read_file(log);
    return r;
  }

  // `kubectl canopy <args>` as the fleet admin.
  CmdRun kubectl(std::vector<std::string> args) {
    std::vector<std::string> argv = {"kubectl", "canopy"};
    for (auto& a : args) argv.push_back(std::move(a));
    const std::string plugin_dir = fs::path(KUBECTL_CANOPY_BIN).parent_path();
    return run(argv, {{"PATH", plugin_dir + ":" + std::string(std::getenv("PATH"))},
                      {"CANOPY_HUB", "127.0.0.1:" + std::to_string(hub_->grpc_port)},
                      {"CANOPY_TOKEN", token_},
                      {"HOME", dir_.path().string()},
                      {"XDG_CONFIG_HOME", ""}});
  }

  // A bootstrap token for `site` through `kubectl canopy enroll`.
  json enroll_token(const std::string& site, const std::string& ttl = "1h") {
    CmdRun r = kubectl({"enroll", site, "--ttl", ttl, "-o", "json"});
    EXPECT_EQ(r.exit_code, 0) << r.out;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << r.out;
    if (!j.is_object()) return json::object();
    tokens_.push_back(j.value("token", ""));
    return j;
  }

  std::string hub_url() const { return "http://127.0.0.1:" + std::to_string(hub_->health_port); }

  Spoke& enrolled_spoke(const std::string& site, const json& token) {
    Spoke& s = create_spoke(site, {{"region", "eu"}});
    s.extra_args = {"--enroll", token.value("token", ""), "--hub-url",
                    hub_url(),  "--ca-fingerprint",       token.value("caFingerprint", "")};
    return s;
  }

  static Credentials credentials_of(const Spoke& s) {
    json j = json::parse(read_file(s.data() + "/identity/nats.json"), nullptr, false);
    if (!j.is_object()) return {};
    return {j.value("user", ""), j.value("password", "")};
  }
  // The user its device bus's leaf node connects with.
  static std::string leaf_user_of(const Spoke& s) {
    json j = json::parse(read_file(s.data() + "/identity/nats.json"), nullptr, false);
    return j.is_object() ? j.value("leaf_user", "") : "";
  }
  Credentials hub_credentials() const {
    std::string pw = read_file(hub_->data() + "/nats-hub.password");
    while (!pw.empty() && pw.back() == '\n') pw.pop_back();
    return {std::string("canopy-hub-") + kHubName, pw};
  }

  // POST /v1/enroll by hand: (HTTP status, body).
  std::pair<int, std::string> exchange(const std::string& token, const std::string& csr) {
    httplib::Client cli("127.0.0.1", hub_->health_port);
    cli.set_read_timeout(10, 0);
    auto res =
        cli.Post("/v1/enroll", json{{"token", token}, {"csr", csr}}.dump(), "application/json");
    if (!res) return {0, "no answer"};
    return {res->status, res->body};
  }

  // The value of a counter on the hub's /metrics.
  double hub_metric(const std::string& name) {
    return scrape_metric(hub_->health_port, name).value_or(-1);
  }

  // No token issued in this test appears in any daemon's log.
  void expect_no_token_in_logs() {
    std::vector<std::pair<std::string, std::string>> logs = {
        {"hub", read_file(hub_->log_path())}, {"nats", read_file(nats_->log_path())}};
    for (const auto& s : spokes_) logs.push_back({"spoke " + s->site, read_file(s->log_path())});
    for (const auto& t : tokens_) {
      ASSERT_GT(t.size(), 43u);
      const std::string secret = t.substr(t.size() - 43);
      for (const auto& [who, text] : logs) {
        EXPECT_EQ(text.find(secret), std::string::npos)
            << "a bootstrap token in the " << who << " log";
      }
    }
  }

  // A nats-server that is a leaf node of the hub's, connecting with `userinfo`
  // ("user:password@", or empty) in its remote's URL: a site's gateway.
  std::unique_ptr<NatsServer> start_leaf(const std::string& userinfo) {
    NatsServerOptions o;
    o.extra_config = "leafnodes {\n  reconnect: 1\n  remotes: [ { url: \"nats-leaf://" + userinfo +
                     "127.0.0.1:" + std::to_string(leaf_port_) + "\" } ]\n}\n";
    auto leaf = std::make_unique<NatsServer>(o);
    std::string err;
    EXPECT_TRUE(leaf->start(&err)) << err;
    return leaf;
  }

  TempDir dir_{"canopy-enroll-"};
  int leaf_port_ = 0;
  int runs_ = 0;
  std::string auth_file_, pid_file_;
  std::vector<std::string> tokens_;
};

TEST_F(EnrollTest, EnrolledSiteSyncsAndIsConfinedToItsSubjects) {
  start_secure();
  // Without credentials nobody gets in any more.
  {
    std::string err;
    EXPECT_FALSE(connect_as(nats_->url(), {"", ""}, nullptr, &err)) << "anonymous NATS allowed";
    EXPECT_FALSE(connect_as(nats_->url(), {"site-a", "guess"}, nullptr, &err));
  }
  const json ta = enroll_token("a");
  ASSERT_TRUE(ta.value("caFingerprint", "").starts_with("sha256:")) << ta.dump();
  ASSERT_TRUE(ta.value("token", "").starts_with("canopy-enroll_")) << ta.dump();
  const json tb = enroll_token("b");
  Spoke& a = enrolled_spoke("a", ta);
  launch_spoke(a);  // its session opens: it connected with its own NATS user
  Spoke& b = enrolled_spoke("b", tb);
  launch_spoke(b);

  // It syncs: a placement reaches it, its status comes back.
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1")).ok());
  ASSERT_TRUE(put("placement", "eu", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(wait_until([&] { return a.read().contains(template_key("web")); }, kTimeout, kPoll))
      << "the enrolled spoke never applied the placement";
  ASSERT_TRUE(wait_hub_applied("eu", "a", "web"))
      << "the enrolled spoke's status never reached the hub";

  // Secrets at rest: 0600 on both ends.
  for (const char* f : {"site.key", "site.crt", "ca.crt", "nats.json"}) {
    EXPECT_EQ(mode_of(a.data() + "/identity/" + f), 0600) << f;
  }
  EXPECT_EQ(mode_of(hub_->data() + "/ca/ca.key"), 0600);
  EXPECT_EQ(mode_of(hub_->data() + "/nats-hub.password"), 0600);
  EXPECT_EQ(mode_of(auth_file_), 0640);
  // The site's certificate is the hub CA's, for the site (checked by openssl).
  CmdRun verify = run({"openssl", "verify", "-CAfile", a.data() + "/identity/ca.crt",
                       a.data() + "/identity/site.crt"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  CmdRun subject =
      run({"openssl", "x509", "-noout", "-subject", "-in", a.data() + "/identity/site.crt"});
  EXPECT_NE(subject.out.find("CN = a"), std::string::npos) << subject.out;
  // The CA key is never served nor logged.
  const std::string ca_key = read_file(hub_->data() + "/ca/ca.key");
  ASSERT_NE(ca_key.find("PRIVATE KEY"), std::string::npos);
  const std::string key_body = ca_key.substr(40, 40);
  EXPECT_EQ(read_file(hub_->log_path()).find(key_body), std::string::npos);

  // A's credentials: its own subjects work, B's are refused by nats-server.
  const Credentials ca = credentials_of(a);
  ASSERT_EQ(ca.user, "site-a");
  AsyncErrors errors;
  std::string err;
  NatsConn as_a = connect_as(nats_->url(), ca, &errors, &err);
  ASSERT_TRUE(as_a) << err;
  AsyncErrors hub_errors;
  NatsConn as_hub = connect_as(nats_->url(), hub_credentials(), &hub_errors, &err);
  ASSERT_TRUE(as_hub) << err;
  // The hub side watches B's up subject; A's subscription on B's down
  // subject must never see what is published there.
  natsSubscription* raw = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&raw, as_hub.get(), up_subject("b").c_str()), NATS_OK);
  NatsSub hub_sees_b_up(raw);
  ASSERT_EQ(natsConnection_SubscribeSync(&raw, as_hub.get(), up_subject("a").c_str()), NATS_OK);
  NatsSub hub_sees_a_up(raw);
  ASSERT_EQ(natsConnection_Flush(as_hub.get()), NATS_OK);
  ASSERT_EQ(natsConnection_SubscribeSync(&raw, as_a.get(), down_subject("b").c_str()), NATS_OK);
  NatsSub a_sees_b_down(raw);
  ASSERT_EQ(natsConnection_SubscribeSync(&raw, as_a.get(), "canopy.>"), NATS_OK);
  NatsSub a_sees_all(raw);
  natsConnection_Flush(as_a.get());
  EXPECT_EQ(nats_publish(as_a.get(), up_subject("b"), "forged"), NATS_OK);  // async refusal
  EXPECT_EQ(nats_publish(as_a.get(), "canopy.v1.hub.b.down", "forged"), NATS_OK);
  EXPECT_EQ(nats_publish(as_a.get(), up_subject("a"), "own"), NATS_OK);
  EXPECT_EQ(nats_publish(as_hub.get(), down_subject("b"), "for b only"), NATS_OK);
  {
    natsMsg* m = nullptr;
    EXPECT_EQ(natsSubscription_NextMsg(&m, hub_sees_a_up.get(), 5000), NATS_OK)
        << "A could not publish on its own up subject";
    natsMsg_Destroy(m);
    m = nullptr;
    EXPECT_NE(natsSubscription_NextMsg(&m, hub_sees_b_up.get(), 1000), NATS_OK)
        << "A published on B's up subject";
    natsMsg_Destroy(m);
    m = nullptr;
    EXPECT_NE(natsSubscription_NextMsg(&m, a_sees_b_down.get(), 500), NATS_OK)
        << "A received B's down subject";
    natsMsg_Destroy(m);
    m = nullptr;
    EXPECT_NE(natsSubscription_NextMsg(&m, a_sees_all.get(), 500), NATS_OK)
        << "A received through a wildcard subscription";
    natsMsg_Destroy(m);
  }
  // nats-server said so: permission violations for both subscriptions and
  // both publishes.
  EXPECT_TRUE(wait_until([&] { return errors.count() >= 2; }, 5s, kPoll))
      << "NATS.c reported " << errors.count() << " permission errors";
  EXPECT_TRUE(wait_until(
      [&] {
        const std::string log = read_file(nats_->log_path());
        return count_lines_with(log, {"Publish Violation", "User \"site-a\"", up_subject("b")}) >=
                   1 &&
               count_lines_with(
                   log, {"Subscription Violation", "User \"site-a\"", down_subject("b")}) >= 1;
      },
      5s, kPoll))
      << nats_->log_tail(3000);

  // The hub trusts subjects, not claims: on A's own subject, an envelope
  // naming B is refused and counted.
  const double refused_before = hub_metric("canopy_hub_refused_messages_total");
  {
    v1::SyncEnvelope env;
    env.set_protocol(sync::kProtocolVersion);
    env.set_from("b");
    env.set_to(kHubName);
    env.set_session(42);
    env.mutable_hello()->set_replica_id(99);
    ASSERT_EQ(nats_publish(as_a.get(), up_subject("a"), env.SerializeAsString()), NATS_OK);
  }
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with(
                   read_file(hub_->log_path()),
                   {"refused message on " + up_subject("a"), "does not match the subject"}) >= 1 &&
               hub_metric("canopy_hub_refused_messages_total") >= refused_before + 1;
      },
      kTimeout, kPoll));
  EXPECT_TRUE(a.proc.running());
  EXPECT_TRUE(b.proc.running());
  expect_no_token_in_logs();
}

TEST_F(EnrollTest, BadTokensAndWrongHubAreRefusedClearly) {
  start_secure();
  // No bootstrap token for a region's name: the parent would give a site
  // named like a region the region's scope.
  ASSERT_TRUE(put("site", "paris", {{"region", "eu"}}).ok());
  CmdRun named = kubectl({"enroll", "eu", "--ttl", "1h", "-o", "json"});
  EXPECT_NE(named.exit_code, 0) << named.out;
  EXPECT_NE(named.out.find("\"eu\" is the name of a region"), std::string::npos) << named.out;
  // Forged: well-formed, never issued.
  const std::string forged = "canopy-enroll_0123456789abcdef_" + std::string(43, 'A');
  Spoke& f = create_spoke("f", {{"region", "eu"}});
  const json tf = enroll_token("f");
  f.extra_args = {"--enroll",         forged,
                  "--hub-url",        hub_url(),
                  "--ca-fingerprint", tf.value("caFingerprint", "")};
  std::vector<std::string> argv = {CANOPY_SPOKE_BIN,
                                   "--site",
                                   "f",
                                   "--data",
                                   f.data(),
                                   "--manifests",
                                   f.manifests(),
                                   "--nats",
                                   nats_->url(),
                                   "--health",
                                   "127.0.0.1:" + std::to_string(f.health_port)};
  auto spoke_run = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> a = argv;
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a);
  };
  CmdRun r = spoke_run(f.extra_args);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("bootstrap token not recognized"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(f.data() + "/identity/site.crt"));

  // Wrong pin: refused before the token is sent (the hub never sees it).
  const double refused = hub_metric("canopy_hub_enrollments_refused_total");
  r = spoke_run({"--enroll", tf.value("token", ""), "--hub-url", hub_url(), "--ca-fingerprint",
                 "sha256:" + std::string(64, 'a')});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("not the pinned"), std::string::npos) << r.out;
  EXPECT_EQ(hub_metric("canopy_hub_enrollments_refused_total"), refused);
  // A malformed pin is a usage error before anything happens.
  r = spoke_run({"--enroll", tf.value("token", ""), "--hub-url", hub_url(), "--ca-fingerprint",
                 "sha256:xyz"});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("CA fingerprint"), std::string::npos) << r.out;

  // A token bound to another site: the CSR's CN must be the token's site.
  const json tg = enroll_token("g");
  r = spoke_run({"--enroll", tg.value("token", ""), "--hub-url", hub_url(), "--ca-fingerprint",
                 tg.value("caFingerprint", "")});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("subject must be exactly CN=g"), std::string::npos) << r.out;

  // The right token works once...
  Spoke& f2 = create_spoke("f", {{"region", "eu"}});
  f2.extra_args = {"--enroll", tf.value("token", ""), "--hub-url",
                   hub_url(),  "--ca-fingerprint",    tf.value("caFingerprint", "")};
  launch_spoke(f2);
  // ... and a replay is refused, whoever sends it.
  auto key =
      run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-subj", "/CN=f", "-keyout", dir_.file("x.key"), "-out", dir_.file("x.csr")});
  ASSERT_EQ(key.exit_code, 0) << key.out;
  const std::string csr = read_file(dir_.file("x.csr"));
  auto [code, body] = exchange(tf.value("token", ""), csr);
  EXPECT_EQ(code, 401) << body;
  EXPECT_NE(body.find("already used"), std::string::npos) << body;

  // Expired.
  const json short_lived = enroll_token("f", "1s");
  std::this_thread::sleep_for(1500ms);
  std::tie(code, body) = exchange(short_lived.value("token", ""), csr);
  EXPECT_EQ(code, 401) << body;
  EXPECT_NE(body.find("expired"), std::string::npos) << body;
  // Garbage in the body.
  std::tie(code, body) = exchange("not a token", csr);
  EXPECT_EQ(code, 401) << body;
  std::tie(code, body) = exchange(enroll_token("f").value("token", ""), "not a csr");
  EXPECT_EQ(code, 400) << body;
  EXPECT_NE(body.find("csr"), std::string::npos) << body;
  // Only a fleet admin issues tokens; a bad site name is refused.
  CmdRun bad = kubectl({"enroll", "Not_A_Site"});
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("DNS-1123"), std::string::npos) << bad.out;
  bad = kubectl({"enroll", "f", "--ttl", "8d"});
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_GE(hub_metric("canopy_hub_enrollments_refused_total"), 5);
  expect_no_token_in_logs();
}

TEST_F(EnrollTest, RevokedSiteIsCutOffAndNothingItSendsIsMerged) {
  start_secure();
  const json ta = enroll_token("a");
  Spoke& a = enrolled_spoke("a", ta);
  launch_spoke(a);
  const Credentials creds = credentials_of(a);
  std::string err;
  NatsConn probe = connect_as(nats_->url(), creds, nullptr, &err);
  ASSERT_TRUE(probe) << err;

  CmdRun r = kubectl({"site", "revoke", "a"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // nats-server reloads and cuts A's connections; new ones are refused.
  EXPECT_TRUE(wait_until([&] { return natsConnection_IsClosed(probe.get()); }, kTimeout, kPoll))
      << "A's connection survived its revocation";
  EXPECT_FALSE(connect_as(nats_->url(), creds, nullptr, &err)) << "A still connects";
  EXPECT_TRUE(wait_spoke_health(a, "session_open", false))
      << "the revoked spoke still has a session";
  // nats-server logs the refused attempts of the spoke's transport.
  EXPECT_TRUE(wait_until(
      [&] {
        std::string log = read_file(nats_->log_path());
        std::transform(log.begin(), log.end(), log.begin(), ::tolower);
        return count_lines_with(log, {"site-a", "authori"}) >= 1 ||
               count_lines_with(log, {"site-a", "authentication"}) >= 1;
      },
      kTimeout, kPoll))
      << nats_->log_tail(3000);

  // Anything still arriving on A's subjects (here by the hub's own user,
  // which may publish anywhere) is refused and counted, not merged.
  NatsConn as_hub = connect_as(nats_->url(), hub_credentials(), nullptr, &err);
  ASSERT_TRUE(as_hub) << err;
  {
    v1::SyncEnvelope env;
    env.set_protocol(sync::kProtocolVersion);
    env.set_from("a");
    env.set_to(kHubName);
    env.set_session(7);
    env.mutable_hello()->set_replica_id(1234);
    ASSERT_EQ(nats_publish(as_hub.get(), up_subject("a"), env.SerializeAsString()), NATS_OK);
  }
  EXPECT_TRUE(
      wait_until([&] { return hub_metric("canopy_hub_refused_revoked_messages_total") >= 1; },
                 kTimeout, kPoll));
  EXPECT_GE(count_lines_with(read_file(hub_->log_path()), {"a is not admitted"}), 1u);
  EXPECT_FALSE(hub_session("a").has_value()) << "the hub kept a revoked site's session";
  // The authorization file no longer lists A.
  EXPECT_EQ(read_file(auth_file_).find("site-a"), std::string::npos);
  // Revoking a site never enrolled: a clear error.
  r = kubectl({"site", "revoke", "nobody"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("never enrolled"), std::string::npos) << r.out;
  expect_no_token_in_logs();
}

// Double opt-in (hub --enrollment-approval): a spoke with a valid token
// waits, polling, until a fleet admin approves with the real kubectl; the
// admin sees the request's fingerprint the spoke logged, and the certificate
// expiry once enrolled. A denied site gets nothing and says why. A spoke
// restarted while it waits polls on without a token.
TEST_F(EnrollTest, ApprovalHoldsAnEnrollmentUntilAFleetAdminDecides) {
  start_secure(/*leaf=*/false, {"--enrollment-approval"});
  const json ta = enroll_token("a");
  const json tb = enroll_token("b");
  Spoke& a = enrolled_spoke("a", ta);
  start_spoke_process(a);
  Spoke& b = enrolled_spoke("b", tb);
  start_spoke_process(b);

  // Both wait; the hub lists them with the request each spoke logged.
  auto listed = [&](const std::string& site) -> json {
    CmdRun r = kubectl({"enrollments", "-o", "json"});
    json j = json::parse(r.out, nullptr, false);
    if (!j.is_object()) return json();
    for (const auto& item : j.value("items", json::array())) {
      if (item.value("site", "") == site) return item;
    }
    return json();
  };
  std::string request_a;
  ASSERT_TRUE(wait_until(
      [&] {
        const std::string log = read_file(a.log_path());
        const size_t at = log.find("the request to compare: sha256:");
        if (at == std::string::npos) return false;
        request_a = log.substr(at + 24, 71);
        return true;
      },
      kTimeout, kPoll))
      << read_file(a.log_path());
  json item = listed("a");
  EXPECT_EQ(item.value("state", ""), "pending") << item.dump();
  EXPECT_EQ(item.value("requestFingerprint", ""), request_a) << item.dump();
  EXPECT_FALSE(fs::exists(a.data() + "/identity/site.crt"));
  EXPECT_EQ(mode_of(a.data() + "/identity/pending.json"), 0600);
  EXPECT_EQ(read_file(auth_file_).find("site-a"), std::string::npos);
  CmdRun table = kubectl({"enrollments"});
  CmdRun r;
  EXPECT_NE(table.out.find("pending"), std::string::npos) << table.out;

  // Bad polls: a clear error, nothing decided.
  {
    httplib::Client cli("127.0.0.1", hub_->health_port);
    auto res = cli.Post("/v1/enroll/poll", "not json", "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
    EXPECT_NE(res->body.find("poll secret"), std::string::npos) << res->body;
    res = cli.Post("/v1/enroll/poll", json{{"site", "a"}}.dump(), "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
    res = cli.Post("/v1/enroll/poll", json{{"site", "a"}, {"poll", "guess"}}.dump(),
                   "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << res->body;
    res = cli.Post("/v1/sites/a/approve", "", "application/json");  // no bearer token
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 401) << res->body;
  }
  r = kubectl({"site", "approve", "nobody"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("no enrollment of site nobody waits"), std::string::npos) << r.out;
  EXPECT_EQ(listed("a").value("state", ""), "pending");

  // A restart while it waits: it polls on (the token is spent).
  ASSERT_TRUE(a.proc.kill(SIGTERM));
  ASSERT_TRUE(a.proc.wait_exit(30s).has_value());
  start_spoke_process(a);

  // Approved: it gets its identity, connects and syncs.
  r = kubectl({"site", "approve", "a"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("approved"), std::string::npos) << r.out;
  ASSERT_TRUE(wait_spoke_health(a, "session_open", true)) << read_file(a.log_path());
  EXPECT_FALSE(fs::exists(a.data() + "/identity/pending.json"));
  EXPECT_EQ(credentials_of(a).user, "site-a");
  item = listed("a");
  EXPECT_EQ(item.value("state", ""), "enrolled") << item.dump();
  EXPECT_GT(item.value("certNotAfterMs", uint64_t{0}), item.value("enrolledAtMs", uint64_t{0}));
  // Deciding twice: a clear error.
  r = kubectl({"site", "approve", "a"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("waits for approval"), std::string::npos) << r.out;

  // Denied: nothing issued; the spoke exits saying so.
  r = kubectl({"site", "deny", "b"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto status = b.proc.wait_exit(kTimeout);
  ASSERT_TRUE(status.has_value()) << read_file(b.log_path());
  EXPECT_NE(WEXITSTATUS(*status), 0);
  EXPECT_NE(read_file(b.log_path()).find("denied the enrollment of site b"), std::string::npos)
      << read_file(b.log_path());
  EXPECT_FALSE(fs::exists(b.data() + "/identity/site.crt"));
  EXPECT_FALSE(fs::exists(b.data() + "/identity/site.key"));
  EXPECT_EQ(read_file(auth_file_).find("site-b"), std::string::npos);
  EXPECT_TRUE(listed("b").is_null());
  expect_no_token_in_logs();
}

// Messages received on `sub` within `wait`, as "subject data" lines; it
// returns early once `until` (when given) has arrived.
std::vector<std::string> drain(natsSubscription* sub, std::chrono::milliseconds wait,
                               const std::string& until = "") {
  std::vector<std::string> out;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (!until.empty() && !out.empty() && out.back() == until) return out;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return out;
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub, left.count()) != NATS_OK) continue;
    out.push_back(std::string(natsMsg_GetSubject(m)) + " " +
                  std::string(natsMsg_GetData(m), static_cast<size_t>(natsMsg_GetDataLength(m))));
    natsMsg_Destroy(m);
  }
}

bool has_line(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// A site's device bus is a leaf node of the hub's NATS with the site's leaf
// user, bound to an account of its own (docs/security.md): a device's
// telemetry and the forwarder's barrier cross, nothing of another site's
// does, in either direction, whatever a stolen gateway publishes or
// subscribes to. A leaf without credentials, with the site's client user or
// a wrong password is refused; a revoked site's leaf forwards nothing more.
TEST_F(EnrollTest, SiteBusLeafIsConfinedToItsOwnSubjects) {
  start_secure(/*leaf=*/true);
  const json ta = enroll_token("a");
  const json tb = enroll_token("b");
  Spoke& a = enrolled_spoke("a", ta);
  const int mqtt_port = port();
  a.extra_args.insert(
      a.extra_args.end(),
      {"--config", write_bus_config(a.dir.path().string(), mqtt_port, port(),
                                    "nats-leaf://127.0.0.1:" + std::to_string(leaf_port_))});
  launch_spoke(a);
  Spoke& b = enrolled_spoke("b", tb);
  launch_spoke(b);
  const Credentials ca = credentials_of(a);
  const std::string leaf_user = leaf_user_of(a);
  ASSERT_EQ(leaf_user, "leaf-a");
  // The bus's config holds the leaf credentials (0600); no log shows them.
  EXPECT_EQ(read_file(a.log_path()).find(ca.password), std::string::npos);

  std::string err;
  NatsConn as_hub = connect_as(nats_->url(), hub_credentials(), nullptr, &err);
  ASSERT_TRUE(as_hub) << err;
  natsSubscription* raw = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&raw, as_hub.get(), "tm.>"), NATS_OK);
  NatsSub hub_tm(raw);
  ASSERT_EQ(natsConnection_SubscribeSync(&raw, as_hub.get(), ">"), NATS_OK);
  NatsSub hub_all(raw);
  ASSERT_EQ(natsConnection_Flush(as_hub.get()), NATS_OK);

  // The device's telemetry reaches the hub through the confined leaf, and
  // the forwarder's barrier is echoed back to it (its uplink is up).
  const std::string pub_log = dir_.file("pub.log");
  ASSERT_TRUE(publish_pump_telemetry(mqtt_port, "21.5", "pump-1", pub_log)) << read_file(pub_log);
  const std::vector<std::string> got = drain(hub_tm.get(), 20s, "tm.acme.a.pump-1.temp 21.5");
  EXPECT_TRUE(has_line(got, "tm.acme.a.pump-1.temp 21.5")) << ::testing::PrintToString(got);
  EXPECT_TRUE(wait_until(
      [&] { return count_lines_with(read_file(a.log_path()), {"telemetry: uplink up"}) >= 1; },
      kTimeout, kPoll))
      << "the forwarder never saw its barrier's echo";

  // A stolen gateway: A's leaf credentials in a nats-server of its own.
  auto thief_server = start_leaf(leaf_user + ":" + ca.password + "@");
  ASSERT_TRUE(thief_server);
  NatsConn thief = nats_connect(thief_server->url());
  ASSERT_TRUE(thief);
  ASSERT_EQ(natsConnection_SubscribeSync(&raw, thief.get(), ">"), NATS_OK);
  NatsSub thief_all(raw);
  ASSERT_EQ(natsConnection_Flush(thief.get()), NATS_OK);
  // Connected once A's own barrier echo reaches it.
  const std::string a_ack = sync::telemetry_barrier_ack_subject("a");
  ASSERT_TRUE(wait_until(
      [&] {
        nats_publish(as_hub.get(), a_ack, "hub-sentinel");
        auto seen = drain(thief_all.get(), 200ms);
        return has_line(seen, a_ack + " hub-sentinel");
      },
      kTimeout, kPoll))
      << thief_server->log_tail(2000);
  drain(hub_all.get(), 200ms);

  // Down: nothing of B's, and none of the sync subjects (A's too: the spoke
  // syncs over its own client connection, not the leaf).
  for (const std::string& subject :
       {down_subject("b"), down_subject("a"), sync::telemetry_barrier_ack_subject("b"),
        std::string("tm.acme.b.pump-9.temp"), std::string("canopy.v1.other.b.down")}) {
    EXPECT_EQ(nats_publish(as_hub.get(), subject, "hub-" + subject), NATS_OK);
  }
  EXPECT_EQ(nats_publish(as_hub.get(), a_ack, "hub-last"), NATS_OK);
  // Up: B's telemetry and barrier, any site's sync subjects.
  for (const std::string& subject :
       {std::string("tm.acme.b.pump-9.temp"), sync::telemetry_barrier_subject("b"), up_subject("b"),
        up_subject("a"), std::string("canopy.v1.other.b.up")}) {
    EXPECT_EQ(nats_publish(thief.get(), subject, "stolen"), NATS_OK);
  }
  EXPECT_EQ(nats_publish(thief.get(), "tm.acme.a.pump-1.temp", "stolen-own"), NATS_OK);
  ASSERT_EQ(natsConnection_Flush(thief.get()), NATS_OK);

  const std::vector<std::string> thief_got = drain(thief_all.get(), 2s);
  EXPECT_TRUE(has_line(thief_got, a_ack + " hub-last")) << ::testing::PrintToString(thief_got);
  for (const auto& line : thief_got) {
    EXPECT_EQ(line.find(" hub-canopy"), std::string::npos) << "the gateway received " << line;
    EXPECT_EQ(line.find(" hub-tm"), std::string::npos) << "the gateway received " << line;
  }
  const std::vector<std::string> hub_got = drain(hub_all.get(), 2s);
  EXPECT_TRUE(has_line(hub_got, "tm.acme.a.pump-1.temp stolen-own"))
      << ::testing::PrintToString(hub_got);
  for (const auto& line : hub_got) {
    EXPECT_FALSE(line.ends_with(" stolen")) << "the hub received " << line;
  }

  // Refused: no credentials, A's client user, a wrong password.
  std::vector<std::unique_ptr<NatsServer>> refused;
  refused.push_back(start_leaf(""));
  refused.push_back(start_leaf(ca.user + ":" + ca.password + "@"));
  refused.push_back(start_leaf(leaf_user + ":wrong-password@"));
  for (auto& leaf : refused) {
    ASSERT_TRUE(leaf);
    EXPECT_TRUE(wait_until(
        [&] {
          return count_lines_with(read_file(leaf->log_path()), {"Authorization Violation"}) >= 1;
        },
        kTimeout, kPoll))
        << leaf->log_tail(2000);
  }

  // Revoked: what A's gateway sends no longer reaches the hub, and a new
  // leaf connection with its credentials is refused.
  CmdRun r = kubectl({"site", "revoke", "a"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ASSERT_TRUE(wait_until(
      [&] {
        return count_lines_with(read_file(nats_->log_path()), {"Reloaded"}) >= 1 &&
               read_file(auth_file_).find("leaf-a") == std::string::npos;
      },
      kTimeout, kPoll))
      << nats_->log_tail(2000);
  drain(hub_all.get(), 500ms);
  EXPECT_EQ(nats_publish(thief.get(), "tm.acme.a.pump-1.temp", "after-revocation"), NATS_OK);
  for (const auto& line : drain(hub_all.get(), 2s)) {
    EXPECT_EQ(line.find("after-revocation"), std::string::npos) << "the hub received " << line;
  }
  auto again = start_leaf(leaf_user + ":" + ca.password + "@");
  ASSERT_TRUE(again);
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with(read_file(again->log_path()), {"Authorization Violation"}) >= 1;
      },
      kTimeout, kPoll))
      << again->log_tail(2000);
  expect_no_token_in_logs();
}

}  // namespace
}  // namespace canopy::e2e
