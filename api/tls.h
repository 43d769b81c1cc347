// TLS for the hub's listeners (docs/security.md, "TLS"): the serving
// certificate and key, and optionally a CA whose client certificates are then
// required (mTLS). Used for the HTTP listener (cpp-httplib's SSLServer over
// an OpenSSL context set up here) and for gRPC (api/grpc_server.h).
//
// Failed handshakes are logged on the server's side with the peer's address
// and OpenSSL's reason (the certificate the client sent does not verify, the
// client refused ours with an alert, no client certificate), at info, at
// most kMaxHandshakeLogsPerMinute a minute; a failed handshake only closes
// that connection.
#pragma once

#include <openssl/ssl.h>

#include <string>

#include "store/status.h"

namespace canopy::api {

struct TlsServerFiles {
  std::string cert_file;       // PEM: the certificate, then any intermediates
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CA(s); set: clients must present a certificate it issued

  bool enabled() const { return !cert_file.empty(); }
  bool requires_client_cert() const { return !client_ca_file.empty(); }
};

inline constexpr int kMaxHandshakeLogsPerMinute = 20;

// Reads the files into a server context: certificate chain, key (which must
// match it), TLS 1.2 at least, and with client_ca_file the client
// verification (peer certificate required). Errors name the file and
// OpenSSL's reason.
Status configure_server_tls(SSL_CTX* ctx, const TlsServerFiles& files);

// Whether the files make a usable server context (configure_server_tls on a
// scratch one): the certificate and key exist, are PEM and match.
Status check_server_tls(const TlsServerFiles& files);

// Reads a whole file; errors name it.
StatusOr<std::string> read_tls_file(const std::string& what, const std::string& path);

}  // namespace canopy::api
