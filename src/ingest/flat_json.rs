//! The NDJSON lines a users import sees nearly always — one flat object of
//! escape-free keys whose values are escape-free strings, numbers, `true`,
//! `false` or `null` — split into (key, raw value) in one pass over the
//! bytes, with no allocation.
//!
//! Anything else (an escape, a nested value, a malformed line) is declined,
//! and the caller parses the line with `serde_json`, which also words the
//! error. So the scanner needs to be exact only about what it accepts: a
//! line it accepts must be one `serde_json` accepts, with the same fields
//! (a property test below checks that on random and mutated lines). Through
//! `serde_json` (a visitor, a `Vec` per line, every string checked for
//! UTF-8 on its own) the parse was a quarter of a 2-column NDJSON import's
//! CPU, and the reason it ran 30–45 % behind CSV.

/// One field of an accepted line: byte ranges of the key's text (between
/// its quotes, no escape in it) and of the value's raw JSON text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) key: (u32, u32),
    pub(crate) value: (u32, u32),
}

impl Span {
    /// The key's text in the scanned line.
    pub(crate) fn key<'a>(&self, line: &'a str) -> &'a str {
        line.get(self.key.0 as usize..self.key.1 as usize)
            .unwrap_or_default()
    }

    /// The value's raw JSON text in the scanned line.
    pub(crate) fn value<'a>(&self, line: &'a str) -> &'a str {
        line.get(self.value.0 as usize..self.value.1 as usize)
            .unwrap_or_default()
    }
}

/// Splits `line` (already trimmed) into `spans` and returns it as `str`, or
/// returns `None` when the line is outside the subset above (`spans` then
/// holds anything). Lines of 4 GB or more are declined too, since spans
/// hold `u32` offsets.
pub(crate) fn scan<'a>(line: &'a [u8], spans: &mut Vec<Span>) -> Option<&'a str> {
    spans.clear();
    if u32::try_from(line.len()).is_err() {
        return None;
    }
    let mut s = Scanner { b: line, i: 0 };
    s.expect(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        s.fields(spans)?;
    }
    s.ws();
    if s.i != line.len() {
        return None;
    }
    // Bytes past ASCII can only be inside strings (anywhere else the
    // grammar refuses them), and strings must be UTF-8: one check of the
    // whole line instead of one a string.
    std::str::from_utf8(line).ok()
}

/// Bit 7 of each byte of `w` (little-endian) that is `"`, `\` or below
/// 0x20: exact for the lowest such byte, which is all [`Scanner::string`]
/// reads (a borrow only marks bytes above a true one). Bytes past ASCII
/// are never marked.
fn specials(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(LO) & !x;
    let quote = zero(w ^ (LO * u64::from(b'"')));
    let backslash = zero(w ^ (LO * u64::from(b'\\')));
    let control = w.wrapping_sub(LO * 0x20) & !w;
    (quote | backslash | control) & HI
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// JSON's whitespace (not form feed, which `trim_ascii` also strips).
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// `field (, field)* }` with `field` = `string : value`.
    fn fields(&mut self, spans: &mut Vec<Span>) -> Option<()> {
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let value = self.value()?;
            spans.push(Span { key, value });
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A string with no escape: the range between its quotes. Eight bytes
    /// at a time (a byte at a time, this was the import's largest parse
    /// cost).
    fn string(&mut self) -> Option<(u32, u32)> {
        self.expect(b'"')?;
        let start = self.i;
        let mut at = start;
        let end = loop {
            match self.b.get(at..at + 8) {
                Some(chunk) => {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(chunk);
                    let hit = specials(u64::from_le_bytes(word));
                    if hit != 0 {
                        break at + (hit.trailing_zeros() / 8) as usize;
                    }
                    at += 8;
                }
                None => {
                    let rest = self.b.get(at..)?;
                    break at
                        + rest
                            .iter()
                            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
                }
            }
        };
        self.i = end;
        // An escape or a control character: declined (serde_json decodes
        // the one and refuses the other).
        self.expect(b'"')?;
        Some((start as u32, end as u32))
    }

    /// A string, number or literal: the range of its raw text.
    fn value(&mut self) -> Option<(u32, u32)> {
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            // Objects and arrays are left to serde_json.
            _ => return None,
        }
        Some((start as u32, self.i as u32))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; what may
    /// follow it is the caller's to check.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `serde_json` makes of a line: its fields as (key, raw value).
    fn serde_fields(line: &[u8]) -> Option<Vec<(String, String)>> {
        let map: Vec<(String, Box<serde_json::value::RawValue>)> =
            serde_json::from_slice::<Entries>(line).ok()?.0;
        Some(
            map.into_iter()
                .map(|(k, v)| (k, v.get().to_string()))
                .collect(),
        )
    }

    /// A JSON object's entries in file order, repeats kept.
    struct Entries(Vec<(String, Box<serde_json::value::RawValue>)>);

    impl<'de> serde::Deserialize<'de> for Entries {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Entries;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Entries, A::Error> {
                    let mut v = Vec::new();
                    while let Some(e) = m.next_entry()? {
                        v.push(e);
                    }
                    Ok(Entries(v))
                }
            }
            d.deserialize_map(V)
        }
    }

    fn scanned(line: &[u8]) -> Option<Vec<(String, String)>> {
        let mut spans = Vec::new();
        let text = scan(line, &mut spans)?;
        Some(
            spans
                .iter()
                .map(|s| (s.key(text).to_string(), s.value(text).to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_usual_lines_are_accepted_as_serde_json_reads_them() {
        for line in [
            r#"{"distinct_id":"d1","uid":"uid-1"}"#,
            r#"{ "distinct_id" : "d1" , "age": -12.5e+3, "vip": true, "gone": null, "f": false }"#,
            r#"{"distinct_id":"é✓","n":0,"m":0.25,"k":1E9}"#,
            r#"{"a":"x","a":"y"}"#,
            "{}",
            "{\t\"a\"\r:\n\"\" }",
        ] {
            let got = scanned(line.as_bytes());
            assert!(got.is_some(), "declined {line}");
            assert_eq!(got, serde_fields(line.as_bytes()), "{line}");
        }
    }

    #[test]
    fn lines_outside_the_subset_are_declined() {
        for line in [
            r#"{"distinct_id":"a\"b"}"#,
            r#"{"k\n":"v"}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x",}"#,
            r#"{"a":"x"} x"#,
            r#"{"a" "x"}"#,
            "{\"a\":\"\u{1}\"}",
            "[1]",
            "",
        ] {
            assert_eq!(scanned(line.as_bytes()), None, "accepted {line}");
        }
        // Invalid UTF-8 inside a string.
        assert_eq!(scanned(b"{\"a\":\"\xff\"}"), None);
    }

    fn lowest_special(word: [u8; 8]) -> Option<usize> {
        let hit = specials(u64::from_le_bytes(word));
        (hit != 0).then(|| (hit.trailing_zeros() / 8) as usize)
    }

    #[test]
    fn specials_finds_the_first_quote_backslash_or_control_byte() {
        for at in 0..8 {
            for b in 0..=255u8 {
                let mut word = *b"abcdefgh";
                word[at] = b;
                let special = b == b'"' || b == b'\\' || b < 0x20;
                assert_eq!(
                    lowest_special(word),
                    special.then_some(at),
                    "{b:#x} at {at}"
                );
            }
        }
    }

    proptest! {
        /// Borrows between bytes never move the lowest mark.
        #[test]
        fn specials_marks_exactly_the_lowest(word in proptest::array::uniform8(any::<u8>())) {
            let naive = word.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            prop_assert_eq!(lowest_special(word), naive);
        }
    }

    /// A line of the subset, as pieces the mutation below can break.
    fn line() -> impl Strategy<Value = String> {
        let key = "[a-z_é\"\\\\]{0,6}";
        let value = prop_oneof![
            "\"[a-zA-Z0-9 é✓\\\\\"/]{0,8}\"",
            "-?(0|[1-9][0-9]{0,4})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            Just("true".to_string()),
            Just("false".to_string()),
            Just("null".to_string()),
            Just("{\"x\":1}".to_string()),
        ];
        let ws = "[ \t]{0,2}";
        proptest::collection::vec((key, ws, value, ws), 0..5).prop_map(|fields| {
            let body: Vec<String> = fields
                .into_iter()
                .map(|(k, w1, v, w2)| format!("{w1}\"{k}\"{w1}:{w2}{v}{w2}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest! {
        /// Whatever the scanner accepts, serde_json accepts with the same
        /// fields — on lines of the subset, and on them with one byte
        /// replaced, inserted or removed.
        #[test]
        fn accepted_lines_read_as_serde_json_reads_them(
            l in line(),
            at in 0usize..64,
            byte in proptest::sample::select(b"{}[]\":,\\ -+.eE019tfnulx\x01\xc3".to_vec()),
            how in 0u8..4,
        ) {
            let mut b = l.into_bytes();
            let at = at % (b.len() + 1);
            match how {
                0 => {}
                1 if at < b.len() => b[at] = byte,
                2 => b.insert(at, byte),
                _ if at < b.len() => { b.remove(at); }
                _ => {}
            }
            if let Some(fields) = scanned(&b) {
                prop_assert_eq!(Some(fields), serde_fields(&b));
            }
        }

        /// Lines with no escape and no nesting are all accepted (a scanner
        /// that declines everything would pass the property above).
        #[test]
        fn plain_lines_are_accepted(l in line()) {
            if !l.contains('\\') && !l.contains("{\"x\"") && serde_fields(l.as_bytes()).is_some() {
                prop_assert!(scanned(l.as_bytes()).is_some(), "declined {}", l);
            }
        }
    }
}
