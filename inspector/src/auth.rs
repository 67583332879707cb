//! Bearer tokens with scopes. Tokens are kept as BLAKE3 digests and a presented token's digest
//! is compared with every configured one in constant time, so neither the comparison nor the
//! position of the match tells an attacker anything.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read units, executions, topology, metrics; watch the live feed.
    Read,
    /// Post signals.
    Emit,
    /// Enable and disable units.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Emit => "emit",
            Self::Admin => "admin",
        }
    }
}

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// A configured token, as it appears in the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Who or what holds it (logged, never the secret).
    pub name: String,
    /// The secret.
    pub token: String,
    /// What it allows.
    pub scopes: BTreeSet<Scope>,
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// Not a JSON list of `{name, token, scopes}`.
    #[error("tokens file is not a JSON list of {{\"name\", \"token\", \"scopes\"}}: {0}")]
    Format(#[from] serde_json::Error),
    /// A token too short to be safe.
    #[error("token `{0}` is shorter than {MIN_TOKEN_LEN} characters")]
    TooShort(String),
    /// A token without scopes.
    #[error("token `{0}` has no scopes")]
    NoScopes(String),
    /// Two tokens with the same secret or the same name.
    #[error("token `{0}` is configured twice")]
    Duplicate(String),
}

struct Token {
    name: String,
    digest: [u8; 32],
    scopes: BTreeSet<Scope>,
}

/// The configured tokens. Empty: nothing is checked (the server then binds to loopback only).
/// Clones share one set: [`Tokens::replace`] changes it for every clone (a reloaded file).
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: Arc<ArcSwap<Vec<Token>>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tokens.load().iter().map(|t| (&t.name, &t.scopes)))
            .finish()
    }
}

impl Tokens {
    /// Checks and keeps the tokens (their digests, not their text).
    pub fn new(specs: Vec<TokenSpec>) -> Result<Self, TokensError> {
        let mut tokens: Vec<Token> = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.token.chars().count() < MIN_TOKEN_LEN {
                return Err(TokensError::TooShort(spec.name));
            }
            if spec.scopes.is_empty() {
                return Err(TokensError::NoScopes(spec.name));
            }
            let digest = *blake3::hash(spec.token.as_bytes()).as_bytes();
            if tokens
                .iter()
                .any(|t| t.name == spec.name || t.digest == digest)
            {
                return Err(TokensError::Duplicate(spec.name));
            }
            tokens.push(Token {
                name: spec.name,
                digest,
                scopes: spec.scopes,
            });
        }
        Ok(Self {
            tokens: Arc::new(ArcSwap::from_pointee(tokens)),
        })
    }

    /// Makes `other`'s tokens this set's, for every clone of it.
    pub fn replace(&self, other: &Tokens) {
        self.tokens.store(other.tokens.load_full());
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.tokens.load().len()
    }

    /// Parses a tokens file: a JSON list of `{"name", "token", "scopes"}`.
    pub fn from_json(text: &str) -> Result<Self, TokensError> {
        Self::new(serde_json::from_str(text)?)
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.load().is_empty()
    }

    /// Who presents `presented`, for the audit trail: the token's name; `anonymous` when no
    /// tokens are configured; otherwise what is wrong with it, in parentheses.
    pub(crate) fn caller(&self, presented: Option<&str>) -> String {
        let tokens = self.tokens.load();
        if tokens.is_empty() {
            return "anonymous".to_owned();
        }
        match presented.map(|p| find(&tokens, p)) {
            Some(Some(token)) => token.name.clone(),
            Some(None) => "(invalid token)".to_owned(),
            None => "(no token)".to_owned(),
        }
    }

    /// Whether `presented` grants `scope`; the error says why not.
    pub fn check(&self, presented: Option<&str>, scope: Scope) -> Result<(), ApiError> {
        let tokens = self.tokens.load();
        if tokens.is_empty() {
            return Ok(());
        }
        let Some(presented) = presented else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "this endpoint needs a bearer token (Authorization: Bearer TOKEN)",
            ));
        };
        match find(&tokens, presented).map(|t| &t.scopes) {
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "the bearer token is not valid",
            )),
            Some(scopes) if !scopes.contains(&scope) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_scope",
                format!("the token lacks the `{}` scope", scope.as_str()),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The configured token `presented` is, or `None`. Every configured digest is compared, in
/// constant time, whatever matches.
fn find<'a>(tokens: &'a [Token], presented: &str) -> Option<&'a Token> {
    let digest = blake3::hash(presented.as_bytes());
    let mut found = None;
    for token in tokens {
        if bool::from(token.digest.ct_eq(digest.as_bytes())) {
            found = Some(token);
        }
    }
    found
}

/// The bearer token of a request: the `Authorization` header, or, for a websocket upgrade
/// only (browsers cannot set headers on one), the `access_token` query parameter.
pub(crate) fn presented(request: &Request) -> Result<Option<String>, ApiError> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "the Authorization header is not text",
            )
        })?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_token",
                    "the Authorization header is not `Bearer TOKEN`",
                )
            })?;
        return Ok(Some(token.trim().to_owned()));
    }
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        if let Some(query) = request.uri().query() {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(query).unwrap_or_default();
            if let Some((_, token)) = pairs.into_iter().find(|(k, _)| k == "access_token") {
                return Ok(Some(token));
            }
        }
    }
    Ok(None)
}

/// Middleware: the request goes on only if its token grants `scope`.
pub(crate) async fn require(
    State((tokens, scope)): State<(Tokens, Scope)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = presented(&request)?;
    tokens.check(token.as_deref(), scope)?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, token: &str, scopes: &[Scope]) -> TokenSpec {
        TokenSpec {
            name: name.into(),
            token: token.into(),
            scopes: scopes.iter().copied().collect(),
        }
    }

    #[test]
    fn tokens_grant_their_scopes_only() {
        let tokens = Tokens::new(vec![
            spec("reader", "reader-secret-0123456", &[Scope::Read]),
            spec("ops", "ops-secret-0123456789", &[Scope::Read, Scope::Admin]),
        ])
        .expect("valid");
        assert!(
            tokens
                .check(Some("reader-secret-0123456"), Scope::Read)
                .is_ok()
        );
        let e = tokens
            .check(Some("reader-secret-0123456"), Scope::Emit)
            .expect_err("no emit");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(
            tokens
                .check(Some("ops-secret-0123456789"), Scope::Admin)
                .is_ok()
        );
        let e = tokens
            .check(Some("nope"), Scope::Read)
            .expect_err("unknown");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let e = tokens.check(None, Scope::Read).expect_err("missing");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        // No tokens configured: nothing is checked.
        assert!(Tokens::default().check(None, Scope::Admin).is_ok());
        // The audit trail names the caller, never the secret.
        assert_eq!(tokens.caller(Some("ops-secret-0123456789")), "ops");
        assert_eq!(tokens.caller(Some("nope")), "(invalid token)");
        assert_eq!(tokens.caller(None), "(no token)");
        assert_eq!(Tokens::default().caller(None), "anonymous");
    }

    #[test]
    fn bad_token_files_are_refused() {
        assert!(matches!(
            Tokens::from_json("{}"),
            Err(TokensError::Format(_))
        ));
        assert!(matches!(
            Tokens::from_json(r#"[{"name": "a", "token": "short", "scopes": ["read"]}]"#),
            Err(TokensError::TooShort(_))
        ));
        assert!(matches!(
            Tokens::from_json(r#"[{"name": "a", "token": "0123456789abcdef", "scopes": []}]"#),
            Err(TokensError::NoScopes(_))
        ));
        assert!(matches!(
            Tokens::from_json(
                r#"[{"name": "a", "token": "0123456789abcdef", "scopes": ["root"]}]"#
            ),
            Err(TokensError::Format(_))
        ));
        assert!(matches!(
            Tokens::from_json(
                r#"[{"name": "a", "token": "0123456789abcdef", "scopes": ["read"]},
                    {"name": "b", "token": "0123456789abcdef", "scopes": ["emit"]}]"#
            ),
            Err(TokensError::Duplicate(_))
        ));
    }
}
