//! configurable-http-proxy's authentication: `Authorization: token <token>`.
//!
//! The token in force comes from [`Tokens`] (it may be rotated while serving) and is compared
//! in constant time, as digests of equal length. A refusal is counted by why
//! (`auth_refusals_total{reason}`) and never logs the header.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use proxy_api::{Error, ResponseFuture};
use tower::{Layer, Service};

use crate::metrics::AuthMetrics;
use crate::token::Tokens;

/// Refuses, with 403, requests that do not carry the token.
#[derive(Debug, Clone)]
pub struct RequireTokenLayer {
    tokens: Tokens,
    metrics: AuthMetrics,
}

impl RequireTokenLayer {
    /// A layer that accepts only the token in force in `tokens`, counting refusals in `metrics`.
    pub fn new(tokens: Tokens, metrics: AuthMetrics) -> Self {
        RequireTokenLayer { tokens, metrics }
    }
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken { inner, tokens: self.tokens.clone(), metrics: self.metrics.clone() }
    }
}

/// The service [`RequireTokenLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    inner: S,
    tokens: Tokens,
    metrics: AuthMetrics,
}

impl<S, B> Service<Request<B>> for RequireToken<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let presented = request.headers().get(header::AUTHORIZATION).and_then(presented_token);
        match presented {
            Some(token) if self.tokens.matches(token) => Box::pin(self.inner.call(request)),
            _ => {
                self.metrics.refused(presented.is_some());
                Box::pin(std::future::ready(Ok(Error::Unauthenticated.into_response())))
            }
        }
    }
}

/// The token of a `token <t>` header. Unlike configurable-http-proxy's unanchored regex,
/// the scheme must come first, so `Bearer token x` is refused.
fn presented_token(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let scheme = value.get(..5)?;
    let rest = value.get(5..)?;
    if !scheme.eq_ignore_ascii_case(b"token") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty() && !token.iter().any(u8::is_ascii_whitespace)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str) -> Option<&str> {
        let value = Box::leak(Box::new(HeaderValue::from_str(header).unwrap()));
        presented_token(value).map(|t| std::str::from_utf8(t).unwrap())
    }

    #[test]
    fn reads_chp_token_headers() {
        assert_eq!(token("token abc"), Some("abc"));
        assert_eq!(token("Token abc"), Some("abc"));
        assert_eq!(token("token \t abc  "), Some("abc"));
    }

    #[test]
    fn refuses_other_schemes_and_shapes() {
        for header in ["Bearer abc", "abc", "token", "token ", "tokenabc", "Bearer token abc", "token a b"] {
            assert_eq!(token(header), None, "{header:?}");
        }
    }
}
