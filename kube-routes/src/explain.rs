//! What explaining a request takes whichever routing API: the request as a gateway sees it,
//! configurable-http-proxy's choice to compare with, and the errors. Each routing API says how
//! its gateways pick among its objects (`istio_routes::explain`, `gateway_routes::explain`).

use std::collections::BTreeSet;

use proxy_api::{RouteSpec, RoutingMode};
use serde::Serialize;

/// Why a request could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not one a browser could send to the gateway.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused, and what to give instead.
        reason: &'static str,
    },
    /// The objects could not be read from the Kubernetes API server.
    #[error(transparent)]
    Store(#[from] crate::Error),
}

/// What explaining answers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for proxy_api::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidUrl { url, reason } => {
                proxy_api::Error::InvalidQuery { parameter: "url", reason: format!("{url:?}: {reason}") }
            }
            Error::Store(error) => error.into(),
        }
    }
}

/// A request to explain: the URL split as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    /// The URL as given.
    pub url: String,
    /// The `Host` header the request carries: the URL's host and any port, as written.
    pub authority: String,
    /// The path as sent, percent-encoded, without the query string.
    pub path: String,
}

impl Request {
    /// Parses an absolute `http://` or `https://` URL; anything else is
    /// [`Error::InvalidUrl`] saying why.
    pub fn parse(url: &str) -> Result<Request> {
        let invalid = |reason: &'static str| Error::InvalidUrl { url: url.to_owned(), reason };
        if url.is_empty() {
            return Err(invalid("give the URL a browser requests, e.g. http://hub.example.org/user/alice/"));
        }
        if url.starts_with('/') {
            return Err(invalid(
                "a path is not enough: the gateway routes on the host too; give an absolute URL, e.g. http://hub.example.org/user/alice/",
            ));
        }
        let no_scheme = "no scheme: give an absolute URL, e.g. http://hub.example.org/user/alice/";
        if !url.contains("://") {
            return Err(invalid(no_scheme));
        }
        let uri: http::Uri =
            url.parse().map_err(|_| invalid("not a URL, e.g. http://hub.example.org/user/alice/"))?;
        match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http" | "https") => {}
            Some(_) => return Err(invalid("only http:// and https:// URLs reach the gateway")),
            None => return Err(invalid(no_scheme)),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host in the URL"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information in a URL is not sent as the Host; leave it out"));
        }
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        Ok(Request { url: url.to_owned(), authority: authority.as_str().to_owned(), path: path.to_owned() })
    }
}

/// The path without its query string or fragment.
pub fn without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// configurable-http-proxy's choice (`lib/trie.js`): the longest spec that is a prefix of the
/// decoded path in whole segments; under host routing the host, without its port, is the first
/// segment. A path that decodes to no spec (a malformed escape, `..`) is matched by its
/// well-formed leading segments.
pub fn chp_choice(specs: &BTreeSet<RouteSpec>, mode: RoutingMode, request: &Request) -> Option<RouteSpec> {
    let decoded = percent_encoding::percent_decode_str(without_query(&request.path)).decode_utf8_lossy();
    let mut segments: Vec<String> = Vec::new();
    if mode == RoutingMode::Host {
        let host = request.authority.rsplit_once(':').map_or(request.authority.as_str(), |(h, _)| h);
        segments.push(host.to_ascii_lowercase());
    }
    segments.extend(decoded.split('/').filter(|s| !s.is_empty()).map(str::to_owned));
    (0..=segments.len()).rev().find_map(|length| {
        let spec = RouteSpec::new(&format!("/{}", segments[..length].join("/")), mode).ok()?;
        specs.contains(&spec).then_some(spec)
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http() {
        let reason = |url: &str| match Request::parse(url) {
            Err(Error::InvalidUrl { reason, .. }) => reason,
            other => panic!("{url:?} accepted: {other:?}"),
        };
        assert!(reason("").contains("give the URL"));
        assert!(reason("/user/alice").contains("absolute URL"));
        assert!(reason("hub.org/user/alice").contains("absolute URL"));
        assert!(reason("ftp://hub.org/").contains("http://"));
        assert!(reason("http://exa mple.org/").contains("not a URL"));
        assert!(reason("http://user@hub.org/").contains("user information"));
        let parsed = Request::parse("http://hub.org").unwrap();
        assert_eq!((parsed.authority.as_str(), parsed.path.as_str()), ("hub.org", "/"));
    }
}
