// SimCatalog: the documents the simulated federation writes, in the real key
// layout (docs/keys.md, model/keys.h), drawn from a seeded generator:
//   - at the root: site records `sites/<site>` with random labels (edited,
//     patched, now and then deleted or refused by the model), templates,
//     placements (matchLabels, matchExpressions with every operator, site
//     lists, combinations), hub overrides and tenants' grants (which reach
//     the regional hub, whose own index places only on granted sites) —
//     scopes change because these do, as in production;
//   - at a site: its status and local overrides, under `sites/<site>/`;
//   - at a regional hub: status of its members for tenant `beta` (a writer
//     between the root and the sites);
//   - concurrently at the root and a site: one status key per site.
// A small share of documents is invalid on purpose (a refused selector, a
// manifest with a bad name, an override without a patch): the index must fail
// closed and the renderer report it, the same way at the root and the site.
// Every key has one writer, except the concurrent one (multi_writer).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace canopy::sim {

struct SimWrite {
  enum class Op { kPut, kPatch, kRemove };
  std::string key;
  Op op = Op::kPut;
  nlohmann::json doc;  // the document (kPut) or the merge patch (kPatch)
};

class SimCatalog {
 public:
  // `sites`: the leaf sites; `region_members`: the sites below the regional
  // hub `region` at the start (empty: records name no region).
  SimCatalog(std::mt19937_64* rng, std::vector<std::string> sites, const std::string& region,
             const std::vector<std::string>& region_members);

  // A site record with random labels, as the API would write it, naming the
  // site's regional hub when it has one.
  SimWrite site_record(const std::string& site);
  // `site`'s record with new labels, naming regional hub `region` (empty:
  // none, the site syncs with the root): a move, as the API makes it.
  SimWrite move(const std::string& site, const std::string& region);
  // A placement listing some templates, as the API would write it.
  SimWrite placement();
  // A tenant's grant `t/<tenant>/grants/<g>`: every site, or by names and/or
  // a selector; now and then refused or removed.
  SimWrite grant_write();
  // The grant every tenant starts with: all sites (`g0`, never edited).
  SimWrite initial_grant(const std::string& tenant);
  const std::vector<std::string>& tenants() const;
  // Desired state written at the root: any of the above, a template or an
  // override, put, patched or removed.
  SimWrite root_write();
  // A label or selector edit at the root (what moves scopes).
  SimWrite scope_edit();
  // Written at `site` under its own subtree: status or a local override.
  SimWrite site_write(const std::string& site);
  // Written at the regional hub: status of `member`, a site it serves, for
  // tenant beta.
  SimWrite region_write(const std::string& member);
  // A status key both the root and `site` write.
  SimWrite shared_write(const std::string& site);

 private:
  uint64_t pick(uint64_t n) { return (*rng_)() % n; }
  const std::string& pick(const std::vector<std::string>& v) { return v[pick(v.size())]; }
  SimWrite::Op op(int put, int patch);  // weights; the rest removes
  nlohmann::json labels();
  nlohmann::json selector();
  nlohmann::json site_list();
  nlohmann::json manifest(const std::string& name);
  SimWrite template_write();
  SimWrite placement_write();
  SimWrite override_write();
  SimWrite site_record_write();

  std::mt19937_64* rng_;
  std::vector<std::string> sites_;
  std::map<std::string, std::string> region_of_;  // what the records the generator wrote say
};

}  // namespace canopy::sim
