// The bus config generator: what it writes, that Debian's nats-server
// accepts it (`nats-server -t`), that strings cannot break out of their
// quotes, and that every bad spec is refused with the field and the reason.
#include "spoke/bus/bus_spec.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>

#include "daemon/password_hash.h"
#include "spoke/bus/bus_config.h"
#include "spoke/bus/telemetry_forwarder.h"
#include "tests/support/free_port.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tls_certs.h"
#include "tests/support/wait.h"

namespace canopy::spoke::bus {
namespace {

using daemon::bcrypt_hash;
using daemon::random_password;

using canopy::testing::Process;
using canopy::testing::ProcessOptions;
using canopy::testing::TempDir;

// A fixed, valid bcrypt hash (of "pw", cost 4): these tests check syntax,
// not passwords.
constexpr char kHash[] = "$2b$04$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmUg0O";

BusSpec valid_spec(const std::string& dir = "/var/lib/canopy/bus") {
  BusSpec s;
  s.site = "shop-1";
  s.dir = dir;
  s.client_port = 14223;
  s.mqtt_port = 11883;
  s.monitor_port = 18223;
  s.leaf_urls = {"nats-leaf://127.0.0.1:7422"};
  s.spoke_password_hash = kHash;
  s.tenants = {
      {"acme", {{"pump-1", kHash, DeviceScope::kDevice}, {"gw", kHash, DeviceScope::kTenant}}},
      {"globex", {{"pump-1", kHash, DeviceScope::kDevice}}}};
  return s;
}

// Runs `nats-server -t -c` on `config`; returns its output, and whether it
// accepted the config in *ok.
std::string nats_server_check(const TempDir& dir, const std::string& config, bool* ok) {
  const std::string path = dir.file("check.conf");
  std::ofstream(path) << config;
  Process p;
  ProcessOptions o;
  o.log_path = dir.file("check.log");
  std::filesystem::remove(o.log_path);
  std::string error;
  const char* env = std::getenv("CANOPY_NATS_SERVER");
  const std::string binary =
      env && *env ? env
                  : (::access("/usr/sbin/nats-server", X_OK) == 0 ? "/usr/sbin/nats-server"
                                                                  : "nats-server");
  if (!p.start({binary, "-t", "-c", path}, o, &error)) {
    *ok = false;
    return error;
  }
  auto status = p.wait_exit(std::chrono::seconds(10));
  *ok = status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
  std::ifstream in(o.log_path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string message_of(const BusSpec& s) {
  auto r = render_nats_config(s);
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : r.status().message();
}

TEST(BusSpecTest, RendersAConfigNatsServerAccepts) {
  TempDir dir;
  auto config = render_nats_config(valid_spec(dir.path().string()));
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  bool ok = false;
  const std::string out = nats_server_check(dir, *config, &ok);
  EXPECT_TRUE(ok) << out << "\n" << *config;
}

TEST(BusSpecTest, ConfinesDevicesToTheirTreesAndBindsTheUplinkToCanopy) {
  auto r = render_nats_config(valid_spec());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const std::string& c = *r;
  // A device of scope device: its own subtree, for publish and subscribe.
  EXPECT_NE(c.find("{user: \"pump-1@acme\""), std::string::npos) << c;
  EXPECT_NE(c.find("publish: {allow: [\"t.acme.d.pump-1\", \"t.acme.d.pump-1.>\"]}, subscribe: "
                   "{allow: [\"t.acme.d.pump-1\", \"t.acme.d.pump-1.>\", \"$MQTT.sub.>\"]}"),
            std::string::npos)
      << c;
  // A device of scope tenant: the tenant's tree.
  EXPECT_NE(c.find("publish: {allow: [\"t.acme\", \"t.acme.>\"]}"), std::string::npos) << c;
  // Same device id in two tenants: two users.
  EXPECT_NE(c.find("{user: \"pump-1@globex\""), std::string::npos) << c;
  EXPECT_NE(c.find("allowed_connection_types: [\"MQTT\"]"), std::string::npos);
  // Tenants export their tree to CANOPY only; CANOPY imports each.
  EXPECT_NE(c.find("exports: [{stream: \"t.globex.>\", accounts: [\"CANOPY\"]}]"),
            std::string::npos)
      << c;
  EXPECT_NE(c.find("{stream: {account: \"tenant-acme\", subject: \"t.acme.>\"}}"),
            std::string::npos);
  // The leaf remote is CANOPY's, and raw telemetry never crosses it (the
  // forwarder sends it up, telemetry_forwarder.h).
  EXPECT_NE(c.find("remotes: [{urls: [\"nats-leaf://127.0.0.1:7422\"], account: \"CANOPY\", "
                   "deny_exports: [\"t.*.d.*.telemetry\", \"t.*.d.*.telemetry.>\"]}]"),
            std::string::npos)
      << c;
  // CANOPY's JetStream holds the telemetry buffer, file only.
  EXPECT_NE(c.find("jetstream: {max_memory: 0, max_file: 268435456}"), std::string::npos) << c;
  EXPECT_NE(c.find("domain: \"site-shop-1\""), std::string::npos);
  EXPECT_NE(c.find("listen: \"127.0.0.1:14223\""), std::string::npos);
  EXPECT_NE(c.find("http: \"127.0.0.1:18223\""), std::string::npos);
  EXPECT_NE(c.find("consumer_memory_storage: false"), std::string::npos);
  EXPECT_NE(c.find("consumer_inactive_threshold: \"604800s\""), std::string::npos);
}

TEST(BusSpecTest, TlsLeafRemoteCarriesTheSiteCertificate) {
  TempDir dir;
  BusSpec s = valid_spec(dir.path().string());
  // Not tls://: nothing changes.
  use_leaf_tls(&s, "/id/ca.crt", "/id/site.crt", "/id/site.key");
  EXPECT_EQ(s.leaf_tls_ca_file, "");
  s.leaf_urls = {"tls://127.0.0.1:7422"};
  use_leaf_tls(&s, "/id/ca.crt", "/id/site.crt", "/id/site.key");
  auto r = render_nats_config(s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_NE(r->find("deny_exports: [\"t.*.d.*.telemetry\", \"t.*.d.*.telemetry.>\"], "
                    "tls: {cert_file: \"/id/site.crt\", key_file: \"/id/site.key\", "
                    "ca_file: \"/id/ca.crt\"}}]"),
            std::string::npos)
      << *r;
  EXPECT_EQ(restart_only_difference(s, valid_spec(dir.path().string())), "leaf_remote");
  // With real files nats-server accepts it.
  canopy::testing::TestCertificates certs;
  std::string error;
  auto ca = certs.make_ca("hub", &error);
  ASSERT_TRUE(ca.ok()) << error;
  auto site =
      certs.issue_client(ca, "shop-1", std::chrono::hours(24), std::chrono::hours(-1), &error);
  ASSERT_TRUE(site.ok()) << error;
  BusSpec real = valid_spec(dir.path().string());
  real.leaf_urls = {"tls://127.0.0.1:7422"};
  use_leaf_tls(&real, ca.cert, site.cert, site.key);
  auto config = render_nats_config(real);
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  bool ok = false;
  const std::string out = nats_server_check(dir, *config, &ok);
  EXPECT_TRUE(ok) << out << "\n" << *config;
  // A certificate without its key is refused.
  s.leaf_tls_key_file.clear();
  EXPECT_NE(message_of(s).find("leaf_tls: a certificate and its key go together"),
            std::string::npos)
      << message_of(s);
}

TEST(BusSpecTest, LeafCredentialsGoIntoUrlsWithoutTheirOwnAndOutOfLogs) {
  TempDir dir;
  BusSpec s = valid_spec(dir.path().string());
  s.leaf_urls = {"nats-leaf://hub-1:7422", "tls://ops:theirs@hub-2:7422", "nats://hub-3:7422/x@y"};
  use_leaf_credentials(&s, "leaf-shop-1", "Secret42");
  EXPECT_EQ(s.leaf_urls[0], "nats-leaf://leaf-shop-1:Secret42@hub-1:7422");
  EXPECT_EQ(s.leaf_urls[1], "tls://ops:theirs@hub-2:7422");  // the operator's own
  EXPECT_EQ(s.leaf_urls[2], "nats://leaf-shop-1:Secret42@hub-3:7422/x@y");
  EXPECT_EQ(redact_url(s.leaf_urls[0]), "nats-leaf://leaf-shop-1:***@hub-1:7422");
  EXPECT_EQ(redact_url("nats-leaf://hub-1:7422"), "nats-leaf://hub-1:7422");
  EXPECT_EQ(redact_url("nats://user@hub:4222"), "nats://user@hub:4222");
  // No user (an enrollment by an earlier hub): nothing changes.
  BusSpec none = valid_spec(dir.path().string());
  none.leaf_urls = {"nats-leaf://hub-1:7422"};
  use_leaf_credentials(&none, "", "Secret42");
  EXPECT_EQ(none.leaf_urls[0], "nats-leaf://hub-1:7422");
  // nats-server takes the URL.
  auto config = render_nats_config(s);
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  bool ok = false;
  const std::string out = nats_server_check(dir, *config, &ok);
  EXPECT_TRUE(ok) << out << "\n" << *config;
}

TEST(BusSpecTest, MemoryConsumersConfigIsAccepted) {
  TempDir dir;
  BusSpec s = valid_spec(dir.path().string());
  s.limits.mqtt_consumer_memory_storage = true;
  s.limits.mqtt_consumer_inactive_threshold = std::chrono::seconds(3600);
  auto r = render_nats_config(s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_NE(r->find("consumer_memory_storage: true"), std::string::npos);
  bool ok = false;
  const std::string out = nats_server_check(dir, *r, &ok);
  EXPECT_TRUE(ok) << out;
}

TEST(BusSpecTest, NoUplinkAndNoTenantsIsAValidBus) {
  TempDir dir;
  BusSpec s = valid_spec(dir.path().string());
  s.leaf_urls.clear();
  s.tenants.clear();
  auto r = render_nats_config(s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->find("leafnodes"), std::string::npos);
  bool ok = false;
  const std::string out = nats_server_check(dir, *r, &ok);
  EXPECT_TRUE(ok) << out;
}

TEST(BusSpecTest, QuotedStringsCannotBreakOut) {
  EXPECT_EQ(quote_conf_string("plain"), "\"plain\"");
  EXPECT_EQ(quote_conf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(quote_conf_string("l1\nl2\t\x01"), "\"l1\\x0al2\\x09\\x01\"");
  EXPECT_EQ(quote_conf_string("$HOME"), "\"$HOME\"");  // no variables inside quotes
}

// The store directory is a path the operator chose: quotes, backslashes, '$'
// and spaces reach nats-server intact (it creates exactly that directory).
TEST(BusSpecTest, HostileDirectoryNameReachesNatsServerIntact) {
  TempDir dir;
  const std::string odd = dir.file("bus \"x\" \\ $y } z");
  BusSpec s = valid_spec(odd);
  s.leaf_urls.clear();
  s.client_port = canopy::testing::pick_free_port();
  s.mqtt_port = canopy::testing::pick_free_port();
  s.monitor_port = canopy::testing::pick_free_port();
  auto r = render_nats_config(s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const std::string path = dir.file("odd.conf");
  std::ofstream(path) << *r;
  Process p;
  ProcessOptions o;
  o.log_path = dir.file("odd.log");
  const char* env = std::getenv("CANOPY_NATS_SERVER");
  ASSERT_TRUE(p.start({env && *env ? env : "/usr/sbin/nats-server", "-c", path}, o));
  EXPECT_TRUE(canopy::testing::wait_until(
      [&] { return std::filesystem::exists(odd + "/jetstream/jetstream"); },
      std::chrono::seconds(10)))
      << "nats-server did not create the store under " << odd;
  p.kill(SIGKILL);
}

TEST(BusSpecTest, RefusesBadNames) {
  BusSpec s = valid_spec();
  s.site = "Shop_1";
  EXPECT_NE(message_of(s).find("bus.site: \"Shop_1\" is not a DNS-1123 label"), std::string::npos);
  s = valid_spec();
  s.tenants[1].name = "glo.bex";
  EXPECT_NE(message_of(s).find("bus.tenants[1].name: \"glo.bex\" is not a DNS-1123 label"),
            std::string::npos);
  s = valid_spec();
  s.tenants[0].devices[1].id = "gw>";
  EXPECT_NE(message_of(s).find("bus.tenants[0].devices[1].id: \"gw>\""), std::string::npos);
  s = valid_spec();
  s.tenants[0].devices[0].id = "";
  EXPECT_NE(message_of(s).find("bus.tenants[0].devices[0].id"), std::string::npos);
}

TEST(BusSpecTest, RefusesDuplicates) {
  BusSpec s = valid_spec();
  s.tenants[1].name = "acme";
  EXPECT_NE(message_of(s).find("tenant \"acme\" appears twice"), std::string::npos);
  s = valid_spec();
  s.tenants[0].devices[1].id = "pump-1";
  EXPECT_NE(message_of(s).find("device \"pump-1\" appears twice in tenant \"acme\""),
            std::string::npos);
}

TEST(BusSpecTest, RefusesWhatIsNotABcryptHash) {
  for (const std::string bad : {"secret", "", "$1$abc$defghijk",
                                "$2b$03$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmUg0O",
                                "$2b$04$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmUg0",
                                "$2b$04$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmU\"}",
                                "$2c$04$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmUg0O"}) {
    BusSpec s = valid_spec();
    s.tenants[0].devices[0].password_hash = bad;
    EXPECT_NE(message_of(s).find("bus.tenants[0].devices[0].password_hash: not a bcrypt hash"),
              std::string::npos)
        << bad;
  }
}

TEST(BusSpecTest, RefusesBadListenersAndUplinks) {
  BusSpec s = valid_spec();
  s.mqtt_port = 0;
  EXPECT_NE(message_of(s).find("bus.mqtt_port: 0 is not a port"), std::string::npos);
  s = valid_spec();
  s.monitor_port = s.client_port;
  EXPECT_NE(message_of(s).find("is used by two listeners"), std::string::npos);
  s = valid_spec();
  s.leaf_urls = {"http://hub:7422"};
  EXPECT_NE(message_of(s).find("bus.leaf_remote[0]: \"http://hub:7422\" is not a nats-leaf://"),
            std::string::npos);
  s = valid_spec();
  s.leaf_urls = {"nats-leaf://hub:7422\"], account: \"tenant-acme"};
  EXPECT_NE(message_of(s).find("contains a space, a quote"), std::string::npos);
  s = valid_spec();
  s.leaf_urls.assign(kMaxLeafUrls + 1, "nats-leaf://hub:7422");
  EXPECT_NE(message_of(s).find("bus.leaf_remote: at most 16 URLs"), std::string::npos);
  s = valid_spec();
  s.mqtt_host = "0.0.0.0 ; rm";
  EXPECT_NE(message_of(s).find("bus.mqtt_host"), std::string::npos);
  s = valid_spec();
  s.spoke_password_hash = "short";
  EXPECT_NE(message_of(s).find("bus.spoke_password_hash: not a bcrypt hash"), std::string::npos);
  s = valid_spec();
  s.dir.clear();
  EXPECT_NE(message_of(s).find("bus.dir: required"), std::string::npos);
}

TEST(BusSpecTest, RefusesBadLimits) {
  BusSpec s = valid_spec();
  s.limits.max_payload = 9 << 20;
  EXPECT_NE(message_of(s).find("bus.limits.max_payload: must be at most 8 MiB"), std::string::npos);
  s = valid_spec();
  s.limits.tenant_max_consumers = 0;
  EXPECT_NE(message_of(s).find("bus.limits.tenant_max_consumers: must be at least 1"),
            std::string::npos);
  s = valid_spec();
  s.limits.mqtt_max_ack_pending = 70000;
  EXPECT_NE(message_of(s).find("bus.limits.mqtt_max_ack_pending: must be in 1-65535"),
            std::string::npos);
  s = valid_spec();
  s.limits.mqtt_consumer_inactive_threshold = std::chrono::seconds(0);
  EXPECT_NE(message_of(s).find("bus.limits.mqtt_consumer_inactive_threshold: must be at least 1"),
            std::string::npos);
  s = valid_spec();
  s.limits.tenant_max_file = s.limits.max_file_store + 1;
  EXPECT_NE(message_of(s).find("exceeds limits.max_file_store"), std::string::npos);
  // nats-server reserves each tenant's limits: they must add up.
  s = valid_spec();
  s.tenants.clear();
  for (int i = 0; i < 32; ++i) s.tenants.push_back({"t" + std::to_string(i), {}});
  EXPECT_TRUE(validate_bus_spec(s).ok()) << validate_bus_spec(s).to_string();
  s.tenants.push_back({"t32", {}});
  EXPECT_NE(message_of(s).find("bus.limits.tenant_max_memory: 33 tenants x 8388608 bytes exceed "
                               "limits.max_memory_store (268435456)"),
            std::string::npos)
      << message_of(s);
  s.limits.tenant_max_memory = 1 << 20;
  EXPECT_NE(message_of(s).find("bus.limits.tenant_max_file: 33 tenants x"), std::string::npos);
  // The telemetry buffer's bytes are reserved too.
  s.tenants.pop_back();
  s.limits.telemetry_max_bytes += 1;
  EXPECT_NE(message_of(s).find("bus.limits.tenant_max_file: 32 tenants x 268435456 bytes exceed "
                               "limits.max_file_store (8858370048) less "
                               "limits.telemetry_max_bytes"),
            std::string::npos)
      << message_of(s);
}

TEST(BusSpecTest, RefusesBadTelemetryLimits) {
  BusSpec s = valid_spec();
  s.limits.telemetry_max_bytes = 0;
  EXPECT_NE(message_of(s).find("bus.limits.telemetry_max_bytes: must be at least 1"),
            std::string::npos)
      << message_of(s);
  s = valid_spec();
  s.limits.telemetry_max_bytes = s.limits.max_file_store + 1;
  EXPECT_NE(message_of(s).find("bus.limits.telemetry_max_bytes: exceeds limits.max_file_store"),
            std::string::npos);
  s = valid_spec();
  s.limits.telemetry_max_age = std::chrono::seconds(0);
  EXPECT_NE(message_of(s).find("bus.limits.telemetry_max_age: must be at least 1"),
            std::string::npos);
  s = valid_spec();
  s.limits.telemetry_max_message = s.limits.max_payload + 1;
  EXPECT_NE(message_of(s).find("bus.limits.telemetry_max_message: exceeds limits.max_payload"),
            std::string::npos);
}

TEST(BusSpecTest, RefusesMoreTenantsOrDevicesThanTheLimits) {
  BusSpec s = valid_spec();
  s.tenants.clear();
  s.limits.tenant_max_memory = s.limits.max_memory_store / kMaxTenants;
  s.limits.tenant_max_file = (s.limits.max_file_store - s.limits.telemetry_max_bytes) / kMaxTenants;
  for (size_t i = 0; i <= kMaxTenants; ++i) s.tenants.push_back({"t" + std::to_string(i), {}});
  EXPECT_NE(message_of(s).find("1001 tenants, more than the 1000"), std::string::npos);
  s.tenants.pop_back();
  EXPECT_TRUE(validate_bus_spec(s).ok());

  s = valid_spec();
  s.tenants.assign(2, BusTenant{});
  s.tenants[0].name = "a";
  s.tenants[1].name = "b";
  for (size_t i = 0; i < kMaxDevices / 2; ++i) {
    s.tenants[0].devices.push_back({"d" + std::to_string(i), kHash, DeviceScope::kDevice});
  }
  s.tenants[1].devices = s.tenants[0].devices;
  EXPECT_TRUE(validate_bus_spec(s).ok());
  s.tenants[1].devices.push_back({"one-more", kHash, DeviceScope::kDevice});
  EXPECT_NE(message_of(s).find("more than the 100000 devices"), std::string::npos);
}

TEST(BusSpecTest, RestartOnlyDifferences) {
  const BusSpec a = valid_spec();
  BusSpec b = a;
  b.tenants.push_back({"initech", {{"x", kHash, DeviceScope::kDevice}}});
  b.limits.tenant_max_consumers = 5;
  EXPECT_EQ(restart_only_difference(a, b), "");
  b.leaf_urls.push_back("nats-leaf://127.0.0.2:7422");
  EXPECT_EQ(restart_only_difference(a, b), "leaf_remote");
  b = a;
  b.mqtt_port = 1884;
  EXPECT_EQ(restart_only_difference(a, b), "mqtt_port");
}

TEST(TelemetryTest, DeviceSubjectsMapToTheTenantsHubSubjects) {
  EXPECT_EQ(telemetry_hub_subject("shop-1", "t.acme.d.pump-1.telemetry"), "tm.acme.shop-1.pump-1");
  EXPECT_EQ(telemetry_hub_subject("shop-1", "t.acme.d.pump-1.telemetry.temp.c"),
            "tm.acme.shop-1.pump-1.temp.c");
  // Anything else does not map.
  for (const char* bad :
       {"t.acme.d.pump-1.reported", "t.acme.d.pump-1", "t.acme.x.pump-1.telemetry",
        "t.Acme.d.pump-1.telemetry", "t.acme.d.pump_1.telemetry", "t.acme.d.pump-1.telemetry..x",
        "u.acme.d.pump-1.telemetry", ""}) {
    EXPECT_EQ(telemetry_hub_subject("shop-1", bad), std::nullopt) << bad;
  }
  EXPECT_EQ(telemetry_hub_subject("Shop", "t.acme.d.pump-1.telemetry"), std::nullopt);
}

TEST(PasswordHashTest, BcryptHashesAreAcceptedAndSalted) {
  auto h1 = bcrypt_hash("pw-1", 4);
  auto h2 = bcrypt_hash("pw-1", 4);
  ASSERT_TRUE(h1.ok()) << h1.status().to_string();
  ASSERT_TRUE(h2.ok());
  EXPECT_TRUE(is_bcrypt_hash(*h1)) << *h1;
  EXPECT_EQ(h1->substr(0, 7), "$2b$04$");
  EXPECT_NE(*h1, *h2);  // fresh salt
  EXPECT_FALSE(bcrypt_hash("pw", 3).ok());
  EXPECT_FALSE(bcrypt_hash(std::string(73, 'x'), 4).ok());
  EXPECT_FALSE(bcrypt_hash(std::string("a\0b", 3), 4).ok());
  const std::string p = random_password(32);
  EXPECT_EQ(p.size(), 32u);
  EXPECT_EQ(p.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
            std::string::npos);
  EXPECT_NE(p, random_password(32));
}

TEST(BusConfigTest, LoadsTheBusSection) {
  const YAML::Node node = YAML::Load(R"(
enabled: true
nats_server: /usr/sbin/nats-server
mqtt_port: 1884
leaf_remote: nats-leaf://hub:7422
limits: {tenant_max_consumers: 500, mqtt_ack_wait_seconds: 5, mqtt_consumer_memory_storage: true}
tenants:
  - name: acme
    devices:
      - {id: pump-1, password_hash: "$2b$04$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmUg0O"}
      - {id: gw, password_hash: "$2b$04$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmUg0O", scope: tenant}
)");
  BusSettings s;
  ASSERT_TRUE(load_bus_settings(node, &s).ok());
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.nats_server, "/usr/sbin/nats-server");
  std::string password;
  auto made = make_bus_spec(s, "shop-1", "/data", &password);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  const BusSpec& spec = *made;
  EXPECT_EQ(password.size(), 32u);
  EXPECT_TRUE(is_bcrypt_hash(spec.spoke_password_hash));
  EXPECT_EQ(spec.dir, "/data/bus");
  EXPECT_EQ(spec.site, "shop-1");
  EXPECT_EQ(spec.mqtt_port, 1884);
  EXPECT_EQ(spec.leaf_urls, std::vector<std::string>{"nats-leaf://hub:7422"});
  EXPECT_EQ(spec.limits.tenant_max_consumers, 500);
  EXPECT_EQ(spec.limits.mqtt_ack_wait, std::chrono::seconds(5));
  EXPECT_TRUE(spec.limits.mqtt_consumer_memory_storage);
  ASSERT_EQ(spec.tenants.size(), 1u);
  ASSERT_EQ(spec.tenants[0].devices.size(), 2u);
  EXPECT_EQ(spec.tenants[0].devices[1].scope, DeviceScope::kTenant);
  EXPECT_TRUE(validate_bus_spec(spec).ok()) << validate_bus_spec(spec).to_string();
}

TEST(BusConfigTest, TenantsComeFromATenantsFile) {
  TempDir dir;
  const std::string path = dir.file("tenants.yaml");
  std::ofstream(path) << "tenants:\n  - name: acme\n    devices:\n      - {id: pump-1, "
                         "password_hash: \""
                      << kHash << "\"}\n";
  BusSettings s;
  ASSERT_TRUE(
      load_bus_settings(YAML::Load("{enabled: true, tenants_file: " + path + "}"), &s).ok());
  std::string password;
  auto spec = make_bus_spec(s, "shop-1", "/data", &password);
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  ASSERT_EQ(spec->tenants.size(), 1u);
  EXPECT_EQ(spec->tenants[0].devices[0].id, "pump-1");

  std::ofstream(path) << "tenants: [{name: acme, devices: [{id: d, colour: red}]}]\n";
  spec = make_bus_spec(s, "shop-1", "/data", &password);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().message(),
            "bus.tenants_file " + path + ": bus.tenants[0].devices[0]: unknown setting \"colour\"");
  std::ofstream(path) << "tenants: [unclosed\n";
  spec = make_bus_spec(s, "shop-1", "/data", &password);
  EXPECT_EQ(spec.status().message().rfind("bus.tenants_file " + path + ": ", 0), 0u)
      << spec.status().message();
  s.tenants_file = dir.file("missing.yaml");
  EXPECT_FALSE(make_bus_spec(s, "shop-1", "/data", &password).ok());
  s.spec.tenants = {{"acme", {}}};
  s.tenants_file = path;
  EXPECT_EQ(make_bus_spec(s, "shop-1", "/data", &password).status().message(),
            "bus: tenants and tenants_file are exclusive; use one");
}

TEST(BusConfigTest, RefusesUnknownKeysAndBadValuesByPath) {
  BusSettings s;
  Status st = load_bus_settings(YAML::Load("{enabled: true, mqtt_prot: 1}"), &s);
  EXPECT_EQ(st.message(), "bus: unknown setting \"mqtt_prot\"");
  st =
      load_bus_settings(YAML::Load("{tenants: [{name: a, devices: [{id: d, scope: world}]}]}"), &s);
  EXPECT_NE(st.message().find("bus.tenants[0].devices[0].scope: \"world\" is not a device scope"),
            std::string::npos)
      << st.message();
  st = load_bus_settings(YAML::Load("{tenants: [{name: a, devices: [{id: d, key: x}]}]}"), &s);
  EXPECT_EQ(st.message(), "bus.tenants[0].devices[0]: unknown setting \"key\"");
  st = load_bus_settings(YAML::Load("{mqtt_port: many}"), &s);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.message().rfind("bus: ", 0), 0u) << st.message();
}

}  // namespace
}  // namespace canopy::spoke::bus
