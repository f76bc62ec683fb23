//! Watching the machine: the process's memory against the high watermark
//! and the data directory's free disk space against its limit, as
//! RabbitMQ's `vm_memory_monitor` and `rabbit_disk_monitor` do. The broker
//! (`warren-core`, which does no IO) holds the samples, the limits and the
//! alarms; this module reads `/proc`, the cgroup files and `statvfs`, and
//! hands it what it read.
//!
//! # Layout
//! - [`ByteSize`] and [`parse_information_unit`]: sizes in the config, as
//!   RabbitMQ's information units (`"512MiB"`, `"1GB"`, `"4Gi"`, bytes).
//! - [`available_memory`]: the memory the process may use, the smaller of
//!   `MemTotal` and its cgroup's limit (v1 and v2), and the pure parsers
//!   behind it ([`meminfo_total`], [`cgroup_memory_limit`]).
//! - [`memory_limit`] and [`disk_free_limit`]: the configured limits in
//!   bytes.
//! - [`resident_memory`], [`disk_free`]: the samples.
//! - [`monitor`]: the task that samples until shutdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::LimitsConfig;
use crate::server::Server;

/// RabbitMQ 3.x's default `vm_memory_high_watermark`: 40% of the memory
/// available.
pub const DEFAULT_MEMORY_HIGH_WATERMARK: f64 = 0.4;

/// RabbitMQ's default `disk_free_limit`: 50 MB.
pub const DEFAULT_DISK_FREE_LIMIT: u64 = 50_000_000;

/// What RabbitMQ assumes when it cannot tell the machine's memory: 1 GiB.
const MEMORY_FOR_UNKNOWN_TOTAL: u64 = 1 << 30;

/// How often resident memory is sampled. RabbitMQ samples every 2.5 s;
/// reading `/proc/self/statm` costs microseconds, and message bytes are
/// counted as they arrive anyway.
const MEMORY_INTERVAL: Duration = Duration::from_millis(250);

/// How often free disk space is sampled. RabbitMQ checks every 10 s, more
/// often near the limit; a second keeps the window in which a fast
/// publisher can fill the disk small, for one `statvfs` call.
const DISK_INTERVAL: Duration = Duration::from_secs(1);

/// A size in bytes, given in the config as a whole number of bytes or as
/// a string with one of RabbitMQ's information units
/// ([`parse_information_unit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of bytes, or a size such as \"512MiB\" or \"2GB\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative, got {v}")))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_information_unit(v).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        "'{v}' is not a size: digits, optionally followed by a unit \
                         (kB, MB, GB, TB, PB; Ki, Mi, Gi, Ti, Pi; KiB, MiB, GiB, TiB, PiB)"
                    ))
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses a size as RabbitMQ 3.13+ does (`rabbit_resource_monitor_misc`):
/// digits, optionally followed by a unit. Decimal units are powers of 1000
/// and binary ones (with an `i`) powers of 1024; a bare letter is decimal,
/// as in Kubernetes (`4G` is 4,000,000,000). The spellings accepted are
/// RabbitMQ's: `k`/`K`/`kB`/`KB`/`kb`/`Kb`, `m`/`M`/`MB`/`mb`/`Mb`,
/// `g`/`G`/`GB`/`gb`/`Gb`, `TB`/`tb`/`Tb`, `p`/`P`/`PB`/`pb`/`Pb`;
/// `Ki`/`ki`/`KiB`/`kiB`/`kib`/`KIB`, and `Mi`, `Gi`, `Ti`, `Pi` with the
/// same `iB`/`ib`/`IB` forms. `None` when it is not one of these or does
/// not fit in 64 bits.
pub fn parse_information_unit(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    const K: u64 = 1000;
    const KI: u64 = 1024;
    let multiplier = match unit {
        "" => 1,
        "k" | "K" | "kB" | "KB" | "kb" | "Kb" => K,
        "m" | "M" | "MB" | "mb" | "Mb" => K.pow(2),
        "g" | "G" | "GB" | "gb" | "Gb" => K.pow(3),
        "TB" | "tb" | "Tb" => K.pow(4),
        "p" | "P" | "PB" | "pb" | "Pb" => K.pow(5),
        "Ki" | "ki" | "KiB" | "kiB" | "kib" | "KIB" => KI,
        "Mi" | "MiB" | "mib" | "MIB" => KI.pow(2),
        "Gi" | "GiB" | "gib" | "GIB" => KI.pow(3),
        "Ti" | "TiB" | "tib" | "TIB" => KI.pow(4),
        "Pi" | "PiB" | "pib" | "PIB" => KI.pow(5),
        _ => return None,
    };
    n.checked_mul(multiplier)
}

/// The memory the process may use, and where the figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvailableMemory {
    /// `MemTotal` from `/proc/meminfo`, if it could be read.
    pub total: Option<u64>,
    /// The tightest limit of the process's memory cgroup and its
    /// ancestors (v2 `memory.max`, v1 `memory.limit_in_bytes`), if any.
    pub cgroup_limit: Option<u64>,
}

impl AvailableMemory {
    /// The smaller of the two; 1 GiB, as RabbitMQ assumes, when neither is
    /// known.
    pub fn bytes(&self) -> u64 {
        match (self.total, self.cgroup_limit) {
            (Some(t), Some(c)) => t.min(c),
            (Some(t), None) => t,
            (None, Some(c)) => c,
            (None, None) => MEMORY_FOR_UNKNOWN_TOTAL,
        }
    }
}

/// Reads the memory available to this process: `MemTotal`, and its
/// cgroup's limit found through `/proc/self/cgroup` and
/// `/proc/self/mountinfo`.
pub fn available_memory() -> AvailableMemory {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let total = read(Path::new("/proc/meminfo")).and_then(|m| meminfo_total(&m));
    let cgroup_limit = match (
        read(Path::new("/proc/self/mountinfo")),
        read(Path::new("/proc/self/cgroup")),
    ) {
        (Some(mounts), Some(cgroups)) => cgroup_memory_limit(&mounts, &cgroups, read),
        _ => None,
    };
    AvailableMemory {
        total,
        cgroup_limit,
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn meminfo_total(meminfo: &str) -> Option<u64> {
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

/// A cgroup file system mount: the cgroup its root shows, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    root: String,
    mount_point: PathBuf,
}

/// The cgroup v2 mount and the cgroup v1 mount holding the memory
/// controller, from a `/proc/self/mountinfo` text.
fn cgroup_mounts(mountinfo: &str) -> (Option<CgroupMount>, Option<CgroupMount>) {
    let (mut v2, mut v1) = (None, None);
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - type source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount_point), Some(fs)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let mount = CgroupMount {
            root: unescape_mountinfo(root),
            mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
        };
        match *fs {
            "cgroup2" if v2.is_none() => v2 = Some(mount),
            "cgroup"
                if v1.is_none()
                    && right
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "memory")) =>
            {
                v1 = Some(mount);
            }
            _ => {}
        }
    }
    (v2, v1)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The tightest memory limit of this process's cgroup and its ancestors,
/// given `/proc/self/mountinfo` and `/proc/self/cgroup` as text and a way
/// to read the cgroup files (so tests can give fake ones). cgroup v2's
/// `memory.max` and v1's `memory.limit_in_bytes` are both read (a hybrid
/// host has both); `max`, a missing file and v1's "unlimited" (a number
/// near 2^63, larger than any machine) impose nothing the caller's
/// `min` with `MemTotal` does not already.
pub fn cgroup_memory_limit(
    mountinfo: &str,
    proc_cgroup: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let (v2_mount, v1_mount) = cgroup_mounts(mountinfo);
    let (mut v2_path, mut v1_path) = (None, None);
    for line in proc_cgroup.lines() {
        // hierarchy-id:controllers:path ("0::path" is v2)
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1_path = Some(path);
        }
    }
    let v2 = v2_mount
        .zip(v2_path)
        .and_then(|(m, p)| tightest(&m, p, "memory.max", &read));
    let v1 = v1_mount
        .zip(v1_path)
        .and_then(|(m, p)| tightest(&m, p, "memory.limit_in_bytes", &read));
    match (v2, v1) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The smallest `file` limit from the process's cgroup directory up to
/// the mount point: a parent's limit binds its children too.
fn tightest(
    mount: &CgroupMount,
    cgroup: &str,
    file: &str,
    read: &impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    // Inside a cgroup namespace or a container the mount's root may be the
    // process's own cgroup or one of its ancestors; a path outside the
    // mount's root (another namespace's view) leaves only the mount point.
    let relative = Path::new(cgroup)
        .strip_prefix(&mount.root)
        .unwrap_or(Path::new(""));
    let dir = mount.mount_point.join(relative);
    dir.ancestors()
        .take_while(|d| d.starts_with(&mount.mount_point))
        .filter_map(|d| read(&d.join(file)))
        .filter_map(|text| parse_cgroup_limit(&text))
        .min()
}

/// A cgroup memory limit file: a number of bytes, or `max` (none).
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// The memory high watermark in bytes the configuration asks for: the
/// absolute value, capped at the memory available as RabbitMQ caps it, or
/// the fraction of the memory available.
pub fn memory_limit(limits: &LimitsConfig, available: &AvailableMemory) -> u64 {
    let available = available.bytes();
    match limits.memory_high_watermark_absolute {
        Some(ByteSize(absolute)) => absolute.min(available),
        None => {
            let fraction = limits
                .memory_high_watermark
                .unwrap_or(DEFAULT_MEMORY_HIGH_WATERMARK);
            (available as f64 * fraction) as u64
        }
    }
}

/// The free disk space limit in bytes the configuration asks for: the
/// absolute value, or the multiple of the memory available
/// (`disk_free_limit.relative`), or RabbitMQ's 50 MB.
pub fn disk_free_limit(limits: &LimitsConfig, available: &AvailableMemory) -> u64 {
    match (limits.disk_free_limit, limits.disk_free_limit_relative) {
        (Some(ByteSize(absolute)), _) => absolute,
        (None, Some(multiple)) => (available.bytes() as f64 * multiple) as u64,
        (None, None) => DEFAULT_DISK_FREE_LIMIT,
    }
}

/// Resident memory of this process, in bytes, from `/proc/self/statm`.
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    statm_resident(&statm, rustix::param::page_size() as u64)
}

/// The resident set of a `/proc/<pid>/statm` text (its second field, in
/// pages), in bytes.
pub fn statm_resident(statm: &str, page_size: u64) -> Option<u64> {
    statm
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?
        .checked_mul(page_size)
}

/// The directory whose file system is watched: `data_dir`, or its nearest
/// existing ancestor when it does not exist yet (an in-memory broker never
/// creates it).
pub fn watched_dir(data_dir: &Path) -> PathBuf {
    data_dir
        .ancestors()
        .find(|d| d.as_os_str().is_empty() || d.exists())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Free space on the file system holding `dir`, in bytes: what
/// unprivileged writers may still use (`f_bavail`), the "Available" that
/// RabbitMQ reads from `df`.
pub fn disk_free(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Samples memory and disk until `stop` changes, feeding the broker, whose
/// checks raise and clear the resource alarms.
pub async fn monitor(server: Server, mut stop: watch::Receiver<bool>) {
    let broker = &server.broker;
    let dir = watched_dir(&server.config.data_dir);
    // What the limits were computed from, logged once as RabbitMQ does at
    // boot.
    let available = available_memory();
    if available.total.is_none() && available.cgroup_limit.is_none() {
        tracing::warn!("cannot tell the memory available; assuming 1 GiB, as RabbitMQ does");
    }
    tracing::info!(
        memory_limit = broker.memory_limit(),
        memory_available = available.bytes(),
        mem_total = ?available.total,
        cgroup_limit = ?available.cgroup_limit,
        "memory high watermark set"
    );
    tracing::info!(
        disk_free_limit = broker.disk_free_limit(),
        dir = %dir.display(),
        "free disk space limit set"
    );
    // Both fire at once first, so the broker has samples from the start.
    let mut memory = tokio::time::interval(MEMORY_INTERVAL);
    memory.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut disk = tokio::time::interval(DISK_INTERVAL);
    disk.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last statvfs failed, so a persisting failure is logged
    // once rather than every second.
    let mut disk_failing = false;
    loop {
        tokio::select! {
            _ = memory.tick() => {
                if let Some(rss) = resident_memory() {
                    broker.set_memory_used(rss);
                }
            }
            _ = disk.tick() => {
                // Off the runtime's workers: statvfs on a hung network
                // file system blocks.
                let d = dir.clone();
                match tokio::task::spawn_blocking(move || disk_free(&d)).await {
                    Ok(Ok(free)) => {
                        disk_failing = false;
                        broker.set_disk_free(free);
                    }
                    Ok(Err(e)) if !disk_failing => {
                        disk_failing = true;
                        tracing::error!(
                            dir = %dir.display(),
                            error = %e,
                            "cannot read free disk space; keeping the last sample"
                        );
                    }
                    Ok(Err(_)) => {}
                    Err(e) => tracing::error!(error = %e, "the free disk space check panicked"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The memory high watermark and the free disk space limit, in bytes, for
/// a broker about to be built (its `Limits`).
pub fn configured_limits(limits: &LimitsConfig) -> (u64, u64) {
    let available = available_memory();
    (
        memory_limit(limits, &available),
        disk_free_limit(limits, &available),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::collections::HashMap;

    use super::*;

    #[test]
    fn information_units_are_rabbitmqs() {
        let cases = [
            ("0", 0),
            ("1073741824", 1 << 30),
            ("1024MiB", 1 << 30),
            ("4Gi", 4 << 30),
            ("1Ti", 1 << 40),
            ("512MiB", 512 << 20),
            ("2gib", 2 << 30),
            ("3KIB", 3 * 1024),
            ("1GB", 1_000_000_000),
            ("4G", 4_000_000_000),
            ("50MB", 50_000_000),
            ("50mb", 50_000_000),
            ("7k", 7000),
            ("2TB", 2_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1PiB", 1 << 50),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_information_unit(text), Some(bytes), "{text}");
        }
        // Not RabbitMQ's: no space, no fraction, no sign, no bare unit, no
        // lower-case mi, no T alone, nothing that overflows.
        for text in [
            "", "MB", "1 GB", "1.5GB", "-1", "+1", "1mi", "1T", "1XB", "1GBs", "99999PB",
        ] {
            assert_eq!(parse_information_unit(text), None, "{text}");
        }
    }

    #[test]
    fn byte_sizes_come_as_numbers_or_strings() {
        #[derive(serde::Deserialize)]
        struct T {
            a: ByteSize,
            b: ByteSize,
        }
        let t: T = toml::from_str("a = 1000\nb = \"2GiB\"\n").unwrap();
        assert_eq!((t.a, t.b), (ByteSize(1000), ByteSize(2 << 30)));
        let err = toml::from_str::<T>("a = -1\nb = 0\n").err().unwrap();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = toml::from_str::<T>("a = 1\nb = \"2 GB\"\n").err().unwrap();
        assert!(err.to_string().contains("is not a size"), "{err}");
    }

    #[test]
    fn meminfo_and_statm_parse() {
        let meminfo = "MemTotal:       24684084 kB\nMemFree:         1000 kB\n";
        assert_eq!(meminfo_total(meminfo), Some(24_684_084 * 1024));
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(
            statm_resident("5000 1200 300 10 0 900 0\n", 4096),
            Some(1200 * 4096)
        );
        assert_eq!(statm_resident("5000\n", 4096), None);
        assert_eq!(statm_resident("", 4096), None);
    }

    /// Fake cgroup files, by path.
    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        move |p: &Path| map.get(p).cloned()
    }

    const V2_MOUNT: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";

    #[test]
    fn cgroup_v2_memory_max_of_the_process_and_its_ancestors() {
        let read = files(&[
            ("/sys/fs/cgroup/app.slice/memory.max", "1073741824\n"),
            (
                "/sys/fs/cgroup/app.slice/warren.service/memory.max",
                "max\n",
            ),
        ]);
        let limit = cgroup_memory_limit(V2_MOUNT, "0::/app.slice/warren.service\n", &read);
        assert_eq!(limit, Some(1 << 30), "the parent's limit binds");
        let read = files(&[
            ("/sys/fs/cgroup/app.slice/memory.max", "1073741824\n"),
            (
                "/sys/fs/cgroup/app.slice/warren.service/memory.max",
                "268435456\n",
            ),
        ]);
        let limit = cgroup_memory_limit(V2_MOUNT, "0::/app.slice/warren.service\n", &read);
        assert_eq!(limit, Some(256 << 20), "the tighter of the two");
        let read = files(&[("/sys/fs/cgroup/user.slice/memory.max", "max\n")]);
        assert_eq!(
            cgroup_memory_limit(V2_MOUNT, "0::/user.slice\n", &read),
            None
        );
    }

    #[test]
    fn cgroup_v2_in_a_container_namespace() {
        // In a container the process sees itself at the root of the mount.
        let read = files(&[("/sys/fs/cgroup/memory.max", "536870912\n")]);
        assert_eq!(
            cgroup_memory_limit(V2_MOUNT, "0::/\n", &read),
            Some(512 << 20)
        );
        // A mount whose root is the process's cgroup's parent.
        let mounts = "40 30 0:31 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let read = files(&[
            ("/sys/fs/cgroup/memory.max", "2147483648\n"),
            ("/sys/fs/cgroup/c1/memory.max", "max\n"),
        ]);
        assert_eq!(
            cgroup_memory_limit(mounts, "0::/kubepods/pod1/c1\n", &read),
            Some(2 << 30)
        );
    }

    #[test]
    fn cgroup_v1_memory_limit_in_bytes() {
        // A hybrid host, as this sandbox is: v1 controllers, an empty v2
        // hierarchy beside them.
        let mounts = "\
25 24 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
30 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
38 25 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let cgroups = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
                "268435456\n",
            ),
            ("/sys/fs/cgroup/unified/memory.max", "max\n"),
        ]);
        assert_eq!(cgroup_memory_limit(mounts, cgroups, &read), Some(256 << 20));
        // v1's "unlimited" is a number larger than any machine: the min
        // with MemTotal makes it harmless.
        let read = files(&[(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        let limit = cgroup_memory_limit(mounts, "4:memory:/\n", &read);
        let available = AvailableMemory {
            total: Some(8 << 30),
            cgroup_limit: limit,
        };
        assert_eq!(available.bytes(), 8 << 30);
        // Controllers sharing a hierarchy, and no cgroup files at all.
        let mounts = "30 25 0:27 / /sys/fs/cgroup/memory,cpu rw - cgroup cgroup rw,cpu,memory\n";
        let read = files(&[(
            "/sys/fs/cgroup/memory,cpu/x/memory.limit_in_bytes",
            "1000\n",
        )]);
        assert_eq!(
            cgroup_memory_limit(mounts, "3:cpu,memory:/x\n", &read),
            Some(1000)
        );
        assert_eq!(cgroup_memory_limit("", "0::/\n", files(&[])), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        let mounts = "35 24 0:30 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        let read = files(&[("/mnt/cg two/memory.max", "4096\n")]);
        assert_eq!(cgroup_memory_limit(mounts, "0::/\n", &read), Some(4096));
    }

    fn limits(toml_text: &str) -> LimitsConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn limits_from_the_config() {
        let available = AvailableMemory {
            total: Some(16 << 30),
            cgroup_limit: Some(256 << 20),
        };
        let l = limits("");
        assert_eq!(
            memory_limit(&l, &available),
            (f64::from(256u32 << 20) * 0.4) as u64
        );
        assert_eq!(disk_free_limit(&l, &available), 50_000_000);
        let l = limits("memory_high_watermark = 0.5\ndisk_free_limit_relative = 1.5\n");
        assert_eq!(memory_limit(&l, &available), 128 << 20);
        assert_eq!(disk_free_limit(&l, &available), 384 << 20);
        // An absolute watermark above what is available is capped, as
        // RabbitMQ caps it.
        let l = limits("memory_high_watermark_absolute = \"1GiB\"\ndisk_free_limit = \"1GB\"\n");
        assert_eq!(memory_limit(&l, &available), 256 << 20);
        assert_eq!(disk_free_limit(&l, &available), 1_000_000_000);
        let l = limits("memory_high_watermark_absolute = 1000000\n");
        assert_eq!(memory_limit(&l, &available), 1_000_000);
        let unknown = AvailableMemory {
            total: None,
            cgroup_limit: None,
        };
        assert_eq!(
            memory_limit(&limits(""), &unknown),
            (f64::from(1u32 << 30) * 0.4) as u64
        );
    }

    #[test]
    fn the_config_refuses_two_forms_of_one_limit() {
        use crate::Config;
        let ok = |t: &str| Config::from_toml(&format!("[limits]\n{t}")).map(|_| ());
        ok("memory_high_watermark = 0.6\ndisk_free_limit = \"2GB\"").unwrap();
        ok("memory_high_watermark_absolute = \"4Gi\"\ndisk_free_limit_relative = 1.5").unwrap();
        for (bad, says) in [
            ("memory_high_watermark = 1.5", "between 0 and 1"),
            (
                "memory_high_watermark = 0.4\nmemory_high_watermark_absolute = 1000",
                "give one of",
            ),
            (
                "disk_free_limit = 1\ndisk_free_limit_relative = 1.0",
                "give one of",
            ),
            ("disk_free_limit_relative = -1.0", "0 or more"),
            ("disk_free_limit = \"50 MB\"", "is not a size"),
        ] {
            let err = ok(bad).unwrap_err();
            assert!(err.0.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_watched_dir_is_the_nearest_existing_one() {
        let tmp = std::env::temp_dir();
        assert_eq!(watched_dir(&tmp.join("no-such-dir/deeper")), tmp);
        assert_eq!(
            watched_dir(Path::new("no-such-relative-dir")),
            Path::new(".")
        );
        assert!(disk_free(&watched_dir(&tmp)).unwrap() > 0);
    }
}
