// TLS settings of NatsTransport (NatsOptions.tls*): when TLS is on, which
// host name the server's certificate must carry, and how the files become
// NATS.c's SSL context. Internal to sync/nats_transport.cc.
//
// NATS.c (3.4, OpenSSL 3) verifies the server's chain against the CA file
// (the system's trusted CAs without one) and, given an expected host name,
// checks it with SSL_set1_host, which takes a DNS name or an IP address.
// Without an expected name NATS.c checks none, so a certificate for any
// name signed by the CA would pass: tls_server_name therefore defaults to
// the URLs' host, and URLs naming different hosts need it set.
#pragma once

#include <nats/nats.h>

#include <string>

#include "store/status.h"
#include "sync/nats_transport.h"

namespace canopy::sync::internal {

// Whether `o` asks for TLS: o.tls, or a tls:// URL.
bool tls_enabled(const NatsOptions& o);

// The host of "scheme://[user[:password]@]host[:port]" ("[::1]" -> "::1").
std::string url_host(const std::string& url);

// InvalidArgument when the TLS settings cannot work: a certificate without
// its key (or the reverse), a file that cannot be read, URLs naming
// different hosts without tls_server_name.
Status validate_tls(const NatsOptions& o);

// The name the server's certificate must carry (tls_server_name, else the
// URLs' host).
std::string tls_expected_host(const NatsOptions& o);

// Sets `opts` up for TLS per `o` (no-op unless tls_enabled). Errors name the
// setting and file, with OpenSSL's reason from NATS.c.
Status apply_tls(natsOptions* opts, const NatsOptions& o);

// What is wrong with this client's own certificate, seen locally: it
// expired or is not valid yet (with the date), or cannot be read; empty
// when nothing is, or without a client certificate. Under TLS 1.3 a server
// refuses a client certificate after the client's side of the handshake
// is done, so the client sees only a closed connection; this names the
// likely cause.
std::string client_cert_problem(const NatsOptions& o);

// The reason for a failed TLS connection, `why`, completed with what the
// client can tell: its certificate's problem, or that the server closed the
// connection after the handshake (it may have refused the certificate).
std::string explain_tls_failure(const NatsOptions& o, natsStatus s, const std::string& why);

}  // namespace canopy::sync::internal
