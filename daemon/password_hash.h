// Passwords as bcrypt hashes, the form nats-server checks client and MQTT
// CONNECT passwords against: devices' (spoke/bus/bus_spec.h) and enrolled
// sites' NATS users (hub/enrollment.h). Made with libxcrypt's bcrypt ($2b$), so
// neither the spoke nor the hub keeps a device's password, only its hash.
#pragma once

#include <string>
#include <string_view>

#include "store/status.h"

namespace canopy::daemon {

// Costs accepted by bcrypt; each step doubles the time of a check (cost 10
// takes tens of milliseconds, paid by nats-server at each device connect).
inline constexpr int kMinBcryptCost = 4;
inline constexpr int kMaxBcryptCost = 31;
inline constexpr int kDefaultBcryptCost = 10;

// A bcrypt hash of `password` with a fresh random salt. InvalidArgument for a
// cost outside 4-31 or a password bcrypt would truncate (over 72 bytes) or
// that holds a NUL; Internal if libxcrypt fails.
StatusOr<std::string> bcrypt_hash(std::string_view password, int cost = kDefaultBcryptCost);

// A random password of `length` characters of [A-Za-z0-9] from the system's
// CSPRNG (getrandom), for the spoke's own user.
std::string random_password(size_t length);

}  // namespace canopy::daemon
