//! A fixed, log-bucketed latency histogram in the spirit of HdrHistogram.
//!
//! Values (nanoseconds) below 32 have a bucket each; above that, every
//! power-of-two range is split into 32 equal buckets, so a reported value is
//! within about 3% of the true one. 1,920 `u64` counters cover the whole
//! `u64` range: 15 KiB per consumer, recorded without allocation and merged
//! once at the end of a run.

/// Bits of mantissa kept per power of two: 32 sub-buckets.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`: 32 exact ones, then 59 ranges of 32.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Counts of values by logarithmic bucket, with the exact count, sum and max.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let shift = exp - SUB_BITS;
    let mantissa = (v >> shift) - SUB;
    ((shift as u64 + 1) * SUB + mantissa) as usize
}

/// The middle of bucket `i`: what a percentile falling in it reports.
fn midpoint(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let low = (SUB + i % SUB) << shift;
    low + (1u64 << shift) / 2
}

impl Histogram {
    /// Records one value.
    pub(crate) fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Number of recorded values.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Largest recorded value, exactly.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Mean of the recorded values, exactly (0 when empty).
    pub(crate) fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the smallest bucket holding
    /// at least `ceil(q * count)` values, reported by its midpoint and
    /// never above the exact maximum. 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return midpoint(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_u64() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 2, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i >= last, "index({v}) went backwards");
            assert!(i < BUCKETS);
            last = i;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn midpoints_are_within_three_percent() {
        for v in [33u64, 1_000, 123_456, 9_999_999, 1 << 40, 3 << 50] {
            let m = midpoint(index(v));
            let err = (m as f64 - v as f64).abs() / v as f64;
            assert!(err <= 1.0 / 32.0, "v={v} m={m} err={err}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1_000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.04, "p50 {p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.04, "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.quantile(0.5), 10);
    }
}
