// NatsTransport over TLS against real nats-server processes with mTLS
// (`verify`): certificates from tests/support/tls_certs.h, made per test. A
// connection that works, and the refusals with their reasons on both ends:
// a client certificate from another CA, an expired one, a server
// certificate for another host, a plain client; the transport keeps trying
// and connects once the server is fixed.
#include "sync/nats_tls.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "sync/nats_transport.h"
#include "tests/support/nats_server.h"
#include "tests/support/tls_certs.h"
#include "tests/support/wait.h"

namespace canopy::sync {
namespace {

using canopy::testing::CertFiles;
using canopy::testing::NatsServer;
using canopy::testing::NatsServerOptions;
using canopy::testing::TestCertificates;
using canopy::testing::wait_until;
using std::chrono::seconds;

constexpr auto kWait = seconds(20);

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class NatsTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ca_ = certs_.make_ca("hub", &error);
    ASSERT_TRUE(ca_.ok()) << error;
    other_ca_ = certs_.make_ca("other", &error);
    ASSERT_TRUE(other_ca_.ok()) << error;
    server_cert_ = certs_.issue_server(ca_, "nats-server", {"localhost"}, {"127.0.0.1"}, &error);
    ASSERT_TRUE(server_cert_.ok()) << error;
    client_cert_ =
        certs_.issue_client(ca_, "shop-1", std::chrono::hours(24), std::chrono::hours(-1), &error);
    ASSERT_TRUE(client_cert_.ok()) << error;
  }

  // A nats-server whose client port requires TLS and a client certificate
  // signed by `client_ca`.
  std::unique_ptr<NatsServer> start_server(const CertFiles& server_cert,
                                           const std::string& client_ca) {
    NatsServerOptions o;
    o.tls.cert_file = server_cert.cert;
    o.tls.key_file = server_cert.key;
    o.tls.ca_file = client_ca;
    o.tls.verify = true;
    auto server = std::make_unique<NatsServer>(o);
    std::string error;
    EXPECT_TRUE(server->start(&error)) << error;
    return server;
  }

  NatsOptions client(const NatsServer& server, const CertFiles& cert) const {
    NatsOptions o;
    o.urls = {server.url()};
    o.name = "tls-test";
    o.tls_ca_file = ca_.cert;
    o.tls_cert_file = cert.cert;
    o.tls_key_file = cert.key;
    o.reconnect_wait_ms = 100;
    return o;
  }

  TestCertificates certs_;
  CertFiles ca_, other_ca_, server_cert_, client_cert_;
};

TEST(NatsTlsSettings, UrlHostAndValidation) {
  EXPECT_EQ(internal::url_host("tls://hub.example:4222"), "hub.example");
  EXPECT_EQ(internal::url_host("tls://user:pw@10.0.0.1:4222"), "10.0.0.1");
  EXPECT_EQ(internal::url_host("tls://[::1]:4222"), "::1");
  EXPECT_EQ(internal::url_host("nats://hub"), "hub");

  NatsOptions o;
  o.urls = {"nats://127.0.0.1:4222"};
  EXPECT_FALSE(internal::tls_enabled(o));
  o.tls_ca_file = "/etc/ca.crt";
  Status st = internal::validate_tls(o);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("TLS is off"), std::string::npos) << st.message();

  o = NatsOptions();
  o.urls = {"tls://a.example:4222", "tls://b.example:4222"};
  EXPECT_TRUE(internal::tls_enabled(o));
  st = internal::validate_tls(o);
  EXPECT_NE(st.message().find("tls_server_name: required"), std::string::npos) << st.message();
  o.tls_server_name = "nats.example";
  EXPECT_TRUE(internal::validate_tls(o).ok());
  EXPECT_EQ(internal::tls_expected_host(o), "nats.example");

  o.tls_cert_file = "/nonexistent/site.crt";
  st = internal::validate_tls(o);
  EXPECT_NE(st.message().find("go together"), std::string::npos) << st.message();
  o.tls_key_file = "/nonexistent/site.key";
  st = internal::validate_tls(o);
  EXPECT_NE(st.message().find("cannot read /nonexistent/site.crt"), std::string::npos)
      << st.message();
}

TEST_F(NatsTlsTest, MutualTlsCarriesMessages) {
  auto server = start_server(server_cert_, ca_.cert);
  ASSERT_EQ(server->url().rfind("tls://", 0), 0u) << server->url();
  auto transport = NatsTransport::connect(client(*server, client_cert_));
  ASSERT_TRUE(transport.ok()) << transport.status().to_string();
  auto& t = **transport;
  ASSERT_TRUE(wait_until([&] { return t.connected(); }, kWait)) << t.last_error();
  std::atomic<int> received{0};
  ASSERT_TRUE(t.subscribe("canopy.v1.hub.shop-1.down", [&](const Message& m) {
                 if (m.data == "over tls") received++;
               }).ok());
  ASSERT_TRUE(t.flush(seconds(5)).ok());
  ASSERT_TRUE(t.publish("canopy.v1.hub.shop-1.down", "over tls").ok());
  EXPECT_TRUE(wait_until([&] { return received.load() == 1; }, kWait));
  EXPECT_EQ(t.last_error(), "");
}

TEST_F(NatsTlsTest, ClientCertificateFromAnotherCaIsRefused) {
  auto server = start_server(server_cert_, ca_.cert);
  std::string error;
  CertFiles stranger = certs_.issue_client(other_ca_, "stranger", std::chrono::hours(24),
                                           std::chrono::hours(-1), &error);
  ASSERT_TRUE(stranger.ok()) << error;
  auto transport = NatsTransport::connect(client(*server, stranger));
  ASSERT_TRUE(transport.ok()) << transport.status().to_string();
  auto& t = **transport;
  // The client learns why (its probe), and never connects.
  ASSERT_TRUE(wait_until([&] { return !t.last_error().empty(); }, kWait));
  EXPECT_FALSE(t.connected());
  const std::string why = t.last_error();
  EXPECT_NE(why.find("may refuse the client certificate " + stranger.cert), std::string::npos)
      << why;
  // The server says which certificate it refused and why.
  EXPECT_TRUE(wait_until(
      [&] {
        const std::string log = read_all(server->log_path());
        return log.find("TLS handshake error") != std::string::npos &&
               log.find("unknown authority") != std::string::npos;
      },
      kWait))
      << server->log_tail();
}

TEST_F(NatsTlsTest, ExpiredClientCertificateIsRefused) {
  auto server = start_server(server_cert_, ca_.cert);
  std::string error;
  CertFiles expired = certs_.issue_client(ca_, "shop-expired", std::chrono::hours(-1),
                                          std::chrono::hours(-48), &error);
  ASSERT_TRUE(expired.ok()) << error;
  auto transport = NatsTransport::connect(client(*server, expired));
  ASSERT_TRUE(transport.ok()) << transport.status().to_string();
  auto& t = **transport;
  ASSERT_TRUE(wait_until([&] { return !t.last_error().empty(); }, kWait));
  EXPECT_FALSE(t.connected());
  EXPECT_NE(t.last_error().find("client certificate " + expired.cert + " expired at"),
            std::string::npos)
      << t.last_error();
  EXPECT_TRUE(wait_until(
      [&] {
        const std::string log = read_all(server->log_path());
        return log.find("TLS handshake error") != std::string::npos &&
               log.find("expired") != std::string::npos;
      },
      kWait))
      << server->log_tail();
}

TEST_F(NatsTlsTest, ServerCertificateForAnotherHostIsRefusedByTheClient) {
  std::string error;
  CertFiles elsewhere =
      certs_.issue_server(ca_, "elsewhere", {"nats.elsewhere.example"}, {"10.9.9.9"}, &error);
  ASSERT_TRUE(elsewhere.ok()) << error;
  auto server = start_server(elsewhere, ca_.cert);
  auto transport = NatsTransport::connect(client(*server, client_cert_));
  ASSERT_TRUE(transport.ok()) << transport.status().to_string();
  auto& t = **transport;
  ASSERT_TRUE(wait_until([&] { return !t.last_error().empty(); }, kWait));
  EXPECT_FALSE(t.connected());
  EXPECT_NE(t.last_error().find("SSL handshake error: 64:IP address mismatch"), std::string::npos)
      << t.last_error();
  // The same certificate with its own name expected is accepted: the name
  // was the problem.
  NatsOptions named = client(*server, client_cert_);
  named.tls_server_name = "nats.elsewhere.example";
  auto ok = NatsTransport::connect(named);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(wait_until([&] { return (*ok)->connected(); }, kWait)) << (*ok)->last_error();
}

TEST_F(NatsTlsTest, PlainClientIsRefusedWithAReason) {
  auto server = start_server(server_cert_, ca_.cert);
  NatsOptions plain;
  plain.urls = {"nats://127.0.0.1:" + std::to_string(server->port())};
  plain.name = "plain";
  plain.retry_on_failed_connect = false;
  auto transport = NatsTransport::connect(plain);
  // NATS.c upgrades to TLS when the server requires it, and then has no CA
  // for the server's certificate (nor a certificate of its own).
  ASSERT_FALSE(transport.ok());
  EXPECT_EQ(transport.status().code(), StatusCode::kUnavailable) << transport.status().to_string();
  EXPECT_NE(transport.status().message().find("SSL handshake error"), std::string::npos)
      << transport.status().to_string();
}

TEST_F(NatsTlsTest, KeepsRetryingAndConnectsOnceTheServerTrustsItsCa) {
  // The server trusts only the other CA at first: this client is refused.
  auto server = start_server(server_cert_, other_ca_.cert);
  auto transport = NatsTransport::connect(client(*server, client_cert_));
  ASSERT_TRUE(transport.ok()) << transport.status().to_string();
  auto& t = **transport;
  ASSERT_TRUE(wait_until([&] { return !t.last_error().empty(); }, kWait));
  EXPECT_FALSE(t.connected());
  // Fixed and restarted on the same port: the same transport connects.
  std::string config = read_all(server->config_path());
  const size_t at = config.find(other_ca_.cert);
  ASSERT_NE(at, std::string::npos);
  config.replace(at, other_ca_.cert.size(), ca_.cert);
  std::ofstream(server->config_path(), std::ios::trunc) << config;
  server->stop();
  std::string error;
  ASSERT_TRUE(server->start(&error)) << error;
  EXPECT_TRUE(wait_until([&] { return t.connected(); }, kWait)) << t.last_error();
  // Cleared once the connection's state is reported (a moment after
  // connected() turns true).
  EXPECT_TRUE(wait_until([&] { return t.last_error().empty(); }, kWait)) << t.last_error();
}

}  // namespace
}  // namespace canopy::sync
