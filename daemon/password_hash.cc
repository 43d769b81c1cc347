#include "daemon/password_hash.h"

#include <crypt.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "store/status.h"

namespace canopy::daemon {
namespace {

constexpr size_t kBcryptMaxPassword = 72;

void fill_random(unsigned char* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::getrandom(out + done, n - done, 0);
    if (r < 0 && errno == EINTR) continue;
    CANOPY_CHECK(r > 0);
    done += static_cast<size_t>(r);
  }
}

}  // namespace

StatusOr<std::string> bcrypt_hash(std::string_view password, int cost) {
  if (cost < kMinBcryptCost || cost > kMaxBcryptCost) {
    return invalid_argument("bcrypt cost " + std::to_string(cost) + " is not in 4-31");
  }
  if (password.size() > kBcryptMaxPassword) {
    return invalid_argument("password: longer than bcrypt's 72 bytes");
  }
  if (password.find('\0') != std::string_view::npos) {
    return invalid_argument("password: contains a NUL byte");
  }
  unsigned char entropy[16];
  fill_random(entropy, sizeof(entropy));
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn("$2b$", static_cast<unsigned long>(cost),
                       reinterpret_cast<const char*>(entropy), sizeof(entropy), setting,
                       sizeof(setting)) == nullptr) {
    return internal_error(std::string("crypt_gensalt_rn: ") + std::strerror(errno));
  }
  crypt_data data;
  std::memset(&data, 0, sizeof(data));
  const std::string pw(password);
  const char* hash = crypt_r(pw.c_str(), setting, &data);
  if (hash == nullptr || hash[0] == '*') {
    return internal_error(std::string("crypt_r: ") + std::strerror(errno));
  }
  return std::string(hash);
}

std::string random_password(size_t length) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::vector<unsigned char> bytes(length);
  fill_random(bytes.data(), bytes.size());
  std::string out;
  out.reserve(length);
  // 62 symbols: a byte taken modulo 62 is biased by under 1%, immaterial for
  // a 32-character secret of ~190 bits.
  for (unsigned char b : bytes) out += kAlphabet[b % (sizeof(kAlphabet) - 1)];
  return out;
}

}  // namespace canopy::daemon
