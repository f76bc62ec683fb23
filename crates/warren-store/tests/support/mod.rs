//! What the store's integration tests share: a temporary directory and a
//! seeded random number generator.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::path::PathBuf;

/// A path for a store's files (`.0`, not created: the store makes it)
/// inside a fresh temporary directory, removed with it on drop.
pub(crate) struct TempDir(
    pub(crate) PathBuf,
    #[expect(dead_code, reason = "held: removed on drop")] tempfile::TempDir,
);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("warren-store-test-{name}-"))
            .tempdir()
            .expect("a temporary directory");
        TempDir(dir.path().join("data"), dir)
    }
}

/// xorshift64*: deterministic, seeded per case, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One time in `one_in`.
    pub(crate) fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// One of `items`.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
