//! Mergeable quantile sketch (DDSketch with a logarithmic bin mapping) for the value
//! distributions kept in rollup buckets: latencies and TTFT now, arbitrary metric values
//! (negative and zero included) later. Raw samples are never kept, so the sketch owns the
//! bin layout, the merge rules and the stored byte format.
//!
//! # Accuracy guarantee
//!
//! Sort the `n` added values as `x_0 <= x_1 <= … <= x_{n-1}`. `quantile(q)` targets the
//! *lower nearest rank* `x_r` with `r = ⌊q·(n−1)⌋` (0-based; a product `q·(n−1)` that falls a
//! few ulps short of an integer counts as that integer, so `q = 0.29` with `n = 101` is rank
//! 29, as written). It returns `v` with
//!
//! `|v − x_r| <= RELATIVE_ACCURACY · |x_r|`
//!
//! provided that
//! - `x_r == 0` or `|x_r| >= 1e-9`: magnitudes below `1e-9` are counted as zero, so for them
//!   the error is absolute and below `1e-9`;
//! - no bins were collapsed below `x_r` (see *Memory*).
//!
//! `quantile(0.0)` and `quantile(1.0)` are the exact minimum and maximum, and every answer is
//! clamped to `[min, max]`, which can only move it closer. `count`, `min` and `max` are exact;
//! `sum` is an `f64` running sum.
//!
//! # Memory
//!
//! Each sign has its own store of at most 2048 bins, enough for any data whose magnitudes
//! lie within a factor of about 6e17 (e.g. `1e-6..1e9`). A wider range collapses the bins of
//! the *lowest* values into the lowest kept bin: the smallest positive values, and the most
//! negative values. Quantiles landing there lose the guarantee (they are overestimated);
//! everything above keeps it, so tail latencies stay accurate.
//!
//! # Equality and merging
//!
//! Bins are stored trimmed, and what a collapse produces depends only on the multiset of
//! added values, so count, bins, min and max come out identical whatever the order of
//! `add` and `merge` calls and whatever the shape of the merge tree. Only `sum` is
//! order-dependent (floating-point rounding in its last bits), so the derived `==` between
//! sketches built along different paths can fail on `sum` alone; `==` after
//! `decode(encode(s))` is exact.

use std::iter;

use crate::varint;

/// Bound on the relative error of `Sketch::quantile`; see the module docs for its terms.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// Bins per unit of natural logarithm. Bin `i` holds magnitudes in `(e^((i−1)/S), e^(i/S)]`,
/// and its representative `2·e^(i/S)/(1 + e^(1/S))` is within `tanh(1/(2S))` of each of
/// them. `S = 50` gives `tanh(0.01) ≈ 0.0099997`; the 3e-7 slack below `RELATIVE_ACCURACY`
/// absorbs the rounding of `ln`/`exp`, so values sitting on a bin edge keep the bound too.
const BINS_PER_LN: f64 = 50.0;

/// Magnitudes below this count as zero, which bounds the keys from below (the log mapping
/// has no bin for zero itself); their error is absolute instead of relative.
const ZERO_THRESHOLD: f64 = 1e-9;

/// Most bins per store: bounds memory at 16 KiB per store, while the span latencies and
/// most metrics need, `BINS_PER_LN · ln(1e9 / 1e-6) ≈ 1727` bins, fits with headroom.
const MAX_BINS: usize = 2048;
const MAX_SPAN: i32 = MAX_BINS as i32;

/// Largest key magnitude `decode` accepts. `add` never exceeds `⌈50 · ln(f64::MAX)⌉ = 35_490`;
/// the bound keeps key arithmetic on decoded input far from `i32` overflow.
const MAX_ABS_KEY: i64 = 1 << 16;

const FORMAT_VERSION: u8 = 1;

/// A mergeable distribution summary; see the module docs for its guarantees.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sketch {
    /// Keyed by the negated bin index of `|value|`, so keys ascend with the value and the
    /// collapse of the lowest keys hits the most negative values, as in the positive store.
    negative: Store,
    zero_count: u64,
    positive: Store,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Sketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Non-finite values are dropped: they have no place in a log mapping and would poison
    /// `sum`.
    #[inline]
    pub fn add(&mut self, value: f64) {
        self.add_n(value, 1);
    }

    /// Records `value` `n` times.
    #[inline]
    pub fn add_n(&mut self, value: f64, n: u64) {
        if n == 0 || !value.is_finite() {
            return;
        }
        // `-0.0 + 0.0` is `+0.0`: a single zero keeps min, max and sum independent of the
        // order in which zeros of either sign arrive.
        let value = value + 0.0;
        self.count = self.count.saturating_add(n);
        self.sum = super::saturating_add(self.sum, value * n as f64);
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        let magnitude = value.abs();
        if magnitude < ZERO_THRESHOLD {
            self.zero_count = self.zero_count.saturating_add(n);
        } else if value > 0.0 {
            self.positive.add(bin_index(magnitude), n);
        } else {
            self.negative.add(-bin_index(magnitude), n);
        }
    }

    /// Takes back one `value` added before: the bins, count and sum forget
    /// it; `min` and `max` stay (bounds still, though perhaps no longer
    /// reached) while two values or more are left, and are the one left's
    /// (the sum) after. Returns false, changing nothing, when no bin holds
    /// it.
    pub fn remove(&mut self, value: f64) -> bool {
        if !value.is_finite() || self.count == 0 {
            return false;
        }
        let value = value + 0.0;
        let magnitude = value.abs();
        let removed = if magnitude < ZERO_THRESHOLD {
            let held = self.zero_count > 0;
            self.zero_count -= u64::from(held);
            held
        } else if value > 0.0 {
            self.positive.remove(bin_index(magnitude))
        } else {
            self.negative.remove(-bin_index(magnitude))
        };
        if removed {
            self.count -= 1;
            self.sum = super::saturating_add(self.sum, -value);
            match self.count {
                0 => *self = Sketch::default(),
                // One value left: the sum (the encoding keeps no other).
                1 => (self.min, self.max) = (Some(self.sum), Some(self.sum)),
                _ => {}
            }
        }
        removed
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        self.negative.merge(&other.negative);
        self.positive.merge(&other.positive);
        self.merge_totals(other.zero_count, other.count, other.sum, other.min, other.max);
    }

    /// The part of a merge besides the bins.
    fn merge_totals(
        &mut self,
        zero_count: u64,
        count: u64,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
    ) {
        self.zero_count = self.zero_count.saturating_add(zero_count);
        self.count = self.count.saturating_add(count);
        self.sum = super::saturating_add(self.sum, sum);
        self.min = combine(self.min, min, f64::min);
        self.max = combine(self.max, max, f64::max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn min(&self) -> Option<f64> {
        self.min
    }

    pub fn max(&self) -> Option<f64> {
        self.max
    }

    /// `q` is clamped to `[0, 1]`; `None` when empty or `q` is NaN.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let (min, max) = (self.min?, self.max?);
        if q.is_nan() {
            return None;
        }
        if q <= 0.0 {
            return Some(min);
        }
        if q >= 1.0 {
            return Some(max);
        }
        let last_rank = self.count.saturating_sub(1);
        // Callers pass decimals such as 0.29 that f64 cannot hold exactly; the nudge lets
        // q·(n−1) reach the integer rank they meant instead of stopping one below it.
        let position = q * last_rank as f64 * (1.0 + 4.0 * f64::EPSILON);
        let mut remaining = (position.floor() as u64).min(last_rank);
        let estimate = if let Some(key) = self.negative.locate(&mut remaining) {
            -representative(-key)
        } else if remaining < self.zero_count {
            0.0
        } else {
            remaining -= self.zero_count;
            self.positive.locate(&mut remaining).map_or(max, representative)
        };
        Some(estimate.max(min).min(max))
    }

    /// Appends the encoding to `out`:
    ///
    /// ```text
    /// u8      format version (1)
    /// varint  zero count
    /// store   negative, then positive:
    ///           varint  number of non-empty bins
    ///           per bin: key (first: zigzag varint; then varint gap = key − previous − 1),
    ///                    varint count (non-zero)
    /// f64 LE  min             if count >= 1
    /// f64 LE  max, sum        if count >= 2 (with one value both equal min)
    /// ```
    ///
    /// The count is not stored: it is the sum of the bin counts.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_VERSION);
        varint::put(out, self.zero_count);
        self.negative.encode(out);
        self.positive.encode(out);
        if let (Some(min), Some(max)) = (self.min, self.max) {
            out.extend_from_slice(&min.to_le_bytes());
            if self.count > 1 {
                out.extend_from_slice(&max.to_le_bytes());
                out.extend_from_slice(&self.sum.to_le_bytes());
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Accepts exactly one encoding filling all of `bytes`. Rejects anything `encode` could
    /// not have produced where accepting it would break an invariant (bin limits, trimmed
    /// stores, ordered finite bounds); never panics and allocates at most 2048 bins
    /// per store.
    pub fn decode(bytes: &[u8]) -> Result<Sketch, SketchError> {
        let mut sketch = Sketch::default();
        sketch.merge_encoded(bytes)?;
        Ok(sketch)
    }

    /// Merges the sketch encoded in `bytes` into this one: the same as
    /// `self.merge(&Sketch::decode(bytes)?)`, but the stored bins go
    /// straight into this sketch's (through a pair buffer reused across
    /// calls) instead of into a dense scratch sketch first, so merging many
    /// stored sketches (a cold query, a stored bin merge) neither allocates
    /// nor zero-fills per sketch. On error `self` is unchanged.
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<(), SketchError> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Decoded> = std::cell::RefCell::new(Decoded::default());
        }
        SCRATCH.with(|scratch| {
            let mut decoded = scratch.borrow_mut();
            decoded.read(bytes)?;
            if decoded.count == 0 {
                return Ok(());
            }
            self.negative.merge_pairs(&decoded.negative);
            self.positive.merge_pairs(&decoded.positive);
            let d = &*decoded;
            self.merge_totals(d.zero_count, d.count, d.sum, d.min, d.max);
            Ok(())
        })
    }
}

/// Sketches encoded one after another into one buffer (one allocation for
/// the many sketches a stored row holds), each readable as its own part.
pub struct Encodings {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Encodings {
    pub fn of<'s>(sketches: impl IntoIterator<Item = &'s Sketch>) -> Encodings {
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        for sketch in sketches {
            sketch.encode(&mut bytes);
            ends.push(bytes.len());
        }
        Encodings { bytes, ends }
    }

    /// Each sketch's encoding (`Sketch::encode`), in order.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        self.ends.iter().map(move |&to| {
            let part = &self.bytes[from..to];
            from = to;
            part
        })
    }
}

/// A stored sketch read but not yet laid out: each store's occupied bins as
/// (key, count) pairs, keys ascending.
#[derive(Debug, Default)]
struct Decoded {
    zero_count: u64,
    negative: Vec<(i32, u64)>,
    positive: Vec<(i32, u64)>,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Decoded {
    /// Reads and checks `bytes` whole, reusing this buffer's memory.
    fn read(&mut self, bytes: &[u8]) -> Result<(), SketchError> {
        let mut input = Reader { rest: bytes };
        let version = input.byte()?;
        if version != FORMAT_VERSION {
            return Err(SketchError::UnsupportedVersion(version));
        }
        self.zero_count = input.varint()?;
        let negative = read_pairs(&mut input, &mut self.negative)?;
        let positive = read_pairs(&mut input, &mut self.positive)?;
        let count = [self.zero_count, negative, positive].into_iter().fold(0, u64::saturating_add);
        let (min, max, sum) = match count {
            0 => (None, None, 0.0),
            1 => {
                let value = input.f64()?;
                (Some(value), Some(value), value)
            }
            _ => (Some(input.f64()?), Some(input.f64()?), input.f64()?),
        };
        if let (Some(min), Some(max)) = (min, max)
            && !(min.is_finite() && max.is_finite() && min <= max)
        {
            return Err(SketchError::InvalidBounds);
        }
        if !input.rest.is_empty() {
            return Err(SketchError::TrailingBytes(input.rest.len()));
        }
        (self.count, self.sum, self.min, self.max) = (count, sum, min, max);
        Ok(())
    }
}

/// Reads one store's occupied bins into `pairs`; returns their total count.
fn read_pairs(input: &mut Reader<'_>, pairs: &mut Vec<(i32, u64)>) -> Result<u64, SketchError> {
    let occupied = input.varint()?;
    if occupied > MAX_BINS as u64 {
        return Err(SketchError::TooManyBins(occupied));
    }
    pairs.clear();
    let mut key = 0i64;
    let mut first = 0i64;
    let mut total = 0u64;
    for i in 0..occupied {
        key = if i == 0 {
            varint::unzigzag(input.varint()?)
        } else {
            let gap = input.varint()?;
            if gap >= MAX_BINS as u64 {
                return Err(SketchError::SpanTooWide);
            }
            key + gap as i64 + 1
        };
        if !(-MAX_ABS_KEY..=MAX_ABS_KEY).contains(&key) {
            return Err(SketchError::KeyOutOfRange(key));
        }
        if i == 0 {
            first = key;
        }
        if key - first >= MAX_BINS as i64 {
            return Err(SketchError::SpanTooWide);
        }
        let n = input.varint()?;
        if n == 0 {
            return Err(SketchError::EmptyBin);
        }
        total = total.saturating_add(n);
        pairs.push((key as i32, n));
    }
    Ok(total)
}

/// Why stored sketch bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    #[error("sketch bytes end early")]
    Truncated,
    #[error("unsupported sketch format version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed varint in sketch")]
    MalformedVarint,
    #[error("sketch store claims {0} bins, more than the per-store limit")]
    TooManyBins(u64),
    #[error("sketch store bins span more keys than the per-store limit")]
    SpanTooWide,
    #[error("sketch bin key {0} is outside the representable range")]
    KeyOutOfRange(i64),
    #[error("sketch contains an empty bin")]
    EmptyBin,
    #[error("sketch min/max are not finite or out of order")]
    InvalidBounds,
    #[error("{0} unexpected bytes after the sketch")]
    TrailingBytes(usize),
}

/// Bin counts of one sign, keys ascending with the value they stand for.
///
/// Invariants: when non-empty, the first and last bins are non-zero (so the derived `==`
/// compares contents, not history), and the bins span at most `MAX_BINS` keys. When empty,
/// `offset` is 0.
#[derive(Debug, Clone, PartialEq, Default)]
struct Store {
    /// Key of `bins[0]`.
    offset: i32,
    bins: Vec<u64>,
}

impl Store {
    fn last_key(&self) -> i32 {
        self.offset + self.bins.len() as i32 - 1
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.bins.iter().copied().fold(0, u64::saturating_add)
    }

    #[inline]
    fn add(&mut self, key: i32, n: u64) {
        let slot = usize::try_from(key - self.offset).ok().and_then(|i| self.bins.get_mut(i));
        match slot {
            Some(count) => *count = count.saturating_add(n),
            None => self.add_outside(key, n),
        }
    }

    /// Takes one count from the bin of `key` (the lowest bin for a key
    /// collapsed into it); false when that bin is empty.
    fn remove(&mut self, key: i32) -> bool {
        let slot = usize::try_from(key.max(self.offset) - self.offset).ok();
        match slot.and_then(|i| self.bins.get_mut(i)) {
            Some(count) if *count > 0 => {
                *count -= 1;
                true
            }
            _ => false,
        }
    }

    /// The rare case of a key beyond the current bins: widen, collapsing if the span would
    /// exceed the limit.
    #[cold]
    fn add_outside(&mut self, key: i32, n: u64) {
        if self.bins.is_empty() {
            self.offset = key;
            self.bins.push(n);
            return;
        }
        let hi = self.last_key().max(key);
        let lo = self.offset.min(key).max(hi - MAX_SPAN + 1);
        self.reshape(lo, hi);
        let count = &mut self.bins[(key.max(lo) - lo) as usize];
        *count = count.saturating_add(n);
    }

    fn merge(&mut self, other: &Store) {
        if other.bins.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.clone_from(other);
            return;
        }
        let hi = self.last_key().max(other.last_key());
        let lo = self.offset.min(other.offset).max(hi - MAX_SPAN + 1);
        self.reshape(lo, hi);
        for (key, &n) in (other.offset..).zip(&other.bins) {
            let count = &mut self.bins[(key.max(lo) - lo) as usize];
            *count = count.saturating_add(n);
        }
    }

    /// Makes the bins cover exactly `lo..=hi`, folding counts below `lo` into `lo`.
    ///
    /// Callers pass `hi >= last_key()` and `lo = max(lowest key, hi − MAX_SPAN + 1)`: the
    /// floor depends only on the highest key ever seen, which is what makes collapsing
    /// independent of insertion and merge order.
    fn reshape(&mut self, lo: i32, hi: i32) {
        debug_assert!(!self.bins.is_empty() && hi >= self.last_key() && hi - lo < MAX_SPAN);
        if lo < self.offset {
            let pad = (self.offset - lo) as usize;
            self.bins.splice(0..0, iter::repeat_n(0, pad));
        } else if lo > self.offset {
            let cut = ((lo - self.offset) as usize).min(self.bins.len());
            let folded = self.bins.drain(..cut).fold(0, u64::saturating_add);
            if self.bins.is_empty() {
                self.bins.push(0);
            }
            self.bins[0] = self.bins[0].saturating_add(folded);
        }
        self.offset = lo;
        self.bins.resize((hi - lo + 1) as usize, 0);
    }

    /// Finds the key of the bin holding the `remaining`-th value of this store (0-based), or
    /// subtracts the store's total and returns `None`.
    fn locate(&self, remaining: &mut u64) -> Option<i32> {
        for (key, &n) in (self.offset..).zip(&self.bins) {
            if *remaining < n {
                return Some(key);
            }
            *remaining -= n;
        }
        None
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let occupied = self.bins.iter().filter(|&&n| n != 0).count();
        varint::put(out, occupied as u64);
        let mut previous = None;
        for (key, &n) in (self.offset..).zip(&self.bins).filter(|&(_, &n)| n != 0) {
            match previous {
                None => varint::put(out, varint::zigzag(i64::from(key))),
                Some(previous) => varint::put(out, (key - previous - 1) as u64),
            }
            varint::put(out, n);
            previous = Some(key);
        }
    }

    /// Lays out `pairs` (occupied bins, keys ascending, spanning at most
    /// `MAX_BINS` keys) as this store's bins, reusing its memory.
    fn set_pairs(&mut self, pairs: &[(i32, u64)]) {
        self.bins.clear();
        self.offset = 0;
        let (Some(&(lo, _)), Some(&(hi, _))) = (pairs.first(), pairs.last()) else { return };
        self.offset = lo;
        self.bins.resize((hi - lo + 1) as usize, 0);
        for &(key, n) in pairs {
            self.bins[(key - lo) as usize] = n;
        }
    }

    /// Adds `pairs` (as `set_pairs` takes them): the same as merging the
    /// store they lay out, without laying it out.
    fn merge_pairs(&mut self, pairs: &[(i32, u64)]) {
        let (Some(&(first, _)), Some(&(last, _))) = (pairs.first(), pairs.last()) else {
            return;
        };
        if self.bins.is_empty() {
            self.set_pairs(pairs);
            return;
        }
        let hi = self.last_key().max(last);
        let lo = self.offset.min(first).max(hi - MAX_SPAN + 1);
        if lo != self.offset || hi != self.last_key() {
            self.reshape(lo, hi);
        }
        for &(key, n) in pairs {
            let count = &mut self.bins[(key.max(lo) - lo) as usize];
            *count = count.saturating_add(n);
        }
    }
}

/// `None` stands for "no values yet", so it loses against any value.
fn combine(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(pick(a, b)),
        (a, b) => a.or(b),
    }
}

#[inline]
fn bin_index(magnitude: f64) -> i32 {
    (magnitude.ln() * BINS_PER_LN).ceil() as i32
}

/// The value equally far, relatively, from both edges of bin `index`.
fn representative(index: i32) -> f64 {
    2.0 * (f64::from(index) / BINS_PER_LN).exp() / (1.0 + (1.0 / BINS_PER_LN).exp())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, SketchError> {
        let (&byte, rest) = self.rest.split_first().ok_or(SketchError::Truncated)?;
        self.rest = rest;
        Ok(byte)
    }

    fn f64(&mut self) -> Result<f64, SketchError> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>().ok_or(SketchError::Truncated)?;
        self.rest = rest;
        Ok(f64::from_le_bytes(*bytes))
    }

    /// LEB128, at most 10 bytes, rejecting bits beyond 64; Truncated when
    /// the input ends inside it.
    fn varint(&mut self) -> Result<u64, SketchError> {
        let before = self.rest;
        varint::take(&mut self.rest).ok_or_else(|| {
            let unfinished = before.len() < 10 && before.iter().all(|b| b & 0x80 != 0);
            if unfinished { SketchError::Truncated } else { SketchError::MalformedVarint }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    use std::f64::consts::TAU;

    /// SplitMix64: deterministic data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in `[0, 1)`.
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box–Muller).
        fn normal(&mut self) -> f64 {
            let u = 1.0 - self.unit();
            (-2.0 * u.ln()).sqrt() * (TAU * self.unit()).cos()
        }

        fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
            (lo.ln() + self.unit() * (hi / lo).ln()).exp()
        }

        fn sign(&mut self) -> f64 {
            if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
        }
    }

    fn sketch_of(values: &[f64]) -> Sketch {
        let mut sketch = Sketch::new();
        for &value in values {
            sketch.add(value);
        }
        sketch
    }

    fn sorted(values: &[f64]) -> Vec<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    fn within_bound(estimate: f64, exact: f64) -> bool {
        (estimate - exact).abs() <= RELATIVE_ACCURACY * exact.abs()
    }

    /// Checks the documented guarantee at every percent (rank `⌊p·(n−1)/100⌋`, computed
    /// exactly) and the exact extremes.
    fn assert_accurate(values: &[f64]) {
        let sketch = sketch_of(values);
        let sorted = sorted(values);
        let n = sorted.len();
        for percent in 0..=100 {
            let exact = sorted[percent * (n - 1) / 100];
            let estimate = sketch.quantile(percent as f64 / 100.0).unwrap();
            assert!(
                within_bound(estimate, exact),
                "p{percent} of {n}: estimate {estimate}, exact {exact}"
            );
        }
        assert_eq!(sketch.quantile(0.0), Some(sorted[0]));
        assert_eq!(sketch.quantile(1.0), Some(sorted[n - 1]));
    }

    fn assert_invariants(sketch: &Sketch) {
        for store in [&sketch.negative, &sketch.positive] {
            match (store.bins.first(), store.bins.last()) {
                (Some(&first), Some(&last)) => assert!(first != 0 && last != 0),
                _ => assert_eq!(store.offset, 0),
            }
            assert!(store.bins.len() <= MAX_BINS);
        }
        let total = [sketch.zero_count, sketch.negative.total(), sketch.positive.total()];
        assert_eq!(sketch.count, total.into_iter().fold(0, u64::saturating_add));
        assert_eq!(sketch.min.is_some(), sketch.count > 0);
        assert_eq!(sketch.max.is_some(), sketch.count > 0);
    }

    #[test]
    fn a_value_taken_back_leaves_the_sketch_of_the_others() {
        let mut rng = Rng(7);
        let values: Vec<f64> =
            (0..2_000).map(|_| rng.sign() * rng.log_uniform(1e-3, 1e6)).collect();
        let (mut all, mut kept) = (Sketch::new(), Sketch::new());
        values.iter().for_each(|&v| all.add(v));
        all.add(0.0);
        for (i, &v) in values.iter().enumerate() {
            if i % 3 == 0 {
                assert!(all.remove(v), "{v}");
            } else {
                kept.add(v);
            }
        }
        assert!(all.remove(-0.0));
        let bins = |store: &Store| -> Vec<(i32, u64)> {
            (store.offset..).zip(store.bins.iter().copied()).filter(|b| b.1 > 0).collect()
        };
        assert_eq!(all.count(), kept.count());
        assert_eq!(bins(&all.positive), bins(&kept.positive));
        assert_eq!(bins(&all.negative), bins(&kept.negative));
        assert_eq!(all.zero_count, 0);
        assert!((all.sum() - kept.sum()).abs() < 1e-6 * kept.sum().abs().max(1.0));
        for q in [0.1, 0.5, 0.9, 0.99] {
            assert_eq!(all.quantile(q), kept.quantile(q), "q {q}");
        }
        // What was never added is not taken back; the last value empties it.
        assert!(!all.remove(1e300));
        assert!(!all.remove(f64::NAN));
        let mut one = Sketch::new();
        one.add(5.0);
        assert!(one.remove(5.0) && one.is_empty() && one.min().is_none());
        assert!(!one.remove(5.0));
        // One value left is what min, max and the encoding say.
        let mut two = Sketch::new();
        two.add(1.0);
        two.add(59.0);
        assert!(two.remove(1.0));
        assert_eq!((two.min(), two.max(), two.sum()), (Some(59.0), Some(59.0), 59.0));
        assert_eq!(Sketch::decode(&two.to_bytes()).unwrap().sum(), 59.0);
    }

    #[test]
    fn mapping_constants_meet_the_stated_bounds() {
        assert!((0.5 / BINS_PER_LN).tanh() < RELATIVE_ACCURACY);
        assert!(bin_index(1e9) - bin_index(1e-6) < MAX_SPAN);
        assert!(i64::from(bin_index(f64::MAX)) < MAX_ABS_KEY);
        assert!(i64::from(bin_index(ZERO_THRESHOLD)).abs() < MAX_ABS_KEY);
    }

    #[test]
    fn accurate_on_uniform() {
        let mut rng = Rng(1);
        let values: Vec<f64> = (0..10_000).map(|_| 1000.0 * rng.unit()).collect();
        assert_accurate(&values);
    }

    #[test]
    fn accurate_on_lognormal() {
        let mut rng = Rng(2);
        let values: Vec<f64> = (0..10_000).map(|_| (3.0 + 1.5 * rng.normal()).exp()).collect();
        assert_accurate(&values);
    }

    #[test]
    fn accurate_across_nine_decades() {
        let mut rng = Rng(3);
        let values: Vec<f64> = (0..10_000).map(|_| rng.log_uniform(1e-3, 1e6)).collect();
        assert_accurate(&values);
    }

    #[test]
    fn accurate_with_negatives() {
        let mut rng = Rng(4);
        let values: Vec<f64> =
            (0..10_000).map(|_| rng.sign() * rng.log_uniform(1e-3, 1e6)).collect();
        assert_accurate(&values);
        let mostly_negative: Vec<f64> = (0..1000).map(|i| -f64::from(i) - 0.5).collect();
        assert_accurate(&mostly_negative);
    }

    #[test]
    fn accurate_with_zeros() {
        let mut rng = Rng(5);
        let values: Vec<f64> = (0..10_000)
            .map(|_| match rng.next_u64() % 10 {
                0..=2 => 0.0,
                3 => -(1.0 + 2.0 * rng.normal()).exp(),
                _ => (1.0 + 2.0 * rng.normal()).exp(),
            })
            .collect();
        assert_accurate(&values);
        assert_accurate(&[0.0; 17]);
        assert_accurate(&[-0.0, 0.0, 5.0]);
    }

    #[test]
    fn accurate_at_bin_edges_for_every_rank() {
        let values: Vec<f64> = (-700..1000)
            .map(|k| (f64::from(k) / BINS_PER_LN).exp())
            .flat_map(|edge| [edge, -edge, edge.next_up(), edge.next_down()])
            .collect();
        let sketch = sketch_of(&values);
        let sorted = sorted(&values);
        let last = sorted.len() - 1;
        for (rank, &exact) in sorted.iter().enumerate() {
            let estimate = sketch.quantile(rank as f64 / last as f64).unwrap();
            assert!(within_bound(estimate, exact), "rank {rank}: {estimate} vs {exact}");
        }
    }

    #[test]
    fn accurate_for_tiny_samples() {
        assert_accurate(&[42.0]);
        assert_accurate(&[3.0, -7.5]);
        assert_accurate(&[1e-6, 2.0, 1e9]);
    }

    #[test]
    fn decimal_quantiles_select_the_intended_rank() {
        // 0.29 · 100 is 28.999999999999996 in f64; the documented rank is 29.
        let values: Vec<f64> = (0..=100).map(|i| f64::from(i * 1000)).collect();
        let sketch = sketch_of(&values);
        let estimate = sketch.quantile(0.29).unwrap();
        assert!(within_bound(estimate, 29_000.0), "{estimate}");
    }

    #[test]
    fn near_zero_values_have_absolute_error_below_threshold() {
        let values = [5e-10, -3e-10, 9.9e-10, 0.0];
        let sketch = sketch_of(&values);
        for percent in 0..=100 {
            let estimate = sketch.quantile(f64::from(percent) / 100.0).unwrap();
            let exact = sorted(&values)[percent as usize * 3 / 100];
            assert!((estimate - exact).abs() < ZERO_THRESHOLD);
        }
    }

    #[test]
    fn range_from_1e_minus6_to_1e9_fits_without_collapsing() {
        let values: Vec<f64> =
            (0..=3000).map(|i| 1e-6 * 1e15_f64.powf(f64::from(i) / 3000.0)).collect();
        assert_accurate(&values);
        let negated: Vec<f64> = values.iter().map(|v| -v).collect();
        assert_accurate(&negated);
        assert!(sketch_of(&values).positive.bins.len() < MAX_BINS);
    }

    #[test]
    fn collapse_bounds_memory_and_sacrifices_only_the_lowest_values() {
        let values: Vec<f64> =
            (0..=5000).map(|i| 1e-8 * 1e20_f64.powf(f64::from(i) / 5000.0)).collect();
        let sorted_values = sorted(&values);
        let sketch = sketch_of(&values);
        assert_eq!(sketch.positive.bins.len(), MAX_BINS);
        assert_invariants(&sketch);
        assert_eq!(sketch.count(), 5001);
        assert_eq!(sketch.min(), Some(1e-8));
        assert_eq!(sketch.quantile(0.0), Some(1e-8));
        for percent in 20..=100 {
            let exact = sorted_values[percent * 5000 / 100];
            let estimate = sketch.quantile(percent as f64 / 100.0).unwrap();
            assert!(within_bound(estimate, exact), "p{percent}: {estimate} vs {exact}");
        }
        // Mirrored: the most negative values are the lowest and the ones collapsed.
        let negated: Vec<f64> = values.iter().map(|v| -v).collect();
        let sorted_negated = sorted(&negated);
        let sketch = sketch_of(&negated);
        assert_eq!(sketch.negative.bins.len(), MAX_BINS);
        assert_eq!(sketch.quantile(0.0), Some(-1e12));
        for percent in 20..=100 {
            let exact = sorted_negated[percent * 5000 / 100];
            let estimate = sketch.quantile(percent as f64 / 100.0).unwrap();
            assert!(within_bound(estimate, exact), "p{percent}: {estimate} vs {exact}");
        }
    }

    #[test]
    fn count_sum_min_max_are_exact() {
        let values = [3.5, -2.25, 0.0, 1e-12, 1e12, 7.0, -0.0];
        let sketch = sketch_of(&values);
        assert_eq!(sketch.count(), 7);
        assert!(!sketch.is_empty());
        assert_eq!(sketch.sum(), values.iter().sum::<f64>());
        assert_eq!(sketch.min(), Some(-2.25));
        assert_eq!(sketch.max(), Some(1e12));
        assert_eq!(sketch.zero_count, 3);
        assert_invariants(&sketch);
    }

    #[test]
    fn empty_sketch() {
        let sketch = Sketch::new();
        assert!(sketch.is_empty());
        assert_eq!(sketch.count(), 0);
        assert_eq!(sketch.sum(), 0.0);
        assert_eq!((sketch.min(), sketch.max()), (None, None));
        assert_eq!(sketch.quantile(0.5), None);
        assert_eq!(sketch.to_bytes(), [FORMAT_VERSION, 0, 0, 0]);
        assert_eq!(Sketch::decode(&sketch.to_bytes()), Ok(sketch));
    }

    #[test]
    fn non_finite_values_and_zero_repeats_are_ignored() {
        let mut sketch = Sketch::new();
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            sketch.add(value);
        }
        sketch.add_n(5.0, 0);
        assert_eq!(sketch, Sketch::new());
        sketch.add(1.0);
        assert_eq!(sketch.quantile(f64::NAN), None);
        assert_eq!(sketch.quantile(-3.0), Some(1.0));
        assert_eq!(sketch.quantile(7.0), Some(1.0));
    }

    #[test]
    fn add_n_matches_repeated_add() {
        let mut bulk = Sketch::new();
        let mut single = Sketch::new();
        for (value, n) in [(12.5, 3), (-4.0, 2), (0.0, 4), (1e6, 1)] {
            bulk.add_n(value, n);
            for _ in 0..n {
                single.add(value);
            }
        }
        assert_eq!(bulk, single);
    }

    #[test]
    fn steady_state_adds_do_not_reallocate() {
        let mut rng = Rng(6);
        let mut sketch = Sketch::new();
        sketch.add(1.0);
        sketch.add(1000.0);
        let (pointer, capacity) = (sketch.positive.bins.as_ptr(), sketch.positive.bins.capacity());
        for _ in 0..10_000 {
            sketch.add(rng.log_uniform(1.0, 1000.0));
        }
        assert_eq!(sketch.positive.bins.as_ptr(), pointer);
        assert_eq!(sketch.positive.bins.capacity(), capacity);
    }

    #[test]
    fn small_sketches_encode_small() {
        assert_eq!(sketch_of(&[123.4]).to_bytes().len(), 15);
        let mut out = vec![0xaa];
        sketch_of(&[1.0, 2.0]).encode(&mut out);
        assert_eq!(out[0], 0xaa);
        assert_eq!(Sketch::decode(&out[1..]), Ok(sketch_of(&[1.0, 2.0])));
    }

    #[test]
    fn decode_rejects_malformed_input() {
        use SketchError::*;
        let valid = sketch_of(&[1.0, -2.0, 0.0]).to_bytes();
        let with = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = valid.clone();
            edit(&mut bytes);
            Sketch::decode(&bytes)
        };
        assert_eq!(Sketch::decode(&[]), Err(Truncated));
        assert_eq!(Sketch::decode(&[2, 0, 0, 0]), Err(UnsupportedVersion(2)));
        assert_eq!(with(&|b| b.truncate(b.len() - 1)), Err(Truncated));
        assert_eq!(with(&|b| b.push(0)), Err(TrailingBytes(1)));
        assert_eq!(Sketch::decode(&[1, 0, 0x80, 0x80, 0x01]), Err(TooManyBins(1 << 14)));
        assert_eq!(
            Sketch::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(MalformedVarint)
        );
        assert_eq!(Sketch::decode(&[1, 0, 1, 0, 0, 0]), Err(EmptyBin));
        assert_eq!(Sketch::decode(&[1, 0, 2, 0, 1, 0x90, 0x10, 1, 0]), Err(SpanTooWide));
        assert_eq!(Sketch::decode(&[1, 0, 2, 0, 1, 0xff, 0x0f, 1, 0]), Err(SpanTooWide));
        assert_eq!(Sketch::decode(&[1, 0, 1, 0x80, 0x80, 0x10, 1, 0]), Err(KeyOutOfRange(1 << 17)));
        assert_eq!(
            Sketch::decode(&[1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(KeyOutOfRange(i64::MIN))
        );
        let at_min = valid.len() - 24;
        let nan = f64::NAN.to_le_bytes();
        assert_eq!(with(&|b| b[at_min..at_min + 8].copy_from_slice(&nan)), Err(InvalidBounds));
        let huge = 1e300_f64.to_le_bytes();
        assert_eq!(with(&|b| b[at_min..at_min + 8].copy_from_slice(&huge)), Err(InvalidBounds));
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e6..1e6_f64,
            // e^-20..e^28 needs ~2400 bins: wide enough to force collapses.
            (-20.0..28.0_f64).prop_map(f64::exp),
            (-20.0..28.0_f64).prop_map(|e| -e.exp()),
            Just(0.0),
            -1e-9..1e-9_f64,
            (1..10u32).prop_map(f64::from),
        ]
    }

    /// Count, bins, min and max exactly; sum within the rounding of an f64 running sum.
    fn assert_equivalent(a: &Sketch, b: &Sketch) -> Result<(), TestCaseError> {
        let without_sum = |s: &Sketch| Sketch { sum: 0.0, ..s.clone() };
        prop_assert_eq!(without_sum(a), without_sum(b));
        let largest = a.min.unwrap_or(0.0).abs().max(a.max.unwrap_or(0.0).abs());
        let tolerance = 1e-12 * largest * a.count as f64;
        prop_assert!((a.sum - b.sum).abs() <= tolerance, "{} vs {}", a.sum, b.sum);
        Ok(())
    }

    fn merge_in_order<'a>(sketches: impl IntoIterator<Item = &'a Sketch>) -> Sketch {
        let mut merged = Sketch::new();
        for sketch in sketches {
            merged.merge(sketch);
        }
        merged
    }

    fn merge_tree(sketches: &[&Sketch], splits: &mut impl Iterator<Item = usize>) -> Sketch {
        match sketches {
            [] => Sketch::new(),
            [one] => (*one).clone(),
            _ => {
                let mid = 1 + splits.next().unwrap_or(0) % (sketches.len() - 1);
                let mut left = merge_tree(&sketches[..mid], splits);
                left.merge(&merge_tree(&sketches[mid..], splits));
                left
            }
        }
    }

    /// Exercises a decoded sketch so any broken invariant surfaces as a panic.
    fn exercise(bytes: &[u8]) {
        let Ok(mut sketch) = Sketch::decode(bytes) else {
            return;
        };
        assert_invariants(&sketch);
        for percent in 0..=100 {
            sketch.quantile(f64::from(percent) / 100.0);
        }
        let encoded = sketch.to_bytes();
        assert_eq!(Sketch::decode(&encoded).map(|s| s.to_bytes()), Ok(encoded));
        let copy = sketch.clone();
        sketch.merge(&copy);
        sketch.add(-1.0);
        sketch.add(1e300);
        assert_invariants(&sketch);
        sketch.quantile(0.5);
    }

    proptest! {
        #[test]
        fn merge_is_independent_of_order_and_tree_shape(
            (parts, order) in vec(vec(value(), 0..40), 1..7).prop_flat_map(|parts| {
                let order = Just((0..parts.len()).collect::<Vec<_>>()).prop_shuffle();
                (Just(parts), order)
            }),
            splits in vec(any::<usize>(), 1..16),
        ) {
            let sketches: Vec<Sketch> = parts.iter().map(|part| sketch_of(part)).collect();
            let shuffled: Vec<&Sketch> = order.iter().map(|&i| &sketches[i]).collect();
            let reference = merge_in_order(&sketches);
            assert_invariants(&reference);
            assert_equivalent(&reference, &merge_in_order(shuffled.iter().copied()))?;
            let tree = merge_tree(&shuffled, &mut splits.iter().copied().cycle());
            assert_equivalent(&reference, &tree)?;
            assert_equivalent(&reference, &sketch_of(&parts.concat()))?;
        }

        #[test]
        fn merged_parts_match_the_sketch_of_all_data(
            values in vec(value(), 0..300),
            cuts in vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(values.len() + 1)).collect();
            cuts.sort_unstable();
            let mut merged = Sketch::new();
            let mut start = 0;
            for end in cuts.into_iter().chain([values.len()]) {
                merged.merge(&sketch_of(&values[start..end]));
                start = end;
            }
            assert_equivalent(&sketch_of(&values), &merged)?;
        }

        #[test]
        fn encoding_roundtrips_exactly(values in vec(value(), 0..300)) {
            let sketch = sketch_of(&values);
            let bytes = sketch.to_bytes();
            prop_assert_eq!(Sketch::decode(&bytes), Ok(sketch));
            for len in 0..bytes.len() {
                prop_assert_eq!(Sketch::decode(&bytes[..len]), Err(SketchError::Truncated));
            }
        }

        #[test]
        fn merge_encoded_equals_merge_of_decoded(
            base in vec(value(), 0..40),
            others in vec(vec(value(), 0..40), 1..5),
        ) {
            let mut direct = sketch_of(&base);
            let mut via_bytes = direct.clone();
            for values in &others {
                let other = sketch_of(values);
                direct.merge(&Sketch::decode(&other.to_bytes()).unwrap());
                via_bytes.merge_encoded(&other.to_bytes()).unwrap();
            }
            prop_assert_eq!(&direct, &via_bytes);
            let before = via_bytes.clone();
            prop_assert!(via_bytes.merge_encoded(&[FORMAT_VERSION, 0, 1]).is_err());
            prop_assert_eq!(&before, &via_bytes, "a failed merge changes nothing");
        }

        #[test]
        fn decode_of_arbitrary_bytes_never_panics(
            bytes in vec(any::<u8>(), 0..96),
            version_first in any::<bool>(),
        ) {
            let mut bytes = bytes;
            if version_first {
                bytes.insert(0, FORMAT_VERSION);
            }
            exercise(&bytes);
        }

        #[test]
        fn decode_of_corrupted_encodings_never_panics(
            values in vec(value(), 0..60),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = sketch_of(&values).to_bytes();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            exercise(&bytes);
        }
    }
}
