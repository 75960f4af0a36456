//! Bearer-token authentication of `/api/v1`: the token's SHA-256 is compared in constant time with
//! the admin token's, so neither the comparison's timing nor a memory dump of the state reveals
//! the token. Tokens are never logged.

use aws_lc_rs::{constant_time, digest};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::AdminState;

/// Middleware: 401 unless `Authorization: Bearer <admin token>`.
pub async fn require_admin(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(token) if token_matches(&state.admin_token_sha256, token) => {
            Ok(next.run(request).await)
        }
        _ => Err(ApiError::Unauthorized),
    }
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
}
