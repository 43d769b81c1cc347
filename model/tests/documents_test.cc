#include "model/documents.h"

#include <gtest/gtest.h>

#include <string>

namespace canopy::model {
namespace {

using nlohmann::json;

json manifest() {
  return {{"apiVersion", "apps/v1"},
          {"kind", "Deployment"},
          {"metadata", {{"name", "web"}, {"namespace", "shop"}, {"labels", {{"app", "web"}}}}}};
}

template <typename T>
std::string error_of(const StatusOr<T>& r) {
  return r.ok() ? std::string("(ok)") : r.status().message();
}
std::string error_of(const Status& s) { return s.ok() ? std::string("(ok)") : s.message(); }

TEST(Documents, Placement) {
  auto p = parse_placement({{"templates", {"web", "db", "web"}},
                            {"sites", {"b", "a"}},
                            {"selector", {{"matchLabels", {{"region", "eu"}}}}}});
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->templates, (std::vector<std::string>{"db", "web"}));
  EXPECT_EQ(p->choice.sites, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(p->choice.matches(SiteRecord{"a", {}, {}}));
  EXPECT_TRUE(p->choice.matches(SiteRecord{"z", {{"region", "eu"}}, {}}));
  EXPECT_FALSE(p->choice.matches(SiteRecord{"z", {{"region", "us"}}, {}}));

  EXPECT_EQ(error_of(parse_placement({{"sites", {"a"}}})), "templates is missing");
  EXPECT_NE(error_of(parse_placement({{"templates", {"Web"}}, {"sites", {"a"}}}))
                .find("templates[0] \"Web\" is not a DNS-1123 label"),
            std::string::npos);
  EXPECT_NE(error_of(parse_placement(
                         {{"templates", {"web"}}, {"sites", {"a"}}, {"selecter", json::object()}}))
                .find("\"selecter\" is not a field"),
            std::string::npos);
  EXPECT_NE(error_of(parse_placement({{"templates", {"web"}}})).find("sites or selector"),
            std::string::npos);
  EXPECT_EQ(error_of(parse_placement(json::array())), "placement must be a JSON object, not array");
}

// The rollout controller's record round-trips, and a document that is not
// one is refused with the field named.
TEST(Documents, RolloutState) {
  RolloutState st;
  st.paused = "paused by its policy";
  st.templates.push_back({"web", "r1", 2, 3, 10, 4, 3, 1, {"a: held until 5"}});
  auto back = parse_rollout_state(rollout_state_document(st));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(*back, st);
  for (const char* bad : {R"([])", R"({"templates": {}})", R"({"extra": 1})",
                          R"({"templates": [{"template": "Web"}]})",
                          R"({"templates": [{"template": "web", "wave": -1}]})",
                          R"({"templates": [{"template": "web", "held": [1]}]})"}) {
    auto r = parse_rollout_state(json::parse(bad));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(Documents, RolloutPolicyAndRelease) {
  json p = {{"templates", {"web"}}, {"sites", {"a"}}};
  auto none = parse_placement(p);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->rollout.enabled());
  p["rollout"] = {{"maxUnavailable", 2}, {"maxFailures", 1}, {"paused", true}};
  auto r = parse_placement(p);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->rollout.enabled());
  EXPECT_EQ(r->rollout.max_unavailable, 2u);
  EXPECT_EQ(r->rollout.max_failures, 1u);
  EXPECT_TRUE(r->rollout.paused);
  p["rollout"] = json::object();
  EXPECT_FALSE(parse_placement(p)->rollout.enabled());
  for (const json& bad : {json{{"maxUnavailable", -1}}, json{{"maxUnavailable", "25%"}},
                          json{{"paused", "yes"}}, json(3)}) {
    p["rollout"] = bad;
    EXPECT_FALSE(parse_placement(p).ok()) << bad.dump();
  }
  p["rollout"] = {{"maxUnavailable", 1.5}};
  EXPECT_NE(error_of(parse_placement(p)).find("rollout.maxUnavailable must be a non-negative"),
            std::string::npos);

  // Waves: counts or percents, each taking more sites than the one before.
  p["rollout"] = {{"waves", {1, "10%", "50%", 40}}};
  auto waves = parse_placement(p);
  ASSERT_TRUE(waves.ok()) << waves.status().to_string();
  EXPECT_TRUE(waves->rollout.enabled()) << "waves alone make a rollout";
  ASSERT_EQ(waves->rollout.waves.size(), 4u);
  const Rollout& r4 = waves->rollout;
  // Of 100 sites: 1, then 10, then 50, then 50 (40 is below), then all.
  EXPECT_EQ(r4.wave_end(0, 100), 1u);
  EXPECT_EQ(r4.wave_end(1, 100), 10u);
  EXPECT_EQ(r4.wave_end(2, 100), 50u);
  EXPECT_EQ(r4.wave_end(3, 100), 50u);
  EXPECT_EQ(r4.wave_end(4, 100), 100u);
  // Of 3 sites: 10% rounds up to 1, 50% to 2; nothing beyond the targeted.
  EXPECT_EQ(r4.wave_end(1, 3), 1u);
  EXPECT_EQ(r4.wave_end(2, 3), 2u);
  EXPECT_EQ(r4.wave_end(3, 3), 3u);
  for (const json& bad : {json::array(), json{0}, json{"0%"}, json{"150%"}, json{"ten%"},
                          json{"10"}, json{1.5}, json{2, 1}, json{"50%", "50%"}, json("10%")}) {
    p["rollout"] = {{"waves", bad}};
    EXPECT_FALSE(parse_placement(p).ok()) << bad.dump();
  }
  p["rollout"] = {{"waves", {"10%", "5%"}}};
  EXPECT_NE(error_of(parse_placement(p)).find("rollout.waves must grow"), std::string::npos);
  p["rollout"] = {{"waves", {"1O%"}}};
  EXPECT_NE(error_of(parse_placement(p)).find("a percent of the targeted sites"),
            std::string::npos);

  auto hold = parse_hold(hold_document(Hold{1700000000000, "maintenance"}));
  ASSERT_TRUE(hold.ok()) << hold.status().to_string();
  EXPECT_EQ(hold->until_ms, 1700000000000u);
  EXPECT_EQ(hold->reason, "maintenance");
  EXPECT_TRUE(hold->active(1699999999999));
  EXPECT_FALSE(hold->active(1700000000000));
  for (const json& bad :
       {json::object(), json{{"untilMs", -5}}, json{{"untilMs", "soon"}},
        json{{"untilMs", 5}, {"reason", 3}}, json{{"untilMs", 5}, {"by", "x"}}, json(1)}) {
    EXPECT_FALSE(parse_hold(bad).ok()) << bad.dump();
  }
  EXPECT_NE(error_of(parse_hold(json::object())).find("untilMs is missing"), std::string::npos);

  auto release = parse_release(release_document(Release{"00ff00ff00ff00ff"}));
  ASSERT_TRUE(release.ok());
  EXPECT_EQ(release->revision, "00ff00ff00ff00ff");
  EXPECT_FALSE(parse_release(json::object()).ok());
  EXPECT_FALSE(parse_release({{"revision", "r"}, {"site", "x"}}).ok());
}

TEST(Documents, ApplyPolicy) {
  json p = {{"templates", {"web"}}, {"sites", {"a"}}};
  auto none = parse_placement(p);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->apply.force_conflicts);
  EXPECT_FALSE(none->apply.report_drift);
  p["apply"] = {{"forceConflicts", true}, {"drift", "report"}};
  auto a = parse_placement(p);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_TRUE(a->apply.force_conflicts);
  EXPECT_TRUE(a->apply.report_drift);
  p["apply"] = {{"drift", "repair"}};
  EXPECT_FALSE(parse_placement(p)->apply.report_drift);
  p["apply"] = {{"drift", "ignore"}};
  EXPECT_EQ(error_of(parse_placement(p)), "apply.drift must be \"repair\" or \"report\"");
  p["apply"] = {{"forceConflicts", "yes"}};
  EXPECT_EQ(error_of(parse_placement(p)), "apply.forceConflicts must be true or false");
  p["apply"] = {{"force", true}};
  EXPECT_NE(error_of(parse_placement(p)).find("\"force\" is not a field"), std::string::npos);
  p["apply"] = json::array();
  EXPECT_EQ(error_of(parse_placement(p)), "apply must be an object, not array");
}

TEST(Documents, Override) {
  auto o = parse_override({{"template", "web"}, {"patch", {{"spec", {{"replicas", 3}}}}}});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->template_name, "web");
  EXPECT_TRUE(o->choice.empty());
  EXPECT_EQ(error_of(parse_override({{"template", "web"}})), "patch is missing");
  EXPECT_NE(
      error_of(parse_override({{"template", "web"}, {"patch", 3}})).find("patch must be an object"),
      std::string::npos);
  EXPECT_NE(error_of(parse_override({{"template", 1}, {"patch", json::object()}}))
                .find("template must be a string"),
            std::string::npos);
  EXPECT_TRUE(parse_local_override({{"patch", {{"a", 1}}}}).ok());
  EXPECT_TRUE(parse_local_override(json::object()).ok());
  EXPECT_NE(error_of(parse_local_override({{"patch", "x"}})).find("patch must be an object"),
            std::string::npos);
}

TEST(Documents, Site) {
  auto s = parse_site("tower-1", {{"name", "tower-1"}, {"labels", {{"region", "eu"}}}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->labels, (Labels{{"region", "eu"}}));
  EXPECT_EQ(parse_site("tower-1", site_document(*s))->labels, s->labels);
  EXPECT_NE(error_of(parse_site("tower-1", {{"name", "tower-2"}})).find("differs"),
            std::string::npos);
  EXPECT_NE(error_of(parse_site("tower-1", {{"labels", {{"region", 1}}}})).find("must be a string"),
            std::string::npos);
  EXPECT_NE(error_of(parse_site("tower-1", {{"labels", {{"bad key", "x"}}}})).find("label key"),
            std::string::npos);
  EXPECT_NE(error_of(parse_site("Tower", json::object())).find("DNS-1123"), std::string::npos);
}

TEST(Documents, ManifestChecksWhatEverySiteChecks) {
  EXPECT_TRUE(validate_manifest(manifest()).ok());
  json m = manifest();
  m["metadata"]["labels"]["tier"] = 3;
  EXPECT_EQ(error_of(validate_manifest(m)), "metadata.labels.tier must be a string, not number");
  m = manifest();
  m["metadata"]["labels"]["bad key"] = "x";
  EXPECT_NE(error_of(validate_manifest(m)).find("metadata.labels key \"bad key\""),
            std::string::npos);
  m = manifest();
  m["metadata"]["annotations"] = {{"note", json::array()}};
  EXPECT_EQ(error_of(validate_manifest(m)),
            "metadata.annotations.note must be a string, not array");
  m = manifest();
  m["metadata"]["name"] = "Web_1";
  EXPECT_NE(
      error_of(validate_manifest(m)).find("metadata.name \"Web_1\" is not a DNS-1123 subdomain"),
      std::string::npos);
  m = manifest();
  m.erase("kind");
  EXPECT_EQ(error_of(validate_manifest(m)), "kind is missing");
}

TEST(Documents, StatusReportRoundTrips) {
  StatusReport r{"t/acme/templates/web",
                 "00ff",
                 Outcome::kFailed,
                 "why",
                 "f.json",
                 "0123abcd",
                 "progressing",
                 "1 of 2 replicas available",
                 "repaired: .spec.replicas"};
  auto back = parse_status_report(status_document(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->outcome, Outcome::kFailed);
  EXPECT_EQ(back->message, "why");
  EXPECT_EQ(back->revision, "0123abcd");
  EXPECT_EQ(back->health, "progressing");
  EXPECT_EQ(back->health_message, "1 of 2 replicas available");
  EXPECT_EQ(back->drift, "repaired: .spec.replicas");
  // No revision (a spoke before revisions): none written, none read.
  r.revision.clear();
  EXPECT_FALSE(status_document(r).contains("revision"));
  EXPECT_EQ(parse_status_report(status_document(r))->revision, "");
  EXPECT_FALSE(parse_status_report({{"outcome", "done"}}).ok());
}

}  // namespace
}  // namespace canopy::model

namespace canopy::model {
namespace {

const char* const kHash = "$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234";

json device_doc() {
  return {{"labels", {{"kind", "pump"}}},
          {"credential", {{"passwordHash", kHash}}},
          {"desired", {{"speed", 3}, {"mode", "eco"}}}};
}

TEST(Documents, Device) {
  auto d = parse_device("shop-1", "acme", "pump-1", device_doc());
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ(d->site, "shop-1");
  EXPECT_EQ(d->tenant, "acme");
  EXPECT_EQ(d->id, "pump-1");
  EXPECT_EQ(d->scope, "device");
  EXPECT_EQ(d->password_hash, kHash);
  EXPECT_EQ(d->labels.at("kind"), "pump");
  EXPECT_EQ(d->desired, json({{"speed", 3}, {"mode", "eco"}}));

  json doc = device_doc();
  doc["scope"] = "tenant";
  doc["tenant"] = "acme";
  doc["site"] = "shop-1";
  doc["id"] = "pump-1";
  ASSERT_TRUE(parse_device("shop-1", "acme", "pump-1", doc).ok());
}

TEST(Documents, DeviceRefusesBadInputNamingTheField) {
  auto err = [](const json& doc) {
    return error_of(parse_device("shop-1", "acme", "pump-1", doc));
  };
  json d = device_doc();
  d["password"] = "hunter2";
  EXPECT_NE(err(d).find("password: a clear password is never stored"), std::string::npos) << err(d);
  EXPECT_EQ(err(d).find("hunter2"), std::string::npos);
  d = device_doc();
  d["credential"] = {{"password", "hunter2"}};
  EXPECT_NE(err(d).find("credential.password: a clear password"), std::string::npos) << err(d);
  d["credential"] = {{"passwordHash", "hunter2"}};
  EXPECT_NE(err(d).find("credential.passwordHash is not a bcrypt hash"), std::string::npos);
  EXPECT_EQ(err(d).find("hunter2"), std::string::npos) << "a mis-sent password is never echoed";
  d.erase("credential");
  EXPECT_NE(err(d).find("credential is missing"), std::string::npos);
  d = device_doc();
  d["tenant"] = "globex";
  EXPECT_NE(err(d).find("tenant \"globex\" differs from the key's \"acme\""), std::string::npos)
      << err(d);
  d = device_doc();
  d["scope"] = "fleet";
  EXPECT_NE(err(d).find("scope \"fleet\" is not"), std::string::npos);
  d = device_doc();
  d["desired"] = {{"a.b", 1}};
  EXPECT_NE(err(d).find("desired field \"a.b\""), std::string::npos);
  d["desired"] = 3;
  EXPECT_NE(err(d).find("desired must be an object"), std::string::npos);
  d = device_doc();
  d["colour"] = "red";
  EXPECT_NE(err(d).find("\"colour\" is not a field"), std::string::npos);
  EXPECT_NE(error_of(parse_device("shop-1", "acme", "Pump", device_doc())).find("id \"Pump\""),
            std::string::npos);
  EXPECT_NE(err(json::array()).find("device must be a JSON object"), std::string::npos);
}

TEST(Documents, BcryptHash) {
  EXPECT_TRUE(is_bcrypt_hash(kHash));
  EXPECT_FALSE(is_bcrypt_hash("$2b$03$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"));
  EXPECT_FALSE(is_bcrypt_hash("$2x$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"));
  EXPECT_FALSE(is_bcrypt_hash("$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ0123"));
  EXPECT_FALSE(is_bcrypt_hash("$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ0123!"));
}

TEST(Documents, Reported) {
  auto r = parse_reported({{"temp", {{"value", 21.5}, {"atMs", 1000}}}, {"gone", nullptr}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->at("temp").value, 21.5);
  EXPECT_EQ(r->at("temp").at_ms, 1000u);
  EXPECT_FALSE(parse_reported({{"temp", 21.5}}).ok());
  EXPECT_FALSE(parse_reported({{"temp", {{"value", 1}}}}).ok());
  EXPECT_FALSE(parse_reported({{"$x", {{"value", 1}, {"atMs", 1}}}}).ok());
}

}  // namespace
}  // namespace canopy::model
