//! A standard OpenAPI fuzzer (schemathesis, installed by the Makefile's deps
//! step from PyPI) against the real `segsync serve` and the OpenAPI document
//! it serves: no request it generates gets a 5xx, and every status
//! answered is documented. A fixed seed keeps the run repeatable.

mod common;

use common::Env;

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_status() {
    let env = Env::new();
    let users = env.file("u.csv", b"distinct_id,uid\na,1\nb,2\n");
    env.ok(&["users", "import", users.to_str().unwrap()]);
    let snap = env.file("s.txt", b"a\nb\n");
    env.ok(&["segment", "import", "seg", snap.to_str().unwrap()]);
    env.ok(&["destination", "add", "d", "--url", "http://127.0.0.1:9/"]);
    let (mut child, addr) = env.spawn_serve(&["--tick-ms", "3600000"]);
    let base = format!("http://{addr}");
    let out = std::process::Command::new("schemathesis")
        .args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--url",
            &base,
        ])
        .args(["--checks", "not_a_server_error,status_code_conformance"])
        .args(["--max-examples", "25", "--request-timeout", "10"])
        .args(["--seed", "20261129", "--no-color"])
        // Running CLI commands and testing connections are not for a fuzzer.
        .args(["--exclude-path", "/api/v1/commands"])
        .args(["--exclude-path-regex", "[-/]test$"])
        // Its cache (`.schemathesis/`) goes into the test's directory.
        .current_dir(env.data().parent().unwrap())
        .output()
        .expect("schemathesis runs (the Makefile installs it)");
    child.kill().unwrap();
    child.wait().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("Tested"), "{report}");
}
