//! Sampling the broker process from `/proc`: CPU time (utime + stime from
//! `/proc/PID/stat`) and memory (`VmRSS` and `VmHWM` from
//! `/proc/PID/status`). Linux only; elsewhere `--broker-pid` fails at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times. `USER_HZ` is 100 on
/// every Linux architecture we run on; reading it would need libc's sysconf.
const TICKS_PER_SECOND: f64 = 100.0;

/// How often RSS is sampled during a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The broker's resource use over a run.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerStats {
    /// Process id sampled.
    pub pid: u32,
    /// CPU seconds (user + system) used during the run.
    pub cpu_s: f64,
    /// `cpu_s` over wall time, in percent of one core.
    pub cpu_pct: f64,
    /// Broker CPU microseconds per message: `cpu_s` over the run's
    /// messages, the confirmed publishes with --confirm, else the
    /// deliveries received (see [`cpu_us_per_msg`]); absent when there
    /// were none. In backlog mode it is over the whole run (both phases,
    /// the consumers' start between them included) and the messages
    /// confirmed, or drained with --producers 0; the report's backlog
    /// section splits it by phase.
    pub cpu_us_per_msg: Option<f64>,
    /// Peak resident memory during the run, MiB: `VmHWM` when it rose during
    /// the run (exact), else the largest 100 ms sample of `VmRSS`.
    pub peak_rss_mib: f64,
    /// `VmHWM` at the end: the peak since the process started, MiB.
    pub vm_hwm_mib: f64,
    /// `VmRSS` at the end, MiB.
    pub rss_end_mib: f64,
}

/// CPU microseconds per message: `cpu_s` seconds over `messages`, `None`
/// for no messages (a rate of nothing is no figure).
pub fn cpu_us_per_msg(cpu_s: f64, messages: u64) -> Option<f64> {
    (messages > 0).then(|| cpu_s * 1e6 / messages as f64)
}

impl BrokerStats {
    /// Sets [`BrokerStats::cpu_us_per_msg`] for a run of `messages`.
    pub(crate) fn per_message(mut self, messages: u64) -> BrokerStats {
        self.cpu_us_per_msg = cpu_us_per_msg(self.cpu_s, messages);
        self
    }
}

/// Reads utime + stime of `pid`, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces and parentheses: fields are
    // counted from after its last ')'. There, index 0 is field 3 (state),
    // so utime (field 14) is index 11 and stime index 12.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unparsable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("no field {} in /proc/{pid}/stat", i + 3))
    };
    Ok((tick(11)? + tick(12)?) as f64 / TICKS_PER_SECOND)
}

/// Reads `(VmHWM, VmRSS)` of `pid`, in KiB.
pub(crate) fn memory_kib(pid: u32) -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A running sample of one process.
pub(crate) struct Sampler {
    pid: u32,
    started: Instant,
    cpu_start: f64,
    hwm_start: u64,
    peak_rss: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Takes the starting figures and starts sampling RSS.
    pub(crate) fn start(pid: u32) -> Result<Sampler, String> {
        let cpu_start = cpu_seconds(pid)?;
        let (hwm_start, rss) = memory_kib(pid)?;
        let peak_rss = Arc::new(AtomicU64::new(rss));
        let peak = peak_rss.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                match memory_kib(pid) {
                    Ok((_, rss)) => {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Sampler {
            pid,
            started: Instant::now(),
            cpu_start,
            hwm_start,
            peak_rss,
            task,
        })
    }

    /// CPU seconds the process used since the sampler started (for the
    /// backlog's phases); `None` if it cannot be read.
    pub(crate) fn cpu_so_far(&self) -> Option<f64> {
        cpu_seconds(self.pid).ok().map(|now| now - self.cpu_start)
    }

    /// Current `VmRSS` in MiB (for "RSS while holding the backlog").
    pub(crate) fn rss_now_mib(&self) -> Option<f64> {
        memory_kib(self.pid).ok().map(|(_, rss)| mib(rss))
    }

    /// Stops sampling and computes the figures for the run.
    pub(crate) fn finish(self) -> Result<BrokerStats, String> {
        self.task.abort();
        let wall = self.started.elapsed().as_secs_f64();
        let cpu_s = cpu_seconds(self.pid)? - self.cpu_start;
        let (hwm, rss) = memory_kib(self.pid)?;
        let sampled = self.peak_rss.load(Ordering::Relaxed).max(rss);
        let peak = if hwm > self.hwm_start { hwm } else { sampled };
        Ok(BrokerStats {
            pid: self.pid,
            cpu_s,
            cpu_pct: if wall > 0.0 {
                cpu_s / wall * 100.0
            } else {
                0.0
            },
            cpu_us_per_msg: None,
            peak_rss_mib: mib(peak),
            vm_hwm_mib: mib(hwm),
            rss_end_mib: mib(rss),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("stat") >= 0.0);
        let (hwm, rss) = memory_kib(pid).expect("status");
        assert!(hwm >= rss && rss > 0);
    }

    #[test]
    fn cpu_per_message_is_microseconds_over_messages() {
        assert_eq!(cpu_us_per_msg(2.0, 1_000_000), Some(2.0));
        assert_eq!(cpu_us_per_msg(0.5, 100_000), Some(5.0));
        assert_eq!(cpu_us_per_msg(0.0, 10), Some(0.0));
        assert_eq!(cpu_us_per_msg(1.0, 0), None);
        let stats = BrokerStats {
            pid: 1,
            cpu_s: 1.5,
            cpu_pct: 30.0,
            cpu_us_per_msg: None,
            peak_rss_mib: 0.0,
            vm_hwm_mib: 0.0,
            rss_end_mib: 0.0,
        };
        let s = stats.per_message(300_000);
        assert!((s.cpu_us_per_msg.expect("a figure") - 5.0).abs() < 1e-9);
        let json = serde_json::to_value(&s).expect("json");
        assert!((json["cpu_us_per_msg"].as_f64().expect("a number") - 5.0).abs() < 1e-9);
    }
}
