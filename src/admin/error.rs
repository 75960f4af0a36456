//! `ApiError`: every way a request fails, mapped to one status and one stable snake_case code in
//! `{"error": {"code", "message"}}`. Internal causes are logged here and never sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::views::{ErrorDetail, ErrorView};
use crate::pki::PkiError;
use crate::revocation::crl::CrlError;
use crate::store::{CsrStatus, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_request`: the body or query does not parse.
    #[error("{0}")]
    Malformed(String),
    /// 400 with its own code: a query parameter that parses but is out of range.
    #[error("{message}")]
    BadParameter { code: &'static str, message: String },
    /// 401: no token, or not a valid one.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 401: a valid token, suspended (by an operator, or because the grant on the key that
    /// signed it expired) until an operator reactivates it.
    #[error("this token is suspended; an operator can reactivate it")]
    TokenSuspended,
    /// 403: a valid token whose role (or org) does not allow this.
    #[error("this token's role does not allow this here")]
    Forbidden,
    /// 404: no such route, organisation or resource.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 on a known path.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// 409: the change conflicts with what is stored.
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: &'static str,
    },
    /// 413: larger than `admin.max_body_bytes`.
    #[error("request body is too large")]
    BodyTooLarge,
    /// 415: a body type this endpoint does not take.
    #[error("unsupported content type; send {0}")]
    UnsupportedMediaType(&'static str),
    /// 422 with its own code: well-formed but semantically invalid.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// 422 (or 500 for generation failures): an upload `pki` refused.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// 500 `internal`.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 503 `store_unavailable`: the store cannot be reached (PostgreSQL down); nothing changed.
    #[error("the store is unavailable; the change was not made, try again later")]
    StoreUnavailable,
    /// 500 `publish_failed`: committed, but the registry could not apply it.
    #[error("the change was saved but could not be applied to the live configuration")]
    Publish(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ApiError {
        ApiError::Internal(cause.into())
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn bad_parameter(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadParameter {
            code,
            message: message.into(),
        }
    }

    /// Maps an axum extractor rejection: 413 stays 413, anything else is a malformed request.
    pub fn from_rejection(status: StatusCode, text: String) -> ApiError {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge
        } else {
            ApiError::Malformed(text)
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) | ApiError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::TokenSuspended => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Pki(PkiError::Generate(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Pki(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) | ApiError::Publish(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed_request",
            ApiError::BadParameter { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::TokenSuspended => "token_suspended",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Invalid { code, .. } => code,
            ApiError::Pki(e) => pki_code(e),
            ApiError::Internal(_) => "internal",
            ApiError::Publish(_) => "publish_failed",
            ApiError::StoreUnavailable => "store_unavailable",
        }
    }

    /// The sentence the client sees: never an internal cause.
    fn message(&self) -> String {
        match self {
            ApiError::Internal(_) | ApiError::Pki(PkiError::Generate(_)) => {
                "Internal error; the cause is in the server log.".to_owned()
            }
            ApiError::Publish(_) => "The change was saved but could not be applied to the live \
                                     configuration; the cause is in the server log."
                .to_owned(),
            other => sentence(&other.to_string()),
        }
    }
}

/// The stable code of each `pki` refusal.
fn pki_code(e: &PkiError) -> &'static str {
    match e {
        PkiError::NotACertificate => "not_a_certificate",
        PkiError::MoreThanOneCertificate => "more_than_one_certificate",
        PkiError::NotACa => "not_a_ca",
        PkiError::NoKeyCertSign => "no_key_cert_sign",
        PkiError::NotYetValid => "not_yet_valid",
        PkiError::Expired => "expired",
        PkiError::NotAKey => "not_a_key",
        PkiError::PassphraseRequired => "passphrase_required",
        PkiError::PassphraseWrong => "passphrase_wrong",
        PkiError::KeyMismatch => "key_mismatch",
        PkiError::NamesDoNotFit(_) => "names_do_not_fit",
        PkiError::NoServerAuth => "no_server_auth",
        PkiError::NotP256Key => "not_p256_key",
        PkiError::NotACrl => "not_a_crl",
        PkiError::CrlSignatureInvalid => "crl_signature_invalid",
        PkiError::NotPkcs12 => "not_pkcs12",
        PkiError::Pkcs12PasswordWrong => "pkcs12_password_wrong",
        PkiError::Pkcs12NoKey => "pkcs12_no_key",
        PkiError::Pkcs12NoCertificate => "pkcs12_no_certificate",
        PkiError::Pkcs12KdfTooCostly => "pkcs12_kdf_too_costly",
        PkiError::Generate(_) => "internal",
    }
}

/// Upper-cases the first letter and ends with a full stop.
fn sentence(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut chars = s.chars();
    if let Some(first) = chars.next() {
        out.extend(first.to_uppercase());
        out.push_str(chars.as_str());
    }
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "admin request refused: the store is unavailable");
                ApiError::StoreUnavailable
            }
            StoreError::UnknownOrg => ApiError::NotFound("no such organisation"),
            StoreError::OrgExists => ApiError::Conflict {
                code: "org_exists",
                message: "an organisation with this id already exists",
            },
            StoreError::DuplicateCertificate => ApiError::Conflict {
                code: "duplicate_certificate",
                message: "this certificate is already registered for the organisation",
            },
            StoreError::CertificateActive => ApiError::Conflict {
                code: "certificate_active",
                message: "this is the organisation's active server certificate; activate \
                          another (or null for the platform default) first",
            },
            StoreError::SigningCertificateDefault => ApiError::Conflict {
                code: "signing_certificate_default",
                message: "this is the organisation's default signing certificate; make another \
                          the default first",
            },
            StoreError::NoSigningCertificate => ApiError::Conflict {
                code: "no_signing_certificate",
                message: "the organisation has no signing certificate; generate or import one",
            },
            StoreError::CsrStatus(status) => ApiError::Conflict {
                code: match status {
                    CsrStatus::Generated => "csr_generated",
                    CsrStatus::PendingApproval => "csr_pending_approval",
                    CsrStatus::Completed => "csr_completed",
                    CsrStatus::Rejected => "csr_rejected",
                },
                message: "the CSR's status does not allow this (its code names the status)",
            },
            StoreError::CrlOlder => ApiError::Conflict {
                code: "crl_older",
                message: "a CRL issued later is already held for this CA",
            },
            StoreError::GrantExpired => ApiError::Conflict {
                code: "grant_expired",
                message: "the access grant on this key is expired; renew it to sign with the key",
            },
            StoreError::TokenRevoked => ApiError::Conflict {
                code: "token_revoked",
                message: "the token is revoked and cannot change",
            },
            other => ApiError::internal(other),
        }
    }
}

impl From<CrlError> for ApiError {
    fn from(e: CrlError) -> ApiError {
        match e {
            CrlError::UnknownCa => ApiError::NotFound("no such CA certificate"),
            CrlError::Pki(e) => e.into(),
            CrlError::Store(e) => e.into(),
            CrlError::Publish(e) => ApiError::Publish(e),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "admin request failed")
            }
            ApiError::Publish(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "change saved but not published")
            }
            ApiError::Pki(e @ PkiError::Generate(_)) => {
                tracing::error!(error = %e, "certificate generation failed")
            }
            _ => {}
        }
        let body = ErrorView {
            error: ErrorDetail {
                code: self.code(),
                message: self.message(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// `cause: its source: …`, for one log field.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
