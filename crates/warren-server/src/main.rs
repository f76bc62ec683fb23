//! `warren`: the broker binary. Parses flags and the config file, sets up
//! logging, binds the listener and runs until SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use warren_server::config::LogFormat;
use warren_server::{Config, Listeners, Server, Tls};

// Messages are allocated on the publisher's thread and freed on the
// consumer's; glibc's malloc serialises that on an arena lock (futex
// wake-ups were ~20% of the broker's CPU in S1), mimalloc frees to the
// owning thread's heap without a lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Warren, an AMQP 0-9-1 message broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; without one, the built-in defaults apply.
    #[arg(short, long, env = "WARREN_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding the file (e.g. 127.0.0.1:5672).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Address for the management HTTP API (overrides `[management]
    /// listen`).
    #[arg(long)]
    management_listen: Option<std::net::SocketAddr>,
    /// Address for the Prometheus endpoint (overrides `[metrics] listen`).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// AMQPS listen address (overrides `[tls] listen`).
    #[arg(long)]
    tls_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for AMQPS and HTTPS (overrides `[tls] cert`).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key (overrides `[tls] key`).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle to verify client certificates against; turns on
    /// `verify_peer` (overrides `[tls] ca`).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Log line format, overriding the file.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Data directory, overriding the file.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log filter, overriding the file (e.g. `debug`, `warren_core=trace`).
    #[arg(long)]
    log: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Reads a password on standard input and prints its RabbitMQ-format
    /// salted SHA-256 hash, for `password_hash` in the configuration.
    HashPassword,
}

fn hash_password() -> Result<(), Box<dyn std::error::Error>> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    let hash = warren_core::password::Password::Plain(password.to_string()).hashed();
    println!("{}", hash.to_rabbitmq_hash().unwrap_or_default());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        return hash_password();
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(l) = args.management_listen {
        config.management.listen = l;
    }
    if let Some(l) = args.metrics_listen {
        config.metrics.listen = l;
    }
    if let Some(l) = args.tls_listen {
        config.tls.listen = l;
    }
    if let Some(c) = args.tls_cert {
        config.tls.cert = Some(c);
    }
    if let Some(k) = args.tls_key {
        config.tls.key = Some(k);
    }
    if let Some(ca) = args.tls_ca {
        config.tls.ca = Some(ca);
        config.tls.verify_peer = true;
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    config.validate()?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.log {
        config.log = l;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .with_target(false)
            .init(),
    }

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // A task woken by another goes to the waker's worker's LIFO slot, which
    // no idle worker may steal from: a consumer's connection woken by a
    // publisher's would wait for the publisher's thread while the other
    // core idles. Without the slot it runs on the other worker (S1 1.5M ->
    // 1.7M msg/s). The option needs `--cfg tokio_unstable` (.cargo/config.toml).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = builder.build()?;
    runtime.block_on(async move {
        let listen = config.listen;
        let management = config.management.clone();
        let metrics = config.metrics.clone();
        let tls = if config.tls.enabled() {
            Some(Tls::load(&config.tls)?)
        } else {
            None
        };
        let amqps = match &tls {
            Some(t) => Some((tokio::net::TcpListener::bind(config.tls.listen).await?, t.clone())),
            None => None,
        };
        let plaintext = config.tls.plaintext;
        let server = Server::open(config)?;
        let listener = if plaintext {
            Some(tokio::net::TcpListener::bind(listen).await?)
        } else {
            None
        };
        let amqps_addr = amqps.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
        // What the management API lists as the AMQP listener.
        let amqp = match (&listener, amqps_addr) {
            (Some(l), _) => l.local_addr()?,
            (None, Some(a)) => a,
            (None, None) => listen,
        };
        let https = match (&tls, management.tls) {
            (Some(t), true) => Some(t.for_http()?),
            _ => None,
        };
        let metrics_https = match (&tls, metrics.tls) {
            (Some(t), true) => Some(t.for_http()?),
            _ => None,
        };
        let https_reload: Vec<Tls> = https.iter().chain(metrics_https.iter()).cloned().collect();
        let http = if management.enabled {
            Some(tokio::net::TcpListener::bind(management.listen).await?)
        } else {
            None
        };
        let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
        let prom = if metrics.enabled {
            Some(tokio::net::TcpListener::bind(metrics.listen).await?)
        } else {
            None
        };
        if let Some(p) = &prom {
            tracing::info!(listen = %p.local_addr()?, "metrics listening");
        }
        let mut listed = Vec::new();
        if let Some(l) = &listener {
            listed.push(warren_server::management::listener("amqp", l.local_addr()?));
        }
        if let Some(a) = amqps_addr {
            listed.push(warren_server::management::listener("amqp/ssl", a));
        }
        if let Some(h) = http_addr {
            let protocol = if https.is_some() { "https" } else { "http" };
            listed.push(warren_server::management::listener(protocol, h));
        }
        let state = warren_server::management::state_for(&server, listed);
        warren_server::management::load_definitions(&server, &state)?;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        if http.is_some() || prom.is_some() {
            if http.is_some() {
                tracing::info!(listen = %http_addr.map(|a| a.to_string()).unwrap_or_default(), "management API listening");
            }
            // Its own thread and runtime: rendering a long list never runs
            // on a worker that drives AMQP connections.
            let http = http.map(|l| l.into_std()).transpose()?;
            let prom = prom.map(|l| l.into_std()).transpose()?;
            std::thread::Builder::new()
                .name("warren-management".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "management API runtime");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let mut stop_metrics = stop_rx.clone();
                        let stop = async move {
                            let _ = stop_rx.changed().await;
                        };
                        let metrics_state = std::sync::Arc::clone(&state);
                        let api = async move {
                            match (http.map(tokio::net::TcpListener::from_std), https) {
                                (Some(Ok(l)), Some(t)) => {
                                    let source: warren_management::TlsSource =
                                        std::sync::Arc::new(move || t.server_config());
                                    warren_management::serve_tls(l, state, source, stop).await
                                }
                                (Some(Ok(l)), None) => warren_management::serve(l, state, stop).await,
                                (Some(Err(e)), _) => Err(e),
                                (None, _) => Ok(()),
                            }
                        };
                        let prometheus = async move {
                            let stop = async move {
                                let _ = stop_metrics.changed().await;
                            };
                            match prom.map(tokio::net::TcpListener::from_std) {
                                Some(Ok(l)) => {
                                    let source = metrics_https.map(|t| {
                                        std::sync::Arc::new(move || t.server_config())
                                            as warren_management::TlsSource
                                    });
                                    warren_management::serve_metrics(l, metrics_state, source, stop).await
                                }
                                Some(Err(e)) => Err(e),
                                None => Ok(()),
                            }
                        };
                        let (a, p) = tokio::join!(api, prometheus);
                        for r in [a, p] {
                            if let Err(e) = r {
                                tracing::error!(error = %e, "management API or metrics stopped");
                            }
                        }
                    });
                })?;
        }
        if let Some(a) = amqps_addr {
            tracing::info!(listen = %a, "AMQPS listening");
        }
        if let Some(t) = tls.clone() {
            tokio::spawn(reload_on_sighup(t, https_reload));
        }
        tracing::info!(listen = %amqp, version = env!("CARGO_PKG_VERSION"), "warren started");

        let listeners = Listeners {
            amqp: listener,
            amqps,
        };
        warren_server::run_listeners(listeners, server, async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await;
        tracing::info!("warren stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // Everything is flushed and closed by now. Exit without running the
    // remaining destructors: after a failed write (a full disk) sled's own
    // drop retries its flush forever.
    std::process::exit(0)
}

/// Reads the certificates again on every SIGHUP; connections already open
/// keep their sessions, new ones get the new certificates. A file that
/// fails to load leaves the old certificates in use.
async fn reload_on_sighup(tls: Tls, https: Vec<Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: certificates will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            for t in std::iter::once(&tls).chain(https.iter()) {
                match t.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS certificates not reloaded, keeping the old ones")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (tls, https);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
