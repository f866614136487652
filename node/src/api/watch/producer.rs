//! One stream's producer: reads the history from the store a page at a time and hands each
//! record to the connection as a `changeset` event; once caught up, follows the node's applied
//! index, and sends the cluster's state, the KPI summaries and closed trials as they change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use sonraft_client::v1;
use sonraft_raft::son::TrialLook;
use sonraft_storage::HistoryCursor;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{PAGE, SLOW_CLIENT};
use crate::Node;
use crate::api::json::history_record;
use crate::api::son::trial_view;

/// Least time between two `kpis` events of one stream.
const KPI_EVERY: Duration = Duration::from_secs(1);

/// Why a producer stopped early.
enum Ended {
    /// The client went away: nobody to tell.
    Gone,
    /// The stream ends with this `closed` event.
    Closed(v1::WatchClosed),
}

/// The state of one stream's producer.
pub(super) struct Producer {
    pub node: Arc<Node>,
    /// The first record not sent yet.
    pub next: HistoryCursor,
    pub kpis: bool,
    /// Each event with its id, if it has one.
    pub events: mpsc::Sender<(Event, Option<String>)>,
    /// Where the `closed` event goes: past the buffered events (see `stream`).
    pub last_word: Option<oneshot::Sender<v1::WatchClosed>>,
    pub stop: watch::Receiver<bool>,
    /// The stream's place among the node's [`super::MAX_WATCHERS`], given back when it ends.
    pub _slot: super::Slot,
}

fn closed(reason: &str, detail: impl Into<String>) -> Ended {
    Ended::Closed(v1::WatchClosed {
        reason: reason.into(),
        detail: detail.into(),
        resume_after: None,
    })
}

fn json_event<T: serde::Serialize>(name: &str, body: &T) -> Event {
    // Our own types always serialize; an empty data line is the harmless fallback.
    Event::default()
        .event(name)
        .json_data(body)
        .unwrap_or_else(|_| Event::default().event(name).data(""))
}

impl Producer {
    /// Runs the stream until the client goes, is too slow, or the node stops.
    pub async fn run(mut self, gap: Option<v1::WatchGap>) {
        metrics::gauge!("sonraft_watch_streams").increment(1.0);
        let Err(ended) = self.follow(gap).await;
        metrics::gauge!("sonraft_watch_streams").decrement(1.0);
        if let Ended::Closed(last) = ended
            && let Some(tx) = self.last_word.take()
        {
            tracing::debug!(reason = %last.reason, "a /watch stream closed");
            let _ = tx.send(last);
        }
    }

    async fn send(&self, event: Event) -> Result<(), Ended> {
        self.send_with_id(event, None).await
    }

    async fn send_with_id(&self, event: Event, id: Option<String>) -> Result<(), Ended> {
        let event = match &id {
            Some(id) => event.id(id),
            None => event,
        };
        match self.events.send_timeout((event, id), SLOW_CLIENT).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Closed(_)) => Err(Ended::Gone),
            Err(SendTimeoutError::Timeout(_)) => {
                metrics::counter!("sonraft_watch_slow_clients_total").increment(1);
                Err(closed(
                    "slow_client",
                    format!(
                        "the client left {} events untaken for {} s; reconnect with Last-Event-ID to go on",
                        super::BUFFER,
                        SLOW_CLIENT.as_secs()
                    ),
                ))
            }
        }
    }

    async fn follow(
        &mut self,
        gap: Option<v1::WatchGap>,
    ) -> Result<std::convert::Infallible, Ended> {
        let mut metrics = self.node.metrics();
        if let Some(gap) = gap {
            self.next = HistoryCursor {
                index: gap.oldest_held,
                position: 0,
            };
            self.send(json_event(v1::event::GAP, &gap)).await?;
        }
        let mut cluster: Option<v1::WatchCluster> = None;
        let mut cluster_shape = None;
        let mut kpis_sent: HashMap<String, u64> = HashMap::new();
        let mut kpis_due = Instant::now();
        let mut caught_up = false;
        // Where the trials stood at the last look, to tell which closed since (none before the
        // first).
        let mut trials_look: Option<TrialLook> = None;
        // The applied index the last read of the store covered.
        let mut read_through: Option<u64> = None;
        loop {
            let (applied, shape) = {
                let m = metrics.borrow_and_update();
                let shape = (
                    m.current_term,
                    m.current_leader,
                    m.state,
                    m.membership_config.log_id().map(|l| l.index),
                );
                (m.last_applied.map_or(0, |l| l.index), shape)
            };
            if read_through.is_none_or(|r| applied > r) {
                loop {
                    // A long catch-up must not hold up a stopping node either.
                    if *self.stop.borrow() {
                        return Err(closed(
                            "node_stopping",
                            "this node is stopping; watch another node",
                        ));
                    }
                    let page = self.read_page().await?;
                    let full = page.len() == PAGE;
                    for (cursor, record) in page {
                        let event = json_event(v1::event::CHANGESET, &record);
                        self.send_with_id(event, Some(cursor.to_string())).await?;
                        self.next = HistoryCursor {
                            index: cursor.index,
                            position: cursor.position.saturating_add(1),
                        };
                    }
                    if !full {
                        break;
                    }
                }
                read_through = Some(applied);
                for t in self.trials_closed(&mut trials_look) {
                    self.send(json_event(v1::event::TRIAL, &t)).await?;
                }
            }
            // The metrics change with every heartbeat; the cluster's shape seldom does.
            if cluster_shape != Some(shape) {
                cluster_shape = Some(shape);
                let now = self.cluster_now();
                if cluster.as_ref() != Some(&now) {
                    self.send(json_event(v1::event::CLUSTER, &now)).await?;
                    cluster = Some(now);
                }
            }
            if !caught_up {
                caught_up = true;
                let body = v1::WatchCaughtUp {
                    node: self.node.id(),
                    applied_index: applied,
                };
                self.send(json_event(v1::event::CAUGHT_UP, &body)).await?;
            }
            if self.kpis && Instant::now() >= kpis_due {
                if let Some(k) = self.kpis_since(&mut kpis_sent) {
                    self.send(json_event(v1::event::KPIS, &k)).await?;
                }
                kpis_due = Instant::now() + KPI_EVERY;
            }
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return Err(closed("node_stopping", "Raft stopped on this node; watch another node"));
                    }
                }
                () = tokio::time::sleep_until(kpis_due), if self.kpis => {}
                _ = self.stop.wait_for(|stop| *stop) => {
                    return Err(closed("node_stopping", "this node is stopping; watch another node"));
                }
                () = self.events.closed() => return Err(Ended::Gone),
            }
        }
    }

    async fn read_page(&self) -> Result<Vec<(HistoryCursor, v1::HistoryRecord)>, Ended> {
        let store = self.node.store().clone();
        let from = self.next;
        let page = tokio::task::spawn_blocking(move || store.history_from(PAGE, from)).await;
        match page {
            Ok(Ok(records)) => Ok(records
                .iter()
                .map(|(cursor, record)| (*cursor, history_record(*cursor, record)))
                .collect()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a /watch stream cannot read the history");
                Err(closed("store_error", e.to_string()))
            }
            Err(e) => Err(closed("store_error", e.to_string())),
        }
    }

    /// The trials that closed since the last look (updated). Nothing on the first look, which
    /// only notes where the trials stand.
    fn trials_closed(&self, look: &mut Option<TrialLook>) -> Vec<v1::Trial> {
        self.node.store().with_image(|image| {
            let son = &image.son;
            let closed = match look.as_ref() {
                Some(before) => son
                    .closed_since(before)
                    .into_iter()
                    .map(|r| trial_view(&r.trial, Some(r)))
                    .collect(),
                None => Vec::new(),
            };
            *look = Some(son.trial_look());
            closed
        })
    }

    fn cluster_now(&self) -> v1::WatchCluster {
        let s = self.node.status();
        v1::WatchCluster {
            node: s.id,
            role: s.role,
            term: s.term,
            leader_id: s.leader_id,
            voters: s.voters,
            learners: s.learners,
        }
    }

    /// The KPI summaries whose period moved since `sent` (updated), if any.
    fn kpis_since(&self, sent: &mut HashMap<String, u64>) -> Option<v1::WatchKpis> {
        let cells = self.node.store().with_image(|image| {
            image
                .kpis
                .values()
                .filter(|k| {
                    sent.get(k.cell.as_str())
                        .is_none_or(|p| *p < k.period_end_ms)
                })
                .map(|k| {
                    let row = vec![
                        k.period_end_ms,
                        u64::from(k.prb_dl_permille),
                        u64::from(k.rrc_conn_mean),
                        u64::from(k.thp_dl_kbps),
                        u64::from(k.ho_att),
                        u64::from(k.ho_succ),
                    ];
                    (k.cell.to_string(), row)
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        });
        if cells.is_empty() {
            return None;
        }
        for (cell, row) in &cells {
            sent.insert(cell.clone(), row[0]);
        }
        Some(v1::WatchKpis {
            fields: v1::KPI_FIELDS.iter().map(|f| f.to_string()).collect(),
            cells,
        })
    }
}
