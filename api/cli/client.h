// The kubectl-canopy client's parts shared by its commands: errors, the
// connection to the hub, tables.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "api/cli/tls_probe.h"
#include "api/grpc_server.h"
#include "api/objects.h"
#include "canopy/v1/hub.grpc.pb.h"
#include "store/status.h"

namespace canopy::cli {

using json = nlohmann::json;

// An error already explained to the user: main() prints it and exits 1.
struct Failure {
  std::string message;
};

[[noreturn]] inline void fail(std::string message) { throw Failure{std::move(message)}; }

inline std::string quote(std::string_view s) { return json(std::string(s)).dump(); }

class Hub {
 public:
  // `tls` loaded (load_client_tls) when enabled.
  Hub(std::string address, std::string token, int timeout_s, ClientTls tls = {})
      : address_(std::move(address)),
        token_(std::move(token)),
        timeout_s_(timeout_s),
        tls_(std::move(tls)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(api::kMaxGrpcMessageBytes);
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (tls_.enabled) {
      grpc::SslCredentialsOptions o;
      o.pem_root_certs = tls_.ca_pem;
      o.pem_cert_chain = tls_.cert_pem;
      o.pem_private_key = tls_.key_pem;
      creds = grpc::SslCredentials(o);
    }
    channel_ = grpc::CreateCustomChannel(address_, creds, args);
    stub_ = v1::Catalog::NewStub(channel_);
  }

  template <typename Req, typename Resp>
  Resp call(grpc::Status (v1::Catalog::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
            const Req& request, bool* not_found = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s_));
    if (!token_.empty()) ctx.AddMetadata("authorization", "Bearer " + token_);
    Resp response;
    grpc::Status s = ((*stub_).*method)(&ctx, request, &response);
    if (s.ok()) return response;
    if (not_found != nullptr && s.error_code() == grpc::StatusCode::NOT_FOUND) {
      *not_found = true;
      return response;
    }
    fail(describe(s));
  }

  // A watch stream (no deadline: it lasts until the hub ends it or the
  // process stops). `ctx` must outlive the reader. Returns once the hub has
  // established the watch (its initial metadata): every later change reaches
  // the reader. A watch the hub refuses fails here with its status.
  std::unique_ptr<grpc::ClientReader<v1::WatchResponse>> watch(const v1::WatchRequest& request,
                                                               grpc::ClientContext* ctx) {
    if (!token_.empty()) ctx->AddMetadata("authorization", "Bearer " + token_);
    auto reader = stub_->Watch(ctx, request);
    reader->WaitForInitialMetadata();
    return reader;
  }
  // Fails with the status a stream ended with.
  [[noreturn]] void fail_with(const grpc::Status& s) { fail(describe(s)); }

 private:
  std::string describe(const grpc::Status& s) {
    const std::string code(status_code_name(static_cast<StatusCode>(s.error_code())));
    std::string m = s.error_message();
    const bool transport = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (transport && tls_.enabled && channel_->GetState(false) != GRPC_CHANNEL_READY) {
      const std::string why = probe_tls(address_, tls_);
      if (!why.empty()) {
        return code + ": TLS handshake with the hub at " + address_ + " failed: " + why;
      }
    }
    if (transport && channel_->GetState(false) != GRPC_CHANNEL_READY) {
      m = "cannot reach the hub at " + address_ + " (" + m +
          "); is canopy-hub running there? Set the address with --hub or CANOPY_HUB";
    } else if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
      m += token_.empty() ? " (no token given: set --token, CANOPY_TOKEN or CANOPY_TOKEN_FILE; a "
                            "new hub writes its first admin token to <data>/admin.token)"
                          : " (check --token, CANOPY_TOKEN or CANOPY_TOKEN_FILE)";
    } else if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      m += " (the hub at " + address_ + " did not answer within " + std::to_string(timeout_s_) +
           " s; see --timeout)";
    }
    return code + ": " + m;
  }

  std::string address_;
  std::string token_;
  int timeout_s_;
  ClientTls tls_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Catalog::Stub> stub_;
};

// Every object of a kind (and tenant), over all pages.
inline std::vector<v1::Object> list_all(Hub& hub, const std::string& kind,
                                        const std::string& tenant, const std::string& selector = "",
                                        const std::string& site = "") {
  std::vector<v1::Object> out;
  v1::ListRequest req;
  req.set_kind(kind);
  req.set_tenant(tenant);
  req.set_site(site);
  req.set_label_selector(selector);
  req.set_page_size(api::kMaxPageSize);
  while (true) {
    auto resp = hub.call(&v1::Catalog::Stub::List, req);
    for (auto& o : *resp.mutable_objects()) out.push_back(std::move(o));
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  return out;
}

inline void print_table(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 3, ' ');
    }
    std::printf("%s\n", line.c_str());
  };
  print_row(header);
  for (const auto& row : rows) print_row(row);
}

// --- Commands in files of their own.

// `apply -f FILE...`, `diff -f FILE...`, `get KIND [TARGET] [--site S]`,
// `delete KIND TARGET [--site S]`, `twin TENANT/DEVICE --site S`, `status
// TENANT/PLACEMENT` (objects_cmd.cc). Devices belong to a site: `site` is
// required for them and refused for every other kind.
int cmd_apply(Hub& hub, const std::vector<std::string>& files);
int cmd_diff(Hub& hub, const std::vector<std::string>& files);
// With `watch`: the list, then each change as it happens (kubectl get -w),
// until the hub ends the stream (exit 1) or the process is stopped.
int cmd_get(Hub& hub, const std::string& kind_word, const std::string& target,
            const std::string& selector, const std::string& output, const std::string& site = "",
            bool watch = false);
int cmd_delete(Hub& hub, const std::string& kind_word, const std::string& target,
               const std::string& site = "");
int cmd_twin(Hub& hub, const std::string& target, const std::string& site,
             const std::string& output);
int cmd_status(Hub& hub, const std::string& target, const std::string& output);

// `tokens [--tenant T]`, `tokens issue`, `tokens revoke ID` (tokens_cmd.cc).
int cmd_tokens_list(Hub& hub, const std::string& tenant, const std::string& output);
int cmd_tokens_issue(Hub& hub, const std::string& role, const std::string& tenant,
                     uint64_t ttl_seconds, const std::string& description,
                     const std::string& output);
int cmd_tokens_revoke(Hub& hub, const std::string& id);

// `enroll SITE [--ttl 1h]` and `site revoke SITE` (enroll_cmd.cc; fleet
// admins; docs/security.md). `ttl` is seconds, or a number with s, m, h or d.
int cmd_enroll(Hub& hub, const std::string& site, const std::string& ttl,
               const std::string& output);
int cmd_site_revoke(Hub& hub, const std::string& site);
// Double opt-in: `site approve SITE`, `site deny SITE`; and `enrollments
// [-o table|json]`: every enrolled or waiting site with its certificate's
// expiry.
int cmd_site_decide(Hub& hub, const std::string& site, bool approve);
int cmd_enrollments(Hub& hub, const std::string& output);

// `render TENANT/PLACEMENT --site S [-o yaml|json]`, `conflicts TENANT
// [--kind K [--name N]]` (views_cmd.cc).
int cmd_render(Hub& hub, const std::string& target, const std::string& site,
               const std::string& output);
int cmd_conflicts(Hub& hub, const std::string& tenant, const std::string& kind,
                  const std::string& name, const std::string& output);
// `label site NAME KEY=VALUE... KEY-...` (site_cmd.cc): edits the hub's site
// record (the one source of truth for a site's labels) at the version read.
int cmd_label_site(Hub& hub, const std::string& site, const std::vector<std::string>& changes,
                   bool overwrite);

// The settings file (site_cmd.cc); empty fields are not set.
struct Settings {
  std::string hub;
  std::string token;
  std::string token_file;
  int timeout_s = 0;
  std::string ca, cert, key;  // TLS files (ca: the hub's CA, which also turns TLS on)
  bool tls = false;
};
// $XDG_CONFIG_HOME/canopy/config.yaml, else ~/.config/canopy/config.yaml.
std::string default_settings_path();
// Fails (Failure) on a malformed file, or a missing one when `must_exist`.
Settings read_settings(const std::string& path, bool must_exist);

// `rollout pause|resume T/P` set the placement's rollout.paused at the
// version read; `rollout status T/P` follows the counts until every targeted
// site applied the current revision (exit 0), a site failed it or the
// timeout passed (1) (views_cmd.cc).
int cmd_rollout_pause(Hub& hub, const std::string& target, bool paused);
int cmd_rollout_status(Hub& hub, const std::string& target, bool watch, int timeout_s);

// "45s", "12m", "5h", "3d", as kubectl prints ages.
std::string format_age(uint64_t seconds);
// A time in milliseconds since 1970 as "2026-12-04T17:20:00Z"; 0: "never".
std::string format_utc(uint64_t ms);

}  // namespace canopy::cli
