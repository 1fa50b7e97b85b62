//! `segsync bench`'s real-time figures: `serve`'s Personas endpoints on
//! the bench store, loaded from this process over loopback HTTP the way an
//! event source would — single identify calls from 32 connections as fast
//! as they are answered, then batches, then single calls at half the
//! measured rate on a fixed schedule, through a pool of as many
//! connections, for the latency a source sees when the server is not
//! saturated.
//!
//! Half the calls update users the store has, half create new ones; last,
//! the batches run again with new users only. The
//! load runs on a runtime of its own, so it competes with the server for
//! the machine's cores as an outside load generator on the same machine
//! would, and speaks HTTP/1.1 over plain keep-alive connections as `wrk`
//! does (see [`Conn`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::server::{serve, ServeOptions};
use crate::store::Store;

/// Concurrent connections of the single-call phases.
pub const CONNECTIONS: usize = 32;
/// Events per batch call.
const BATCH_EVENTS: usize = 100;
/// Connections of the batch phase.
const BATCH_CONNECTIONS: usize = 8;

/// The real-time figures.
#[derive(Debug, Serialize)]
pub struct Personas {
    /// Single identify calls answered per second, 32 connections.
    pub identify_per_s: f64,
    /// Their median and 99th percentile latency (saturated).
    pub identify_p50_ms: f64,
    /// 99th percentile at saturation.
    pub identify_p99_ms: f64,
    /// Events per second in batch calls of 100, half of them for random
    /// users the store has.
    pub batch_events_per_s: f64,
    /// The same with every event for a new user (what an event source
    /// sending sign-ups looks like; no old values to read).
    pub batch_new_events_per_s: f64,
    /// The rate of the half-load phase (calls per second offered).
    pub half_load_per_s: f64,
    /// Median latency at half load, from each call's scheduled time.
    pub half_load_p50_ms: f64,
    /// 99th percentile latency at half load.
    pub half_load_p99_ms: f64,
    /// 99th percentile at half load of the time from sending a call to its
    /// answer (without the wait for a free connection).
    pub half_load_answer_p99_ms: f64,
    /// Calls per synced write (group commit), over all phases.
    pub calls_per_commit: f64,
    /// Seconds each phase lasted.
    pub seconds_per_phase: f64,
    /// Seconds waited first for RocksDB's compactions of the bench's bulk
    /// loads to end (the figures are the steady state).
    pub waited_for_compactions_s: f64,
}

struct Load {
    addr: std::net::SocketAddr,
    /// Users the store has: calls for `known` update them.
    known: u64,
    next_new: AtomicU64,
    /// The first call number of the running phase, and one past the last
    /// used: each phase's calls go to known users no earlier phase touched
    /// (a call number picks the user and its trait values). When every
    /// phase counted from 0, the half-load phase re-sent the identify
    /// phase's calls: values unchanged, nothing to write, and every old
    /// value read from the memtable those calls had just filled.
    base: AtomicU64,
    used: AtomicU64,
}

impl Load {
    fn new(addr: std::net::SocketAddr, known: u64, first_new: u64) -> Load {
        Load {
            addr,
            known,
            next_new: AtomicU64::new(first_new),
            base: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    /// Starts a phase after every call number used so far (even, so that
    /// call parity still splits known users from new ones).
    fn next_phase(&self) {
        let used = self.used.load(Ordering::Relaxed);
        self.base.store(used + (used & 1), Ordering::Relaxed);
    }

    fn body(&self, k: u64) -> String {
        let k = self.base.load(Ordering::Relaxed) + k;
        self.used.fetch_max(k + 1, Ordering::Relaxed);
        crate::fixtures::identify_body(k, self.known, || {
            self.next_new.fetch_add(1, Ordering::Relaxed)
        })
    }
}

/// One keep-alive HTTP/1.1 connection that speaks just enough of the
/// protocol for the bench's calls, as `wrk` does: the request written from
/// one reused buffer, the reply read by its `Content-Length`. Through
/// reqwest (a request object, header maps and a pool checkout per call)
/// the load took so much of the two cores it shares with the server that
/// the bench measured half of what `wrk` did on the same store (10.9K
/// identify calls/s against 22.2K, the same day; 17.2–22.7K this way).
struct Conn {
    stream: tokio::net::TcpStream,
    out: Vec<u8>,
    input: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            out: Vec::with_capacity(16 << 10),
            input: Vec::with_capacity(4 << 10),
        })
    }

    /// POSTs `body` to `path` with the bench's write key; an answer other
    /// than 2xx is an error that quotes it.
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<()> {
        use std::io::Write;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.out.clear();
        write!(
            self.out,
            "POST {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Basic {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            basic_auth(),
            body.len()
        )?;
        self.out.extend_from_slice(body.as_bytes());
        self.stream.write_all(&self.out).await?;
        loop {
            if let Some(reply) = parse_reply(&self.input)? {
                let ok = (200..300).contains(&reply.status);
                if !ok {
                    let text =
                        String::from_utf8_lossy(&self.input[reply.body.clone()]).into_owned();
                    anyhow::bail!("{path} answered {}: {text}", reply.status);
                }
                self.input.drain(..reply.body.end);
                return Ok(());
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                anyhow::bail!("{path}: the server closed the connection before its reply");
            }
        }
    }
}

/// `Basic` credentials of the bench's write key.
fn basic_auth() -> &'static str {
    static AUTH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AUTH.get_or_init(crate::fixtures::bench_basic_auth)
}

/// A whole reply at the front of a buffer.
#[derive(Debug, PartialEq)]
struct Reply {
    status: u16,
    /// Where its body lies in the buffer.
    body: std::ops::Range<usize>,
}

/// The reply at the front of `input`, `None` until it has all arrived.
/// Only `Content-Length` bodies: the server's JSON answers have one.
fn parse_reply(input: &[u8]) -> anyhow::Result<Option<Reply>> {
    let Some(head_end) = memchr::memmem::find(input, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&input[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP reply: {status_line:?}"))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            anyhow::bail!(
                "a reply in transfer encoding {:?}: the bench reads Content-Length bodies only",
                value.trim()
            );
        }
    }
    let start = head_end + 4;
    let end = start + length.unwrap_or(0);
    Ok((input.len() >= end).then_some(Reply {
        status,
        body: start..end,
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Closed loop: `conns` connections each sending as soon as answered.
/// Returns calls per second and the sorted latencies (ms).
async fn saturate(
    load: &Arc<Load>,
    conns: usize,
    secs: f64,
    batch: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    load.next_phase();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let load = load.clone();
            tokio::spawn(async move {
                let mut conn = Conn::open(load.addr).await?;
                let mut lat = Vec::new();
                let mut k = c as u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    if batch == 0 {
                        conn.post("/v1/identify", &load.body(k)).await?;
                    } else {
                        let body = crate::fixtures::batch_body(
                            (0..batch as u64).map(|i| load.body(k * batch as u64 + i)),
                        );
                        conn.post("/v1/batch", &body).await?;
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    k += conns as u64;
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all.len() as f64 / secs, all))
}

/// Latencies of an open-loop phase, sorted (ms).
struct Timed {
    /// From the time each call was due: what the source sees.
    from_due: Vec<f64>,
    /// From the time each call was sent to its answer: the server's part.
    answer: Vec<f64>,
}

/// Open loop at `rate` calls/s through a pool of `conns` connections, as
/// an event source's HTTP client sends: each call is due at its time and
/// goes out on whichever connection is free (a connection takes the next
/// due call as soon as its previous one is answered). Latency runs from
/// the time a call was due, so a stall shows in full (no coordinated
/// omission), including the wait for a free connection; the answer time
/// (sent to answered) is kept apart. With a connection of its own per slot
/// instead (call `i` on connection `i mod conns`), one slow answer held
/// back that connection's next calls while others sat idle.
async fn at_rate(load: &Arc<Load>, conns: usize, rate: f64, secs: f64) -> anyhow::Result<Timed> {
    load.next_phase();
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now() + Duration::from_millis(20);
    let total = (secs * rate).ceil() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (load, next) = (load.clone(), next.clone());
            tokio::spawn(async move {
                let mut conn = Conn::open(load.addr).await?;
                let expected = (total / conns as u64 * 2) as usize;
                let mut from_due = Vec::with_capacity(expected);
                let mut answer = Vec::with_capacity(expected);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let due = start + period.mul_f64(i as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let sent = Instant::now();
                    conn.post("/v1/identify", &load.body(i)).await?;
                    from_due.push(due.elapsed().as_secs_f64() * 1000.0);
                    answer.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::Ok((from_due, answer))
            })
        })
        .collect();
    let mut timed = Timed {
        from_due: Vec::new(),
        answer: Vec::new(),
    };
    for t in tasks {
        let (from_due, answer) = t.await??;
        timed.from_due.extend(from_due);
        timed.answer.extend(answer);
    }
    timed.from_due.sort_by(f64::total_cmp);
    timed.answer.sort_by(f64::total_cmp);
    Ok(timed)
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Pauses the store's active syncs, so `serve`'s scheduler, which looks
/// for due runs as it starts, does not run the bench's syncs (their daily
/// slot is due: they were run by hand, not by a scheduler) on the cores
/// the Personas load is measured on — one of them against a receiver the
/// bench has already stopped, retrying all through the phases.
fn pause_syncs(store: &Store) -> anyhow::Result<()> {
    use crate::lifecycle::rules::Action;
    use crate::store::{SyncRecord, SyncStatus};
    for s in SyncRecord::all(store)? {
        if s.status == SyncStatus::Active {
            crate::lifecycle::actions::set_status(
                store,
                s.id,
                Action::Pause,
                chrono::Utc::now(),
                "bench",
            )?;
        }
    }
    Ok(())
}

/// Runs the three phases against `serve` on `store`, `secs` seconds each.
pub(crate) fn run(store: Arc<Store>, known: u64, secs: f64) -> anyhow::Result<Personas> {
    crate::inbound::add_write_key(&store, "bench", crate::fixtures::BENCH_WRITE_KEY)?;
    pause_syncs(&store)?;
    let waited = store.wait_for_background_work(Duration::from_secs(120));
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions {
        tick: Duration::from_secs(3600),
        ..Default::default()
    };
    let server = server_rt.spawn(serve(listener, store, opts, async move {
        let _ = stop_rx.await;
    }));

    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load = Arc::new(Load::new(addr, known, 0));
    let result = load_rt.block_on(async {
        // Warm the connections and the store's caches.
        saturate(&load, CONNECTIONS, secs.min(1.0), 0).await?;
        let (identify_per_s, lat) = saturate(&load, CONNECTIONS, secs, 0).await?;
        let (batches_per_s, _) = saturate(&load, BATCH_CONNECTIONS, secs, BATCH_EVENTS).await?;
        let half = identify_per_s / 2.0;
        let half_lat = at_rate(&load, CONNECTIONS, half, secs).await?;
        // Last: its new users (about 850K at 10M) bring the committer to
        // its table refresh (every 1M users created), whose stall would
        // otherwise fall into the half-load phase's few seconds. Ids of
        // their own, far above the first load's.
        let new_only = Arc::new(Load::new(addr, 0, 1 << 40));
        let (new_batches_per_s, _) =
            saturate(&new_only, BATCH_CONNECTIONS, secs, BATCH_EVENTS).await?;
        let metrics = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let commits = counter(&metrics, "segsync_personas_commits_total");
        let calls = counter(&metrics, "segsync_personas_requests_total");
        anyhow::Ok(Personas {
            identify_per_s,
            identify_p50_ms: percentile(&lat, 0.5),
            identify_p99_ms: percentile(&lat, 0.99),
            batch_events_per_s: batches_per_s * BATCH_EVENTS as f64,
            batch_new_events_per_s: new_batches_per_s * BATCH_EVENTS as f64,
            half_load_per_s: half,
            half_load_p50_ms: percentile(&half_lat.from_due, 0.5),
            half_load_p99_ms: percentile(&half_lat.from_due, 0.99),
            half_load_answer_p99_ms: percentile(&half_lat.answer, 0.99),
            calls_per_commit: calls / commits.max(1.0),
            seconds_per_phase: secs,
            waited_for_compactions_s: waited.as_secs_f64(),
        })
    });
    let _ = stop_tx.send(());
    server_rt.block_on(server)??;
    result
}

/// Prints the figures as `segsync bench` lines.
pub(crate) fn print(p: &Personas) {
    println!(
        "personas identify, {CONNECTIONS} conns  {:.0} calls/s (p50 {:.2} ms, p99 {:.2} ms; {:.1} calls per synced write)",
        p.identify_per_s, p.identify_p50_ms, p.identify_p99_ms, p.calls_per_commit
    );
    println!(
        "personas batch of {BATCH_EVENTS}        {:.0} events/s (half for known users), {:.0} events/s (new users only)",
        p.batch_events_per_s, p.batch_new_events_per_s
    );
    println!(
        "personas at half load         {:.0} calls/s offered: p50 {:.2} ms, p99 {:.2} ms from the time due, answered in p99 {:.2} ms (after {:.1} s waiting for compactions)",
        p.half_load_per_s,
        p.half_load_p50_ms,
        p.half_load_p99_ms,
        p.half_load_answer_p99_ms,
        p.waited_for_compactions_s
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_calls_known_users_no_earlier_phase_called() {
        let load = Load::new(([127, 0, 0, 1], 9).into(), 1_000_000, 0);
        let user = |body: &str| {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["userId"].as_str().unwrap().to_string()
        };
        let phase = |n: u64| -> Vec<String> {
            load.next_phase();
            (0..n).map(|k| user(&load.body(k))).collect()
        };
        // An odd count, so the next phase must realign to even numbers.
        let first = phase(1001);
        let second = phase(500);
        let known = |ids: &[String]| -> std::collections::HashSet<String> {
            ids.iter()
                .filter(|id| !id.starts_with("rt-"))
                .cloned()
                .collect()
        };
        let (a, b) = (known(&first), known(&second));
        assert_eq!(a.len(), 501, "every even call is a known user, once");
        assert_eq!(b.len(), 250);
        assert!(
            a.is_disjoint(&b),
            "a phase re-sent an earlier phase's users"
        );
        // Parity still picks known users: call 0 of each phase is known.
        assert!(!second[0].starts_with("rt-") && second[1].starts_with("rt-"));
    }

    #[test]
    fn replies_are_read_whole_by_their_length_and_one_at_a_time() {
        let one = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
        // Not yet whole: in the head, and in the body.
        assert_eq!(parse_reply(&one[..30]).unwrap(), None);
        assert_eq!(parse_reply(&one[..one.len() - 1]).unwrap(), None);
        let whole = parse_reply(one).unwrap().unwrap();
        assert_eq!(whole.status, 200);
        assert_eq!(&one[whole.body.clone()], b"{\"ok\":true}");
        // Two back to back: the first, then (after it is consumed) the second.
        let two = [
            &one[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad",
        ]
        .concat();
        let first = parse_reply(&two).unwrap().unwrap();
        assert_eq!(first, whole);
        let second = parse_reply(&two[first.body.end..]).unwrap().unwrap();
        assert_eq!(second.status, 400);
        assert_eq!(&two[first.body.end..][second.body.clone()], b"bad");
        // No length: no body.
        let empty = parse_reply(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1").unwrap();
        assert_eq!(empty.map(|r| r.body), Some(27..27));
    }

    #[test]
    fn what_the_bench_client_cannot_read_is_an_error() {
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_reply(b"garbage\r\n\r\n").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }
}
