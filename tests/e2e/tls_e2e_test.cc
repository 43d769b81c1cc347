// TLS on the hub's listeners end to end (docs/security.md, "TLS"): the real
// canopy-hub serving REST and gRPC with certificates made by OpenSSL
// (tests/kubeapi/test_pki.h), checked with real curl and the real
// kubectl-canopy (through kubectl); wrong CA, expired certificate, wrong host
// name and client certificates, with the reason on both ends. Then a real
// canopy-spoke enrolling over https against the pinned CA, renewing its
// short-lived certificate while it keeps syncing, and refused once revoked.
#include <sys/stat.h>

#include "tests/e2e/e2e_fixture.h"
#include "tests/kubeapi/test_pki.h"

namespace canopy::e2e {
namespace {

using kubeapi::CertificateRequest;
using kubeapi::KeyPair;

struct CmdRun {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

CertificateRequest server_cert(std::vector<std::string> ips, std::vector<std::string> names) {
  CertificateRequest r;
  r.ip_addresses = std::move(ips);
  r.dns_names = std::move(names);
  r.server = true;
  return r;
}

CertificateRequest client_cert(const std::string& cn) {
  CertificateRequest r;
  r.common_name = cn;
  return r;
}

// Valid until a minute ago.
CertificateRequest expired(CertificateRequest r) {
  r.not_before = std::chrono::seconds(-7200);
  r.not_after = std::chrono::seconds(-60);
  return r;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

class TlsTest : public E2ETest {
 protected:
  void SetUp() override {
    E2ETest::SetUp();
    auto ca = kubeapi::make_certificate_authority("canopy test CA");
    ASSERT_TRUE(ca.ok()) << ca.status().message();
    ca_ = *ca;
    auto other = kubeapi::make_certificate_authority("some other CA");
    ASSERT_TRUE(other.ok());
    other_ca_ = *other;
    write_text(file("ca.crt"), ca_.cert_pem);
    write_text(file("other-ca.crt"), other_ca_.cert_pem);
    // Serving certificates: good (127.0.0.1 and localhost), expired, and
    // one for another name.
    make_leaf("hub", ca_, server_cert({"127.0.0.1"}, {"localhost"}));
    make_leaf("hub-expired", ca_, expired(server_cert({"127.0.0.1"}, {})));
    make_leaf("hub-other-name", ca_, server_cert({}, {"other.example"}));
    // Client certificates: good, expired, and from another CA.
    make_leaf("client", ca_, client_cert("admin"));
    make_leaf("client-expired", ca_, expired(client_cert("admin")));
    make_leaf("client-other-ca", other_ca_, client_cert("admin"));
  }

  std::string file(const std::string& name) const { return dir_.file(name); }

  void make_leaf(const std::string& name, const KeyPair& ca, CertificateRequest r) {
    if (r.common_name.empty()) r.common_name = name;
    auto kp = kubeapi::make_certificate(ca, r);
    ASSERT_TRUE(kp.ok()) << kp.status().message();
    write_text(file(name + ".crt"), kp->cert_pem);
    write_text(file(name + ".key"), kp->key_pem);
  }

  CmdRun run(std::vector<std::string> argv,
             std::vector<std::pair<std::string, std::string>> env = {}) {
    const std::string log = file("run-" + std::to_string(++runs_) + ".log");
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

  std::string https(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(hub_->health_port) + path;
  }

  // curl -sS on the hub's REST listener, with `args` before the URL.
  CmdRun curl(std::vector<std::string> args, const std::string& url) {
    std::vector<std::string> argv = {"curl", "-sS",       "--max-time", "10",
                                     "-o",   "/dev/null", "-w",         "%{http_code}"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(url);
    return run(argv);
  }

  // `kubectl canopy <args>` as the fleet admin (the plugin from the build).
  CmdRun kubectl(std::vector<std::string> args, std::string hub = "") {
    std::vector<std::string> argv = {"kubectl", "canopy"};
    for (auto& a : args) argv.push_back(std::move(a));
    const std::string plugin_dir = fs::path(KUBECTL_CANOPY_BIN).parent_path();
    if (hub.empty()) hub = "127.0.0.1:" + std::to_string(hub_->grpc_port);
    return run(argv, {{"PATH", plugin_dir + ":" + std::string(std::getenv("PATH"))},
                      {"CANOPY_HUB", hub},
                      {"CANOPY_TOKEN", token_},
                      {"HOME", dir_.path().string()},
                      {"XDG_CONFIG_HOME", ""}});
  }

  // GET over https from the test itself, verifying against `ca_file`.
  std::optional<std::pair<int, std::string>> https_get(const std::string& path,
                                                       const std::string& ca_file) {
    std::unique_ptr<httplib::SSLClient> cli;
    if (client_cert_.empty()) {
      cli = std::make_unique<httplib::SSLClient>("127.0.0.1", hub_->health_port);
    } else {
      cli = std::make_unique<httplib::SSLClient>(
          "127.0.0.1", hub_->health_port, file(client_cert_ + ".crt"), file(client_cert_ + ".key"));
    }
    cli->set_ca_cert_path(ca_file);
    cli->enable_server_certificate_verification(true);
    cli->set_connection_timeout(2, 0);
    cli->set_read_timeout(5, 0);
    auto res = cli->Get(path);
    if (!res) return std::nullopt;
    return std::make_pair(res->status, res->body);
  }

  // Starts the hub with `tls_args`, waits for it over https (verifying with
  // `ca_file`), and points the test's gRPC stub at it over TLS.
  void launch_tls_hub(std::vector<std::string> tls_args, const std::string& ca_file,
                      bool expect_up = true) {
    if (!hub_) create_hub();
    Hub& h = *hub_;
    std::vector<std::string> argv = {CANOPY_HUB_BIN,
                                     "--name",
                                     kHubName,
                                     "--data",
                                     h.data(),
                                     "--nats",
                                     nats_->url(),
                                     "--grpc",
                                     "127.0.0.1:" + std::to_string(h.grpc_port),
                                     "--health",
                                     "127.0.0.1:" + std::to_string(h.health_port)};
    argv.insert(argv.end(), tls_args.begin(), tls_args.end());
    argv.insert(argv.end(), h.extra_args.begin(), h.extra_args.end());
    ProcessOptions po;
    po.log_path = h.log_path();
    std::string err;
    ASSERT_TRUE(h.proc.start(argv, po, &err)) << err;
    if (!expect_up) return;
    const bool up = wait_until(
        [&] {
          if (!h.proc.running()) return true;
          auto r = https_get("/healthz", ca_file);
          if (!r || r->first != 200) return false;
          json j = json::parse(r->second, nullptr, false);
          return j.is_object() && j.value("nats_connected", false);
        },
        kTimeout, kPoll);
    ASSERT_TRUE(h.proc.running()) << "canopy-hub exited at start";
    ASSERT_TRUE(up) << "canopy-hub /healthz did not answer over https in time";
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = read_file(ca_file);
    if (!client_cert_.empty()) {
      o.pem_cert_chain = read_file(file(client_cert_ + ".crt"));
      o.pem_private_key = read_file(file(client_cert_ + ".key"));
    }
    stub_ = v1::Catalog::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(h.grpc_port), grpc::SslCredentials(o)));
    token_ = h.admin_token();
    ASSERT_FALSE(token_.empty());
    const grpc::Status g = put("grant", "all", {{"allSites", true}});
    ASSERT_TRUE(g.ok()) << g.error_message();
  }

  std::vector<std::string> serve(const std::string& cert) {
    return {"--tls-cert", file(cert + ".crt"), "--tls-key", file(cert + ".key")};
  }

  std::string hub_log() { return read_file(hub_->log_path()); }

  // The value of a counter on the hub's /metrics, over https.
  double hub_metric(const std::string& name, const std::string& ca_file) {
    auto r = https_get("/metrics", ca_file);
    if (!r) return -1;
    std::istringstream in(r->second);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with(name + " ")) return std::stod(line.substr(name.size() + 1));
    }
    return -1;
  }

  TempDir dir_{"canopy-tls-"};
  int runs_ = 0;
  KeyPair ca_, other_ca_;
  std::string client_cert_;  // name of the client certificate the test presents
};

TEST_F(TlsTest, RestAndGrpcOverTlsAndTheWrongCa) {
  launch_tls_hub(serve("hub"), file("ca.crt"));
  EXPECT_NE(hub_log().find("HTTP API on https://"), std::string::npos) << hub_log();

  // curl with the right CA: the REST API answers.
  CmdRun ok = curl({"--cacert", file("ca.crt")}, https("/healthz"));
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_EQ(ok.out, "200");
  CmdRun api = run({"curl", "-sS", "--cacert", file("ca.crt"), "-H",
                    "Authorization: Bearer " + token_, https("/v1/tenants")});
  EXPECT_EQ(api.exit_code, 0) << api.out;
  EXPECT_TRUE(json::parse(api.out, nullptr, false).is_object()) << api.out;

  // Keep-alive: two requests on one connection.
  CmdRun two =
      run({"curl", "-sS", "-v", "--cacert", file("ca.crt"), https("/healthz"), https("/healthz")});
  EXPECT_EQ(two.exit_code, 0) << two.out;
  EXPECT_NE(two.out.find("Re-using existing connection"), std::string::npos) << two.out;

  // The wrong CA: curl says why (exit 60), the hub logs the client's alert.
  CmdRun wrong = curl({"--cacert", file("other-ca.crt")}, https("/healthz"));
  EXPECT_EQ(wrong.exit_code, 60) << wrong.out;
  EXPECT_NE(wrong.out.find("unable to get local issuer certificate"), std::string::npos)
      << wrong.out;
  EXPECT_TRUE(wait_until(
      [&] {
        return hub_log().find("the client refused the hub's certificate") != std::string::npos;
      },
      5s, kPoll))
      << hub_log();
  EXPECT_NE(hub_log().find("unknown CA"), std::string::npos) << hub_log();

  // Plain HTTP on the TLS port gets nothing.
  CmdRun plain = curl({}, "http://127.0.0.1:" + std::to_string(hub_->health_port) + "/healthz");
  EXPECT_NE(plain.exit_code, 0) << plain.out;

  // kubectl canopy over TLS with the right CA.
  CmdRun tenants = kubectl({"tenants", "--ca", file("ca.crt")});
  EXPECT_EQ(tenants.exit_code, 0) << tenants.out;
  // https:// and CANOPY_CA select TLS too.
  CmdRun by_scheme = kubectl({"tenants", "--ca", file("ca.crt")},
                             "https://127.0.0.1:" + std::to_string(hub_->grpc_port));
  EXPECT_EQ(by_scheme.exit_code, 0) << by_scheme.out;
  // The wrong CA: a message that says what to check.
  CmdRun bad = kubectl({"tenants", "--ca", file("other-ca.crt")});
  EXPECT_EQ(bad.exit_code, 1) << bad.out;
  EXPECT_NE(bad.out.find("TLS handshake with the hub at 127.0.0.1:"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("does not verify against the CA in --ca " + file("other-ca.crt")),
            std::string::npos)
      << bad.out;
  EXPECT_NE(bad.out.find("wrong --ca?"), std::string::npos) << bad.out;
  // Without TLS against a TLS hub: not reachable, plainly.
  CmdRun insecure = kubectl({"tenants"});
  EXPECT_EQ(insecure.exit_code, 1) << insecure.out;
  EXPECT_NE(insecure.out.find("cannot reach the hub"), std::string::npos) << insecure.out;
  // gRPC logs the failed handshakes itself.
  EXPECT_NE(hub_log().find("Handshake failed"), std::string::npos) << hub_log();
  EXPECT_TRUE(hub_->proc.running());
}

TEST_F(TlsTest, ExpiredServerCertificateIsExplained) {
  launch_tls_hub(serve("hub-expired"), file("ca.crt"), /*expect_up=*/false);
  ASSERT_TRUE(wait_until(
      [&] { return hub_log().find("HTTP API on https://") != std::string::npos; }, kTimeout, kPoll))
      << hub_log();
  CmdRun c = curl({"--cacert", file("ca.crt")}, https("/healthz"));
  EXPECT_EQ(c.exit_code, 60) << c.out;
  EXPECT_NE(c.out.find("certificate has expired"), std::string::npos) << c.out;
  EXPECT_TRUE(wait_until([&] { return hub_log().find("certificate expired") != std::string::npos; },
                         5s, kPoll))
      << hub_log();

  token_ = hub_->admin_token();
  CmdRun k = kubectl({"tenants", "--ca", file("ca.crt")});
  EXPECT_EQ(k.exit_code, 1) << k.out;
  EXPECT_NE(k.out.find("TLS handshake with the hub"), std::string::npos) << k.out;
  EXPECT_NE(k.out.find("certificate has expired"), std::string::npos) << k.out;
  EXPECT_NE(k.out.find("the hub needs a new certificate"), std::string::npos) << k.out;
  EXPECT_TRUE(hub_->proc.running());
}

TEST_F(TlsTest, WrongHostNameIsExplained) {
  launch_tls_hub(serve("hub-other-name"), file("ca.crt"), /*expect_up=*/false);
  ASSERT_TRUE(wait_until(
      [&] { return hub_log().find("HTTP API on https://") != std::string::npos; }, kTimeout, kPoll))
      << hub_log();
  const std::string port = std::to_string(hub_->health_port);
  CmdRun c = curl({"--cacert", file("ca.crt")}, https("/healthz"));
  EXPECT_EQ(c.exit_code, 60) << c.out;
  EXPECT_NE(c.out.find("127.0.0.1"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("subject"), std::string::npos) << c.out;
  // Dialled by the name on the certificate, it answers.
  CmdRun named =
      curl({"--cacert", file("ca.crt"), "--resolve", "other.example:" + port + ":127.0.0.1"},
           "https://other.example:" + port + "/healthz");
  EXPECT_EQ(named.exit_code, 0) << named.out;
  EXPECT_EQ(named.out, "200");

  token_ = hub_->admin_token();
  CmdRun k = kubectl({"tenants", "--ca", file("ca.crt")});
  EXPECT_EQ(k.exit_code, 1) << k.out;
  EXPECT_NE(k.out.find("TLS handshake with the hub"), std::string::npos) << k.out;
  EXPECT_NE(k.out.find("does not name \"127.0.0.1\""), std::string::npos) << k.out;
  EXPECT_TRUE(hub_->proc.running());
}

TEST_F(TlsTest, ClientCertificatesWhenTheHubRequiresThem) {
  client_cert_ = "client";
  std::vector<std::string> args = serve("hub");
  args.insert(args.end(), {"--tls-client-ca", file("ca.crt")});
  launch_tls_hub(args, file("ca.crt"));
  EXPECT_NE(hub_log().find("client certificates required"), std::string::npos) << hub_log();

  // curl: with a good client certificate, yes; without one, an expired one
  // or one from another CA, no.
  CmdRun good =
      curl({"--cacert", file("ca.crt"), "--cert", file("client.crt"), "--key", file("client.key")},
           https("/healthz"));
  EXPECT_EQ(good.exit_code, 0) << good.out;
  EXPECT_EQ(good.out, "200");
  CmdRun none = curl({"--cacert", file("ca.crt")}, https("/healthz"));
  EXPECT_NE(none.exit_code, 0) << none.out;
  EXPECT_FALSE(none.out.starts_with("200")) << none.out;
  EXPECT_TRUE(wait_until(
      [&] { return hub_log().find("this listener requires one") != std::string::npos; }, 5s, kPoll))
      << hub_log();
  CmdRun expired = curl({"--cacert", file("ca.crt"), "--cert", file("client-expired.crt"), "--key",
                         file("client-expired.key")},
                        https("/healthz"));
  EXPECT_NE(expired.exit_code, 0) << expired.out;
  EXPECT_TRUE(wait_until(
      [&] {
        return hub_log().find("client certificate /CN=admin refused: certificate has expired") !=
               std::string::npos;
      },
      5s, kPoll))
      << hub_log();
  CmdRun foreign = curl({"--cacert", file("ca.crt"), "--cert", file("client-other-ca.crt"), "--key",
                         file("client-other-ca.key")},
                        https("/healthz"));
  EXPECT_NE(foreign.exit_code, 0) << foreign.out;
  EXPECT_TRUE(wait_until(
      [&] {
        return hub_log().find("refused: unable to get local issuer certificate") !=
               std::string::npos;
      },
      5s, kPoll))
      << hub_log();

  // kubectl canopy: the same over gRPC.
  CmdRun k_good = kubectl({"tenants", "--ca", file("ca.crt"), "--cert", file("client.crt"), "--key",
                           file("client.key")});
  EXPECT_EQ(k_good.exit_code, 0) << k_good.out;
  CmdRun k_none = kubectl({"tenants", "--ca", file("ca.crt")});
  EXPECT_EQ(k_none.exit_code, 1) << k_none.out;
  EXPECT_NE(k_none.out.find("requires a client certificate"), std::string::npos) << k_none.out;
  CmdRun k_expired = kubectl({"tenants", "--ca", file("ca.crt"), "--cert",
                              file("client-expired.crt"), "--key", file("client-expired.key")});
  EXPECT_EQ(k_expired.exit_code, 1) << k_expired.out;
  EXPECT_NE(
      k_expired.out.find("refused the client certificate --cert " + file("client-expired.crt")),
      std::string::npos)
      << k_expired.out;
  EXPECT_NE(k_expired.out.find(": it expired at "), std::string::npos) << k_expired.out;
  CmdRun k_foreign = kubectl({"tenants", "--ca", file("ca.crt"), "--cert",
                              file("client-other-ca.crt"), "--key", file("client-other-ca.key")});
  EXPECT_EQ(k_foreign.exit_code, 1) << k_foreign.out;
  EXPECT_NE(k_foreign.out.find("is it issued by a CA the hub trusts"), std::string::npos)
      << k_foreign.out;
  // The hub's gRPC side says why too.
  EXPECT_NE(hub_log().find("peer did not return a certificate"), std::string::npos) << hub_log();
  CmdRun k_half = kubectl({"tenants", "--ca", file("ca.crt"), "--cert", file("client.crt")});
  EXPECT_EQ(k_half.exit_code, 1) << k_half.out;
  EXPECT_NE(k_half.out.find("--cert needs --key"), std::string::npos) << k_half.out;
  EXPECT_TRUE(hub_->proc.running());
}

TEST_F(TlsTest, BadTlsSettingsStopTheHubWithAReason) {
  create_hub();
  CmdRun missing = run({CANOPY_HUB_BIN, "--name", kHubName, "--data", hub_->data(), "--nats",
                        nats_->url(), "--grpc", "127.0.0.1:" + std::to_string(hub_->grpc_port),
                        "--health", "127.0.0.1:" + std::to_string(hub_->health_port), "--tls-cert",
                        file("nope.crt"), "--tls-key", file("hub.key")});
  EXPECT_EQ(missing.exit_code, 1) << missing.out;
  EXPECT_NE(missing.out.find(file("nope.crt")), std::string::npos) << missing.out;
  CmdRun mixed = run({CANOPY_HUB_BIN, "--name", kHubName, "--data", hub_->data(), "--nats",
                      nats_->url(), "--grpc", "127.0.0.1:" + std::to_string(hub_->grpc_port),
                      "--health", "127.0.0.1:" + std::to_string(hub_->health_port), "--tls-cert",
                      file("hub.crt"), "--tls-key", file("client.key")});
  EXPECT_EQ(mixed.exit_code, 1) << mixed.out;
  EXPECT_NE(mixed.out.find("key values mismatch (it must be the key of tls_cert_file"),
            std::string::npos)
      << mixed.out;
  CmdRun half = run(
      {CANOPY_HUB_BIN, "--name", kHubName, "--data", hub_->data(), "--tls-cert", file("hub.crt")});
  EXPECT_EQ(half.exit_code, 2) << half.out;
  EXPECT_NE(half.out.find("tls_cert_file: needs tls_key_file"), std::string::npos) << half.out;
}

// Enrollment over https: the spoke checks the CA's pin, then verifies the
// hub's serving certificate (issued by the hub's CA for 127.0.0.1:
// --tls-host) against it. Its 30-second certificate is renewed before it
// expires, again and again, while the site keeps syncing; once revoked it
// cannot renew, nor can an expired certificate.
TEST_F(TlsTest, SiteEnrollsOverHttpsAndRenewsItsCertificate) {
  create_hub();
  const std::string hub_ca = hub_->data() + "/ca/ca.crt";
  launch_tls_hub({"--tls-host", "127.0.0.1", "--site-cert-seconds", "30"}, hub_ca);
  CmdRun t = kubectl({"enroll", "a", "-o", "json", "--ca", hub_ca});
  ASSERT_EQ(t.exit_code, 0) << t.out;
  const json token = json::parse(t.out, nullptr, false);
  ASSERT_TRUE(token.is_object()) << t.out;

  Spoke& a = create_spoke("a", {{"region", "eu"}});
  const std::string hub_url = "https://127.0.0.1:" + std::to_string(hub_->health_port);
  a.extra_args = {"--enroll", token.value("token", ""), "--hub-url",
                  hub_url,    "--ca-fingerprint",       token.value("caFingerprint", "")};
  launch_spoke(a, /*expect_session=*/false);
  const auto in_sync = [&] {
    auto h = spoke_health(a);
    return h && h->value("session_open", false) && h->value("in_sync", false);
  };
  ASSERT_TRUE(wait_until(in_sync, kTimeout, kPoll)) << "the enrolled spoke never synced";
  const std::string id = a.data() + "/identity";
  EXPECT_EQ(read_file(id + "/hub-url"), hub_url + "\n");
  const std::string first_cert = read_file(id + "/site.crt");
  const std::string first_key = read_file(id + "/site.key");
  ASSERT_FALSE(first_cert.empty());

  ASSERT_TRUE(put("template", "web", deployment("web", 1, "nginx:1")).ok());
  ASSERT_TRUE(put("placement", "eu", placement_by_region({"web"}, "eu")).ok());
  ASSERT_TRUE(wait_until([&] { return a.read().contains(template_key("web")); }, kTimeout, kPoll));

  // Renewed at 2/3 of its 60 s lifetime (30 s ahead, 30 s back-dated):
  // within about 15 s, then again with the renewed certificate.
  ASSERT_TRUE(wait_until(
      [&] { return hub_metric("canopy_hub_certificate_renewals_total", hub_ca) >= 2; }, 60s, 200ms))
      << read_file(a.log_path());
  EXPECT_NE(read_file(id + "/site.crt"), first_cert);
  EXPECT_NE(read_file(id + "/site.key"), first_key) << "the key was not rotated";
  struct stat st {};
  ASSERT_EQ(::stat((id + "/site.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(read_file(a.log_path()).find("renewed the certificate of site a at " + hub_url),
            std::string::npos);
  EXPECT_NE(hub_log().find("site a renewed its certificate"), std::string::npos);
  // The site keeps syncing across the renewals.
  ASSERT_TRUE(put("template", "web", deployment("web", 2, "nginx:2")).ok());
  ASSERT_TRUE(wait_until(
      [&] {
        auto m = a.read();
        auto it = m.find(template_key("web"));
        return it != m.end() && it->second.object.dump().find("nginx:2") != std::string::npos;
      },
      kTimeout, kPoll))
      << "the site stopped syncing after its certificate was renewed";
  EXPECT_EQ(hub_metric("canopy_hub_certificate_renewals_refused_total", hub_ca), 0);

  // Revoked: its next renewal is refused, and it says why.
  CmdRun r = kubectl({"site", "revoke", "a", "--ca", hub_ca});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ASSERT_TRUE(wait_until(
      [&] {
        return read_file(a.log_path()).find("site a is revoked: it cannot renew") !=
               std::string::npos;
      },
      60s, 200ms))
      << read_file(a.log_path());
  EXPECT_GE(hub_metric("canopy_hub_certificate_renewals_refused_total", hub_ca), 1);

  // An expired certificate from the hub's own CA cannot renew.
  KeyPair hub_ca_pair{read_file(hub_ca), read_file(hub_->data() + "/ca/ca.key")};
  make_leaf("site-expired", hub_ca_pair, expired(client_cert("a")));
  write_text(
      file("renew.json"),
      json{{"certificate", read_file(file("site-expired.crt"))}, {"csr", "x"}, {"signature", "00"}}
          .dump());
  CmdRun expired = run({"curl", "-sS", "--cacert", hub_ca, "-w", "\n%{http_code}", "-H",
                        "Content-Type: application/json", "--data-binary", "@" + file("renew.json"),
                        hub_url + "/v1/renew"});
  EXPECT_EQ(expired.exit_code, 0) << expired.out;
  EXPECT_TRUE(expired.out.ends_with("\n401")) << expired.out;
  EXPECT_NE(expired.out.find("certificate has expired"), std::string::npos) << expired.out;
}

// A hub whose serving certificate the pinned CA did not issue gets no token,
// even though its /v1/ca matches the pin.
TEST_F(TlsTest, SpokeRefusesAHubCertificateThePinnedCaDidNotIssue) {
  create_hub();
  launch_tls_hub(serve("hub"), file("ca.crt"));
  CmdRun t = kubectl({"enroll", "a", "-o", "json", "--ca", file("ca.crt")});
  ASSERT_EQ(t.exit_code, 0) << t.out;
  const json token = json::parse(t.out, nullptr, false);
  Spoke& a = create_spoke("a", {{"region", "eu"}});
  a.extra_args = {"--enroll",         token.value("token", ""),
                  "--hub-url",        "https://127.0.0.1:" + std::to_string(hub_->health_port),
                  "--ca-fingerprint", token.value("caFingerprint", "")};
  ProcessOptions po;
  po.log_path = a.log_path();
  std::vector<std::string> argv = {CANOPY_SPOKE_BIN,
                                   "--site",
                                   "a",
                                   "--data",
                                   a.data(),
                                   "--manifests",
                                   a.manifests(),
                                   "--nats",
                                   nats_->url(),
                                   "--health",
                                   "127.0.0.1:" + std::to_string(a.health_port)};
  argv.insert(argv.end(), a.extra_args.begin(), a.extra_args.end());
  std::string err;
  ASSERT_TRUE(a.proc.start(argv, po, &err)) << err;
  auto status = a.proc.wait_exit(30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  const std::string log = read_file(a.log_path());
  EXPECT_NE(log.find("the hub's certificate does not verify against the pinned CA"),
            std::string::npos)
      << log;
  EXPECT_FALSE(fs::exists(a.data() + "/identity/site.crt"));
  // The token was not spent: nothing reached /v1/enroll.
  EXPECT_EQ(hub_log().find("enrolled with token"), std::string::npos);
}

}  // namespace
}  // namespace canopy::e2e
