// kubectl-canopy enroll, site revoke|approve|deny and enrollments: a site's
// one-time bootstrap token (printed once, with the hub's CA fingerprint to
// pin), cutting a site off, double opt-in, and the enrolled sites with their
// certificates' expiry (docs/security.md).
#include <cstdio>
#include <string>
#include <vector>

#include "api/cli/client.h"

namespace canopy::cli {
namespace {

// "3600", "90s", "30m", "1h", "7d" as seconds.
uint64_t parse_ttl(const std::string& text) {
  if (text.empty()) return 0;
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string unit = text.substr(digits);
  if (digits == 0 || digits > 9 || unit.size() > 1) {
    fail("--ttl " + text + ": want a duration such as 3600, 90s, 30m, 1h or 7d");
  }
  uint64_t n = std::stoull(text.substr(0, digits));
  if (unit.empty() || unit == "s") return n;
  if (unit == "m") return n * 60;
  if (unit == "h") return n * 3600;
  if (unit == "d") return n * 86400;
  fail("--ttl " + text + ": unit must be s, m, h or d");
}

}  // namespace

int cmd_enroll(Hub& hub, const std::string& site, const std::string& ttl,
               const std::string& output) {
  v1::EnrollSiteRequest req;
  req.set_site(site);
  req.set_ttl_seconds(parse_ttl(ttl));
  auto resp = hub.call(&v1::Catalog::Stub::EnrollSite, req);
  if (output == "json") {
    std::printf("%s\n", json{{"site", resp.site()},
                             {"token", resp.token()},
                             {"expiresAtMs", resp.expires_at_ms()},
                             {"caFingerprint", resp.ca_fingerprint()}}
                            .dump(2)
                            .c_str());
    return 0;
  }
  // What to run at the site goes to stdout; the rest to stderr.
  std::fprintf(stderr,
               "bootstrap token for site %s (one use; expires in %s); it is shown only now.\n"
               "At the site, run:\n",
               resp.site().c_str(), ttl.empty() ? "1h" : ttl.c_str());
  std::printf("token: %s\nca-fingerprint: %s\n", resp.token().c_str(),
              resp.ca_fingerprint().c_str());
  std::fprintf(stderr,
               "  canopy-spoke --site %s --enroll <token> --ca-fingerprint %s --hub-url "
               "http://<hub>:7401 ...\n",
               resp.site().c_str(), resp.ca_fingerprint().c_str());
  return 0;
}

int cmd_site_revoke(Hub& hub, const std::string& site) {
  v1::RevokeSiteRequest req;
  req.set_site(site);
  hub.call(&v1::Catalog::Stub::RevokeSite, req);
  std::printf("site %s revoked: its NATS user is removed and the hub refuses its messages\n",
              site.c_str());
  return 0;
}

int cmd_site_decide(Hub& hub, const std::string& site, bool approve) {
  v1::DecideEnrollmentRequest req;
  req.set_site(site);
  req.set_approve(approve);
  hub.call(&v1::Catalog::Stub::DecideEnrollment, req);
  if (approve) {
    std::printf("enrollment of site %s approved: it gets its identity at its next poll\n",
                site.c_str());
  } else {
    std::printf("enrollment of site %s denied: nothing is issued to it\n", site.c_str());
  }
  return 0;
}

int cmd_enrollments(Hub& hub, const std::string& output) {
  auto resp = hub.call(&v1::Catalog::Stub::ListEnrollments, v1::ListEnrollmentsRequest());
  if (output == "json") {
    json items = json::array();
    for (const auto& e : resp.sites()) {
      items.push_back({{"site", e.site()},
                       {"state", e.state()},
                       {"requestFingerprint", e.request_fingerprint()},
                       {"requestedAtMs", e.requested_at_ms()},
                       {"certFingerprint", e.cert_fingerprint()},
                       {"certNotAfterMs", e.cert_not_after_ms()},
                       {"enrolledAtMs", e.enrolled_at_ms()},
                       {"revokedAtMs", e.revoked_at_ms()}});
    }
    std::printf("%s\n", json{{"items", items}}.dump(2).c_str());
    return 0;
  }
  if (resp.sites().empty()) {
    std::fprintf(stderr, "No enrolled or waiting sites.\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : resp.sites()) {
    const bool waiting = !e.request_fingerprint().empty();
    rows.push_back({e.site(), e.state(),
                    waiting ? format_utc(e.requested_at_ms()) : format_utc(e.enrolled_at_ms()),
                    waiting ? "-" : format_utc(e.cert_not_after_ms()),
                    waiting ? e.request_fingerprint() : e.cert_fingerprint()});
  }
  print_table({"SITE", "STATE", "SINCE", "CERT-EXPIRES", "REQUEST-OR-CERTIFICATE"}, rows);
  return 0;
}

}  // namespace canopy::cli
