// KubeEndpoint: how the spoke reaches its site's Kubernetes API server, read
// from a kubeconfig file or from a pod's service-account files.
//
// Kubeconfig (as kubectl reads it, k8s.io/client-go/tools/clientcmd): the
// context named `context`, or `current-context` when empty; its cluster's
// `server`, `certificate-authority` (a file, relative paths from the
// kubeconfig's directory) or `certificate-authority-data` (base64 PEM),
// `insecure-skip-tls-verify`; its user's `token`, `tokenFile`,
// `client-certificate`/`client-key` (files) or `-data` (base64 PEM). Left out:
// exec and auth-provider plugins, username/password, proxies, several files
// merged through $KUBECONFIG: each is an error that names it, not a silent
// anonymous connection.
//
// In cluster (rest.InClusterConfig): https://$KUBERNETES_SERVICE_HOST:
// $KUBERNETES_SERVICE_PORT, the CA `ca.crt` and token file `token` of the
// service-account directory (the token file is re-read, as it rotates).
//
// Every error names the file, the context and the field.
#pragma once

#include <string>

#include "store/status.h"

namespace canopy::spoke::kube {

struct KubeEndpoint {
  std::string server;  // https://host[:port]
  std::string ca_pem;  // empty: the system's trust store
  bool insecure_skip_tls_verify = false;
  std::string token;       // a bearer token
  std::string token_file;  // read at each connection (rotating tokens)
  std::string client_cert_pem;
  std::string client_key_pem;
  std::string source;  // where it came from, for messages
};

StatusOr<KubeEndpoint> load_kubeconfig(const std::string& path, const std::string& context = "");

inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";
StatusOr<KubeEndpoint> in_cluster_endpoint(
    const std::string& service_account_dir = kServiceAccountDir);

// The bytes of base64 `text` (whitespace ignored); InvalidArgument if malformed.
StatusOr<std::string> decode_base64(const std::string& text);

}  // namespace canopy::spoke::kube
