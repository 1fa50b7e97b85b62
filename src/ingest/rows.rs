//! Rows with attributes: CSV with a header, and NDJSON objects.
//!
//! Rows are gathered into batches; a batch resolves its ids in one sorted
//! pass (as the id-list path does) and then applies its attribute changes
//! with one batched read of the old values. An empty CSV cell or a JSON
//! `null` deletes the attribute.

use std::io::BufRead;

use crate::store::{self, codec, EncodedChange};

use super::flat_json;
use super::interner::{Probe, Radix};
use super::{Error, Sink};

/// Rows per batch.
const BATCH_ROWS: usize = 262_144;
/// Attribute changes per batch: a file of many columns ends its batches
/// sooner, so a batch's buffers (its changes, encoded values and staged
/// writes) stay near one size whatever the width. At five attributes a
/// row, a batch of 262K rows held 86 MB of them. A little under a power of
/// two, so the row that fills a batch does not double its change list.
const BATCH_CELLS: usize = (1 << 18) - 4096;

/// A batch of rows: ids in one arena, values encoded in another, changes
/// pointing at row positions (the `user` of each change is the row's
/// position until the ids are resolved). Every buffer is reused.
#[derive(Default)]
struct Batch {
    ids: Vec<u8>,
    spans: Vec<(u32, u32)>,
    values: Vec<u8>,
    changes: Vec<EncodedChange>,
    /// The ids fingerprinted for the interner ([`Batch::probe`]).
    probes: Vec<Probe>,
    /// Index of each row's user, once resolved.
    idx: Vec<u32>,
}

impl Batch {
    fn push_id(&mut self, id: &[u8]) -> u32 {
        let pos = self.spans.len() as u32;
        self.spans.push((self.ids.len() as u32, id.len() as u32));
        self.ids.extend_from_slice(id);
        pos
    }

    /// A change of row `pos`: `value` encoded by `encode`, or a deletion.
    fn push_change(&mut self, pos: u32, attr: u32, encode: Option<impl FnOnce(&mut Vec<u8>)>) {
        let c = EncodedChange::encode(&mut self.values, attr, pos, encode);
        self.changes.push(c);
    }

    /// Fingerprints the ids for the interner, which walks its table in key
    /// order: sorted here when `radix` is given, else by the interner.
    fn probe(&mut self, radix: Option<&mut Radix>) {
        self.probes.clear();
        let ids = &self.ids;
        self.probes.extend(
            self.spans
                .iter()
                .enumerate()
                .map(|(i, &(s, l))| Probe::new(&ids[s as usize..(s + l) as usize], i as u32)),
        );
        if let Some(radix) = radix {
            radix.sort(&mut self.probes);
        }
    }

    fn is_full(&self) -> bool {
        self.spans.len() >= BATCH_ROWS || self.changes.len() >= BATCH_CELLS
    }

    fn flush(&mut self, sink: &mut Sink<'_, '_>) -> Result<(), Error> {
        if self.spans.is_empty() {
            return Ok(());
        }
        if self.probes.len() != self.spans.len() {
            self.probe(None);
        }
        self.idx.clear();
        self.idx.resize(self.probes.len(), 0);
        {
            let (txn, interner) = sink.parts();
            let (ids, spans) = (&self.ids, &self.spans);
            interner
                .resolve(
                    txn,
                    &mut self.probes,
                    |pos| {
                        let (s, l) = spans[pos as usize];
                        &ids[s as usize..(s + l) as usize]
                    },
                    &mut self.idx,
                )
                .map_err(Error::Store)?;
        }
        for c in &mut self.changes {
            c.user = self.idx[c.user as usize];
        }
        sink.parts()
            .0
            .set_encoded(&mut self.changes, &self.values)
            .map_err(Error::Store)?;
        sink.members_mut().insert_all(&self.idx);
        self.ids.clear();
        self.probes.clear();
        self.spans.clear();
        self.values.clear();
        self.changes.clear();
        Ok(())
    }
}

fn check_id<'a>(raw: &'a [u8], column: &str) -> Result<&'a [u8], String> {
    let id = raw.trim_ascii();
    if id.is_empty() {
        return Err(format!("empty id in column '{column}'"));
    }
    if std::str::from_utf8(id).is_err() {
        return Err(format!("invalid UTF-8 in column '{column}'"));
    }
    Ok(id)
}

/// Two stages, as for NDJSON: the header is read here (its columns name
/// the import's attributes), then a thread parses rows into batches while
/// this one resolves and applies the previous batch. On one thread, parsing
/// was a quarter of a 2-column import's critical path while the second
/// core had room.
pub(crate) fn read_csv(
    reader: &mut (dyn BufRead + Send),
    sink: &mut Sink<'_, '_>,
) -> Result<(), Error> {
    let id_column = sink.id_column().to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let header = rdr.byte_headers().map_err(|e| sink.csv_error(&e))?.clone();
    let mut names = Vec::with_capacity(header.len());
    for (i, h) in header.iter().enumerate() {
        let h = if i == 0 {
            h.strip_prefix(b"\xef\xbb\xbf").unwrap_or(h)
        } else {
            h
        };
        let name = std::str::from_utf8(h.trim_ascii())
            .map_err(|_| sink.line_error(1, format!("column {} name is not UTF-8", i + 1)))?;
        if name.is_empty() {
            return Err(sink.line_error(1, format!("column {} has an empty name", i + 1)));
        }
        if names.contains(&name.to_string()) {
            return Err(sink.line_error(1, format!("duplicate column '{name}'")));
        }
        names.push(name.to_string());
    }
    sink.next_line();
    let id_col = names.iter().position(|n| *n == id_column).ok_or_else(|| {
        sink.line_error(
            1,
            format!(
                "header has no id column '{id_column}' (columns: {}); choose one with --id-column",
                names.join(", ")
            ),
        )
    })?;
    let attrs: Vec<Option<u32>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i != id_col).then(|| sink.parts().0.attr(n)))
        .collect();
    let columns = CsvColumns {
        names: &names,
        attrs: &attrs,
        id_col,
        id_column: &id_column,
    };
    let header_line = sink.lines();
    std::thread::scope(|s| {
        // A rendezvous, as for NDJSON: one batch parsed ahead, no more.
        let (tx, rx) = crossbeam::channel::bounded::<std::io::Result<Parsed>>(0);
        let (recycle_tx, recycle_rx) = crossbeam::channel::bounded::<Batch>(1);
        s.spawn(move || parse_csv(rdr, &columns, header_line, &tx, &recycle_rx));
        for parsed in rx.iter() {
            let p = parsed.map_err(|e| sink.read_error(e))?;
            p.apply(sink, &recycle_tx)?;
        }
        Ok(())
    })
}

/// What the CSV parsing thread needs of the header.
struct CsvColumns<'a> {
    names: &'a [String],
    /// Each column's attribute (`None` for the id column).
    attrs: &'a [Option<u32>],
    id_col: usize,
    id_column: &'a str,
}

/// Parses rows into batches for [`read_csv`] until the file ends, the file
/// cannot be read, or the importing thread stops (an error).
fn parse_csv<R: std::io::Read>(
    mut rdr: csv::Reader<R>,
    columns: &CsvColumns<'_>,
    header_line: u64,
    out: &crossbeam::channel::Sender<std::io::Result<Parsed>>,
    recycled: &crossbeam::channel::Receiver<Batch>,
) {
    let mut rec = csv::ByteRecord::new();
    let mut last_line = header_line;
    let mut radix = Radix::default();
    loop {
        let mut p = Parsed::on(recycled.try_recv().unwrap_or_default());
        let mut eof = false;
        while p.has_room() {
            match rdr.read_byte_record(&mut rec) {
                Ok(false) => {
                    eof = true;
                    break;
                }
                Ok(true) => {}
                // The file cannot be read further (a truncated gzip, say):
                // not a bad line to skip, or the next read fails again.
                Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                    p.lines = last_line;
                    if let csv::ErrorKind::Io(io) = e.into_kind() {
                        let _ = out.send(Ok(p));
                        let _ = out.send(Err(io));
                    }
                    return;
                }
                Err(e) => {
                    let line = e.position().map_or(last_line + 1, |p| p.line());
                    last_line = last_line.max(line);
                    p.bad.push((line, csv_reason(&e)));
                    continue;
                }
            }
            let line = rec.position().map_or(last_line + 1, |p| p.line());
            last_line = last_line.max(line);
            if let Err(reason) = push_csv_row(&rec, columns, &mut p.batch) {
                p.bad.push((line, reason));
            }
        }
        p.lines = last_line;
        // The importing thread's comparison sort of each batch was a tenth
        // of a 2-column load's samples; this thread has room for it (the
        // NDJSON parser does not: it is the busier of the two).
        p.batch.probe(Some(&mut radix));
        if out.send(Ok(p)).is_err() || eof {
            return;
        }
    }
}

/// Adds one CSV row to `batch`, or says why it is malformed (and leaves
/// the batch as it was).
fn push_csv_row(
    rec: &csv::ByteRecord,
    columns: &CsvColumns<'_>,
    batch: &mut Batch,
) -> Result<(), String> {
    let id = check_id(&rec[columns.id_col], columns.id_column)?;
    for (i, field) in rec.iter().enumerate() {
        if i != columns.id_col && std::str::from_utf8(field).is_err() {
            return Err(format!("invalid UTF-8 in column '{}'", columns.names[i]));
        }
    }
    let pos = batch.push_id(id);
    for (i, field) in rec.iter().enumerate() {
        if let Some(attr) = columns.attrs[i] {
            // Checked UTF-8 above; an empty cell deletes.
            let encode = (!field.is_empty())
                .then_some(|out: &mut Vec<u8>| codec::encode_str_body(field, out));
            batch.push_change(pos, attr, encode);
        }
    }
    Ok(())
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields like the header, found {len}"),
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".into(),
        _ => format!("malformed CSV: {e}"),
    }
}

/// One NDJSON object's fields in file order, borrowed from the line: keys
/// without escapes and every value stay in the line's bytes (a `BTreeMap`
/// of owned keys, and a `Value` per field, cost more than the rest of the
/// line's import).
struct Fields<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The distinct id a raw JSON value gives: a string (borrowed when it has
/// no escape) or a number as written.
fn ndjson_id<'a>(
    raw: Option<&'a str>,
    id_column: &str,
) -> Result<std::borrow::Cow<'a, [u8]>, String> {
    use std::borrow::Cow;
    // A raw value holds no surrounding whitespace; its text is valid JSON.
    match raw {
        None | Some("null") => Err(format!("missing id field '{id_column}'")),
        Some(t) if t.starts_with('"') && !t.contains('\\') => {
            // No escape: the id is the text between the quotes.
            let inner = t.get(1..t.len() - 1).unwrap_or_default();
            Ok(Cow::Borrowed(check_id(inner.as_bytes(), id_column)?))
        }
        Some(t) if t.starts_with('"') => {
            let id: String = serde_json::from_str(t).map_err(|e| e.to_string())?;
            Ok(Cow::Owned(check_id(id.as_bytes(), id_column)?.to_vec()))
        }
        Some(t) if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            Ok(Cow::Borrowed(t.as_bytes()))
        }
        Some(_) => Err(format!(
            "id field '{id_column}' must be a string or a number"
        )),
    }
}

/// A batch of rows parsed on the reading thread. A CSV batch carries the
/// import's attribute ids (the header named them all before the thread
/// started); an NDJSON batch names attributes by a local number, since
/// only the import's transaction gives ids, and carries the names it saw
/// first.
#[derive(Default)]
struct Parsed {
    batch: Batch,
    /// Names new in this batch, numbered on from the previous batches'.
    names: Vec<String>,
    /// Malformed lines: (line number, reason), in order.
    bad: Vec<(u64, String)>,
    /// Lines read so far.
    lines: u64,
}

impl Parsed {
    /// An empty batch on `batch`'s buffers (one handed back, or new).
    fn on(batch: Batch) -> Parsed {
        Parsed {
            batch,
            ..Parsed::default()
        }
    }

    /// Whether the batch takes another line.
    fn has_room(&self) -> bool {
        !self.batch.is_full() && self.bad.len() < BATCH_ROWS
    }

    /// On the importing thread: the batch's malformed lines (an error, or
    /// skipped), then its rows; its buffers go back to the parser.
    fn apply(
        mut self,
        sink: &mut Sink<'_, '_>,
        recycle: &crossbeam::channel::Sender<Batch>,
    ) -> Result<(), Error> {
        for (line, reason) in self.bad.drain(..) {
            sink.set_line(line);
            sink.bad_line(line, reason)?;
        }
        sink.set_line(self.lines);
        self.batch.flush(sink)?;
        sink.progress();
        let _ = recycle.try_send(self.batch);
        Ok(())
    }
}

/// Two stages, as for id lists: a thread reads, parses and encodes rows
/// (two fifths of an NDJSON import's work was parsing, on the thread that
/// also resolves and applies); this one resolves and applies them.
pub(crate) fn read_ndjson(
    reader: &mut (dyn BufRead + Send),
    sink: &mut Sink<'_, '_>,
) -> Result<(), Error> {
    let id_column = sink.id_column().to_string();
    std::thread::scope(|s| {
        // A rendezvous: the parser fills batch N+1 while this thread
        // applies N, and no third batch (16 MB of buffers at 10M rows)
        // waits in between — the peak of a 10M-row load went from
        // 282–297 to 272–294 MB, at the same speed.
        let (tx, rx) = crossbeam::channel::bounded::<std::io::Result<Parsed>>(0);
        let (recycle_tx, recycle_rx) = crossbeam::channel::bounded::<Batch>(1);
        let column = id_column.as_str();
        s.spawn(move || parse_ndjson(reader, column, &tx, &recycle_rx));
        // Local attribute number → the import's attribute id.
        let mut attrs: Vec<u32> = Vec::new();
        for parsed in rx.iter() {
            let mut p = parsed.map_err(|e| sink.read_error(e))?;
            for name in &p.names {
                attrs.push(sink.parts().0.attr(name));
            }
            for c in &mut p.batch.changes {
                c.attr = attrs[c.attr as usize];
            }
            p.apply(sink, &recycle_tx)?;
        }
        Ok(())
    })
}

fn parse_ndjson(
    reader: &mut (dyn BufRead + Send),
    id_column: &str,
    out: &crossbeam::channel::Sender<std::io::Result<Parsed>>,
    recycled: &crossbeam::channel::Receiver<Batch>,
) {
    let mut lines = Lines::new(id_column);
    let mut cut = Vec::with_capacity(1024);
    loop {
        let mut p = Parsed::on(recycled.try_recv().unwrap_or_default());
        let mut eof = false;
        while p.has_room() {
            // The whole lines in the reader's buffer are parsed where they
            // are (copying each out, and `read_until`'s search a line at a
            // time, were a tenth of the parse); a line the buffer cuts is
            // copied out and completed.
            let read = match reader.fill_buf().map(|buf| lines.whole(buf, &mut p)) {
                Ok(0) => {
                    cut.clear();
                    reader.read_until(b'\n', &mut cut)
                }
                Ok(used) => {
                    reader.consume(used);
                    continue;
                }
                Err(e) => Err(e),
            };
            match read {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => lines.line(&cut, &mut p),
                Err(e) => {
                    // The lines before count, so the error says where the
                    // file stopped being readable.
                    p.lines = lines.count;
                    let _ = out.send(Ok(p));
                    let _ = out.send(Err(e));
                    return;
                }
            }
        }
        p.lines = lines.count;
        // The importing thread stopped (an error): nothing more to do.
        if out.send(Ok(p)).is_err() || eof {
            return;
        }
    }
}

/// An NDJSON import's line parser: the lines read so far, the names seen,
/// and the scanner's buffers, reused from line to line.
struct Lines<'a> {
    id_column: &'a str,
    count: u64,
    names: Names,
    spans: Vec<flat_json::Span>,
    encoded: Vec<(usize, u32, u32)>,
}

impl<'a> Lines<'a> {
    fn new(id_column: &'a str) -> Self {
        Lines {
            id_column,
            count: 0,
            names: Names::default(),
            spans: Vec::new(),
            encoded: Vec::new(),
        }
    }

    /// Parses the next line into `p`'s batch, or records it as bad there.
    fn line(&mut self, text: &[u8], p: &mut Parsed) {
        self.count += 1;
        let bufs = (&mut self.spans, &mut self.encoded);
        if let Err(reason) = parse_line(text, self.id_column, p, &mut self.names, bufs) {
            p.bad.push((self.count, reason));
        }
    }

    /// Parses the whole lines at the start of `buf` while `p` has room;
    /// returns the bytes they took (0: no whole line there).
    fn whole(&mut self, buf: &[u8], p: &mut Parsed) -> usize {
        let mut used = 0;
        while p.has_room() {
            let Some(n) = memchr::memchr(b'\n', &buf[used..]) else {
                break;
            };
            self.line(&buf[used..used + n], p);
            used += n + 1;
        }
        used
    }
}

/// Attribute names an NDJSON import has seen, numbered in order. Lines of
/// one file nearly always name their fields in the same order, so each
/// field's position remembers the last name seen there: a comparison
/// instead of hashing the name (SipHash of every field was 2 % of a
/// 2-column import).
#[derive(Default)]
struct Names {
    map: std::collections::HashMap<String, u32>,
    at: Vec<(String, u32)>,
}

impl Names {
    /// Whether `name` was seen at field `i` last time (then it is known and
    /// not empty).
    fn known_at(&self, i: usize, name: &str) -> bool {
        self.at.get(i).is_some_and(|(n, _)| n == name)
    }

    /// The number of `name`, seen at field `i`; a name new to the import
    /// is numbered and pushed to `new`.
    fn number(&mut self, i: usize, name: &str, new: &mut Vec<String>) -> u32 {
        if let Some((n, a)) = self.at.get(i) {
            if n == name {
                return *a;
            }
        }
        let a = match self.map.get(name) {
            Some(&a) => a,
            None => {
                let a = self.map.len() as u32;
                self.map.insert(name.to_string(), a);
                new.push(name.to_string());
                a
            }
        };
        if self.at.len() <= i {
            self.at.resize(i + 1, (String::new(), 0));
        }
        let slot = &mut self.at[i];
        slot.0.clear();
        slot.0.push_str(name);
        slot.1 = a;
        a
    }
}

/// Parses one NDJSON line into `p`'s batch, or says why it is malformed
/// (and leaves the batch as it was). `bufs` are the scanner's spans and the
/// encoded values' places, reused from line to line.
fn parse_line(
    line: &[u8],
    id_column: &str,
    p: &mut Parsed,
    names: &mut Names,
    bufs: (&mut Vec<flat_json::Span>, &mut Vec<(usize, u32, u32)>),
) -> Result<(), String> {
    let (spans, encoded) = bufs;
    let text = line.trim_ascii();
    if text.is_empty() {
        return Err("empty line".into());
    }
    if let Some(line) = flat_json::scan(text, spans) {
        let field = |i: usize| (spans[i].key(line), spans[i].value(line));
        return add_fields(spans.len(), field, id_column, p, names, encoded);
    }
    // Escapes, nesting, or a malformed line: serde_json reads it, or words
    // the error. Raw values keep numbers exactly as written (no float
    // round trip).
    let fields = match serde_json::from_slice::<Fields<'_>>(text) {
        Ok(o) => o.0,
        Err(e) => {
            return Err(if std::str::from_utf8(text).is_err() {
                "invalid UTF-8".to_string()
            } else {
                format!("invalid JSON object: {e}")
            })
        }
    };
    let field = |i: usize| (fields[i].0.as_ref(), fields[i].1.get());
    add_fields(fields.len(), field, id_column, p, names, encoded)
}

/// Adds the line of `n` fields `field(i)` (key, raw value) to `p`'s batch.
fn add_fields<'a>(
    n: usize,
    field: impl Fn(usize) -> (&'a str, &'a str),
    id_column: &str,
    p: &mut Parsed,
    names: &mut Names,
    encoded: &mut Vec<(usize, u32, u32)>,
) -> Result<(), String> {
    // A repeated key: the last one counts (as in a map).
    let raw_id = (0..n).rev().map(&field).find(|(k, _)| *k == id_column);
    let id = ndjson_id(raw_id.map(|(_, v)| v), id_column)?;
    for i in 0..n {
        let k = field(i).0;
        if k != id_column && !names.known_at(i, k) && k.trim().is_empty() {
            return Err(format!("empty attribute name {k:?}"));
        }
    }
    // Values go straight into the batch's arena; a bad one takes the
    // line's back out.
    let batch = &mut p.batch;
    let arena_len = batch.values.len();
    encoded.clear();
    for i in 0..n {
        let (k, v) = field(i);
        if k == id_column {
            continue;
        }
        let start = batch.values.len();
        match store::Value::encode_raw_body(v, &mut batch.values) {
            Ok(true) => encoded.push((i, start as u32, (batch.values.len() - start) as u32)),
            Ok(false) => encoded.push((i, 0, EncodedChange::DELETE)),
            Err(e) => {
                batch.values.truncate(arena_len);
                return Err(format!("field '{k}': {e}"));
            }
        }
    }
    let pos = batch.push_id(&id);
    for &(i, start, len) in encoded.iter() {
        let attr = names.number(i, field(i).0, &mut p.names);
        batch.changes.push(EncodedChange {
            attr,
            user: pos,
            start,
            len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::{Store, Value};

    fn import(
        store: &Store,
        name: &str,
        text: &str,
        skip_invalid: bool,
    ) -> Result<super::super::Summary, super::Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let opts = super::super::Options {
            skip_invalid,
            ..Default::default()
        };
        super::super::import_users(store, &path, &opts)
    }

    /// The borrowed NDJSON path: escaped and numeric ids, a repeated key
    /// (the last counts, as in a map), escaped values, `null` deleting.
    #[test]
    fn ndjson_fields_read_as_a_map_would() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let text = concat!(
            r#"{"distinct_id":"a\u0062","plan":"a","plan":"b","note":"x\"y"}"#,
            "\n",
            r#"{"distinct_id":42,"plan":null,"n":1.50}"#,
            "\n",
            r#"{"plan":"c","distinct_id":"ab","distinct_id":"cd"}"#,
            "\n",
        );
        let s = import(&store, "users.ndjson", text, false).unwrap();
        assert_eq!((s.lines, s.users_new), (3, 3));
        let value = |id: &str, attr: &str| {
            let user = store.user_index(id).unwrap().unwrap();
            store
                .attr_value(store.attr_id(attr).unwrap(), user)
                .unwrap()
        };
        assert_eq!(value("ab", "plan"), Some(Value::Str("b".into())));
        assert_eq!(value("ab", "note"), Some(Value::Str("x\"y".into())));
        assert_eq!(value("42", "n"), Some(Value::Num("1.50".into())));
        assert_eq!(value("42", "plan"), None);
        assert_eq!(value("cd", "plan"), Some(Value::Str("c".into())));
    }

    /// Lines are parsed in the reader's buffer and copied out only where
    /// the buffer cuts them: any buffer size gives the same batch, bad lines
    /// (with their numbers) and line count.
    #[test]
    fn ndjson_lines_cut_by_the_buffer_parse_as_whole_ones() {
        let text =
            "{\"distinct_id\":\"a\",\"p\":\"é✓\"}\r\n\n{\"distinct_id\":\"b\\u0041\",\"q\":[1]}\n\
                    {bad}\n  {\"distinct_id\":7,\"p\":null}  \n{\"distinct_id\":\"c\",\"p\":1e3}";
        let parse = |capacity: usize| {
            let mut reader = std::io::BufReader::with_capacity(capacity, text.as_bytes());
            let (tx, rx) = crossbeam::channel::unbounded();
            let (_keep, recycled) = crossbeam::channel::bounded(1);
            super::parse_ndjson(&mut reader, "distinct_id", &tx, &recycled);
            drop(tx);
            let mut got = Vec::new();
            for parsed in rx.iter() {
                let p = parsed.unwrap();
                let b = &p.batch;
                let changes: Vec<_> = b
                    .changes
                    .iter()
                    .map(|c| (c.attr, c.user, c.start, c.len))
                    .collect();
                got.push((
                    b.ids.clone(),
                    b.spans.clone(),
                    b.values.clone(),
                    changes,
                    p.names,
                    p.bad,
                    p.lines,
                ));
            }
            got
        };
        let whole = parse(1 << 20);
        assert_eq!(whole.len(), 1);
        let (ids, _, _, changes, names, bad, lines) = &whole[0];
        assert_eq!(ids, "ab\u{41}7c".as_bytes());
        assert_eq!(changes.len(), 4);
        assert_eq!(names, &["p", "q"]);
        let bad_lines: Vec<u64> = bad.iter().map(|(l, _)| *l).collect();
        assert_eq!(bad_lines, [2, 4]);
        assert_eq!(*lines, 6);
        for capacity in 1..=12 {
            assert_eq!(parse(capacity), whole, "buffer of {capacity} bytes");
        }
    }

    /// Rows are parsed a batch ahead on another thread, CSV and NDJSON: a
    /// bad row of a later batch still names its line (a CSV header is line
    /// 1), nothing of the import stays, and with `--skip-invalid` every
    /// other row lands.
    #[test]
    fn errors_past_the_first_batch_keep_their_line() {
        let n = super::BATCH_ROWS + 40_000;
        let bad = super::BATCH_ROWS + 17_000;
        type Row = fn(usize) -> String;
        let csv_row: Row = |i| format!("u{i},{i}\n");
        let ndjson_row: Row = |i| format!("{{\"distinct_id\":\"u{i}\",\"p\":{i}}}\n");
        for (name, header, row, bad_row, error, last_value) in [
            (
                "users.csv",
                "distinct_id,p\n",
                csv_row,
                "x,1,2\n",
                format!(":{}: expected 2 fields", bad + 1),
                Value::Str(n.to_string()),
            ),
            (
                "users.ndjson",
                "",
                ndjson_row,
                "{\"distinct_id\":\"x\",\"p\":}\n",
                format!(":{bad}: invalid JSON object"),
                Value::Num(n.to_string()),
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut text = String::with_capacity(n * 40);
            text.push_str(header);
            for i in 1..=n {
                text.push_str(&if i == bad {
                    bad_row.to_string()
                } else {
                    row(i)
                });
            }
            let e = import(&store, name, &text, false).unwrap_err().to_string();
            assert!(e.contains(&error), "{e}");
            assert_eq!(store.counters().user_count, 0);
            let s = import(&store, name, &text, true).unwrap();
            assert_eq!(
                (s.lines, s.skipped, s.users_new),
                (n as u64, 1, n as u64 - 1),
                "{name}"
            );
            let last = store.user_index(&format!("u{n}")).unwrap().unwrap();
            let p = store.attr_id("p").unwrap();
            assert_eq!(store.attr_value(p, last).unwrap(), Some(last_value));
        }
    }

    /// A file that cannot be read to its end (a gzip cut short) fails the
    /// import as unreadable, even with `--skip-invalid`: it is not a bad
    /// row to skip (skipped, the CSV import stored the first half as if it
    /// were the file), and the error says how far the file was read.
    #[test]
    fn a_truncated_gzip_fails_the_import_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (name, header, row) in [
            ("cut.csv.gz", "distinct_id,p\n", "u{i},{v}\n"),
            (
                "cut.ndjson.gz",
                "",
                "{\"distinct_id\":\"u{i}\",\"p\":{v}}\n",
            ),
        ] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(header.as_bytes()).unwrap();
            for i in 0..200_000u32 {
                // Incompressible enough that the cut falls mid-file.
                let v = i.wrapping_mul(2_654_435_761);
                let line = row
                    .replace("{i}", &i.to_string())
                    .replace("{v}", &v.to_string());
                gz.write_all(line.as_bytes()).unwrap();
            }
            let bytes = gz.finish().unwrap();
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            for skip_invalid in [false, true] {
                let opts = super::super::Options {
                    skip_invalid,
                    ..Default::default()
                };
                let e = super::super::import_users(&store, &path, &opts)
                    .unwrap_err()
                    .to_string();
                let read = super::super::line_read_before_failure(&e);
                assert!(read > 10_000, "{e}");
                assert_eq!(store.counters().user_count, 0, "{e}");
            }
        }
    }

    #[test]
    fn ndjson_bad_lines_name_their_line_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (text, reason) in [
            (
                "{\"distinct_id\":\"a\"}\n{\"distinct_id\":\"b\",\"\\u00a0\":1}\n",
                "empty attribute name",
            ),
            (
                "{\"distinct_id\":\"a\"}\n{\"distinct_id\":\"  \"}\n",
                "empty id",
            ),
            (
                "{\"distinct_id\":\"a\"}\n{\"distinct_id\":[1]}\n",
                "must be a string or a number",
            ),
            (
                "{\"distinct_id\":\"a\"}\n{\"plan\":\"x\"}\n",
                "missing id field",
            ),
        ] {
            let e = import(&store, "users.ndjson", text, false)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(":2: ") && e.contains(reason),
                "{e} (wanted {reason})"
            );
            assert_eq!(store.counters().user_count, 0, "{e}");
        }
        let s = import(
            &store,
            "users.ndjson",
            "{\"distinct_id\":\"a\",\"p\":1}\n{\"distinct_id\":\"\"}\n{\"distinct_id\":\"b\"}\n",
            true,
        )
        .unwrap();
        assert_eq!((s.users_new, s.skipped), (2, 1));
    }
}
