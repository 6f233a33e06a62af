//! Sessions (the auth middleware's job in production): an access token, refreshed from a
//! refresh token when expired. A request with neither is *expected* to be unauthenticated —
//! a signed-out browser, a prefetch. Legacy (`LEGACY_AUTH_NOISE`) logged it at ERROR as
//! `refresh_token_not_found`; fixed, it is logged below error level with the category
//! `expected_unauth`. Either way the client gets one clean redirect (pages) or 401 (actions).

use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use incident_wire::{mint_access, read_token, Session, ACCESS_COOKIE, REFRESH_COOKIE};
use serde_json::json;

use crate::app_state::AppState;
use crate::error::Category;

/// How long a refreshed access token lives.
const ACCESS_TTL_SECS: i64 = 3600;

/// A signed-in request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub session: Session,
    /// A new access-token cookie when the session was refreshed.
    pub set_cookie: Option<HeaderValue>,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Where an unauthenticated request is sent.
#[derive(Debug, Clone, Copy)]
pub enum Surface {
    /// A page: redirect to the login page.
    Page,
    /// A server action or API: 401.
    Action,
}

/// An expected-unauthenticated request (already logged); its response is a redirect or 401.
#[derive(Debug, Clone, Copy)]
pub struct Unauthenticated(Surface);

/// Checks the session cookies.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    surface: Surface,
    route: &str,
) -> Result<Authenticated, Unauthenticated> {
    let secret = &state.config.secrets.session;
    let now = chrono::Utc::now().timestamp();
    if let Some(session) =
        cookie(headers, ACCESS_COOKIE).and_then(|t| read_token(secret, "access", t))
    {
        if session.expires_at > now {
            return Ok(Authenticated {
                session,
                set_cookie: None,
            });
        }
    }
    if let Some(mut session) =
        cookie(headers, REFRESH_COOKIE).and_then(|t| read_token(secret, "refresh", t))
    {
        session.expires_at = now + ACCESS_TTL_SECS;
        let token = mint_access(secret, &session);
        let set_cookie = HeaderValue::from_str(&format!(
            "{ACCESS_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
        ))
        .ok();
        return Ok(Authenticated {
            session,
            set_cookie,
        });
    }
    let reason = "refresh_token_not_found";
    if state.switches().legacy_auth_noise {
        tracing::error!(
            route,
            reason,
            "AuthApiError: Invalid Refresh Token: Refresh Token Not Found"
        );
    } else {
        tracing::info!(
            route,
            reason,
            category = Category::ExpectedUnauth.as_str(),
            "unauthenticated request"
        );
    }
    Err(Unauthenticated(surface))
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        let mut response = match self.0 {
            Surface::Page => {
                let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
                r.headers_mut()
                    .insert(LOCATION, HeaderValue::from_static("/login"));
                r
            }
            Surface::Action => (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "not signed in" })),
            )
                .into_response(),
        };
        // Clear a dead refresh cookie once, so the browser stops sending it (no redirect churn).
        response.headers_mut().append(
            SET_COOKIE,
            HeaderValue::from_static("sb-refresh-token=; Path=/; Max-Age=0"),
        );
        response.extensions_mut().insert(Category::ExpectedUnauth);
        response
    }
}

/// Adds the refreshed-session cookie, if any, to a response.
pub fn with_session_cookie(auth: &Authenticated, mut response: Response) -> Response {
    if let Some(c) = &auth.set_cookie {
        response.headers_mut().append(SET_COOKIE, c.clone());
    }
    response
}
