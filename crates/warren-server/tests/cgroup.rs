//! The memory high watermark under a container's memory limit: the real
//! `warren` binary started inside a memory cgroup of its own, limited to
//! 256 MiB, must set its watermark to 40% of 256 MiB (not of the
//! machine's memory) and show it in `/api/nodes`.
//!
//! The test makes a child of its own memory cgroup (cgroup v1
//! `memory.limit_in_bytes`, or v2 `memory.max` where the memory controller
//! is delegated), starts the broker through `sh` so that it joins that
//! cgroup before it execs, and removes the cgroup afterwards. Where
//! cgroups cannot be created (no root, a read-only cgroup file system) it
//! says so and passes without checking anything.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The cgroup's limit: 256 MiB.
const LIMIT: u64 = 256 << 20;
/// Bound on the broker's start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A memory cgroup made for the test, and which file holds its limit.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// A child of this process's memory cgroup, limited to `limit` bytes;
    /// `Err` says why none could be made.
    fn create(limit: u64) -> Result<Cgroup, String> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let name = format!("warren-test-{}", std::process::id());
        // cgroup v1's memory hierarchy first, then v2.
        let v1 = mount_of(&mountinfo, |fs, opts| {
            fs == "cgroup" && opts.split(',').any(|o| o == "memory")
        })
        .zip(cgroups.lines().find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        }));
        let v2 = mount_of(&mountinfo, |fs, _| fs == "cgroup2")
            .zip(cgroups.lines().find_map(|l| l.strip_prefix("0::")));
        let mut why = Vec::new();
        for (mount, path, file) in v1
            .map(|(m, p)| (m, p, "memory.limit_in_bytes"))
            .into_iter()
            .chain(v2.map(|(m, p)| (m, p, "memory.max")))
        {
            let dir = mount.join(path.trim_start_matches('/')).join(&name);
            if let Err(e) = std::fs::create_dir(&dir) {
                why.push(format!("mkdir {}: {e}", dir.display()));
                continue;
            }
            let cgroup = Cgroup { dir };
            match std::fs::write(cgroup.dir.join(file), limit.to_string()) {
                Ok(()) => return Ok(cgroup),
                // v2 without the memory controller delegated: no memory.max.
                Err(e) => why.push(format!("{file} in {}: {e}", cgroup.dir.display())),
            }
        }
        Err(if why.is_empty() {
            "no memory cgroup hierarchy is mounted".to_string()
        } else {
            why.join("; ")
        })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty by now (the broker was killed and reaped first).
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The mount point of the first mount whose file system type and super
/// options `pick` accepts (the mount's root is assumed to be `/`, as on a
/// host; a test in a container that mounts a sub-tree cannot make
/// cgroups anyway).
fn mount_of(mountinfo: &str, pick: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let fs = right.next()?;
        let opts = right.nth(1)?;
        pick(fs, opts).then(|| PathBuf::from(mount_point))
    })
}

/// A broker child process; killed and reaped when dropped, before the
/// cgroup is removed.
struct Broker {
    child: Child,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `warren` inside `cgroup` (the shell joins it, then execs the
/// broker) and returns it with its management API's address, read from
/// its log.
fn start_in(cgroup: &Cgroup, data_dir: &Path) -> (Broker, SocketAddr) {
    let procs = cgroup.dir.join("cgroup.procs");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(&procs)
        .arg(env!("CARGO_BIN_EXE_warren"))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--management-listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log", "info"])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let streams: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    // One reader per pipe to its end, so the broker never blocks on
    // logging; every line goes to the channel.
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let broker = Broker { child };
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    let mut http = None;
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        if line.contains("management API listening") {
            http = listen_addr(&line);
        }
        if line.contains("warren started")
            && let Some(http) = http
        {
            return (broker, http);
        }
        seen.push(line);
    }
    panic!("warren did not start; it logged:\n{}", seen.join("\n"));
}

fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listen=")? + "listen=".len()..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `GET path` as guest, over one blocking connection; the JSON body.
fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The API answers with a length, not chunks (small bodies).
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn the_memory_watermark_is_a_fraction_of_the_cgroup_limit() {
    let cgroup = match Cgroup::create(LIMIT) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: cannot make a memory cgroup here ({why})");
            return;
        }
    };
    let data_dir = std::env::temp_dir().join(format!("warren-cgroup-{}", std::process::id()));
    let (broker, http) = start_in(&cgroup, &data_dir);
    // The broker really runs in the cgroup.
    let its = std::fs::read_to_string(format!("/proc/{}/cgroup", broker.child.id())).unwrap();
    let name = cgroup.dir.file_name().unwrap().to_str().unwrap();
    assert!(its.contains(name), "{its}");

    let nodes = get_json(http, "/api/nodes");
    let node = &nodes[0];
    let expected = (LIMIT as f64 * 0.4) as u64;
    assert_eq!(node["mem_limit"].as_u64(), Some(expected), "{node}");
    // Its resident memory (0 if the API answered before the first sample).
    assert!(node["mem_used"].as_u64().unwrap() < LIMIT, "{node}");
    assert_eq!(node["mem_alarm"], false, "{node}");

    drop(broker);
    drop(cgroup);
    let _ = std::fs::remove_dir_all(&data_dir);
}
