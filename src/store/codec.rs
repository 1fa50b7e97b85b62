//! Every byte format the store writes, each with a version byte in front:
//! serde records (bincode 2, standard config), bitmaps (roaring's portable
//! serialization, readable by CRoaring and the Java library) and attribute
//! values (a compact hand-written tag format, because the renderer decodes
//! millions of them per second and must not allocate for it).

use roaring::RoaringBitmap;
use serde::{de::DeserializeOwned, Serialize};

use super::Error;

/// Version byte in front of every bincode record.
pub const RECORD_VERSION: u8 = 1;
/// Version byte in front of every serialized bitmap.
pub const BITMAP_VERSION: u8 = 1;
/// Version byte in front of a presence delta (a merge operand of
/// `attr_present`); distinct from [`BITMAP_VERSION`] so the two never mix.
pub const PRESENCE_DELTA_VERSION: u8 = 0xD1;

const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// The largest record we decode, so that a length prefix in a damaged
/// record cannot ask for gigabytes before the bytes run out (bincode
/// allocates a string or a list before reading it; found by fuzzing: 15
/// bytes asked for 4 GB). Our largest records, segments with their
/// snapshot lists, stay far below it.
const MAX_RECORD_BYTES: usize = 64 << 20;
const BINCODE_DECODE: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
> = bincode::config::standard().with_limit::<MAX_RECORD_BYTES>();

/// Encodes a serde record as `[RECORD_VERSION] ++ bincode`.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Encoding plain serde structs into a Vec cannot fail: no I/O, no
    // unsupported types (all our records are derived structs of scalars).
    if let Err(e) = bincode::serde::encode_into_std_write(value, &mut out, BINCODE) {
        unreachable!("bincode encoding into a Vec failed: {e}");
    }
    out
}

/// Decodes a record written by [`encode_record`]; `what` names it in errors.
pub fn decode_record<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => bincode::serde::decode_from_slice(rest, BINCODE_DECODE)
            .map(|(v, _)| v)
            .map_err(|e| Error::Corrupt {
                what,
                reason: e.to_string(),
            }),
        Some((v, _)) => Err(Error::Corrupt {
            what,
            reason: format!("record format version {v}, expected {RECORD_VERSION}"),
        }),
        None => Err(Error::Corrupt {
            what,
            reason: "empty record".into(),
        }),
    }
}

/// Encodes a bitmap as `[BITMAP_VERSION] ++ roaring portable format`.
pub fn encode_bitmap(bitmap: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bitmap.serialized_size());
    out.push(BITMAP_VERSION);
    if let Err(e) = bitmap.serialize_into(&mut out) {
        unreachable!("serializing a bitmap into a Vec failed: {e}");
    }
    out
}

/// Encodes a change to an attribute's presence bitmap — users who gained
/// the attribute, users who lost it — as a RocksDB merge operand:
/// `[PRESENCE_DELTA_VERSION] ++ u32 LE length of added ++ added ++ removed`
/// (both bitmaps in roaring's portable format). A real-time write of a few
/// users then costs a few bytes instead of the whole bitmap.
pub fn encode_presence_delta(added: &RoaringBitmap, removed: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + added.serialized_size() + removed.serialized_size());
    out.push(PRESENCE_DELTA_VERSION);
    out.extend_from_slice(&(added.serialized_size() as u32).to_le_bytes());
    for b in [added, removed] {
        if let Err(e) = b.serialize_into(&mut out) {
            unreachable!("serializing a bitmap into a Vec failed: {e}");
        }
    }
    out
}

fn decode_presence_delta(bytes: &[u8]) -> Option<(RoaringBitmap, RoaringBitmap)> {
    let (&PRESENCE_DELTA_VERSION, rest) = bytes.split_first()? else {
        return None;
    };
    let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let added = RoaringBitmap::deserialize_from(rest.get(4..4 + n)?).ok()?;
    let removed = RoaringBitmap::deserialize_from(rest.get(4 + n..)?).ok()?;
    Some((added, removed))
}

/// RocksDB's partial merge for `attr_present`: consecutive deltas composed
/// into one, so a flush or a compaction that does not reach the stored
/// bitmap still folds a run of deltas (a later read applies one, not
/// thousands). Applying `(a1, r1)` then `(a2, r2)` to any bitmap is
/// applying `(((a1 − r1) ∪ a2) − r2, (r1 − a2) ∪ r2)`. `None` (RocksDB keeps
/// the operands as they are) when one cannot be decoded.
pub fn compose_presence_deltas<'a>(
    operands: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Vec<u8>> {
    let mut added = RoaringBitmap::new();
    let mut removed = RoaringBitmap::new();
    for op in operands {
        let (a2, r2) = decode_presence_delta(op)?;
        added -= &removed;
        added |= &a2;
        added -= &r2;
        removed -= &a2;
        removed |= r2;
    }
    Some(encode_presence_delta(&added, &removed))
}

/// RocksDB's full merge for `attr_present`: the stored bitmap (or none)
/// with every delta applied in order. `None` (RocksDB reports corruption)
/// when a value or an operand cannot be decoded.
pub fn merge_presence<'a>(
    existing: Option<&[u8]>,
    operands: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Vec<u8>> {
    let mut bm = stored_bitmap("attribute presence bitmap", existing)?;
    for op in operands {
        let (added, removed) = decode_presence_delta(op)?;
        bm |= added;
        bm -= removed;
    }
    Some(encode_bitmap(&bm))
}

/// RocksDB's merge for `attr_changes` buckets: the union of the stored
/// bitmap (if any) and every operand, each written by [`encode_bitmap`].
/// Union is associative, so the same function composes operands without
/// the base (partial merge). `None` (RocksDB reports corruption) when a
/// value or an operand cannot be decoded.
pub fn union_bitmaps<'a>(
    existing: Option<&[u8]>,
    operands: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Vec<u8>> {
    let mut bm = stored_bitmap("attribute change bitmap", existing)?;
    for op in operands {
        bm |= decode_bitmap("attribute change bitmap", op).ok()?;
    }
    Some(encode_bitmap(&bm))
}

/// A merge's base: the stored bitmap, or the empty one when there is none.
fn stored_bitmap(what: &'static str, existing: Option<&[u8]>) -> Option<RoaringBitmap> {
    match existing {
        Some(b) => decode_bitmap(what, b).ok(),
        None => Some(RoaringBitmap::new()),
    }
}

/// Decodes a bitmap written by [`encode_bitmap`].
pub fn decode_bitmap(what: &'static str, bytes: &[u8]) -> Result<RoaringBitmap, Error> {
    match bytes.split_first() {
        Some((&BITMAP_VERSION, rest)) => {
            RoaringBitmap::deserialize_from(rest).map_err(|e| Error::Corrupt {
                what,
                reason: e.to_string(),
            })
        }
        Some((v, _)) => Err(Error::Corrupt {
            what,
            reason: format!("bitmap format version {v}, expected {BITMAP_VERSION}"),
        }),
        None => Err(Error::Corrupt {
            what,
            reason: "empty bitmap".into(),
        }),
    }
}

/// A user attribute value as imported. CSV cells are strings; NDJSON keeps
/// the JSON type so numbers and booleans are sent as numbers and booleans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A JSON number, kept as its source text so nothing is lost to floats.
    Num(String),
    /// A boolean.
    Bool(bool),
    /// An array or object, kept as compact JSON text.
    Json(String),
}

const TAG_STR: u8 = b's';
const TAG_NUM: u8 = b'n';
const TAG_TRUE: u8 = b't';
const TAG_FALSE: u8 = b'f';
const TAG_JSON: u8 = b'j';

impl Value {
    /// Converts a raw JSON value, keeping numbers exactly as written;
    /// `None` for null (which deletes the attribute).
    pub fn from_raw(raw: &serde_json::value::RawValue) -> Result<Option<Value>, String> {
        Value::from_raw_text(raw.get())
    }

    /// [`Value::from_raw`] of a value's raw JSON text (valid JSON).
    pub fn from_raw_text(text: &str) -> Result<Option<Value>, String> {
        let text = text.trim();
        Ok(match text.as_bytes().first() {
            Some(b'n') => None,
            Some(b't') => Some(Value::Bool(true)),
            Some(b'f') => Some(Value::Bool(false)),
            Some(b'"') => Some(Value::Str(
                serde_json::from_str(text).map_err(|e| e.to_string())?,
            )),
            Some(b'{' | b'[') => {
                // Compact form, whatever the input's spacing.
                let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
                Some(Value::Json(v.to_string()))
            }
            _ => Some(Value::Num(text.to_string())),
        })
    }

    /// [`Value::from_raw`] then [`Value::encode_body`] in one step, without
    /// a `Value` in between for the common cases (a string with no escape,
    /// a number, a boolean): appends `[tag][bytes]` and returns `true`, or
    /// returns `false` for `null` (a deletion) and appends nothing. `text`
    /// is one value's raw JSON text, valid JSON (a `RawValue`'s, or a span
    /// the NDJSON scanner accepted).
    pub fn encode_raw_body(text: &str, out: &mut Vec<u8>) -> Result<bool, String> {
        // JSON's whitespace is ASCII.
        let text = text.trim_ascii();
        let b = text.as_bytes();
        match b.first() {
            Some(b'n') => Ok(false),
            Some(b't') => {
                out.push(TAG_TRUE);
                Ok(true)
            }
            Some(b'f') => {
                out.push(TAG_FALSE);
                Ok(true)
            }
            Some(b'"') if b.len() >= 2 && !b.contains(&b'\\') => {
                // Valid JSON already (the raw value was parsed): the bytes
                // between the quotes are the string.
                out.push(TAG_STR);
                out.extend_from_slice(&b[1..b.len() - 1]);
                Ok(true)
            }
            Some(b'{' | b'[' | b'"') => {
                if let Some(v) = Value::from_raw_text(text)? {
                    v.encode_body(out);
                }
                Ok(true)
            }
            _ => {
                out.push(TAG_NUM);
                out.extend_from_slice(b);
                Ok(true)
            }
        }
    }

    /// Appends the stored form: `[write seq u32 BE][tag][bytes]`.
    pub fn encode(&self, seq: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&seq.to_be_bytes());
        self.encode_body(out);
    }

    /// Appends the stored form without its write sequence: `[tag][bytes]`
    /// (what a bulk import keeps in its arena until the write).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(s) => {
                out.push(TAG_STR);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Num(s) => {
                out.push(TAG_NUM);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bool(true) => out.push(TAG_TRUE),
            Value::Bool(false) => out.push(TAG_FALSE),
            Value::Json(s) => {
                out.push(TAG_JSON);
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// Appends a string value's `[tag][bytes]` (see [`Value::encode_body`])
/// straight from a CSV cell, without building a [`Value`].
pub fn encode_str_body(s: &[u8], out: &mut Vec<u8>) {
    out.push(TAG_STR);
    out.extend_from_slice(s);
}

/// A borrowed view of a stored value, decoded without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRef<'a> {
    /// The import (write sequence) that set this value.
    pub seq: u32,
    tag: u8,
    body: &'a [u8],
}

impl<'a> ValueRef<'a> {
    /// Parses the stored form written by [`Value::encode`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let corrupt = |reason: &str| Error::Corrupt {
            what: "attribute value",
            reason: reason.to_string(),
        };
        if bytes.len() < 5 {
            return Err(corrupt("shorter than its header"));
        }
        let seq = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let tag = bytes[4];
        let body = &bytes[5..];
        match tag {
            TAG_STR | TAG_NUM | TAG_JSON => {
                std::str::from_utf8(body).map_err(|_| corrupt("not UTF-8"))?;
            }
            TAG_TRUE | TAG_FALSE if body.is_empty() => {}
            _ => return Err(corrupt("unknown tag")),
        }
        Ok(ValueRef { seq, tag, body })
    }

    /// True when the two values are equal, whatever write set them.
    pub fn same_value(&self, other: &ValueRef<'_>) -> bool {
        self.tag == other.tag && self.body == other.body
    }

    /// True when this is the value `[tag][bytes]` (see [`Value::encode_body`]).
    pub fn same_body(&self, tag_body: &[u8]) -> bool {
        tag_body.split_first() == Some((&self.tag, self.body))
    }

    /// The value as an owned [`Value`].
    pub fn to_value(&self) -> Value {
        let text = || String::from_utf8_lossy(self.body).into_owned();
        match self.tag {
            TAG_NUM => Value::Num(text()),
            TAG_JSON => Value::Json(text()),
            TAG_TRUE => Value::Bool(true),
            TAG_FALSE => Value::Bool(false),
            _ => Value::Str(text()),
        }
    }

    /// Appends the value as JSON (strings escaped, numbers and JSON verbatim).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self.tag {
            TAG_NUM | TAG_JSON => out.extend_from_slice(self.body),
            TAG_TRUE => out.extend_from_slice(b"true"),
            TAG_FALSE => out.extend_from_slice(b"false"),
            _ => write_json_str(self.body, out),
        }
    }

    /// The text that identifies a user by this value (a uid or anonymous
    /// id): strings and numbers as written, booleans as `true`/`false`;
    /// `None` for arrays and objects.
    pub fn identity_text(&self) -> Option<&'a [u8]> {
        match self.tag {
            TAG_TRUE => Some(b"true"),
            TAG_FALSE => Some(b"false"),
            TAG_JSON => None,
            _ => Some(self.body),
        }
    }

    /// The value as display text (strings unquoted).
    pub fn to_text(&self) -> String {
        match self.tag {
            TAG_TRUE => "true".into(),
            TAG_FALSE => "false".into(),
            _ => String::from_utf8_lossy(self.body).into_owned(),
        }
    }
}

/// Appends `s` (valid UTF-8) as a quoted, escaped JSON string.
pub fn write_json_str(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    // Ids and values almost never need escaping: one branch-free pass (the
    // compiler vectorizes it) decides, and a clean string is one copy.
    if !s.iter().fold(false, |esc, &b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    }) {
        out.extend_from_slice(s);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn change_buckets_merge_as_the_union() {
        use super::*;
        let bm = |v: &[u32]| encode_bitmap(&v.iter().copied().collect());
        let (base, a, b) = (bm(&[1, 70_000]), bm(&[2, 1]), bm(&[9_000_000]));
        let all = union_bitmaps(Some(&base), [&a[..], &b[..]]).unwrap();
        let got = decode_bitmap("t", &all).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), [1, 2, 70_000, 9_000_000]);
        // Composed without the base first, then applied: the same.
        let partial = union_bitmaps(None, [&a[..], &b[..]]).unwrap();
        assert_eq!(union_bitmaps(Some(&base), [&partial[..]]).unwrap(), all);
        assert_eq!(union_bitmaps(None, [&b"\x7fjunk"[..]]), None);
    }

    #[test]
    fn presence_deltas_apply_in_order() {
        use super::*;
        let base: RoaringBitmap = [1u32, 2, 3].into_iter().collect();
        let d1 = encode_presence_delta(
            &[4u32, 5].into_iter().collect(),
            &[2u32].into_iter().collect(),
        );
        let d2 = encode_presence_delta(
            &[2u32].into_iter().collect(),
            &[4u32, 9].into_iter().collect(),
        );
        let merged =
            merge_presence(Some(&encode_bitmap(&base)), [d1.as_slice(), d2.as_slice()]).unwrap();
        let got = decode_bitmap("t", &merged).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), vec![1, 2, 3, 5]);
        let from_none = merge_presence(None, [d1.as_slice()]).unwrap();
        assert_eq!(
            decode_bitmap("t", &from_none)
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(
            merge_presence(None, [&d1[..3]]).is_none(),
            "a cut operand is corruption"
        );
        assert!(merge_presence(Some(&[9u8, 9][..]), [d1.as_slice()]).is_none());
    }

    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        a: u32,
        name: String,
        list: Vec<u64>,
    }

    #[test]
    fn a_length_prefix_past_the_limit_is_refused_before_allocating() {
        // Found by fuzzing (fuzz/corpus/store_decoders/oom-string-length-4gb):
        // a segment record whose name claims 4 GB.
        let bytes = [
            1u8, 2, 0xfc, 0xff, 0xfd, 0xff, 0xff, 0xff, 1, 8, 0xfc, 8, 1, 8,
        ];
        let e = decode_record::<crate::store::SegmentRecord>("segment", &bytes).unwrap_err();
        assert!(e.to_string().contains("corrupt segment"), "{e}");
        let mut big = vec![RECORD_VERSION, 0xfc];
        big.extend_from_slice(&(u32::MAX).to_le_bytes());
        assert!(decode_record::<String>("name", &big).is_err());
    }

    #[test]
    fn record_round_trip_and_version_check() {
        let rec = Rec {
            a: 7,
            name: "x".into(),
            list: vec![1, u64::MAX],
        };
        let bytes = encode_record(&rec);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode_record::<Rec>("rec", &bytes).unwrap(), rec);
        let mut wrong = bytes.clone();
        wrong[0] = 99;
        let err = decode_record::<Rec>("rec", &wrong).unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
        assert!(decode_record::<Rec>("rec", &[]).is_err());
    }

    #[test]
    fn bitmap_round_trip_is_portable_format() {
        let bm: RoaringBitmap = (0..100_000).step_by(3).chain([u32::MAX]).collect();
        let bytes = encode_bitmap(&bm);
        assert_eq!(bytes[0], BITMAP_VERSION);
        // The body is exactly roaring's portable serialization.
        let mut portable = Vec::new();
        bm.serialize_into(&mut portable).unwrap();
        assert_eq!(&bytes[1..], &portable[..]);
        assert_eq!(decode_bitmap("bm", &bytes).unwrap(), bm);
        assert!(decode_bitmap("bm", &[2, 0, 0]).is_err());
    }

    #[test]
    fn value_round_trip_and_json() {
        let cases = [
            (
                Value::Str("a\"b\\c\n\u{1}é".into()),
                "\"a\\\"b\\\\c\\n\\u0001é\"",
            ),
            (Value::Num("12.50".into()), "12.50"),
            (
                Value::Num("123456789012345678901234567890".into()),
                "123456789012345678901234567890",
            ),
            (Value::Bool(true), "true"),
            (Value::Bool(false), "false"),
            (Value::Json("[1,2]".into()), "[1,2]"),
        ];
        for (v, json) in cases {
            let mut buf = Vec::new();
            v.encode(42, &mut buf);
            let r = ValueRef::decode(&buf).unwrap();
            assert_eq!(r.seq, 42);
            assert_eq!(r.to_value(), v);
            let mut out = Vec::new();
            r.write_json(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), json);
            let raw: Box<serde_json::value::RawValue> = serde_json::from_str(json).unwrap();
            assert_eq!(Value::from_raw(&raw).unwrap(), Some(v));
        }
        assert!(ValueRef::decode(&[0, 0, 0, 1, b'?']).is_err());
        assert!(ValueRef::decode(&[0, 0]).is_err());
    }

    proptest::proptest! {
        /// Whatever the string (clean ones take the one-copy path), the
        /// output is one JSON string that reads back as the input.
        #[test]
        fn json_strings_round_trip(s in "(\\PC|[\"\\\\\u{0}-\u{1f}])*") {
            let mut out = b"x".to_vec();
            write_json_str(s.as_bytes(), &mut out);
            let back: String = serde_json::from_slice(&out[1..]).unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }

    proptest::proptest! {
        /// The one-step encoding of a raw JSON value is the one through
        /// `Value`, for strings (escaped or not), numbers and the rest.
        #[test]
        fn raw_values_encode_as_through_a_value(
            s in "(\\PC|[\"\\\\\u{0}-\u{1f}])*",
            n in proptest::num::i64::ANY,
            pick in 0usize..7,
        ) {
            let json = match pick {
                0 => serde_json::to_string(&s).unwrap(),
                1 => n.to_string(),
                2 => format!("{}.5e3", n),
                3 => "true".into(),
                4 => "null".into(),
                5 => format!(r#"{{ "a" : [1, {}] }}"#, serde_json::to_string(&s).unwrap()),
                _ => format!(" {} ", serde_json::to_string(&s).unwrap()),
            };
            let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&json).unwrap();
            let mut want = Vec::new();
            let present = match Value::from_raw(&raw).unwrap() {
                Some(v) => {
                    v.encode_body(&mut want);
                    true
                }
                None => false,
            };
            let mut got = Vec::new();
            proptest::prop_assert_eq!(Value::encode_raw_body(raw.get(), &mut got).unwrap(), present);
            proptest::prop_assert_eq!(got, want);
        }
    }

    fn small_bitmap() -> impl proptest::strategy::Strategy<Value = RoaringBitmap> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(0u32..64, 0..20).prop_map(|v| v.into_iter().collect())
    }

    proptest::proptest! {
        /// Composing a run of deltas, then applying the result, is applying
        /// them one by one — whatever the bitmap, and even when a delta
        /// both adds and removes a user.
        #[test]
        fn composed_deltas_apply_as_the_run(
            base in small_bitmap(),
            deltas in proptest::collection::vec((small_bitmap(), small_bitmap()), 1..6),
            split in 0usize..6,
        ) {
            let encoded: Vec<Vec<u8>> =
                deltas.iter().map(|(a, r)| encode_presence_delta(a, r)).collect();
            let stored = encode_bitmap(&base);
            let one_by_one = merge_presence(Some(&stored), encoded.iter().map(Vec::as_slice)).unwrap();
            // RocksDB may compose any consecutive run, then fold the rest.
            let split = split.min(encoded.len());
            let (head, tail) = encoded.split_at(split);
            let composed = compose_presence_deltas(tail.iter().map(Vec::as_slice)).unwrap();
            let folded = merge_presence(
                Some(&stored),
                head.iter().map(Vec::as_slice).chain([composed.as_slice()]),
            )
            .unwrap();
            proptest::prop_assert_eq!(
                decode_bitmap("t", &folded).unwrap(),
                decode_bitmap("t", &one_by_one).unwrap()
            );
        }
    }

    #[test]
    fn same_value_ignores_the_write_seq() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Value::Str("x".into()).encode(1, &mut a);
        Value::Str("x".into()).encode(2, &mut b);
        let (a, b) = (ValueRef::decode(&a).unwrap(), ValueRef::decode(&b).unwrap());
        assert!(a.same_value(&b));
        assert_ne!(a, b);
    }
}
