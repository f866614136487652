//! The checks a rolling upgrade makes between its steps (`sonraft ctl health`, `node-info`,
//! `leader --away-from`, `wait-caught-up`), written against admin API v1 only so that the new
//! release's `ctl` can drive a cluster still running the previous one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sonraft_client::{ApiClient, v1, with_query};

use crate::ctl::exit::{Exit, Failure};
use crate::ctl::output::outln;

/// One member as seen through its own API.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub id: u64,
    pub site: String,
    pub api: String,
    /// `/status`, or why it could not be read.
    pub status: Result<v1::Status, String>,
    /// `/readyz`: `None` when ready, else the reason.
    pub not_ready: Option<String>,
}

impl MemberView {
    pub fn role(&self) -> &str {
        match &self.status {
            Ok(s) => role_name(s.role),
            Err(_) => "unreachable",
        }
    }
    pub fn applied(&self) -> Option<u64> {
        self.status.as_ref().ok().map(|s| s.last_applied_index)
    }
    pub fn leader_id(&self) -> Option<u64> {
        self.status.as_ref().ok().and_then(|s| s.leader_id)
    }
}

/// A role as the API names it.
fn role_name(role: v1::Role) -> &'static str {
    match role {
        v1::Role::Leader => "leader",
        v1::Role::Candidate => "candidate",
        v1::Role::Follower => "follower",
        v1::Role::Learner => "learner",
        v1::Role::Shutdown => "shutdown",
        v1::Role::Unknown => "?",
    }
}

/// The cluster as every member reports it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub voters: Vec<u64>,
    pub members: BTreeMap<u64, MemberView>,
}

impl ClusterView {
    /// The leader every reachable voter names, if they agree and it says so itself.
    pub fn agreed_leader(&self) -> Option<u64> {
        let named: Vec<Option<u64>> = self
            .voters
            .iter()
            .filter_map(|id| self.members.get(id))
            .filter(|m| m.status.is_ok())
            .map(|m| m.leader_id())
            .collect();
        let first = (*named.first()?)?;
        let agreed = named.iter().all(|l| *l == Some(first));
        let leads = self
            .members
            .get(&first)
            .is_some_and(|m| m.role() == "leader");
        (agreed && leads).then_some(first)
    }

    /// Why the cluster is not healthy, empty when it is: every voter answers and is ready,
    /// all agree on one leader, and none trails the leader by more than `max_lag` entries.
    pub fn problems(&self, max_lag: u64) -> Vec<String> {
        let mut out = Vec::new();
        for id in &self.voters {
            let Some(m) = self.members.get(id) else {
                out.push(format!("voter {id} has no address in the membership"));
                continue;
            };
            match (&m.status, &m.not_ready) {
                (Err(e), _) => out.push(format!("node {id} ({}) does not answer: {e}", m.site)),
                (Ok(_), Some(r)) => out.push(format!("node {id} ({}) is not ready: {r}", m.site)),
                _ => {}
            }
        }
        let Some(leader) = self.agreed_leader() else {
            out.push("the voters do not agree on one leader".into());
            return out;
        };
        let lead_applied = self.members[&leader].applied().unwrap_or(0);
        for id in &self.voters {
            if let Some(applied) = self.members.get(id).and_then(MemberView::applied)
                && applied + max_lag < lead_applied
            {
                out.push(format!(
                    "node {id} trails the leader: applied {applied} of {lead_applied}"
                ));
            }
        }
        out
    }
}

/// Reads the membership from the first of `nodes` that answers, then every member's
/// `/status` and `/readyz` at the addresses the membership records.
pub async fn cluster_view(client: &ApiClient, nodes: &[String]) -> anyhow::Result<ClusterView> {
    let mut membership = None;
    let mut errors = Vec::new();
    // Whether any node answered at all (a 401 is an answer: exit 1, not 4).
    let mut answered = false;
    for n in nodes {
        match client.get(n, "/status").await {
            Ok(r) if r.status.is_success() => {
                answered = true;
                let v: v1::Status = match r.parse() {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(format!("{n}: status not understood: {e}"));
                        continue;
                    }
                };
                // Prefer the leader's view of the membership.
                let leads = v.role == v1::Role::Leader;
                if membership.is_none() || leads {
                    membership = Some(v);
                }
                if leads {
                    break;
                }
            }
            Ok(r) => {
                answered = true;
                errors.push(format!("{n}: {}", r.status));
            }
            Err(e) => errors.push(format!("{n}: {e}")),
        }
    }
    let Some(status) = membership else {
        let exit = if answered {
            Exit::Refused
        } else {
            Exit::Unreachable
        };
        return Err(Failure::of(
            exit,
            format!("no node answers: {}", errors.join("; ")),
        ));
    };
    let mut members = BTreeMap::new();
    for (id, n) in &status.nodes {
        members.insert(*id, member_view(client, *id, &n.api_addr).await);
    }
    Ok(ClusterView {
        voters: status.voters,
        members,
    })
}

async fn member_view(client: &ApiClient, id: u64, api: &str) -> MemberView {
    let status = match client.get(api, "/status").await {
        Ok(r) if r.status.is_success() => r
            .parse::<v1::Status>()
            .map_err(|e| format!("status not understood: {e}")),
        Ok(r) => Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
        Err(e) => Err(e.to_string()),
    };
    let not_ready = match client.get(api, "/readyz").await {
        Ok(r) if r.status.is_success() => None,
        Ok(r) => Some(
            r.parse::<v1::Readiness>()
                .ok()
                .and_then(|ready| ready.reason)
                .unwrap_or_else(|| r.status.to_string()),
        ),
        Err(e) => Some(e.to_string()),
    };
    let site = status
        .as_ref()
        .map_or_else(|_| "?".to_string(), |s| s.site.clone());
    MemberView {
        id,
        site,
        api: api.to_string(),
        status,
        not_ready,
    }
}

/// Which of the health rules `ctl health` relaxes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relaxed {
    /// Pass although the cluster could not lose another voter.
    pub no_fault_tolerance: bool,
    /// Pass although some member does not answer.
    pub unreachable: bool,
}

/// `ctl health`: the leader's `/cluster/health`, judged with `max_lag` and the rules `relaxed`;
/// a node of a release without that route is judged from every member's `/status`.
pub async fn health(
    client: &ApiClient,
    nodes: &[String],
    max_lag: u64,
    relaxed: Relaxed,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut last_err = None;
    let mut answered = false;
    for n in nodes {
        let query = v1::ClusterHealthQuery {
            max_lag: Some(max_lag),
        };
        match client.get(n, &with_query("/cluster/health", &query)).await {
            Ok(r) if r.status.is_success() => {
                let h = r
                    .parse::<v1::ClusterHealth>()
                    .with_context(|| format!("{n}: the cluster's health is not understood"))?;
                return judge_health(&h, r.json(), relaxed, json_out);
            }
            Ok(r) if r.status == hyper::StatusCode::NOT_FOUND => {
                return health_from_statuses(client, nodes, max_lag, json_out).await;
            }
            Ok(r) => {
                answered = true;
                last_err = Some(format!(
                    "{n}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ))
            }
            Err(e) => last_err = Some(format!("{n}: {e}")),
        }
    }
    let exit = if answered {
        Exit::Refused
    } else {
        Exit::Unreachable
    };
    Err(Failure::of(
        exit,
        format!(
            "unhealthy: no node answers: {}",
            last_err.unwrap_or_else(|| "no nodes given".into())
        ),
    ))
}

/// Judges `h` with the rules `relaxed`; with `json_out` prints the node's JSON (`raw`) with its
/// verdict replaced by this one.
fn judge_health(
    h: &v1::ClusterHealth,
    mut raw: Value,
    relaxed: Relaxed,
    json_out: bool,
) -> anyhow::Result<()> {
    let problems: Vec<String> = h
        .problems
        .iter()
        .filter(|p| match p.kind {
            v1::ProblemKind::FaultTolerance => !relaxed.no_fault_tolerance,
            v1::ProblemKind::Unreachable => !relaxed.unreachable,
            _ => true,
        })
        .map(|p| p.detail.clone())
        .collect();
    if json_out {
        raw["healthy"] = json!(problems.is_empty());
        outln!("{raw}");
    } else {
        outln!(
            "{:<6} {:<10} {:<8} {:<8} {:>8}  release",
            "id",
            "site",
            "role",
            "answers",
            "lag"
        );
        for m in &h.members {
            let leads = h.leader == Some(m.id);
            outln!(
                "{:<6} {:<10} {:<8} {:<8} {:>8}  {}",
                format!("{}{}", m.id, if leads { "*" } else { "" }),
                m.site,
                match m.role {
                    v1::MemberRole::Voter => "voter",
                    v1::MemberRole::Learner => "learner",
                },
                if m.answers { "yes" } else { "no" },
                m.lag.map_or("-".into(), |l| l.to_string()),
                m.release.as_deref().unwrap_or("-"),
            );
        }
        outln!(
            "leader {}, term {}; fault tolerance {} (voters that may fail with a quorum left)",
            json!(h.leader),
            h.term,
            h.fault_tolerance
        );
    }
    if problems.is_empty() {
        if !json_out {
            outln!("healthy");
        }
        Ok(())
    } else {
        bail!("unhealthy: {}", problems.join("; "))
    }
}

/// The health of a cluster of a release without `/cluster/health`, from every member's
/// `/status` and `/readyz`.
async fn health_from_statuses(
    client: &ApiClient,
    nodes: &[String],
    max_lag: u64,
    json_out: bool,
) -> anyhow::Result<()> {
    let view = cluster_view(client, nodes).await?;
    let problems = view.problems(max_lag);
    if json_out {
        let members: Vec<Value> = view
            .members
            .values()
            .map(|m| json!({"id": m.id, "site": m.site, "api": m.api, "role": m.role(), "applied": m.applied(), "ready": m.not_ready.is_none(), "version": m.status.as_ref().ok().map(|s| s.version.clone())}))
            .collect();
        outln!(
            "{}",
            json!({"healthy": problems.is_empty(), "leader": view.agreed_leader(), "members": members, "problems": problems})
        );
    } else {
        for m in view.members.values() {
            let version = m
                .status
                .as_ref()
                .map_or_else(|_| "-".into(), |s| s.version.clone());
            outln!(
                "{:<4} {:<10} {:<11} {:<8} applied {:>9}  {}",
                m.id,
                m.site,
                m.role(),
                version,
                m.applied().map_or_else(|| "-".into(), |a| a.to_string()),
                m.not_ready
                    .as_deref()
                    .map_or("ready".to_string(), |r| format!("not ready: {r}"))
            );
        }
    }
    if problems.is_empty() {
        if !json_out {
            outln!("healthy");
        }
        Ok(())
    } else {
        bail!("unhealthy: {}", problems.join("; "))
    }
}

/// `ctl node-info --api ADDR`: `key=value` lines about one node, for scripts.
pub async fn node_info(client: &ApiClient, api: &str) -> anyhow::Result<()> {
    let v = crate::ctl::node_status(client, api)
        .await
        .with_context(|| format!("node at {api}"))?;
    let fields = [
        ("id", v.id.to_string()),
        ("site", v.site),
        ("role", role_name(v.role).to_string()),
        ("term", v.term.to_string()),
        (
            "leader_id",
            v.leader_id.map_or(String::new(), |l| l.to_string()),
        ),
        ("last_applied_index", v.last_applied_index.to_string()),
        ("version", v.version),
        ("data_format", v.data_format.to_string()),
        ("command_format", v.command_format.to_string()),
        (
            "effective_command_format",
            v.effective_command_format.to_string(),
        ),
    ];
    for (f, value) in fields {
        // Only characters that are safe in any shell context.
        let word: String = value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
            .collect();
        outln!("{f}={word}");
    }
    Ok(())
}

/// `ctl leader --away-from ID`: if node `from` leads, hands leadership to the most caught-up
/// ready voter and waits until the cluster agrees on it. Returns the leader afterwards.
pub async fn leader_away(
    client: &ApiClient,
    nodes: &[String],
    from: u64,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    let view = cluster_view(client, nodes).await?;
    let Some(leader) = view.agreed_leader() else {
        bail!("the voters do not agree on a leader; not moving leadership");
    };
    if leader != from {
        return Ok(leader);
    }
    let target = view
        .voters
        .iter()
        .filter(|id| **id != from)
        .filter_map(|id| view.members.get(id))
        .filter(|m| m.status.is_ok() && m.not_ready.is_none())
        .max_by_key(|m| m.applied())
        .map(|m| m.id)
        .context("no other ready voter to take over leadership")?;
    let api = &view.members[&leader].api;
    let url = format!("{}/cluster/leader", client.base_url(api));
    let body = bytes::Bytes::from(serde_json::to_vec(&v1::LeaderRequest { id: target })?);
    let r = client
        .send(hyper::Method::POST, &url, Some(body), &[])
        .await
        .map_err(Failure::no_answer)?;
    if !r.status.is_success() {
        bail!(
            "hand-over to node {target} refused: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    loop {
        let view = cluster_view(client, nodes).await?;
        match view.agreed_leader() {
            Some(l) if l != from => return Ok(l),
            _ if Instant::now() > deadline => {
                bail!("node {from} still leads (or no leader is agreed) after {timeout:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// `ctl wait-caught-up ID`: waits until node `id` is ready, follows an agreed leader and has
/// applied everything the leader had applied when the wait began.
pub async fn wait_caught_up(
    client: &ApiClient,
    nodes: &[String],
    id: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut target = None;
    let mut last_problem = String::from("no answer yet");
    while started.elapsed() < timeout {
        match cluster_view(client, nodes).await {
            Ok(view) => {
                let leader = view.agreed_leader();
                if target.is_none() {
                    target = leader
                        .and_then(|l| view.members.get(&l))
                        .and_then(MemberView::applied);
                }
                match (view.members.get(&id), target) {
                    (None, _) => last_problem = format!("node {id} is not a member"),
                    (_, None) => last_problem = "no agreed leader".into(),
                    (Some(m), Some(t)) => {
                        if let Some(r) = &m.not_ready {
                            last_problem = format!("not ready: {r}");
                        } else if m.leader_id() != leader {
                            last_problem = "does not follow the agreed leader yet".into();
                        } else if m.applied().unwrap_or(0) < t {
                            last_problem = format!("applied {} of {t}", m.applied().unwrap_or(0));
                        } else {
                            return Ok(started.elapsed());
                        }
                    }
                }
            }
            Err(e) => last_problem = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("node {id} did not catch up within {timeout:?}: {last_problem}")
}
