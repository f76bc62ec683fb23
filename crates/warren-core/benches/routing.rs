//! Topic routing with many bindings: the trie against matching every
//! binding's pattern (what routing did before the trie).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    reason = "criterion macros generate undocumented items; a bench may panic"
)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use warren_codec::{FieldTable, ShortStr};
use warren_core::exchange::{Destination, Exchange, ExchangeKind, ExchangeSpec, topic_matches};

/// Patterns in the shapes applications use: per-tenant and per-event keys
/// with `*` and `#` in a few places.
fn pattern(i: usize) -> String {
    match i % 4 {
        0 => format!("tenant{i}.orders.*"),
        1 => format!("tenant{i}.#"),
        2 => format!("*.events{i}.created"),
        _ => format!("logs.{i}.#.error"),
    }
}

fn bench(c: &mut Criterion) {
    for n in [100usize, 10_000] {
        let ex = Exchange::new(ExchangeSpec {
            name: ShortStr::from("t"),
            kind: ExchangeKind::Topic,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        });
        let patterns: Vec<String> = (0..n).map(pattern).collect();
        for p in &patterns {
            ex.bind(
                Destination::Exchange(ShortStr::from("sink")),
                ShortStr::from(p.as_str()),
                FieldTable::new(),
            )
            .unwrap();
        }
        let key = ShortStr::from("tenant41.orders.paid");
        c.bench_function(&format!("topic route, trie, {n} bindings"), |b| {
            b.iter(|| {
                let mut hits = 0;
                ex.route(black_box(&key), None, &mut |_| hits += 1);
                assert_eq!(hits, 1);
            })
        });
        let split: Vec<Vec<ShortStr>> = patterns
            .iter()
            .map(|p| p.split('.').map(ShortStr::from).collect())
            .collect();
        c.bench_function(&format!("topic route, every pattern, {n} bindings"), |b| {
            b.iter(|| {
                let words: Vec<&[u8]> = key.as_bytes().split(|&c| c == b'.').collect();
                let hits = split.iter().filter(|p| topic_matches(p, &words)).count();
                assert_eq!(hits, 1);
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
