//! The architecture's arrows, checked on the source: top-level modules only
//! import from modules below them (cli/server → lifecycle → pipeline →
//! plan/destination → store, with inbound beside lifecycle and a few
//! utilities anyone may use), and no two files of one directory import each
//! other, directly or around a cycle. A new upward import fails here with
//! the file that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, bottom first. A module may import from a lower layer only.
const LAYERS: &[&[&str]] = &[
    &[
        "error",
        "metrics",
        "progress",
        "fixtures",
        "secret",
        "allocator",
    ],
    &["store"],
    &["ingest", "plan", "destination"],
    &["config", "checking_receiver", "cluster"],
    &["pipeline"],
    &["lifecycle", "inbound", "auth", "worker"],
    &["server"],
    &["cli"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its test module and comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every path that follows `prefix` (`crate::` or `super::`), with `use
/// prefix{a, b::c}` groups expanded: the first two segments of each.
fn paths_after(code: &str, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let two_segments = |path: &str| {
            let first = ident(path);
            let second = path
                .strip_prefix(first)
                .and_then(|r| r.strip_prefix("::"))
                .map(ident)
                .unwrap_or("");
            (first.to_string(), second.to_string())
        };
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|i| two_segments(i.trim())));
        } else {
            out.push(two_segments(rest));
        }
    }
    out
}

#[test]
fn imports_run_one_way_and_no_directory_has_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    // Directory → (file module → sibling modules it imports).
    let mut siblings: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        let top = parts[0].clone();
        let text = code(&std::fs::read_to_string(path).expect("read"));
        let own =
            layer(&top).unwrap_or_else(|| panic!("{}: module {top} has no layer", rel.display()));
        for (first, _) in paths_after(&text, "crate::") {
            if first == top || first.is_empty() {
                continue;
            }
            let theirs = layer(&first)
                .unwrap_or_else(|| panic!("{}: imports unknown module {first}", rel.display()));
            if theirs >= own {
                upward.push(format!("{} imports crate::{first}", rel.display()));
            }
        }
        // Sibling edges inside one directory (mod.rs is the wiring, not a sibling).
        let dir = path.parent().expect("dir").to_path_buf();
        let me = parts.last().expect("name").clone();
        if me == "mod" {
            continue;
        }
        let sibling_names: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| {
                let p = e.ok()?.path();
                let name = p.file_stem()?.to_string_lossy().to_string();
                (name != "mod" && name != me && (p.is_dir() || p.extension()? == "rs"))
                    .then_some(name)
            })
            .collect();
        let mut refs: BTreeSet<String> = paths_after(&text, "super::")
            .into_iter()
            .map(|(a, _)| a)
            .filter(|a| sibling_names.contains(a))
            .collect();
        if parts.len() >= 2 {
            for (first, second) in paths_after(&text, "crate::") {
                if first == parts[0] && sibling_names.contains(&second) {
                    refs.insert(second);
                }
            }
        }
        siblings.entry(dir).or_default().insert(me, refs);
    }
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
    for (dir, graph) in &siblings {
        // Depth-first search for a cycle.
        fn visit(
            n: &str,
            g: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = stack.iter().position(|s| s == n) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            if done.contains(n) {
                return None;
            }
            stack.push(n.to_string());
            for m in g.get(n).into_iter().flatten() {
                if let Some(c) = visit(m, g, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.insert(n.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for n in graph.keys() {
            if let Some(cycle) = visit(n, graph, &mut Vec::new(), &mut done) {
                panic!("import cycle in {}: {}", dir.display(), cycle.join(" → "));
            }
        }
    }
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let found = paths_after(
        "use crate::{ingest, store::Store};\nlet x = crate::plan::total_pages(1, 2, 3);\nmy_crate::no",
        "crate::",
    );
    assert_eq!(
        found,
        [
            ("ingest".to_string(), String::new()),
            ("store".to_string(), "Store".to_string()),
            ("plan".to_string(), "total_pages".to_string()),
        ]
    );
}
