//! Opening an input file: gzip is detected by its magic bytes (never by the
//! file name), the format by the first line, and bytes read from disk are
//! counted for the progress bar.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

/// The shape of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One distinct id per line, no header.
    IdList,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

/// Counts compressed bytes read, shared with the progress reporter.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened input: a buffered reader over the (decompressed) bytes.
pub struct Input {
    /// The decompressed byte stream.
    pub reader: Box<dyn BufRead + Send>,
    /// Size of the file on disk.
    pub size: u64,
    /// Bytes of the file read so far.
    pub read: Arc<AtomicU64>,
    /// Whether the file was gzip.
    pub gzip: bool,
}

impl Input {
    /// Opens `path`, decompressing gzip transparently.
    pub fn open(path: &Path) -> io::Result<Input> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Input::from_reader(file, size)
    }

    /// Reads from `source` (a stream of `size` bytes if known, else 0),
    /// decompressing gzip transparently: an HTTP upload is read as it
    /// arrives, never held whole.
    pub fn from_reader(source: impl Read + Send + 'static, size: u64) -> io::Result<Input> {
        let read = Arc::new(AtomicU64::new(0));
        let mut raw = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: source,
                read: read.clone(),
            },
        );
        let gzip = raw.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(Input {
            reader,
            size,
            read,
            gzip,
        })
    }

    /// Guesses the format from the first line. A line that is exactly the id
    /// column's name is a one-column CSV header; `{` starts NDJSON; a comma
    /// means CSV; anything else is a bare id list.
    pub fn detect(&mut self, id_column: &str) -> io::Result<InputFormat> {
        let buf = self.reader.fill_buf()?;
        let first = match memchr::memchr(b'\n', buf) {
            Some(i) => &buf[..i],
            None => buf,
        };
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        let first = first.strip_prefix(b"\xef\xbb\xbf").unwrap_or(first);
        Ok(if first.trim_ascii_start().starts_with(b"{") {
            InputFormat::Ndjson
        } else if first.contains(&b',') || first.trim_ascii() == id_column.as_bytes() {
            InputFormat::Csv
        } else {
            InputFormat::IdList
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn detect(content: &[u8], gz: bool) -> (InputFormat, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        if gz {
            let mut e = flate2::write::GzEncoder::new(&mut f, flate2::Compression::fast());
            e.write_all(content).unwrap();
            e.finish().unwrap();
        } else {
            f.write_all(content).unwrap();
        }
        let mut input = Input::open(&path).unwrap();
        let fmt = input.detect("distinct_id").unwrap();
        (fmt, input.gzip)
    }

    #[test]
    fn formats_and_gzip_are_detected_by_content() {
        assert_eq!(detect(b"a1\na2\n", false), (InputFormat::IdList, false));
        assert_eq!(
            detect(b"distinct_id,uid\na,1\n", false),
            (InputFormat::Csv, false)
        );
        assert_eq!(detect(b"distinct_id\na\n", true), (InputFormat::Csv, true));
        assert_eq!(
            detect(b"{\"distinct_id\":\"a\"}\n", true),
            (InputFormat::Ndjson, true)
        );
        assert_eq!(detect(b"", false), (InputFormat::IdList, false));
    }
}
