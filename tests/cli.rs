//! The CLI helpers on a fresh data folder: `suroga token`, `suroga plan`, `suroga functions export`.

use std::process::Command;

fn suroga(data_dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_suroga"))
        .args(args)
        .env("SUROGA_DATA_DIR", data_dir)
        .env_remove("AUTH_HS256_SECRET")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn token_mints_a_token_the_service_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, token, err) = suroga(dir.path(), &["token", "--sub", "alice", "--admin", "--ttl", "2h"]);
    assert!(ok, "{err}");
    let env = std::collections::HashMap::from([("SUROGA_DATA_DIR".to_string(), dir.path().display().to_string())]);
    let config = suroga::config::Config::from_map(&env).unwrap();
    let auth = suroga::auth::Authenticator::new(&config.auth, &config.data_dir, reqwest::Client::new()).unwrap();
    let caller = auth.authenticate(Some(&format!("Bearer {}", token.trim()))).await.unwrap();
    assert_eq!(caller.user, "alice");
    assert!(caller.admin);
    let (ok, _, err) = suroga(dir.path(), &["token", "--sub", "bob", "--ttl", "soon"]);
    assert!(!ok && err.contains("ttl") || err.contains("time to live"), "{err}");
}

#[test]
fn plan_prints_a_week_for_the_local_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = suroga(dir.path(), &["plan"]);
    assert!(ok, "{err}");
    assert!(out.contains("Janus host plan") && out.contains("local-1") && out.contains("VM-hours"), "{out}");
    let (ok, _, err) = suroga(dir.path(), &["plan", "--days", "90"]);
    assert!(!ok && err.contains("--days"), "{err}");
}

#[test]
fn functions_export_writes_what_handlers_holds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("handlers");
    let (ok, _, err) = suroga(dir.path(), &["functions", "export", "--dir", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut repo: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/handlers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    repo.sort();
    assert_eq!(names, repo);
}

#[test]
fn a_placeholder_token_secret_is_refused_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // The value local.settings.json.example once carried.
    let placeholder = "local-only-placeholder-replace-me-with-32-random-bytes";
    for args in [&["serve"][..], &["token", "--sub", "alice"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_suroga"))
            .args(args)
            .env("SUROGA_DATA_DIR", dir.path())
            .env("SUROGA_ADDR", "127.0.0.1:0")
            .env("AUTH_HS256_SECRET", placeholder)
            .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started with a placeholder secret");
        assert!(err.contains("AUTH_HS256_SECRET") && err.contains("placeholder"), "{args:?}: {err}");
        assert!(!err.contains(placeholder), "the value is not echoed: {err}");
    }
}
