//! The CRLs an org holds, as its client verifier consults them: moved to
//! [`crate::revocation::crl_set`], with the rest of revocation; named here still for the verifier.

pub use crate::revocation::crl_set::Revocations;
