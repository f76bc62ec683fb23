//! Warren's durable store. Not built yet: durability is tracked by its own
//! issue, and until it lands every message lives in memory only.
//!
//! # Layout
//! Empty on purpose; see `ARCHITECTURE.md` for where the store will sit.
