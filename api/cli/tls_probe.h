// kubectl-canopy's TLS to the hub: the settings (--ca, --cert, --key) and,
// when gRPC reports a failed handshake (it says little more than that), a
// probe of the hub's address with OpenSSL that finds the reason a user can
// act on: the hub's certificate was not issued by the CA in --ca, it has
// expired, it does not name the host dialled, or the hub refused (or wants)
// a client certificate.
#pragma once

#include <string>

namespace canopy::cli {

struct ClientTls {
  bool enabled = false;
  std::string ca_file;    // PEM roots; empty: the system's
  std::string cert_file;  // client certificate (mTLS), with key_file
  std::string key_file;
  // The files' contents (load_client_tls).
  std::string ca_pem, cert_pem, key_pem;
};

// Reads the files named in `tls`; fails (Failure) naming a file that cannot
// be read, or a certificate without its key.
void load_client_tls(ClientTls* tls);

// Why a TLS handshake with `address` (host:port) fails, in words with what
// to check; empty when the probe finds nothing wrong.
std::string probe_tls(const std::string& address, const ClientTls& tls);

}  // namespace canopy::cli
