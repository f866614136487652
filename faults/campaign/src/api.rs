//! The parts of sonraft's admin API (v1) the campaign uses, typed from the outside.
//!
//! These shapes are written from README.md's contract, not imported from the node: if the
//! node changes its answers, the campaign notices instead of silently agreeing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{Answer, Http, HttpError};

/// Deadline for control-plane requests (status, membership, digests).
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(5);

/// Why a control request did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{route}: HTTP {status}: {body}")]
    Refused {
        route: String,
        status: u16,
        body: String,
    },
    #[error("{route}: unexpected answer {body}: {reason}")]
    Shape {
        route: String,
        body: String,
        reason: String,
    },
}

/// `GET /status`, the fields the campaign reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub last_applied_index: u64,
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
}

/// `GET /image/digest`: one node's applied state, summarised.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
pub struct Digest {
    pub applied_index: u64,
    pub applied_term: u64,
    pub digest: String,
    pub cells: u64,
    pub relations: u64,
    pub history_records: u64,
}

/// The tilt box of a cell (0.1 degree units).
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct TiltBox {
    pub min: i64,
    pub max: i64,
}

/// `GET /image/cells/{id}`, the fields the workload needs.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct CellState {
    pub version: u64,
    pub electrical_tilt: i64,
    pub tilt_box: TiltBox,
}

/// One record of `GET /image/history`.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct HistoryRecord {
    pub index: u64,
    pub reason: String,
    #[serde(default)]
    pub writes: Vec<HistoryWrite>,
    pub outcome: Value,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct HistoryWrite {
    pub entity: String,
    pub param: String,
    pub value: Value,
}

impl HistoryRecord {
    /// `applied`, `conflict`, `rejected` or `invalid`.
    pub fn kind(&self) -> &str {
        self.outcome["outcome"].as_str().unwrap_or("")
    }

    /// The new version of `entity` if this record applied.
    pub fn applied_version(&self, entity: &str) -> Option<u64> {
        (self.kind() == "applied")
            .then(|| self.outcome["versions"][entity].as_u64())
            .flatten()
    }
}

fn refused(route: &str, a: &Answer) -> ApiError {
    ApiError::Refused {
        route: route.to_string(),
        status: a.status.as_u16(),
        body: a.text(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(route: &str, a: &Answer) -> Result<T, ApiError> {
    if !a.status.is_success() {
        return Err(refused(route, a));
    }
    serde_json::from_slice(&a.body).map_err(|e| ApiError::Shape {
        route: route.to_string(),
        body: a.text().chars().take(300).collect(),
        reason: e.to_string(),
    })
}

/// A node's API at one address.
#[derive(Clone)]
pub struct Api {
    pub http: Http,
}

impl Api {
    pub fn new(token: &str) -> Api {
        Api {
            http: Http::new(token),
        }
    }

    pub async fn status(&self, addr: &str) -> Result<Status, ApiError> {
        let a = self.http.get(addr, "/status", CONTROL_DEADLINE).await?;
        parse("/status", &a)
    }

    /// `GET /readyz`: whether the node knows a leader and caught up with what was committed
    /// when it started.
    pub async fn ready(&self, addr: &str) -> bool {
        self.http
            .get(addr, "/readyz", Duration::from_secs(2))
            .await
            .is_ok_and(|a| a.status.is_success())
    }

    pub async fn digest(&self, addr: &str) -> Result<Digest, ApiError> {
        let a = self
            .http
            .get(addr, "/image/digest", CONTROL_DEADLINE)
            .await?;
        parse("/image/digest", &a)
    }

    /// The `Date` header of `/health`: the node's wall clock (to the second), as its HTTP
    /// server sees it.
    pub async fn wall_clock_secs(&self, addr: &str) -> Result<u64, ApiError> {
        let a = self.http.get(addr, "/health", CONTROL_DEADLINE).await?;
        let date = a
            .headers
            .get(hyper::header::DATE)
            .and_then(|d| d.to_str().ok())
            .unwrap_or("")
            .to_string();
        crate::clock::parse_http_date(&date).ok_or_else(|| ApiError::Shape {
            route: "/health".into(),
            body: date,
            reason: "no parsable Date header".into(),
        })
    }

    pub async fn read_cell(
        &self,
        addr: &str,
        cell: &str,
        deadline: Duration,
    ) -> Result<CellState, ApiError> {
        let route = format!("/image/cells/{cell}");
        let a = self.http.get(addr, &route, deadline).await?;
        parse(&route, &a)
    }

    pub async fn init(&self, addr: &str, nodes: &[NodeEntry]) -> Result<(), ApiError> {
        let body = json!({ "nodes": nodes.iter().map(NodeEntry::json).collect::<Vec<_>>() });
        let a = self
            .http
            .post(addr, "/cluster/init", &body, Duration::from_secs(30))
            .await?;
        parse::<Value>("/cluster/init", &a).map(drop)
    }

    pub async fn import(&self, addr: &str, image: &Value) -> Result<(), ApiError> {
        let a = self
            .http
            .post(addr, "/image/import", image, Duration::from_secs(30))
            .await?;
        parse::<Value>("/image/import", &a).map(drop)
    }

    pub async fn add_learner(&self, addr: &str, node: &NodeEntry) -> Result<(), ApiError> {
        let a = self
            .http
            .post(
                addr,
                "/cluster/learners",
                &node.json(),
                Duration::from_secs(60),
            )
            .await?;
        parse::<Value>("/cluster/learners", &a).map(drop)
    }

    pub async fn change_voters(&self, addr: &str, ids: &[u64]) -> Result<(), ApiError> {
        let a = self
            .http
            .post(
                addr,
                "/cluster/voters",
                &json!({ "ids": ids }),
                Duration::from_secs(30),
            )
            .await?;
        parse::<Value>("/cluster/voters", &a).map(drop)
    }

    pub async fn remove_node(&self, addr: &str, id: u64) -> Result<(), ApiError> {
        let route = format!("/cluster/nodes/{id}");
        let a = self
            .http
            .send(
                hyper::Method::DELETE,
                addr,
                &route,
                None,
                Duration::from_secs(30),
            )
            .await?;
        parse::<Value>(&route, &a).map(drop)
    }

    /// `POST /cluster/leader`: hand leadership to voter `id`.
    pub async fn transfer_leader(&self, addr: &str, id: u64) -> Result<(), ApiError> {
        let a = self
            .http
            .post(
                addr,
                "/cluster/leader",
                &json!({ "id": id }),
                Duration::from_secs(10),
            )
            .await?;
        parse::<Value>("/cluster/leader", &a).map(drop)
    }

    /// The newest `limit` history records in one page (see the module docs of `checks` for
    /// why not several pages).
    pub async fn history(&self, addr: &str, limit: usize) -> Result<Vec<HistoryRecord>, ApiError> {
        let route = format!("/image/history?limit={limit}");
        let a = self.http.get(addr, &route, Duration::from_secs(60)).await?;
        parse(&route, &a)
    }
}

/// A node as membership requests name it.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub id: u64,
    pub site: String,
    pub raft_addr: String,
    pub api_addr: String,
}

impl NodeEntry {
    fn json(&self) -> Value {
        json!({"id": self.id, "site": self.site, "raft_addr": self.raft_addr, "api_addr": self.api_addr})
    }
}

/// Versions by entity, as `applied` reports them.
pub type Versions = BTreeMap<String, u64>;
