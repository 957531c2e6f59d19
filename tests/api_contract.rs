//! The OpenAPI contract, checked from outside: Schemathesis (PyPI, pinned by scripts/deps under
//! target/tools/schemathesis) generates requests for every operation of `/api/v1/openapi.json`
//! and sends them to the real binary (`suroga serve` on a fresh data folder, a local HS256 admin
//! token), with a fixed seed and a bounded number of examples, and checks every answer: never a
//! server error, only documented status codes, the documented content types, headers and
//! response schemas. Rate limits are off here so every request reaches its handler (429 is
//! documented on every operation and tested in tests/api_hardening.rs).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use chrono::{Duration, Utc};
use suroga::config::Secret;

const SECRET: &str = "contract-test-secret-0123456789abcdef-0123456789";

/// The checks every answer must pass (Schemathesis's names).
/// Left out: `positive_data_acceptance`, which expects every schema-valid request to pass; a
/// well-formed time in the past, a slot longer than the maximum session or a cursor the list did
/// not hand out is schema-valid and still a 400 (rules no schema can state).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,negative_data_rejection,\
                      missing_required_header,unsupported_method,ignored_auth,use_after_free,\
                      ensure_resource_availability";

/// Stops the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool() -> PathBuf {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/schemathesis/bin/schemathesis");
    assert!(st.exists(), "no Schemathesis: run scripts/deps (it installs 4.32.5 under target/tools/schemathesis)");
    st
}

/// Starts `suroga serve` on a free loopback port; returns it and its base URL.
fn serve(data: &Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_suroga"))
        .arg("serve")
        .env("SUROGA_DATA_DIR", data)
        .env("AUTH_HS256_SECRET", SECRET)
        .env("SUROGA_ADDR", "127.0.0.1:0")
        .env("RATE_LIMIT_USER_PER_MINUTE", "0")
        .env("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("suroga serve starts");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("the server says where it listens before it exits").unwrap();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if v["message"] == "Suroga Stream listening" {
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (server, format!("http://{addr}"))
}

#[test]
fn schemathesis_finds_no_undocumented_answer_on_any_operation() {
    let st = tool();
    let dir = tempfile::TempDir::new().unwrap();
    let (_server, base) = serve(&dir.path().join("data"));
    let token = suroga::auth::mint_dev_token(
        &Secret::new(SECRET),
        "contract-admin",
        true,
        "admin",
        Duration::hours(2),
        Utc::now(),
    );
    let out = Command::new(st)
        .current_dir(dir.path())
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", &base, "--checks", CHECKS])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--seed", "20261129", "--max-examples", "30", "--workers", "1", "--no-shrink"])
        .args(["--generation-database", "none", "--request-timeout", "20"])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("Tested:"), "{report}");
}
