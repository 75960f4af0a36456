//! Who is calling `/api/v1`, and what they may do (DESIGN §7b).
//!
//! The bootstrap admin token is compared by SHA-256 in constant time, so neither the comparison's
//! timing nor a memory dump of the state reveals it. Anything else must be an org token: a JWT
//! found by its `jti`, signed by the signing certificate the store says signed it, active and not
//! expired; its org and role come from the store, not from the token. Tokens are never logged.
//!
//! Roles: `operator` manages certificates, `approver` approves or rejects signature requests,
//! `viewer` reads; every org token reads its own org; changes to orgs, signing certificates and
//! tokens are the admin's. An org token never reaches another org (403).

use aws_lc_rs::{constant_time, digest};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Serialize;
use time::OffsetDateTime;

use super::error::ApiError;
use super::{blocking, jwt, AdminState};
use crate::identity::OrgId;
use crate::store::{Audit, Role, TokenStatus};

/// Header carrying the reason an operator gives for a change (recorded in the audit event).
pub const REASON_HEADER: &str = "x-portcullis-reason";
const MAX_REASON_LEN: usize = 1000;

/// The authenticated caller of one request, with the reason it gave.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Principal {
    /// The bootstrap token: every org, every action.
    Admin,
    /// An org token.
    Token {
        org: OrgId,
        id: String,
        name: String,
        role: Role,
    },
}

/// What an endpoint needs of the caller in the org it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any role of the org.
    Read,
    /// `operator`.
    Manage,
    /// `approver`.
    Approve,
    /// The admin token only.
    Admin,
}

impl Need {
    const ALL: [Need; 4] = [Need::Read, Need::Manage, Need::Approve, Need::Admin];

    fn as_str(self) -> &'static str {
        match self {
            Need::Read => "read",
            Need::Manage => "manage",
            Need::Approve => "approve",
            Need::Admin => "admin",
        }
    }

    fn allows(self, role: Role) -> bool {
        match self {
            Need::Read => true,
            Need::Manage => role == Role::Operator,
            Need::Approve => role == Role::Approver,
            Need::Admin => false,
        }
    }
}

impl Caller {
    /// Ok when the caller may do `need` in `org`; else 403.
    pub fn require(&self, org: &OrgId, need: Need) -> Result<(), ApiError> {
        match &self.principal {
            Principal::Admin => Ok(()),
            Principal::Token { org: own, role, .. } if own == org && need.allows(*role) => Ok(()),
            Principal::Token { .. } => Err(ApiError::Forbidden),
        }
    }

    /// Ok for the admin token only (actions that span orgs); else 403.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.principal {
            Principal::Admin => Ok(()),
            Principal::Token { .. } => Err(ApiError::Forbidden),
        }
    }

    /// Who this is, for telling a requester from an approver: "admin" or the token's id.
    pub fn id(&self) -> &str {
        match &self.principal {
            Principal::Admin => "admin",
            Principal::Token { id, .. } => id,
        }
    }

    /// The role an org's `approval_required_roles` is checked against (`None`: the admin).
    pub fn role(&self) -> Option<Role> {
        match &self.principal {
            Principal::Admin => None,
            Principal::Token { role, .. } => Some(*role),
        }
    }

    /// Name and role, as audit events and logs show them.
    pub fn actor(&self) -> (&str, &str) {
        match &self.principal {
            Principal::Admin => ("admin", "admin"),
            Principal::Token { name, role, .. } => (name, role.as_str()),
        }
    }

    /// The audit event of `action` by this caller, with the reason of its `X-Portcullis-Reason`
    /// header; the store method that makes the change records it in the change's transaction.
    pub fn audit(&self, action: &str) -> Audit {
        self.audit_because(action, None)
    }

    /// [`Caller::audit`] with the reason given in the request's body (a signature request's, an
    /// approval's, a rejection's), which wins over the header's.
    pub fn audit_because(&self, action: &str, reason: Option<&str>) -> Audit {
        let (actor, actor_role) = self.actor();
        Audit {
            actor: actor.to_owned(),
            actor_role: actor_role.to_owned(),
            action: action.to_owned(),
            reason: reason.map(str::to_owned).or_else(|| self.reason.clone()),
        }
    }
}

/// Who the caller is, and what it may do: what a console or a script asks before it offers an
/// action, so that neither copies the table of roles.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoamiView {
    /// `admin` (the bootstrap token) or `token` (an org token).
    principal: &'static str,
    /// The org of an org token; `null` for the admin, who acts in every org.
    org: Option<String>,
    /// An org token's id and name.
    token_id: Option<String>,
    name: Option<String>,
    /// `admin`, `operator`, `approver` or `viewer`.
    role: &'static str,
    /// What it may do in its org (in every org, for the admin): `read`, `manage` (certificates,
    /// devices, sessions), `approve` (signature requests), `admin` (orgs, signing certificates,
    /// tokens).
    may: Vec<&'static str>,
}

#[utoipa::path(
    get,
    path = "/whoami",
    tag = "tokens",
    responses(
        (status = 200, description = "the caller", body = WhoamiView),
        (status = "4XX", description = "refused: `{\"error\": {\"code\", \"message\"}}`", body = super::views::ErrorView)
    ),
    security(("bearer" = []))
)]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoamiView> {
    Json(match caller.principal {
        Principal::Admin => WhoamiView {
            principal: "admin",
            org: None,
            token_id: None,
            name: None,
            role: "admin",
            may: Need::ALL.iter().map(|need| need.as_str()).collect(),
        },
        Principal::Token {
            org,
            id,
            name,
            role,
            ..
        } => WhoamiView {
            principal: "token",
            org: Some(org.as_str().to_owned()),
            token_id: Some(id),
            name: Some(name),
            role: role.as_str(),
            may: Need::ALL
                .iter()
                .filter(|need| need.allows(role))
                .map(|need| need.as_str())
                .collect(),
        },
    })
}

/// Middleware: 401 unless the bearer token is the admin token or a valid org token; the
/// [`Caller`] goes into the request's extensions.
pub async fn authenticate(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let reason = reason(request.headers())?;
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .ok_or(ApiError::Unauthorized)?;
    let principal = if token_matches(&state.admin_token_sha256, presented) {
        Principal::Admin
    } else {
        let token = presented.to_owned();
        blocking(move || org_token(&state, &token)).await?
    };
    request
        .extensions_mut()
        .insert(Caller { principal, reason });
    Ok(next.run(request).await)
}

/// The org token `token` is, verified against the store; 401 for anything else.
fn org_token(state: &AdminState, token: &str) -> Result<Principal, ApiError> {
    let unverified = jwt::parse(token).map_err(|_| ApiError::Unauthorized)?;
    let Some(record) = state.store.token(&unverified.claims.jti)? else {
        return Err(ApiError::Unauthorized);
    };
    let Some(signing_id) = record.signing_certificate.as_deref() else {
        return Err(ApiError::Unauthorized);
    };
    let Some(signing) = state.store.signing_cert(&record.org, signing_id)? else {
        return Err(ApiError::Unauthorized);
    };
    let claims = &unverified.claims;
    let valid = jwt::verify(&unverified, &signing.chain[0])
        && record.status != TokenStatus::Revoked
        && record.expires_at > OffsetDateTime::now_utc()
        && claims.org == record.org.as_str()
        && claims.iss == jwt::ISSUER
        && claims.aud == jwt::AUDIENCE;
    if !valid {
        return Err(ApiError::Unauthorized);
    }
    // The grant on the signing key may have expired since the token was last used: its expiry
    // suspends the token (DESIGN §11).
    let suspended = record.status == TokenStatus::Suspended
        || crate::grants::suspended(state.store.grant_of(&record.org, signing_id)?.as_ref());
    if suspended {
        return Err(ApiError::TokenSuspended);
    }
    Ok(Principal::Token {
        org: record.org,
        id: record.id,
        name: record.name,
        role: record.role,
    })
}

/// The optional reason header: at most 1,000 characters, no control characters.
fn reason(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(REASON_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_parameter(
            "invalid_reason",
            format!("{REASON_HEADER} must be UTF-8 text of at most {MAX_REASON_LEN} characters"),
        )
    };
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| bad())?
        .trim();
    if text.chars().count() > MAX_REASON_LEN || text.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// SHA-256 of the token: what `AdminState::admin_token_sha256` holds.
pub fn token_sha256(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn token_matches(expected_sha256: &[u8; 32], presented: &str) -> bool {
    constant_time::verify_slices_are_equal(&token_sha256(presented), expected_sha256).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn matching() {
        let h = token_sha256("secret");
        assert!(token_matches(&h, "secret"));
        assert!(!token_matches(&h, "secret2"));
        assert!(!token_matches(&h, ""));
    }

    #[test]
    fn roles_allow_what_the_design_says() {
        let acme = OrgId::parse("acme").unwrap();
        let other = OrgId::parse("other").unwrap();
        let token = |role| Caller {
            principal: Principal::Token {
                org: acme.clone(),
                id: "t".into(),
                name: "n".into(),
                role,
            },
            reason: None,
        };
        let table = [
            (Role::Viewer, [true, false, false, false]),
            (Role::Approver, [true, false, true, false]),
            (Role::Operator, [true, true, false, false]),
        ];
        for (role, allowed) in table {
            let caller = token(role);
            for (need, allowed) in [Need::Read, Need::Manage, Need::Approve, Need::Admin]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(
                    caller.require(&acme, need).is_ok(),
                    allowed,
                    "{role:?} {need:?}"
                );
                assert!(
                    caller.require(&other, need).is_err(),
                    "{role:?} reached another org"
                );
            }
            assert!(caller.require_admin().is_err());
        }
        let admin = Caller {
            principal: Principal::Admin,
            reason: None,
        };
        assert!(admin.require(&other, Need::Admin).is_ok() && admin.require_admin().is_ok());
    }
}
