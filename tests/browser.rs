//! A real browser joins a booked session: headless Chromium (fake camera and microphone) loads a
//! page with janus.js, joins the room with exactly what `/join` returned, and publishes; the API's
//! participants endpoint then shows it as a publisher.

mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{
    Router,
    routing::{get, post},
};
use chrono::Duration as ChronoDuration;
use reqwest::StatusCode;
use support::app::{TestApp, admin, user};

const JANUS_JS: &str = "/usr/share/javascript/janus-gateway/janus.js";
const ADAPTER_JS: &str = "/usr/share/javascript/webrtc-adapter/adapter.js";

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn js(path: &'static str) -> impl Fn() -> std::future::Ready<([(&'static str, &'static str); 1], String)> + Clone {
    move || {
        let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (scripts/deps installs it)"));
        std::future::ready(([("content-type", "application/javascript")], body))
    }
}

#[tokio::test]
async fn chromium_joins_the_booked_room_and_publishes() {
    let app = TestApp::spawn().await;
    let u = user();
    let b = app.book(&u, 10, 70, None).await;
    let room = b["room_id"].as_u64().unwrap();
    let (st, join) = app.get(&format!("/api/v1/bookings/{}/join", b["booking_id"].as_str().unwrap()), &u).await;
    assert_eq!(st, StatusCode::OK, "{join}");
    let session_room = join["room_id"].as_u64().unwrap();

    // The test page, janus.js and adapter.js from Debian's packages, and a sink for the page's log.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let page = Router::new()
        .route("/", get(|| async { axum::response::Html(include_str!("fixtures/join.html")) }))
        .route("/janus.js", get(js(JANUS_JS)))
        .route("/adapter.js", get(js(ADAPTER_JS)))
        .route(
            "/report",
            post(move |body: String| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(body);
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, page).await.unwrap() });

    let fragment = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("server", join["janus"]["http"].as_str().unwrap())
        .append_pair("token", join["token"].as_str().unwrap())
        .append_pair("room", &session_room.to_string())
        .append_pair("pin", join["pin"].as_str().unwrap())
        .append_pair("room_token", join["room_token"].as_str().unwrap())
        .append_pair("display", join["display"].as_str().unwrap())
        .finish();
    let profile = support::app::temp_dir("chromium");
    let _browser = Browser(
        Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                &format!("--user-data-dir={}", profile.display()),
                &format!("http://{page_addr}/#{fragment}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium runs (scripts/deps --with-browser installs it)"),
    );

    // Wait until the API (through Janus) lists the browser as a publisher.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut page_log = Vec::new();
    let listed = loop {
        while let Ok(line) = rx.try_recv() {
            page_log.push(line);
        }
        let (st, p) = app.get(&format!("/api/v1/rooms/{room}/participants"), &admin()).await;
        assert_eq!(st, StatusCode::OK, "{p}");
        let publishing = p["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["publisher"] == true && x["display"] == join["display"]);
        if publishing {
            break p;
        }
        assert!(Instant::now() < deadline, "the browser never published; page log: {page_log:?}; last answer: {p}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(listed["participant_count"], 1, "{listed}");

    // The owner sees the same once the session is in progress.
    app.clock.advance(ChronoDuration::minutes(11));
    let (st, own) = app.get(&format!("/api/v1/rooms/{room}/participants"), &u).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(own["participants"][0]["publisher"], true, "{own}");
    let _ = std::fs::remove_dir_all(profile);
}
