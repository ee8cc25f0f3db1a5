//! Who may read. The API, the live socket, the dashboard and `/metrics` answer a request only when
//! it carries one of the configured API tokens: as `Authorization: Bearer <token>`, or as the
//! dashboard's session cookie, set once by `POST /login` (`HttpOnly`, `SameSite=Strict`). With no
//! token configured reading is open, which the server allows only on a loopback address (or with
//! `--insecure-no-auth`). Webhooks and application events have their own credentials and never
//! accept these tokens. Tokens are compared in constant time (as SHA-256 digests, so their
//! lengths do not leak either) and never logged.

use super::{ApiError, AppState};
use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The dashboard's session cookie.
pub const COOKIE: &str = "callpulse_token";
/// A session lasts 30 days.
const COOKIE_MAX_AGE: u32 = 30 * 86_400;
/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a configured API token is refused at start.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("API token {0} is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort(usize),
    #[error(
        "API token {0} has characters other than letters, digits and `-._~+/=` (it must fit in a \
         cookie and a header)"
    )]
    BadCharacter(usize),
}

/// The read tokens, as digests; empty means reading is open.
#[derive(Clone, Default)]
pub struct ReadAccess {
    digests: Arc<Vec<[u8; 32]>>,
    secure_cookie: bool,
}

impl ReadAccess {
    /// Checks each token (numbered from 1 in errors, never shown).
    pub fn new(tokens: &[String], secure_cookie: bool) -> Result<ReadAccess, TokenError> {
        for (i, t) in tokens.iter().enumerate() {
            if t.len() < MIN_TOKEN_LEN {
                return Err(TokenError::TooShort(i + 1));
            }
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
            {
                return Err(TokenError::BadCharacter(i + 1));
            }
        }
        Ok(ReadAccess {
            digests: Arc::new(tokens.iter().map(|t| digest(t)).collect()),
            secure_cookie,
        })
    }

    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens. Every token is compared, match or not.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        self.digests
            .iter()
            .fold(false, |ok, d| ok | bool::from(d.ct_eq(&presented)))
    }

    /// Whether the request may read.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        self.is_open() || presented_token(headers).is_some_and(|t| self.accepts(t))
    }

    fn cookie(&self, value: &str, max_age: u32) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        ))
        .expect("tokens are checked to be header-safe")
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The bearer token, else the session cookie's.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Middleware on every read route: lets an authorised request through; sends a browser asking for
/// the dashboard to the login page; answers anything else 401.
pub async fn require_reader(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.read_access.allows(request.headers()) {
        return next.run(request).await;
    }
    if request.uri().path() == "/" {
        return Redirect::to("/login").into_response();
    }
    ApiError::Unauthorized {
        code: "invalid_token",
        detail: "reading needs an API token: send `Authorization: Bearer <token>`, or log in at \
                 /login"
            .into(),
    }
    .into_response()
}

const LOGIN: &str = include_str!("dashboard/login.html");

fn login_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, super::dashboard::CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        LOGIN.replace("{{message}}", message),
    )
        .into_response()
}

/// `GET /login`: the form (or straight to the dashboard when reading is open).
pub async fn login_form(State(state): State<AppState>) -> Response {
    if state.read_access.is_open() {
        return Redirect::to("/").into_response();
    }
    login_page(StatusCode::OK, "")
}

#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: a right token sets the session cookie and goes to the dashboard.
pub async fn login(State(state): State<AppState>, Form(login): Form<Login>) -> Response {
    let token = login.token.trim();
    if state.read_access.is_open() {
        return Redirect::to("/").into_response();
    }
    if !state.read_access.accepts(token) {
        tracing::warn!("dashboard login with a wrong token");
        return login_page(StatusCode::UNAUTHORIZED, "That token is not valid.");
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        state.read_access.cookie(token, COOKIE_MAX_AGE),
    );
    response
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout(State(state): State<AppState>) -> Response {
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.read_access.cookie("", 0));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn weak_or_unsafe_tokens_are_refused_at_start() {
        assert_eq!(
            ReadAccess::new(&["short".into()], false).err(),
            Some(TokenError::TooShort(1))
        );
        assert_eq!(
            ReadAccess::new(
                &["a-good-token-0001".into(), "with;semicolon-0001".into()],
                false
            )
            .err(),
            Some(TokenError::BadCharacter(2))
        );
    }

    #[test]
    fn a_bearer_or_the_cookie_opens_and_nothing_else_does() {
        let access = ReadAccess::new(
            &["first-token-000001".into(), "second-token-00002".into()],
            false,
        )
        .unwrap();
        assert!(!access.is_open());
        assert!(access.allows(&headers(&[(
            header::AUTHORIZATION,
            "Bearer second-token-00002"
        )])));
        assert!(access.allows(&headers(&[(
            header::COOKIE,
            "theme=dark; callpulse_token=first-token-000001"
        )])));
        assert!(!access.allows(&headers(&[(
            header::AUTHORIZATION,
            "Bearer first-token-00000"
        )])));
        assert!(!access.allows(&headers(&[(
            header::COOKIE,
            "callpulse_tokenx=first-token-000001"
        )])));
        assert!(!access.allows(&HeaderMap::new()));
        assert!(ReadAccess::default().allows(&HeaderMap::new()));
    }

    #[test]
    fn the_session_cookie_is_http_only_and_same_site_strict() {
        let access = ReadAccess::new(&["first-token-000001".into()], true).unwrap();
        let cookie = access.cookie("first-token-000001", 60);
        let cookie = cookie.to_str().unwrap();
        for attribute in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
        }
    }
}
