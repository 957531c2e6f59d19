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
    suroga::auth::mint_dev_token(
        &suroga::config::Secret::new(SECRET),
        sub,
        false,
        "admin",
        ChronoDuration::hours(2),
        Utc::now(),
    )
}

/// One request as raw HTTP/1.1 bytes. The load generator writes prepared bytes on keep-alive
/// connections so that it costs the shared cores as little as possible.
fn request(method: &str, path: &str, token: &str, body: Option<&serde_json::Value>) -> Vec<u8> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n");
    if !body.is_empty() {
        r += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    r += "\r\n";
    r += &body;
    r.into_bytes()
}

/// Sends `req` on `conn` and reads the whole response; returns the status code.
async fn exchange(conn: &mut tokio::net::TcpStream, req: &[u8], buf: &mut Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(req).await.unwrap();
    buf.clear();
    let mut chunk = [0u8; 16384];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = std::str::from_utf8(&buf[..head_end]).unwrap();
        let status: u16 = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        if buf.len() >= head_end + 4 + len {
            return status;
        }
    }
}

/// Runs `per_task` requests on each of CONCURRENCY keep-alive connections; `make(t, i)` builds
/// request i of connection t. Returns the latencies, the wall time and the failures.
async fn load<F>(port: u16, per_task: usize, make: F) -> (Vec<Duration>, Duration, usize)
where
    F: Fn(usize, usize) -> Vec<u8> + Send + Sync + Clone + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let make = make.clone();
            tokio::spawn(async move {
                let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                conn.set_nodelay(true).unwrap();
                let (mut lat, mut failures, mut buf) = (Vec::with_capacity(per_task), 0, Vec::new());
                for i in 0..per_task {
                    let req = make(t, i);
                    let s = Instant::now();
                    let status = exchange(&mut conn, &req, &mut buf).await;
                    lat.push(s.elapsed());
                    failures += usize::from(!(200..300).contains(&status));
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

/// Sequential latency of `n` requests built by `make(i)` on one connection.
async fn sequential(port: u16, n: usize, make: impl Fn(usize) -> Vec<u8>) -> Vec<Duration> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let req = make(i);
        let s = Instant::now();
        let status = exchange(&mut conn, &req, &mut buf).await;
        lat.push(s.elapsed());
        assert!((200..300).contains(&status), "status {status}: {}", String::from_utf8_lossy(&buf));
    }
    lat
}

fn report_sequential(name: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name:<34} {:>6} requests  sequential     p50 {:>6.2} ms  p99 {:>6.2} ms",
        lat.len(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let root = std::env::temp_dir().join(format!("suroga-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    // Cold start as on Azure: static Janus hosts (nothing to launch), a fresh and an existing store.
    let static_env = [
        ("FLEET", "static"),
        ("JANUS_API_SECRET", "unused"),
        ("JANUS_TOKEN_SECRET", "unused"),
        ("JANUS_ADMIN_KEY", "unused"),
        ("JANUS_EVENTS_SECRET", "unused"),
        (
            "JANUS_HOSTS",
            r#"[{"name":"j1","backend_url":"http://127.0.0.1:9/janus","public_http_url":"http://127.0.0.1:9/janus","public_ws_url":"ws://127.0.0.1:9"}]"#,
        ),
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
    println!(
        "cold start (exec -> first GET / answer), static hosts: new store {:.1} ms, existing store median {:.1} ms, max {:.1} ms",
        first.as_secs_f64() * 1e3,
        colds[colds.len() / 2].as_secs_f64() * 1e3,
        colds.last().unwrap().as_secs_f64() * 1e3
    );

    // The whole local system: embedded store and a real local Janus host. The rate limiter runs
    // (its cost is part of every figure) with limits no bench user reaches, and bookings are
    // spread over a year, past the default horizon.
    let dir = root.join("load");
    let port = free_port();
    let child = spawn(
        &dir,
        port,
        &[
            ("RATE_LIMIT_USER_PER_MINUTE", "1000000"),
            ("RATE_LIMIT_USER_BURST", "1000000"),
            ("BOOKING_HORIZON_DAYS", "400"),
            // Each bench user holds hundreds of bookings: the quota at its maximum keeps its
            // ledger (read and compare-and-set on every booking) in every figure, at worst size.
            ("QUOTA_LIVE_BOOKINGS_PER_USER", "1000"),
        ],
    );
    let ready = wait_ready(port, Duration::from_secs(30));
    println!(
        "cold start with a local Janus host (GET / answers once Janus is up): {:.1} ms",
        ready.as_secs_f64() * 1e3
    );
    let pid = child.id();
    // The load generator runs on one thread so the server keeps most of the second core.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tokens: std::sync::Arc<Vec<String>> =
            std::sync::Arc::new((0..CONCURRENCY).map(|t| token(&format!("bench-user-{t}"))).collect());
        let admin = suroga::auth::mint_dev_token(
            &suroga::config::Secret::new(SECRET),
            "bench-admin",
            true,
            "admin",
            ChronoDuration::hours(2),
            Utc::now(),
        );
        let day0 = Utc::now() + ChronoDuration::days(1);
        let slot = move |n: i64, len: i64| {
            let start = day0 + ChronoDuration::minutes((n * 7919) % (365 * 24 * 60));
            json!({"start_time": start.to_rfc3339(), "end_time": (start + ChronoDuration::minutes(len)).to_rfc3339()})
        };

        // Warm-up: connections, first rooms.
        let t2 = tokens.clone();
        let _ = load(port, 20, move |t, i| {
            request("POST", "/api/v1/bookings", &t2[t], Some(&slot(200_000 + (t * 20 + i) as i64, 45)))
        })
        .await;

        // Find-or-create: slots spread over a year, 30-90 minutes each, so rooms are both reused and created.
        let per_task = 250;
        let t2 = tokens.clone();
        let (lat, wall, failures) = load(port, per_task, move |t, i| {
            let n = (t * per_task + i) as i64;
            request("POST", "/api/v1/bookings", &t2[t], Some(&slot(n, 30 + (n * 31) % 61)))
        })
        .await;
        assert_eq!(failures, 0, "every booking succeeds");
        report("POST /bookings (find-or-create)", lat, wall);

        // Readers with a realistic handful of bookings each.
        let readers: std::sync::Arc<Vec<String>> =
            std::sync::Arc::new((0..CONCURRENCY).map(|t| token(&format!("bench-reader-{t}"))).collect());
        let r2 = readers.clone();
        let _ = load(port, 10, move |t, i| {
            request("POST", "/api/v1/bookings", &r2[t], Some(&slot(100_000 + (t * 10 + i) as i64, 60)))
        })
        .await;
        let r2 = readers.clone();
        let (lat, wall, failures) = load(port, 300, move |t, _| request("GET", "/api/v1/bookings", &r2[t], None)).await;
        assert_eq!(failures, 0);
        report("GET /bookings (10 per user)", lat, wall);

        // Janus round trips: POST /rooms creates the room in Janus before answering.
        let lat =
            sequential(port, 200, |_| request("POST", "/api/v1/rooms", &admin, Some(&json!({"max_participants": 2}))))
                .await;
        report_sequential("POST /rooms (with Janus create)", lat);

        // Participants: the first look at a room asks Janus, the next ones within 5 s are cached.
        let mut rooms = Vec::new();
        for _ in 0..200 {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut buf = Vec::new();
            exchange(&mut conn, &request("POST", "/api/v1/rooms", &admin, Some(&json!({}))), &mut buf).await;
            let body = &buf[buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            rooms.push(v["room_id"].as_u64().unwrap());
        }
        let r = rooms.clone();
        let lat = sequential(port, rooms.len(), |i| {
            request("GET", &format!("/api/v1/rooms/{}/participants", r[i]), &admin, None)
        })
        .await;
        report_sequential("GET participants, uncached (Janus)", lat);
        let lat = sequential(port, rooms.len(), |i| {
            request("GET", &format!("/api/v1/rooms/{}/participants", r[i]), &admin, None)
        })
        .await;
        report_sequential("GET participants, cached", lat);
    });
    println!("server peak RSS: {:.1} MB", peak_rss_mb(pid));
    stop(child);
    let _ = std::fs::remove_dir_all(&root);
}
