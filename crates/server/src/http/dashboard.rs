//! The built-in dashboard: one page, one script and one stylesheet, compiled into the binary so
//! `cargo build` is the whole build (no Node.js step) and the page always matches the API.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#0f141a\"/>\
<polyline points=\"1,9 5,9 7,3 9,13 11,7 15,7\" fill=\"none\" stroke=\"#4fa3ff\" stroke-width=\"1.6\"/></svg>";

/// Scripts, styles, images and sockets from this origin only; nothing inline.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self'; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

pub async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}
