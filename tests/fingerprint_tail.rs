//! The fingerprint table's tail file: an import that creates few users
//! next to the table's writes only their entries (`fingerprints.tail.bin`),
//! and every way of finding a user (imports, `user_index`, the real-time
//! reader) still finds all of them, across reopening, until the tail is
//! merged into the main file.

use std::path::{Path, PathBuf};

use segsync::ingest::{import_segment, Options};
use segsync::store::Store;

fn ids(dir: &Path, name: &str, ids: impl IntoIterator<Item = String>) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for id in ids {
        text.push_str(&id);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn range(prefix: &str, r: std::ops::Range<u32>) -> impl Iterator<Item = String> + '_ {
    r.map(move |i| format!("{prefix}{i}"))
}

/// Imports `ids` as the next snapshot of segment `s`.
fn import(
    store: &Store,
    dir: &Path,
    file: &str,
    list: impl IntoIterator<Item = String>,
) -> segsync::ingest::Summary {
    import_segment(store, "s", &ids(dir, file, list), &Options::default()).unwrap()
}

struct Files {
    main: PathBuf,
    tail: PathBuf,
}

impl Files {
    fn of(store: &Store) -> Files {
        Files {
            main: store.dir().join("fingerprints.bin"),
            tail: store.dir().join("fingerprints.tail.bin"),
        }
    }
}

/// Every id resolves to its user through the loaded table (a load first:
/// it rewrites a tail it could not read), the lookup in the files, and an
/// import of all of them (which must create no one).
fn all_found(store: &Store, dir: &Path, expected: &[(String, u32)]) {
    let table = store.fingerprints().unwrap();
    assert_eq!(table.len(), expected.len());
    for (id, user) in expected {
        let fp = segsync::store::Fingerprint::of(id.as_bytes());
        assert_eq!(table.lookup(fp), Some(*user), "{id}");
        assert_eq!(store.user_index(id).unwrap(), Some(*user), "{id}");
    }
    assert_eq!(store.user_index("nobody").unwrap(), None);
    let again = ids(dir, "all.txt", expected.iter().map(|(id, _)| id.clone()));
    let s = import_segment(store, "check", &again, &Options::default()).unwrap();
    assert_eq!(s.users_new, 0, "an id was not found and created again");
}

#[test]
fn few_new_users_go_to_the_tail_until_it_is_an_eighth_of_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let mut expected: Vec<(String, u32)> = Vec::new();
    let store = Store::open(&data).unwrap();
    let f = Files::of(&store);
    import(&store, dir, "first.txt", range("a", 0..2000));
    expected.extend(range("a", 0..2000).zip(0..));
    assert!(f.main.exists() && !f.tail.exists());
    let main = std::fs::read(&f.main).unwrap();

    // 100 new users among known ones: only the tail is written.
    let s = import(
        &store,
        dir,
        "next.txt",
        range("a", 0..500).chain(range("b", 0..100)),
    );
    assert_eq!(s.users_new, 100);
    expected.extend(range("b", 0..100).zip(2000..));
    assert_eq!(
        std::fs::read(&f.main).unwrap(),
        main,
        "the main file was rewritten"
    );
    assert!(f.tail.exists());
    all_found(&store, dir, &expected);

    // Reopened, the tail is read again.
    drop(store);
    let store = Store::open(&data).unwrap();
    all_found(&store, dir, &expected);

    // The tail grows while it holds at most an eighth of the main file's
    // users (250 of 2000)...
    import(&store, dir, "more.txt", range("c", 0..100));
    expected.extend(range("c", 0..100).zip(2100..));
    assert_eq!(std::fs::read(&f.main).unwrap(), main);
    all_found(&store, dir, &expected);
    // ... and past that, both become one new main file.
    import(&store, dir, "past.txt", range("d", 0..100));
    expected.extend(range("d", 0..100).zip(2200..));
    assert_ne!(std::fs::read(&f.main).unwrap(), main);
    assert!(!f.tail.exists(), "the merged tail was left behind");
    all_found(&store, dir, &expected);
}

#[test]
fn the_real_time_reader_reads_the_tail_beside_the_main_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir.join("data")).unwrap();
    let f = Files::of(&store);
    import(&store, dir, "a.txt", range("a", 0..1000));
    let main = std::fs::read(&f.main).unwrap();
    import(&store, dir, "b.txt", range("b", 0..50));
    assert!(f.tail.exists());
    let found_by = |reader: &segsync::store::TableReader, ids: &[(String, u32)]| {
        for (id, user) in ids {
            assert_eq!(
                store.find_user_with(reader, id).unwrap(),
                Some(*user),
                "{id}"
            );
        }
        assert_eq!(store.find_user_with(reader, "nobody").unwrap(), None);
    };
    let mut expected: Vec<(String, u32)> = range("a", 0..1000).zip(0..).collect();
    expected.extend(range("b", 0..50).zip(1000..));
    // Main file and tail cover every user: nothing is rewritten (at 10M
    // users the main file is 140 MB).
    let reader = store.fingerprint_reader().unwrap();
    assert_eq!(reader.covers(), 1050);
    assert_eq!(
        std::fs::read(&f.main).unwrap(),
        main,
        "the main file was rewritten"
    );
    assert!(f.tail.exists());
    found_by(&reader, &expected);

    // Users past the tail (created without a table save, as real-time
    // calls create them): the reader's refresh merges everything into the
    // main file.
    let mut txn = store.begin_import().unwrap();
    for id in range("c", 0..30) {
        let user = txn.new_user(id.as_bytes()).unwrap();
        expected.push((id, user));
    }
    txn.commit(None).unwrap();
    let reader = store.fingerprint_reader().unwrap();
    assert_eq!(reader.covers(), 1080);
    assert_ne!(std::fs::read(&f.main).unwrap(), main);
    assert!(!f.tail.exists(), "the tail is in the main file now");
    found_by(&reader, &expected);
}

#[test]
fn a_tail_that_does_not_follow_the_main_file_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let store = Store::open(&data).unwrap();
    let f = Files::of(&store);
    import(&store, dir, "a.txt", range("a", 0..1000));
    let main_1000 = std::fs::read(&f.main).unwrap();
    import(&store, dir, "b.txt", range("b", 0..50));
    let tail_1050 = std::fs::read(&f.tail).unwrap();
    // The main file brought up to 1050 users by the reader; then an old
    // tail put back beside it (a crash between writing a new main file and
    // removing the tail): it follows 1000 users, not 1050.
    store.fingerprint_reader().unwrap();
    std::fs::write(&f.tail, &tail_1050).unwrap();
    let mut expected: Vec<(String, u32)> = range("a", 0..1000).zip(0..).collect();
    expected.extend(range("b", 0..50).zip(1000..));
    all_found(&store, dir, &expected);

    // A tail ahead of the store (its users never committed) is ignored too:
    // a store of 1000 users with the main file of 1000 and that tail.
    drop(store);
    let other = dir.join("other");
    let store = Store::open(&other).unwrap();
    import(&store, dir, "a.txt", range("a", 0..1000));
    assert_eq!(
        std::fs::read(store.dir().join("fingerprints.bin")).unwrap(),
        main_1000
    );
    std::fs::write(store.dir().join("fingerprints.tail.bin"), &tail_1050).unwrap();
    let expected: Vec<(String, u32)> = range("a", 0..1000).zip(0..).collect();
    all_found(&store, dir, &expected);
    assert_eq!(store.user_index("b7").unwrap(), None);
    // And a damaged tail is read as none: its users come from the store.
    drop(store);
    let store = Store::open(&data).unwrap();
    import(&store, dir, "c.txt", range("c", 0..20));
    let mut bytes = std::fs::read(&f.tail).unwrap();
    bytes[30] ^= 0x40;
    std::fs::write(&f.tail, &bytes).unwrap();
    let mut expected: Vec<(String, u32)> = range("a", 0..1000).zip(0..).collect();
    expected.extend(range("b", 0..50).zip(1000..));
    expected.extend(range("c", 0..20).zip(1050..));
    all_found(&store, dir, &expected);
}
