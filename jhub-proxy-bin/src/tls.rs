//! HTTPS for the probe listener: with configurable-http-proxy's `--ssl-key` and `--ssl-cert`,
//! Zero to JupyterHub's manual HTTPS modes probe `--port` over HTTPS, so the probes are served
//! there with that certificate. No traffic is carried: the gateway terminates users' TLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::app::HttpService;
use crate::server::Limits;
use crate::{Error, Result};

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The acceptor for the certificate chain in `cert` and the private key in `key` (PEM files).
/// Errors name the flag and the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let invalid =
        |flag: &str, path: &Path, why: String| Error::Config(format!("--{flag} {}: {why}", path.display()));
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| invalid("ssl-cert", cert, format!("not a PEM certificate file ({e})")))?;
    if chain.is_empty() {
        return Err(invalid("ssl-cert", cert, "holds no certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid("ssl-key", key, format!("not a PEM private key file ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| invalid("ssl-cert", cert, format!("does not go with --ssl-key ({e})")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `service` over TLS on `listener` until the process ends. Each connection's handshake
/// runs in its own task, so a slow client holds up no other.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, service: HttpService, limits: Limits) {
    let builder = Arc::new(limits.builder());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, builder, service) = (acceptor.clone(), Arc::clone(&builder), service.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        // At run time: a warm build cache may hold this test compiled in another clone.
        Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    #[test]
    fn loads_a_pem_pair_and_names_the_flag_and_file_it_cannot_use() {
        assert!(acceptor(&fixture("tls.crt"), &fixture("tls.key")).is_ok());
        let message = |cert: &Path, key: &Path| match acceptor(cert, key) {
            Err(Error::Config(message)) => message,
            other => panic!("expected a configuration error, got {:?}", other.map(|_| ())),
        };
        let missing = message(Path::new("/nonexistent/tls.crt"), &fixture("tls.key"));
        assert!(missing.starts_with("--ssl-cert /nonexistent/tls.crt"), "{missing}");
        let swapped = message(&fixture("tls.key"), &fixture("tls.key"));
        assert!(swapped.contains("--ssl-cert") && swapped.contains("no certificate"), "{swapped}");
        let no_key = message(&fixture("tls.crt"), &fixture("tls.crt"));
        assert!(no_key.starts_with("--ssl-key"), "{no_key}");
    }
}
