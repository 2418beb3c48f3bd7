//! The routes API embedded in a hyper server of your own, over a backend of your own.
//!
//! ```sh
//! cargo run -p proxy-api --example serve            # serves on 127.0.0.1:8000
//! curl -X POST -d '{"target": "http://10.0.0.7:8888"}' http://127.0.0.1:8000/api/routes/user/alice
//! curl http://127.0.0.1:8000/api/routes
//! ```
//!
//! With `--once` it answers one request it sends itself, then exits: what CI runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use proxy_api::{ApiConfig, Backend, Result, Route, RouteSpec, RoutesApi};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Routes in a map, by spec.
#[derive(Debug, Default)]
struct Routes(Mutex<BTreeMap<RouteSpec, Arc<Route>>>);

#[async_trait]
impl Backend for Routes {
    async fn list(&self) -> Result<Vec<Arc<Route>>> {
        Ok(self.0.lock().unwrap().values().cloned().collect())
    }

    async fn get(&self, spec: &RouteSpec) -> Result<Option<Arc<Route>>> {
        Ok(self.0.lock().unwrap().get(spec).cloned())
    }

    async fn add(&self, route: Route) -> Result<()> {
        self.0.lock().unwrap().insert(route.spec().clone(), Arc::new(route));
        Ok(())
    }

    async fn delete(&self, spec: &RouteSpec) -> Result<bool> {
        Ok(self.0.lock().unwrap().remove(spec).is_some())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let once = std::env::args().any(|arg| arg == "--once");
    let listener = TcpListener::bind(if once { "127.0.0.1:0" } else { "127.0.0.1:8000" }).await?;
    let address = listener.local_addr()?;
    let api = RoutesApi::new(Arc::new(Routes::default()), ApiConfig::default());
    println!("the routes API listens on http://{address}/api/routes");
    if once {
        tokio::spawn(serve(listener, api));
        let answer = post_once(address).await?;
        println!("{}", answer.lines().next().unwrap_or_default());
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        return Ok(());
    }
    serve(listener, api).await
}

/// Serves each connection with hyper; `RoutesApi` is a tower `Service`.
async fn serve(listener: TcpListener, api: RoutesApi<Routes>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(api.clone());
        tokio::spawn(async move {
            let connection = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = connection.serve_connection(TokioIo::new(stream), service).await {
                eprintln!("connection failed: {error}");
            }
        });
    }
}

/// What JupyterHub sends for a user's server, and the status line it gets.
async fn post_once(address: std::net::SocketAddr) -> std::io::Result<String> {
    let body = r#"{"target": "http://10.0.0.7:8888", "jupyterhub": true}"#;
    let request = format!(
        "POST /api/routes/user/alice HTTP/1.1\r\nhost: {address}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}
