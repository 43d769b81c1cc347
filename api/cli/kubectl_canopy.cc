// kubectl-canopy: the command-line client of the hub's Catalog API
// (proto/canopy/v1/hub.proto). On PATH it is also a kubectl plugin, so
// `kubectl canopy apply -f shop.yaml` and `kubectl-canopy apply -f shop.yaml`
// are the same command.
//
//   kubectl-canopy apply -f FILE...            (FILE may be - for stdin)
//   kubectl-canopy diff -f FILE...             (exit 0 none, 1 differences, 2 error)
//   kubectl-canopy get KIND [TENANT[/NAME]] [-l SELECTOR] [-o table|json|name]
//   kubectl-canopy delete KIND TENANT/NAME
//   kubectl-canopy sites [-l SELECTOR] [-o table|json|name]
//   kubectl-canopy tenants [-o table|json|name]
//   kubectl-canopy status TENANT/PLACEMENT [-o json]   (offline sites: last state, age)
//   kubectl-canopy render TENANT/PLACEMENT --site S [-o yaml|json]
//   kubectl-canopy conflicts TENANT [--kind K [--name N]] [-o json]
//   kubectl-canopy tokens [--tenant T] | tokens issue --role R [--tenant T] [--ttl S]
//                 | tokens revoke ID
//   kubectl-canopy label site SITE KEY=VALUE... KEY-... [--overwrite]
//   kubectl-canopy grants TENANT [-o table|json|name]
//   kubectl-canopy rollout status|pause|resume TENANT/PLACEMENT
//   kubectl-canopy enroll SITE [--ttl 1h] [-o json]   (a one-time bootstrap token)
//   kubectl-canopy site revoke SITE                   (cut an enrolled site off)
//   kubectl-canopy site approve|deny SITE             (double opt-in)
//   kubectl-canopy enrollments [-o json]              (certificate expiry, waiting sites)
//   kubectl-canopy version   (or --version)
//
// Settings not given by a flag or the environment come from the settings
// file (api/cli/site_cmd.cc: hub, token, tokenFile, timeout, ca, cert, key,
// tls). The hub is --hub host:port, else $CANOPY_HUB, else 127.0.0.1:7400.
// TLS (docs/security.md): --hub https://host:port, --tls, or a CA given
// (--ca FILE or $CANOPY_CA: the CA that issued the hub's certificate; else
// the system's CAs); --cert and --key ($CANOPY_CERT, $CANOPY_KEY) present a
// client certificate to a hub that requires one. A failed handshake is
// explained (tls_probe.h). Every call has a deadline
// (--timeout, 5 s) and carries a token: --token, else $CANOPY_TOKEN, else the
// first line of --token-file or $CANOPY_TOKEN_FILE (a new hub writes its
// first fleet-admin token to <data>/admin.token).
//
// Exit codes: 0 success, 1 an error (printed as `error: ...`; errors of the
// hub as `error: <CODE>: <message>`), 2 a usage error.
//
// The commands on catalogue objects (apply, diff, get, delete, status) are in
// objects_cmd.cc, the others in files named in client.h.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "api/cli/client.h"
#include "daemon/openssl_exit.h"

#ifndef CANOPY_VERSION
#define CANOPY_VERSION "0.0.0"
#endif

namespace canopy::cli {
namespace {

constexpr char kDefaultHub[] = "127.0.0.1:7400";

// gRPC's threads may still be ending when main returns: OpenSSL keeps its
// state until exit (daemon/openssl_exit.h).
CANOPY_KEEP_OPENSSL_UNTIL_EXIT();

}  // namespace
}  // namespace canopy::cli

int main(int argc, char** argv) {
  using canopy::cli::Failure;
  CLI::App app{
      "kubectl-canopy: the Canopy hub's command-line client (also `kubectl canopy` when on "
      "PATH)",
      "kubectl-canopy"};
  app.fallthrough();
  app.require_subcommand(0, 1);

  const char* env_hub = std::getenv("CANOPY_HUB");
  std::string hub_address = env_hub != nullptr && *env_hub != '\0' ? env_hub : "";
  const char* env_token = std::getenv("CANOPY_TOKEN");
  std::string token = env_token != nullptr ? env_token : "";
  const char* env_token_file = std::getenv("CANOPY_TOKEN_FILE");
  std::string token_file = env_token_file != nullptr ? env_token_file : "";
  int timeout_s = 5;
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v != nullptr ? v : "");
  };
  canopy::cli::ClientTls tls;
  tls.ca_file = env("CANOPY_CA");
  tls.cert_file = env("CANOPY_CERT");
  tls.key_file = env("CANOPY_KEY");
  bool tls_flag = false;
  const char* env_config = std::getenv("CANOPY_CONFIG");
  std::string config_path = env_config != nullptr ? env_config : "";
  app.add_option("--config", config_path,
                 "the settings file (default: $CANOPY_CONFIG, else "
                 "$XDG_CONFIG_HOME/canopy/config.yaml or ~/.config/canopy/config.yaml); flags "
                 "and the environment win over it");
  bool version = false;
  app.add_flag("--version", version, "print the version and exit");
  app.add_option("--hub", hub_address,
                 "the hub's gRPC address host:port (default: $CANOPY_HUB, else " +
                     std::string(canopy::cli::kDefaultHub) + ")");
  app.add_option("--token", token, "the API token (default: $CANOPY_TOKEN)");
  app.add_option("--token-file", token_file,
                 "a file whose first line is the API token, when no token is given (default: "
                 "$CANOPY_TOKEN_FILE)");
  app.add_flag("--tls", tls_flag, "speak TLS to the hub (implied by https:// or --ca)");
  app.add_option("--ca", tls.ca_file,
                 "the CA that issued the hub's certificate, PEM (default: $CANOPY_CA); turns TLS "
                 "on");
  app.add_option("--cert", tls.cert_file,
                 "a client certificate for a hub that requires one, PEM (default: $CANOPY_CERT)");
  app.add_option("--key", tls.key_file, "the client certificate's key (default: $CANOPY_KEY)");
  app.add_option("--timeout", timeout_s, "seconds to wait for each call to the hub")
      ->check(CLI::Range(1, 3600));

  std::vector<std::string> files;
  auto* apply = app.add_subcommand(
      "apply",
      "create or update the objects in YAML files (templates, then overrides, then "
      "placements); nothing is sent unless every document is valid");
  apply->add_option("-f,--filename", files, "a YAML file of one or more documents; - for stdin")
      ->required();

  std::vector<std::string> diff_files;
  auto* diff = app.add_subcommand(
      "diff", "show how the objects in YAML files differ from the hub's (exit 0: none, 1: some)");
  diff->add_option("-f,--filename", diff_files, "a YAML file of one or more documents; - for stdin")
      ->required();

  std::string kind, target, selector, output = "table", site;
  const auto outputs = CLI::IsMember({"table", "json", "name"});
  auto* get = app.add_subcommand("get", "list the objects of a kind, or show one");
  get->add_option("KIND", kind, "template, placement, override, grant, site, tenant or device")
      ->required();
  get->add_option("TARGET", target,
                  "TENANT to list, TENANT/NAME to show one (sites and tenants: NAME)");
  get->add_option("--site", site, "devices: the site they belong to");
  bool get_watch = false;
  get->add_flag("-w,--watch", get_watch,
                "after the list, print each change as it happens (EVENT column: ADDED, MODIFIED, "
                "DELETED) until stopped");
  get->add_option("-l,--selector", selector, "only objects whose labels match, e.g. app=web");
  get->add_option("-o,--output", output, "table, json or name")->check(outputs);

  auto* del = app.add_subcommand("delete", "delete an object");
  del->add_option("KIND", kind, "template, placement, override, grant, site or device")->required();
  del->add_option("TARGET", target, "TENANT/NAME (sites: NAME)")->required();
  del->add_option("--site", site, "devices: the site it belongs to");

  auto* twin = app.add_subcommand(
      "twin", "show a device's twin: what it is asked (desired) and what it last reported");
  twin->add_option("DEVICE", target, "TENANT/DEVICE")->required();
  twin->add_option("--site", site, "the site the device belongs to")->required();
  twin->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));

  auto* sites = app.add_subcommand("sites", "list the sites and their labels");
  sites->add_option("-l,--selector", selector, "only sites whose labels match, e.g. region=eu");
  sites->add_option("-o,--output", output, "table, json or name")->check(outputs);

  auto* tenants = app.add_subcommand("tenants", "list the tenants (fleet admins)");
  tenants->add_option("-o,--output", output, "table, json or name")->check(outputs);

  std::string role, token_tenant, description;
  uint64_t ttl_seconds = 0;
  auto* tokens = app.add_subcommand("tokens", "list API tokens, or issue or revoke one");
  tokens->add_option("--tenant", token_tenant, "only this tenant's tokens");
  tokens->add_option("-o,--output", output, "table, json or name")->check(outputs);
  auto* issue =
      tokens->add_subcommand("issue", "issue a token; its bearer text is printed once, on stdout");
  issue->add_option("--role", role, "fleet-admin, tenant-admin, editor or viewer")
      ->required()
      ->check(CLI::IsMember({"fleet-admin", "tenant-admin", "editor", "viewer"}));
  issue->add_option("--tenant", token_tenant, "the tenant it acts for (not for fleet-admin)");
  issue->add_option("--ttl", ttl_seconds, "seconds until it expires (default: never)");
  issue->add_option("--description", description, "what or who it is for");
  issue->add_option("-o,--output", output, "table (the bearer text alone) or json")
      ->check(CLI::IsMember({"table", "json"}));
  std::string token_id;
  auto* revoke = tokens->add_subcommand("revoke", "revoke a token: it is refused from now on");
  revoke->add_option("ID", token_id, "the token's id (kubectl-canopy tokens lists them)")
      ->required();

  auto* version_cmd = app.add_subcommand("version", "print the version");

  std::string enroll_site, enroll_ttl;
  auto* enroll = app.add_subcommand(
      "enroll", "issue a one-time bootstrap token for a site, and the hub CA fingerprint to pin");
  enroll->add_option("SITE", enroll_site, "the site's name")->required();
  enroll->add_option("--ttl", enroll_ttl,
                     "how long the token is valid: 90s, 30m, 1h (default), 7d");
  enroll->add_option("-o,--output", output, "table (token and fingerprint) or json")
      ->check(CLI::IsMember({"table", "json"}));
  auto* site_cmd = app.add_subcommand("site", "act on an enrolled site (fleet admins)");
  site_cmd->require_subcommand(1);
  auto* site_revoke = site_cmd->add_subcommand(
      "revoke", "cut a site off: its NATS user is removed and the hub refuses its messages");
  site_revoke->add_option("SITE", enroll_site, "the site")->required();
  auto* site_approve = site_cmd->add_subcommand(
      "approve", "double opt-in: let a site that asked to enroll have its identity");
  site_approve->add_option("SITE", enroll_site, "the site")->required();
  auto* site_deny =
      site_cmd->add_subcommand("deny", "double opt-in: refuse a site that asked to enroll");
  site_deny->add_option("SITE", enroll_site, "the site")->required();
  auto* enrollments = app.add_subcommand(
      "enrollments", "list enrolled sites (certificate expiry) and those waiting for approval");
  enrollments->add_option("-o,--output", output, "table or json")
      ->check(CLI::IsMember({"table", "json"}));

  std::string conflict_kind, conflict_name;
  auto* render = app.add_subcommand(
      "render", "print what one site would apply for a placement, rendered at the hub");
  render->add_option("PLACEMENT", target, "TENANT/PLACEMENT")->required();
  render->add_option("--site", site, "the site")->required();
  render->add_option("-o,--output", output, "yaml (default) or json")
      ->check(CLI::IsMember({"table", "yaml", "json"}));
  auto* conflicts = app.add_subcommand(
      "conflicts", "list writes to a tenant's objects that lost to concurrent writes");
  conflicts->add_option("TENANT", target, "the tenant")->required();
  conflicts->add_option("--kind", conflict_kind, "template, placement, override or grant");
  conflicts->add_option("--name", conflict_name, "one object (needs --kind)");
  conflicts->add_option("-o,--output", output, "table or json")
      ->check(CLI::IsMember({"table", "json"}));

  std::vector<std::string> label_changes;
  bool overwrite = false;
  auto* label = app.add_subcommand("label", "edit a site's labels (fleet admins)");
  auto* label_site = label->add_subcommand("site", "edit the labels of the hub's site record");
  label->require_subcommand(1);
  label_site->add_option("SITE", target, "the site")->required();
  label_site->add_option("CHANGES", label_changes, "KEY=VALUE to set, KEY- to remove")->required();
  label_site->add_flag("--overwrite", overwrite, "replace a label's value");
  auto* rollout = app.add_subcommand("rollout", "follow, pause or resume a placement's rollout");
  rollout->require_subcommand(1);
  bool rollout_watch = true;
  int rollout_timeout_s = 600;
  auto* rollout_status = rollout->add_subcommand(
      "status", "follow a placement until every site applied the current revision");
  rollout_status->add_option("PLACEMENT", target, "TENANT/PLACEMENT")->required();
  rollout_status->add_option("-w,--watch", rollout_watch, "keep following (default true)");
  rollout_status->add_option("--timeout", rollout_timeout_s, "seconds to follow at most")
      ->check(CLI::Range(1, 86400));
  auto* rollout_pause = rollout->add_subcommand("pause", "stop releasing new revisions");
  rollout_pause->add_option("PLACEMENT", target, "TENANT/PLACEMENT")->required();
  auto* rollout_resume = rollout->add_subcommand("resume", "release new revisions again");
  rollout_resume->add_option("PLACEMENT", target, "TENANT/PLACEMENT")->required();
  auto* grants = app.add_subcommand("grants", "list a tenant's grants (the sites it may use)");
  grants->add_option("TENANT", target, "the tenant")->required();
  grants->add_option("-o,--output", output, "table, json or name")->check(outputs);

  auto* status = app.add_subcommand("status", "show where a placement stands, site by site");
  status->add_option("PLACEMENT", target, "TENANT/PLACEMENT")->required();
  status->add_option("-o,--output", output, "table or json")
      ->check(CLI::IsMember({"table", "json"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (version || *version_cmd) {
    std::printf("kubectl-canopy %s\n", CANOPY_VERSION);
    return 0;
  }
  if (app.get_subcommands().empty()) {
    std::fprintf(stderr, "%s", app.help().c_str());
    return 2;
  }
  // The settings file fills in what neither a flag nor the environment set.
  canopy::cli::Settings settings;
  try {
    const bool explicit_path = !config_path.empty();
    settings = canopy::cli::read_settings(
        explicit_path ? config_path : canopy::cli::default_settings_path(), explicit_path);
  } catch (const Failure& f) {
    std::fprintf(stderr, "error: %s\n", f.message.c_str());
    return 1;
  }
  if (hub_address.empty()) hub_address = settings.hub;
  if (token.empty() && token_file.empty()) {
    token = settings.token;
    token_file = settings.token_file;
  }
  if (app.count("--timeout") == 0 && settings.timeout_s > 0) timeout_s = settings.timeout_s;
  if (hub_address.empty()) hub_address = canopy::cli::kDefaultHub;
  if (tls.ca_file.empty()) tls.ca_file = settings.ca;
  if (tls.cert_file.empty() && tls.key_file.empty()) {
    tls.cert_file = settings.cert;
    tls.key_file = settings.key;
  }
  tls.enabled = tls_flag || settings.tls || !tls.ca_file.empty() || !tls.cert_file.empty();
  if (hub_address.starts_with("https://")) {
    hub_address = hub_address.substr(8);
    tls.enabled = true;
  } else if (hub_address.starts_with("http://")) {
    hub_address = hub_address.substr(7);
    if (tls.enabled) {
      std::fprintf(stderr,
                   "error: --hub http://... is plain TCP, but TLS was asked for (--ca, "
                   "--cert or --tls)\n");
      return 2;
    }
  }
  if (tls.enabled) {
    try {
      canopy::cli::load_client_tls(&tls);
    } catch (const Failure& f) {
      std::fprintf(stderr, "error: %s\n", f.message.c_str());
      return 1;
    }
  }
  if (token.empty() && !token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) {
      std::fprintf(stderr, "error: token file %s: %s\n", token_file.c_str(), std::strerror(errno));
      return 1;
    }
    std::getline(in, token);
  }

  try {
    canopy::cli::Hub hub(hub_address, token, timeout_s, tls);
    if (*apply) return canopy::cli::cmd_apply(hub, files);
    if (*diff) {
      try {
        return canopy::cli::cmd_diff(hub, diff_files);
      } catch (const Failure& f) {
        std::fflush(stdout);
        std::fprintf(stderr, "error: %s\n", f.message.c_str());
        return 2;  // kubectl diff: more than 1 is an error
      }
    }
    if (*get) return canopy::cli::cmd_get(hub, kind, target, selector, output, site, get_watch);
    if (*del) return canopy::cli::cmd_delete(hub, kind, target, site);
    if (*twin) return canopy::cli::cmd_twin(hub, target, site, output);
    if (*sites) return canopy::cli::cmd_get(hub, "site", "", selector, output);
    if (*tenants) return canopy::cli::cmd_get(hub, "tenant", "", "", output);
    if (*issue) {
      return canopy::cli::cmd_tokens_issue(hub, role, token_tenant, ttl_seconds, description,
                                           output);
    }
    if (*revoke) return canopy::cli::cmd_tokens_revoke(hub, token_id);
    if (*enroll) return canopy::cli::cmd_enroll(hub, enroll_site, enroll_ttl, output);
    if (*site_revoke) return canopy::cli::cmd_site_revoke(hub, enroll_site);
    if (*site_approve) return canopy::cli::cmd_site_decide(hub, enroll_site, true);
    if (*site_deny) return canopy::cli::cmd_site_decide(hub, enroll_site, false);
    if (*enrollments) return canopy::cli::cmd_enrollments(hub, output);
    if (*tokens) return canopy::cli::cmd_tokens_list(hub, token_tenant, output);
    if (*status) return canopy::cli::cmd_status(hub, target, output);
    if (*label_site) return canopy::cli::cmd_label_site(hub, target, label_changes, overwrite);
    if (*grants) return canopy::cli::cmd_get(hub, "grant", target, "", output);
    if (*rollout_status) {
      return canopy::cli::cmd_rollout_status(hub, target, rollout_watch, rollout_timeout_s);
    }
    if (*rollout_pause) return canopy::cli::cmd_rollout_pause(hub, target, true);
    if (*rollout_resume) return canopy::cli::cmd_rollout_pause(hub, target, false);
    if (*render) return canopy::cli::cmd_render(hub, target, site, output);
    if (*conflicts) {
      return canopy::cli::cmd_conflicts(hub, target, conflict_kind, conflict_name, output);
    }
  } catch (const Failure& f) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", f.message.c_str());
    return 1;
  }
  return 0;
}
