#include "api/daemon_metrics.h"

#include "daemon/process.h"

namespace canopy::api {

void add_build_info(MetricsText* page, const std::string& role, const std::string& name) {
  page->gauge("canopy_build_info", "Always 1: the daemon's role, node name and version.")
      .add(1, {{"role", role}, {"name", name}, {"version", daemon::version()}});
}

void add_nats_metrics(MetricsText* page, bool connected) {
  page->gauge("canopy_nats_connected", "1 while the connection to NATS is up.")
      .add(connected ? 1 : 0);
}

void add_store_metrics(MetricsText* page, Store* store) {
  const StoreDiskUsage u = store->disk_usage();
  page->gauge("canopy_store_live_data_bytes",
              "RocksDB's estimate of the store's live data (all column families).")
      .add(static_cast<double>(u.live_data_bytes));
  page->gauge("canopy_store_sst_bytes", "Size of the store's current SST files.")
      .add(static_cast<double>(u.sst_bytes));
  page->gauge("canopy_store_memtable_bytes", "Size of the store's memtables.")
      .add(static_cast<double>(u.memtable_bytes));
  page->gauge("canopy_store_log_index", "Index of the last entry of the store's change log.")
      .add(static_cast<double>(store->last_log_index()));
  page->gauge("canopy_store_writable",
              "0 while the disk refuses the store's writes (a full disk), else 1.")
      .add(store->write_health().ok() ? 1 : 0);
  const StoreCacheUsage c = store->cache_usage();
  page->gauge("canopy_store_cached_documents", "Decoded documents the store keeps in memory.")
      .add(static_cast<double>(c.documents));
  page->gauge("canopy_store_cached_document_bytes",
              "Memory those decoded documents hold (bounded by the cache's byte limit).")
      .add(static_cast<double>(c.bytes));
  page->counter("canopy_store_cache_clears",
                "Times the document cache was emptied for passing a bound.")
      .add(static_cast<double>(c.clears));
  const StoreStats s = store->stats();
  page->counter("canopy_store_write_failures",
                "Commits the disk refused (a full disk, an I/O error).")
      .add(static_cast<double>(s.write_failures));
  page->counter("canopy_store_conflicts", "Conflict records the store wrote (concurrent writes).")
      .add(static_cast<double>(s.conflicts));
  page->counter("canopy_store_refused_deltas", "Peers' deltas the store refused as malformed.")
      .add(static_cast<double>(s.refused_deltas));
  page->counter("canopy_store_skewed_deltas",
                "Peers' deltas whose writer's clock ran beyond the allowed skew.")
      .add(static_cast<double>(s.skewed_deltas));
}

void add_store_health(nlohmann::json* health, Store* store) {
  const Status st = store->write_health();
  (*health)["store_writable"] = st.ok();
  if (!st.ok()) (*health)["store_error"] = st.message();
}

void add_sync_node_metrics(MetricsText* page, const sync::NodeStats& s) {
  auto counter = [page](const char* name, const char* help, uint64_t value) {
    page->counter(name, help).add(static_cast<double>(value));
  };
  counter("canopy_sync_messages_received", "Sync messages received from NATS.",
          s.messages_received);
  counter("canopy_sync_received_bytes", "Bytes of the sync messages received.", s.bytes_received);
  counter("canopy_sync_messages_published", "Sync messages published to NATS.",
          s.messages_published);
  counter("canopy_sync_published_bytes", "Bytes of the sync messages published.",
          s.bytes_published);
  counter("canopy_sync_deltas_persisted", "Deltas received from peers and persisted.",
          s.deltas_persisted);
  counter("canopy_sync_documents_persisted",
          "Whole documents received from peers (reconciliation, scope entry) and persisted.",
          s.documents_persisted);
  counter("canopy_sync_dropped_messages",
          "Received messages dropped because the sync inbox was full.", s.dropped_messages);
  counter("canopy_sync_lost_commits",
          "Committed changes not queued for sync because its queue was full (the log is read "
          "instead).",
          s.lost_commits);
  counter("canopy_sync_lost_scope_changes",
          "Scope changes not queued because the queue was full (the sessions reconcile).",
          s.lost_scope_changes);
  counter("canopy_sync_dropped_connection_events",
          "NATS connection events dropped because their queue was full.",
          s.dropped_connection_events);
  counter("canopy_sync_persist_failures", "Sync steps whose writes to the store failed.",
          s.persist_failures);
  counter("canopy_sync_publish_failures", "Sync messages NATS did not take.", s.publish_failures);
}

void reply_metrics(httplib::Response& res, const MetricsText& page) {
  res.set_content(page.text(), kMetricsContentType);
}

void reply_live(httplib::Response& res) { res.set_content("live\n", "text/plain; charset=utf-8"); }

void reply_ready(httplib::Response& res, const std::vector<std::string>& problems) {
  if (problems.empty()) {
    res.set_content("ready\n", "text/plain; charset=utf-8");
    return;
  }
  std::string body = "not ready: ";
  for (size_t i = 0; i < problems.size(); ++i) {
    if (i > 0) body += "; ";
    body += problems[i];
  }
  res.status = 503;
  res.set_content(body + "\n", "text/plain; charset=utf-8");
}

}  // namespace canopy::api
