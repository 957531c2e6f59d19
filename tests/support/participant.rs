//! A participant's side of Janus: a client holding no server credential, only what the API's
//! join answers hand out.

use std::time::Duration;

use serde_json::Value;
use suroga::{
    config::Secret,
    janus::{Credential, JanusClient, JanusClientConfig, JoinRoom, Session, VIDEOROOM},
};

/// A Janus client that holds no server credential: only what the API handed out.
pub fn client() -> JanusClient {
    JanusClient::new(JanusClientConfig {
        api_secret: Secret::new("not-the-secret"),
        admin_key: None,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// Joins the session of a join answer as a publisher, as the web client does: with the answer's
/// core token, room token and pin, and Janus participant id `id`. The session keeps the
/// participant in the room until it is destroyed. Returns it with the id Janus gave.
pub async fn join_answer(answer: &Value, display: &str, id: Option<u64>) -> (Session, u64) {
    let token = Credential::Token(Secret::new(answer["token"].as_str().unwrap()));
    let session = client().session_with(answer["janus"]["http"].as_str().unwrap(), token).await.unwrap();
    let handle = session.attach(VIDEOROOM).await.unwrap();
    let req = JoinRoom {
        room: answer["room_id"].as_u64().unwrap(),
        display,
        pin: answer["pin"].as_str(),
        room_token: answer["room_token"].as_str(),
    };
    let joined = handle.join_as(&req, id).await.unwrap();
    (session, joined.id)
}
