// Store benchmarks: store.merge, store.ingest, store.reference, store.space,
// store.housekeeping.
//
// The workload (bench/workload.h): Deployment-, ConfigMap- and Service-like
// documents of 1-10 KB; 70% field updates, 20% new documents, 10% removals.
// A sender replica turns it into deltas exactly as Store does for local
// writes (diff against its state, stamp, dot); the figures measure what a
// receiving replica does with those encoded deltas.
//
//   canopy_store_bench --case merge|ingest|reference|space [--changes N]
//   canopy_store_bench --case housekeeping [--docs N]
//
// store.housekeeping: what a daemon's minute-by-minute tombstone collection
// costs in a store of N site-record-like documents (default 100,000, a
// root's sites): the first pass after opening reads every document (what
// every pass did before 2026-12-08), later passes only what was written
// since or still holds a tombstone; here 100 documents patched, 50 of them
// deleting a label. A writer puts one document after another through the
// first pass: its longest wait shows the pass letting writers in between
// its chunks (before 2026-12-08 it held the store's lock throughout). No
// target: the figures show the cost following the writes, not the store's
// size.
//
// Each figure is one JSON line on stdout; progress goes to stderr.
#include <google/protobuf/arena.h>
#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bench/report.h"
#include "store/decode_scratch.h"
#include "store/document.h"
#include "store/store.h"
#include "store/version_vector.h"
#include "workload.h"

namespace canopy::bench {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void emit(const std::string& bench, const std::string& metric, double value,
          const std::string& target = "") {
  emit_figure(bench, metric, value, target);
}

// The sender: applies the workload like a replica's local writes and keeps
// the encoded deltas.
// With `docs_after`, also the document each change leaves behind (canonical
// JSON; empty for a removal): what a plain key-value store would write.
std::vector<std::string> make_deltas(
    const std::vector<Change>& changes,
    std::vector<std::pair<std::string, std::string>>* docs_after = nullptr) {
  std::unordered_map<std::string, Document> docs;
  std::vector<std::string> out;
  out.reserve(changes.size());
  uint64_t seq = 0;
  uint64_t hlc = uint64_t{1'700'000'000'000} << 16;
  for (const Change& c : changes) {
    Document& d = docs[c.key];
    v1::Delta delta;
    delta.set_key(c.key);
    if (c.kind == Change::kRemove) {
      delta.add_ops()->set_kind(v1::FieldOp::REMOVE);
    } else {
      json target =
          c.kind == Change::kCreate
              ? json::parse(c.json)
              : apply_merge_patch(d.exists() ? d.to_value() : json::object(), json::parse(c.json));
      std::vector<v1::FieldOp> ops;
      d.diff(target, &ops);
      for (auto& op : ops) *delta.add_ops() = std::move(op);
    }
    if (delta.ops_size() == 0) continue;
    hlc = std::max(hlc + 1, d.max_hlc() + 1);
    delta.mutable_dot()->set_replica(0xA11CE);
    delta.mutable_dot()->set_seq(++seq);
    delta.set_hlc(hlc);
    d.apply(delta, nullptr);
    out.push_back(delta.SerializeAsString());
    if (docs_after != nullptr) docs_after->emplace_back(c.key, d.to_json());
  }
  return out;
}

std::vector<Change> workload(size_t changes) {
  WorkloadOptions o;
  o.seed = 1;
  o.initial_docs = 1000;
  o.changes = changes;
  return generate_workload(o);
}

struct Rates {
  double decode = 0;
  double merge = 0;
};

// Decoding alone (the floor), and decode + validate + duplicate check + merge
// into the receiver's documents, single-threaded, best of `reps`. Both decode
// the way the sync layer does: into a protobuf arena, released a message
// (here: kArenaBatch deltas) at a time.
constexpr size_t kArenaBatch = 256;

Rates measure_merge(const std::vector<std::string>& deltas, int reps) {
  Rates r;
  // The arena's first block is a DecodeScratch, as in the sync engines.
  DecodeScratch scratch;
  google::protobuf::Arena arena(scratch.arena_options());
  for (int rep = 0; rep < reps; ++rep) {
    auto t0 = Clock::now();
    size_t ops = 0;
    for (size_t i = 0; i < deltas.size(); ++i) {
      if (i % kArenaBatch == 0) arena.Reset();
      auto* d = google::protobuf::Arena::CreateMessage<v1::Delta>(&arena);
      if (!d->ParseFromString(deltas[i])) std::abort();
      ops += static_cast<size_t>(d->ops_size());
    }
    const double dt = seconds_since(t0);
    if (ops == 0) std::abort();
    r.decode = std::max(r.decode, deltas.size() / dt);

    std::unordered_map<std::string, Document> docs;
    VersionVector vv;
    DocumentLimits limits;
    std::vector<Overwrite> overwrites;
    t0 = Clock::now();
    for (size_t i = 0; i < deltas.size(); ++i) {
      if (i % kArenaBatch == 0) arena.Reset();
      auto* d = google::protobuf::Arena::CreateMessage<v1::Delta>(&arena);
      if (!d->ParseFromString(deltas[i])) std::abort();
      if (!validate_delta(*d, limits).ok()) std::abort();
      if (!vv.add(d->dot().replica(), d->dot().seq())) continue;
      overwrites.clear();
      docs[d->key()].apply(*d, &overwrites);
    }
    r.merge = std::max(r.merge, deltas.size() / seconds_since(t0));
  }
  return r;
}

uint64_t dir_bytes(const std::string& dir) {
  uint64_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) n += e.file_size();
  }
  return n;
}

std::string temp_dir(const char* name) {
  std::string base =
      std::filesystem::temp_directory_path() / ("canopy-bench-" + std::string(name) + "-XXXXXX");
  std::vector<char> buf(base.begin(), base.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) std::abort();
  return buf.data();
}

int case_merge(size_t n, int reps) {
  auto deltas = make_deltas(workload(n));
  std::fprintf(stderr, "store.merge: %zu deltas\n", deltas.size());
  Rates r = measure_merge(deltas, reps);
  emit("store.merge", "decode_deltas_per_s", r.decode);
  emit("store.merge", "merge_deltas_per_s", r.merge);
  emit("store.merge", "merge_vs_decode", r.merge / r.decode, ">=0.3");
  return 0;
}

int case_ingest(size_t n, int reps) {
  auto changes = workload(n);
  std::vector<std::pair<std::string, std::string>> docs_after;
  auto deltas = make_deltas(changes, &docs_after);
  constexpr size_t kBatch = 64;
  std::fprintf(stderr, "store.ingest: %zu deltas in batches of %zu, group commit, best of %d\n",
               deltas.size(), kBatch, reps);
  double plain_rate = 0;
  double canopy_rate = 0;
  double subscribed_rate = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const std::string dir = temp_dir("ingest");
    // Plain RocksDB: the same changes as a plain document store persists them
    // (the new document under its key, or a delete), in the same batches,
    // with the same write options: no sync in the write, one WAL sync a batch.
    {
      rocksdb::Options o;
      o.create_if_missing = true;
      rocksdb::DB* db = nullptr;
      if (!rocksdb::DB::Open(o, dir + "/plain", &db).ok()) return 1;
      auto t0 = Clock::now();
      for (size_t i = 0; i < docs_after.size(); i += kBatch) {
        rocksdb::WriteBatch b;
        for (size_t j = i; j < std::min(docs_after.size(), i + kBatch); ++j) {
          const auto& [key, doc] = docs_after[j];
          if (doc.empty()) {
            b.Delete(key).PermitUncheckedError();
          } else {
            b.Put(key, doc).PermitUncheckedError();
          }
        }
        if (!db->Write(rocksdb::WriteOptions(), &b).ok() || !db->SyncWAL().ok()) return 1;
      }
      plain_rate = std::max(plain_rate, docs_after.size() / seconds_since(t0));
      delete db;
    }
    // Canopy: the encoded deltas through apply_remote, a batch at a time, with
    // group commit: document state change, log entry and version vector in
    // one write batch, one WAL sync a batch. Once as a bare store, once with a
    // subscriber (as sync subscribes in the daemons): the store then hands a
    // copy of every committed entry over.
    for (const bool subscribed : {false, true}) {
      StoreOptions o;
      o.path = dir + (subscribed ? "/canopy-subscribed" : "/canopy");
      o.durability = Durability::kGroupCommit;
      auto store = Store::open(o);
      if (!store.ok()) return 1;
      size_t seen = 0;
      if (subscribed) (*store)->subscribe([&seen](const v1::LogEntry&) { ++seen; });
      auto t0 = Clock::now();
      DecodeScratch scratch;
      google::protobuf::Arena arena(scratch.arena_options());
      std::vector<const v1::Delta*> batch;
      for (size_t i = 0; i < deltas.size(); i += kBatch) {
        // Decoded as sync decodes a received message: into an arena.
        arena.Reset();
        batch.clear();
        for (size_t j = i; j < std::min(deltas.size(), i + kBatch); ++j) {
          auto* d = google::protobuf::Arena::CreateMessage<v1::Delta>(&arena);
          if (!d->ParseFromString(deltas[j])) return 1;
          batch.push_back(d);
        }
        auto r = (*store)->apply_remote(batch, 0xB0B);
        if (!r.ok()) {
          std::fprintf(stderr, "%s\n", r.status().to_string().c_str());
          return 1;
        }
      }
      const double rate = deltas.size() / seconds_since(t0);
      if (subscribed) {
        if (seen != deltas.size()) return 1;
        subscribed_rate = std::max(subscribed_rate, rate);
      } else {
        canopy_rate = std::max(canopy_rate, rate);
      }
    }
    std::filesystem::remove_all(dir);
  }
  emit("store.ingest", "canopy_deltas_per_s", canopy_rate);
  emit("store.ingest", "rocksdb_puts_per_s", plain_rate);
  emit("store.ingest", "ratio_vs_rocksdb", canopy_rate / plain_rate, ">=0.5");
  emit("store.ingest", "canopy_subscribed_deltas_per_s", subscribed_rate);
  emit("store.ingest", "subscribed_ratio_vs_rocksdb", subscribed_rate / plain_rate);
  return 0;
}

int case_reference(size_t n) {
  auto changes = workload(n);
  const std::string dir = temp_dir("reference");
  const std::string file = dir + "/workload.jsonl";
  std::string err;
  if (!write_workload(file, changes, &err)) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  auto deltas = make_deltas(changes);
  const double canopy = measure_merge(deltas, 3).merge;
  // Automerge and Yjs apply the same change set, in one script beside us.
  const std::string cmd = "bash " CANOPY_SOURCE_DIR "/bench/reference/run.sh " + file;
  std::fprintf(stderr, "store.reference: %s\n", cmd.c_str());
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return 1;
  std::map<std::string, double> rates;
  char line[4096];
  while (std::fgets(line, sizeof line, p) != nullptr) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("metric")) rates[j["metric"]] = j["value"].get<double>();
  }
  const int rc = pclose(p);
  std::filesystem::remove_all(dir);
  if (rc != 0 || !rates.count("yjs_changes_per_s") || !rates.count("automerge_changes_per_s")) {
    std::fprintf(stderr, "store.reference: the reference script failed (rc %d)\n", rc);
    return 1;
  }
  emit("store.reference", "canopy_changes_per_s", canopy);
  emit("store.reference", "yjs_changes_per_s", rates["yjs_changes_per_s"]);
  emit("store.reference", "automerge_changes_per_s", rates["automerge_changes_per_s"]);
  emit("store.reference", "ratio_vs_yjs", canopy / rates["yjs_changes_per_s"], ">=10");
  emit("store.reference", "ratio_vs_automerge", canopy / rates["automerge_changes_per_s"]);
  return 0;
}

int case_space(size_t n) {
  auto changes = workload(n);
  const std::string dir = temp_dir("space");
  StoreOptions o;
  o.path = dir + "/canopy";
  o.durability = Durability::kNone;
  uint64_t json_bytes = 0;
  size_t docs = 0;
  {
    auto store = Store::open(o);
    if (!store.ok()) return 1;
    Store& s = **store;
    for (const Change& c : changes) {
      StatusOr<v1::Delta> r = Status(StatusCode::kUnknown, "");
      if (c.kind == Change::kCreate) {
        r = s.put(c.key, c.json);
      } else if (c.kind == Change::kPatch) {
        r = s.patch(c.key, c.json);
      } else {
        r = s.remove(c.key);
      }
      if (!r.ok() && r.status().code() != StatusCode::kNotFound) return 1;
    }
    // Housekeeping as a hub does once the retention window has passed: the
    // log is trimmed and stable tombstones are collected.
    if (!s.trim_log(s.last_log_index()).ok()) return 1;
    if (!s.collect_tombstones(~uint64_t{0}).ok()) return 1;
    std::string after;
    for (;;) {
      auto page = s.scan("", after, 1000);
      if (!page.ok()) return 1;
      for (const auto& item : page->items) {
        json_bytes += item.json.size();
        ++docs;
      }
      if (page->next_after.empty()) break;
      after = page->next_after;
    }
    if (!s.compact().ok()) return 1;
  }
  const uint64_t disk = dir_bytes(o.path);
  std::filesystem::remove_all(dir);
  std::fprintf(stderr, "store.space: %zu documents, %llu bytes of JSON, %llu bytes on disk\n", docs,
               static_cast<unsigned long long>(json_bytes), static_cast<unsigned long long>(disk));
  emit("store.space", "disk_bytes_per_doc", static_cast<double>(disk) / docs);
  emit("store.space", "json_bytes_per_doc", static_cast<double>(json_bytes) / docs);
  emit("store.space", "disk_vs_json", static_cast<double>(disk) / json_bytes, "<=1.5");
  return 0;
}

int case_housekeeping(size_t n) {
  const std::string dir = temp_dir("housekeeping");
  StoreOptions o;
  o.path = dir + "/canopy";
  o.durability = Durability::kGroupCommit;
  int rc = 1;
  {
    auto opened = Store::open(o);
    if (!opened.ok()) return 1;
    Store& s = **opened;
    auto key = [](size_t i) { return "sites/site-" + std::to_string(i) + "/record"; };
    for (size_t i = 0; i < n; ++i) {
      const std::string doc = R"({"name":"site-)" + std::to_string(i) + R"(","region":"region-)" +
                              std::to_string(i % 100) + R"(","labels":{"tier":"edge","rack":"r)" +
                              std::to_string(i % 7) + R"("}})";
      if (!s.put(key(i), doc).ok()) return 1;
    }
    std::fprintf(stderr, "store.housekeeping: %zu documents written\n", n);
    // Stable: everything written so far (a daemon's retention has passed).
    auto pass = [&s](const char* what, double* ms, uint64_t* read) {
      const uint64_t before = s.stats().tombstone_documents_read;
      const auto t0 = Clock::now();
      auto dropped = s.collect_tombstones(~uint64_t{0});
      *ms = seconds_since(t0) * 1000;
      *read = s.stats().tombstone_documents_read - before;
      std::fprintf(stderr, "store.housekeeping: %s: %.1f ms, %llu documents read, %zu dropped\n",
                   what, *ms, static_cast<unsigned long long>(*read),
                   dropped.ok() ? *dropped : size_t{0});
      return dropped.ok();
    };
    double first_ms = 0, later_ms = 0, idle_ms = 0;
    uint64_t first_read = 0, later_read = 0, idle_read = 0;
    // A writer runs through the first pass, as the hub's API and sync do:
    // how long its longest write waited (the pass lets writers in between
    // its chunks, StoreOptions::tombstone_chunk_docs).
    std::atomic<bool> passing{true};
    double longest_write_ms = 0;
    uint64_t writes_during = 0;
    std::thread writer([&] {
      for (uint64_t i = 0; passing.load(); ++i) {
        const auto t0 = Clock::now();
        if (!s.put("status/writer", R"({"n":)" + std::to_string(i) + "}").ok()) return;
        longest_write_ms = std::max(longest_write_ms, seconds_since(t0) * 1000);
        ++writes_during;
      }
    });
    const bool first_ok = pass("first pass", &first_ms, &first_read);
    passing = false;
    writer.join();
    if (!first_ok) return 1;
    std::fprintf(stderr, "store.housekeeping: %llu writes during the first pass, longest %.1f ms\n",
                 static_cast<unsigned long long>(writes_during), longest_write_ms);
    for (size_t i = 0; i < 100; ++i) {
      const std::string patch =
          i % 2 == 0 ? R"({"labels":{"rack":null}})" : R"({"labels":{"tier":"core"}})";
      if (!s.patch(key(i * (n / 100)), patch).ok()) return 1;
    }
    if (!pass("after 100 writes", &later_ms, &later_read)) return 1;
    if (!pass("after none", &idle_ms, &idle_read)) return 1;
    const std::string sfx = "_d" + std::to_string(n);
    emit("store.housekeeping", "first_pass_ms" + sfx, std::round(first_ms * 10) / 10);
    emit("store.housekeeping", "first_pass_documents_read" + sfx, static_cast<double>(first_read));
    emit("store.housekeeping", "longest_write_ms_during_first_pass" + sfx,
         std::round(longest_write_ms * 10) / 10);
    emit("store.housekeeping", "pass_ms_after_100_writes" + sfx, std::round(later_ms * 100) / 100);
    emit("store.housekeeping", "documents_read_after_100_writes" + sfx,
         static_cast<double>(later_read));
    emit("store.housekeeping", "pass_ms_after_no_write" + sfx, std::round(idle_ms * 100) / 100);
    rc = 0;
  }
  std::filesystem::remove_all(dir);
  return rc;
}

}  // namespace
}  // namespace canopy::bench

int main(int argc, char** argv) {
  std::string which;
  size_t n = 20000;
  int reps = 5;
  size_t docs = 100000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--case" && i + 1 < argc) {
      which = argv[++i];
    } else if (a == "--changes" && i + 1 < argc) {
      n = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--docs" && i + 1 < argc) {
      docs = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr,
                   "usage: canopy_store_bench --case merge|ingest|reference|space [--changes N] "
                   "[--reps R]\n       canopy_store_bench --case housekeeping [--docs N]\n");
      return 2;
    }
  }
  using namespace canopy::bench;
  if (which == "merge") return case_merge(n, reps);
  if (which == "ingest") return case_ingest(n, reps);
  if (which == "reference") return case_reference(n);
  if (which == "space") return case_space(n);
  if (which == "housekeeping") return case_housekeeping(docs);
  std::fprintf(stderr, "unknown case \"%s\"\n", which.c_str());
  return 2;
}
