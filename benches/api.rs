//! The service benchmark: runs the real release binary and prints
//! - cold start: from exec to the first answer on `GET /` (as the Functions host probes it);
//! - `POST /bookings` (find-or-create) and `GET /bookings` throughput and p50/p99 latency at 64
//!   concurrent connections on the embedded store, with a real local Janus host;
//! - the server's peak RSS.
//!
//! `cargo bench --bench api` (targets on a 2-core machine: cold start < 50 ms, POST p99 < 10 ms
//! and >= 2,000 bookings/s, RSS < 50 MB). The load generator shares the machine's cores.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;

const CONCURRENCY: usize = 64;
const SECRET: &str = "bench-secret-0123456789-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(data_dir: &std::path::Path, port: u16, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_suroga"));
    cmd.arg("serve")
        .env("SUROGA_ADDR", format!("127.0.0.1:{port}"))
        .env("SUROGA_DATA_DIR", data_dir)
        .env("AUTH_HS256_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("the suroga binary starts")
}

fn wait_ready(port: u16, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < deadline, "the server did not answer GET / in {deadline:?}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn stop(mut child: Child) {
    unsafe { libc_kill(child.id() as i32, 15) };
    let _ = child.wait();
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    println!(
        "{name:<34} {:>6} requests  {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

fn token(sub: &str) -> String {
    suroga::auth::mint_dev_token(&suroga::config::Secret::new(SECRET), sub, false, "admin", ChronoDuration::hours(2), Utc::now())
}

/// Runs `per_task` requests on each of CONCURRENCY tasks; `make` builds request i of task t.
async fn load<F>(per_task: usize, make: F) -> (Vec<Duration>, Duration, usize)
where
    F: Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Send + Sync + Clone + 'static,
{
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).build().unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let (client, make) = (client.clone(), make.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                let mut failures = 0;
                for i in 0..per_task {
                    let s = Instant::now();
                    let res = make(&client, t, i).send().await.unwrap();
                    let ok = res.status().is_success();
                    let _ = res.bytes().await;
                    lat.push(s.elapsed());
                    failures += usize::from(!ok);
                }
                (lat, failures)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (lat, f) = t.await.unwrap();
        all.extend(lat);
        failures += f;
    }
    (all, start.elapsed(), failures)
}

fn main() {
    let root = std::env::temp_dir().join(format!("suroga-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    // Cold start as on Azure: static Janus hosts (nothing to launch), a fresh and an existing store.
    let static_env = [
        ("FLEET", "static"),
        ("JANUS_API_SECRET", "unused"),
        ("JANUS_TOKEN_SECRET", "unused"),
        ("JANUS_HOSTS", r#"[{"name":"j1","backend_url":"http://127.0.0.1:9/janus","public_http_url":"http://127.0.0.1:9/janus","public_ws_url":"ws://127.0.0.1:9"}]"#),
    ];
    let mut colds = Vec::new();
    for i in 0..10 {
        let dir = root.join(if i == 0 { "cold-fresh".to_string() } else { "cold".to_string() });
        let port = free_port();
        let child = spawn(&dir, port, &static_env);
        colds.push(wait_ready(port, Duration::from_secs(10)));
        stop(child);
    }
    let first = colds[0];
    colds.sort();
    println!("cold start (exec -> first GET / answer), static hosts: new store {:.1} ms, existing store median {:.1} ms, max {:.1} ms",
        first.as_secs_f64() * 1e3, colds[colds.len() / 2].as_secs_f64() * 1e3, colds.last().unwrap().as_secs_f64() * 1e3);

    // The whole local system: embedded store and a real local Janus host.
    let dir = root.join("load");
    let port = free_port();
    let started = Instant::now();
    let child = spawn(&dir, port, &[]);
    let ready = wait_ready(port, Duration::from_secs(30));
    println!("cold start with a local Janus host: {:.1} ms (launch {:?} included)", ready.as_secs_f64() * 1e3, started.elapsed() - ready);
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tokens: Vec<String> = (0..CONCURRENCY).map(|t| token(&format!("bench-user-{t}"))).collect();
        let tokens = std::sync::Arc::new(tokens);
        let day0 = Utc::now() + ChronoDuration::days(1);
        // Warm-up: connections, first rooms.
        let (t2, b2) = (tokens.clone(), base.clone());
        let _ = load(20, move |c, t, i| {
            let start = day0 + ChronoDuration::minutes(((t * 20 + i) * 60) as i64);
            c.post(format!("{b2}/api/v1/bookings")).bearer_auth(&t2[t])
                .json(&json!({"start_time": start.to_rfc3339(), "end_time": (start + ChronoDuration::minutes(45)).to_rfc3339()}))
        }).await;

        // Find-or-create: slots spread over a year, 30-90 minutes each, so rooms are both reused and created.
        let per_task = 250;
        let (t2, b2) = (tokens.clone(), base.clone());
        let (lat, wall, failures) = load(per_task, move |c, t, i| {
            let n = (t * per_task + i) as i64;
            let start = day0 + ChronoDuration::minutes((n * 7919) % (365 * 24 * 60));
            let len = 30 + (n * 31) % 61;
            c.post(format!("{b2}/api/v1/bookings")).bearer_auth(&t2[t])
                .json(&json!({"start_time": start.to_rfc3339(), "end_time": (start + ChronoDuration::minutes(len)).to_rfc3339()}))
        }).await;
        assert_eq!(failures, 0, "every booking succeeds");
        report("POST /bookings (find-or-create)", lat, wall);

        let (t2, b2) = (tokens.clone(), base.clone());
        let (lat, wall, failures) = load(300, move |c, t, _| c.get(format!("{b2}/api/v1/bookings")).bearer_auth(&t2[t])).await;
        assert_eq!(failures, 0);
        report("GET /bookings (~270 per user)", lat, wall);
    });
    println!("server peak RSS: {:.1} MB", peak_rss_mb(pid));
    stop(child);
    let _ = std::fs::remove_dir_all(&root);
}
