//! Linearizable reads, batched: every read needs the leader to confirm with a quorum that it
//! still leads (read index), but concurrent reads can share one confirmation — as long as it
//! *starts* after each of them arrived. Readers take a ticket; one task runs confirmations back
//! to back, each covering every ticket taken before it started.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

use super::Node;

/// Why a linearizable read cannot be served here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("this node is not the leader")]
    NotLeader,
    #[error("{0}")]
    Unavailable(String),
}

/// Shared state of the read confirmations.
pub struct ReadBarrier {
    requested: AtomicU64,
    kick: Notify,
    done: watch::Sender<(u64, Result<(), ReadError>)>,
}

impl Default for ReadBarrier {
    fn default() -> Self {
        ReadBarrier { requested: AtomicU64::new(0), kick: Notify::new(), done: watch::channel((0, Ok(()))).0 }
    }
}

impl ReadBarrier {
    /// Returns once a quorum confirmed leadership after this call began and this node applied
    /// everything committed at that point.
    pub async fn wait(&self) -> Result<(), ReadError> {
        let mut rx = self.done.subscribe();
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.kick.notify_one();
        match rx.wait_for(|(served, _)| *served >= ticket).await {
            Ok(v) => v.1.clone(),
            Err(_) => Err(ReadError::Unavailable("the node is stopping".into())),
        }
    }
}

/// Runs confirmations for the life of the node.
pub async fn run(node: Arc<Node>, barrier: Arc<ReadBarrier>) {
    let mut served = 0;
    loop {
        let wanted = barrier.requested.load(Ordering::SeqCst);
        if wanted == served {
            barrier.kick.notified().await;
            continue;
        }
        let result = match node.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(e) if e.forward_to_leader::<sonraft_raft::NodeInfo>().is_some() => Err(ReadError::NotLeader),
            Err(e) => Err(ReadError::Unavailable(format!("cannot confirm leadership with a quorum: {e}"))),
        };
        served = wanted;
        metrics::counter!("sonraft_read_confirmations_total").increment(1);
        let _previous = barrier.done.send_replace((served, result));
    }
}
