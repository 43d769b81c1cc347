// TestCluster: a FakeApiServer with its PKI and kubeconfig files, the way a
// test (or a person, through canopy-test-apiserver) meets a cluster.
//
// start() makes a CA for the server and one for clients, a server
// certificate for 127.0.0.1 and localhost, a client certificate for user
// "canopy-admin" (group system:masters), a bearer token for user
// "canopy-token", starts the server, and writes into `dir`:
//   ca.crt                   the server's CA
//   server-ca.*, client-ca.* both CAs with their keys (reused by a restart
//                            with reuse_pki)
//   client.crt, client.key   the client certificate and key
//   kubeconfig-token         a kubeconfig with the token user
//   kubeconfig-cert          a kubeconfig with the certificate user (files
//                            referenced by path)
// Both kubeconfigs use certificate-authority-data. Thread-safe as the server.
#pragma once

#include <memory>
#include <string>

#include "store/status.h"
#include "tests/kubeapi/fake_apiserver.h"
#include "tests/kubeapi/test_pki.h"

namespace canopy::kubeapi {

struct TestClusterOptions {
  int port = 0;
  std::string token = "canopy-test-token";
  // Load the CAs from `dir` when a previous start left them there (a
  // restarted cluster its kubeconfigs still trust); they are always saved.
  bool reuse_pki = false;
  ApiHandlerOptions api;
};

class TestCluster {
 public:
  static StatusOr<std::unique_ptr<TestCluster>> start(const std::string& dir,
                                                      TestClusterOptions options = {});

  FakeApiServer& server() { return *server_; }
  const KeyPair& server_ca() const { return server_ca_; }
  const KeyPair& client_ca() const { return client_ca_; }
  const std::string& token() const { return token_; }
  std::string kubeconfig_token() const { return dir_ + "/kubeconfig-token"; }
  std::string kubeconfig_cert() const { return dir_ + "/kubeconfig-cert"; }

 private:
  std::string dir_;
  std::string token_;
  KeyPair server_ca_;
  KeyPair client_ca_;
  std::unique_ptr<FakeApiServer> server_;
};

// A kubeconfig (YAML) for `server_url` trusting `ca_pem`, whose user has the
// given `user_fields` (YAML lines under `user:`, e.g. "token: abc").
std::string kubeconfig_yaml(const std::string& server_url, const std::string& ca_pem,
                            const std::string& user_fields);

std::string base64(const std::string& data);

}  // namespace canopy::kubeapi
