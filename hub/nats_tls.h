// The hub's side of NATS over TLS: which files its NatsTransport uses
// (hub/config.h, nats_ca_file and the rest). By default the hub trusts its
// own CA for nats-server's certificate and presents a client certificate
// it issues itself from that CA at each start (CN canopy-hub-<name>, in
// <data_dir>/nats-tls/, key 0600): nothing to provision for mTLS beyond
// nats-server's own certificate. Issuing at each start also renews it.
#pragma once

#include "hub/config.h"
#include "store/status.h"
#include "sync/nats_transport.h"

namespace canopy::hub {

// Validity of the hub's own NATS client certificate; a hub restarts well
// within it (each start issues a new one).
constexpr int kHubNatsCertDays = 365;

// Fills `o`'s TLS settings from `config` when TLS is on (a tls:// URL or a
// nats_*_file set); a no-op otherwise. Needs the CA in <data_dir>/ca/
// (made by Enrollment::open before).
Status set_hub_nats_tls(const HubConfig& config, sync::NatsOptions* o);

}  // namespace canopy::hub
