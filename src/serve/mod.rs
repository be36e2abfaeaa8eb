//! A read-only OCI distribution endpoint over the store: repository = snapshot NAME, tags =
//! `latest` and each snapshot's short id. Manifests and configs are made on request (and
//! remembered in the index); layers are synthesized and streamed as they are read, checked
//! on the way, in bounded memory. New snapshots appear as soon as they are committed.

mod accept;
mod body;
mod errors;
mod page;
mod routes;
mod spool;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use cellar_store::oci::{Digest, ImageOptions, LeftOut};
use cellar_store::Store;
use tokio::sync::oneshot;

use crate::output::{errln, left_out_summary};

/// What every request shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub opts: ImageOptions,
    /// Layers whose left-out paths have been logged: once per layer, not per download.
    pub left_out_logged: Mutex<HashSet<String>>,
    pub downloads: Downloads,
    /// Layers made to learn their digests, kept for the downloads that follow.
    pub spools: spool::Spools,
    /// How long a client may take to send a request's header (`serve --header-timeout`),
    /// counted from when the server waits for it: a connection that sends no request, half
    /// of one, or nothing more between requests is closed after it.
    pub header_timeout: Duration,
}

/// How layer downloads are bounded. Each one makes its layer on a blocking thread, which
/// waits while the client is slow to read: uncapped, a few hundred clients that stop reading
/// would hold every blocking thread, and every other request (manifests, tags) would wait
/// behind them.
pub struct Downloads {
    /// One permit per download in progress; more wait for a permit, holding no thread.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// A client that takes nothing for this long is cut off, and its thread freed.
    pub send_timeout: Duration,
}

impl Downloads {
    /// `serve --max-downloads`'s default: well inside tokio's 512 blocking threads.
    pub const DEFAULT_MAX: u16 = 64;
    /// `serve --send-timeout`'s default, in seconds.
    pub const DEFAULT_SEND_TIMEOUT: u64 = 60;

    pub fn new(max: u16, send_timeout_secs: u64) -> Self {
        Downloads {
            slots: Arc::new(tokio::sync::Semaphore::new(max.into())),
            send_timeout: Duration::from_secs(send_timeout_secs),
        }
    }
}

impl Default for Downloads {
    fn default() -> Self {
        Downloads::new(Self::DEFAULT_MAX, Self::DEFAULT_SEND_TIMEOUT)
    }
}

impl Shared {
    pub fn new(store: Arc<Store>, opts: ImageOptions) -> Self {
        Shared {
            store,
            opts,
            left_out_logged: Mutex::default(),
            downloads: Downloads::default(),
            spools: spool::Spools::default(),
            header_timeout: Duration::from_secs(Self::DEFAULT_HEADER_TIMEOUT),
        }
    }

    /// `serve --header-timeout`'s default, in seconds (hyper's own default).
    pub const DEFAULT_HEADER_TIMEOUT: u64 = 30;

    /// Log what a layer it made left out, the first time for each layer.
    pub fn log_left_out(&self, digest: &Digest, left_out: &LeftOut) {
        if left_out.is_empty() {
            return;
        }
        let mut logged = self
            .left_out_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if logged.insert(digest.to_string()) {
            errln!(
                "cellar serve: layer {digest} leaves out {}",
                left_out_summary(left_out)
            );
        }
    }
}

/// A server running on its own threads until stopped.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

impl Server {
    /// Listen on `listen` (`HOST:PORT`; port 0 picks a free one) and serve in the background.
    pub fn start(shared: Arc<Shared>, listen: &str) -> anyhow::Result<Server> {
        let rt = runtime()?;
        let listener = rt.block_on(bind(listen))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let stop = async {
                    let _ = rx.await;
                };
                serve_connections(listener, shared, stop).await;
                Ok(())
            })
        });
        Ok(Server {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let requests in flight finish, and wait for the threads.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Serve in the foreground until SIGINT or SIGTERM.
pub fn serve_until_signal(
    shared: Arc<Shared>,
    listen: &str,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = bind(listen).await?;
        on_ready(listener.local_addr()?);
        let (stopping, stopped) = oneshot::channel();
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _ = stopping.send(());
        };
        let server = serve_connections(listener, shared, stop);
        // Open requests are let finish, but not for ever: a client that stopped reading a
        // download, or never finished its request's header, kept serve running (and its
        // lease on the store held) until that client left.
        let drained = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(DRAIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = server => anyhow::Ok(()),
            () = drained => {
                errln!(
                    "cellar: serve: requests still open {} s after the signal were cut off",
                    DRAIN.as_secs()
                );
                Ok(())
            }
        }
    })?;
    // Downloads cut off end with their connections; nothing is waited for past that.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// How long requests open at a stop signal may take to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// Serve `shared`'s routes on `listener` until `stop`, then let the connections finish their
/// requests (idle ones close at once). Each connection has its own task, with a deadline on
/// every request header (`Shared::header_timeout`), which `axum::serve` does not set:
/// without it, idle or half-sent connections were held until the process ran out of
/// descriptors and no client was served. A download in progress is not affected (that is
/// `--send-timeout`'s).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.header_timeout);
    let router = routes::router(shared);
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, or a connection reset before it was taken: wait a
                // moment (as axum::serve does) rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
