//! The exact key set behind `clean`'s dedup: each row's key columns become
//! fixed-width bytes ([`KeyEncoder`]: fixed-width values as they are,
//! strings and other types as interned ids), every distinct key is stored
//! once, back to back, and found through a hash table of ids ([`KeySet`]).
//! Bytes are compared whenever hashes match, so the set is exact — no
//! per-row allocation, no probabilistic fingerprints.

use super::*;

/// How one key column becomes part of a fixed-width key.
enum KeyPart {
    /// Fixed-width values (numbers, dates, times, decimals): their bytes.
    Fixed(usize),
    /// Booleans: one byte.
    Bool,
    /// Strings, binaries and every other type: the id of the value in an
    /// [`Interner`] (4 bytes). Types other than strings and binaries are
    /// interned by their Arrow row encoding, equal exactly when the values
    /// are (what `RowConverter` guarantees).
    Interned(Interner, Option<RowConverter>),
}

/// Encodes the dedup key of every row as `width` bytes: a null mask (one
/// bit per key column), then each column's part. Two rows get the same
/// bytes exactly when their keys are equal (nulls equal each other: a null
/// value's part is zeros and its bit is set).
pub(super) struct KeyEncoder {
    columns: Vec<usize>,
    parts: Vec<KeyPart>,
    null_bytes: usize,
    width: usize,
}

impl KeyEncoder {
    pub(super) fn new(columns: &[usize], types: &[DataType]) -> anyhow::Result<KeyEncoder> {
        let parts = types
            .iter()
            .map(|ty| -> anyhow::Result<KeyPart> {
                Ok(match ty {
                    DataType::Boolean => KeyPart::Bool,
                    ty if ty.primitive_width().is_some() => {
                        KeyPart::Fixed(ty.primitive_width().unwrap_or_default())
                    }
                    DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Binary
                    | DataType::LargeBinary => KeyPart::Interned(Interner::default(), None),
                    ty => {
                        let rows = RowConverter::new(vec![SortField::new(ty.clone())])?;
                        KeyPart::Interned(Interner::default(), Some(rows))
                    }
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let null_bytes = columns.len().div_ceil(8);
        let width = null_bytes
            + parts
                .iter()
                .map(|p| match p {
                    KeyPart::Fixed(w) => *w,
                    KeyPart::Bool => 1,
                    KeyPart::Interned(..) => 4,
                })
                .sum::<usize>();
        Ok(KeyEncoder {
            columns: columns.to_vec(),
            parts,
            null_bytes,
            width,
        })
    }

    /// The keys of `batch`'s rows, `width` bytes each, one after another.
    fn encode(&mut self, batch: &RecordBatch) -> anyhow::Result<Vec<u8>> {
        let (n, width) = (batch.num_rows(), self.width);
        let mut keys = vec![0u8; n * width];
        let mut offset = self.null_bytes;
        for (k, (&c, part)) in self.columns.iter().zip(&mut self.parts).enumerate() {
            let column = batch.column(c);
            match part {
                KeyPart::Fixed(w) => {
                    let data = column.to_data();
                    let values = &data.buffers()[0].as_slice()[data.offset() * *w..][..n * *w];
                    copy_fixed(values, *w, &mut keys, width, offset);
                    offset += *w;
                }
                KeyPart::Bool => {
                    let bools = column.as_boolean();
                    for (r, key) in keys.chunks_exact_mut(width).enumerate() {
                        key[offset] = bools.value(r) as u8;
                    }
                    offset += 1;
                }
                KeyPart::Interned(interner, rows) => {
                    let ids = intern_column(interner, rows.as_ref(), column)?;
                    for (key, id) in keys.chunks_exact_mut(width).zip(ids) {
                        key[offset..offset + 4].copy_from_slice(&id.to_le_bytes());
                    }
                    offset += 4;
                }
            }
            // Nulls: set the bit, zero the part (a null slot's bytes are
            // whatever the buffer holds).
            let end = offset;
            let start = end
                - match part {
                    KeyPart::Fixed(w) => *w,
                    KeyPart::Bool => 1,
                    KeyPart::Interned(..) => 4,
                };
            if let Some(nulls) = column.logical_nulls() {
                for r in (0..n).filter(|&r| nulls.is_null(r)) {
                    let key = &mut keys[r * width..(r + 1) * width];
                    key[k / 8] |= 1 << (k % 8);
                    key[start..end].fill(0);
                }
            }
        }
        Ok(keys)
    }
}

/// Copies `w`-byte values into the keys at `offset` (a copy the compiler
/// can unroll for the common widths).
fn copy_fixed(values: &[u8], w: usize, keys: &mut [u8], width: usize, offset: usize) {
    fn copy<const W: usize>(values: &[u8], keys: &mut [u8], width: usize, offset: usize) {
        for (key, value) in keys.chunks_exact_mut(width).zip(values.chunks_exact(W)) {
            key[offset..offset + W].copy_from_slice(value);
        }
    }
    match w {
        1 => copy::<1>(values, keys, width, offset),
        2 => copy::<2>(values, keys, width, offset),
        4 => copy::<4>(values, keys, width, offset),
        8 => copy::<8>(values, keys, width, offset),
        16 => copy::<16>(values, keys, width, offset),
        _ => {
            for (key, value) in keys.chunks_exact_mut(width).zip(values.chunks_exact(w)) {
                key[offset..offset + w].copy_from_slice(value);
            }
        }
    }
}

/// The interned id of every value of a string, binary or (by its row
/// encoding) other column; 0 for nulls (the null bit tells them apart).
fn intern_column(
    interner: &mut Interner,
    rows: Option<&RowConverter>,
    column: &ArrayRef,
) -> anyhow::Result<Vec<u32>> {
    let nulls = column.logical_nulls();
    let valid = |r: usize| nulls.as_ref().is_none_or(|n| n.is_valid(r));
    let n = column.len();
    let mut ids = Vec::with_capacity(n);
    macro_rules! intern_each {
        ($array:expr) => {{
            let array = $array;
            for r in 0..n {
                ids.push(if valid(r) {
                    interner.intern(array.value(r).as_ref())?
                } else {
                    0
                });
            }
        }};
    }
    match (rows, column.data_type()) {
        (Some(converter), _) => {
            let encoded = converter.convert_columns(std::slice::from_ref(column))?;
            for r in 0..n {
                ids.push(if valid(r) {
                    interner.intern(encoded.row(r).as_ref())?
                } else {
                    0
                });
            }
        }
        (None, DataType::Utf8) => intern_each!(column.as_string::<i32>()),
        (None, DataType::LargeUtf8) => intern_each!(column.as_string::<i64>()),
        (None, DataType::Binary) => intern_each!(column.as_binary::<i32>()),
        (None, DataType::LargeBinary) => intern_each!(column.as_binary::<i64>()),
        (None, ty) => anyhow::bail!("dedup: cannot intern a {ty} column"),
    }
    Ok(ids)
}

/// A 32-bit hash of some bytes; tests swap in a bad one to force
/// collisions.
type HashFn = fn(&[u8]) -> u32;

fn fold_hash(bytes: &[u8]) -> u32 {
    let h = foldhash::fast::FixedState::with_seed(0).hash_one(bytes);
    (h ^ (h >> 32)) as u32
}

/// Ids of distinct values, found by their 32-bit hash: an open-addressing
/// table (linear probing, at most half full) of `hash << 32 | id + 1`
/// words, 0 when empty. The values themselves live with the caller, which
/// says whether the value of an id equals the one looked up. One flat
/// allocation, 8 bytes a slot, and a slot's address is known from the
/// hash alone, so it can be fetched ahead ([`IdTable::prefetch`]).
struct IdTable {
    slots: Vec<u64>,
    /// 64 − log2(slots): the top bits of the spread hash pick the slot.
    shift: u32,
    len: usize,
}

impl IdTable {
    /// Room for `n` ids before the first growth.
    fn with_capacity(n: usize) -> IdTable {
        let slots = (n.max(8) * 2).next_power_of_two();
        IdTable {
            slots: vec![0; slots],
            shift: 64 - slots.trailing_zeros(),
            len: 0,
        }
    }

    fn home(&self, hash: u32) -> usize {
        // Fibonacci hashing: every bit of the hash reaches the top bits.
        ((hash as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Asks the CPU to start loading the slot `hash` starts at.
    fn prefetch(&self, hash: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot: *const u64 = &self.slots[self.home(hash)];
            // SAFETY: a prefetch is a hint; the address is a valid slot.
            #[allow(unused_unsafe)]
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    slot as *const i8,
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The id of the value hashing to `hash` for which `eq` holds, or,
    /// when there is none, `new` inserted: (id, inserted).
    fn find_or_insert(&mut self, hash: u32, new: u32, eq: impl Fn(u32) -> bool) -> (u32, bool) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                self.slots[i] = (hash as u64) << 32 | (new as u64 + 1);
                self.len += 1;
                return (new, true);
            }
            let id = (slot as u32).wrapping_sub(1);
            if (slot >> 32) as u32 == hash && eq(id) {
                return (id, false);
            }
            i = (i + 1) & mask;
        }
    }

    /// Doubles the slots, placing every id again by its stored hash.
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        *self = IdTable::with_capacity(old.len());
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let mut i = self.home((slot >> 32) as u32);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
            self.len += 1;
        }
    }
}

/// The distinct dedup keys seen, exactly: their bytes one after another
/// (fixed width) and an [`IdTable`] of their ids. Two allocations in all,
/// not one per key.
pub(super) struct KeySet {
    encoder: KeyEncoder,
    keys: Vec<u8>,
    table: IdTable,
    hash: HashFn,
}

impl KeySet {
    /// `expected`: the rows to come, to size the table once.
    pub(super) fn new(encoder: KeyEncoder, expected: u64) -> KeySet {
        let expected = usize::try_from(expected)
            .unwrap_or(usize::MAX)
            .min(u32::MAX as usize);
        KeySet {
            keys: Vec::with_capacity(expected.saturating_mul(encoder.width)),
            table: IdTable::with_capacity(expected),
            encoder,
            hash: fold_hash,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len
    }

    /// (key id, first time seen) for every row of `batch`, in order.
    pub(super) fn insert_batch(&mut self, batch: &RecordBatch) -> anyhow::Result<Vec<(u32, bool)>> {
        /// How many rows ahead the table slot is fetched.
        const AHEAD: usize = 16;
        let encoded = self.encoder.encode(batch)?;
        let width = self.encoder.width;
        let hashes: Vec<u32> = encoded.chunks_exact(width).map(self.hash).collect();
        let mut out = Vec::with_capacity(hashes.len());
        for (r, key) in encoded.chunks_exact(width).enumerate() {
            if let Some(&ahead) = hashes.get(r + AHEAD) {
                self.table.prefetch(ahead);
            }
            out.push(self.insert_hashed(key, hashes[r])?);
        }
        Ok(out)
    }

    /// The id of `key` (whose hash is `hash`) and whether it is new.
    fn insert_hashed(&mut self, key: &[u8], hash: u32) -> anyhow::Result<(u32, bool)> {
        let width = self.encoder.width;
        let new = u32::try_from(self.keys.len() / width)
            .ok()
            .filter(|&id| id < u32::MAX)
            .ok_or_else(|| anyhow::anyhow!("dedup: more than 4 billion distinct keys"))?;
        let keys = &self.keys;
        let found = self.table.find_or_insert(hash, new, |id| {
            &keys[id as usize * width..(id as usize + 1) * width] == key
        });
        if found.1 {
            self.keys.extend_from_slice(key);
        }
        Ok(found)
    }
}

/// Distinct byte strings, numbered from 0 in order of first sight: their
/// bytes one after another and an [`IdTable`] of their ids.
struct Interner {
    bytes: Vec<u8>,
    /// Where each value ends in `bytes`.
    ends: Vec<usize>,
    table: IdTable,
    hash: HashFn,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            bytes: Vec::new(),
            ends: Vec::new(),
            table: IdTable::with_capacity(64),
            hash: fold_hash,
        }
    }
}

impl Interner {
    fn intern(&mut self, value: &[u8]) -> anyhow::Result<u32> {
        let hash = (self.hash)(value);
        let new = u32::try_from(self.ends.len())
            .ok()
            .filter(|&id| id < u32::MAX)
            .ok_or_else(|| anyhow::anyhow!("dedup: more than 4 billion distinct values"))?;
        let (bytes, ends) = (&self.bytes, &self.ends);
        let stored = |id: u32| {
            let start = if id == 0 { 0 } else { ends[id as usize - 1] };
            &bytes[start..ends[id as usize]]
        };
        let (id, inserted) = self
            .table
            .find_or_insert(hash, new, |id| stored(id) == value);
        if inserted {
            self.bytes.extend_from_slice(value);
            self.ends.push(self.bytes.len());
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, ListArray};
    use arrow::datatypes::Int32Type;
    use arrow::row::OwnedRow;
    use rand::{Rng, SeedableRng};

    /// Key columns of every kind the encoder handles: fixed-width (with
    /// nulls), string (interned, with nulls), float (-0.0, NaN), boolean,
    /// and a list (interned by its row encoding) — few distinct values, so
    /// most rows repeat an earlier key.
    fn batches(seed: u64, count: usize, rows: usize) -> Vec<RecordBatch> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for _ in 0..count {
            let n = rows + 3;
            let mut pick = |k: u32| rng.gen_range(0..k);
            let ints: Int64Array = (0..n)
                .map(|_| (pick(5) > 0).then(|| pick(4) as i64 - 2))
                .collect();
            let strings: StringArray = (0..n)
                .map(|_| {
                    (pick(6) > 0).then(|| {
                        ["", "a", "ab", "a long string over twelve bytes"][pick(4) as usize]
                    })
                })
                .collect();
            let floats: Float64Array = (0..n)
                .map(|_| Some([0.0, -0.0, f64::NAN, 1.5][pick(4) as usize]))
                .collect();
            let bools: BooleanArray = (0..n)
                .map(|_| (pick(5) > 0).then(|| pick(2) == 1))
                .collect();
            let lists = ListArray::from_iter_primitive::<Int32Type, _, _>((0..n).map(|_| {
                (pick(5) > 0).then(|| (0..pick(3)).map(|v| Some(v as i32)).collect::<Vec<_>>())
            }));
            let batch = RecordBatch::try_from_iter([
                ("i", Arc::new(ints) as ArrayRef),
                ("s", Arc::new(strings) as ArrayRef),
                ("f", Arc::new(floats) as ArrayRef),
                ("b", Arc::new(bools) as ArrayRef),
                ("l", Arc::new(lists) as ArrayRef),
            ])
            .unwrap();
            // A slice: arrays that start at an offset into their buffers.
            out.push(batch.slice(2, rows));
        }
        out
    }

    /// What the stage did before: a set of owned `RowConverter` rows.
    fn reference(batches: &[RecordBatch], columns: &[usize]) -> Vec<bool> {
        let fields = columns
            .iter()
            .map(|&c| SortField::new(batches[0].schema().field(c).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).unwrap();
        let mut seen: HashSet<OwnedRow> = HashSet::new();
        let mut out = Vec::new();
        for batch in batches {
            let cols: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
            let rows = converter.convert_columns(&cols).unwrap();
            out.extend(rows.iter().map(|r| seen.insert(r.owned())));
        }
        out
    }

    fn ours(batches: &[RecordBatch], columns: &[usize], hash: HashFn) -> (Vec<bool>, Vec<u32>) {
        let types: Vec<DataType> = columns
            .iter()
            .map(|&c| batches[0].schema().field(c).data_type().clone())
            .collect();
        let mut encoder = KeyEncoder::new(columns, &types).unwrap();
        for part in &mut encoder.parts {
            if let KeyPart::Interned(interner, _) = part {
                interner.hash = hash;
            }
        }
        // Sized for 4 rows: the table grows many times.
        let mut keys = KeySet::new(encoder, 4);
        keys.hash = hash;
        let found: Vec<(u32, bool)> = batches
            .iter()
            .flat_map(|b| keys.insert_batch(b).unwrap())
            .collect();
        (
            found.iter().map(|f| f.1).collect(),
            found.iter().map(|f| f.0).collect(),
        )
    }

    #[test]
    fn dedup_matches_row_converter_keys_across_batches_and_collisions() {
        let data = batches(7, 6, 300);
        for columns in [
            vec![0],
            vec![1],
            vec![2],
            vec![3],
            vec![4],
            vec![0, 1, 2, 3, 4],
            vec![3, 0],
        ] {
            let expected = reference(&data, &columns);
            let repeats = expected.iter().filter(|new| !**new).count();
            assert!(repeats > 100, "the data must repeat keys ({repeats})");
            // The real hash, and one that sends every key to one hash
            // value, so only the byte comparison tells keys apart.
            for hash in [fold_hash as HashFn, |_: &[u8]| 7] {
                let (new, ids) = ours(&data, &columns, hash);
                assert_eq!(new, expected, "columns {columns:?}");
                // Ids number keys in order of first sight.
                let distinct = expected.iter().filter(|n| **n).count() as u32;
                assert_eq!(ids.iter().max().map(|m| m + 1), Some(distinct));
            }
        }
    }

    #[test]
    fn nulls_equal_each_other_but_not_zero_or_empty() {
        let batch = RecordBatch::try_from_iter([
            (
                "i",
                Arc::new(Int64Array::from(vec![None, Some(0), None, Some(0)])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![None, Some(""), None, Some("")])) as ArrayRef,
            ),
        ])
        .unwrap();
        for columns in [vec![0], vec![1], vec![0, 1]] {
            let (new, ids) = ours(std::slice::from_ref(&batch), &columns, fold_hash);
            assert_eq!(new, [true, true, false, false], "columns {columns:?}");
            assert_eq!(ids, [0, 1, 0, 1]);
        }
    }

    #[test]
    fn id_table_keeps_ids_through_growth() {
        let mut table = IdTable::with_capacity(1);
        // Hashes with many repeats, and the values behind them distinct:
        // value v has hash v % 13.
        for v in 0..5000u32 {
            assert_eq!(table.find_or_insert(v % 13, v, |_| false), (v, true));
        }
        assert_eq!(table.len, 5000);
        for v in (0..5000u32).step_by(7) {
            assert_eq!(
                table.find_or_insert(v % 13, u32::MAX - 1, |id| id == v),
                (v, false)
            );
        }
        assert!(table.slots.len() >= 10_000, "at most half full");
    }

    #[test]
    fn dictionary_keys_compare_by_value_across_batches() {
        // The same strings under different dictionary codes in two
        // batches: equal keys, found through the row-encoding path.
        let dict = |keys: Vec<i32>, values: Vec<&str>| -> RecordBatch {
            let array = arrow::array::DictionaryArray::new(
                Int32Array::from(keys),
                Arc::new(StringArray::from(values)),
            );
            RecordBatch::try_from_iter([("d", Arc::new(array) as ArrayRef)]).unwrap()
        };
        let data = [
            dict(vec![0, 1, 0], vec!["x", "y"]),
            dict(vec![1, 0, 1], vec!["x", "y"]),
        ];
        let data = [
            data[0].clone(),
            dict(vec![0, 1, 1], vec!["y", "z"]),
            data[1].clone(),
        ];
        let expected = reference(&data, &[0]);
        assert_eq!(
            expected,
            [true, true, false, false, true, false, false, false, false]
        );
        assert_eq!(ours(&data, &[0], fold_hash).0, expected);
        assert_eq!(ours(&data, &[0], |_| 0).0, expected);
        let encoder = KeyEncoder::new(
            &[0, 1, 2],
            &[DataType::Int32, DataType::Utf8, DataType::Boolean],
        )
        .unwrap();
        assert_eq!(
            encoder.width,
            1 + 4 + 4 + 1,
            "null mask, int32, string id, bool"
        );
    }
}
