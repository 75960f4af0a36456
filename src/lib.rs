//! Portcullis: an MQTT front-end that lets only authenticated devices in.
//!
//! # Layout
//!
//! One connection, top-down:
//!
//! ```text
//! device ──TCP──▶ listener ──▶ tls (ClientHello → SNI → org → that org's ServerConfig:
//!                                server cert + client verifier over the org's active CAs)
//!                          ──▶ identity (cert CN / SAN email → d|g|a identity)
//!                          ──▶ mqtt::session (CONNECT check, client id binding, topic mapping,
//!                                v3.1.1 ⇄ v5 translation) ──local link──▶ broker (rumqttd)
//! operator ──HTTP──▶ admin ──▶ store (SQLite) ──▶ registry snapshot (ArcSwap) ──▶ tls / sessions
//! ```
//!
//! - [`config`]: raw (serde) → validated [`config::Config`].
//! - [`server`]: bind every listener, report addresses, run until shutdown, drain.
//! - [`listener`]: the MQTTS accept loop, connection limits, one task per connection; the admin
//!   listener's loop under its own limit and deadlines.
//! - [`tls`]: the handshake under one deadline (the caller routes SNI and admits the verified
//!   chain); an org's `ServerConfig` built from plain inputs; the per-org client verifier; session
//!   tickets sealed with the org's rotating keys (the registry brings them from the store); the
//!   session's stream over rustls's unbuffered connection, which holds no buffer while idle.
//! - [`crypto`]: the one crypto provider that `tls` and `ocsp` both use.
//! - [`identity`]: the identity grammar of certificates and MQTT client ids.
//! - [`revocation`]: what keeps a device out or ends its session — CRLs checked and held
//!   (uploaded or fetched from `crl_url`) and as a handshake checks them, OCSP status (cached, one
//!   request per certificate at once), the blocklist — and the verdict that combines them.
//! - [`mqtt`]: delivery rules, topic policy and the session: admission (CONNECT → admitted or a
//!   CONNACK refusal), the forwarder (packets both ways, tested on packets), the glue.
//! - [`refusal`]: every refusal reason in one table (labels, CONNACK codes), read by `listener`,
//!   `tls`, `registry` and `mqtt`.
//! - [`broker`]: the embedded rumqttd; nothing outside it names a rumqttd type.
//! - [`codec`]: the MQTT 3.1.1 + 5 packet codec for untrusted bytes (never panics), the lowest
//!   layer: the session and the broker both speak it.
//! - [`registry`]: the live snapshot the hot path reads (it routes SNI to an org and admits the
//!   peer a handshake verified), the live-session table, OCSP asked again for live sessions.
//! - [`devices`]: the device registry's writer, behind the connect path.
//! - [`health`]: this node among several (DESIGN §12): store reachability and snapshot age for
//!   `/healthz/detail`, the heartbeat in `nodes`, other nodes' changes turned into publishes.
//! - [`events`]: connects, disconnects and refusals, broadcast to the admin API's event stream.
//! - [`store`]: the storage interface ([`store::Store`], one trait per area, shared as
//!   `Arc<dyn Store>`) and its SQLite implementation: schema, migrations, queries, keys encrypted
//!   at rest.
//! - [`grants`]: access grants' policy (terms, status, suspension), above the store that keeps
//!   their rows and counts their uses.
//! - [`pki`]: certificate parsing and checks; keys (PKCS#8, PKCS#12, KDF caps); CRLs; platform CA
//!   and certificate generation.
//! - [`admin`]: the HTTP admin API.
//! - [`cluster`]: what nodes tell each other through the store: takeovers and disconnects of
//!   sessions on other nodes, work for the leader's notifier.
//! - [`leader`]: one leader per cluster (PostgreSQL advisory lock; always this node on SQLite)
//!   runs the notifier and the CRL fetches.
//! - [`notify`]: expiry, grant, CRL and OCSP notices by e-mail and signed webhooks, once a day.
//! - [`fetch`]: outbound HTTP (OCSP, CRL downloads, webhooks) under one deadline.
//! - [`cli`]: the operator CLI (`portcullis <verb>`), a client of the admin API over [`fetch`].
//! - [`clock`]: the clock expiry, notices and grants read (tests move a manual one); RFC 3339.
//! - [`metrics`]: metric names and descriptions in one place.

pub mod admin;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod devices;
pub mod events;
pub mod fetch;
pub mod grants;
pub mod health;
pub mod identity;
pub mod leader;
pub mod listener;
pub mod metrics;
pub mod mqtt;
pub mod notify;
pub mod pki;
pub mod refusal;
pub mod registry;
pub mod revocation;
pub mod server;
pub mod store;
pub mod tls;

/// OCSP, named at its old path still (`revocation::ocsp`).
pub use revocation::ocsp;
