//! Rows a snapshot sync finds unchanged before the diff.
//!
//! Every stored row keeps a hash of its values (`_row_hash`), made here
//! from the validated row as it was handed off. While a file is read, the
//! hash of each valid row is looked up among the hashes of the rows the
//! integration holds: a row whose hash is found is the stored row of its
//! key, unchanged, and goes no further. Only the other rows (new or
//! changed) are handed off, and only the stored rows no row of the file
//! matched (changed or gone) are compared, by key, in DuckDB.
//!
//! A hash is trusted to say "unchanged" only: rows whose hashes differ are
//! compared value by value, so a stored hash made another way (by an
//! earlier version, or before a column was added) costs a comparison and
//! a `rehash`, never a wrong update. Two different rows with the same
//! 64-bit hash would be missed as unchanged: one chance in 2^64 for each
//! changed row.

use duckdb::arrow::array::AsArray;
use duckdb::arrow::datatypes::UInt64Type;
use polars::prelude::{DataFrame, DataType, Series};
use polars_arrow::array::Array;
use xxhash_rust::xxh3::xxh3_64;

use super::{Store, StoreError, ident};
use crate::schema::raw_rows::{RawIndex, RawPairs};
use crate::schema::{ByRegion, PREFETCH_AHEAD, filled_in, prefetch};

/// The column a row's hash goes in, in the hand-off and the stored table.
pub const ROW_HASH: &str = "_row_hash";

/// The column the hash of the record a row was read from goes in
/// (`crate::schema::raw_rows`), in the hand-off and the stored table.
pub const RAW_HASH: &str = "_raw_hash";

/// The hash of each row of `frame`: of its columns' values, in order.
///
/// Made of each value's own word (its text's xxh3, its number's bits), so
/// it stays the same across versions of this program and its libraries as
/// long as the values and the order of the columns do. Each fold is
/// one-to-one in the hash so far and in the value's word: two rows that
/// differ in one number always hash apart, and in one text unless the two
/// texts' xxh3 collide.
pub fn row_hashes(frame: &DataFrame) -> Vec<u64> {
    let mut hashes = vec![SEED; frame.height()];
    for (n, column) in frame.columns().iter().enumerate() {
        fold_column(&mut hashes, column.as_materialized_series(), n as u64);
    }
    hashes
}

const SEED: u64 = 0x243f_6a88_85a3_08d3;
/// Odd, so multiplying by it is one-to-one.
const STEP: u64 = 0x9e37_79b9_7f4a_7c15;
/// What an empty value (null) folds in.
const EMPTY_VALUE: u64 = 0x1319_8a2e_0370_7344;

/// A one-to-one mix of 64 bits (MurmurHash3's finalizer).
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Folds the values of column `n` into `hashes`, one a row.
fn fold_column(hashes: &mut [u64], series: &Series, n: u64) {
    let salt = mix(n.wrapping_add(1).wrapping_mul(STEP));
    let fold = |hash: &mut u64, word: u64| *hash = mix(hash.wrapping_mul(STEP) ^ mix(word ^ salt));
    let empty = |hash: &mut u64| *hash = mix(hash.wrapping_mul(STEP) ^ EMPTY_VALUE);
    // Each of a column's arrays, its values by their place in the frame,
    // without looking at validity where an array has no empty value.
    macro_rules! fold_arrays {
        ($arrays:expr, $word:expr) => {{
            let mut at = 0;
            for array in $arrays {
                let rows = &mut hashes[at..at + array.len()];
                at += array.len();
                if array.null_count() == 0 {
                    for (hash, value) in rows.iter_mut().zip(array.values_iter()) {
                        fold(hash, $word(value));
                    }
                } else {
                    for (hash, value) in rows.iter_mut().zip(array.iter()) {
                        match value {
                            Some(value) => fold(hash, $word(value)),
                            None => empty(hash),
                        }
                    }
                }
            }
        }};
    }
    let physical = series.to_physical_repr();
    let text = |value: &str| xxh3_64(value.as_bytes());
    match physical.dtype() {
        DataType::String => fold_arrays!(physical.str().expect("text").downcast_iter(), text),
        DataType::Boolean => {
            fold_arrays!(physical.bool().expect("flags").downcast_iter(), u64::from)
        }
        DataType::Int32 => fold_arrays!(
            physical.i32().expect("integers").downcast_iter(),
            |v: &i32| i64::from(*v) as u64
        ),
        DataType::Int64 => fold_arrays!(
            physical.i64().expect("integers").downcast_iter(),
            |v: &i64| *v as u64
        ),
        DataType::Float64 => fold_arrays!(
            physical.f64().expect("numbers").downcast_iter(),
            |v: &f64| v.to_bits()
        ),
        DataType::Null => hashes.iter_mut().for_each(empty),
        // Anything else (narrower numbers, unsigned ones), by its text.
        _ => match physical.cast(&DataType::String) {
            Ok(cast) => fold_arrays!(cast.str().expect("text").downcast_iter(), text),
            // A column that cannot be read as text hashes as empty: its
            // rows are then compared value by value.
            Err(_) => hashes.iter_mut().for_each(empty),
        },
    }
}

/// The hashes of the rows an integration holds, each marked once a row of
/// the file matches it. Open addressing, a hash a slot (0 when empty), so
/// ten million hashes take 107 MB.
pub struct StoredHashes {
    slots: Vec<u64>,
    /// A bit a slot: matched by a row of the file.
    matched: Vec<u64>,
    /// Hashes more than one stored row has (none, unless hashes were made
    /// another way or altered): marking one would mark them all.
    shared: foldhash::HashSet<u64>,
}

/// The stored rows' hashes as read, before the table of them is built:
/// the index of their raw hashes is built first, so that the file's
/// records can be looked up while the table is built.
pub struct LoadedHashes {
    hashes: ByRegion<u64>,
    pub index: Option<RawIndex>,
}

impl LoadedHashes {
    /// The table of the hashes.
    pub fn table(self) -> StoredHashes {
        StoredHashes::from_regions(self.hashes)
    }
}

/// Stands in for a hash of 0, which marks an empty slot.
const ZERO_STANDIN: u64 = 0x2545_f491_4f6c_dd1d;

impl StoredHashes {
    /// The table of `hashes`, and those held by more than one row (none,
    /// unless hashes were made another way or altered).
    #[cfg(test)]
    fn with_hashes(hashes: &[u64]) -> StoredHashes {
        let mut gathered = ByRegion::default();
        for hash in hashes.iter().copied().map(stored_form) {
            gathered.push(hash, hash);
        }
        StoredHashes::from_regions(gathered)
    }

    /// The table of `hashes` (in their stored form), gathered by region.
    fn from_regions(hashes: ByRegion<u64>) -> StoredHashes {
        let capacity = (hashes.len() + hashes.len() / 3).max(16);
        let mut table = StoredHashes {
            slots: filled_in(capacity, 0),
            matched: vec![0; capacity.div_ceil(64)],
            shared: Default::default(),
        };
        let mut shared = foldhash::HashSet::default();
        for hash in hashes.into_values() {
            let index = table.probe(hash);
            if table.slots[index] == hash {
                shared.insert(hash);
            }
            table.slots[index] = hash;
        }
        table.shared = shared;
        table
    }

    /// The hashes of the rows `integration` holds in `table`; `None` when
    /// the table does not exist yet or holds none of them. With
    /// `raw_until`, also the index of the rows' raw hashes, when they have
    /// any, read until that flag is set (looked at between batches of
    /// rows): then `None`, as they are no longer wanted.
    pub fn load(
        store: &Store,
        table: &str,
        integration: &str,
        raw_until: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Option<LoadedHashes>, StoreError> {
        let stopped =
            || raw_until.is_some_and(|stop| stop.load(std::sync::atomic::Ordering::Relaxed));
        let Some(conn) = store.db().duck() else {
            return Ok(None);
        };
        let context = "reading the stored rows' hashes";
        let has_column = |column: &str| -> Result<bool, StoreError> {
            let found: i64 = store
                .db()
                .value(
                    "SELECT count(*) FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?",
                    &[&table, &column],
                )
                .map_err(store.query_error(context))?;
            Ok(found > 0)
        };
        // No such column: no such table yet, or one made before rows kept
        // a hash (or, for `_raw_hash`, the hash of their record).
        if !has_column(ROW_HASH)? {
            return Ok(None);
        }
        let raw = raw_until.is_some() && has_column(RAW_HASH)?;
        let started = std::time::Instant::now();
        // Room made first, so that no region is copied as it grows.
        let held: i64 = store
            .db()
            .value(
                &format!(
                    "SELECT count(*) FROM {} WHERE _integration = ? AND _row_hash IS NOT NULL",
                    ident(table)
                ),
                &[&integration],
            )
            .map_err(store.query_error(context))?;
        let held = usize::try_from(held).unwrap_or(0);
        // A raw index numbers its rows in 32 bits.
        let raw = raw && held < u32::MAX as usize;
        let mut hashes = ByRegion::default();
        hashes.reserve_total(held);
        let mut pairs = RawPairs::default();
        if raw {
            pairs.reserve_total(held);
        }
        let mut statement = conn
            .prepare(&format!(
                "SELECT _row_hash{} FROM {} WHERE _integration = ? AND _row_hash IS NOT NULL",
                if raw { ", _raw_hash" } else { "" },
                ident(table)
            ))
            .map_err(store.query_error(context))?;
        let batches = statement
            .query_arrow([integration])
            .map_err(store.query_error(context))?;
        for batch in batches {
            if stopped() {
                return Ok(None);
            }
            let column = batch.column(0).as_primitive::<UInt64Type>();
            let rows = column.values().iter().copied().take(column.len());
            if raw {
                let raws = batch.column(1).as_primitive::<UInt64Type>();
                for (raw, row) in raws.iter().zip(rows.clone()) {
                    if let Some(raw) = raw {
                        pairs.push(raw, row);
                    }
                }
            }
            for hash in rows.map(stored_form) {
                hashes.push(hash, hash);
            }
        }
        if hashes.len() == 0 {
            return Ok(None);
        }
        let read = started.elapsed();
        let raw_rows = pairs.len();
        let index = (!pairs.is_empty()).then(|| pairs.index());
        tracing::debug!(
            rows = hashes.len(),
            raw = raw_rows,
            read_ms = read.as_millis() as u64,
            ms = started.elapsed().as_millis() as u64,
            "stored rows' hashes loaded"
        );
        Ok(Some(LoadedHashes { hashes, index }))
    }

    /// Marks the stored rows of `hashes` matched: rows of the file found
    /// unchanged by their raw hash (`RawIndex::get` gives these). False
    /// when one of them is a hash several stored rows have: the record
    /// then stands for no one row, and the file must be read again with
    /// every record kept.
    pub fn mark(&mut self, hashes: &[u64]) -> bool {
        if !self.shared.is_empty()
            && hashes
                .iter()
                .any(|&hash| self.shared.contains(&stored_form(hash)))
        {
            return false;
        }
        for (row, &hash) in hashes.iter().enumerate() {
            self.prefetch_ahead(hashes, row);
            let hash = stored_form(hash);
            let index = self.probe(hash);
            if self.slots[index] == hash {
                self.matched[index / 64] |= 1 << (index % 64);
            }
        }
        true
    }

    /// Where `hash` starts looking: its bits scaled to the table's size.
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// While hash `n` of `hashes` is handled, asks for the first slot of
    /// the one `PREFETCH_AHEAD` on.
    #[inline]
    fn prefetch_ahead(&self, hashes: &[u64], n: usize) {
        if let Some(&ahead) = hashes.get(n + PREFETCH_AHEAD) {
            prefetch(&self.slots[self.home(stored_form(ahead))]);
        }
    }

    /// The slot holding `hash`, or the empty slot where it would go.
    fn probe(&self, hash: u64) -> usize {
        let mut index = self.home(hash);
        loop {
            let slot = self.slots[index];
            if slot == hash || slot == 0 {
                return index;
            }
            index += 1;
            if index == self.slots.len() {
                index = 0;
            }
        }
    }

    /// For each of `hashes` (a chunk's rows), whether a stored row has it;
    /// each stored row found is marked matched.
    pub fn match_rows(&mut self, hashes: &[u64]) -> Vec<bool> {
        let mut found = Vec::with_capacity(hashes.len());
        for (row, &hash) in hashes.iter().enumerate() {
            self.prefetch_ahead(hashes, row);
            let hash = stored_form(hash);
            let index = self.probe(hash);
            let held = self.slots[index] == hash;
            if held {
                self.matched[index / 64] |= 1 << (index % 64);
            }
            found.push(held);
        }
        found
    }

    /// The hashes no row of the file matched: stored rows changed or gone.
    pub fn unmatched(&self) -> Vec<u64> {
        self.slots
            .iter()
            .enumerate()
            .filter(|&(index, &slot)| {
                slot != 0 && self.matched[index / 64] & (1 << (index % 64)) == 0
            })
            .map(|(_, &slot)| if slot == ZERO_STANDIN { 0 } else { slot })
            .collect()
    }
}

fn stored_form(hash: u64) -> u64 {
    if hash == 0 { ZERO_STANDIN } else { hash }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    /// A row's hash depends on each of its values and their order, not on
    /// the frame it is in: one changed value, a value moved to another
    /// column, or an empty value for an empty text all hash apart.
    #[test]
    fn a_row_hash_changes_with_any_value() {
        let frame = df!(
            "id" => ["A1", "A2", "A3", "A4", "A5", "A1"],
            "name" => [Some("x"), Some("y"), Some(""), None, Some("A5"), Some("x")],
            "seats" => [Some(1i64), Some(1), Some(1), Some(1), None, Some(1)],
            "score" => [Some(0.5f64), Some(0.5), Some(0.5), Some(0.5), Some(0.5), Some(0.5)],
        )
        .unwrap();
        let hashes = row_hashes(&frame);
        assert_eq!(hashes[0], hashes[5], "the same values hash the same");
        let distinct: std::collections::HashSet<u64> = hashes[..5].iter().copied().collect();
        assert_eq!(distinct.len(), 5, "{hashes:?}");
        // The same row alone in a frame of its own.
        let alone = frame.slice(1, 1);
        assert_eq!(row_hashes(&alone), vec![hashes[1]]);
        // Swapped values of two text columns.
        let swapped =
            df!("id" => ["x"], "name" => ["A1"], "seats" => [1i64], "score" => [0.5f64]).unwrap();
        assert_ne!(row_hashes(&swapped)[0], hashes[0]);
        // Known values, so a change to the hash (which would make every
        // stored row be compared once) is seen.
        let one = df!("id" => ["A1"], "seats" => [7i64]).unwrap();
        assert_eq!(row_hashes(&one), vec![0x0c50_921c_45d5_d886]);
    }

    /// The table finds what it holds (through wrap-around and shared home
    /// slots), marks what it found and what it is told to, and gives back
    /// the rest.
    #[test]
    fn stored_hashes_find_and_mark() {
        let top = u64::MAX;
        let held: Vec<u64> = (0..2000u64)
            .map(|i| top - i)
            .chain((0..2000u64).map(|i| i.wrapping_mul(STEP)))
            .collect();
        let mut table = StoredHashes::with_hashes(&held);
        assert!(table.shared.is_empty());
        let asked: Vec<u64> = held
            .iter()
            .step_by(3)
            .copied()
            .chain([12_345, top - 5000])
            .collect();
        let found = table.match_rows(&asked);
        assert!(found[..found.len() - 2].iter().all(|&f| f));
        assert_eq!(&found[found.len() - 2..], &[false, false]);
        // Records left out mark their stored rows too.
        let left_out: Vec<u64> = held.iter().skip(1).step_by(3).copied().collect();
        assert!(table.mark(&left_out));
        let mut expected: Vec<u64> = held
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 3 == 2)
            .map(|(_, &h)| h)
            .collect();
        let mut unmatched = table.unmatched();
        expected.sort_unstable();
        unmatched.sort_unstable();
        assert_eq!(unmatched, expected);
    }
}
