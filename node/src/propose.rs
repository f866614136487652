//! How a command gets into the Raft log.
//!
//! Only the leader appends. It stamps the envelope with its clock (the log time the rules
//! use), refuses command formats newer than the cluster's effective version (the lowest format
//! any voter advertised), and returns the applied outcome once the entry is committed —
//! durable on a quorum — and applied locally.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, Fatal, RaftError};
use sonraft_raft::codec;
use sonraft_raft::command::{
    COMMAND_FORMAT, Command, Envelope, MAX_CHANGE_SETS_PER_ENTRY, Response,
};
use sonraft_raft::model::NodeRelease;
use sonraft_raft::transport::{PeerCallError, PeerReply, PeerRpc};
use sonraft_raft::{NodeId, NodeInfo};

use crate::Node;

/// Why a command was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// Not appended here: nothing of it was applied, it may be proposed again elsewhere.
    #[error("this node is not the leader")]
    NotLeader(Option<(NodeId, NodeInfo)>),
    #[error(
        "command format {format} is newer than the cluster's effective format {effective}; upgrade every voter first"
    )]
    FormatTooNew { format: u16, effective: u16 },
    /// Appended, but no outcome came within the bound: it may or may not be applied (the
    /// leader lost its quorum, or a snapshot covered the entry and openraft never answers
    /// for those). Read what it would change before proposing it again.
    #[error(
        "no outcome within {} ms: the command may or may not have been applied (the leader lost its quorum, or leadership changed); read the current state before retrying",
        .0.as_millis()
    )]
    OutcomeUnknown(Duration),
    /// Not appended: this leader has heard from no majority for the given time (cut off; see
    /// `node::quorum`). Nothing of it was applied; it may be proposed again, elsewhere.
    #[error(
        "this leader has heard from no majority of the cluster for {} ms (cut off?); nothing was applied: retry, at another node if this one stays cut off",
        .0.as_millis()
    )]
    NoQuorum(Duration),
    /// Refused before it was appended: the command cannot go into one log entry as it is (too
    /// many change sets, or it does not encode).
    #[error("{0}")]
    Invalid(String),
    /// The node is stopping: it proposes nothing more.
    #[error("the node is stopping")]
    ShuttingDown,
    /// This node's Raft core stopped (the node is stopping) or failed (a storage error, a
    /// panic; see its log). Whether an appended command was applied is not known.
    #[error(transparent)]
    RaftStopped(Box<Fatal<NodeId>>),
    /// The leader did not take the command: it refused it or failed to commit it, in its words.
    #[error("{0}")]
    LeaderFailed(String),
    /// The leader could not be reached; nothing was sent.
    #[error("leader not reached: {0}")]
    LeaderUnreachable(String),
    /// An answer this node does not understand (a bug or a release mismatch), in its words.
    #[error("{0}")]
    UnexpectedAnswer(String),
}

/// The error of an openraft client write.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>;

/// Classifies a failed client write by openraft's error type: a follower's refusal names the
/// leader it knows of; anything else stopped the Raft core. A membership error cannot come of
/// a normal entry; should it, it is this node's answer to an unexpected situation.
impl From<WriteError> for ProposeError {
    fn from(e: WriteError) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ProposeError::NotLeader(f.leader_id.zip(f.leader_node))
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ProposeError::UnexpectedAnswer(e.to_string())
            }
            RaftError::Fatal(f) => ProposeError::RaftStopped(Box::new(f)),
        }
    }
}

/// Longest wait for an import's outcome: an image of 100,000 cells takes tens of seconds to
/// commit and apply.
const IMPORT_OUTCOME_BOUND: Duration = Duration::from_secs(600);

/// Milliseconds since the Unix epoch on this node's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Commits `command` through Raft and returns its log index and applied response.
    pub async fn propose(&self, command: &Command) -> Result<(u64, Response), ProposeError> {
        // The cluster's effective format: what every voter applies. The entry carries it, and
        // its change sets are judged by that format's rules on every node (format 4: the SON
        // controls and trials; see `sonraft_raft::rules`).
        let format = command.format();
        let effective = self.store().effective_format(&self.voters());
        if format > 1 && format > effective {
            return Err(ProposeError::FormatTooNew { format, effective });
        }
        let many = match command {
            Command::ChangeSets(list) => Some((list.len(), "change sets")),
            Command::Verdicts(list) => Some((list.len(), "verdicts")),
            _ => None,
        };
        if let Some((n, what)) = many
            && n > MAX_CHANGE_SETS_PER_ENTRY
        {
            // Entity versions count on it (see `sonraft_raft::model::import`); an undone
            // verdict writes like a change set.
            return Err(ProposeError::Invalid(format!(
                "{n} {what} in one entry; at most {MAX_CHANGE_SETS_PER_ENTRY}"
            )));
        }
        let envelope = Envelope::in_format(command, now_ms(), effective)
            .map_err(|e| ProposeError::Invalid(e.to_string()))?;
        // Counted in flight before it looks at `stopping`, as at the hand-over gate: a stop
        // that set the flag and then saw nothing in flight cannot be overtaken.
        let _in_flight = self.pass_hand_over_gate().await;
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ProposeError::ShuttingDown);
        }
        let started = Instant::now();
        // Every part of an import waits long: its last one checks and applies the whole image,
        // and its entries are large, so that replicating one can keep a majority's
        // acknowledgements away for longer than an election timeout without anything being
        // wrong (seen on a busy machine). An import is an operator's bulk change, not a
        // latency-bound one: it does not give up on a silent quorum either.
        let import = matches!(command, Command::Import(_) | Command::ImportPart(_));
        let bound = if import {
            IMPORT_OUTCOME_BOUND.max(self.config.outcome_bound())
        } else {
            self.config.outcome_bound()
        };
        if !import && let Some(silence) = self.lost_quorum() {
            return Err(ProposeError::NoQuorum(silence));
        }
        let write = tokio::time::timeout(bound, self.raft.client_write(envelope));
        let quorum_lost = async {
            if import {
                std::future::pending::<()>().await;
            }
            self.until_quorum_lost().await
        };
        let result = tokio::select! {
            r = write => r.ok(),
            silence = quorum_lost => {
                metrics::counter!("sonraft_proposals_outcome_unknown_total").increment(1);
                tracing::warn!(
                    silence_ms = silence.as_millis() as u64,
                    "this leader has heard from no majority for an election timeout; a proposal it holds is answered outcome unknown"
                );
                return Err(ProposeError::OutcomeUnknown(started.elapsed()));
            }
        };
        let Some(result) = result else {
            metrics::counter!("sonraft_proposals_outcome_unknown_total").increment(1);
            tracing::warn!(
                bound_ms = bound.as_millis() as u64,
                "a proposal got no outcome within its bound; answered outcome unknown"
            );
            return Err(ProposeError::OutcomeUnknown(bound));
        };
        metrics::histogram!("sonraft_commit_seconds").record(started.elapsed().as_secs_f64());
        let r = result?;
        Ok((r.log_id.index, r.data))
    }
}

impl Node {
    /// The cluster's effective command format; while some voter has not advertised its release
    /// yet (a new cluster, a new voter), waits up to `within` for the adverts.
    pub async fn effective_format(&self, within: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let voters = self.voters();
            let (effective, known) = self.store().effective_format_known(&voters);
            if known || tokio::time::Instant::now() >= deadline {
                return effective;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Node {
    /// Refuses proposals from now on, and waits up to `within` for those already on their way
    /// to the Raft core to be answered: what a graceful stop does before Raft shuts down (the
    /// SON cycle and the antennas' KPI summaries propose until the end).
    pub async fn stop_proposals(&self, within: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        while self.hand_over_gate.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Node {
    /// Waits while leadership is being handed over (afterwards this node no longer leads and
    /// the proposal goes to the successor), never longer than a hand-over may take.
    async fn pass_hand_over_gate(&self) -> crate::gate::Passed<'_> {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(4 * self.config.election_max_ms + 2000);
        self.hand_over_gate.pass(deadline).await
    }

    /// Commits `command` from any node: directly on the leader, otherwise as a peer request to
    /// the leader ([`PeerRpc::Submit`] on its Raft listener, with the cluster secret).
    pub async fn submit(&self, command: &Command) -> Result<(u64, Response), ProposeError> {
        let (leader_id, leader) = match self.propose(command).await {
            Err(ProposeError::NotLeader(Some((id, info)))) => (id, info),
            other => return other,
        };
        let rpc = PeerRpc::Submit {
            format: command.format(),
            command: codec::encode(command).map_err(|e| ProposeError::Invalid(e.to_string()))?,
        };
        // A little longer than the leader waits for the outcome itself.
        let within = self.config.outcome_bound() + Duration::from_secs(1);
        match self
            .peer_client
            .call(Some(leader_id), &leader.raft_addr, &rpc, within)
            .await
        {
            Ok(PeerReply::Submitted(r)) => r.map_err(ProposeError::from),
            Ok(PeerReply::Refused(why)) => Err(ProposeError::LeaderFailed(format!(
                "the leader refused the command: {why}"
            ))),
            Ok(other) => Err(ProposeError::UnexpectedAnswer(format!(
                "the leader answered {other:?} to a command"
            ))),
            // The leader may have appended it: nobody knows.
            Err(PeerCallError::Timeout { after, .. }) => Err(ProposeError::OutcomeUnknown(after)),
            Err(PeerCallError::NotSupported { .. }) => {
                self.submit_to_old_leader(&leader, command).await
            }
            Err(e) => Err(ProposeError::LeaderUnreachable(e.to_string())),
        }
    }

    /// [`Node::submit`] to a leader of a release before peer requests (0.1.0), through its
    /// admin API (`POST /internal/command`, with the operator token), during a rolling upgrade.
    async fn submit_to_old_leader(
        &self,
        leader: &NodeInfo,
        command: &Command,
    ) -> Result<(u64, Response), ProposeError> {
        let body =
            serde_json::to_value(command).map_err(|e| ProposeError::Invalid(e.to_string()))?;
        let r = self
            .peers
            .post(&leader.api_addr, "/internal/command", &body)
            .await
            .map_err(|e| ProposeError::LeaderUnreachable(e.to_string()))?;
        if !r.status.is_success() {
            if r.status == hyper::StatusCode::SERVICE_UNAVAILABLE {
                return Err(ProposeError::NotLeader(None));
            }
            return Err(ProposeError::LeaderFailed(format!(
                "leader answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )));
        }
        let v = r.json();
        let index = v["index"].as_u64().unwrap_or(0);
        let response = serde_json::from_value(v["response"].clone()).map_err(|e| {
            ProposeError::UnexpectedAnswer(format!("leader's answer not understood: {e}"))
        })?;
        Ok((index, response))
    }
}

/// Advertises this node's release and newest command format to the cluster, once the node is
/// part of one, and again whenever the recorded value differs (e.g. after an upgrade).
pub async fn advertise_release(node: Arc<Node>) {
    let mine = NodeRelease {
        node_id: node.id(),
        release: crate::RELEASE.to_string(),
        max_command_format: COMMAND_FORMAT,
    };
    // Soon after a start (a new cluster waits on every voter's advert before it uses newer
    // command formats), then every 2 s.
    let mut pause = Duration::from_millis(200);
    loop {
        tokio::time::sleep(pause).await;
        pause = Duration::from_secs(2);
        let recorded = node.store().release_of(node.id());
        if recorded.as_ref() == Some(&mine) {
            continue;
        }
        if node.leader().is_none() {
            pause = Duration::from_millis(200);
            continue;
        }
        let result = node
            .submit(&Command::Release(mine.clone()))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        match result {
            Ok(()) => {
                tracing::info!(release = %mine.release, format = mine.max_command_format, "advertised this node's release")
            }
            Err(e) => {
                pause = Duration::from_millis(200);
                tracing::debug!(error = %e, "release not advertised yet; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::{ChangeMembershipError, EmptyMembership, ForwardToLeader};

    use super::*;

    fn leader() -> NodeInfo {
        NodeInfo {
            site: "b".into(),
            raft_addr: "b:1".into(),
            api_addr: "b:2".into(),
        }
    }

    #[test]
    fn a_follower_refusing_a_write_is_not_leader_with_the_leader_it_knows() {
        let e = WriteError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader::new(
            2,
            leader(),
        )));
        assert!(
            matches!(ProposeError::from(e), ProposeError::NotLeader(Some((2, ref i))) if *i == leader())
        );
        let e = WriteError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader::empty()));
        assert!(matches!(
            ProposeError::from(e),
            ProposeError::NotLeader(None)
        ));
    }

    #[test]
    fn a_stopped_raft_core_is_raft_stopped_and_says_so_in_openraft_words() {
        let e = ProposeError::from(WriteError::Fatal(Fatal::Stopped));
        assert!(
            matches!(e, ProposeError::RaftStopped(ref f) if **f == Fatal::Stopped),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "raft stopped");
    }

    #[test]
    fn a_membership_error_on_a_normal_write_is_an_unexpected_answer() {
        let e = WriteError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::EmptyMembership(EmptyMembership {}),
        ));
        assert!(matches!(
            ProposeError::from(e),
            ProposeError::UnexpectedAnswer(_)
        ));
    }
}
