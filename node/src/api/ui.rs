//! `GET /ui`: the live web view, served by every node from assets compiled into the binary
//! (`node/ui/`: plain HTML, JavaScript and CSS; no build step, nothing fetched from elsewhere).
//!
//! The assets are open (a browser cannot send a bearer token when it navigates), and hold no
//! data: the page asks for the operator token, keeps it in the tab's `sessionStorage`, and
//! reads everything through the token-checked API with `fetch` and an `Authorization` header —
//! the change stream too, read as a `fetch` body rather than with `EventSource`, which cannot
//! set headers. A link may carry the token in its fragment (`/ui#token=...`), which never
//! reaches a server; the page moves it to `sessionStorage` and drops it from the address.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// Scripts and styles from this node only, no frames, no inline script: what the page needs
/// and nothing an injected string could use.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // A node upgraded in place serves its own page at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css`.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}
