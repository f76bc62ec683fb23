//! What the tasks of one run share: the clock the timestamps count from,
//! the run id, live counters, and the start signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

static EPOCH: OnceLock<Instant> = OnceLock::new();
static RUN_ID: OnceLock<u64> = OnceLock::new();

/// The process-wide instant message timestamps count from.
pub(crate) fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at` (0 before it).
pub(crate) fn nanos_at(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since [`epoch`].
pub(crate) fn now_ns() -> u64 {
    nanos_at(Instant::now())
}

/// This process's run id, carried in bytes 8..16 of every body: consumers
/// time only their own messages, not ones left in a queue by an earlier run
/// (whose timestamps count from another epoch).
pub(crate) fn run_id() -> u64 {
    *RUN_ID.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // A cheap mix of time and pid; it only has to differ between runs.
        (wall ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    })
}

/// How many error texts are kept for the report; the count is kept always.
const KEPT_ERRORS: usize = 20;

/// Live counters, summed over all tasks. Tasks add per batch, not per
/// message, so the atomics stay off the hot path.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) confirmed: AtomicU64,
    pub(crate) nacked: AtomicU64,
    pub(crate) returned: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// The first error texts. A std mutex: held for a push, never across
    /// an `.await`.
    messages: Mutex<Vec<String>>,
}

/// A point-in-time copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub(crate) sent: u64,
    pub(crate) confirmed: u64,
    pub(crate) nacked: u64,
    pub(crate) returned: u64,
    pub(crate) received: u64,
    pub(crate) errors: u64,
}

impl Counters {
    /// Counts an error and keeps its text (the first few), echoing it to
    /// stderr at once so a failing run says why while it runs.
    pub(crate) fn error(&self, who: &str, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let text = format!("{who}: {what}");
        eprintln!("warren-perf: error: {text}");
        if let Ok(mut m) = self.messages.lock()
            && m.len() < KEPT_ERRORS
        {
            m.push(text);
        }
    }

    /// The kept error texts.
    pub(crate) fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Reads every counter.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            nacked: self.nacked.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// The start signal: `None` until the runner says go with the start
/// instant. A dropped sender means the run was abandoned.
pub(crate) type Go = watch::Receiver<Option<Instant>>;

/// Waits for the start signal; `None` if the run was abandoned.
pub(crate) async fn wait_go(go: &mut Go) -> Option<Instant> {
    loop {
        if let Some(start) = *go.borrow_and_update() {
            return Some(start);
        }
        go.changed().await.ok()?;
    }
}
