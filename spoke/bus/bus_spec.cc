#include "spoke/bus/bus_spec.h"

#include <cstdio>
#include <set>
#include <sstream>

#include "model/names.h"

namespace canopy::spoke::bus {
namespace {

constexpr int64_t kMaxPayloadCeiling = 8LL << 20;  // nats-server refuses more than 8 MiB
constexpr int kMaxAckPendingCeiling = 65535;       // nats-server's per-session total

Status field_error(const std::string& field, const std::string& reason) {
  return invalid_argument("bus." + field + ": " + reason);
}

Status check_label(const std::string& field, const std::string& value) {
  if (!model::is_dns1123_label(value)) {
    return field_error(field, model::quote(value) + " is not " + std::string(model::kLabelRule));
  }
  return ok_status();
}

Status check_port(const std::string& field, int port, bool zero_ok) {
  if ((port == 0 && zero_ok) || (port >= 1 && port <= 65535)) return ok_status();
  return field_error(field, std::to_string(port) + " is not a port (1-65535" +
                                (zero_ok ? ", or 0 for none)" : ")"));
}

Status check_positive(const std::string& field, int64_t value) {
  if (value >= 1) return ok_status();
  return field_error(field, "must be at least 1 (is " + std::to_string(value) + ")");
}

Status check_leaf_url(const std::string& field, const std::string& url) {
  const size_t scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme != "nats-leaf" && scheme != "nats" && scheme != "tls") {
    return field_error(field, model::quote(url) + " is not a nats-leaf://, nats:// or tls:// URL");
  }
  if (url.size() == scheme_end + 3) return field_error(field, model::quote(url) + " has no host");
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '"' || c == '\\' || c == 0x7f) {
      return field_error(field,
                         model::quote(url) + " contains a space, a quote or a control character");
    }
  }
  return ok_status();
}

Status validate_limits(const BusLimits& l) {
  CANOPY_RETURN_IF_ERROR(check_positive("limits.max_payload", l.max_payload));
  if (l.max_payload > kMaxPayloadCeiling) {
    return field_error("limits.max_payload",
                       "must be at most 8 MiB (is " + std::to_string(l.max_payload) + ")");
  }
  CANOPY_RETURN_IF_ERROR(check_positive("limits.max_connections", l.max_connections));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.max_memory_store", l.max_memory_store));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.max_file_store", l.max_file_store));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.tenant_max_memory", l.tenant_max_memory));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.tenant_max_file", l.tenant_max_file));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.tenant_max_consumers", l.tenant_max_consumers));
  if (l.tenant_max_memory > l.max_memory_store) {
    return field_error("limits.tenant_max_memory", "exceeds limits.max_memory_store");
  }
  if (l.tenant_max_file > l.max_file_store) {
    return field_error("limits.tenant_max_file", "exceeds limits.max_file_store");
  }
  CANOPY_RETURN_IF_ERROR(check_positive("limits.telemetry_max_bytes", l.telemetry_max_bytes));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.telemetry_max_age", l.telemetry_max_age.count()));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.telemetry_max_message", l.telemetry_max_message));
  if (l.telemetry_max_bytes > l.max_file_store) {
    return field_error("limits.telemetry_max_bytes", "exceeds limits.max_file_store");
  }
  if (l.telemetry_max_message > l.max_payload) {
    return field_error("limits.telemetry_max_message", "exceeds limits.max_payload");
  }
  CANOPY_RETURN_IF_ERROR(check_positive("limits.mqtt_ack_wait", l.mqtt_ack_wait.count()));
  CANOPY_RETURN_IF_ERROR(check_positive("limits.mqtt_consumer_inactive_threshold",
                                        l.mqtt_consumer_inactive_threshold.count()));
  if (l.mqtt_max_ack_pending < 1 || l.mqtt_max_ack_pending > kMaxAckPendingCeiling) {
    return field_error("limits.mqtt_max_ack_pending",
                       "must be in 1-65535 (is " + std::to_string(l.mqtt_max_ack_pending) + ")");
  }
  return ok_status();
}

// nats-server reserves each account's JetStream limits whole: if the
// tenants' limits add up to more than the server's, JetStream does not start
// (or a tenant added by reload gets none), so refuse that here.
Status check_reservations(const BusLimits& l, size_t tenants) {
  if (tenants == 0) return ok_status();
  const auto n = static_cast<int64_t>(tenants);
  // CANOPY's telemetry stream reserves telemetry_max_bytes of the file store.
  const struct {
    const char* field;
    int64_t each;
    const char* server_field;
    int64_t server;
    int64_t reserved;  // by CANOPY
  } checks[] = {
      {"tenant_max_memory", l.tenant_max_memory, "max_memory_store", l.max_memory_store, 0},
      {"tenant_max_file", l.tenant_max_file, "max_file_store", l.max_file_store,
       l.telemetry_max_bytes}};
  for (const auto& c : checks) {
    if (c.each > (c.server - c.reserved) / n) {
      return field_error(std::string("limits.") + c.field,
                         std::to_string(tenants) + " tenants x " + std::to_string(c.each) +
                             " bytes exceed limits." + c.server_field + " (" +
                             std::to_string(c.server) + ")" +
                             (c.reserved == 0 ? "" : " less limits.telemetry_max_bytes") +
                             ": nats-server reserves each tenant's limit whole; lower " + c.field +
                             " or raise " + c.server_field);
    }
  }
  return ok_status();
}

// A subject and the subtree under it, for allow lists.
void subtree(std::ostringstream& out, const std::string& subject) {
  out << quote_conf_string(subject) << ", " << quote_conf_string(subject + ".>");
}

void render_device(std::ostringstream& out, const BusTenant& t, const BusDevice& d) {
  const std::string root =
      d.scope == DeviceScope::kDevice ? "t." + t.name + ".d." + d.id : "t." + t.name;
  out << "      {user: " << quote_conf_string(device_user(t.name, d.id))
      << ", password: " << quote_conf_string(d.password_hash)
      << ", allowed_connection_types: [\"MQTT\"]\n"
      << "       permissions: {publish: {allow: [";
  subtree(out, root);
  out << "]}, subscribe: {allow: [";
  subtree(out, root);
  out << ", \"$MQTT.sub.>\"]}}}\n";
}

}  // namespace

StatusOr<DeviceScope> parse_device_scope(std::string_view text) {
  if (text == "device") return DeviceScope::kDevice;
  if (text == "tenant") return DeviceScope::kTenant;
  return invalid_argument(model::quote(text) + " is not a device scope (device or tenant)");
}

const char* device_scope_name(DeviceScope scope) {
  return scope == DeviceScope::kDevice ? "device" : "tenant";
}

std::string jetstream_domain(const BusSpec& spec) { return "site-" + spec.site; }
std::string tenant_account(std::string_view tenant) { return "tenant-" + std::string(tenant); }
std::string spoke_mqtt_user(std::string_view tenant) { return "_canopy@" + std::string(tenant); }
std::string device_user(std::string_view tenant, std::string_view device) {
  return std::string(device) + "@" + std::string(tenant);
}

Status validate_bus_spec(const BusSpec& s) {
  CANOPY_RETURN_IF_ERROR(check_label("site", s.site));
  if (s.dir.empty()) return field_error("dir", "required");
  if (s.mqtt_host.empty()) return field_error("mqtt_host", "required");
  for (char c : s.mqtt_host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':';
    if (!ok) return field_error("mqtt_host", model::quote(s.mqtt_host) + " is not a host");
  }
  CANOPY_RETURN_IF_ERROR(check_port("client_port", s.client_port, false));
  CANOPY_RETURN_IF_ERROR(check_port("mqtt_port", s.mqtt_port, false));
  CANOPY_RETURN_IF_ERROR(check_port("monitor_port", s.monitor_port, false));
  CANOPY_RETURN_IF_ERROR(check_port("leaf_port", s.leaf_port, true));
  std::set<int> ports;
  for (int p : {s.client_port, s.mqtt_port, s.monitor_port, s.leaf_port}) {
    if (p != 0 && !ports.insert(p).second) {
      return field_error("ports", "port " + std::to_string(p) + " is used by two listeners");
    }
  }
  if (s.leaf_urls.size() > kMaxLeafUrls) {
    return field_error("leaf_remote", "at most " + std::to_string(kMaxLeafUrls) + " URLs");
  }
  for (size_t i = 0; i < s.leaf_urls.size(); ++i) {
    CANOPY_RETURN_IF_ERROR(
        check_leaf_url("leaf_remote[" + std::to_string(i) + "]", s.leaf_urls[i]));
  }
  if (s.leaf_tls_cert_file.empty() != s.leaf_tls_key_file.empty()) {
    return field_error("leaf_tls", "a certificate and its key go together");
  }
  if (!is_bcrypt_hash(s.spoke_password_hash)) {
    return field_error("spoke_password_hash",
                       "not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 characters)");
  }
  CANOPY_RETURN_IF_ERROR(validate_limits(s.limits));
  if (s.tenants.size() > kMaxTenants) {
    return field_error("tenants", std::to_string(s.tenants.size()) + " tenants, more than the " +
                                      std::to_string(kMaxTenants) + " a site may have");
  }
  CANOPY_RETURN_IF_ERROR(check_reservations(s.limits, s.tenants.size()));
  std::set<std::string> tenant_names;
  size_t devices = 0;
  for (size_t i = 0; i < s.tenants.size(); ++i) {
    const BusTenant& t = s.tenants[i];
    const std::string tf = "tenants[" + std::to_string(i) + "]";
    CANOPY_RETURN_IF_ERROR(check_label(tf + ".name", t.name));
    if (!tenant_names.insert(t.name).second) {
      return field_error(tf + ".name", "tenant " + model::quote(t.name) + " appears twice");
    }
    devices += t.devices.size();
    if (devices > kMaxDevices) {
      return field_error(
          "tenants", "more than the " + std::to_string(kMaxDevices) + " devices a site may have");
    }
    std::set<std::string> ids;
    for (size_t j = 0; j < t.devices.size(); ++j) {
      const BusDevice& d = t.devices[j];
      const std::string df = tf + ".devices[" + std::to_string(j) + "]";
      CANOPY_RETURN_IF_ERROR(check_label(df + ".id", d.id));
      if (!ids.insert(d.id).second) {
        return field_error(df + ".id", "device " + model::quote(d.id) +
                                           " appears twice in tenant " + model::quote(t.name));
      }
      if (!is_bcrypt_hash(d.password_hash)) {
        return field_error(df + ".password_hash",
                           "not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 characters)");
      }
    }
  }
  return ok_status();
}

StatusOr<std::string> render_nats_config(const BusSpec& s) {
  CANOPY_RETURN_IF_ERROR(validate_bus_spec(s));
  const BusLimits& l = s.limits;
  const std::string loopback = "127.0.0.1:";
  std::ostringstream out;
  out << "# The site's device bus, generated by canopy-spoke from its bus spec.\n"
      << "# Rewritten (and reloaded) on every change: do not edit.\n"
      << "server_name: " << quote_conf_string(jetstream_domain(s)) << "\n"
      << "listen: " << quote_conf_string(loopback + std::to_string(s.client_port)) << "\n"
      << "http: " << quote_conf_string(loopback + std::to_string(s.monitor_port)) << "\n"
      << "logtime: false\n"
      << "max_payload: " << l.max_payload << "\n"
      << "max_connections: " << l.max_connections << "\n"
      << "jetstream {\n"
      << "  store_dir: " << quote_conf_string(s.dir + "/jetstream") << "\n"
      << "  domain: " << quote_conf_string(jetstream_domain(s)) << "\n"
      << "  max_memory_store: " << l.max_memory_store << "\n"
      << "  max_file_store: " << l.max_file_store << "\n"
      << "}\n"
      << "accounts {\n"
      << "  " << quote_conf_string(kCanopyAccount) << ": {\n"
      << "    users: [{user: " << quote_conf_string(kSpokeUser)
      << ", password: " << quote_conf_string(s.spoke_password_hash)
      << ", allowed_connection_types: [\"STANDARD\"]}]\n"
      // The telemetry buffer's stream (file storage only).
      << "    jetstream: {max_memory: 0, max_file: " << l.telemetry_max_bytes << "}\n";
  if (!s.tenants.empty()) {
    out << "    imports: [\n";
    for (const BusTenant& t : s.tenants) {
      out << "      {stream: {account: " << quote_conf_string(tenant_account(t.name))
          << ", subject: " << quote_conf_string("t." + t.name + ".>") << "}}\n";
    }
    out << "    ]\n";
  }
  out << "  }\n";
  for (const BusTenant& t : s.tenants) {
    out << "  " << quote_conf_string(tenant_account(t.name)) << ": {\n"
        << "    jetstream: {max_memory: " << l.tenant_max_memory
        << ", max_file: " << l.tenant_max_file << ", max_consumers: " << l.tenant_max_consumers
        << "}\n"
        << "    exports: [{stream: " << quote_conf_string("t." + t.name + ".>") << ", accounts: ["
        << quote_conf_string(kCanopyAccount) << "]}]\n"
        << "    users: [\n";
    for (const BusDevice& d : t.devices) render_device(out, t, d);
    // The spoke's own MQTT user in the account: it publishes desired twins
    // retained (only an MQTT PUBLISH is retained), under the tenant's topics.
    out << "      {user: " << quote_conf_string(spoke_mqtt_user(t.name))
        << ", password: " << quote_conf_string(s.spoke_password_hash)
        << ", allowed_connection_types: [\"MQTT\"]\n"
        << "       permissions: {publish: {allow: [" << quote_conf_string("t." + t.name + ".>")
        << "]}, subscribe: {allow: [\"$MQTT.sub.>\"]}}}\n";
    out << "    ]\n  }\n";
  }
  out << "}\n"
      << "mqtt {\n"
      << "  listen: " << quote_conf_string(s.mqtt_host + ":" + std::to_string(s.mqtt_port)) << "\n"
      << "  ack_wait: " << quote_conf_string(std::to_string(l.mqtt_ack_wait.count()) + "s") << "\n"
      << "  max_ack_pending: " << l.mqtt_max_ack_pending << "\n"
      << "  consumer_memory_storage: " << (l.mqtt_consumer_memory_storage ? "true" : "false")
      << "\n"
      << "  consumer_inactive_threshold: "
      << quote_conf_string(std::to_string(l.mqtt_consumer_inactive_threshold.count()) + "s") << "\n"
      << "}\n";
  if (s.leaf_port != 0 || !s.leaf_urls.empty()) {
    out << "leafnodes {\n";
    if (s.leaf_port != 0) {
      out << "  listen: " << quote_conf_string(loopback + std::to_string(s.leaf_port)) << "\n";
    }
    if (!s.leaf_urls.empty()) {
      out << "  remotes: [{urls: [";
      for (size_t i = 0; i < s.leaf_urls.size(); ++i) {
        out << (i ? ", " : "") << quote_conf_string(s.leaf_urls[i]);
      }
      // Telemetry subjects go up through the forwarder, never as they are.
      out << "], account: " << quote_conf_string(kCanopyAccount) << ", deny_exports: [";
      for (size_t i = 0; i < std::size(kTelemetrySubjects); ++i) {
        out << (i ? ", " : "") << quote_conf_string(kTelemetrySubjects[i]);
      }
      out << "]";
      if (!s.leaf_tls_ca_file.empty() || !s.leaf_tls_cert_file.empty()) {
        out << ", tls: {";
        const char* sep = "";
        if (!s.leaf_tls_cert_file.empty()) {
          out << "cert_file: " << quote_conf_string(s.leaf_tls_cert_file)
              << ", key_file: " << quote_conf_string(s.leaf_tls_key_file);
          sep = ", ";
        }
        if (!s.leaf_tls_ca_file.empty()) {
          out << sep << "ca_file: " << quote_conf_string(s.leaf_tls_ca_file);
        }
        out << "}";
      }
      out << "}]\n";
    }
    out << "}\n";
  }
  return out.str();
}

void use_leaf_tls(BusSpec* spec, const std::string& ca_file, const std::string& cert_file,
                  const std::string& key_file) {
  bool tls = false;
  for (const auto& url : spec->leaf_urls) tls = tls || url.rfind("tls://", 0) == 0;
  if (!tls) return;
  spec->leaf_tls_ca_file = ca_file;
  if (!cert_file.empty() && !key_file.empty()) {
    spec->leaf_tls_cert_file = cert_file;
    spec->leaf_tls_key_file = key_file;
  }
}

void use_leaf_credentials(BusSpec* spec, const std::string& user, const std::string& password) {
  if (user.empty()) return;
  for (auto& url : spec->leaf_urls) {
    const size_t scheme_end = url.find("://");
    if (scheme_end == std::string::npos) continue;
    const size_t host = scheme_end + 3;
    const size_t path = url.find('/', host);
    if (url.find('@', host) < path) continue;  // the operator's own credentials
    url.insert(host, user + ":" + password + "@");
  }
}

std::string redact_url(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return url;
  const size_t host = scheme_end + 3;
  const size_t at = url.find('@', host);
  if (at == std::string::npos || at > url.find('/', host)) return url;
  const size_t colon = url.find(':', host);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

std::string restart_only_difference(const BusSpec& a, const BusSpec& b) {
  if (a.site != b.site) return "site";
  if (a.dir != b.dir) return "dir";
  if (a.mqtt_host != b.mqtt_host) return "mqtt_host";
  if (a.client_port != b.client_port) return "client_port";
  if (a.mqtt_port != b.mqtt_port) return "mqtt_port";
  if (a.monitor_port != b.monitor_port) return "monitor_port";
  if (a.leaf_port != b.leaf_port) return "leaf_port";
  if (a.leaf_urls != b.leaf_urls) return "leaf_remote";
  if (a.leaf_tls_ca_file != b.leaf_tls_ca_file || a.leaf_tls_cert_file != b.leaf_tls_cert_file ||
      a.leaf_tls_key_file != b.leaf_tls_key_file) {
    return "leaf_tls";
  }
  if (a.limits.max_memory_store != b.limits.max_memory_store) return "limits.max_memory_store";
  if (a.limits.max_file_store != b.limits.max_file_store) return "limits.max_file_store";
  return "";
}

std::string quote_conf_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace canopy::spoke::bus
