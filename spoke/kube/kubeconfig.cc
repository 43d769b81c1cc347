#include "spoke/kube/kubeconfig.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace canopy::spoke::kube {
namespace {

StatusOr<std::string> read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return failed_precondition(what + ": cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  return base_dir + "/" + path;
}

// The entry named `name` of a kubeconfig list (`clusters`, `contexts`,
// `users`): its inner map (`cluster`, `context`, `user`).
StatusOr<YAML::Node> named(const YAML::Node& root, const char* list, const char* inner,
                           const std::string& name, const std::string& where) {
  const YAML::Node items = root[list];
  if (items && items.IsSequence()) {
    for (const YAML::Node& item : items) {
      if (item["name"] && item["name"].as<std::string>() == name) {
        if (!item[inner] || !item[inner].IsMap()) {
          return invalid_argument(where + ": " + list + " entry '" + name + "' has no " + inner);
        }
        return item[inner];
      }
    }
  }
  return invalid_argument(where + ": no " + std::string(inner) + " named '" + name + "' in " +
                          list);
}

std::string str(const YAML::Node& n, const char* key) {
  return n[key] && n[key].IsScalar() ? n[key].as<std::string>() : std::string();
}

// A PEM value from `<key>` (a file) or `<key>-data` (base64).
StatusOr<std::string> pem_field(const YAML::Node& n, const std::string& key,
                                const std::string& base_dir, const std::string& where) {
  const std::string data = str(n, (key + "-data").c_str());
  if (!data.empty()) {
    auto decoded = decode_base64(data);
    if (!decoded.ok()) return invalid_argument(where + ": " + key + "-data: not base64");
    return decoded;
  }
  const std::string file = str(n, key.c_str());
  if (file.empty()) return std::string();
  return read_text(resolve(base_dir, file), where + ": " + key);
}

}  // namespace

StatusOr<std::string> decode_base64(const std::string& text) {
  std::string clean;
  clean.reserve(text.size());
  for (char c : text) {
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') clean.push_back(c);
  }
  if (clean.size() % 4 != 0) return invalid_argument("base64: length not a multiple of 4");
  std::string out(clean.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(clean.data()),
                                static_cast<int>(clean.size()));
  if (n < 0) return invalid_argument("base64: malformed");
  size_t size = static_cast<size_t>(n);
  if (!clean.empty() && clean.back() == '=') --size;
  if (clean.size() >= 2 && clean[clean.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

StatusOr<KubeEndpoint> load_kubeconfig(const std::string& path, const std::string& context) {
  auto text = read_text(path, "kubeconfig");
  if (!text.ok()) return text.status();
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    return invalid_argument("kubeconfig " + path + ": not YAML: " + e.what());
  }
  if (!root.IsMap()) return invalid_argument("kubeconfig " + path + ": not a mapping");
  std::string ctx_name = context.empty() ? str(root, "current-context") : context;
  if (ctx_name.empty()) {
    return invalid_argument("kubeconfig " + path + ": no context given and no current-context set");
  }
  const std::string where = "kubeconfig " + path + " context " + ctx_name;
  auto ctx = named(root, "contexts", "context", ctx_name, where);
  if (!ctx.ok()) return ctx.status();
  const std::string cluster_name = str(*ctx, "cluster");
  const std::string user_name = str(*ctx, "user");
  if (cluster_name.empty()) return invalid_argument(where + ": the context names no cluster");
  auto cluster = named(root, "clusters", "cluster", cluster_name, where);
  if (!cluster.ok()) return cluster.status();
  const std::string base = dir_of(path);

  KubeEndpoint e;
  e.source = where;
  e.server = str(*cluster, "server");
  if (e.server.rfind("https://", 0) != 0 && e.server.rfind("http://", 0) != 0) {
    return invalid_argument(where + ": cluster '" + cluster_name + "' server '" + e.server +
                            "' is not an http(s) URL");
  }
  e.insecure_skip_tls_verify = str(*cluster, "insecure-skip-tls-verify") == "true";
  auto ca = pem_field(*cluster, "certificate-authority", base, where);
  if (!ca.ok()) return ca.status();
  e.ca_pem = std::move(*ca);
  if ((*cluster)["proxy-url"]) return invalid_argument(where + ": proxy-url is not supported");

  if (!user_name.empty()) {
    auto user = named(root, "users", "user", user_name, where);
    if (!user.ok()) return user.status();
    for (const char* unsupported : {"exec", "auth-provider", "username", "password"}) {
      if ((*user)[unsupported]) {
        return invalid_argument(where + ": user '" + user_name + "': " + unsupported +
                                " is not supported (use a token or a client certificate)");
      }
    }
    e.token = str(*user, "token");
    const std::string token_file = str(*user, "tokenFile");
    if (!token_file.empty()) e.token_file = resolve(base, token_file);
    auto cert = pem_field(*user, "client-certificate", base, where);
    if (!cert.ok()) return cert.status();
    auto key = pem_field(*user, "client-key", base, where);
    if (!key.ok()) return key.status();
    if (cert->empty() != key->empty()) {
      return invalid_argument(where + ": user '" + user_name +
                              "' has a client certificate without its key or a key "
                              "without its certificate");
    }
    e.client_cert_pem = std::move(*cert);
    e.client_key_pem = std::move(*key);
  }
  return e;
}

StatusOr<KubeEndpoint> in_cluster_endpoint(const std::string& service_account_dir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr || *host == '\0' || *port == '\0') {
    return failed_precondition(
        "in cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a "
        "pod? give a kubeconfig)");
  }
  KubeEndpoint e;
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6
  e.server = "https://" + h + ":" + port;
  auto ca = read_text(service_account_dir + "/ca.crt", "in cluster: CA");
  if (!ca.ok()) return ca.status();
  e.ca_pem = std::move(*ca);
  e.token_file = service_account_dir + "/token";
  e.source = "in-cluster service account " + service_account_dir;
  return e;
}

}  // namespace canopy::spoke::kube
