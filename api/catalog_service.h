// CatalogService: the gRPC `Catalog` service (proto/canopy/v1/hub.proto) over
// the hub's store and placement index.
//
// Every object maps to one store key (docs/keys.md): templates, placements and
// overrides under `t/<tenant>/`, sites under `sites/`. Put validates the whole
// request before anything is written, so a refused request leaves the store as
// it was; errors are gRPC codes whose message names the field and the reason.
// Store errors pass through with their code (api/grpc_status.h).
//
// Each operation is a transport-neutral method (put, get, ...) taking the
// caller's `Authorization` header value; the gRPC methods (Put, Get, ...) and
// the REST routes (api/rest.h) are thin adapters over them, so the three
// front doors (gRPC, REST, kubectl canopy) cannot disagree.
//
// Optimistic concurrency: a Put or Delete naming a version is refused with
// ABORTED unless the object is at that version. The check and the write are
// atomic on this hub (the store checks it as it stages the write,
// Store::put_value's if_version); another hub may still write
// concurrently, and the CRDT merge then keeps both as it always does.
//
// Watch streams share one fan-out (api/watch_fanout.h): one store
// subscription whose listener only records the changed key and never blocks;
// the fan-out's thread reads each changed object once, builds its event once
// and hands it to the queue of every watcher of that kind and tenant. A gRPC
// stream (a callback reactor, no thread of its own) sends what is pending as
// one WatchResponse; its bytes are the shared events' encodings, not
// serialized again. A watcher with more than `watch_queue_limit` pending
// events is ended with RESOURCE_EXHAUSTED naming the position of the last
// event it was handed (gRPC: also trailer `canopy-resume-from`; REST: field
// `resume_from` of the error line): a watch from there misses nothing (or
// is OUT_OF_RANGE once the log no longer reaches back, and re-lists). The
// writers never wait for a watcher.
//
// Every call is authenticated (metadata `authorization: Bearer <token>`,
// api/auth.h) before anything else is read, and authorized by
// model/access.h: reading a tenant's objects or status needs kRead on it,
// writing them kWrite; sites are fleet-level (reading them kRead on the
// fleet, writing them kAdminister). A refusal is UNAUTHENTICATED or
// PERMISSION_DENIED and touches nothing.
//
// Thread-safety: the handlers are called by gRPC from many threads at once;
// the store and the index are thread-safe. The server must be shut down (and
// its handlers returned) before the service is destroyed; call shutdown()
// first so that open watch streams end at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>

#include "api/auth.h"
#include "api/objects.h"
#include "api/watch_fanout.h"
#include "canopy/v1/hub.grpc.pb.h"
#include "hub/enrollment.h"
#include "hub/placement_index.h"
#include "hub/status_aggregate.h"
#include "store/document.h"
#include "store/status.h"
#include "store/store.h"

namespace canopy::api {

// Pending changes a watcher may fall behind by before its stream is ended.
inline constexpr size_t kWatchQueueLimit = 10'000;
// Changed objects a resumed watch may replay before its live events.
inline constexpr size_t kWatchReplayLimit = 100'000;
// The trailing metadata of a gRPC watch that fell behind: the position to
// watch again from (`from`) to miss nothing.
inline constexpr std::string_view kResumeFromTrailer = "canopy-resume-from";

// Where a watch sends its events, whatever the transport.
struct WatchSink {
  // Called once the watch is established: every change after `position`
  // reaches it.
  std::function<void(const std::string& position)> established;
  // Sends one event; false when the client went away.
  std::function<bool(const v1::WatchEvent&)> send;
  // Whether the client went away (polled while no event is pending).
  std::function<bool()> cancelled;
};

struct CatalogOptions {
  // The store's document limits (StoreOptions::limits).
  DocumentLimits limits;
  size_t watch_queue_limit = kWatchQueueLimit;
  // Objects a watch resumed from a position may replay (more: re-list).
  size_t watch_replay_limit = kWatchReplayLimit;
  // Deliveries to watchers are at least this far apart (api/watch_fanout.h):
  // a busy hub sends each watcher one message per interval.
  std::chrono::microseconds watch_interval = std::chrono::milliseconds(10);
  // For tests: called before a watch stream sends a message (gRPC: with the
  // stream's queue locked, possibly on the fan-out's thread; REST: before
  // each event). Blocking in it stalls deliveries, never writers.
  std::function<void()> before_watch_send;
  // The sites' liveness as the hub's sync sessions see it (canopy-hub wires
  // hub::Hub::liveness_lookup; one lookup per request, asked of the sites the
  // status covers); GetStatus then shows sites without a live session as
  // offline. Empty: every site counts as live.
  std::function<hub::LivenessOf()> liveness;
  // The hub's enrollment (bootstrap tokens, revocation); null: EnrollSite
  // and RevokeSite answer UNIMPLEMENTED.
  hub::Enrollment* enrollment = nullptr;
};

class CatalogService final : public v1::Catalog::WithAsyncMethod_Put<
                                 v1::Catalog::WithRawCallbackMethod_Watch<v1::Catalog::Service>> {
 public:
  // `store`, `index`, `status` and `auth` must outlive the service; `index`
  // and `status` follow `store`. GetStatus answers from `status`.
  CatalogService(Store* store, hub::PlacementIndex* index, hub::StatusAggregate* status,
                 Authenticator* auth, CatalogOptions options = {});
  ~CatalogService() override;
  CatalogService(const CatalogService&) = delete;
  CatalogService& operator=(const CatalogService&) = delete;

  // Ends every open watch stream (UNAVAILABLE) and refuses new ones.
  void shutdown();

  // --- The operations. `authorization` is the caller's header value
  // ("Bearer canopy_...").
  grpc::Status put(std::string_view authorization, const v1::PutRequest& request,
                   v1::PutResponse* response);
  // Put and remove without a thread waiting for the store's fsync: `done` is
  // called once (on this thread when refused, else on the store's syncing
  // thread) with what put or remove would return; `request` and `response`
  // must live until then. put and remove are these, waited for.
  using Done = std::function<void(const grpc::Status&)>;
  void put_async(std::string_view authorization, const v1::PutRequest& request,
                 v1::PutResponse* response, Done done);
  void remove_async(std::string_view authorization, const v1::DeleteRequest& request,
                    v1::DeleteResponse* response, Done done);
  grpc::Status get(std::string_view authorization, const v1::GetRequest& request,
                   v1::GetResponse* response);
  grpc::Status list(std::string_view authorization, const v1::ListRequest& request,
                    v1::ListResponse* response);
  grpc::Status remove(std::string_view authorization, const v1::DeleteRequest& request,
                      v1::DeleteResponse* response);
  // What watch() would refuse before it starts (authorization, kind, tenant,
  // the position): REST checks it before it starts its response.
  grpc::Status check_watch(std::string_view authorization, const v1::WatchRequest& request);
  // Returns when the client leaves, the hub shuts down, or the watcher falls
  // too far behind (RESOURCE_EXHAUSTED).
  // When it fell behind (RESOURCE_EXHAUSTED), `*resume_from` (if given) is
  // the position a new watch misses nothing from.
  grpc::Status watch(std::string_view authorization, const v1::WatchRequest& request,
                     const WatchSink& sink, std::string* resume_from = nullptr);
  // The watch streams open now, and how many fell behind (metrics).
  WatchFanout::Stats watch_stats() const { return fanout_->stats(); }
  grpc::Status get_status(std::string_view authorization, const v1::GetStatusRequest& request,
                          v1::GetStatusResponse* response);
  grpc::Status issue_token(std::string_view authorization, const v1::IssueTokenRequest& request,
                           v1::IssueTokenResponse* response);
  grpc::Status list_tokens(std::string_view authorization, const v1::ListTokensRequest& request,
                           v1::ListTokensResponse* response);
  grpc::Status revoke_token(std::string_view authorization, const v1::RevokeTokenRequest& request,
                            v1::RevokeTokenResponse* response);
  // Fleet admins only: a one-time bootstrap token bound to a site, and the
  // CA fingerprint to pin (docs/security.md); cutting a site off.
  grpc::Status enroll_site(std::string_view authorization, const v1::EnrollSiteRequest& request,
                           v1::EnrollSiteResponse* response);
  grpc::Status revoke_site(std::string_view authorization, const v1::RevokeSiteRequest& request,
                           v1::RevokeSiteResponse* response);
  grpc::Status list_enrollments(std::string_view authorization,
                                const v1::ListEnrollmentsRequest& request,
                                v1::ListEnrollmentsResponse* response);
  grpc::Status decide_enrollment(std::string_view authorization,
                                 const v1::DecideEnrollmentRequest& request,
                                 v1::DecideEnrollmentResponse* response);
  // The hub's enrollment, for the spoke's exchange (POST /v1/enroll), which
  // a bootstrap token authenticates, not a bearer token.
  hub::Enrollment* enrollment() const { return options_.enrollment; }
  // (catalog_views.cc) What a site would apply for a placement, rendered
  // here by the spoke's renderer from this hub's documents.
  grpc::Status render(std::string_view authorization, const v1::RenderRequest& request,
                      v1::RenderResponse* response);
  // A device's twin: {"desired": {...}, "reported": {"<field>": {"value":
  // ..., "atMs": N}}}, the desired state from the device's document and the
  // reported one from `sites/<site>/reported/<tenant>/<device>` (written by
  // the site's spoke; {} until the device reports). Authorized as a Get of the
  // device. (REST: GET .../devices/<device>/twin; gRPC: GetTwin.)
  grpc::Status get_twin(std::string_view authorization, std::string_view tenant,
                        std::string_view site, std::string_view name, nlohmann::json* out);
  // (catalog_views.cc) The conflict records of a tenant's objects.
  grpc::Status list_conflicts(std::string_view authorization,
                              const v1::ListConflictsRequest& request,
                              v1::ListConflictsResponse* response);

  // --- gRPC.
  // Put on gRPC's classic async API. request_put asks the server's
  // completion queue for one more call (api::GrpcServer asks kPutThreads
  // before it starts the threads); serve_puts takes calls from the queue
  // until it shuts down, asking for the next call as each arrives, and each
  // call is finished by the store's completion (put_async), so no thread
  // waits for its fsync. Not the callback API: there Put would share gRPC's
  // callback threads with the watch streams, which measured far worse for
  // watches (docs/api-performance.md, "Writes that no thread waits for").
  void request_put(grpc::ServerCompletionQueue* cq);
  void serve_puts(grpc::ServerCompletionQueue* cq);
  // After the server's Shutdown: returns once every call asked for has
  // ended (a Put finished, or a request refused by the shut-down server),
  // so that nothing more reaches the queue and it may shut down.
  void wait_for_puts();
  grpc::Status Get(grpc::ServerContext* context, const v1::GetRequest* request,
                   v1::GetResponse* response) override;
  grpc::Status List(grpc::ServerContext* context, const v1::ListRequest* request,
                    v1::ListResponse* response) override;
  grpc::Status Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                      v1::DeleteResponse* response) override;
  // Server streaming on gRPC's callback API: the request arrives and the
  // messages leave as bytes (each message is the shared events' encodings).
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Watch(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request) override;
  grpc::Status GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest* request,
                         v1::GetStatusResponse* response) override;
  grpc::Status IssueToken(grpc::ServerContext* context, const v1::IssueTokenRequest* request,
                          v1::IssueTokenResponse* response) override;
  grpc::Status ListTokens(grpc::ServerContext* context, const v1::ListTokensRequest* request,
                          v1::ListTokensResponse* response) override;
  grpc::Status RevokeToken(grpc::ServerContext* context, const v1::RevokeTokenRequest* request,
                           v1::RevokeTokenResponse* response) override;
  grpc::Status Render(grpc::ServerContext* context, const v1::RenderRequest* request,
                      v1::RenderResponse* response) override;
  grpc::Status GetTwin(grpc::ServerContext* context, const v1::GetTwinRequest* request,
                       v1::GetTwinResponse* response) override;
  grpc::Status ListConflicts(grpc::ServerContext* context, const v1::ListConflictsRequest* request,
                             v1::ListConflictsResponse* response) override;
  grpc::Status EnrollSite(grpc::ServerContext* context, const v1::EnrollSiteRequest* request,
                          v1::EnrollSiteResponse* response) override;
  grpc::Status RevokeSite(grpc::ServerContext* context, const v1::RevokeSiteRequest* request,
                          v1::RevokeSiteResponse* response) override;
  grpc::Status ListEnrollments(grpc::ServerContext* context,
                               const v1::ListEnrollmentsRequest* request,
                               v1::ListEnrollmentsResponse* response) override;
  grpc::Status DecideEnrollment(grpc::ServerContext* context,
                                const v1::DecideEnrollmentRequest* request,
                                v1::DecideEnrollmentResponse* response) override;

 private:
  class WatchReactor;

  // Checks and opens a watch; `*position` is where it starts.
  grpc::Status start_watch(std::string_view authorization, const v1::WatchRequest& request,
                           std::shared_ptr<WatchQueue>* out, std::string* position);

  // Reads `key` into `out` (kind, tenant, name set by the caller; the JSON
  // only `with_json`). False when the document does not exist (version still
  // set when a tombstone does).
  StatusOr<bool> read_object(const std::string& key, v1::Object* out, bool with_json = true);
  // A site record must not name a site as its region, nor a site be named
  // like a region some record names.
  Status check_site_and_region_names(std::string_view site, const nlohmann::json& record) const;
  // The second half of that: no site record names `site` as its region.
  Status check_not_a_region(std::string_view site) const;
  // The caller's token record when it may do `action` on `tenant`'s objects
  // (empty: fleet-level), else why not.
  StatusOr<model::TokenRecord> authorize(std::string_view authorization, model::Action action,
                                         std::string_view tenant) const;
  // The same for reading (`write` false) or writing objects of `kind`.
  // Reading sites: a fleet-wide token reads them all; when `granted_to` is
  // given, a member of a tenant may read the sites granted to the tenant, and
  // `*granted_to` is set to that tenant (empty: no restriction).
  grpc::Status authorize_object(std::string_view authorization, bool write, std::string_view kind,
                                std::string_view tenant, std::string_view name,
                                std::string* granted_to = nullptr) const;
  // Devices: a tenant's members reach its devices only on sites granted to
  // it (a read elsewhere is NOT_FOUND, a write PERMISSION_DENIED); a fleet
  // admin reads and deletes any, and writes only on a granted site (a
  // tenant's devices live on its sites: FAILED_PRECONDITION). Call after
  // authorize_object. `*hidden` is set when a read must find nothing.
  grpc::Status check_device_site(std::string_view authorization, std::string_view tenant,
                                 std::string_view site, bool put, bool write, bool* hidden) const;
  // Runs an asynchronous operation and waits for its `done`.
  static grpc::Status wait_for(const std::function<void(Done)>& start);

  Store* store_;
  hub::PlacementIndex* index_;
  hub::StatusAggregate* status_;
  Authenticator* auth_;
  CatalogOptions options_;

  std::unique_ptr<WatchFanout> fanout_;

  // Calls asked of the completion queue (request_put) whose last event has
  // not been taken yet: waiting for a Put, or a Put being written.
  std::mutex puts_mu_;
  std::condition_variable puts_cv_;
  size_t puts_outstanding_ = 0;
};

}  // namespace canopy::api
