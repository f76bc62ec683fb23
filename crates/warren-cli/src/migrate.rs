//! `warrenctl migrate`: copies a running broker's definitions here, then
//! moves the messages of chosen queues over AMQP without losing any.
//!
//! # Layout
//! - [`run`]: the plan (the source's definitions and queues, read through
//!   its management API), `--dry-run`, the import into this broker, the
//!   move, the summary. Blocking, on the caller's thread.
//! - The move runs on a thread of its own with a small tokio runtime: lapin
//!   is async, and the caller may itself be inside a runtime, where a
//!   nested `block_on` would panic. Its workers report [`Event`]s over a
//!   channel; the caller's thread turns them into progress bars or lines.
//! - `move_queue`: one queue, one consumer, in order. Take a batch of
//!   deliveries, publish each to the destination's default exchange with
//!   the queue's name as routing key, wait for every confirm, then ack the
//!   batch on the source with `multiple`.
//!
//! # Why no message is lost
//! A source message is acked only after the destination confirmed its
//! copy, so whatever stops a run (a crash, a kill, a lost connection)
//! leaves every message that is not safely at the destination unacked on
//! the source, where the broker requeues it in place; a rerun carries on.
//! The price is at-least-once: a message whose copy was published but
//! whose ack did not reach the source before the stop is moved again by the
//! rerun, so it arrives twice.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::Poll;
use std::time::{Duration, Instant};

use clap::Args;
use futures_core::Stream;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, Consumer, ErrorKind};
use regex::Regex;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cli::Format;
use crate::client::{Api, Endpoint, seg};
use crate::commands::Ctx;
use crate::error::{CliError, Exit};
use crate::output::{bytes, count};

/// Options of `migrate`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Example:\n  \
    warrenctl --url http://127.0.0.1:15672 migrate --source-url http://old:15672 \\\n    \
    --source-amqp amqp://guest:guest@old:5672 --amqp amqp://guest:guest@127.0.0.1:5672 --queues '^orders'\n\n\
    A source message is acknowledged only once this broker confirmed its copy: an\n\
    interrupted run loses nothing, and running it again carries on (a message in\n\
    flight at the interruption may arrive twice).")]
pub struct MigrateArgs {
    /// The source's management API base URL.
    #[arg(long)]
    pub source_url: String,
    /// The source's management user.
    #[arg(long, default_value = "guest")]
    pub source_user: String,
    /// The source's management password.
    #[arg(long, default_value = "guest")]
    pub source_password: String,
    /// The source's AMQP URL (amqp://user:pass@host:5672).
    #[arg(long)]
    pub source_amqp: String,
    /// This broker's AMQP URL.
    #[arg(long)]
    pub amqp: String,
    /// Move the messages of queues whose name matches (default: all).
    #[arg(long, default_value = ".*")]
    pub queues: String,
    /// Show the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Messages the source may have in flight to warrenctl per queue
    /// (basic.qos).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Publish up to this many messages, wait for their confirms, then
    /// acknowledge them on the source at once (at most --prefetch).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Queues moved at the same time (each by one consumer, in order).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    /// Seconds to wait for a queue's next message before leaving the rest
    /// where it is (another consumer may have taken it).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Do not import the definitions (for a rerun after an interruption).
    #[arg(long)]
    pub skip_definitions: bool,
    /// For tests: stop abruptly once this many messages were confirmed by
    /// this broker, acknowledging nothing in flight, as a kill would.
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
}

/// The longest a connect, a channel operation or a batch of confirms may
/// take before the move stops with an error.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a queue found non-empty again (publishers still at work)
/// is drained once more before the rest is left where it is.
const MAX_ROUNDS: u32 = 3;

/// The consumer tag on the source, for people reading its consumer list.
const CONSUMER_TAG: &str = "warrenctl-migrate";

/// Definition kinds, in the order RabbitMQ exports them.
const KINDS: [&str; 10] = [
    "users",
    "vhosts",
    "permissions",
    "topic_permissions",
    "parameters",
    "global_parameters",
    "policies",
    "queues",
    "exchanges",
    "bindings",
];

/// A queue whose messages move.
#[derive(Debug, Clone)]
struct QueuePlan {
    vhost: String,
    name: String,
    /// Ready messages and their bytes, as the source's API counted them.
    messages: u64,
    bytes: u64,
    /// The declaration, for a queue the definitions do not carry.
    declaration: Value,
}

/// Runs `migrate`.
pub fn run(c: &mut Ctx<'_>, args: &MigrateArgs) -> Result<(), CliError> {
    let filter = Regex::new(&args.queues).map_err(|e| {
        // The parser's message spans lines (the pattern, a caret, the
        // error); its last line says what is wrong.
        let text = e.to_string();
        let why = text
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        CliError::usage(format!(
            "--queues is not a regular expression: {}: {}",
            why.trim_start_matches("error: "),
            args.queues
        ))
    })?;
    let source_amqp = AmqpTarget::parse("--source-amqp", &args.source_amqp)?;
    let dest_amqp = AmqpTarget::parse("--amqp", &args.amqp)?;
    if !(args.source_url.starts_with("http://") || args.source_url.starts_with("https://")) {
        return Err(CliError::usage(format!(
            "--source-url must start with http:// or https://: {}",
            args.source_url
        )));
    }
    let source = Api::new(Endpoint {
        url: args.source_url.trim_end_matches('/').to_string(),
        user: args.source_user.clone(),
        password: args.source_password.clone(),
        ca_cert: None,
        client_cert: None,
        insecure: false,
    })?;
    let vhost = c.conn.vhost_given.then(|| c.conn.vhost.clone());
    let defs_path = match &vhost {
        Some(v) => format!("definitions/{}", seg(v)),
        None => "definitions".to_string(),
    };
    let defs = source.get(&defs_path)?;
    if !defs.is_object() {
        return Err(CliError::new(
            Exit::Failure,
            format!(
                "GET /api/{defs_path} on {}: the answer is not a definitions object",
                source.server()
            ),
        ));
    }
    let kinds: serde_json::Map<String, Value> = KINDS
        .iter()
        .map(|k| {
            let n = defs.get(*k).and_then(Value::as_array).map_or(0, Vec::len);
            (k.to_string(), Value::from(n))
        })
        .collect();
    let (queues, skipped) = select_queues(&source, vhost.as_deref(), &filter)?;
    if args.dry_run {
        return dry_run(c, &source, vhost.as_deref(), &kinds, &queues, &skipped);
    }

    if !args.skip_definitions {
        if let Some(v) = &vhost {
            ensure_vhost(c, &source, v)?;
        }
        c.api.post(&defs_path, &defs)?;
        c.out.note(&format!(
            "definitions of {} imported: {}",
            vhost
                .as_ref()
                .map_or("all vhosts".to_string(), |v| format!("vhost '{v}'")),
            kinds_line(&kinds)
        ))?;
    }
    let created = ensure_queues(c, vhost.as_deref(), &queues)?;
    for (v, q) in &created {
        c.out.note(&format!(
            "queue '{q}' (vhost '{v}') created here: the definitions do not carry it"
        ))?;
    }
    for (v, q, why) in &skipped {
        c.out
            .note(&format!("queue '{q}' (vhost '{v}') skipped: {why}"))?;
    }

    let batch = usize::try_from(args.batch)
        .unwrap_or(usize::MAX)
        .min(usize::from(args.prefetch));
    let (halt, _) = watch::channel(false);
    let job = Job {
        source: source_amqp,
        dest: dest_amqp,
        prefetch: args.prefetch,
        batch,
        parallel: usize::try_from(args.parallel).unwrap_or(1).max(1),
        idle: Duration::from_secs(args.idle_timeout),
        stop_after: args.stop_after,
        queues,
        next: AtomicUsize::new(0),
        confirmed: AtomicU64::new(0),
        killed: AtomicBool::new(false),
        halt,
    };
    let started = Instant::now();
    let (job, tallies) = move_messages(c, job)?;
    let seconds = started.elapsed().as_secs_f64();
    summary(
        c,
        &source,
        &job,
        &tallies,
        &kinds,
        !args.skip_definitions,
        &skipped,
        seconds,
    )
}

/// The queues of the source (in `vhost`, or all) whose name matches, and
/// those that match but cannot move, with the reason.
#[allow(clippy::type_complexity, reason = "a private pair of lists")]
fn select_queues(
    source: &Api,
    vhost: Option<&str>,
    filter: &Regex,
) -> Result<(Vec<QueuePlan>, Vec<(String, String, String)>), CliError> {
    let path = match vhost {
        Some(v) => format!("queues/{}", seg(v)),
        None => "queues".to_string(),
    };
    let listed = source.get(&path)?;
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for q in listed.as_array().into_iter().flatten() {
        let (Some(name), Some(v)) = (q["name"].as_str(), q["vhost"].as_str()) else {
            continue;
        };
        if !filter.is_match(name) {
            continue;
        }
        let kind = q["type"].as_str().unwrap_or("classic");
        if q["exclusive"].as_bool() == Some(true) {
            skipped.push((
                v.to_string(),
                name.to_string(),
                "exclusive to its connection".to_string(),
            ));
            continue;
        }
        if kind == "stream" {
            skipped.push((
                v.to_string(),
                name.to_string(),
                "a stream keeps its messages when read".to_string(),
            ));
            continue;
        }
        let num = |a: &str, b: &str| q[a].as_u64().or_else(|| q[b].as_u64()).unwrap_or(0);
        chosen.push(QueuePlan {
            vhost: v.to_string(),
            name: name.to_string(),
            messages: num("messages_ready", "messages"),
            bytes: num("message_bytes_ready", "message_bytes"),
            declaration: json!({
                "durable": q["durable"].as_bool().unwrap_or(true),
                "auto_delete": q["auto_delete"].as_bool().unwrap_or(false),
                "arguments": q.get("arguments").filter(|a| a.is_object()).cloned().unwrap_or(json!({})),
            }),
        });
    }
    chosen.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    Ok((chosen, skipped))
}

/// Creates `vhost` here, as the source describes it, when it is missing
/// (a vhost's definitions import into an existing vhost).
fn ensure_vhost(c: &mut Ctx<'_>, source: &Api, vhost: &str) -> Result<(), CliError> {
    match c.api.get(&format!("vhosts/{}", seg(vhost))) {
        Ok(_) => return Ok(()),
        Err(e) if e.exit == Exit::NotFound => {}
        Err(e) => return Err(e),
    }
    let theirs = source.get(&format!("vhosts/{}", seg(vhost)))?;
    let mut body = serde_json::Map::new();
    for k in ["description", "tags", "default_queue_type"] {
        if let Some(v) = theirs.get(k).filter(|v| !v.is_null()) {
            body.insert(k.to_string(), v.clone());
        }
    }
    c.api
        .put(&format!("vhosts/{}", seg(vhost)), &Value::Object(body))
}

/// Declares here the chosen queues the definitions did not carry (RabbitMQ
/// exports no transient queue), so that no moved message goes unrouted.
fn ensure_queues(
    c: &mut Ctx<'_>,
    vhost: Option<&str>,
    queues: &[QueuePlan],
) -> Result<Vec<(String, String)>, CliError> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let path = match vhost {
        Some(v) => format!("queues/{}", seg(v)),
        None => "queues".to_string(),
    };
    let here = c.api.get(&path)?;
    let exists = |q: &QueuePlan| {
        here.as_array().into_iter().flatten().any(|h| {
            h["vhost"].as_str() == Some(q.vhost.as_str())
                && h["name"].as_str() == Some(q.name.as_str())
        })
    };
    let mut created = Vec::new();
    for q in queues.iter().filter(|q| !exists(q)) {
        c.api.put(
            &format!("queues/{}/{}", seg(&q.vhost), seg(&q.name)),
            &q.declaration,
        )?;
        created.push((q.vhost.clone(), q.name.clone()));
    }
    Ok(created)
}

/// The counts per kind, in [`KINDS`]' order: "2 users, 1 vhosts, ...".
fn kinds_line(kinds: &serde_json::Map<String, Value>) -> String {
    KINDS
        .iter()
        .map(|k| {
            format!(
                "{} {}",
                kinds.get(*k).unwrap_or(&Value::from(0)),
                k.replace('_', " ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `--dry-run`: what would be imported and moved (the source API's
/// counts); checks that both management APIs answer, and changes nothing.
fn dry_run(
    c: &mut Ctx<'_>,
    source: &Api,
    vhost: Option<&str>,
    kinds: &serde_json::Map<String, Value>,
    queues: &[QueuePlan],
    skipped: &[(String, String, String)],
) -> Result<(), CliError> {
    c.api.get("overview")?;
    let total: u64 = queues.iter().map(|q| q.messages).sum();
    let total_bytes: u64 = queues.iter().map(|q| q.bytes).sum();
    let rows: Vec<Value> = queues
        .iter()
        .map(|q| json!({"vhost": q.vhost, "name": q.name, "messages": q.messages, "message_bytes": q.bytes}))
        .collect();
    let skipped_rows: Vec<Value> = skipped
        .iter()
        .map(|(v, q, why)| json!({"vhost": v, "name": q, "reason": why}))
        .collect();
    if c.out.format == Format::Json {
        return c.out.json(&json!({
            "dry_run": true,
            "source": source.server(),
            "destination": c.api.server(),
            "vhost": vhost,
            "definitions": kinds,
            "queues": rows,
            "skipped": skipped_rows,
            "messages": total,
            "bytes": total_bytes,
        }));
    }
    c.out.note(&format!(
        "dry run, nothing changed. From {} to {}:",
        source.server(),
        c.api.server()
    ))?;
    c.out.note(&format!(
        "definitions of {} to import: {}",
        vhost.map_or("all vhosts".to_string(), |v| format!("vhost '{v}'")),
        kinds_line(kinds)
    ))?;
    for (v, q, why) in skipped {
        c.out.note(&format!(
            "queue '{q}' (vhost '{v}') would be skipped: {why}"
        ))?;
    }
    c.out.note(&format!(
        "{} messages ({}) to move from {} queues:",
        count(total as f64),
        bytes(total_bytes as f64),
        queues.len()
    ))?;
    let cols: Vec<String> = ["vhost", "name", "messages", "message_bytes"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.out.rows(&rows, &cols, false)
}

// ---------------------------------------------------------------- the move

/// An AMQP endpoint, parsed; `label` names it in messages, without the
/// password.
#[derive(Debug, Clone)]
struct AmqpTarget {
    uri: AMQPUri,
    label: String,
}

impl AmqpTarget {
    fn parse(option: &str, text: &str) -> Result<Self, CliError> {
        let usage = |why: &str| {
            CliError::usage(format!(
                "{option} must be an AMQP URL like amqp://user:password@host:5672: {why}"
            ))
        };
        // The parser's message may quote the URL, password included.
        let mut uri: AMQPUri = text
            .parse()
            .map_err(|e: String| usage(&e.replace(text, "<url>")))?;
        if uri.scheme != AMQPScheme::AMQP {
            return Err(usage("amqps:// is not supported by this build"));
        }
        // The parser takes the host from `Url::domain`, which is empty for an
        // IP address, and then falls back to "localhost": read it ourselves.
        let host = host_of(text).ok_or_else(|| usage("no host"))?;
        uri.authority.host = host;
        let label = if uri.authority.host.contains(':') {
            format!("amqp://[{}]:{}", uri.authority.host, uri.authority.port)
        } else {
            format!("amqp://{}:{}", uri.authority.host, uri.authority.port)
        };
        Ok(AmqpTarget { uri, label })
    }

    /// Connects to `vhost` (bounded by [`OP_TIMEOUT`]).
    async fn connect(&self, vhost: &str) -> Result<Connection, CliError> {
        let mut uri = self.uri.clone();
        uri.vhost = vhost.to_string();
        let props =
            ConnectionProperties::default().with_connection_name("warrenctl migrate".into());
        let what = format!("connect to {} (vhost '{vhost}')", self.label);
        let conn = bounded(&what, Connection::connect_uri(uri, props)).await?;
        conn.map_err(|e| {
            let mut err = amqp_error(&what, &e);
            if matches!(
                e.kind(),
                ErrorKind::IOError(_) | ErrorKind::InvalidConnectionState(_)
            ) {
                err.exit = Exit::Unreachable;
            }
            err
        })
    }
}

/// The host of an `amqp://[user[:password]@]host[:port][/vhost]` URL.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// A lapin error as a one-line [`CliError`] with the exit code its reply
/// code calls for.
fn amqp_error(what: impl Display, e: &lapin::Error) -> CliError {
    match e.kind() {
        ErrorKind::ProtocolError(p) => {
            let exit = match p.get_id() {
                403 | 530 => Exit::Auth,
                404 => Exit::NotFound,
                405 | 406 => Exit::Precondition,
                _ => Exit::Failure,
            };
            CliError::new(exit, format!("{what}: {}", p.get_message()))
        }
        ErrorKind::IOError(io) => CliError::new(Exit::Unreachable, format!("{what}: {io}")),
        _ => CliError::new(Exit::Failure, format!("{what}: {e}")),
    }
}

/// Awaits `fut` for at most [`OP_TIMEOUT`].
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, CliError> {
    tokio::time::timeout(OP_TIMEOUT, fut).await.map_err(|_| {
        CliError::new(
            Exit::Failure,
            format!("{what}: no answer within {} s", OP_TIMEOUT.as_secs()),
        )
    })
}

/// A lapin call, bounded, its error turned into a [`CliError`].
async fn call<T>(what: &str, fut: impl Future<Output = lapin::Result<T>>) -> Result<T, CliError> {
    bounded(what, fut).await?.map_err(|e| amqp_error(what, &e))
}

/// What the move workers tell the caller's thread.
#[derive(Debug)]
enum Event {
    /// A queue's move began with this many ready messages.
    Started { queue: usize, ready: u64 },
    /// The queue was found holding this many more (publishers at work).
    More { queue: usize, ready: u64 },
    /// Messages and bytes moved from the queue so far.
    Progress {
        queue: usize,
        messages: u64,
        bytes: u64,
    },
    /// The queue is done; `left` messages stayed on the source.
    Done { queue: usize, left: u64 },
}

/// The move, shared by its workers.
struct Job {
    source: AmqpTarget,
    dest: AmqpTarget,
    prefetch: u16,
    batch: usize,
    parallel: usize,
    idle: Duration,
    stop_after: Option<u64>,
    queues: Vec<QueuePlan>,
    /// The next queue a free worker takes.
    next: AtomicUsize,
    /// Messages the destination confirmed, over all queues.
    confirmed: AtomicU64,
    /// `--stop-after` was reached: stop at once and ack nothing more.
    killed: AtomicBool,
    /// Set when the workers should stop: a worker failed (the others ack
    /// what is confirmed and stop) or `killed`. A watch, so that a worker
    /// waiting for a delivery wakes up.
    halt: watch::Sender<bool>,
}

impl Job {
    fn halted(&self) -> bool {
        *self.halt.borrow()
    }

    fn stop_all(&self) {
        self.halt.send_replace(true);
    }
}

/// What moved from one queue.
#[derive(Debug, Clone, Default)]
struct Tally {
    messages: u64,
    bytes: u64,
    left: Option<u64>,
    started: Option<Instant>,
    seconds: f64,
}

/// Runs the move on its own thread and runtime, showing its progress from
/// this one; returns the job and what moved per queue.
fn move_messages(c: &mut Ctx<'_>, job: Job) -> Result<(Arc<Job>, Vec<Tally>), CliError> {
    let job = Arc::new(job);
    let (tx, rx) = mpsc::channel::<Event>();
    let worker_job = Arc::clone(&job);
    let thread = std::thread::Builder::new()
        .name("warrenctl-migrate".into())
        .spawn(move || -> Result<(), CliError> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("warrenctl-amqp")
                .enable_all()
                .build()
                .map_err(|e| {
                    CliError::new(Exit::Failure, format!("cannot start a runtime: {e}"))
                })?;
            let r = rt.block_on(move_all(worker_job, tx));
            rt.shutdown_timeout(Duration::from_secs(5));
            r
        })
        .map_err(|e| {
            CliError::new(
                Exit::Failure,
                format!("cannot start the migration thread: {e}"),
            )
        })?;
    let mut view = View::new(c.out.tty, &job.queues);
    let mut write_error = None;
    // Ends when the thread is done and its senders are dropped.
    for event in rx {
        if let Err(e) = view.event(c, &job.queues, event) {
            write_error.get_or_insert(e);
        }
    }
    let moved = thread.join().unwrap_or_else(|_| {
        Err(CliError::new(
            Exit::Failure,
            "the migration thread panicked",
        ))
    });
    view.finish();
    moved?;
    if let Some(e) = write_error {
        return Err(e);
    }
    Ok((job, view.tallies))
}

/// Progress for people: a bar per queue on a terminal, else a line as each
/// queue starts and ends (in the table format only).
struct View {
    bars: Option<(MultiProgress, Vec<Option<ProgressBar>>)>,
    tallies: Vec<Tally>,
}

impl View {
    fn new(tty: bool, queues: &[QueuePlan]) -> Self {
        let bars = tty.then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                vec![None; queues.len()],
            )
        });
        View {
            bars,
            tallies: vec![Tally::default(); queues.len()],
        }
    }

    fn event(
        &mut self,
        c: &mut Ctx<'_>,
        queues: &[QueuePlan],
        event: Event,
    ) -> Result<(), CliError> {
        let (Event::Started { queue, .. }
        | Event::More { queue, .. }
        | Event::Progress { queue, .. }
        | Event::Done { queue, .. }) = event;
        let (Some(q), Some(t)) = (queues.get(queue), self.tallies.get_mut(queue)) else {
            return Ok(());
        };
        let multi = self.bars.as_ref().map(|(m, _)| m.clone());
        let slot = self.bars.as_mut().and_then(|(_, bars)| bars.get_mut(queue));
        match (event, slot) {
            (Event::Started { ready, .. }, Some(slot)) => {
                t.started = Some(Instant::now());
                let b = ProgressBar::new(ready);
                let b = multi.map_or(b.clone(), |m| m.add(b));
                let style = ProgressStyle::with_template(
                    "{prefix:24!} [{bar:30}] {pos:>9}/{len:9} {rate:>10} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", count(s.per_sec()));
                    },
                )
                .progress_chars("=> ");
                b.set_style(style);
                b.set_prefix(format!("{}{}", vhost_prefix(&q.vhost), q.name));
                *slot = Some(b);
            }
            (Event::Started { ready, .. }, None) => {
                t.started = Some(Instant::now());
                if ready == 0 {
                    return Ok(());
                }
                c.out.note(&format!(
                    "queue '{}' (vhost '{}'): moving {} messages",
                    q.name,
                    q.vhost,
                    count(ready as f64)
                ))?;
            }
            (Event::More { ready, .. }, slot) => {
                if let Some(Some(b)) = slot {
                    b.inc_length(ready);
                }
            }
            (
                Event::Progress {
                    messages, bytes: n, ..
                },
                slot,
            ) => {
                t.messages = messages;
                t.bytes = n;
                if let Some(Some(b)) = slot {
                    b.set_position(messages);
                }
            }
            (Event::Done { left, .. }, slot) => {
                t.left = Some(left);
                t.seconds = t.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
                if let Some(Some(b)) = slot {
                    b.finish();
                } else if t.messages == 0 && left == 0 {
                    c.out
                        .note(&format!("queue '{}' (vhost '{}'): empty", q.name, q.vhost))?;
                } else {
                    let rest = if left > 0 {
                        format!(", {} left on the source", count(left as f64))
                    } else {
                        String::new()
                    };
                    c.out.note(&format!(
                        "queue '{}' (vhost '{}'): {} messages ({}) moved in {:.1} s{rest}",
                        q.name,
                        q.vhost,
                        count(t.messages as f64),
                        bytes(t.bytes as f64),
                        t.seconds
                    ))?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some((_, bars)) = &self.bars {
            for b in bars.iter().flatten() {
                if !b.is_finished() {
                    b.abandon();
                }
            }
        }
    }
}

fn vhost_prefix(vhost: &str) -> String {
    if vhost == "/" {
        String::new()
    } else {
        format!("{vhost}/")
    }
}

/// The end: per-queue counts and the totals, or one JSON object.
#[allow(clippy::too_many_arguments, reason = "the parts of one report")]
fn summary(
    c: &mut Ctx<'_>,
    source: &Api,
    job: &Job,
    tallies: &[Tally],
    kinds: &serde_json::Map<String, Value>,
    imported: bool,
    skipped: &[(String, String, String)],
    seconds: f64,
) -> Result<(), CliError> {
    let messages: u64 = tallies.iter().map(|t| t.messages).sum();
    let total_bytes: u64 = tallies.iter().map(|t| t.bytes).sum();
    let rate = if seconds > 0.0 {
        messages as f64 / seconds
    } else {
        0.0
    };
    let byte_rate = if seconds > 0.0 {
        total_bytes as f64 / seconds
    } else {
        0.0
    };
    let rows: Vec<Value> = job
        .queues
        .iter()
        .zip(tallies)
        .map(|(q, t)| {
            json!({
                "vhost": q.vhost,
                "name": q.name,
                "messages": t.messages,
                "message_bytes": t.bytes,
                "left": t.left,
                "seconds": t.seconds,
            })
        })
        .collect();
    if c.out.format == Format::Json {
        let mut defs = kinds.clone();
        defs.insert("imported".into(), Value::Bool(imported));
        return c.out.json(&json!({
            "dry_run": false,
            "source": source.server(),
            "destination": c.api.server(),
            "definitions": defs,
            "queues": rows,
            "skipped": skipped.iter().map(|(v, q, why)| json!({"vhost": v, "name": q, "reason": why})).collect::<Vec<_>>(),
            "messages": messages,
            "bytes": total_bytes,
            "seconds": seconds,
            "rate": rate,
            "bytes_rate": byte_rate,
        }));
    }
    let cols: Vec<String> = ["vhost", "name", "messages", "message_bytes", "left"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if !rows.is_empty() || c.out.format == Format::Tsv {
        c.out.rows(&rows, &cols, false)?;
    }
    c.out.note(&format!(
        "moved {} messages ({}) from {} queues in {seconds:.2} s: {} msg/s, {}/s",
        count(messages as f64),
        bytes(total_bytes as f64),
        job.queues.len(),
        count(rate),
        bytes(byte_rate)
    ))
}

/// The move: `parallel` workers take the queues one by one.
async fn move_all(job: Arc<Job>, tx: mpsc::Sender<Event>) -> Result<(), CliError> {
    let workers = job.parallel.min(job.queues.len());
    let handles: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(worker(Arc::clone(&job), tx.clone())))
        .collect();
    drop(tx);
    let mut first = None;
    for h in handles {
        let r = h.await.unwrap_or_else(|e| {
            Err(CliError::new(
                Exit::Failure,
                format!("a migration worker failed: {e}"),
            ))
        });
        if let Err(e) = r {
            job.stop_all();
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// One connection to each side, for one vhost at a time.
struct Link {
    vhost: String,
    source: Connection,
    dest: Connection,
}

impl Link {
    async fn open(job: &Job, vhost: &str) -> Result<Link, CliError> {
        let source = job.source.connect(vhost).await?;
        let dest = match job.dest.connect(vhost).await {
            Ok(d) => d,
            Err(e) => {
                let _ = tokio::time::timeout(OP_TIMEOUT, source.close(200, "OK".into())).await;
                return Err(e);
            }
        };
        Ok(Link {
            vhost: vhost.to_string(),
            source,
            dest,
        })
    }

    /// Closes both connections; the source requeues what was not acked.
    async fn close(self) {
        let _ = tokio::time::timeout(OP_TIMEOUT, self.source.close(200, "OK".into())).await;
        let _ = tokio::time::timeout(OP_TIMEOUT, self.dest.close(200, "OK".into())).await;
    }
}

/// Takes queues until none is left, or the move halts.
async fn worker(job: Arc<Job>, tx: mpsc::Sender<Event>) -> Result<(), CliError> {
    let mut link: Option<Link> = None;
    let result = async {
        loop {
            if job.halted() {
                return Ok(());
            }
            let i = job.next.fetch_add(1, Ordering::Relaxed);
            let Some(q) = job.queues.get(i) else {
                return Ok(());
            };
            if link.as_ref().is_none_or(|l| l.vhost != q.vhost) {
                if let Some(old) = link.take() {
                    old.close().await;
                }
                link = Some(Link::open(&job, &q.vhost).await?);
            }
            if let Some(l) = &link {
                move_queue(&job, l, i, q, &tx).await?;
            }
        }
    }
    .await;
    if result.is_err() {
        job.stop_all();
    }
    if let Some(l) = link {
        l.close().await;
    }
    result
}

/// Closes a channel, bounded; the broker requeues what it did not see
/// acked.
async fn close_channel(ch: &Channel) {
    let _ = tokio::time::timeout(OP_TIMEOUT, ch.close(200, "OK".into())).await;
}

/// Moves one queue: rounds of "count the ready messages, move that many",
/// until the queue is found empty or [`MAX_ROUNDS`] have run.
async fn move_queue(
    job: &Job,
    link: &Link,
    i: usize,
    q: &QueuePlan,
    tx: &mpsc::Sender<Event>,
) -> Result<(), CliError> {
    let on = |what: &str| {
        format!(
            "{what} of queue '{}' (vhost '{}') on {}",
            q.name, q.vhost, job.source.label
        )
    };
    let mut tally = (0u64, 0u64);
    let mut idle = false;
    for round in 0..=MAX_ROUNDS {
        if round > 0 && job.halted() {
            return Ok(());
        }
        let src = call(&on("channel.open"), link.source.create_channel()).await?;
        let declared = call(
            &on("queue.declare"),
            src.queue_declare(
                q.name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        let ready = match declared {
            Ok(d) => u64::from(d.message_count()),
            Err(e) => {
                close_channel(&src).await;
                return Err(e);
            }
        };
        let last = ready == 0 || round == MAX_ROUNDS || idle || job.halted();
        if round == 0 {
            let _ = tx.send(Event::Started { queue: i, ready });
        } else if !last {
            let _ = tx.send(Event::More { queue: i, ready });
        }
        if last {
            close_channel(&src).await;
            if !job.halted() {
                let _ = tx.send(Event::Done {
                    queue: i,
                    left: ready,
                });
            }
            return Ok(());
        }
        let r = match call(
            "channel.open on the destination",
            link.dest.create_channel(),
        )
        .await
        {
            Ok(dst) => {
                let r = move_round(job, &src, &dst, i, q, ready, &mut tally, tx).await;
                close_channel(&dst).await;
                r
            }
            Err(e) => Err(e),
        };
        // Closing the source's channel requeues, in place, what it sent
        // beyond the count and anything not acked.
        close_channel(&src).await;
        idle = r?;
    }
    Ok(())
}

/// Moves `ready` messages of `q` (fewer when none comes for `--idle-timeout`:
/// returns true then). `tally` is the queue's (messages, bytes) so far.
#[allow(clippy::too_many_arguments, reason = "the parts of one round")]
async fn move_round(
    job: &Job,
    src: &Channel,
    dst: &Channel,
    i: usize,
    q: &QueuePlan,
    ready: u64,
    tally: &mut (u64, u64),
    tx: &mpsc::Sender<Event>,
) -> Result<bool, CliError> {
    let on = |what: &str| format!("{what} of queue '{}' (vhost '{}')", q.name, q.vhost);
    let mut halt = job.halt.subscribe();
    call(
        &on("confirm.select on the destination"),
        dst.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    call(
        &on("basic.qos on the source"),
        src.basic_qos(job.prefetch, BasicQosOptions::default()),
    )
    .await?;
    let mut consumer = call(
        &on("basic.consume on the source"),
        src.basic_consume(
            q.name.as_str().into(),
            CONSUMER_TAG.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut remaining = ready;
    let mut batch: Vec<Delivery> = Vec::with_capacity(job.batch);
    while remaining > 0 {
        batch.clear();
        let want = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(job.batch);
        // The first delivery may take a while; the rest of the batch is
        // whatever has already arrived.
        tokio::select! {
            next = tokio::time::timeout(job.idle, next_delivery(&mut consumer)) => match next {
                Err(_) => return Ok(true),
                Ok(d) => batch.push(delivery(d, q)?),
            },
            _ = halt.wait_for(|h| *h) => return Ok(false),
        }
        while batch.len() < want {
            match try_next_delivery(&mut consumer).await {
                Poll::Ready(d) => batch.push(delivery(d, q)?),
                Poll::Pending => break,
            }
        }
        let (good, failure) = publish_batch(dst, q, &mut batch).await;
        let total = job.confirmed.fetch_add(good as u64, Ordering::SeqCst) + good as u64;
        if job.stop_after.is_some_and(|n| total >= n) && !job.killed.swap(true, Ordering::SeqCst) {
            job.stop_all();
            return Err(CliError::new(
                Exit::Failure,
                format!(
                    "stopped after {total} messages (--stop-after), nothing in flight acknowledged"
                ),
            ));
        }
        if job.killed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if let Some(last) = good.checked_sub(1).and_then(|n| batch.get(n)) {
            call(
                &on("basic.ack on the source"),
                src.basic_ack(last.delivery_tag, BasicAckOptions { multiple: true }),
            )
            .await?;
        }
        tally.0 += good as u64;
        tally.1 += batch
            .iter()
            .take(good)
            .map(|d| d.data.len() as u64)
            .sum::<u64>();
        remaining -= good as u64;
        let _ = tx.send(Event::Progress {
            queue: i,
            messages: tally.0,
            bytes: tally.1,
        });
        if let Some(e) = failure {
            return Err(e);
        }
    }
    Ok(false)
}

/// The consumer's next item (`None` once it was cancelled).
async fn next_delivery(consumer: &mut Consumer) -> Option<lapin::Result<Delivery>> {
    std::future::poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx)).await
}

/// The consumer's next item if it has already arrived.
async fn try_next_delivery(consumer: &mut Consumer) -> Poll<Option<lapin::Result<Delivery>>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *consumer).poll_next(cx))).await
}

fn delivery(d: Option<lapin::Result<Delivery>>, q: &QueuePlan) -> Result<Delivery, CliError> {
    let on = format!(
        "consuming queue '{}' (vhost '{}') on the source",
        q.name, q.vhost
    );
    match d {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(amqp_error(on, &e)),
        None => Err(CliError::new(
            Exit::Failure,
            format!("{on}: the source cancelled the consumer"),
        )),
    }
}

/// Publishes `batch` to the destination's default exchange, routed to the
/// queue of the same name, properties untouched, and waits for the
/// confirms. Returns how many, from the first, the destination confirmed,
/// and why the next one failed, if one did.
async fn publish_batch(
    dst: &Channel,
    q: &QueuePlan,
    batch: &mut [Delivery],
) -> (usize, Option<CliError>) {
    let on = format!(
        "publishing to queue '{}' (vhost '{}') on the destination",
        q.name, q.vhost
    );
    // Mandatory: a message no queue takes comes back instead of vanishing.
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let sends: Vec<_> = batch
        .iter_mut()
        .map(|d| {
            // Moved, not cloned: the batch needs only tags and sizes after.
            let properties = std::mem::take(&mut d.properties);
            let d: &Delivery = d;
            dst.basic_publish(
                "".into(),
                q.name.as_str().into(),
                options,
                &d.data,
                properties,
            )
        })
        .collect();
    let sent = match bounded(&on, in_order(sends)).await {
        Ok(s) => s,
        Err(e) => return (0, Some(e)),
    };
    let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
    let mut good = 0;
    for s in sent {
        let confirm = match s {
            Ok(c) => c,
            Err(e) => return (good, Some(amqp_error(&on, &e))),
        };
        let failure = match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => {
                good += 1;
                continue;
            }
            Ok(Ok(Confirmation::Ack(Some(_)))) => CliError::new(
                Exit::NotFound,
                format!("{on}: no queue took the message (basic.return)"),
            ),
            Ok(Ok(Confirmation::Nack(_))) => CliError::new(
                Exit::Failure,
                format!("{on}: the destination refused a message (nack)"),
            ),
            Ok(Ok(Confirmation::NotRequested)) => CliError::new(
                Exit::Failure,
                format!("{on}: the channel is not in confirm mode"),
            ),
            Ok(Err(e)) => amqp_error(&on, &e),
            Err(_) => CliError::new(
                Exit::Failure,
                format!("{on}: no confirm within {} s", OP_TIMEOUT.as_secs()),
            ),
        };
        return (good, Some(failure));
    }
    (good, None)
}

/// Awaits every future, polling each for the first time in order. lapin
/// queues a publish's frames (and numbers its confirm) on that first poll,
/// so the messages go out in the batch's order while one wake-up of the
/// connection's writer serves the whole batch.
async fn in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut first_pending = 0;
    let mut first_pass = true;
    std::future::poll_fn(|cx| {
        let mut i = first_pending;
        while i < futures.len() {
            if outputs[i].is_none() {
                match futures[i].as_mut().poll(cx) {
                    Poll::Ready(v) => outputs[i] = Some(v),
                    // After the first pass, the earliest pending future's
                    // waker is enough: it wakes this task, which goes on.
                    Poll::Pending if !first_pass => break,
                    Poll::Pending => {}
                }
            }
            i += 1;
        }
        first_pass = false;
        while first_pending < outputs.len() && outputs[first_pending].is_some() {
            first_pending += 1;
        }
        if first_pending == outputs.len() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_the_url_itself() {
        assert_eq!(
            host_of("amqp://u:p@127.0.0.1:5672/%2f").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            host_of("amqp://old.example").as_deref(),
            Some("old.example")
        );
        assert_eq!(host_of("amqp://u:p@[::1]:5672").as_deref(), Some("::1"));
        assert_eq!(host_of("amqp://u:p@/"), None);
        let t = AmqpTarget::parse("--amqp", "amqp://guest:secret@10.1.2.3:5673/shop").unwrap();
        assert_eq!(t.uri.authority.host, "10.1.2.3");
        assert_eq!(t.label, "amqp://10.1.2.3:5673");
    }

    #[test]
    fn bad_urls_are_usage_errors_that_do_not_show_the_password() {
        for bad in [
            "http://u:secret@host",
            "amqps://u:secret@host",
            "not a url secret",
        ] {
            let e = AmqpTarget::parse("--amqp", bad).map(|_| ()).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{bad}");
            assert!(!e.message.contains("secret"), "{}", e.message);
        }
    }

    #[test]
    fn in_order_polls_first_in_order_and_keeps_the_order() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = std::sync::Mutex::new(Vec::new());
        let futures: Vec<_> = (0..5)
            .map(|i| {
                let log = &log;
                async move {
                    log.lock().unwrap().push(i);
                    tokio::task::yield_now().await;
                    i * 10
                }
            })
            .collect();
        let out = rt.block_on(in_order(futures));
        assert_eq!(out, vec![0, 10, 20, 30, 40]);
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }
}
