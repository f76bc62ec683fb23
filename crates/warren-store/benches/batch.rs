//! What one group commit of 1,000 persistent 1 KiB publishes costs the
//! store: `apply` of the batch (message records and queue index entries),
//! and `apply` followed by `flush` (the fsync a confirm waits for).
//!
//! `cargo bench -p warren-store --bench batch`

#![allow(missing_docs, reason = "a benchmark binary")]
#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use warren_codec::{BasicProperties, ShortStr};
use warren_store::{Batch, Store, StoredMessage};

fn message() -> StoredMessage {
    StoredMessage {
        exchange: ShortStr::from("x"),
        routing_key: ShortStr::from("rk"),
        properties: BasicProperties {
            delivery_mode: Some(2),
            ..BasicProperties::default()
        },
        body: Bytes::from(vec![7u8; 1024]),
    }
}

fn batch(m: &StoredMessage, next: &mut u64) -> Batch {
    let mut batch = Batch::default();
    for _ in 0..1000 {
        *next += 1;
        batch.put_message(*next, m);
        batch.enqueue(1, *next, *next);
    }
    batch
}

fn bench(c: &mut Criterion) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("warren-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).unwrap();
    let m = message();
    let mut next = 0;
    let mut g = c.benchmark_group("batch of 1000 x 1 KiB");
    g.sample_size(20);
    g.bench_function("apply", |b| {
        b.iter(|| store.apply(batch(&m, &mut next)).unwrap());
    });
    g.bench_function("apply+flush", |b| {
        b.iter(|| {
            store.apply(batch(&m, &mut next)).unwrap();
            store.flush().unwrap();
        });
    });
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
