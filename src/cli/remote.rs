//! The CLI as a client of a running `segsync serve`. While `serve` holds a
//! data dir it writes where it listens, and a token for this machine's
//! CLI, into `<data-dir>/serve.json` (readable by its owner only); a
//! command on that data dir then goes through the API, with the same
//! output, `--json` shape and exit code as when it opens the store itself.
//! `--server URL` (or `SEGSYNC_SERVER`, with `SEGSYNC_TOKEN`) points the
//! CLI at a remote `serve`.
//!
//! How: `serve` runs the very same command code against its store and
//! sends back what it printed and its exit code (`POST /api/v1/commands`),
//! so the two modes cannot drift apart. Two kinds of command go through the
//! resource endpoints instead: runs (`sync run`, `resync-all`,
//! `resync-last`: `serve` executes them on its own threads, where an
//! archive or a shutdown can stop them, and the client follows the
//! execution until it ends) and imports (the file is on the client's side:
//! it is streamed to the upload endpoints).

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::users::ImportArgs;
use super::{Args, Command};
use crate::error::{Classify, Fault};
use crate::lifecycle::ExecutionRecord;
use crate::server::CommandOutput;

/// The file `serve` writes into the data dir it holds.
pub(crate) const SERVE_FILE: &str = "serve.json";

/// What `serve.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServeFile {
    /// Where the API listens (`http://127.0.0.1:8080`).
    pub(crate) url: String,
    /// A token for this machine's CLI, valid while that process runs.
    pub(crate) token: String,
    /// The server's process id.
    pub(crate) pid: u32,
}

/// A server to send commands to.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    base: String,
    token: Option<String>,
}

/// A refusal or failure reported by the server, with its status's fault.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    message: String,
    fault: Fault,
}

impl Classify for RemoteError {
    fn fault(&self) -> Fault {
        self.fault
    }
}

/// A command the server ran ended with this exit code; what it printed was
/// printed already.
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct Exit(pub i32);

impl Classify for Exit {
    /// Only its code matters (`exit_code` reads it); the fault is nominal.
    fn fault(&self) -> Fault {
        Fault::Internal
    }
}

fn fault_of_status(status: u16) -> Fault {
    match status {
        400 | 413 => Fault::BadInput,
        401 | 403 | 409 => Fault::Conflict,
        404 => Fault::NotFound,
        429 => Fault::Limit,
        _ => Fault::Internal,
    }
}

/// The server this invocation should use, if any: `--server`, or a live
/// `serve` holding the data dir.
pub(crate) fn target(args: &Args) -> Option<Remote> {
    if let Some(url) = &args.server {
        return Some(Remote {
            base: url.trim_end_matches('/').to_string(),
            token: std::env::var("SEGSYNC_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        });
    }
    let text = std::fs::read_to_string(args.data_dir.join(SERVE_FILE)).ok()?;
    let file: ServeFile = serde_json::from_str(&text).ok()?;
    let remote = Remote {
        base: file.url,
        token: Some(file.token),
    };
    // A file left by a `serve` that was killed points nowhere: open the
    // store directly then.
    remote.alive().then_some(remote)
}

impl Remote {
    fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?)
    }

    fn alive(&self) -> bool {
        let Ok(rt) = Remote::runtime() else {
            return false;
        };
        let url = format!("{}/healthz", self.base);
        rt.block_on(async {
            let client = reqwest::Client::new();
            client
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let r = client.request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// `GET /api/v1{path}`, blocking.
    pub(crate) fn get_blocking(&self, path: &str) -> anyhow::Result<Value> {
        let rt = Remote::runtime()?;
        let client = reqwest::Client::new();
        rt.block_on(self.send(self.request(&client, reqwest::Method::GET, path)))
    }

    /// Sends a request; a status of 400 and up becomes a [`RemoteError`].
    async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = r
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach segsync serve at {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let message = body["error"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_string);
            return Err(RemoteError {
                message,
                fault: fault_of_status(status),
            }
            .into());
        }
        Ok(body)
    }
}

/// The arguments after `segsync`, without the options that only matter
/// here (`--data-dir`, `--server`).
fn forwarded_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--data-dir" || a == "--server" {
            it.next();
        } else if !a.starts_with("--data-dir=") && !a.starts_with("--server=") {
            out.push(a);
        }
    }
    out
}

/// Runs `args` through `remote`.
pub(crate) fn run(remote: &Remote, args: &Args) -> anyhow::Result<()> {
    use super::segment::SegmentCmd;
    use super::sync::SyncCmd;
    use super::users::UsersCmd;
    let rt = Remote::runtime()?;
    let client = reqwest::Client::new();
    match &args.command {
        Command::Sync(SyncCmd::Run { id, json }) => {
            rt.block_on(run_sync(remote, &client, *id, "run", *json))
        }
        Command::Sync(SyncCmd::ResyncAll { id, json }) => {
            rt.block_on(run_sync(remote, &client, *id, "resync-all", *json))
        }
        Command::Sync(SyncCmd::ResyncLast { id, json }) => {
            rt.block_on(run_sync(remote, &client, *id, "resync-last", *json))
        }
        Command::Sync(SyncCmd::Replay {
            execution: (id, seq),
            json,
        }) => rt.block_on(run_sync(
            remote,
            &client,
            *id,
            &format!("executions/{seq}/replay"),
            *json,
        )),
        Command::Segment(SegmentCmd::Import { name, args }) => rt.block_on(import(
            remote,
            &client,
            &format!("/segments/{name}/snapshots"),
            args,
        )),
        Command::Users(UsersCmd::Import(a)) => {
            rt.block_on(import(remote, &client, "/users/import", a))
        }
        _ => {
            let body = json!({ "args": forwarded_args() });
            let v = rt.block_on(
                remote.send(
                    remote
                        .request(&client, reqwest::Method::POST, "/commands")
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_string()),
                ),
            )?;
            let out: CommandOutput = serde_json::from_value(v)?;
            use std::io::Write;
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            let _ = std::io::stdout().flush();
            if out.exit_code == 0 {
                Ok(())
            } else {
                Err(Exit(out.exit_code).into())
            }
        }
    }
}

/// Starts a run on the server and follows its execution until it ends,
/// then reports it as `sync run` does.
async fn run_sync(
    remote: &Remote,
    client: &reqwest::Client,
    id: u32,
    action: &str,
    json: bool,
) -> anyhow::Result<()> {
    let started = remote
        .send(remote.request(
            client,
            reqwest::Method::POST,
            &format!("/syncs/{id}/{action}"),
        ))
        .await?;
    let seq = started["execution"].as_u64().unwrap_or(0);
    if let Some(note) = started["note"].as_str() {
        eprintln!("note: {note}");
    }
    loop {
        let all = remote
            .send(remote.request(
                client,
                reqwest::Method::GET,
                &format!("/syncs/{id}/executions"),
            ))
            .await?;
        let found = all
            .as_array()
            .and_then(|a| a.iter().find(|e| e["seq"].as_u64() == Some(seq)))
            .cloned();
        if let Some(e) = found {
            let e: ExecutionRecord = serde_json::from_value(e)?;
            if e.status != crate::lifecycle::ExecStatus::Processing {
                return super::sync::report_run(&e, json);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes read from the file per chunk of an upload. `Body::from(File)`
/// reads 4 KB at a time, each read a hop to tokio's blocking pool: a 10M-id
/// snapshot took 5.1 s through `serve` against 1.7 s sent by `curl`.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Streams a file to an upload endpoint and prints the summary as a local
/// import does (messages name the local file, not the upload).
async fn import(
    remote: &Remote,
    client: &reqwest::Client,
    path: &str,
    a: &ImportArgs,
) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(&a.file)
        .await
        .map_err(|e| RemoteError {
            message: format!("{}: {e}", a.file.display()),
            fault: Fault::BadInput,
        })?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let lookups = clap::ValueEnum::to_possible_value(&a.lookups)
        .ok_or_else(|| anyhow::anyhow!("--lookups {:?} has no name", a.lookups))?;
    let r = remote
        .request(client, reqwest::Method::POST, path)
        .query(&[
            ("id_column", a.id_column.as_str()),
            (
                "skip_invalid",
                if a.skip_invalid { "true" } else { "false" },
            ),
            // Messages and the snapshot's record name the file, as locally.
            ("source", &a.file.display().to_string()),
            // The server chooses how to look ids up by the upload's size.
            ("size", &size.to_string()),
            ("lookups", lookups.get_name()),
        ])
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK),
        ));
    let v = remote.send(r).await?;
    let s: crate::ingest::Summary = serde_json::from_value(v)?;
    super::users::print_summary(&s, a.json)
}

/// Writes `serve.json` into `data_dir` (readable by its owner only).
pub(crate) fn write_serve_file(data_dir: &Path, file: &ServeFile) -> std::io::Result<()> {
    use std::io::Write;
    let path = data_dir.join(SERVE_FILE);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    f.write_all(serde_json::to_string_pretty(file)?.as_bytes())?;
    Ok(())
}

/// Runs one command for a client of `serve`: parsed as the CLI parses it,
/// refused if it cannot or may not run there, its output captured.
pub(crate) fn run_for_client(
    argv: Vec<String>,
    store: std::sync::Arc<crate::store::Store>,
    read_only: bool,
) -> CommandOutput {
    let fail = |stderr: String, exit_code: i32| CommandOutput {
        stdout: String::new(),
        stderr,
        exit_code,
    };
    let args = match Args::try_parse_from(std::iter::once("segsync".to_string()).chain(argv)) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let text = e.render().to_string();
            return if code == 0 {
                CommandOutput {
                    stdout: text,
                    stderr: String::new(),
                    exit_code: 0,
                }
            } else {
                fail(text, code)
            };
        }
    };
    if !super::uses_store(&args.command) {
        return fail(
            "error: this command does not run through a server; run it without --server\n".into(),
            2,
        );
    }
    if read_only && !super::reads_only(&args.command) {
        return fail(
            "error: this token is a viewer: it may only run commands that read\n".into(),
            2,
        );
    }
    let (result, stdout, mut stderr) = super::output::capture(store, || super::run_local(args));
    let exit_code = match &result {
        Ok(()) => 0,
        Err(e) => {
            stderr.push_str(&format!("error: {e:#}\n"));
            super::exit_code(e)
        }
    };
    CommandOutput {
        stdout,
        stderr,
        exit_code,
    }
}
