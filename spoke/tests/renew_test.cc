// When a site certificate is due for renewal (spoke/renew.h), over real
// certificates.
#include "spoke/renew.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "daemon/identity.h"
#include "tests/support/temp_dir.h"

namespace canopy::spoke {
namespace {

TEST(RenewTest, DueAfterTheFractionOfItsLifetime) {
  auto ca = daemon::create_ca("ca", 1);
  ASSERT_TRUE(ca.ok());
  auto key = daemon::generate_private_key();
  auto csr = daemon::make_csr(*key, "s");
  auto cert = daemon::sign_csr_seconds(*ca, *csr, "s", 300);  // 300 s ahead, 300 s back
  ASSERT_TRUE(cert.ok());
  auto v = daemon::cert_validity(*cert);
  ASSERT_TRUE(v.ok());
  const uint64_t nb = v->not_before_ms;
  EXPECT_FALSE(renewal_due(*cert, 2.0 / 3, nb + 399'000).value());
  EXPECT_TRUE(renewal_due(*cert, 2.0 / 3, nb + 401'000).value());
  EXPECT_TRUE(renewal_due(*cert, 0.5, nb + 301'000).value());
  EXPECT_FALSE(renewal_due("not a certificate", 0.5, nb).ok());
}

TEST(RenewTest, WithoutIdentityFilesRenewalSaysWhatIsMissing) {
  testing::TempDir dir("canopy-renew-");
  Status st = renew_site_certificate(dir.file("data"), "http://127.0.0.1:1");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("site.crt"), std::string::npos) << st.to_string();
}

TEST(RenewTest, ACrashMidwayLeavesAMatchingPair) {
  testing::TempDir dir("canopy-renew-");
  const std::string data = dir.file("data");
  const std::string id = data + "/identity";
  auto ca = daemon::create_ca("ca", 1);
  ASSERT_TRUE(ca.ok());
  auto pair = [&] {
    auto key = daemon::generate_private_key();
    auto cert = daemon::sign_csr_seconds(*ca, *daemon::make_csr(*key, "s"), "s", 300);
    EXPECT_TRUE(cert.ok());
    return std::make_pair(*key, *cert);
  };
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  auto matches = [&] {
    return daemon::verify_cert(ca->cert_pem, read(id + "/site.crt"), read(id + "/site.key")).ok();
  };
  const auto old_pair = pair();
  const auto new_pair = pair();
  ASSERT_TRUE(daemon::write_private_file(id + "/site.key", old_pair.first).ok());
  ASSERT_TRUE(daemon::write_private_file(id + "/site.crt", old_pair.second).ok());

  // Crashed after the new key only: the old pair stays.
  ASSERT_TRUE(daemon::write_private_file(id + "/site.key.next", new_pair.first).ok());
  ASSERT_TRUE(complete_renewal(data).ok());
  EXPECT_EQ(read(id + "/site.crt"), old_pair.second);
  EXPECT_TRUE(matches());
  EXPECT_FALSE(std::filesystem::exists(id + "/site.key.next"));

  // Crashed after the key's rename, before the certificate's: finished.
  ASSERT_TRUE(daemon::write_private_file(id + "/site.key", new_pair.first).ok());
  ASSERT_TRUE(daemon::write_private_file(id + "/site.crt.next", new_pair.second).ok());
  EXPECT_FALSE(matches());
  ASSERT_TRUE(complete_renewal(data).ok());
  EXPECT_EQ(read(id + "/site.crt"), new_pair.second);
  EXPECT_TRUE(matches());
  EXPECT_FALSE(std::filesystem::exists(id + "/site.crt.next"));

  // Both written, neither renamed: finished.
  ASSERT_TRUE(daemon::write_private_file(id + "/site.key.next", old_pair.first).ok());
  ASSERT_TRUE(daemon::write_private_file(id + "/site.crt.next", old_pair.second).ok());
  ASSERT_TRUE(complete_renewal(data).ok());
  EXPECT_EQ(read(id + "/site.crt"), old_pair.second);
  EXPECT_TRUE(matches());
}

}  // namespace
}  // namespace canopy::spoke
