// The spoke's manifests directory as an operator meets it (issue 12), with
// real nats-server, canopy-hub and canopy-spoke processes: missing at start
// (a wiped or freshly mounted disk, k3s not installed yet), and files of ours
// deleted or edited by hand, or the whole directory deleted, while it runs.
#include "tests/e2e/e2e_fixture.h"

namespace canopy::e2e {
namespace {

using SpokeE2ETest = E2ETest;

// Much shorter than the spoke's full resync (30 s by default): a repair this
// fast came from watching the directory, not from the periodic pass.
constexpr auto kRepair = std::chrono::milliseconds(5000);

TEST_F(SpokeE2ETest, ManifestsDirectoryMissingAtStartIsCreatedAndHandEditsAreRepaired) {
  create_hub();
  ASSERT_NO_FATAL_FAILURE(launch_hub());
  Spoke& shop = create_spoke("shop-1", {{"region", "eu-west"}});
  fs::remove_all(shop.manifests());
  ASSERT_NO_FATAL_FAILURE(launch_spoke(shop));
  EXPECT_TRUE(fs::is_directory(shop.manifests()));
  EXPECT_NE(read_file(shop.log_path()).find("was missing: created it"), std::string::npos)
      << "the spoke did not say it created the directory";

  ASSERT_TRUE(put("template", "web", deployment("web", 2, "nginx:1.27")).ok());
  ASSERT_TRUE(put("template", "db", deployment("db", 1, "postgres:16")).ok());
  ASSERT_TRUE(put("placement", "shop", placement_by_region({"web", "db"}, "eu-west")).ok());
  ASSERT_TRUE(wait_until([&] { return shop.read().size() == 2; }, kTimeout, kPoll));
  const std::map<std::string, Manifest> want = shop.read();
  const std::string web = shop.manifests() + "/" + want.at(template_key("web")).file;
  const std::string db = shop.manifests() + "/" + want.at(template_key("db")).file;
  const std::string web_bytes = read_file(web);

  auto restored = [&] {
    auto now = shop.read();
    if (now.size() != want.size()) return false;
    for (const auto& [k, m] : want) {
      if (!now.contains(k) || now.at(k).object != m.object) return false;
    }
    return true;
  };

  // Deleted by hand.
  fs::remove(web);
  EXPECT_TRUE(wait_until(restored, kRepair, kPoll)) << "a deleted manifest was not restored";
  EXPECT_EQ(read_file(web), web_bytes);

  // Edited by hand (someone scaled the deployment in the file).
  json edited = json::parse(read_file(db));
  edited["spec"]["replicas"] = 7;
  std::ofstream(db, std::ios::trunc) << edited.dump();
  EXPECT_TRUE(wait_until(restored, kRepair, kPoll)) << "an edited manifest was not repaired";

  // A file that is not ours is left alone.
  std::ofstream(shop.manifests() + "/traefik.yaml") << "kind: HelmChart\n";

  // The whole directory deleted: created again, every manifest written again.
  // The spoke may be repairing while we delete (rm -rf can meet the same
  // race): retry until the removal goes through once.
  std::error_code ec;
  for (int i = 0; i < 100; ++i) {
    fs::remove_all(shop.manifests(), ec);
    if (!ec) break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(wait_until(restored, kRepair, kPoll)) << "a deleted directory was not restored";
  EXPECT_TRUE(shop.proc.running());
  auto health = spoke_health(shop);
  ASSERT_TRUE(health);
  EXPECT_EQ(health->value("failed", -1), 0);
}

}  // namespace
}  // namespace canopy::e2e
