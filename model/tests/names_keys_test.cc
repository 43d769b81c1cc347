#include <gtest/gtest.h>

#include <string>

#include "model/keys.h"
#include "model/names.h"

namespace canopy::model {
namespace {

TEST(Names, Dns1123) {
  EXPECT_TRUE(is_dns1123_label("web-1"));
  EXPECT_TRUE(is_dns1123_label(std::string(63, 'a')));
  EXPECT_FALSE(is_dns1123_label(std::string(64, 'a')));
  EXPECT_FALSE(is_dns1123_label("Web"));
  EXPECT_FALSE(is_dns1123_label("-web"));
  EXPECT_FALSE(is_dns1123_label("web-"));
  EXPECT_FALSE(is_dns1123_label(""));
  EXPECT_FALSE(is_dns1123_label("a.b"));
  EXPECT_TRUE(is_dns1123_subdomain("a.b-c.d"));
  EXPECT_FALSE(is_dns1123_subdomain("a..b"));
  EXPECT_FALSE(is_dns1123_subdomain(".a"));
  EXPECT_FALSE(is_dns1123_subdomain("Web_1"));
  EXPECT_FALSE(is_dns1123_subdomain(std::string(254, 'a')));
}

TEST(Names, LabelKeysAndValues) {
  EXPECT_TRUE(is_label_key("region"));
  EXPECT_TRUE(is_label_key("app.kubernetes.io/managed-by"));
  EXPECT_TRUE(is_label_key("Tier_1.x"));
  EXPECT_FALSE(is_label_key(""));
  EXPECT_FALSE(is_label_key("/name"));
  EXPECT_FALSE(is_label_key("Bad_Prefix/name"));
  EXPECT_FALSE(is_label_key("a/b/c"));
  EXPECT_FALSE(is_label_key("-x"));
  EXPECT_FALSE(is_label_key(std::string(64, 'a')));
  EXPECT_TRUE(is_label_value(""));
  EXPECT_TRUE(is_label_value("eu-west_1.b"));
  EXPECT_FALSE(is_label_value("eu west"));
  EXPECT_FALSE(is_label_value("x-"));
  EXPECT_FALSE(is_label_value(std::string(64, 'v')));
}

TEST(Keys, BuildAndParseEveryShape) {
  struct Case {
    std::string key;
    KeyKind kind;
    std::string site, tenant, name;
  };
  const Case cases[] = {
      {site_key("tower-1"), KeyKind::kSite, "tower-1", "", ""},
      {template_key("acme", "web"), KeyKind::kTemplate, "", "acme", "web"},
      {placement_key("acme", "eu"), KeyKind::kPlacement, "", "acme", "eu"},
      {override_key("acme", "big"), KeyKind::kOverride, "", "acme", "big"},
      {local_override_key("tower-1", "acme", "web"), KeyKind::kLocalOverride, "tower-1", "acme",
       "web"},
      {status_key("tower-1", "acme", "web"), KeyKind::kStatus, "tower-1", "acme", "web"},
      {release_key("tower-1", "acme", "web"), KeyKind::kRelease, "tower-1", "acme", "web"},
      {presence_key("tower-1"), KeyKind::kPresence, "tower-1", "", ""},
      {hold_key("tower-1", "maintenance"), KeyKind::kHold, "tower-1", "", "maintenance"},
      {tenant_key("acme"), KeyKind::kTenant, "", "acme", ""},
      {grant_key("acme", "eu-shops"), KeyKind::kGrant, "", "acme", "eu-shops"},
      {rollout_key("acme", "web-eu"), KeyKind::kRollout, "", "acme", "web-eu"},
      {token_key("0f3a9c"), KeyKind::kToken, "", "", "0f3a9c"},
      {device_key("tower-1", "acme", "pump-1"), KeyKind::kDevice, "tower-1", "acme", "pump-1"},
      {reported_key("tower-1", "acme", "pump-1"), KeyKind::kReported, "tower-1", "acme", "pump-1"},
  };
  for (const Case& c : cases) {
    const ParsedKey k = parse_key(c.key);
    EXPECT_EQ(k.kind, c.kind) << c.key;
    EXPECT_EQ(k.site, c.site) << c.key;
    EXPECT_EQ(k.tenant, c.tenant) << c.key;
    EXPECT_EQ(k.name, c.name) << c.key;
  }
  EXPECT_EQ(template_key("acme", "web"), "t/acme/templates/web");
  EXPECT_EQ(status_key("s", "t", "n"), "sites/s/status/t/n");
  EXPECT_EQ(release_key("s", "t", "n"), "sites/s/releases/t/n");
  EXPECT_EQ(presence_key("s"), "sites/s/presence");
  EXPECT_EQ(hold_key("s", "h"), "sites/s/holds/h");
  EXPECT_EQ(parse_key("sites/s/holds/Bad").kind, KeyKind::kOther);
  EXPECT_EQ(device_key("s", "t", "d"), "sites/s/devices/t/d");
  EXPECT_EQ(devices_prefix("s"), "sites/s/devices/");
  EXPECT_EQ(devices_prefix("s", "t"), "sites/s/devices/t/");
  EXPECT_EQ(reported_key("s", "t", "d"), "sites/s/reported/t/d");
  EXPECT_EQ(parse_key("sites/s/devices/t/D").kind, KeyKind::kOther);
  EXPECT_EQ(site_writable_prefixes("s"),
            (std::vector<std::string>{"sites/s/status/", "sites/s/overrides/", "sites/s/holds/",
                                      "sites/s/reported/"}));
  EXPECT_TRUE(site_writable_prefixes("S/").empty());
  EXPECT_EQ(tenant_key("acme"), "t/acme");
  EXPECT_EQ(grant_key("acme", "g"), "t/acme/grants/g");
  EXPECT_EQ(token_key("ab12"), "tokens/ab12");
  EXPECT_EQ(tenant_kind_prefix("acme", "grant"), "t/acme/grants/");
  for (const char* other :
       {"", "t/", "t/acme/templates/", "t/Acme/templates/web", "t/acme/tenants/x", "t/Acme",
        "t/acme/grants/", "tokens/", "tokens/X", "tokens/a/b", "token/ab",
        "t/acme/templates/web/extra", "sites/", "sites/Tower", "sites/s/status/acme",
        "sites/s/other/acme/web", "sites/s/status/acme/web/x", "x/acme/templates/web"}) {
    EXPECT_EQ(parse_key(other).kind, KeyKind::kOther) << other;
  }
}

TEST(Keys, SiteSubtree) {
  EXPECT_TRUE(in_site_subtree("s", "sites/s"));
  EXPECT_TRUE(in_site_subtree("s", "sites/s/status/a/b"));
  EXPECT_FALSE(in_site_subtree("s", "sites/s2"));
  EXPECT_FALSE(in_site_subtree("s", "t/s/templates/x"));
  EXPECT_FALSE(in_site_subtree("S", "sites/S"));
}

}  // namespace
}  // namespace canopy::model
