#include "tests/kubeapi/test_cluster.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

namespace canopy::kubeapi {
namespace {

Status write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) return unavailable("cannot write " + path);
  return ok_status();
}

}  // namespace

std::string base64(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string kubeconfig_yaml(const std::string& server_url, const std::string& ca_pem,
                            const std::string& user_fields) {
  return "apiVersion: v1\n"
         "kind: Config\n"
         "clusters:\n"
         "- name: canopy-test\n"
         "  cluster:\n"
         "    server: " +
         server_url +
         "\n"
         "    certificate-authority-data: " +
         base64(ca_pem) +
         "\n"
         "users:\n"
         "- name: canopy-test\n"
         "  user:\n"
         "    " +
         user_fields +
         "\n"
         "contexts:\n"
         "- name: canopy-test\n"
         "  context:\n"
         "    cluster: canopy-test\n"
         "    user: canopy-test\n"
         "current-context: canopy-test\n";
}

StatusOr<std::unique_ptr<TestCluster>> TestCluster::start(const std::string& dir,
                                                          TestClusterOptions options) {
  auto c = std::make_unique<TestCluster>();
  c->dir_ = dir;
  c->token_ = options.token;
  // A restarted server keeps its CAs (its clients' kubeconfigs stay valid),
  // as a real cluster's restart does.
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  };
  if (options.reuse_pki && std::ifstream(dir + "/server-ca.key").good()) {
    c->server_ca_ = {read(dir + "/server-ca.crt"), read(dir + "/server-ca.key")};
    c->client_ca_ = {read(dir + "/client-ca.crt"), read(dir + "/client-ca.key")};
  } else {
    auto server_ca = make_certificate_authority("canopy-test-server-ca");
    auto client_ca = make_certificate_authority("canopy-test-client-ca");
    if (!server_ca.ok()) return server_ca.status();
    if (!client_ca.ok()) return client_ca.status();
    c->server_ca_ = *server_ca;
    c->client_ca_ = *client_ca;
    CANOPY_RETURN_IF_ERROR(write_file(dir + "/server-ca.crt", c->server_ca_.cert_pem));
    CANOPY_RETURN_IF_ERROR(write_file(dir + "/server-ca.key", c->server_ca_.key_pem));
    CANOPY_RETURN_IF_ERROR(write_file(dir + "/client-ca.crt", c->client_ca_.cert_pem));
    CANOPY_RETURN_IF_ERROR(write_file(dir + "/client-ca.key", c->client_ca_.key_pem));
  }
  CertificateRequest server_req;
  server_req.common_name = "kube-apiserver";
  server_req.ip_addresses = {"127.0.0.1"};
  server_req.dns_names = {"localhost"};
  server_req.server = true;
  auto server_cert = make_certificate(c->server_ca_, server_req);
  if (!server_cert.ok()) return server_cert.status();
  CertificateRequest client_req;
  client_req.common_name = "canopy-admin";
  client_req.organizations = {"system:masters"};
  auto client_cert = make_certificate(c->client_ca_, client_req);
  if (!client_cert.ok()) return client_cert.status();

  FakeApiServerOptions so;
  so.server_cert_pem = server_cert->cert_pem;
  so.server_key_pem = server_cert->key_pem;
  so.client_ca_pem = c->client_ca_.cert_pem;
  so.tokens[options.token] = "canopy-token";
  so.port = options.port;
  so.api = options.api;
  auto server = FakeApiServer::start(std::move(so));
  if (!server.ok()) return server.status();
  c->server_ = std::move(*server);

  std::string url = c->server_->url();
  CANOPY_RETURN_IF_ERROR(write_file(dir + "/ca.crt", c->server_ca_.cert_pem));
  CANOPY_RETURN_IF_ERROR(write_file(dir + "/client.crt", client_cert->cert_pem));
  CANOPY_RETURN_IF_ERROR(write_file(dir + "/client.key", client_cert->key_pem));
  CANOPY_RETURN_IF_ERROR(
      write_file(c->kubeconfig_token(),
                 kubeconfig_yaml(url, c->server_ca_.cert_pem, "token: " + options.token)));
  CANOPY_RETURN_IF_ERROR(write_file(c->kubeconfig_cert(),
                                    kubeconfig_yaml(url, c->server_ca_.cert_pem,
                                                    "client-certificate: " + dir + "/client.crt\n" +
                                                        "    client-key: " + dir + "/client.key")));
  return c;
}

}  // namespace canopy::kubeapi
