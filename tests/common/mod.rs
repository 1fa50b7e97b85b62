//! Helpers shared by the integration tests: the real binary, temp data dirs,
//! small file writers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// Tiny deterministic PRNG, independent of the crate's own generator.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// A temp dir holding a data dir and input files.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write input");
        p
    }

    /// Writes `segsync.toml` into the data dir.
    pub fn config(&self, toml: &str) {
        std::fs::create_dir_all(self.data()).expect("data dir");
        std::fs::write(self.data().join("segsync.toml"), toml).expect("write config");
    }

    /// `sync create` of segment `seg` to `dest`, attribute uid, daily, plus
    /// `extra` arguments; returns the new sync's id.
    pub fn create_daily_sync(&self, dest: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "sync",
            "create",
            "--segment",
            "seg",
            "--destination",
            dest,
            "--attribute",
            "uid",
            "--every",
            "daily",
        ];
        args.extend_from_slice(extra);
        self.json(&args)["id"].to_string()
    }

    /// Runs `segsync --data-dir DATA args…`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::cargo_bin("segsync")
            .expect("binary")
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .output()
            .expect("run segsync")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "segsync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8 stdout")
    }

    /// Starts the real `segsync serve` on 127.0.0.1:0 over this data dir
    /// with `extra` arguments; returns the process and its address.
    pub fn spawn_serve(&self, extra: &[&str]) -> (std::process::Child, String) {
        use std::io::Read;
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("segsync"))
            .arg("--data-dir")
            .arg(self.data())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn serve");
        let mut out = child.stdout.take().expect("stdout");
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).expect("read") == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        let line = String::from_utf8(line).expect("utf8");
        let addr = line
            .rsplit("http://")
            .next()
            .expect("address")
            .trim()
            .to_string();
        (child, addr)
    }

    /// Runs with `--json` appended and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }
}

/// An `Authorization: Basic` header value.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {creds}")
}

/// A Personas `identify` call to a `serve` at `addr` with write key `key`.
pub async fn post_identify(
    client: &reqwest::Client,
    addr: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("http://{addr}/v1/identify"))
        .basic_auth(key, Some(""))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// One request as a test receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    /// Raw body size in bytes.
    pub bytes: usize,
    /// The raw body.
    pub raw: Vec<u8>,
    pub at: std::time::Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn page(&self) -> u64 {
        self.body["pagination"]["page_count"].as_u64().unwrap_or(0)
    }
}

/// How a scripted receiver answers: (status, extra headers, body, delay).
pub type Reply = (
    u16,
    Vec<(&'static str, String)>,
    String,
    std::time::Duration,
);

/// A real HTTP server on 127.0.0.1:0 that records every request and answers
/// as `script(request, attempt number for its idempotency key)` says.
pub struct Scripted {
    pub addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Scripted {
    pub fn start<F>(script: F) -> Scripted
    where
        F: Fn(&Seen, u32) -> Reply + Send + Sync + 'static,
    {
        use axum::response::IntoResponse;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
        let script = std::sync::Arc::new(script);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let seen2 = seen.clone();
        let handler =
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen2.clone();
                let script = script.clone();
                async move {
                    let req = Seen {
                        uri: uri.to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect(),
                        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                        bytes: body.len(),
                        raw: body.to_vec(),
                        at: std::time::Instant::now(),
                    };
                    let attempt = {
                        let mut s = seen.lock().unwrap();
                        let key = req.header("idempotency-key").map(str::to_string);
                        let n = s
                            .iter()
                            .filter(|r| r.header("idempotency-key").map(str::to_string) == key)
                            .count();
                        s.push(req.clone());
                        n as u32 + 1
                    };
                    let (status, hdrs, body, delay) = script(&req, attempt);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let mut resp =
                        (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response();
                    for (k, v) in hdrs {
                        resp.headers_mut().insert(k, v.parse().unwrap());
                    }
                    resp
                }
            };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(handler);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Scripted {
            addr,
            seen,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn ok_json() -> Reply {
    (
        200,
        vec![("content-type", "application/json".into())],
        "{\"ok\":true}".into(),
        std::time::Duration::ZERO,
    )
}

/// The one way tests seed a data dir, through the real CLI: users with a
/// `uid`, segment `seg`, destination `dest`, and optionally a daily sync.
///
/// ```ignore
/// let id = Seed::numbered(100).destination(&url, &["--page-size", "100"]).daily_sync(&[]);
/// ```
pub struct Seed {
    users: Vec<(String, Option<String>)>,
    members: Vec<String>,
    destination: Option<(String, Vec<String>)>,
}

impl Seed {
    /// `n` users `u00000`, `u00001`… with uid `uid0`, `uid1`…, all members.
    pub fn numbered(n: usize) -> Seed {
        let users: Vec<(String, Option<String>)> = (0..n)
            .map(|i| (format!("u{i:05}"), Some(format!("uid{i}"))))
            .collect();
        let members = users.iter().map(|(id, _)| id.clone()).collect();
        Seed {
            users,
            members,
            destination: None,
        }
    }

    /// These users (distinct id, uid if any) and members.
    pub fn of(users: &[(&str, Option<&str>)], members: &[&str]) -> Seed {
        Seed {
            users: users
                .iter()
                .map(|(id, uid)| (id.to_string(), uid.map(str::to_string)))
                .collect(),
            members: members.iter().map(|m| m.to_string()).collect(),
            destination: None,
        }
    }

    /// Destination `dest` at `url` with extra `destination add` arguments.
    pub fn destination(mut self, url: &str, args: &[&str]) -> Seed {
        self.destination = Some((
            url.to_string(),
            args.iter().map(|a| a.to_string()).collect(),
        ));
        self
    }

    /// Imports users, the segment and the destination into `env`.
    pub fn apply(&self, env: &Env) {
        let mut csv = String::from("distinct_id,uid\n");
        for (id, uid) in &self.users {
            csv.push_str(&format!("{id},{}\n", uid.as_deref().unwrap_or("")));
        }
        let u = env.file("users.csv", csv.as_bytes());
        env.ok(&["users", "import", path_str(&u)]);
        let s = env.file("members.txt", self.members.join("\n").as_bytes());
        env.ok(&["segment", "import", "seg", path_str(&s)]);
        if let Some((url, extra)) = &self.destination {
            let mut args = vec!["destination", "add", "dest", "--url", url];
            args.extend(extra.iter().map(String::as_str));
            env.ok(&args);
        }
    }

    /// [`Seed::apply`], then a daily sync of uid to `dest` with extra
    /// `sync create` arguments; returns the sync id.
    pub fn daily_sync(&self, env: &Env, extra: &[&str]) -> String {
        self.apply(env);
        env.create_daily_sync("dest", extra)
    }
}

/// Users with a uid, a segment of them, a destination at `url`, a periodic
/// sync of uid; returns the sync id.
pub fn setup_sync(
    env: &Env,
    users: &[(&str, Option<&str>)],
    members: &[&str],
    url: &str,
    dest_args: &[&str],
) -> String {
    Seed::of(users, members)
        .destination(url, dest_args)
        .daily_sync(env, &[])
}

/// `segsync serve` in this process on 127.0.0.1:0, over the data dir of `env`.
pub struct Served {
    pub base: String,
    /// The store `serve` holds (for the library calls a test makes meanwhile).
    pub store: std::sync::Arc<segsync::store::Store>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    pub async fn start(env: &Env, opts: segsync::server::ServeOptions) -> Served {
        let store = std::sync::Arc::new(segsync::store::Store::open(env.data()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(segsync::server::serve(
            listener,
            store.clone(),
            opts,
            async move {
                let _ = rx.await;
            },
        ));
        Served {
            base,
            store,
            stop,
            task,
        }
    }

    /// With the scheduler looking every `tick`.
    pub async fn with_tick(env: &Env, tick: std::time::Duration) -> Served {
        let opts = segsync::server::ServeOptions {
            tick,
            ..Default::default()
        };
        Served::start(env, opts).await
    }

    /// Shuts down gracefully and waits until the store is released.
    pub async fn stop(self) {
        let Served {
            store, stop, task, ..
        } = self;
        drop(store);
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}

/// One JSON request: (status, body parsed as JSON, or the text as a string).
pub async fn call(
    c: &reqwest::Client,
    method: &str,
    url: String,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    call_as(c, method, url, None, body).await
}

/// [`call`] with `Authorization: Bearer <token>` when a token is given.
pub async fn call_as(
    c: &reqwest::Client,
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = c.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&b).unwrap());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
