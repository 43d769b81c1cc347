#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "model/render.h"
#include "spoke/manifests_dir_applier.h"
#include "tests/support/temp_dir.h"

namespace canopy::spoke {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

model::RenderedObject rendered(const std::string& tenant, const std::string& name,
                               int replicas = 1) {
  model::DesiredState d;
  d.templates[model::template_key(tenant, name)] = {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", {{"name", name}, {"namespace", "shop"}}},
      {"spec", {{"replicas", replicas}}}};
  model::ObjectPlan plan{model::template_key(tenant, name), tenant, name, {}, ""};
  auto r = model::render_object(plan, d);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct FileStat {
  ino_t ino = 0;
  int64_t mtime_ns = 0;
};

FileStat stat_of(const fs::path& p) {
  struct stat st;
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return {st.st_ino, static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

// Names in `dir`, sorted.
std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Pushes the file's mtime into the past, so a rewrite cannot hide within the
// file system's timestamp granularity.
void age(const fs::path& p) {
  fs::last_write_time(p, fs::last_write_time(p) - std::chrono::hours(1));
}

class ManifestsDirTest : public ::testing::Test {
 protected:
  std::unique_ptr<ManifestsDirApplier> open(bool tombstones = true) {
    ManifestsDirOptions o;
    o.dir = dir_.path().string();
    o.tombstones = tombstones;
    o.tombstone_retention_ms = 60'000;
    o.clock = &clock_;
    auto a = ManifestsDirApplier::open(o);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    return a.ok() ? std::move(a).value() : nullptr;
  }
  fs::path file(const std::string& name) const { return dir_.path() / name; }

  canopy::testing::TempDir dir_;
  ManualClock clock_;
};

// A spoke started on a wiped or freshly mounted disk, before k3s ever ran:
// the directory and its parents are created (k3s deploys what it finds there
// when it starts).
TEST(ManifestsDirOpen, CreatesAMissingDirectory) {
  canopy::testing::TempDir dir;
  ManifestsDirOptions o;
  o.dir = dir.file("var/lib/rancher/k3s/server/manifests");
  auto a = ManifestsDirApplier::open(o);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  ASSERT_TRUE(fs::is_directory(o.dir));
  // Manifests may hold Secrets: only the owner reads them.
  EXPECT_EQ(fs::status(o.dir).permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_TRUE((*a)->inventory().ok());

  // Under a plain file it cannot be created: a clear error naming the path.
  std::ofstream(dir.file("file")) << "x";
  o.dir = dir.file("file/manifests");
  a = ManifestsDirApplier::open(o);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(a.status().message().find(o.dir), std::string::npos) << a.status().message();
}

TEST(ManifestsDirOpen, MissingOrUnusableDirectory) {
  canopy::testing::TempDir dir;
  ManifestsDirOptions o;
  o.dir = dir.file("nope");
  o.create_missing = false;
  auto a = ManifestsDirApplier::open(o);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(a.status().message().find(o.dir), std::string::npos) << a.status().message();

  std::ofstream(dir.file("plain")) << "x";
  o.dir = dir.file("plain");
  a = ManifestsDirApplier::open(o);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(a.status().message().find("is not a directory"), std::string::npos);

  if (::geteuid() != 0) {  // root writes anywhere
    fs::create_directory(dir.file("ro"));
    fs::permissions(dir.file("ro"), fs::perms::owner_read | fs::perms::owner_exec);
    o.dir = dir.file("ro");
    a = ManifestsDirApplier::open(o);
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(a.status().message().find("not writable"), std::string::npos);
    fs::permissions(dir.file("ro"), fs::perms::owner_all);
  }
}

TEST_F(ManifestsDirTest, WritesOneParsableFilePerObjectAtomically) {
  auto a = open();
  model::RenderedObject web = rendered("acme", "web");
  auto r = a->apply(web);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(r->message, "manifest " + file(web.file_name).string());
  EXPECT_EQ(a->id_of(web), "canopy-4-acme-web.json");

  // Exactly the target file: no temporary file, dotted or not, is left.
  EXPECT_EQ(listing(dir_.path()), std::vector<std::string>{"canopy-4-acme-web.json"});
  json on_disk = json::parse(read_file(file(web.file_name)));
  EXPECT_EQ(on_disk, web.object);
  EXPECT_EQ(read_file(file(web.file_name)), ManifestsDirApplier::file_content(web));
  // Manifests may hold secrets.
  EXPECT_EQ(fs::status(file(web.file_name)).permissions() & fs::perms::others_read,
            fs::perms::none);
}

TEST_F(ManifestsDirTest, IdenticalContentIsNotRewritten) {
  auto a = open();
  model::RenderedObject web = rendered("acme", "web");
  ASSERT_TRUE(a->apply(web).ok());
  age(file(web.file_name));
  FileStat before = stat_of(file(web.file_name));

  auto r = a->apply(web);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
  FileStat after = stat_of(file(web.file_name));
  EXPECT_EQ(after.ino, before.ino);
  EXPECT_EQ(after.mtime_ns, before.mtime_ns);

  // A restarted applier learns the hashes from the files: still no write.
  a.reset();
  a = open();
  r = a->apply(web);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
  after = stat_of(file(web.file_name));
  EXPECT_EQ(after.ino, before.ino);
  EXPECT_EQ(after.mtime_ns, before.mtime_ns);

  // A changed object is written.
  model::RenderedObject web3 = rendered("acme", "web", 3);
  r = a->apply(web3);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(json::parse(read_file(file(web.file_name))), web3.object);
  EXPECT_NE(stat_of(file(web.file_name)).mtime_ns, before.mtime_ns);
}

TEST_F(ManifestsDirTest, RepairsFilesChangedOrDeletedBehindItsBack) {
  auto a = open();
  model::RenderedObject web = rendered("acme", "web");
  ASSERT_TRUE(a->apply(web).ok());

  std::ofstream(file(web.file_name), std::ios::trunc) << "{\"kind\": \"edited by hand\"}";
  auto r = a->apply(web);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(json::parse(read_file(file(web.file_name))), web.object);

  fs::remove(file(web.file_name));
  r = a->apply(web);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->changed);
  EXPECT_TRUE(fs::exists(file(web.file_name)));

  // A file whose hash annotation does not match its content (edited while
  // the spoke was down) is rewritten after a restart.
  a.reset();
  json edited = web.object;
  edited["spec"]["replicas"] = 100;
  std::ofstream(file(web.file_name), std::ios::trunc) << edited.dump(2);
  a = open();
  r = a->apply(web);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(json::parse(read_file(file(web.file_name))), web.object);
}

TEST_F(ManifestsDirTest, InventoryListsOnlyCanopyFiles) {
  std::ofstream(file("traefik.yaml")) << "kind: x";
  std::ofstream(file("canopy-notes.txt")) << "x";
  std::ofstream(file(".canopy-tmp-123-1-canopy-4-acme-old.json")) << "{\"partial";
  std::ofstream(file(".canopy-tmp-9-2-x")) << "";
  auto a = open();
  EXPECT_EQ(a->stale_temp_files_removed(), 2u);
  EXPECT_FALSE(fs::exists(file(".canopy-tmp-9-2-x")));

  ASSERT_TRUE(a->apply(rendered("acme", "web")).ok());
  ASSERT_TRUE(a->apply(rendered("a-b", "c")).ok());
  ASSERT_TRUE(a->apply(rendered("a", "b-c")).ok());
  // A Canopy-named file dropped in by hand is Canopy's: it gets pruned.
  std::ofstream(file(model::manifest_file_name("zeta", "stray"))) << "{}";

  auto inv = a->inventory();
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(*inv, (std::vector<std::string>{"canopy-1-a-b-c.json", "canopy-3-a-b-c.json",
                                            "canopy-4-acme-web.json", "canopy-4-zeta-stray.json"}));
  EXPECT_TRUE(fs::exists(file("traefik.yaml")));
  EXPECT_TRUE(fs::exists(file("canopy-notes.txt")));
}

TEST_F(ManifestsDirTest, RemoveLeavesATombstoneThatK3sPrunesThenCollectsIt) {
  auto a = open();
  model::RenderedObject web = rendered("acme", "web");
  model::RenderedObject db = rendered("acme", "db");
  ASSERT_TRUE(a->apply(web).ok());
  ASSERT_TRUE(a->apply(db).ok());

  ASSERT_TRUE(a->remove(web.file_name).ok());
  // An empty List under the same name: k3s applies "no objects" for the Addon.
  json t = json::parse(read_file(file(web.file_name)));
  EXPECT_EQ(t["kind"], "List");
  EXPECT_EQ(t["apiVersion"], "v1");
  EXPECT_EQ(t["items"], json::array());
  auto inv = a->inventory();
  ASSERT_TRUE(inv.ok());
  EXPECT_EQ(*inv, std::vector<std::string>{db.file_name});
  // Removing again, or something never there, is fine.
  EXPECT_TRUE(a->remove(web.file_name).ok());
  EXPECT_TRUE(a->remove(model::manifest_file_name("acme", "never")).ok());
  EXPECT_FALSE(fs::exists(file(model::manifest_file_name("acme", "never"))));
  auto bad = a->remove("../etc/passwd");
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);

  // Tombstones survive a restart, and go once the retention has passed.
  a.reset();
  a = open();
  inv = a->inventory();
  EXPECT_EQ(*inv, std::vector<std::string>{db.file_name});
  clock_.advance_ms(30'000);
  ASSERT_TRUE(a->collect_garbage().ok());
  EXPECT_TRUE(fs::exists(file(web.file_name)));
  clock_.advance_ms(30'001);
  ASSERT_TRUE(a->collect_garbage().ok());
  EXPECT_FALSE(fs::exists(file(web.file_name)));
  EXPECT_TRUE(fs::exists(file(db.file_name)));

  // Applying over a tombstone brings the object back.
  ASSERT_TRUE(a->remove(db.file_name).ok());
  auto r = a->apply(db);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(json::parse(read_file(file(db.file_name))), db.object);
  EXPECT_EQ(*a->inventory(), std::vector<std::string>{db.file_name});
}

TEST_F(ManifestsDirTest, RemoveWithoutTombstonesDeletesTheFile) {
  auto a = open(/*tombstones=*/false);
  model::RenderedObject web = rendered("acme", "web");
  ASSERT_TRUE(a->apply(web).ok());
  ASSERT_TRUE(a->remove(web.file_name).ok());
  EXPECT_FALSE(fs::exists(file(web.file_name)));
  EXPECT_TRUE(a->inventory()->empty());
}

TEST_F(ManifestsDirTest, BatchWritesEveryFile) {
  auto a = open();
  std::vector<model::RenderedObject> objects;
  for (int i = 0; i < 300; ++i) objects.push_back(rendered("acme", "app-" + std::to_string(i)));
  std::vector<const model::RenderedObject*> ptrs;
  for (const auto& o : objects) ptrs.push_back(&o);
  auto results = a->apply_all(ptrs);
  ASSERT_EQ(results.size(), objects.size());
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_TRUE(r->changed);
  }
  auto names = listing(dir_.path());
  ASSERT_EQ(names.size(), objects.size());
  for (const auto& n : names) EXPECT_FALSE(n.starts_with(".")) << n;
  for (const auto& o : objects) {
    EXPECT_EQ(json::parse(read_file(file(o.file_name))), o.object);
  }
  results = a->apply_all(ptrs);
  for (const auto& r : results) EXPECT_FALSE(r->changed);
}

TEST_F(ManifestsDirTest, WriteFailureNamesThePathAndSparesTheRest) {
  auto a = open();
  model::RenderedObject web = rendered("acme", "web");
  model::RenderedObject db = rendered("acme", "db");
  // A directory where the file should go: the rename fails (also as root).
  fs::create_directory(file(web.file_name));
  auto results = a->apply_all({&web, &db});
  ASSERT_EQ(results.size(), 2u);
  ASSERT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(results[0].status().message().find(dir_.path().string()), std::string::npos)
      << results[0].status().message();
  EXPECT_NE(results[0].status().message().find(web.file_name), std::string::npos);
  ASSERT_TRUE(results[1].ok());
  EXPECT_TRUE(fs::exists(file(db.file_name)));
  for (const auto& n : listing(dir_.path())) EXPECT_FALSE(n.starts_with(".")) << n;

  fs::remove(file(web.file_name));
  auto r = a->apply(web);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->changed);
}

TEST_F(ManifestsDirTest, FollowsTheDirectoryWhenItIsReplaced) {
  auto a = open();
  model::RenderedObject web = rendered("acme", "web");
  ASSERT_TRUE(a->apply(web).ok());

  // Replaced (k3s reinstalled): the applier starts over in the new one.
  fs::remove_all(dir_.path());
  fs::create_directory(dir_.path());
  auto r = a->apply(web);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(json::parse(read_file(file(web.file_name))), web.object);
  EXPECT_EQ(*a->inventory(), std::vector<std::string>{web.file_name});

  // Deleted by hand: created again, and the object written again.
  fs::remove_all(dir_.path());
  r = a->apply(web);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->changed);
  EXPECT_EQ(json::parse(read_file(file(web.file_name))), web.object);
  EXPECT_EQ(*a->inventory(), std::vector<std::string>{web.file_name});
}

}  // namespace
}  // namespace canopy::spoke
