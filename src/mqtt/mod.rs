//! MQTT: the codec for untrusted bytes, the topic policy, and the session that binds a verified
//! TLS identity to a CONNECT and forwards it to the embedded broker.

pub mod codec;
pub mod delivery;
pub mod filters;
pub mod session;
pub mod topics;
