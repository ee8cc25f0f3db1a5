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
pub(super) const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self'; \
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

/// The log-out button, shown only when reading needs a token.
const LOGOUT: &str = r#"<form method="post" action="/logout" class="logout"><button type="submit">Log out</button></form>"#;

pub async fn index(axum::extract::State(state): axum::extract::State<super::AppState>) -> Response {
    if state.read_access.is_open() {
        let mut page = asset("text/html; charset=utf-8", "");
        *page.body_mut() = INDEX.replace(LOGOUT, "").into();
        page
    } else {
        asset("text/html; charset=utf-8", INDEX)
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_holds_the_log_out_form_it_hides_when_reading_is_open() {
        assert_eq!(super::INDEX.matches(super::LOGOUT).count(), 1);
    }
}
