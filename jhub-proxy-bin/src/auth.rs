//! configurable-http-proxy's authentication: `Authorization: token <token>`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use proxy_api::Error;
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

/// Refuses, with 403, requests that do not carry the token.
#[derive(Clone)]
pub struct RequireTokenLayer {
    token: Arc<[u8]>,
}

impl RequireTokenLayer {
    /// A layer that accepts only `token`.
    pub fn new(token: &str) -> Self {
        RequireTokenLayer { token: token.as_bytes().into() }
    }
}

// The token stays out of Debug output, and so out of logs.
impl std::fmt::Debug for RequireTokenLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireTokenLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken { inner, token: Arc::clone(&self.token) }
    }
}

/// The service [`RequireTokenLayer`] makes.
#[derive(Clone)]
pub struct RequireToken<S> {
    inner: S,
    token: Arc<[u8]>,
}

impl<S> std::fmt::Debug for RequireToken<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireToken").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for RequireToken<S>
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let authorized = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(presented_token)
            .is_some_and(|token| bool::from(token.ct_eq(&self.token)));
        if authorized {
            Box::pin(self.inner.call(request))
        } else {
            Box::pin(std::future::ready(Ok(Error::Unauthenticated.into_response())))
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
