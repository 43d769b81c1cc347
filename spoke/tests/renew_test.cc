// When a site certificate is due for renewal (spoke/renew.h), over real
// certificates.
#include "spoke/renew.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace canopy::spoke
