//! The load generator's view of a sonraft cluster: reads and change sets on the leader's
//! admin API, each client over its own keep-alive connection ([`Session`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sonraft_client::{ApiClient, bearer, v1};

use super::load::{Target, Written};
use super::session::Session;

pub struct SonraftTarget {
    /// For finding the leader and preloading (not on the measured path).
    client: ApiClient,
    nodes: Vec<String>,
    /// `host:port` where requests go: the leader when last looked up (any node would forward).
    leader: RwLock<Arc<str>>,
    authorization: Option<HeaderValue>,
}

/// What an acknowledged write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied; the cell's new version.
    Applied(u64),
    /// The read version was stale; the cell's current version.
    Conflict(Option<u64>),
}

/// Cell ids of the benchmark image.
pub fn cell_id(i: usize) -> String {
    format!("B{i:06}")
}

impl SonraftTarget {
    /// Finds the leader among `nodes`.
    pub async fn connect(
        nodes: &[String],
        token: Option<String>,
        _clients: usize,
    ) -> anyhow::Result<Self> {
        let authorization = token
            .as_deref()
            .map(bearer)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let client = ApiClient::new(token, Duration::from_secs(30));
        let leader = find_leader(&client, nodes)
            .await
            .with_context(|| format!("no node of {nodes:?} knows a leader"))?;
        Ok(SonraftTarget {
            client,
            nodes: nodes.to_vec(),
            leader: RwLock::new(leader.into()),
            authorization,
        })
    }

    fn leader(&self) -> Arc<str> {
        self.leader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a failure: looks the leader up again (it may have moved or stopped).
    async fn rediscover(&self) {
        if let Some(l) = find_leader(&self.client, &self.nodes).await {
            *self.leader.write().unwrap_or_else(|p| p.into_inner()) = l.into();
        }
    }

    /// Sends to the leader over `session`; on a failure that says it may have moved, looks it
    /// up again for the next request (the failed request is not retried: its outcome is
    /// unknown).
    async fn send(
        &self,
        session: &mut Session,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let leader = self.leader();
        match session.send(&leader, method, path, body).await {
            Ok(r) if r.0 == StatusCode::SERVICE_UNAVAILABLE => {
                self.rediscover().await;
                Ok(r)
            }
            Ok(r) => Ok(r),
            Err(e) => {
                self.rediscover().await;
                Err(e)
            }
        }
    }

    /// Proposes `value` for the hysteresis of cell `i`, conditional on version `read` when
    /// given.
    async fn propose(
        &self,
        session: &mut Session,
        i: usize,
        read: Option<u64>,
        value: i64,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let id = cell_id(i);
        let read_set = match read {
            Some(v) => format!(r#"[{{"entity":"cell/{id}","version":{v}}}]"#),
            None => "[]".into(),
        };
        let body = format!(
            r#"{{"origin":{{"function":"operator"}},"reason":"bench","read_set":{read_set},"writes":[{{"entity":"cell/{id}","param":"hysteresis","value":{value}}}]}}"#
        );
        let (status, answer) = self
            .send(
                session,
                Method::POST,
                "/image/changesets",
                Some(Bytes::from(body)),
            )
            .await?;
        match status {
            StatusCode::OK | StatusCode::CONFLICT => Ok((status, answer)),
            s => bail!("write: {s} {}", String::from_utf8_lossy(&answer)),
        }
    }

    /// Like [`Target::write`], with the versions the answer names (parsed from its JSON, which
    /// the load loop itself does not need).
    pub async fn write_outcome(
        &self,
        session: &mut Session,
        i: usize,
        read: Option<u64>,
        value: i64,
    ) -> anyhow::Result<WriteOutcome> {
        let (status, answer) = self.propose(session, i, read, value).await?;
        let entity = format!("cell/{}", cell_id(i));
        let outcome = serde_json::from_slice::<v1::ChangeSetAnswer>(&answer).map(|a| a.outcome);
        match (status, outcome) {
            (StatusCode::OK, Ok(v1::Outcome::Applied { versions, .. })) => versions
                .get(&entity)
                .copied()
                .map(WriteOutcome::Applied)
                .with_context(|| format!("applied, but no new version of {entity}")),
            (StatusCode::OK, _) => bail!("applied, but no new version of {entity}"),
            (_, Ok(v1::Outcome::Conflict { current })) => Ok(WriteOutcome::Conflict(
                current.get(&entity).copied().flatten(),
            )),
            // Refused by coordination, or not understood: not applied, current version unknown.
            (_, _) => Ok(WriteOutcome::Conflict(None)),
        }
    }
}

/// The API address (`host:port`) of the leader, as the first node of `nodes` that knows one
/// names it.
async fn find_leader(client: &ApiClient, nodes: &[String]) -> Option<String> {
    for n in nodes {
        let Ok(r) = client.get(n, "/status").await else {
            continue;
        };
        let Ok(v) = r.parse::<v1::Status>() else {
            continue;
        };
        let Some(leader) = v.leader_id else {
            continue;
        };
        if let Some(n) = v.nodes.get(&leader) {
            return Some(n.api_addr.trim_start_matches("http://").to_string());
        }
    }
    None
}

impl Target for SonraftTarget {
    type Client = Session;

    fn name(&self) -> String {
        "sonraft".into()
    }

    fn client(&self) -> Session {
        Session::new(self.authorization.clone(), Duration::from_secs(30))
    }

    async fn preload(&self, cells: usize) -> anyhow::Result<()> {
        let sites = [json!({"id": "BENCH", "name": "benchmark", "lat": 0.0, "lon": 0.0})];
        for chunk in (0..cells).collect::<Vec<_>>().chunks(5000) {
            let list: Vec<Value> = chunk
                .iter()
                .map(|&i| json!({"id": cell_id(i), "site": "BENCH", "rat": "LTE", "pci": i % 504, "arfcn": 1300, "azimuth": 0}))
                .collect();
            let r = self
                .client
                .post(
                    &self.leader(),
                    "/image/import",
                    &json!({"sites": sites, "cells": list}),
                )
                .await?;
            if !r.status.is_success() {
                bail!("preload: {} {}", r.status, String::from_utf8_lossy(&r.body));
            }
        }
        Ok(())
    }

    async fn read_version(&self, session: &mut Session, i: usize) -> anyhow::Result<u64> {
        let path = format!("/image/cells/{}?consistency=linearizable", cell_id(i));
        let (status, body) = self.send(session, Method::GET, &path, None).await?;
        if status != StatusCode::OK {
            bail!("read: {status} {}", String::from_utf8_lossy(&body));
        }
        // Only the version: a whole `Value` tree per read would cost the load generator more
        // than the read costs the node.
        #[derive(serde::Deserialize)]
        struct Versioned {
            version: u64,
        }
        let cell: Versioned = serde_json::from_slice(&body).context("no version in the cell")?;
        Ok(cell.version)
    }

    async fn write(
        &self,
        session: &mut Session,
        i: usize,
        read: Option<u64>,
        value: i64,
    ) -> anyhow::Result<Written> {
        let (status, _) = self.propose(session, i, read, value).await?;
        Ok(if status == StatusCode::OK {
            Written::Applied
        } else {
            Written::Conflict
        })
    }
}
