//! Plumbing shared by the lapin and amqprs clients: settings from the
//! runner's environment, names, the expected topic routing, and `run`, which
//! maps a scenario's outcome to the exit code the runner reads (0 pass,
//! 1 fail, 3 not expressible with this client).

#![allow(dead_code)] // Each binary uses a different part of this module.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub type Res = Result<(), String>;
pub type Scenario = fn() -> Pin<Box<dyn Future<Output = Res> + Send>>;

pub const EXIT_NA: i32 = 3;
pub const NA: &str = "n/a:";
pub const LARGE_SIZE: usize = 8 * 1024 * 1024;

pub const TOPIC_KEYS: [&str; 10] = [
    "quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
    "lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.new.rabbit",
    "lazy.orange.new.rabbit", "lazy",
];
pub const TOPIC_Q1: (&[&str], &[&str]) =
    (&["*.orange.*"], &["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]);
pub const TOPIC_Q2: (&[&str], &[&str]) = (
    &["*.*.rabbit", "lazy.#"],
    &["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit",
      "lazy.orange.new.rabbit", "lazy"],
);

pub fn env(k: &str, default: &str) -> String {
    std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

pub fn host() -> String { env("WARREN_HOST", "127.0.0.1") }
pub fn port() -> u16 { env("WARREN_PORT", "5672").parse().expect("WARREN_PORT") }
pub fn user() -> String { env("WARREN_USER", "guest") }
pub fn password() -> String { env("WARREN_PASSWORD", "guest") }

pub fn name(client: &str, prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("interop-{client}-{prefix}-{}-{nanos:x}", std::process::id())
}

pub fn redeclare_text(q: &str) -> String {
    format!("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'")
}

pub fn fib(n: u32) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

pub fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Pseudo-random bytes (xorshift): enough to catch a reordered frame.
pub fn large_body() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    (0..LARGE_SIZE).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect()
}

pub fn check(cond: bool, what: impl std::fmt::Display) -> Res {
    if cond { Ok(()) } else { Err(what.to_string()) }
}

pub fn check_eq<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Res {
    if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, want {want:?}")) }
}

/// Polls `cond` every 10 ms until it holds or `secs` pass.
pub async fn until(mut cond: impl FnMut() -> bool, secs: u64, what: &str) -> Res {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > end {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

pub fn sorted_ints(bodies: impl IntoIterator<Item = Vec<u8>>) -> Vec<u32> {
    let mut v: Vec<u32> = bodies.into_iter().map(|b| String::from_utf8_lossy(&b).parse().unwrap_or(u32::MAX)).collect();
    v.sort_unstable();
    v
}

pub fn run(scenarios: &[(&str, Scenario)]) -> ! {
    let args: Vec<String> = std::env::args().collect();
    let Some(wanted) = args.get(1) else {
        eprintln!("usage: {} SCENARIO", args[0]);
        std::process::exit(2);
    };
    let Some((_, f)) = scenarios.iter().find(|(n, _)| n == wanted) else {
        println!("n/a: no such scenario for this client");
        std::process::exit(EXIT_NA);
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let res = rt.block_on(f());
    match res {
        Ok(()) => std::process::exit(0),
        Err(e) if e.starts_with(NA) => {
            println!("{e}");
            std::process::exit(EXIT_NA)
        }
        Err(e) => {
            eprintln!("FAIL: {e}");
            std::process::exit(1)
        }
    }
}

/// Turns any displayable error into the scenario's failure text.
pub trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Debug> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e:?}"))
    }
}
