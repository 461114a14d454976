//! Records a snapshot sync knows unchanged from their text alone.
//!
//! A stored row keeps, beside the hash of its values (`_row_hash`), the
//! hash of the record it was read from (`_raw_hash`): the record's bytes as
//! they stand in the file, hashed with a seed made of everything that
//! decides how a record becomes a row (the schema, the CSV dialect, which
//! file column feeds which field, this build's reading of values). Bytes
//! and seed the same, reading them gives the same row, valid: a record of
//! today's file whose hash a stored row has is that row, unchanged. It is
//! then neither converted nor validated nor handed off; only its key is
//! kept, for the checks across rows, and the stored row it matched.
//!
//! Any other record (new, changed, or only spelled another way: `51,750`
//! for `51750`, CRLF for LF) is read in full, and the hash of its values
//! decides as before. A raw hash never says "changed", only "unchanged".

use std::sync::Arc;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::{PREFETCH_AHEAD, filled_in, prefetch};

/// Part of every seed: a change to how this program reads a value into a
/// row (a format it accepts, a canonical spelling) must change it, so that
/// no record is taken for a row read another way.
const READING_VERSION: &str = "dropsync raw rows 1";

/// The seed of the raw hashes of a file read as `reading` describes (the
/// schema, dialect, header layout and mode, spelled out by the caller).
pub fn seed(reading: &str) -> u64 {
    xxh3_64(format!("{READING_VERSION}|{}|{reading}", env!("CARGO_PKG_VERSION")).as_bytes())
}

/// The raw hash of a record's bytes, as the csv reader spans them (line
/// ends before the record included, and its own line end, if it has one).
/// Line ends are left out: the csv reader ends a record at a CR or an LF
/// alike and passes over empty lines, so a CRLF record may be spanned
/// from the LF before it to its CR, and a record is the same whichever
/// line ends surround it.
#[inline]
pub fn raw_hash(seed: u64, record: &[u8]) -> u64 {
    stored_form(xxh3_64_with_seed(record_text(record), seed))
}

/// `record` without the line ends around it.
pub fn record_text(record: &[u8]) -> &[u8] {
    let start = record
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(record.len());
    let record = &record[start..];
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    record.strip_suffix(b"\r").unwrap_or(record)
}

/// Stands in for a hash of 0, which marks an empty slot.
const ZERO_STANDIN: u64 = 0x6a09_e667_f3bc_c909;

fn stored_form(hash: u64) -> u64 {
    if hash == 0 { ZERO_STANDIN } else { hash }
}

/// The stored rows' raw hashes, each with the hash of the row's values, in
/// the order the rows were read from the store (the order they were
/// inserted in: a file's order, for rows a sync left as they were), and an
/// open-addressing table from a raw hash to its row.
///
/// Today's file mostly lists yesterday's records in yesterday's order, so
/// a record is first compared with the row after the last one found
/// (`follow`): one look at memory read in order, where the table costs a
/// cache miss and, beyond the TLB's reach, a page walk (a third of
/// parsing's time). The table answers the rest: new, changed and moved
/// records, and the first record of each stretch.
pub struct RawIndex {
    /// (raw hash, row hash), by place in the stored order.
    rows: Vec<(u64, u64)>,
    /// `(place + 1) << 32 | the raw hash's low half`; 0 when empty.
    slots: Vec<u64>,
}

impl RawIndex {
    /// An index of `pairs` (raw hash, row hash), in their stored order.
    pub fn new(pairs: &[(u64, u64)]) -> RawIndex {
        let mut gathered = RawPairs::default();
        for &(raw, row) in pairs {
            gathered.push(raw, row);
        }
        gathered.index()
    }

    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot of `raw`, or the empty slot where it would go.
    fn probe(&self, raw: u64) -> usize {
        let mut at = self.home(raw);
        loop {
            let slot = self.slots[at];
            if slot == 0
                || (slot & 0xffff_ffff == raw & 0xffff_ffff
                    && self.rows[(slot >> 32) as usize - 1].0 == raw)
            {
                return at;
            }
            at += 1;
            if at == self.slots.len() {
                at = 0;
            }
        }
    }

    /// The place of the stored row read from a record of raw hash `raw`.
    fn place(&self, raw: u64) -> Option<usize> {
        let slot = self.slots[self.probe(raw)];
        (slot != 0).then(|| (slot >> 32) as usize - 1)
    }

    /// Whether the stored row at `place` was read from a record of raw
    /// hash `raw`.
    #[inline]
    fn holds_at(&self, raw: u64, place: usize) -> bool {
        self.rows.get(place).is_some_and(|&(held, _)| held == raw)
    }

    /// Asks for the slot where `raw` would be, ahead of `get`.
    #[inline]
    pub fn prefetch(&self, raw: u64) {
        prefetch(&self.slots[self.home(raw)]);
    }

    /// The row hash of the stored row read from a record of raw hash `raw`
    /// (as `raw_hash` gives it).
    #[inline]
    pub fn get(&self, raw: u64) -> Option<u64> {
        self.place(raw).map(|place| self.rows[place].1)
    }

    /// Whether `raw` is likely the row at `next` or the one after (a
    /// stored row gone, or changed), where `follow` looks first.
    #[inline]
    pub fn expects(&self, raw: u64, next: usize) -> bool {
        self.holds_at(raw, next) || self.holds_at(raw, next.wrapping_add(1))
    }

    /// `get`, looking first at the row at `next` (the one after the last
    /// found, in the stored order) and the one after it, and setting
    /// `next` past the row found.
    #[inline]
    pub fn follow(&self, raw: u64, next: &mut usize) -> Option<u64> {
        let place = if self.holds_at(raw, *next) {
            *next
        } else if self.holds_at(raw, next.wrapping_add(1)) {
            next.wrapping_add(1)
        } else {
            self.place(raw)?
        };
        *next = place + 1;
        Some(self.rows[place].1)
    }
}

/// Pairs (raw hash, row hash) gathered for an index, in their stored order.
#[derive(Default)]
pub struct RawPairs(Vec<(u64, u64)>);

impl RawPairs {
    #[inline]
    pub fn push(&mut self, raw: u64, row: u64) {
        self.0.push((stored_form(raw), row));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Makes room for `total` pairs in all.
    pub fn reserve_total(&mut self, total: usize) {
        self.0.reserve(total.saturating_sub(self.0.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The index of the pairs; of two with one raw hash, the table gives
    /// the later.
    pub fn index(self) -> RawIndex {
        let len = self.0.len();
        let mut index = RawIndex {
            rows: self.0,
            slots: filled_in((len + len / 3).max(16), 0),
        };
        for place in 0..len {
            if let Some(&(ahead, _)) = index.rows.get(place + PREFETCH_AHEAD) {
                prefetch(&index.slots[index.home(ahead)]);
            }
            let raw = index.rows[place].0;
            let at = index.probe(raw);
            index.slots[at] = ((place as u64 + 1) << 32) | (raw & 0xffff_ffff);
        }
        index
    }
}

/// How a file's records are hashed as they are read, and, once the stored
/// rows' hashes are known, which of them are left out as unchanged.
#[derive(Clone)]
pub struct RawRows {
    pub seed: u64,
    pub index: Option<Arc<RawIndex>>,
    /// The schema fields whose values a record left out keeps, as written
    /// (the key, and the references the checks across rows follow).
    pub fields: Vec<usize>,
}

/// The records of a chunk left out as unchanged: each one's values of
/// `RawRows::fields` as written (`None` where the file has no such
/// column), line, and the row hash of the stored row it matched.
#[derive(Debug, Default)]
pub struct UnchangedRows {
    text: String,
    /// Per record, a range of `text` a field (in `RawRows::fields` order).
    values: Vec<Option<(u32, u32)>>,
    pub lines: Vec<u64>,
    pub stored: Vec<u64>,
}

impl UnchangedRows {
    /// Notes a record left out: its values, line and stored row.
    pub fn push<'a>(
        &mut self,
        values: impl IntoIterator<Item = Option<&'a str>>,
        line: u64,
        stored: u64,
    ) {
        for value in values {
            self.values.push(value.map(|v| {
                let start = self.text.len() as u32;
                self.text.push_str(v);
                (start, self.text.len() as u32)
            }));
        }
        self.lines.push(line);
        self.stored.push(stored);
    }

    /// Whether `more` bytes of values fit besides those held.
    pub fn has_room(&self, more: usize) -> bool {
        self.text.len().saturating_add(more) < u32::MAX as usize
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The values of record `row` (as pushed), into `out`.
    pub fn values<'a>(&'a self, row: usize, out: &mut Vec<Option<&'a str>>) {
        let width = self.values.len() / self.lines.len().max(1);
        out.clear();
        out.extend(
            self.values[row * width..(row + 1) * width]
                .iter()
                .map(|v| v.map(|(start, end)| &self.text[start as usize..end as usize])),
        );
    }

    /// Adds `more`, the records after these.
    pub fn append(&mut self, more: UnchangedRows) {
        let base = self.text.len() as u32;
        self.text.push_str(&more.text);
        self.values.extend(
            more.values
                .into_iter()
                .map(|v| v.map(|(start, end)| (base + start, base + end))),
        );
        self.lines.extend(more.lines);
        self.stored.extend(more.stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_finds_what_it_holds() {
        let seed = seed("a reading");
        let pairs: Vec<(u64, u64)> = (0..5000u64)
            .map(|n| (raw_hash(seed, format!("A{n},x,{n}\n").as_bytes()), n + 1))
            .chain([(0, 9999)])
            .collect();
        let index = RawIndex::new(&pairs);
        for (n, &(raw, row)) in pairs.iter().enumerate().take(5000) {
            assert_eq!(index.get(raw), Some(row), "pair {n}");
        }
        assert_eq!(index.get(stored_form(0)), Some(9999));
        assert_eq!(index.get(raw_hash(seed, b"A1,x,2\n")), None);
        // Followed in their order, with rows gone, records new, and rows
        // moved, every stored row is found as by `get`, the rest not.
        let asked: Vec<u64> = pairs
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 7 != 3)
            .flat_map(|(n, &(raw, _))| {
                let new = raw_hash(seed, format!("new {n}\n").as_bytes());
                let moved = pairs[(n * 31) % pairs.len()].0;
                match n % 11 {
                    0 => vec![new, raw],
                    5 => vec![raw, moved],
                    _ => vec![raw],
                }
            })
            .collect();
        let mut next = usize::MAX;
        for (n, &raw) in asked.iter().enumerate() {
            assert_eq!(index.follow(raw, &mut next), index.get(raw), "asked {n}");
        }
        // Another reading of the same bytes is another hash.
        assert_ne!(
            raw_hash(seed, b"A1,x,1\n"),
            raw_hash(super::seed("another reading"), b"A1,x,1\n")
        );
    }

    #[test]
    fn unchanged_rows_keep_values_and_lines_across_appends() {
        let mut a = UnchangedRows::default();
        a.push([Some("A1"), None], 2, 10);
        a.push([Some("A2"), Some("x")], 3, 11);
        let mut b = UnchangedRows::default();
        b.push([Some("A3"), Some("")], 9, 12);
        a.append(b);
        let mut values = Vec::new();
        let rows: Vec<Vec<Option<&str>>> = (0..a.len())
            .map(|row| {
                a.values(row, &mut values);
                values.clone()
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![Some("A1"), None],
                vec![Some("A2"), Some("x")],
                vec![Some("A3"), Some("")]
            ]
        );
        assert_eq!(a.lines, vec![2, 3, 9]);
        assert_eq!(a.stored, vec![10, 11, 12]);
        assert_eq!(a.len(), 3);
    }
}
