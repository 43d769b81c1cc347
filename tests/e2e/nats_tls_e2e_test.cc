// NATS over mutual TLS end to end (docs/security.md, "NATS over TLS"): a
// real nats-server with `tls { verify: true }` whose certificate the hub's
// CA signed, the real canopy-hub (its own client certificate from its CA)
// and canopy-spoke processes enrolled through the hub's real enrollment
// (their site.crt for mTLS, chosen because the URL says tls://); and the
// refusals with their reasons in the daemons' logs and health and in
// nats-server's log: a client certificate from another CA, an expired one,
// a server certificate for another host name.
#include <algorithm>

#include "tests/e2e/e2e_fixture.h"
#include "tests/support/tls_certs.h"

namespace canopy::e2e {
namespace {

using canopy::testing::CertFiles;
using canopy::testing::TestCertificates;

class NatsTlsE2ETest : public E2ETest {
 protected:
  // No nats-server yet: it needs the hub's CA.
  void SetUp() override {}

  // The hub's CA and authorization file first (--write-nats-auth), then a
  // nats-server with TLS on its client port: a server certificate for
  // `dns`/127.0.0.1 signed by the hub's CA, clients verified against it.
  // With `leaf`, a leaf node port too (leaf_port_), with the same TLS.
  void start_tls(std::vector<std::string> dns = {"localhost"}, bool leaf = false) {
    create_hub();
    const std::string data = hub_->data();
    hub_ca_ = {data + "/ca/ca.crt", data + "/ca/ca.key"};
    NatsServerOptions o;
    o.max_payload = nats_max_payload_;
    pid_file_ = hub_->dir.file("nats.pid");
    o.extra_config = "include \"canopy-auth.conf\"\npid_file: \"" + pid_file_ + "\"\n";
    // The server's certificate is issued below, once the hub made its CA.
    o.tls.cert_file = certs_.dir().file("nats-server.crt");
    o.tls.key_file = certs_.dir().file("nats-server.key");
    o.tls.ca_file = hub_ca_.cert;
    o.tls.verify = true;
    if (leaf) {
      leaf_port_ = port();
      o.extra_config += "leafnodes {\n  listen: \"127.0.0.1:" + std::to_string(leaf_port_) +
                        "\"\n  tls { cert_file: \"" + o.tls.cert_file + "\", key_file: \"" +
                        o.tls.key_file + "\", ca_file: \"" + o.tls.ca_file +
                        "\", verify: true }\n}\n";
    }
    nats_ = std::make_unique<NatsServer>(o);
    auth_file_ = nats_->dir().file("canopy-auth.conf");
    hub_->extra_args = {"--nats-auth-file", auth_file_, "--nats-pid-file", pid_file_};
    ASSERT_EQ(run({CANOPY_HUB_BIN, "--name", kHubName, "--data", data, "--nats-auth-file",
                   auth_file_, "--write-nats-auth"}),
              0);
    std::string error;
    server_cert_ = certs_.issue_server(hub_ca_, "nats-server", dns, {"127.0.0.1"}, &error);
    ASSERT_TRUE(server_cert_.ok()) << error;
    ASSERT_EQ(server_cert_.cert, o.tls.cert_file);
    ASSERT_TRUE(nats_->start(&error)) << error;
    ASSERT_EQ(nats_->url().rfind("tls://", 0), 0u);
  }

  int run(std::vector<std::string> argv) {
    const std::string log = dir_.file("run-" + std::to_string(++runs_) + ".log");
    ProcessOptions po;
    po.log_path = log;
    Process p;
    std::string err;
    if (!p.start(argv, po, &err)) return -1;
    auto status = p.wait_exit(60s);
    if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      ADD_FAILURE() << argv[0] << " failed:\n" << read_file(log);
      return -1;
    }
    return 0;
  }

  // A bootstrap token for `site` from the hub's REST API (as kubectl canopy
  // enroll asks for one).
  json bootstrap_token(const std::string& site) {
    httplib::Client cli("127.0.0.1", hub_->health_port);
    cli.set_read_timeout(10, 0);
    auto res = cli.Post("/v1/sites/" + site + "/enrollment?ttlSeconds=3600",
                        {{"Authorization", "Bearer " + token_}}, "", "application/json");
    EXPECT_TRUE(res && res->status == 201) << (res ? res->body : "no answer");
    if (!res) return json::object();
    return json::parse(res->body, nullptr, false);
  }

  Spoke& enrolled_spoke(const std::string& site) {
    const json t = bootstrap_token(site);
    Spoke& s = create_spoke(site, {{"region", "eu"}});
    s.extra_args = {"--enroll",         t.value("token", ""),
                    "--hub-url",        "http://127.0.0.1:" + std::to_string(hub_->health_port),
                    "--ca-fingerprint", t.value("caFingerprint", "")};
    return s;
  }

  // Every client connection nats-server holds, from its monitoring port.
  json connections() {
    auto j = http_get_json(nats_->monitor_port(), "/connz?auth=true");
    return j ? j->value("connections", json::array()) : json::array();
  }

  TempDir dir_{"canopy-nats-tls-"};
  int leaf_port_ = 0;
  int runs_ = 0;
  TestCertificates certs_;
  CertFiles hub_ca_, server_cert_;
  std::string auth_file_, pid_file_;
};

TEST_F(NatsTlsE2ETest, EnrolledSiteSyncsOverMutualTls) {
  start_tls();
  launch_hub();  // connected: its own certificate from its CA, over TLS
  Spoke& a = enrolled_spoke("a");
  launch_spoke(a);  // session open and in sync: over TLS with site.crt
  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1")).ok());
  ASSERT_TRUE(put("placement", "eu", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(wait_until([&] { return a.read().contains(template_key("web")); }, kTimeout, kPoll))
      << "the spoke never applied the placement over TLS";
  ASSERT_TRUE(wait_hub_applied("eu", "a", "web"))
      << "the spoke's status never reached the hub over TLS";
  // nats-server holds both over TLS, as their users.
  const json conns = connections();
  std::set<std::string> tls_users;
  for (const auto& c : conns) {
    EXPECT_FALSE(c.value("tls_version", "").empty()) << c.dump();
    tls_users.insert(c.value("authorized_user", ""));
  }
  EXPECT_TRUE(tls_users.contains("site-a")) << conns.dump();
  EXPECT_TRUE(tls_users.contains(std::string("canopy-hub-") + kHubName)) << conns.dump();
  EXPECT_NE(read_file(a.log_path()).find("NATS over TLS, CA " + a.data() + "/identity/ca.crt"),
            std::string::npos);
  // The hub's own client certificate verifies against its CA (openssl).
  Process verify;
  ProcessOptions po;
  po.log_path = dir_.file("verify.log");
  std::string err;
  ASSERT_TRUE(verify.start(
      {"openssl", "verify", "-CAfile", hub_ca_.cert, hub_->data() + "/nats-tls/hub.crt"}, po, &err))
      << err;
  auto status = verify.wait_exit(30s);
  EXPECT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << read_file(dir_.file("verify.log"));
}

// A site's device bus reaches a hub leaf port that verifies client
// certificates: its leaf remote presents the site's certificate and logs in
// as the site's leaf user, bound to the site's account; a device's telemetry
// goes up and the hub's barrier echo comes back over it.
TEST_F(NatsTlsE2ETest, SiteBusLeafConnectsOverMutualTlsIntoItsAccount) {
  ASSERT_NO_FATAL_FAILURE(start_tls({"localhost"}, /*leaf=*/true));
  launch_hub();
  Spoke& a = enrolled_spoke("a");
  const int mqtt_port = port();
  a.extra_args.insert(
      a.extra_args.end(),
      {"--config", write_bus_config(a.dir.path().string(), mqtt_port, port(),
                                    "tls://127.0.0.1:" + std::to_string(leaf_port_))});
  launch_spoke(a);
  // nats-server holds the leaf, bound to A's account.
  std::string leaf_account;
  EXPECT_TRUE(wait_until(
      [&] {
        auto j = http_get_json(nats_->monitor_port(), "/leafz");
        if (!j) return false;
        for (const auto& l : j->value("leafs", json::array()))
          leaf_account = l.value("account", "");
        return !leaf_account.empty();
      },
      kTimeout, kPoll))
      << nats_->log_tail(3000);
  EXPECT_EQ(leaf_account, "CANOPY-SITE-a");
  // A device's message is forwarded: the hub echoed the barrier after it.
  const std::string pub_log = dir_.file("pub.log");
  ASSERT_TRUE(publish_pump_telemetry(mqtt_port, "21.5", "pump-1", pub_log)) << read_file(pub_log);
  EXPECT_TRUE(wait_until(
      [&] {
        return count_lines_with(read_file(a.log_path()), {"telemetry: uplink up", "1 forwarded"}) >=
               1;
      },
      kTimeout, kPoll))
      << tail(read_file(a.log_path()), 3000);
  // The bus's leaf URL is logged without its password.
  const std::string password =
      json::parse(read_file(a.data() + "/identity/nats.json")).value("password", "");
  ASSERT_FALSE(password.empty());
  EXPECT_EQ(read_file(a.log_path()).find(password), std::string::npos);
  EXPECT_NE(read_file(a.log_path()).find("uplink tls://leaf-a:***@127.0.0.1"), std::string::npos);
}

TEST_F(NatsTlsE2ETest, CertificateFromAnotherCaIsRefusedWithReasonsOnBothEnds) {
  start_tls();
  launch_hub();
  Spoke& a = enrolled_spoke("a");
  launch_spoke(a);
  a.proc.kill(SIGTERM);
  ASSERT_TRUE(a.proc.wait_exit(20s).has_value());
  // The same site, restarted with a certificate from another CA.
  std::string error;
  const CertFiles other_ca = certs_.make_ca("other", &error);
  ASSERT_TRUE(other_ca.ok()) << error;
  const CertFiles stranger =
      certs_.issue_client(other_ca, "a", std::chrono::hours(24), std::chrono::hours(-1), &error);
  ASSERT_TRUE(stranger.ok()) << error;
  a.extra_args = {"--nats-cert-file", stranger.cert, "--nats-key-file", stranger.key};
  launch_spoke(a, /*expect_session=*/false);
  // The spoke says why, keeps trying, and its health says it is not connected.
  ASSERT_TRUE(wait_until(
      [&] {
        return read_file(a.log_path()).find("may refuse the client certificate " + stranger.cert) !=
               std::string::npos;
      },
      kTimeout, kPoll))
      << tail(read_file(a.log_path()), 3000);
  auto health = http_get_json(a.health_port, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_FALSE(health->value("nats_connected", true));
  EXPECT_FALSE(health->value("session_open", true));
  EXPECT_NE(health->value("nats_error", "").find("may refuse the client certificate"),
            std::string::npos)
      << health->dump();
  EXPECT_TRUE(a.proc.running());
  // nats-server names the certificate's problem.
  EXPECT_TRUE(wait_until(
      [&] {
        const std::string log = read_file(nats_->log_path());
        return log.find("TLS handshake error") != std::string::npos &&
               log.find("unknown authority") != std::string::npos;
      },
      kTimeout, kPoll))
      << nats_->log_tail();
  // Back on its own certificate, the same site syncs again.
  a.proc.kill(SIGTERM);
  ASSERT_TRUE(a.proc.wait_exit(20s).has_value());
  a.extra_args.clear();
  launch_spoke(a);
}

TEST_F(NatsTlsE2ETest, ExpiredSiteCertificateIsRefusedAndSaysSo) {
  start_tls();
  launch_hub();
  Spoke& a = enrolled_spoke("a");
  launch_spoke(a);
  a.proc.kill(SIGTERM);
  ASSERT_TRUE(a.proc.wait_exit(20s).has_value());
  // A certificate from the hub's own CA, for the site, expired an hour ago.
  std::string error;
  const CertFiles expired = certs_.issue_client(hub_ca_, "a-expired", std::chrono::hours(-1),
                                                std::chrono::hours(-48), &error);
  ASSERT_TRUE(expired.ok()) << error;
  a.extra_args = {"--nats-cert-file", expired.cert, "--nats-key-file", expired.key};
  launch_spoke(a, /*expect_session=*/false);
  ASSERT_TRUE(wait_until(
      [&] {
        return read_file(a.log_path()).find("client certificate " + expired.cert + " expired at") !=
               std::string::npos;
      },
      kTimeout, kPoll))
      << tail(read_file(a.log_path()), 3000);
  std::optional<json> health;
  EXPECT_TRUE(wait_until(
      [&] {
        health = http_get_json(a.health_port, "/healthz");
        return health && health->value("nats_error", "").find("expired at") != std::string::npos;
      },
      kTimeout, kPoll))
      << (health ? health->dump() : "no /healthz");
  ASSERT_TRUE(health);
  EXPECT_FALSE(health->value("nats_connected", true));
  EXPECT_TRUE(wait_until(
      [&] {
        const std::string log = read_file(nats_->log_path());
        return log.find("TLS handshake error") != std::string::npos &&
               log.find("expired") != std::string::npos;
      },
      kTimeout, kPoll))
      << nats_->log_tail();
}

TEST_F(NatsTlsE2ETest, ServerCertificateForAnotherHostIsRefusedByTheHub) {
  // nats-server's certificate names another host (and not 127.0.0.1's name
  // the hub is told to expect).
  start_tls({"nats.elsewhere.example"});
  hub_->extra_args.push_back("--nats-tls-server-name");
  hub_->extra_args.push_back("nats.canopy.example");
  launch_hub(/*expect_nats=*/false);
  ASSERT_TRUE(wait_until(
      [&] { return read_file(hub_->log_path()).find("hostname mismatch") != std::string::npos; },
      kTimeout, kPoll))
      << tail(read_file(hub_->log_path()), 3000);
  auto health = http_get_json(hub_->health_port, "/healthz");
  ASSERT_TRUE(health);
  EXPECT_FALSE(health->value("nats_connected", true));
  EXPECT_NE(health->value("nats_error", "").find("hostname mismatch"), std::string::npos)
      << health->dump();
  EXPECT_TRUE(hub_->proc.running());
  // nats-server sees the client give up on its certificate.
  EXPECT_TRUE(wait_until(
      [&] { return read_file(nats_->log_path()).find("TLS handshake error") != std::string::npos; },
      kTimeout, kPoll));
}

TEST_F(NatsTlsE2ETest, HalfATlsSettingIsRefusedAtStart) {
  // A certificate without its key: exit 2 with the setting named, for both.
  const std::string d = dir_.file("x");
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {CANOPY_HUB_BIN, "--data", d, "--nats", "tls://127.0.0.1:1", "--nats-cert-file",
            d + "/hub.crt"},
           {CANOPY_SPOKE_BIN, "--site", "a", "--data", d, "--manifests", d, "--nats",
            "tls://127.0.0.1:1", "--nats-cert-file", d + "/site.crt"}}) {
    const std::string log = dir_.file("half-" + std::to_string(++runs_) + ".log");
    ProcessOptions po;
    po.log_path = log;
    Process p;
    std::string err;
    ASSERT_TRUE(p.start(argv, po, &err)) << err;
    auto status = p.wait_exit(30s);
    ASSERT_TRUE(status && WIFEXITED(*status));
    EXPECT_EQ(WEXITSTATUS(*status), 2) << read_file(log);
    EXPECT_NE(read_file(log).find("nats_cert_file and nats_key_file: set both or neither"),
              std::string::npos)
        << read_file(log);
  }
}

}  // namespace
}  // namespace canopy::e2e
