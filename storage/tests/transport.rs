//! The Raft listener refuses strangers and bad bytes, and keeps serving.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sonraft_raft::transport::{RaftRpc, SECRET_HEADER, encode_frame};

async fn post(
    addr: std::net::SocketAddr,
    secret: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::post(format!("http://{addr}/raft"));
    if let Some(s) = secret {
        req = req.header(SECRET_HEADER, s);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_garbage_are_refused_and_the_node_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1, 10_000).await;
    let addr = nodes[0].addr;
    let vote = RaftRpc::Vote(openraft::raft::VoteRequest::new(
        openraft::Vote::new(1, 9),
        None,
    ));
    let good = encode_frame(&vote).unwrap();

    let (s, _) = post(addr, None, good.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "no secret");
    let (s, _) = post(addr, Some("wrong"), good.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "wrong secret");

    let (s, msg) = post(addr, Some(SECRET), vec![0, 1, 0xff, 0xfe, 0x13, 0x37, 0x00]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "garbage: {msg}");
    let (s, msg) = post(addr, Some(SECRET), good[..good.len() - 3].to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "truncated: {msg}");
    let (s, msg) = post(addr, Some(SECRET), vec![0, 9, 1, 2]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(msg.contains("speaks format 9"), "{msg}");
    let (s, _) = post(addr, Some(SECRET), vec![]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "empty body");

    let (s, _) = post(addr, Some(SECRET), good).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a good RPC after the bad ones is still served"
    );
    let (_, r) = propose(
        &nodes[0].raft,
        sonraft_raft::command::Command::Import(demo_import(2)),
    )
    .await;
    assert!(matches!(
        r,
        sonraft_raft::command::Response::Imported(Ok(_))
    ));
    for n in nodes {
        n.stop().await;
    }
}
