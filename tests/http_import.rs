//! Bulk imports over HTTP, streamed into the real `segsync serve`: a 1M-id
//! gzip snapshot lands exactly like the same file imported from disk; a bad
//! line at line 500000 answers 400 naming the line and leaves the segment
//! as it was; a users CSV imports too; `serve`'s peak memory stays within
//! its budget; and the Personas endpoints take gzip bodies.

mod common;

use std::io::Write;

use common::Env;
use serde_json::Value;

const IDS: usize = 1_000_000;
/// `serve`'s peak RSS budget during a 1M-id upload.
const RSS_BUDGET_KB: u64 = 300 * 1024;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn ids(n: usize, bad_at: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 9);
    for i in 1..=n {
        if Some(i) == bad_at {
            // An empty id: refused with its line number.
            out.extend_from_slice(b"\n");
        } else {
            out.extend_from_slice(format!("u{i:07}\n").as_bytes());
        }
    }
    out
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>, gz: bool) -> (u16, Value) {
    let mut r = client.post(url).body(body);
    if gz {
        r = r.header("content-encoding", "gzip");
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    let text = client.get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_id_gzip_snapshot_streams_in_atomically() {
    // The same file through the CLI, as the reference.
    let reference = Env::new();
    let file = reference.file("snap.txt.gz", &gzip(&ids(IDS, None)));
    let by_file = reference.json(&["segment", "import", "seg", file.to_str().unwrap()]);

    let env = Env::new();
    let (mut child, addr) = env.spawn_serve(&[]);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let base = format!("http://{addr}/api/v1");

    let (status, v) = post(
        &client,
        &format!("{base}/segments/seg/snapshots"),
        gzip(&ids(IDS, None)),
        true,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["members"], by_file["members"]);
    assert_eq!(v["users_new"], IDS as u64);
    assert_eq!(
        (v["format"].as_str(), v["file"].as_str()),
        (Some("id-list"), Some("upload"))
    );
    let seg = get(&client, &format!("{base}/segments/seg")).await;
    assert_eq!(seg["snapshots"].as_array().map(Vec::len), Some(1), "{seg}");

    // A bad line half way: 400 naming it, and the segment unchanged.
    let (status, v) = post(
        &client,
        &format!("{base}/segments/seg/snapshots"),
        gzip(&ids(IDS, Some(500_000))),
        true,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("upload:500000:"), "{msg}");
    let after = get(&client, &format!("{base}/segments/seg")).await;
    assert_eq!(after, seg, "nothing of the refused upload is visible");

    // Uncompressed works too, and a users CSV with attributes.
    let small: Vec<u8> = (1..=1000)
        .flat_map(|i| format!("u{i:07}\n").into_bytes())
        .collect();
    let (status, v) = post(
        &client,
        &format!("{base}/segments/seg/snapshots"),
        small,
        false,
    )
    .await;
    assert_eq!((status, v["members"].as_u64()), (200, Some(1000)), "{v}");
    let users = b"distinct_id,uid,plan\nu0000001,A1,gold\nu0000002,A2,free\n".to_vec();
    let (status, v) = post(&client, &format!("{base}/users/import"), users, false).await;
    assert_eq!(
        (status, v["attributes_set"].as_u64()),
        (200, Some(4)),
        "{v}"
    );
    let (status, v) = post(
        &client,
        &format!("{base}/users/import"),
        b"just-an-id\n".to_vec(),
        false,
    )
    .await;
    assert_eq!(status, 400, "a users upload needs a header: {v}");

    // Ids looked up in the table's file (as the CLI asks for a file small
    // next to the store, sending its size): the known user is found, the
    // new one created once, and a load of the table afterwards agrees.
    let update = b"distinct_id,plan\nu0000002,gold\nu9999999,free\n".to_vec();
    for (query, new, known) in [("lookups=file&size=47", 1, 1), ("lookups=memory", 0, 2)] {
        let (status, v) = post(
            &client,
            &format!("{base}/users/import?{query}"),
            update.clone(),
            false,
        )
        .await;
        assert_eq!(
            (status, v["users_new"].as_u64(), v["users_known"].as_u64()),
            (200, Some(new), Some(known)),
            "{query}: {v}"
        );
    }
    let (status, v) = post(
        &client,
        &format!("{base}/users/import?lookups=sideways"),
        update,
        false,
    )
    .await;
    assert_eq!(status, 400, "an unknown lookups value: {v}");

    let rss = peak_rss_kb(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("serve peak RSS during the uploads: {} MB", rss / 1024);
    assert!(rss < RSS_BUDGET_KB, "serve peaked at {} MB", rss / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personas_endpoints_take_gzip_bodies() {
    let env = Env::new();
    env.ok(&["writekey", "add", "web", "--key", "wk-0123456789"]);
    let (mut child, addr) = env.spawn_serve(&[]);
    let client = reqwest::Client::new();
    let body = br#"{"batch":[{"type":"identify","userId":"p1","traits":{"vip":true}},{"type":"identify","userId":"p2","traits":{"vip":true}}]}"#;
    let resp = client
        .post(format!("http://{addr}/v1/batch"))
        .basic_auth("wk-0123456789", Some(""))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    let resp = client
        .post(format!("http://{addr}/v1/identify"))
        .basic_auth("wk-0123456789", Some(""))
        .header("content-encoding", "gzip")
        .body(b"not gzip at all".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let seg = get(&client, &format!("http://{addr}/api/v1/segments/vip")).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seg["snapshots"].as_array().is_some(), "{seg}");
}
