//! Rows with attributes: CSV with a header, and NDJSON objects.
//!
//! Rows are gathered into batches; a batch resolves its ids in one sorted
//! pass (as the id-list path does) and then applies its attribute changes
//! with one batched read of the old values. An empty CSV cell or a JSON
//! `null` deletes the attribute.

use std::io::BufRead;

use crate::store::{codec, EncodedChange, Value};

use super::interner::Probe;
use super::{Error, Sink};

/// Rows per batch.
const BATCH_ROWS: usize = 262_144;

/// A batch of rows: ids in one arena, values encoded in another, changes
/// pointing at row positions (the `user` of each change is the row's
/// position until the ids are resolved). Every buffer is reused.
#[derive(Default)]
struct Batch {
    ids: Vec<u8>,
    spans: Vec<(u32, u32)>,
    values: Vec<u8>,
    changes: Vec<EncodedChange>,
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

    fn flush(&mut self, sink: &mut Sink<'_, '_>) -> Result<(), Error> {
        if self.spans.is_empty() {
            return Ok(());
        }
        let mut probes: Vec<Probe> = self
            .spans
            .iter()
            .enumerate()
            .map(|(i, &(s, l))| Probe::new(&self.ids[s as usize..(s + l) as usize], i as u32))
            .collect();
        let mut idx = vec![0u32; probes.len()];
        {
            let (txn, interner) = sink.parts();
            let (ids, spans) = (&self.ids, &self.spans);
            interner
                .resolve(
                    txn,
                    &mut probes,
                    |pos| {
                        let (s, l) = spans[pos as usize];
                        &ids[s as usize..(s + l) as usize]
                    },
                    &mut idx,
                )
                .map_err(Error::Store)?;
        }
        for c in &mut self.changes {
            c.user = idx[c.user as usize];
        }
        sink.parts()
            .0
            .set_encoded(&mut self.changes, &self.values)
            .map_err(Error::Store)?;
        sink.members_mut().insert_all(&idx);
        self.ids.clear();
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

pub(crate) fn read_csv(reader: &mut dyn BufRead, sink: &mut Sink<'_, '_>) -> Result<(), Error> {
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

    let mut batch = Batch::default();
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(sink.lines() + 1, |p| p.line());
                sink.set_line(line);
                sink.bad_line(line, csv_reason(&e))?;
                continue;
            }
        }
        let line = rec.position().map_or(sink.lines() + 1, |p| p.line());
        sink.set_line(line);
        let id = match check_id(&rec[id_col], &id_column) {
            Ok(id) => id,
            Err(reason) => {
                sink.bad_line(line, reason)?;
                continue;
            }
        };
        let mut bad = None;
        for (i, field) in rec.iter().enumerate() {
            if i != id_col && std::str::from_utf8(field).is_err() {
                bad = Some(format!("invalid UTF-8 in column '{}'", names[i]));
            }
        }
        if let Some(reason) = bad {
            sink.bad_line(line, reason)?;
            continue;
        }
        let pos = batch.push_id(id);
        for (i, field) in rec.iter().enumerate() {
            if let Some(attr) = attrs[i] {
                // Checked UTF-8 above; an empty cell deletes.
                let encode = (!field.is_empty())
                    .then_some(|out: &mut Vec<u8>| codec::encode_str_body(field, out));
                batch.push_change(pos, attr, encode);
            }
        }
        if batch.spans.len() >= BATCH_ROWS {
            batch.flush(sink)?;
            sink.progress();
        }
    }
    batch.flush(sink)
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

pub(crate) fn read_ndjson(reader: &mut dyn BufRead, sink: &mut Sink<'_, '_>) -> Result<(), Error> {
    let id_column = sink.id_column().to_string();
    let mut batch = Batch::default();
    let mut line = Vec::with_capacity(1024);
    'lines: loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| sink.read_error(e))?;
        if n == 0 {
            break;
        }
        let line_no = sink.next_line();
        let text = line.trim_ascii();
        if text.is_empty() {
            sink.bad_line(line_no, "empty line".into())?;
            continue;
        }
        // Raw values keep numbers exactly as written (no float round trip).
        let obj: Vec<(String, &serde_json::value::RawValue)> = match serde_json::from_slice::<
            std::collections::BTreeMap<String, &serde_json::value::RawValue>,
        >(text)
        {
            Ok(o) => o.into_iter().collect(),
            Err(e) => {
                let reason = if std::str::from_utf8(text).is_err() {
                    "invalid UTF-8".to_string()
                } else {
                    format!("invalid JSON object: {e}")
                };
                sink.bad_line(line_no, reason)?;
                continue;
            }
        };
        let raw_id = obj.iter().find(|(k, _)| *k == id_column).map(|(_, v)| *v);
        let id: Result<Vec<u8>, String> = match raw_id.map(|r| r.get().trim()) {
            None | Some("null") => Err(format!("missing id field '{id_column}'")),
            Some(t) if t.starts_with('"') => serde_json::from_str::<String>(t)
                .map_err(|e| e.to_string())
                .and_then(|s| check_id(s.as_bytes(), &id_column).map(<[u8]>::to_vec)),
            Some(t) if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                Ok(t.as_bytes().to_vec())
            }
            Some(_) => Err(format!(
                "id field '{id_column}' must be a string or a number"
            )),
        };
        let id = match id {
            Ok(id) => id,
            Err(reason) => {
                sink.bad_line(line_no, reason)?;
                continue;
            }
        };
        if let Some((k, _)) = obj.iter().find(|(k, _)| k.trim().is_empty()) {
            sink.bad_line(line_no, format!("empty attribute name {k:?}"))?;
            continue;
        }
        let mut values = Vec::with_capacity(obj.len());
        for (k, v) in &obj {
            if *k != id_column {
                match Value::from_raw(v) {
                    Ok(value) => values.push((k.as_str(), value)),
                    Err(e) => {
                        sink.bad_line(line_no, format!("field '{k}': {e}"))?;
                        continue 'lines;
                    }
                }
            }
        }
        let pos = batch.push_id(&id);
        for (k, value) in values {
            let attr = sink.parts().0.attr(k);
            batch.push_change(
                pos,
                attr,
                value.map(|v| move |out: &mut Vec<u8>| v.encode_body(out)),
            );
        }
        if batch.spans.len() >= BATCH_ROWS {
            batch.flush(sink)?;
            sink.progress();
        }
    }
    batch.flush(sink)
}
