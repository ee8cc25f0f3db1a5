//! A fixed-bin histogram of durations: mergeable and subtractable exactly, so percentiles can be
//! read from rollups. Bins are 1 s wide up to 1 min, 10 s to 10 min, 1 min to 1 h, 10 min to 6 h,
//! then one overflow bin; a percentile is the upper edge of the bin holding its rank.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// (start of the band in ms, bin width in ms, first bin index of the band)
const BANDS: [(i64, i64, u16); 4] = [
    (0, 1_000, 0),
    (60_000, 10_000, 60),
    (600_000, 60_000, 114),
    (3_600_000, 600_000, 164),
];
const OVERFLOW_FROM_MS: i64 = 21_600_000;
const OVERFLOW_BIN: u16 = 194;

/// Counts per bin, dense up to the highest non-empty bin (trailing zeros trimmed, so equal
/// histograms are equal values). Serialised sparse, as `{bin: count}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram(Vec<i64>);

impl Serialize for Histogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sparse: BTreeMap<u16, i64> = self.bins().collect();
        sparse.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let sparse = BTreeMap::<u16, i64>::deserialize(deserializer)?;
        Ok(Histogram::from_bins(sparse))
    }
}

fn bin_of(ms: i64) -> u16 {
    let ms = ms.max(0);
    if ms >= OVERFLOW_FROM_MS {
        return OVERFLOW_BIN;
    }
    let (start, width, first) = BANDS
        .iter()
        .rev()
        .find(|(start, _, _)| ms >= *start)
        .copied()
        .unwrap_or(BANDS[0]);
    first + ((ms - start) / width) as u16
}

/// Upper edge of a bin in ms (the overflow bin reports its lower edge).
fn upper_edge_ms(bin: u16) -> i64 {
    if bin >= OVERFLOW_BIN {
        return OVERFLOW_FROM_MS;
    }
    let (start, width, first) = BANDS
        .iter()
        .rev()
        .find(|(_, _, first)| bin >= *first)
        .copied()
        .unwrap_or(BANDS[0]);
    start + (i64::from(bin - first) + 1) * width
}

impl Histogram {
    /// How many recorded durations lie in bins that end at or before `ms`: exactly the count
    /// under `ms` when `ms` is a bin edge.
    pub fn count_below(&self, ms: i64) -> i64 {
        self.0
            .iter()
            .enumerate()
            .take_while(|(bin, _)| upper_edge_ms(*bin as u16) <= ms)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn record(&mut self, ms: i64) {
        let bin = usize::from(bin_of(ms));
        if self.0.len() <= bin {
            self.0.resize(bin + 1, 0);
        }
        self.0[bin] += 1;
    }

    pub fn add(&mut self, other: &Histogram, sign: i64) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += sign * theirs;
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    /// Non-empty bins and their counts, in bin order.
    pub fn bins(&self) -> impl Iterator<Item = (u16, i64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 0)
            .map(|(b, c)| (b as u16, *c))
    }

    /// A histogram from `(bin, count)` pairs, as `bins` lists them; bins past the overflow bin
    /// count in it.
    pub fn from_bins(bins: impl IntoIterator<Item = (u16, i64)>) -> Self {
        let mut h = Histogram::default();
        for (bin, count) in bins {
            let bin = usize::from(bin.min(OVERFLOW_BIN));
            if h.0.len() <= bin {
                h.0.resize(bin + 1, 0);
            }
            h.0[bin] += count;
        }
        h.trim();
        h
    }

    pub fn count(&self) -> i64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (nearest rank) in seconds, or `None` when empty.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n <= 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
        let mut seen = 0;
        for (bin, count) in self.bins() {
            seen += count;
            if seen >= rank {
                return Some(upper_edge_ms(bin) as f64 / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_below_a_bin_edge_is_exact() {
        let mut h = Histogram::default();
        for ms in [500, 4_999, 5_000, 59_000, 61_000, 700_000, 30_000_000] {
            h.record(ms);
        }
        assert_eq!(h.count_below(5_000), 2);
        assert_eq!(h.count_below(60_000), 4);
        assert_eq!(h.count_below(120_000), 5);
        assert_eq!(h.count_below(3_600_000), 6);
        assert_eq!(h.count_below(0), 0);
    }

    #[test]
    fn bins_have_the_documented_edges() {
        assert_eq!(bin_of(0), 0);
        assert_eq!(bin_of(999), 0);
        assert_eq!(bin_of(59_999), 59);
        assert_eq!(bin_of(60_000), 60);
        assert_eq!(bin_of(599_999), 113);
        assert_eq!(bin_of(600_000), 114);
        assert_eq!(bin_of(3_599_999), 163);
        assert_eq!(bin_of(3_600_000), 164);
        assert_eq!(bin_of(21_599_999), 193);
        assert_eq!(bin_of(99_999_999), OVERFLOW_BIN);
        for ms in [0, 500, 59_500, 61_000, 700_000, 4_000_000, 21_000_000] {
            let edge = upper_edge_ms(bin_of(ms));
            assert!(edge > ms && bin_of(edge - 1) == bin_of(ms), "{ms}");
        }
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let mut h = Histogram::default();
        for s in 1..=100 {
            h.record(s * 1000 - 500);
        }
        assert_eq!(h.quantile_seconds(0.5), Some(50.0));
        assert_eq!(h.quantile_seconds(0.9), Some(90.0));
        assert_eq!(h.quantile_seconds(0.99), Some(100.0));
        assert_eq!(Histogram::default().quantile_seconds(0.5), None);
    }

    #[test]
    fn subtracting_what_was_added_leaves_it_empty() {
        let mut a = Histogram::default();
        a.record(1_500);
        a.record(70_000);
        let b = a.clone();
        a.add(&b, -1);
        assert_eq!(a, Histogram::default());
    }
}
