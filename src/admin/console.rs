//! `/console/`: the web console (DESIGN §13), static files built into the binary from the
//! top-level `console/` folder: plain HTML, ES modules and CSS, no build step, nothing fetched from
//! elsewhere. The files are public; everything they show comes from `/api/v1`, called by the page
//! with the operator's token (`Authorization: Bearer`), so serving them needs no token.
//!
//! Every console response, a 404 included, carries a Content-Security-Policy that allows scripts,
//! styles and requests from this origin only, with no inline script or style: a string from a
//! device or an operator that slipped into the page as markup still could not run. The page itself
//! shows every such string as text (`textContent`), never as HTML.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{middleware, Router};

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// One file of `console/`: its name under `/console/`, its media type and its content.
macro_rules! asset {
    ($name:literal, $media_type:expr) => {
        (
            $name,
            $media_type,
            include_str!(concat!("../../console/", $name)),
        )
    };
}

/// The console's files: name under `/console/`, media type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("ui.js", JS),
    asset!("pages/overview.js", JS),
    asset!("pages/cas.js", JS),
    asset!("pages/devices.js", JS),
    asset!("pages/sessions.js", JS),
    asset!("pages/events.js", JS),
    asset!("pages/refusals.js", JS),
    asset!("pages/blocklist.js", JS),
    asset!("pages/audit.js", JS),
    asset!("pages/server-certs.js", JS),
    asset!("pages/approvals.js", JS),
    asset!("pages/tokens.js", JS),
    asset!("pages/grants.js", JS),
    asset!("pages/notifications.js", JS),
    asset!("pages/settings.js", JS),
];

/// `/console` (redirected to `/console/`, so that the page's relative paths resolve under it),
/// `/console/` and `/console/<file>`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { asset("index.html") }))
        .route(
            "/console/{*file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
        .layer(middleware::map_response(secure))
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, media_type, content)) => {
            ([(header::CONTENT_TYPE, *media_type)], *content).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response(),
    }
}

/// The headers of every console response.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // A new binary's console is used at once, not a cached older one.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::ASSETS;

    /// The files under `dir`, as paths relative to `root` with `/` between folders.
    fn files(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).unwrap();
                let parts: Vec<_> = relative.iter().map(|p| p.to_str().unwrap()).collect();
                found.push(parts.join("/"));
            }
        }
    }

    #[test]
    fn every_file_of_the_console_is_served() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut found = Vec::new();
        files(&root, &root, &mut found);
        found.sort();
        let mut served: Vec<_> = ASSETS.iter().map(|(name, _, _)| name.to_string()).collect();
        served.sort();
        assert_eq!(found, served, "console/ and ASSETS differ");
        for (name, media_type, _) in ASSETS {
            let expected = match name.rsplit('.').next() {
                Some("js") => super::JS,
                Some("css") => super::CSS,
                Some("html") => super::HTML,
                _ => panic!("{name}: no media type for its extension"),
            };
            assert_eq!(media_type, &expected, "{name}");
        }
    }
}
