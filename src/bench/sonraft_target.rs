//! The load generator's view of a sonraft cluster: reads and change sets on the leader's
//! admin API over pooled keep-alive connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::load::{Target, Written};
use crate::client::{ApiClient, base_url};

pub struct SonraftTarget {
    client: ApiClient,
    leader: Arc<str>,
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
        let client = ApiClient::new(token, Duration::from_secs(30));
        for n in nodes {
            let Ok(r) = client.get(n, "/status").await else {
                continue;
            };
            let v = r.json();
            let Some(leader) = v["leader_id"].as_u64() else {
                continue;
            };
            if let Some(api) = v["nodes"][leader.to_string()]["api_addr"].as_str() {
                return Ok(SonraftTarget {
                    client,
                    leader: base_url(api).into(),
                });
            }
        }
        bail!("no node of {nodes:?} knows a leader")
    }
}

impl Target for SonraftTarget {
    fn name(&self) -> String {
        "sonraft".into()
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
                    &self.leader,
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

    async fn read_version(&self, i: usize) -> anyhow::Result<u64> {
        let r = self
            .client
            .get(
                &self.leader,
                &format!("/image/cells/{}?consistency=linearizable", cell_id(i)),
            )
            .await?;
        if r.status != StatusCode::OK {
            bail!("read: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        r.json()["version"]
            .as_u64()
            .context("no version in the cell")
    }

    async fn write(&self, i: usize, read: Option<u64>, value: i64) -> anyhow::Result<Written> {
        let id = cell_id(i);
        let read_set = match read {
            Some(v) => format!(r#"[{{"entity":"cell/{id}","version":{v}}}]"#),
            None => "[]".into(),
        };
        let body = format!(
            r#"{{"origin":{{"function":"operator"}},"reason":"bench","read_set":{read_set},"writes":[{{"entity":"cell/{id}","param":"hysteresis","value":{value}}}]}}"#
        );
        let url = format!("{}/image/changesets", self.leader);
        let r = self
            .client
            .send(Method::POST, &url, Some(Bytes::from(body)), &[])
            .await?;
        match r.status {
            StatusCode::OK => Ok(Written::Applied),
            StatusCode::CONFLICT => Ok(Written::Conflict),
            s => bail!("write: {s} {}", String::from_utf8_lossy(&r.body)),
        }
    }
}
