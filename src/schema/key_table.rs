//! The keys of a file seen so far, by their 128-bit hash, for the rules
//! across rows (`validate::FileChecks`).
//!
//! A general hash map keeps its control bytes apart from its entries, so a
//! key new to a table of millions costs two cache misses, taken one key at
//! a time: at 10M rows that was most of validation's time. This table keeps
//! each hash in its slot (linear probing), with what it maps to: where the
//! key's first record is (32 bytes a slot, two a cache line), or nothing
//! for a set (16 bytes a slot). Its users say which hashes they will ask
//! about next, so the memory of the next slots is on its way while this one
//! is handled.

use super::validate::RecordAt;

/// One slot: a key's hash (0 when the slot is empty) and what it maps to.
#[derive(Clone, Copy)]
struct Slot<V> {
    hash: u128,
    value: V,
}

/// What a table maps a hash to: a value for its empty slots.
pub trait SlotValue: Copy {
    const NONE: Self;
}

impl SlotValue for RecordAt {
    const NONE: RecordAt = RecordAt {
        line: 0,
        chunk: 0,
        row: 0,
    };
}

impl SlotValue for () {
    const NONE: () = ();
}

/// How many hashes ahead of the one handled a table's slot is fetched
/// (`KeyTable::prefetch_ahead`, and the stored rows' hashes).
pub(crate) const PREFETCH_AHEAD: usize = 16;

/// Asks for the memory of `value` to be fetched into the cache: a hint
/// that reads nothing and cannot fault.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault; the address is of
    // a live value anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// `len` copies of `value`, every slot written here, never left to the
/// zeroed memory `vec![0; n]` asks for: a slot first read there and written
/// later costs a second fault, which copies the page and flushes the TLB of
/// every core.
///
/// In small pages: asking for 2 MB pages (`MADV_HUGEPAGE`) spared lookups
/// their TLB misses, but where the system's free memory is fragmented (a
/// page cache full of staged files) it compacts memory to make each such
/// page, in the faulting thread. A 10M-row day-2 sync spent over a second
/// there, and was 0.3 s faster (of 4.8 s) in small pages.
pub(crate) fn filled_in<T: Clone>(len: usize, value: T) -> Vec<T> {
    // Not `vec![value; len]`, which asks for zeroed memory when `value` is
    // zeros.
    let mut slots = Vec::with_capacity(len);
    slots.resize(len, value);
    slots
}

/// Values gathered by the region of a hash table their home slot falls in:
/// the top byte of their hash, as a table's home slot is its hash scaled to
/// the table's size. Written region by region, a table of millions is
/// filled a few hundred kilobytes at a time; written in the order its
/// values came (a scan of the stored rows, at random as far as the table
/// is concerned), each slot cost a cache miss and, with most of the table
/// beyond the TLB's reach, a page walk.
pub(crate) struct ByRegion<T> {
    regions: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ByRegion<T> {
    fn default() -> Self {
        ByRegion {
            regions: (0..256).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }
}

impl<T> ByRegion<T> {
    /// Notes `value`, whose table slot is found from `hash`.
    #[inline]
    pub(crate) fn push(&mut self, hash: u64, value: T) {
        self.regions[(hash >> 56) as usize].push(value);
        self.len += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `total` values in all, spread evenly, as hashes
    /// spread: grown one push at a time, each region's values were copied
    /// at every doubling, into memory the system had to clear first.
    pub(crate) fn reserve_total(&mut self, total: usize) {
        let each = (total / self.regions.len()) + (total / self.regions.len() / 8) + 16;
        for region in &mut self.regions {
            region.reserve(each.saturating_sub(region.len()));
        }
    }

    /// The values, region by region (in the order they came within one).
    pub(crate) fn into_values(self) -> impl Iterator<Item = T> {
        self.regions.into_iter().flatten()
    }

    /// The values of each region in turn.
    pub(crate) fn into_regions(self) -> impl Iterator<Item = Vec<T>> {
        self.regions.into_iter()
    }
}

/// Hashes of keys (never 0: see `FileChecks::hash`), each with the first
/// row that has it.
pub struct KeyTable<V: SlotValue = RecordAt> {
    slots: Vec<Slot<V>>,
    len: usize,
}

/// Hashes alone: whether a key was seen, not where.
pub type KeySet = KeyTable<()>;

impl<V: SlotValue> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<V: SlotValue> KeyTable<V> {
    const EMPTY: Slot<V> = Slot {
        hash: 0,
        value: V::NONE,
    };

    /// Makes room for `total` keys in all, at once: growing step by step
    /// would hold the old and the new table together at every step.
    pub fn reserve_total(&mut self, total: usize) {
        // At most three slots in four are taken, so probes stay short.
        if total.saturating_mul(4) <= self.slots.len().saturating_mul(3) {
            return;
        }
        let wanted = total.saturating_add(total / 3).max(16);
        let capacity = wanted.max(self.slots.len().saturating_mul(2));
        let old = std::mem::replace(&mut self.slots, filled_in(capacity, Self::EMPTY));
        for slot in old.into_iter().filter(|s| s.hash != 0) {
            let index = self.probe(slot.hash);
            self.slots[index] = slot;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Where `hash` starts looking: the hash's high half scaled to the
    /// table's size (any size, not just powers of two).
    fn home(&self, hash: u128) -> usize {
        (((hash >> 64) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot holding `hash`, or the empty slot where it would go.
    fn probe(&self, hash: u128) -> usize {
        let mut index = self.home(hash);
        loop {
            let slot = &self.slots[index];
            if slot.hash == hash || slot.hash == 0 {
                return index;
            }
            index += 1;
            if index == self.slots.len() {
                index = 0;
            }
        }
    }

    /// Asks for the memory of `hash`'s first slot to be fetched.
    #[inline]
    fn prefetch(&self, hash: u128) {
        if self.slots.is_empty() {
            return;
        }
        prefetch(&self.slots[self.home(hash)]);
    }

    /// While the hash of row `row` of `hashes` is handled, asks for the
    /// slot of the one `PREFETCH_AHEAD` rows on.
    #[inline]
    pub fn prefetch_ahead(&self, hashes: &[Option<u128>], row: usize) {
        if let Some(Some(ahead)) = hashes.get(row + PREFETCH_AHEAD) {
            self.prefetch(*ahead);
        }
    }

    /// Notes `hash` with its value. When the table has it already, it is
    /// left as it was and the value it was first noted with is returned.
    pub fn insert(&mut self, hash: u128, value: V) -> Result<(), V> {
        debug_assert_ne!(hash, 0, "0 marks an empty slot");
        self.reserve_total(self.len + 1);
        let index = self.probe(hash);
        let slot = &mut self.slots[index];
        if slot.hash == hash {
            return Err(slot.value);
        }
        *slot = Slot { hash, value };
        self.len += 1;
        Ok(())
    }

    /// Empties the table, with room for `total` hashes.
    pub fn clear_for(&mut self, total: usize) {
        self.slots.fill(Self::EMPTY);
        self.len = 0;
        self.reserve_total(total);
    }

    /// The hashes the table holds.
    pub fn hashes(&self) -> impl Iterator<Item = u128> + '_ {
        self.slots.iter().map(|s| s.hash).filter(|&h| h != 0)
    }

    pub fn contains(&self, hash: u128) -> bool {
        !self.slots.is_empty() && self.slots[self.probe(hash)].hash == hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(row: u32) -> RecordAt {
        RecordAt {
            line: u64::from(row) + 2,
            chunk: 0,
            row,
        }
    }

    /// The table answers as a map would, and the set as a set, through
    /// growth, wrap-around and hashes that share a home slot.
    #[test]
    fn answers_as_a_map_does() {
        let mut table = KeyTable::default();
        let mut set = KeySet::default();
        let mut map = std::collections::HashMap::new();
        // High halves near the top share the last home and probe on across
        // the table's end; small ones share the first; the rest spread.
        let top = u128::from(u64::MAX);
        let hashes: Vec<u128> =
            (0..3000u128)
                .map(|i| ((top - i % 3) << 64) | (i + 1))
                .chain((0..3000u128).map(|i| ((i % 5) << 64) | (i + 1)))
                .chain((0..3000u128).map(|i| {
                    (u128::from((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64) | 1
                }))
                .chain((0..3000u128).map(|i| ((top - i % 3) << 64) | (i % 1000 + 1)))
                .collect();
        for (row, &hash) in hashes.iter().enumerate() {
            table.prefetch(hash);
            let expected = map.get(&hash).copied();
            let got = table.insert(hash, at(row as u32)).err();
            assert_eq!(got, expected, "hash {hash:x}");
            assert_eq!(set.insert(hash, ()).is_err(), expected.is_some());
            map.entry(hash).or_insert(at(row as u32));
        }
        assert_eq!(table.len(), map.len());
        assert_eq!(set.len(), map.len());
        for hash in hashes {
            assert!(table.contains(hash) && set.contains(hash));
        }
        assert!(!table.contains(2) && !set.contains(2));
        assert!(!KeySet::default().contains(2));
    }
}
