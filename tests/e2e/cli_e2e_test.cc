// kubectl-canopy through the real kubectl binary (`kubectl canopy ...`, found
// as a plugin on PATH) against the real canopy-hub with real canopy-spoke
// processes: tenants and tokens, apply, status until the sites report the
// objects applied, label selectors and output forms, exit codes.
#include <set>

#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

class CliTest : public E2ETest {
 protected:
  // `kubectl canopy <args>` with the hub's address and `token`.
  CliRun kubectl(std::vector<std::string> args, const std::string& token,
                 const std::string& stdin_file = "",
                 const std::vector<std::pair<std::string, std::string>>& env = {}) {
    return run_kubectl_canopy(hub_->grpc_port,
                              dir_.file("kubectl-" + std::to_string(++runs_) + ".log"),
                              dir_.path().string(), std::move(args), token, stdin_file, env);
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_.file(name);
    std::ofstream(path) << text;
    return path;
  }

  TempDir dir_{"canopy-cli-"};
  int runs_ = 0;
};

constexpr char kTenants[] = R"(apiVersion: canopy.io/v1
kind: Tenant
metadata: {name: acme}
spec: {description: ACME shops}
---
apiVersion: canopy.io/v1
kind: Grant
metadata: {tenant: acme, name: eu}
spec:
  selector: {matchLabels: {region: eu}}
)";

constexpr char kShop[] = R"(apiVersion: canopy.io/v1
kind: Template
metadata: {tenant: acme, name: web}
spec:
  apiVersion: v1
  kind: ConfigMap
  metadata:
    name: web
    namespace: shop
    labels: {app: web}
  data: {greeting: hello}
---
apiVersion: canopy.io/v1
kind: Template
metadata: {tenant: acme, name: db}
spec:
  apiVersion: v1
  kind: ConfigMap
  metadata: {name: db, namespace: shop, labels: {app: db}}
  data: {size: small}
---
apiVersion: canopy.io/v1
kind: Placement
metadata: {tenant: acme, name: shop-eu}
spec:
  templates: [web, db]
  selector:
    matchExpressions:
      - {key: region, operator: In, values: [eu]}
)";

TEST_F(CliTest, KubectlCanopyDrivesARealHubAndItsSpokes) {
  create_hub();
  launch_hub();
  Spoke& berlin = create_spoke("berlin", {{"region", "eu"}});
  Spoke& austin = create_spoke("austin", {{"region", "us"}});
  launch_spoke(berlin);
  launch_spoke(austin);

  // kubectl finds the plugin.
  CliRun r = kubectl({"version"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("kubectl-canopy "), std::string::npos) << r.out;

  // Tenants and grants, by the fleet admin; an editor token of acme.
  r = kubectl({"apply", "-f", write("tenants.yaml", kTenants)}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("tenant acme created"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("grant acme/eu created"), std::string::npos) << r.out;
  // The fixture granted acme every site; from here on it has the eu sites only.
  r = kubectl({"delete", "grant", "acme/all"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = kubectl({"tenants"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("acme   ACME shops"), std::string::npos) << r.out;
  CliRun issued = kubectl({"tokens", "issue", "--role", "editor", "--tenant", "acme"}, token_);
  ASSERT_EQ(issued.exit_code, 0) << issued.out;
  // The bearer text is the one line that starts with "canopy_".
  std::string editor;
  {
    std::istringstream in(issued.out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("canopy_")) editor = line;
    }
  }
  ASSERT_FALSE(editor.empty()) << issued.out;

  // The editor applies from stdin; the hub places on the eu site only.
  r = kubectl({"apply", "-f", "-"}, editor, write("shop.yaml", kShop));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("placement acme/shop-eu created"), std::string::npos) << r.out;
  ASSERT_TRUE(wait_until(
      [&] {
        CliRun s = kubectl({"status", "acme/shop-eu", "-o", "json"}, editor);
        const json j = json::parse(s.out, nullptr, false);
        return s.exit_code == 0 && j.is_object() && j.value("applied", 0) == 1 &&
               j.value("targeted", 0) == 1;
      },
      kTimeout, 200ms))
      << kubectl({"status", "acme/shop-eu"}, editor).out;
  r = kubectl({"status", "acme/shop-eu"}, editor);
  EXPECT_NE(r.out.find("1 sites targeted, 1 applied, 0 progressing"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("berlin"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("austin"), std::string::npos) << r.out;
  EXPECT_EQ(berlin.read().size(), 2u);
  EXPECT_TRUE(austin.read().empty());

  // diff: nothing after apply; a changed file shows the changed lines (kubectl
  // diff's exit codes: 0 none, 1 differences).
  r = kubectl({"diff", "-f", write("shop-same.yaml", kShop)}, editor);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "");
  std::string changed = kShop;
  changed.replace(changed.find("greeting: hello"), 15, "greeting: moin");
  r = kubectl({"diff", "-f", write("shop-changed.yaml", changed)}, editor);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--- hub/template/acme/web"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(R"(-    "greeting": "hello")"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(R"(+    "greeting": "moin")"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("template/acme/db"), std::string::npos) << r.out;

  // Rollouts: status follows the counts; pause holds a new revision back.
  r = kubectl({"rollout", "status", "acme/shop-eu"}, editor);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("placement acme/shop-eu successfully rolled out"), std::string::npos)
      << r.out;
  r = kubectl({"rollout", "pause", "acme/shop-eu"}, editor);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("has no rollout policy"), std::string::npos) << r.out;
  std::string rolling = kShop;
  rolling += "  rollout: {maxUnavailable: 1}\n";
  ASSERT_EQ(kubectl({"apply", "-f", write("rolling.yaml", rolling)}, editor).exit_code, 0);
  r = kubectl({"rollout", "pause", "acme/shop-eu"}, editor);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("placement acme/shop-eu paused"), std::string::npos) << r.out;
  r = kubectl({"get", "placement", "acme/shop-eu", "-o", "json"}, editor);
  EXPECT_EQ(json::parse(r.out)["spec"]["rollout"]["paused"], true) << r.out;
  std::string v2 = rolling;
  v2.replace(v2.find("greeting: hello"), 15, "greeting: moin");
  // The paused placement is applied again as it now stands: paused stays.
  v2.replace(v2.find("rollout: {maxUnavailable: 1}"), 28,
             "rollout: {maxUnavailable: 1, paused: true}");
  ASSERT_EQ(kubectl({"apply", "-f", write("v2.yaml", v2)}, editor).exit_code, 0);
  std::this_thread::sleep_for(2500ms);  // more than two steps of the hub's rollouts
  auto greeting = [&] {
    auto m = berlin.read();
    auto it = m.find(template_key("web"));
    return it == m.end() ? std::string() : it->second.object["data"].value("greeting", "");
  };
  EXPECT_EQ(greeting(), "hello") << "a paused rollout released the new revision";
  r = kubectl({"rollout", "status", "acme/shop-eu", "--watch=false"}, editor);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("0 of 1 sites at the current revision (1 progressing"), std::string::npos)
      << r.out;
  r = kubectl({"rollout", "resume", "acme/shop-eu"}, editor);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = kubectl({"rollout", "status", "acme/shop-eu", "--timeout", "60"}, editor);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("successfully rolled out"), std::string::npos) << r.out;
  EXPECT_EQ(greeting(), "moin");

  // Selectors and output forms.
  r = kubectl({"get", "template", "acme", "-l", "app=web", "-o", "name"}, editor);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "template/acme/web\n");
  r = kubectl({"get", "placement", "acme/shop-eu", "-o", "json"}, editor);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out)["spec"]["templates"], json({"web", "db"}));

  // The editor sees the sites granted to acme, and only those.
  r = kubectl({"sites"}, editor);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("berlin"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("austin"), std::string::npos) << r.out;

  // Exit codes: 1 for an error of the hub (the editor is no fleet admin, and
  // may not see another tenant), 2 for a usage error.
  r = kubectl({"tenants"}, editor);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("PERMISSION_DENIED"), std::string::npos) << r.out;
  r = kubectl({"get", "template", "globex"}, editor);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  r = kubectl({"get"}, editor);
  EXPECT_EQ(r.exit_code, 2) << r.out;
  r = kubectl({"tokens", "issue", "--role", "king"}, token_);
  EXPECT_EQ(r.exit_code, 2) << r.out;

  // Render: what berlin applies, computed at the hub by the same renderer.
  r = kubectl({"render", "acme/shop-eu", "--site", "berlin"}, editor);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("kind: ConfigMap"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("canopy.io/hash:"), std::string::npos) << r.out;
  r = kubectl({"render", "acme/shop-eu", "--site", "berlin", "-o", "json"}, editor);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json rendered = json::parse(r.out);
  ASSERT_EQ(rendered["items"].size(), 2u) << r.out;
  // The hash the hub renders is the one berlin applied.
  std::set<std::string> hub_hashes, site_hashes;
  for (const auto& item : rendered["items"]) {
    hub_hashes.insert(item["metadata"]["annotations"]["canopy.io/hash"].get<std::string>());
  }
  for (const auto& [file, manifest] : berlin.read()) site_hashes.insert(manifest.hash());
  EXPECT_EQ(hub_hashes, site_hashes);
  // austin is not acme's: its editor learns nothing of it.
  r = kubectl({"render", "acme/shop-eu", "--site", "austin"}, editor);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("NOT_FOUND"), std::string::npos) << r.out;
  r = kubectl({"conflicts", "acme"}, editor);
  EXPECT_EQ(r.exit_code, 0) << r.out;

  // berlin goes silent: after away_after_s its row says offline, with what it
  // last reported and how long ago it was heard, never a stale "applied".
  kill_spoke(berlin);
  ASSERT_TRUE(wait_until(
      [&] {
        CliRun s = kubectl({"status", "acme/shop-eu", "-o", "json"}, editor);
        const json j = json::parse(s.out, nullptr, false);
        return s.exit_code == 0 && j.is_object() && j.value("offline", 0) == 1;
      },
      30s, 500ms))
      << kubectl({"status", "acme/shop-eu"}, editor).out;
  r = kubectl({"status", "acme/shop-eu"}, editor);
  EXPECT_NE(r.out.find("0 applied, 0 progressing, 0 failed, 0 pending, 1 offline"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("offline (last applied)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("s ago"), std::string::npos) << r.out;
  launch_spoke(berlin);

  // Revoked: refused from then on.
  r = kubectl({"tokens", "--tenant", "acme", "-o", "name"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string id = r.out.substr(r.out.find('/') + 1, 16);
  r = kubectl({"tokens", "revoke", id}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = kubectl({"get", "template", "acme"}, editor);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("UNAUTHENTICATED"), std::string::npos) << r.out;

  // Labels: the hub's site record is the source of truth. austin moves to
  // eu, where acme's grant and placement both reach it.
  r = kubectl({"label", "site", "austin", "region=eu"}, token_);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--overwrite"), std::string::npos) << r.out;
  r = kubectl({"label", "site", "austin", "region=eu", "tier=edge", "--overwrite"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("site/austin labeled"), std::string::npos) << r.out;
  EXPECT_TRUE(wait_until([&] { return austin.read().size() == 2; }, kTimeout, kPoll))
      << "a relabelled site did not get its placement";
  r = kubectl({"label", "site", "austin", "tier-"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = kubectl({"sites", "-o", "json"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(R"("region": "eu")"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("tier"), std::string::npos) << r.out;
  r = kubectl({"grants", "acme"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("eu"), std::string::npos) << r.out;

  // Settings file: hub and token file from ~/.config/canopy/config.yaml when
  // neither a flag nor the environment gives them.
  std::filesystem::create_directories(dir_.file(".config/canopy"));
  std::ofstream(dir_.file("admin.token")) << token_ << "\n";
  std::ofstream(dir_.file(".config/canopy/config.yaml"))
      << "hub: 127.0.0.1:" << hub_->grpc_port << "\ntokenFile: " << dir_.file("admin.token")
      << "\ntimeout: 10\n";
  const std::vector<std::pair<std::string, std::string>> no_env = {{"CANOPY_HUB", ""},
                                                                   {"CANOPY_TOKEN", ""}};
  r = kubectl({"sites", "-o", "name"}, "", "", no_env);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("site/berlin"), std::string::npos) << r.out;
  std::ofstream(dir_.file(".config/canopy/config.yaml")) << "hubb: x\n";
  r = kubectl({"sites"}, "", "", no_env);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("unknown setting \"hubb\""), std::string::npos) << r.out;
  std::filesystem::remove(dir_.file(".config/canopy/config.yaml"));

  // Delete: the sites remove what they had.
  r = kubectl({"delete", "placement", "acme/shop-eu"}, token_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(wait_until([&] { return berlin.read().empty(); }, kTimeout, kPoll));
  EXPECT_TRUE(wait_until([&] { return austin.read().empty(); }, kTimeout, kPoll));
}

}  // namespace
}  // namespace canopy::e2e
