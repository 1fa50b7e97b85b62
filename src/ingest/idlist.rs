//! The fast path: a bare list of distinct ids, one per line.
//!
//! Reads large blocks, splits them with `memchr` without allocating per line,
//! fingerprints each id and resolves the block as one sorted batch. Only the
//! block in hand and the growing member bitmap are in memory.

use std::io::Read;

use memchr::memchr_iter;
use roaring::RoaringBitmap;

use super::interner::{Interner, Probe};
use super::{Error, Sink};

/// Bytes per block; a line longer than this grows the block.
const BLOCK: usize = 4 << 20;

pub(crate) fn read(reader: &mut dyn Read, sink: &mut Sink<'_, '_>) -> Result<(), Error> {
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + (BLOCK >> 2));
    let mut spans: Vec<(u32, u32)> = Vec::new();
    let mut probes: Vec<Probe> = Vec::new();
    let mut idx: Vec<u32> = Vec::new();
    loop {
        let eof = fill(reader, &mut buf, BLOCK).map_err(|e| sink.read_error(e))?;
        let end = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => continue, // one line longer than a block: read more
            }
        };
        block(&buf[..end], eof, sink, &mut spans, &mut probes, &mut idx)?;
        buf.drain(..end);
        sink.progress();
        if eof {
            return Ok(());
        }
    }
}

/// Reads until `buf` holds at least `want` bytes; true at end of input.
fn fill(reader: &mut dyn Read, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    while buf.len() < want {
        let old = buf.len();
        buf.resize(old + (want - old).max(64 << 10), 0);
        let n = loop {
            match reader.read(&mut buf[old..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(old);
                return Err(e);
            }
        };
        buf.truncate(old + n);
        if n == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn block(
    data: &[u8],
    eof: bool,
    sink: &mut Sink<'_, '_>,
    spans: &mut Vec<(u32, u32)>,
    probes: &mut Vec<Probe>,
    idx: &mut Vec<u32>,
) -> Result<(), Error> {
    spans.clear();
    probes.clear();
    let mut start = 0usize;
    // At end of input a last line without a newline still counts.
    let unterminated = eof && data.last().is_some_and(|&b| b != b'\n');
    let ends = memchr_iter(b'\n', data).chain(unterminated.then_some(data.len()));
    for end in ends {
        let raw = &data[start..end];
        let line_start = start;
        start = end + 1;
        let line_no = sink.next_line();
        let id = raw.trim_ascii();
        let reason = if id.is_empty() {
            Some("empty id")
        } else if std::str::from_utf8(id).is_err() {
            Some("invalid UTF-8")
        } else {
            None
        };
        if let Some(reason) = reason {
            sink.bad_line(line_no, reason.to_string())?;
            continue;
        }
        let offset = line_start + (id.as_ptr() as usize - raw.as_ptr() as usize);
        probes.push(Probe::new(id, spans.len() as u32));
        spans.push((offset as u32, id.len() as u32));
    }
    idx.clear();
    idx.resize(probes.len(), 0);
    let (txn, interner): (_, &mut Interner) = sink.parts();
    interner
        .resolve(
            txn,
            probes,
            |pos| {
                let (s, l) = spans[pos as usize];
                &data[s as usize..(s + l) as usize]
            },
            idx,
        )
        .map_err(Error::Store)?;
    sink.members_mut().insert_all(idx);
    Ok(())
}

/// Members collected during an import: user indexes are dense, so a plain
/// bit vector (1.25 MB for 10M users, cache-resident) takes any order of
/// insertion at a nanosecond each and deduplicates for free; it becomes a
/// roaring bitmap once, at the end.
#[derive(Debug, Default)]
pub(crate) struct DenseSet {
    words: Vec<u64>,
}

impl DenseSet {
    pub(crate) fn insert_all(&mut self, idx: &[u32]) {
        for &i in idx {
            let w = (i / 64) as usize;
            if w >= self.words.len() {
                self.words.resize((w + 1).next_power_of_two(), 0);
            }
            self.words[w] |= 1u64 << (i % 64);
        }
    }

    pub(crate) fn to_bitmap(&self) -> RoaringBitmap {
        let mut bytes = Vec::with_capacity(self.words.len() * 8);
        for w in &self.words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        RoaringBitmap::from_lsb0_bytes(0, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_set_matches_a_bitmap() {
        let idx: Vec<u32> = (0..100_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % 3_000_000)
            .collect();
        let mut set = DenseSet::default();
        set.insert_all(&idx);
        set.insert_all(&idx[..10]);
        let expected: RoaringBitmap = idx.iter().copied().collect();
        assert_eq!(set.to_bitmap(), expected);
        assert!(DenseSet::default().to_bitmap().is_empty());
    }
}
