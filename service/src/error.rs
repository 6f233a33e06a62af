//! One HTTP error type with a single status `match`, and the error categories shared by logs,
//! metrics and the harness's reports.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Error categories from the Phase 53 plan (plus the few that none of them fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A statement cancelled by `statement_timeout` (SQLSTATE 57014).
    DbTimeout,
    /// No pooled connection within the acquire timeout (or the request died waiting).
    DbPoolWait,
    /// The database or its pooler refused a new connection: Postgres's "too many clients"
    /// (SQLSTATE 53300), PgBouncer's "no more connections allowed" — many instances, each
    /// opening its own pool.
    DbConnections,
    /// The LinkedIn account behind a workspace is disconnected (Unipile).
    ProviderDisconnected,
    /// The provider refused the recipient.
    ProviderInvalidRecipient,
    /// The AI verifier did not answer within its budget.
    AiTimeout,
    /// The AI verifier's answer was cut short.
    AiTruncated,
    /// A request without a usable session: expected, not an error.
    ExpectedUnauth,
    /// The client went away before the answer (`AbortError`).
    ClientAbort,
    /// A provider failed in a way worth retrying (5xx, 429, timeout, connection).
    ProviderRetryable,
    /// The request ran past the platform's function limit with no better cause.
    FunctionTimeout,
}

impl Category {
    /// Every category, for exporting zero-valued counters.
    pub const ALL: [Category; 11] = [
        Category::DbTimeout,
        Category::DbPoolWait,
        Category::DbConnections,
        Category::ProviderDisconnected,
        Category::ProviderInvalidRecipient,
        Category::AiTimeout,
        Category::AiTruncated,
        Category::ExpectedUnauth,
        Category::ClientAbort,
        Category::ProviderRetryable,
        Category::FunctionTimeout,
    ];

    /// The tag as it appears in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::DbTimeout => "db_timeout",
            Category::DbPoolWait => "db_pool_wait",
            Category::DbConnections => "db_connections",
            Category::ProviderDisconnected => "provider_disconnected",
            Category::ProviderInvalidRecipient => "provider_invalid_recipient",
            Category::AiTimeout => "ai_timeout",
            Category::AiTruncated => "ai_truncated",
            Category::ExpectedUnauth => "expected_unauth",
            Category::ClientAbort => "client_abort",
            Category::ProviderRetryable => "provider_retryable",
            Category::FunctionTimeout => "function_timeout",
        }
    }

    /// The category of a database error, if it has one.
    pub fn of_sqlx(err: &sqlx::Error) -> Option<Category> {
        match err {
            sqlx::Error::PoolTimedOut => Some(Category::DbPoolWait),
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                Some(Category::DbTimeout)
            }
            sqlx::Error::Database(db)
                if db.code().as_deref() == Some("53300")
                    || db.message().contains("no more connections allowed") =>
            {
                Some(Category::DbConnections)
            }
            _ => None,
        }
    }
}

/// Everything a handler can fail with. Clients see a short message; the detail goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the message names the field and what was wrong.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401: missing or wrong credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// 404: a referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// 413: body over the limit.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// 422: well-formed, but refers to something that cannot be processed.
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// 500 (or 503 for pool waits): a database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// 502: a provider failed and the legacy path had no fallback.
    #[error("provider {provider}: {detail}")]
    Provider {
        provider: &'static str,
        category: Option<Category>,
        detail: String,
    },
    /// 500: anything else.
    #[error("internal: {0:#}")]
    Internal(#[from] anyhow::Error),
    /// One failure answered to several requests (a group-committed enqueue's statement):
    /// status, category and message are the inner error's.
    #[error("{0}")]
    Shared(std::sync::Arc<AppError>),
}

impl AppError {
    /// The error category, when the failure has one.
    pub fn category(&self) -> Option<Category> {
        match self {
            AppError::Shared(e) => e.category(),
            AppError::Db(e) => Category::of_sqlx(e),
            AppError::Provider { category, .. } => *category,
            _ => None,
        }
    }

    /// The error itself: the inner one of a [`AppError::Shared`].
    fn unshared(&self) -> &AppError {
        match self {
            AppError::Shared(e) => e.unshared(),
            e => e,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AppError::Shared(e) => e.status(),
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Db(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Db(e) if Category::of_sqlx(e) == Some(Category::DbConnections) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Db(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Provider { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let category = self.category();
        let message = match self.unshared() {
            // Client errors say exactly what was wrong with the request.
            AppError::BadRequest(m)
            | AppError::NotFound(m)
            | AppError::PayloadTooLarge(m)
            | AppError::Unprocessable(m) => m.clone(),
            AppError::Unauthorized(m) => (*m).to_owned(),
            // Server errors: the chain goes to the log, the client gets a generic message.
            _ => {
                tracing::error!(error = %self, category = category.map(Category::as_str), "request failed");
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if let Some(c) = category {
            response.extensions_mut().insert(c);
        }
        response
    }
}
