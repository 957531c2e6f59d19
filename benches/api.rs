//! The service benchmark: runs the real release binary and prints
//! - cold start: from exec to the first answer on `GET /` (as the Functions host probes it);
//! - `POST /bookings` (find-or-create) and `GET /bookings` throughput and p50/p99 latency at 64
//!   concurrent connections on the embedded store, with a real local Janus host;
//! - the server's peak RSS.
//!
//! - a sustained run: 64 connections for 60 s of find-or-create `POST /bookings` at random
//!   half-hour slots over the next 60 days, printed per 10-second window (bookings/s, p50, p99,
//!   the WAL's size and the server's RSS), so a tail that comes with time and size shows;
//! - same-slot contention: every request for ONE slot, with thousands of rooms already taken in
//!   it, printed the same way.
//!
//! `cargo bench --bench api [-- quick|sustained|sustained-store|contention ...]` runs the named
//! parts (all by default); `sustained-store` is the sustained run with quotas off, the store's own
//! path (with quotas at their defaults, each booking also reads its user's ledger and writes it in
//! the booking's transaction). `BENCH_SECONDS` (60) and `BENCH_WINDOW_SECONDS` (10) size the
//! sustained runs; `BENCH_DUMP=<file>` writes every request of a sustained run to
//! `<file>.<run>`, one `<finished µs> <latency µs>` line each after a first line with the run's
//! start (µs since the Unix epoch), to line a tail up with the server's log.
//! Targets on a 2-core machine: cold start < 50 ms; sustained >= 10,000 bookings/s with p99 < 10 ms
//! in every window, WAL < 64 MB, peak RSS < 50 MB; contention within 2x of the spread run. The
//! load generator shares the machine's cores.

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

/// The rate limiter runs (its cost is part of every figure) with limits no bench user reaches,
/// and bookings may be a year ahead, past the default horizon. Quotas stay at their defaults:
/// their ledger (read and compare-and-set on every booking) is in every figure.
const OPEN_LIMITS: &[(&str, &str)] =
    &[("RATE_LIMIT_USER_PER_MINUTE", "1000000"), ("RATE_LIMIT_USER_BURST", "1000000"), ("BOOKING_HORIZON_DAYS", "400")];

/// [`OPEN_LIMITS`] for the quick runs, whose 64 users hold hundreds of bookings each: the quota
/// at its maximum keeps their ledgers in every figure, at worst size.
fn unlimited() -> Vec<(&'static str, &'static str)> {
    let mut limits = OPEN_LIMITS.to_vec();
    limits.push(("QUOTA_LIVE_BOOKINGS_PER_USER", "1000"));
    limits
}

/// The users the sustained runs book for (`BENCH_USERS`, 100,000): connection `t` books for
/// users `t`, `t + 64`, `t + 128`, … in turn, so a user books one slot at a time, as a person
/// would, and holds a handful of live bookings (under the default quota of 20) when a minute of
/// full load ends.
fn user_tokens(prefix: &str) -> std::sync::Arc<Vec<String>> {
    let users = (env_secs("BENCH_USERS", 100_000) as usize).div_ceil(CONCURRENCY) * CONCURRENCY;
    std::sync::Arc::new((0..users).map(|u| token(&format!("{prefix}-{u}"))).collect())
}

/// The token connection `t` uses for its request `i` (see [`user_tokens`]).
fn user_of(tokens: &[String], t: usize, i: usize) -> &str {
    &tokens[(i * CONCURRENCY + t) % tokens.len()]
}

fn spawn(data_dir: &std::path::Path, port: u16, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_suroga"));
    cmd.arg("serve")
        .env("SUROGA_ADDR", format!("127.0.0.1:{port}"))
        .env("SUROGA_DATA_DIR", data_dir)
        .env("AUTH_HS256_SECRET", SECRET)
        // `BENCH_SERVER_LOG=<filter>` shows the server's own log (for example
        // `warn,suroga::store::sqlite::engine=debug` for each checkpoint pass).
        .env("RUST_LOG", std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(if std::env::var_os("BENCH_SERVER_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
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
    status_mb(pid, "VmHWM:")
}

/// A memory figure of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`), in MB; NaN when unreadable.
fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
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

/// Cold start, short load runs, Janus round trips and peak RSS.
fn quick(root: &std::path::Path) {
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
    let child = spawn(&dir, port, &unlimited());
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
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

fn file_mb(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map(|m| m.len() as f64 / (1024.0 * 1024.0)).unwrap_or(0.0)
}

/// One finished request of a sustained run: when it finished (since the start), how long it took,
/// whether it was a 2xx.
struct Done {
    at: Duration,
    latency: Duration,
    ok: bool,
}

/// One sample of the server's footprint.
struct Sample {
    at: Duration,
    wal_mb: f64,
    rss_mb: f64,
    /// Bytes the server has written to storage so far (WAL and checkpoints).
    written_mb: f64,
    /// CPU time the server has used so far, all its threads, user and system.
    cpu_s: f64,
    /// Time the server's writer thread has spent runnable but waiting for a core, so far.
    writer_queued_s: f64,
}

/// The CPU time `pid` has used (utime + stime in /proc/<pid>/stat, in the kernel's 100 Hz ticks).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let field = |i: usize| rest.split_whitespace().nth(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (field(11) + field(12)) / 100.0
}

/// How long the thread of `pid` named `name` has waited on a run queue (second field of
/// /proc/<pid>/task/<tid>/schedstat, in nanoseconds): runnable, but no core free for it.
fn queued_s(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        / 1e9
}

fn written_mb(pid: u32) -> f64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find(|l| l.starts_with("write_bytes:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|b| b.parse::<f64>().ok())
        .map(|b| b / (1024.0 * 1024.0))
        .unwrap_or(f64::NAN)
}

/// Samples the WAL's size and the server's RSS every 100 ms until `stop` is set.
fn sample_footprint(
    pid: u32,
    wal: std::path::PathBuf,
    start: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            out.push(Sample {
                at: start.elapsed(),
                wal_mb: file_mb(&wal),
                rss_mb: rss_mb(pid),
                written_mb: written_mb(pid),
                cpu_s: cpu_s(pid),
                writer_queued_s: queued_s(pid, "sqlite-writer"),
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        out
    })
}

/// Runs CONCURRENCY keep-alive connections for `length`, each sending `make(t, i)` one after the
/// other; returns every finished request.
async fn load_for<F>(port: u16, start: Instant, length: Duration, make: F) -> Vec<Done>
where
    F: Fn(usize, usize) -> Vec<u8> + Send + Sync + Clone + 'static,
{
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let make = make.clone();
            tokio::spawn(async move {
                let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                conn.set_nodelay(true).unwrap();
                let (mut done, mut buf) = (Vec::new(), Vec::new());
                let mut i = 0;
                while start.elapsed() < length {
                    let req = make(t, i);
                    let s = Instant::now();
                    let status = exchange(&mut conn, &req, &mut buf).await;
                    done.push(Done { at: start.elapsed(), latency: s.elapsed(), ok: (200..300).contains(&status) });
                    i += 1;
                }
                done
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Prints one line per window: bookings/s, p50, p99 and max latency, the largest WAL and RSS
/// sampled in it, the disk writes, the server's CPU and its writer thread's wait for a core
/// between its first and last sample, and the failed requests.
fn report_windows(name: &str, done: &[Done], samples: &[Sample], window: Duration, length: Duration) {
    println!("{name}");
    let windows = (length.as_secs_f64() / window.as_secs_f64()).ceil() as u32;
    let mut all_ok = 0;
    for w in 0..windows {
        let (from, to) = (window * w, window * (w + 1));
        let mut lat: Vec<Duration> =
            done.iter().filter(|d| d.at >= from && d.at < to && d.ok).map(|d| d.latency).collect();
        let failed = done.iter().filter(|d| d.at >= from && d.at < to && !d.ok).count();
        let sampled: Vec<&Sample> = samples.iter().filter(|s| s.at >= from && s.at < to).collect();
        let wal = sampled.iter().map(|s| s.wal_mb).fold(0.0, f64::max);
        let rss = sampled.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
        let (disk, cores, queued) = match (sampled.first(), sampled.last()) {
            (Some(a), Some(b)) if sampled.len() > 1 && b.at > a.at => {
                let secs = (b.at - a.at).as_secs_f64();
                (
                    (b.written_mb - a.written_mb) / window.as_secs_f64(),
                    // The server's CPU time per second of the window (cores busy): steadier from
                    // run to run on a shared machine than the latencies.
                    (b.cpu_s - a.cpu_s) / secs,
                    // The writer thread's wait for a core, per second: every write waits on that
                    // thread, so its wait shows when the machine, not the store, set the tail.
                    (b.writer_queued_s - a.writer_queued_s) / secs,
                )
            }
            _ => (0.0, 0.0, 0.0),
        };
        if lat.is_empty() {
            println!("  window {:>3}-{:<3} s  no bookings  failed {failed}", from.as_secs(), to.as_secs());
            continue;
        }
        lat.sort();
        all_ok += lat.len();
        let span = (to.min(length) - from).as_secs_f64();
        println!(
            "  window {:>3}-{:<3} s  {:>7.0} bookings/s  p50 {:>6.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  WAL {:>6.1} MB  RSS {:>5.1} MB  disk {disk:>5.1} MB/s  server CPU {cores:.2} cores, {:>4.0} us/booking, writer queued {:>3.0} ms/s  failed {failed}",
            from.as_secs(),
            to.as_secs(),
            lat.len() as f64 / span,
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3,
            wal,
            rss,
            cores * 1e6 * span / lat.len() as f64,
            queued * 1e3,
        );
    }
    println!("  total {all_ok} bookings in {:.0} s", length.as_secs_f64());
}

/// Half-hour slots from two days ahead on: past the reconciler's 24-hour horizon, so the
/// thousands of bookings a run makes do not each raise a capacity alert for the one local host.
fn half_hour_slot(day0: chrono::DateTime<Utc>, n: i64) -> serde_json::Value {
    let start = day0 + ChronoDuration::minutes(30 * n);
    json!({"start_time": start.to_rfc3339(), "end_time": (start + ChronoDuration::minutes(30)).to_rfc3339()})
}

fn first_slot() -> chrono::DateTime<Utc> {
    use chrono::DurationRound;
    Utc::now().duration_trunc(ChronoDuration::hours(1)).unwrap() + ChronoDuration::days(2)
}

/// Sustained find-or-create at random half-hour slots over the next 60 days; with `quotas`
/// off, the store's own path (a deployment with `QUOTA_LIVE_BOOKINGS_PER_USER=0`).
fn sustained(root: &std::path::Path, quotas: bool) {
    let length = Duration::from_secs(env_secs("BENCH_SECONDS", 60));
    let window = Duration::from_secs(env_secs("BENCH_WINDOW_SECONDS", 10));
    let dir = root.join(if quotas { "sustained" } else { "sustained-store" });
    let port = free_port();
    let mut limits = OPEN_LIMITS.to_vec();
    if !quotas {
        limits.push(("QUOTA_LIVE_BOOKINGS_PER_USER", "0"));
    }
    let child = spawn(&dir, port, &limits);
    wait_ready(port, Duration::from_secs(30));
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tokens = user_tokens("sustained-user");
    let tokens_len = tokens.len();
    let day0 = first_slot();
    let slots = 60 * 48;
    let start = Instant::now();
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_footprint(pid, dir.join("suroga.sqlite3-wal"), start, stop_flag.clone());
    let done = rt.block_on(load_for(port, start, length, move |t, i| {
        use rand::Rng;
        let n = rand::thread_rng().gen_range(0..slots);
        request("POST", "/api/v1/bookings", user_of(&tokens, t, i), Some(&half_hour_slot(day0, n)))
    }));
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    if let Ok(path) = std::env::var("BENCH_DUMP") {
        let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap() - start.elapsed();
        let text: String = std::iter::once(format!("{} 0\n", epoch.as_micros()))
            .chain(done.iter().map(|d| format!("{} {}\n", d.at.as_micros(), d.latency.as_micros())))
            .collect();
        std::fs::write(format!("{path}.{}", dir.file_name().unwrap().to_string_lossy()), text).unwrap();
    }
    report_windows(
        &format!(
            "sustained POST /bookings (find-or-create), {CONCURRENCY} connections, {} s, random half-hour slots over 60 days, {} users, {}:",
            length.as_secs(),
            tokens_len,
            if quotas { "quotas at their defaults" } else { "quotas off" }
        ),
        &done,
        &samples,
        window,
        length,
    );
    println!(
        "  server peak RSS {:.1} MB, database {:.1} MB, WAL at the end {:.1} MB",
        peak_rss_mb(pid),
        file_mb(&dir.join("suroga.sqlite3")),
        file_mb(&dir.join("suroga.sqlite3-wal"))
    );
    stop(child);
}

/// Every request for ONE half-hour slot while the rooms taken in it go from none to hundreds of
/// thousands: the store has `rooms` free rooms to start with (written before the server starts),
/// so no request needs a new Janus room and the figure is the store's search alone.
fn contention(root: &std::path::Path) {
    use suroga::store::Store;
    let length = Duration::from_secs(env_secs("BENCH_CONTENTION_SECONDS", 20));
    let window = Duration::from_secs(env_secs("BENCH_WINDOW_SECONDS", 10));
    let rooms = env_secs("BENCH_CONTENTION_ROOMS", 15_000 * length.as_secs()) as usize;
    let dir = root.join("contention");
    std::fs::create_dir_all(&dir).unwrap();
    let seeding = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = std::sync::Arc::new(suroga::store::sqlite::SqliteStore::open(&dir.join("suroga.sqlite3")).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in (t..rooms).step_by(64) {
                        let room = suroga::domain::Room::generate(None, 2, Default::default(), Utc::now());
                        store.insert_room(&room, None).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    drop(rt);
    println!("contention: {rooms} free rooms written in {:.1} s", seeding.elapsed().as_secs_f64());

    let port = free_port();
    let child = spawn(&dir, port, OPEN_LIMITS);
    wait_ready(port, Duration::from_secs(30));
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let slot = half_hour_slot(first_slot() + ChronoDuration::days(9), 0);
    let tokens = user_tokens("contention-user");
    let start = Instant::now();
    let stop_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_footprint(pid, dir.join("suroga.sqlite3-wal"), start, stop_flag.clone());
    let done = rt.block_on(load_for(port, start, length, move |t, i| {
        request("POST", "/api/v1/bookings", user_of(&tokens, t, i), Some(&slot))
    }));
    stop_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let booked = done.iter().filter(|d| d.ok).count();
    report_windows(
        &format!(
            "same-slot contention: POST /bookings for ONE slot, {CONCURRENCY} connections, {} s, {rooms} rooms:",
            length.as_secs()
        ),
        &done,
        &samples,
        window,
        length,
    );
    if booked > rooms {
        println!("  note: {} bookings needed a new (Janus) room", booked - rooms);
    }
    println!("  server peak RSS {:.1} MB", peak_rss_mb(pid));
    stop(child);
}

fn main() {
    // `cargo bench` passes `--bench`; the other arguments name the parts to run.
    let parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |name: &str| parts.is_empty() || parts.iter().any(|p| p == name);
    let root = std::env::temp_dir().join(format!("suroga-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    if run("quick") {
        quick(&root);
    }
    if run("sustained") {
        sustained(&root, true);
    }
    if run("sustained-store") {
        sustained(&root, false);
    }
    if run("contention") {
        contention(&root);
    }
    let _ = std::fs::remove_dir_all(&root);
}
