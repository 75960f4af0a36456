//! MQTT: the delivery rules, the topic policy, and the session that binds a verified TLS identity
//! to a CONNECT and forwards it to the embedded broker. The packet codec ([`crate::codec`]) sits
//! below both this module and the broker, which speak it alike.

pub mod delivery;
pub mod filters;
pub mod session;
pub mod topics;
