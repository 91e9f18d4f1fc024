//! Channel and reason texts as integer codes: the one scheme of the bucket
//! files, the sort and the spilled annotated contacts.
//!
//! Input: text columns (`channel`, `reason`) of contact batches.
//! Output: `UInt32` codes beside or instead of them, and the texts behind
//! the codes.
//!
//! - [`TextCodes`] numbers the distinct texts of a column as first seen,
//!   without hashing each row's bytes: the building block of the others.
//! - [`Texts`] numbers texts across threads as first seen: the bucket files
//!   store channel and reason as these codes, the log's texts kept once.
//! - [`encode_texts`] gives each bucket's sorted contacts the code columns
//!   of [`CODED_COLUMNS`] in text order ([`TextDictionaries`]), so that
//!   codes do not depend on how rows were partitioned; the passes and the
//!   repeat counts work on them instead of the texts.
//! - [`storage_type`] is the narrowest integer that holds a dictionary's
//!   codes: the spilled annotated contacts store theirs so.
//! - [`decode_texts`] and [`repeat_texts`] give the text columns back.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, StringArray, UInt32Array,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use rayon::prelude::*;

/// Column `name` of `batch`, or an internal error naming it.
fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("no column {name}")))
}

/// Codes for the values of a text column (`u32::MAX`: null), in the order
/// the values are first seen.
///
/// A small open-addressing table keyed by each text's 16-byte prefix and
/// length ([`text_prefix`], which are the whole text up to 16 bytes; a
/// longer text is compared in full where they match), hashed with its last
/// 8 bytes: a text column has few distinct values, and this codes a row with
/// whole-word loads and integer compares where a `HashMap<&str, _>` hashed
/// and compared the bytes (a tenth of the sort's bench time).
#[derive(Default)]
pub struct TextCodes<'a> {
    /// Per slot: a code + 1, or 0 (empty); a power of two long, at most
    /// half full.
    slots: Vec<u32>,
    /// Per code: its text's prefix and length.
    keys: Vec<(u128, usize)>,
    values: Vec<&'a str>,
}

impl<'a> TextCodes<'a> {
    /// The code of row `i` of `array`.
    pub fn code(&mut self, array: &'a StringArray, i: usize) -> u32 {
        if array.is_null(i) {
            return u32::MAX;
        }
        self.code_of(array.value(i))
    }

    /// The code of text `v`.
    pub fn code_of(&mut self, v: &'a str) -> u32 {
        let key = (text_prefix(v), v.len());
        if self.slots.is_empty() {
            self.slots = vec![0; 64];
        }
        let mask = self.slots.len() - 1;
        let mut at = Self::hash(v, key) as usize & mask;
        loop {
            match self.slots[at] {
                0 => break,
                s => {
                    let c = (s - 1) as usize;
                    if self.keys[c] == key && (key.1 <= 16 || self.values[c] == v) {
                        return c as u32;
                    }
                }
            }
            at = (at + 1) & mask;
        }
        let code = self.values.len() as u32;
        self.values.push(v);
        self.keys.push(key);
        self.slots[at] = code + 1;
        if self.values.len() * 2 > self.slots.len() {
            self.grow();
        }
        code
    }

    /// A slot hash of `v`, whose key is `key`: its prefix, length and (past
    /// 16 bytes) last 8 bytes, mixed.
    fn hash(v: &str, key: (u128, usize)) -> u64 {
        let b = v.as_bytes();
        let tail = if b.len() > 16 {
            u64::from_le_bytes(b[b.len() - 8..].try_into().expect("8 bytes"))
        } else {
            0
        };
        let x = (key.0 as u64) ^ ((key.0 >> 64) as u64).rotate_left(23) ^ tail.rotate_left(47);
        let h = (x ^ key.1 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for (c, (v, key)) in self.values.iter().zip(&self.keys).enumerate() {
            let mut at = Self::hash(v, *key) as usize & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = c as u32 + 1;
        }
        self.slots = slots;
    }

    /// The texts, by code.
    pub fn values(&self) -> &[&'a str] {
        &self.values
    }

    /// A text column of `n` rows from their `codes`.
    pub(crate) fn column(
        &self,
        codes: impl Iterator<Item = u32> + Clone,
        n: usize,
    ) -> Result<ArrayRef> {
        // (each code's text made once, not once per row and pass)
        let by_code: Vec<Text> = self.values.iter().map(|t| Text::of(t)).collect();
        text_column(codes.map(|c| (by_code.get(c as usize).copied(), 1)), n)
    }
}

/// A text for [`text_column`]: up to 16 bytes long, its first 16 bytes
/// zero-padded as [`text_prefix`] gives them, with its length (so that the
/// text need not be read where those are known); else the text.
#[derive(Clone, Copy)]
pub(crate) enum Text<'a> {
    Short(u128, usize),
    Long(&'a str),
}

impl<'a> Text<'a> {
    pub(crate) fn of(t: &'a str) -> Text<'a> {
        if t.len() <= 16 {
            Text::Short(text_prefix(t), t.len())
        } else {
            Text::Long(t)
        }
    }

    fn len(&self) -> usize {
        match self {
            Text::Short(_, len) => *len,
            Text::Long(t) => t.len(),
        }
    }
}

/// A text column of `n` rows from runs of equal values (`None`: null),
/// written straight into buffers of the exact size: Arrow's builder would
/// grow and copy them, faulting in fresh memory each time.
pub(crate) fn text_column<'a, I>(runs: I, n: usize) -> Result<ArrayRef>
where
    I: Iterator<Item = (Option<Text<'a>>, usize)> + Clone,
{
    let bytes: usize = runs
        .clone()
        .map(|(t, len)| t.map_or(0, |t| t.len() * len))
        .sum();
    if bytes > i32::MAX as usize {
        return Err(DataFusionError::ResourcesExhausted(format!(
            "a text column of {bytes} bytes in one partition; use more partitions (--threads)"
        )));
    }
    // (16 bytes of slack: see below)
    let mut values: Vec<u8> = Vec::with_capacity(bytes + 16);
    let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
    let mut valid: Option<BooleanBufferBuilder> = None;
    offsets.push(0);
    for (t, len) in runs {
        match t {
            Some(Text::Short(prefix, text_len)) => {
                // a short text as 16 bytes of a fixed-size copy, the excess
                // cut off again: no call to `memcpy` per row, which was most
                // of the time spent building these columns
                let padded = prefix.to_be_bytes();
                for _ in 0..len {
                    let end = values.len() + text_len;
                    values.extend_from_slice(&padded);
                    values.truncate(end);
                    offsets.push(end as i32);
                }
                if let Some(v) = valid.as_mut() {
                    v.append_n(len, true);
                }
            }
            Some(Text::Long(t)) => {
                for _ in 0..len {
                    values.extend_from_slice(t.as_bytes());
                    offsets.push(values.len() as i32);
                }
                if let Some(v) = valid.as_mut() {
                    v.append_n(len, true);
                }
            }
            None => {
                // validity bits only once a null is seen: the rows before
                // it were all valid
                let v = valid.get_or_insert_with(|| {
                    let mut v = BooleanBufferBuilder::new(n);
                    v.append_n(offsets.len() - 1, true);
                    v
                });
                v.append_n(len, false);
                offsets.extend(std::iter::repeat_n(values.len() as i32, len));
            }
        }
    }
    debug_assert_eq!(offsets.len(), n + 1);
    let nulls = valid.map(|mut v| NullBuffer::new(v.finish()));
    // the offsets grow from 0 and the values are whole UTF-8 texts
    Ok(Arc::new(StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from_vec(values),
        nulls,
    )?))
}

/// A text column of `texts[r]` repeated `lengths[r]` times, in order (no
/// nulls): a column kept once per run of equal values, back row by row.
pub fn repeat_texts(texts: &StringArray, lengths: &[u32]) -> Result<ArrayRef> {
    if texts.len() != lengths.len() || texts.null_count() > 0 {
        return Err(DataFusionError::Internal(format!(
            "{} texts ({} null) for {} runs",
            texts.len(),
            texts.null_count(),
            lengths.len()
        )));
    }
    let n = lengths.iter().map(|l| *l as usize).sum();
    text_column(
        (0..texts.len()).map(|r| (Some(Text::of(texts.value(r))), lengths[r] as usize)),
        n,
    )
}

/// The texts behind `codes` (code `i` is `texts[i]`; a null code, or one
/// past the texts, is a null text): the text column [`encode_texts`] coded.
pub fn decode_texts(codes: &UInt32Array, texts: &[String]) -> Result<ArrayRef> {
    let n = codes.len();
    let runs = codes.values().chunk_by(|a, b| a == b).scan(0, |at, run| {
        let start = *at;
        *at += run.len();
        Some((start, run))
    });
    // (each code's text made once, not once per row and pass)
    let by_code: Vec<Text> = texts.iter().map(|t| Text::of(t)).collect();
    let text = |start: usize, code: u32| {
        if codes.is_null(start) {
            None
        } else {
            by_code.get(code as usize).copied()
        }
    };
    if codes.null_count() == 0 {
        text_column(runs.map(|(start, run)| (text(start, run[0]), run.len())), n)
    } else {
        // (a run of equal codes can mix null and valid rows: row by row)
        text_column((0..n).map(|i| (text(i, codes.value(i)), 1)), n)
    }
}

/// The first 16 bytes of `text` as a big-endian integer, zero-padded: where
/// two texts' prefixes differ, they compare as the texts do.
///
/// Built from whole-word loads (the last word of a short text overlapping
/// the first): copying a text of unknown length into a zeroed buffer would
/// be a call to `memcpy` per text, and this is called for every row.
pub(crate) fn text_prefix(text: &str) -> u128 {
    let b = text.as_bytes();
    let n = b.len();
    // the word of `w` bytes at `at`, big-endian
    let be = |at: usize, w: usize| -> u64 {
        match w {
            8 => u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes")),
            4 => u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64,
            _ => u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes")) as u64,
        }
    };
    // bytes 0..n (2w >= n >= w) left-aligned in the top 2w bytes of a u128:
    // the first word, and over it the last, shifted to where its bytes are
    // (its leading 2w - n bytes are the first word's last, so they land on
    // themselves)
    let two_words = |w: usize| -> u128 {
        let (first, last) = (be(0, w) as u128, be(n - w, w) as u128);
        ((first << (8 * w)) | (last << (8 * (2 * w - n)))) << (8 * (16 - 2 * w))
    };
    match n {
        16.. => u128::from_be_bytes(b[..16].try_into().expect("16 bytes")),
        8..=15 => two_words(8),
        4..=7 => two_words(4),
        2..=3 => two_words(2),
        1 => (b[0] as u128) << 120,
        0 => 0,
    }
}

/// The text columns [`encode_texts`] gives codes, and the code columns.
pub const CODED_COLUMNS: [(&str, &str); 2] =
    [("channel", "_channel_code"), ("reason", "_reason_code")];

/// The texts behind the codes of [`encode_texts`]: code `i` of a column is
/// its `i`-th text, in text order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextDictionaries {
    /// Channel per `_channel_code`.
    pub channel: Vec<String>,
    /// Reason per `_reason_code`.
    pub reason: Vec<String>,
}

/// `schema` with the code columns [`encode_texts`] adds (nullable UInt32,
/// null where the text is).
pub fn with_code_fields(schema: &SchemaRef) -> SchemaRef {
    if schema.field_with_name(CODED_COLUMNS[0].1).is_ok() {
        return schema.clone();
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (_, code) in CODED_COLUMNS {
        fields.push(Field::new(code, DataType::UInt32, true));
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The partitions of a bucket with a code column beside `channel` and
/// `reason` ([`CODED_COLUMNS`]): the same code for the same text in every
/// partition, codes in text order (so they do not depend on how the rows are
/// partitioned). The passes and the repeat counts work on these integers
/// instead of hashing or comparing the texts row by row. Each partition is
/// coded on its own thread (the current rayon pool), then its few distinct
/// texts are mapped to the bucket's codes.
pub fn encode_texts(batches: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, TextDictionaries)> {
    // per partition and column: each row's local code, the local texts
    let local = batches
        .par_iter()
        .map(|b| {
            CODED_COLUMNS
                .iter()
                .map(|(name, _)| {
                    let texts = column(b, name)?.as_string::<i32>();
                    let mut dict = TextCodes::default();
                    let codes: Vec<u32> = (0..texts.len()).map(|i| dict.code(texts, i)).collect();
                    Ok((codes, dict.values.iter().map(|v| v.to_string()).collect()))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    with_codes(batches, local)
}

/// Each row's code in its partition (`u32::MAX`: null) and the partition's
/// texts per code, for each of [`CODED_COLUMNS`].
pub(crate) type LocalCodes = Vec<(Vec<u32>, Vec<String>)>;

/// The batches with the bucket's codes appended, from each partition's own
/// codes of [`CODED_COLUMNS`]: its few texts are looked up among the
/// bucket's, and its rows' codes translated.
pub(crate) fn with_codes(
    batches: Vec<RecordBatch>,
    local: Vec<LocalCodes>,
) -> Result<(Vec<RecordBatch>, TextDictionaries)> {
    // the bucket's texts per column, in order
    let global: Vec<Vec<&str>> = (0..CODED_COLUMNS.len())
        .map(|c| {
            let mut all: Vec<&str> = local
                .iter()
                .flat_map(|cols| cols[c].1.iter().map(|s| s.as_str()))
                .collect();
            all.sort_unstable();
            all.dedup();
            all
        })
        .collect();
    let dictionaries = TextDictionaries {
        channel: global[0].iter().map(|s| s.to_string()).collect(),
        reason: global[1].iter().map(|s| s.to_string()).collect(),
    };
    let out = batches
        .par_iter()
        .zip(local.par_iter())
        .map(|(b, cols)| {
            let schema = with_code_fields(&b.schema());
            let mut columns = b.columns().to_vec();
            for (c, (codes, values)) in cols.iter().enumerate() {
                let to_global: Vec<u32> = values
                    .iter()
                    .map(|v| {
                        global[c]
                            .binary_search(&v.as_str())
                            .expect("a text of the bucket") as u32
                    })
                    .collect();
                let texts = column(b, CODED_COLUMNS[c].0)?;
                let coded: Vec<u32> = codes
                    .iter()
                    .map(|&k| to_global.get(k as usize).copied().unwrap_or(0))
                    .collect();
                columns.push(Arc::new(UInt32Array::new(
                    ScalarBuffer::from(coded),
                    texts.nulls().cloned(),
                )));
            }
            Ok(RecordBatch::try_new(schema, columns)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, dictionaries))
}

/// The texts of one coded column, numbered as first seen.
#[derive(Debug, Default)]
pub struct Texts(HashMap<String, u32>);

impl Texts {
    /// The code of `text`, numbered anew if it is new.
    pub fn code(&mut self, text: &str) -> u32 {
        if let Some(c) = self.0.get(text) {
            return *c;
        }
        let c = self.0.len() as u32;
        self.0.insert(text.to_string(), c);
        c
    }

    /// The texts, by code.
    pub fn into_values(self) -> StringArray {
        let mut values = vec![String::new(); self.0.len()];
        for (text, c) in self.0 {
            values[c as usize] = text;
        }
        StringArray::from(values)
    }
}

/// The narrowest unsigned integer type that holds every code of a
/// dictionary of `texts` texts.
pub fn storage_type(texts: usize) -> DataType {
    if texts <= 1 << 8 {
        DataType::UInt8
    } else if texts <= 1 << 16 {
        DataType::UInt16
    } else {
        DataType::UInt32
    }
}
