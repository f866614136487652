//! `GET /watch`: the change stream, as server-sent events (contract: `sonraft_client::v1`'s
//! `watch` module; design: docs/DESIGN.md, "The change stream").
//!
//! What it reads: the history in the store (every applied or refused change set, pending
//! proposals and their decisions, undone changes as `fallback` change sets), from the cursor
//! the client asks for, in pages; the node's Raft metrics for the cluster's state and as the
//! signal that something was applied; the image's KPI summaries. Nothing is recorded for the
//! stream's sake: a reconnect reads the same store from where the client left off.
//!
//! Bounds, so that watchers cannot grow the node: at most [`MAX_WATCHERS`] streams at once (503
//! beyond); one producer task per stream that reads the store one page at a time and hands
//! events to the response through a channel of [`BUFFER`] events; a client that leaves an event
//! untaken for [`SLOW_CLIENT`] while that channel is full is sent a `closed` event
//! (`slow_client`, with where to resume) and dropped; a comment every [`HEARTBEAT`] keeps
//! proxies from closing an idle stream. A stopping node ends every stream with `closed`
//! (`node_stopping`), so that streams never hold up its graceful stop.
//!
//! - [`producer`]: the per-stream task: catch up from the store, then follow;
//! - [`stream`]: the response side, which lets the `closed` event overtake what is buffered.

mod producer;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sonraft_client::v1;
use sonraft_storage::HistoryCursor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot, watch};

use super::error::{ApiError, Params};
use super::front_door::Caller;
use crate::Node;
use crate::access::Role;

/// Most streams one node serves at once.
pub const MAX_WATCHERS: usize = 64;
/// Of those, most held by read-only tokens: the rest stay for operators (a wall of NOC
/// screens, or one read-only token opening streams in a loop, must not lock them out).
pub const MAX_READ_ONLY_WATCHERS: usize = 48;
/// Events buffered per stream between its producer and the connection.
pub const BUFFER: usize = 256;
/// How long a full buffer may wait for the client before the client is dropped.
pub const SLOW_CLIENT: Duration = Duration::from_secs(10);
/// Interval of the heartbeat comments.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// History records read from the store at a time.
const PAGE: usize = 256;

impl super::error::QueryKinds for v1::WatchQuery {
    const FIELD_KINDS: &'static [(&'static str, &'static str)] =
        &[("from_index", "bad_from_index"), ("kpis", "bad_kpis")];
}

/// The streams of one node: the slots left, and the signal that ends them all.
pub struct Watchers {
    slots: Arc<Semaphore>,
    read_only: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

/// A stream's place: one of [`MAX_WATCHERS`], and for a read-only caller also one of
/// [`MAX_READ_ONLY_WATCHERS`]. Given back when the stream ends.
pub struct Slot {
    _any: OwnedSemaphorePermit,
    _read_only: Option<OwnedSemaphorePermit>,
}

impl Default for Watchers {
    fn default() -> Self {
        Watchers {
            slots: Arc::new(Semaphore::new(MAX_WATCHERS)),
            read_only: Arc::new(Semaphore::new(MAX_READ_ONLY_WATCHERS)),
            stop: watch::channel(false).0,
        }
    }
}

impl Watchers {
    /// A place for a new stream of a caller of `role` (`None`: unknown, counted as read-only).
    pub fn admit(&self, role: Option<Role>) -> Result<Slot, TryAcquireError> {
        let read_only = match role {
            Some(Role::Operator | Role::Admin) => None,
            _ => Some(self.read_only.clone().try_acquire_owned()?),
        };
        Ok(Slot {
            _any: self.slots.clone().try_acquire_owned()?,
            _read_only: read_only,
        })
    }

    /// Ends every stream (with a `closed` event) and refuses new ones: the node is stopping.
    pub fn close(&self) {
        self.slots.close();
        self.read_only.close();
        self.stop.send_replace(true);
    }
}

/// Where a stream starts: the first record to send, and whether the client asked for it (a
/// stream asked to start before the oldest record held says so first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Start {
    from: HistoryCursor,
    asked: bool,
}

/// The start of a stream: after `Last-Event-ID` (the cursor `INDEX.POSITION` of the last
/// record received; a bare `INDEX` means all of entry INDEX was received), else at the records
/// of entry `from_index`, else after the last applied entry.
fn start_of(
    from_index: Option<u64>,
    last_event_id: Option<&str>,
    applied: u64,
) -> Result<Start, ApiError> {
    if let Some(id) = last_event_id {
        let bad = || {
            ApiError::bad_request(
                "bad_last_event_id",
                format!(
                    "Last-Event-ID {:?} is not the id of a /watch event (INDEX.POSITION)",
                    id.chars().take(40).collect::<String>()
                ),
            )
        };
        let from = match id.split_once('.') {
            Some(_) => {
                let c: HistoryCursor = id.parse().map_err(|_| bad())?;
                HistoryCursor {
                    index: c.index,
                    position: c.position.checked_add(1).ok_or_else(bad)?,
                }
            }
            None => {
                let c: HistoryCursor = id.parse().map_err(|_| bad())?;
                HistoryCursor {
                    index: c.index.checked_add(1).ok_or_else(bad)?,
                    position: 0,
                }
            }
        };
        return Ok(Start { from, asked: true });
    }
    Ok(match from_index {
        Some(index) => Start {
            from: HistoryCursor { index, position: 0 },
            asked: true,
        },
        None => Start {
            from: HistoryCursor {
                index: applied.saturating_add(1),
                position: 0,
            },
            asked: false,
        },
    })
}

/// The `gap` to announce when `start` lies before the oldest record held and records may have
/// been dropped there. A node cannot tell after a restart whether it ever trimmed its history;
/// it assumes it did once it holds nine tenths of what the policy keeps, or when the client's
/// own last record is gone.
fn gap_of(start: Start, span: sonraft_storage::HistorySpan) -> Option<v1::WatchGap> {
    let oldest = span.oldest?;
    if !start.asked || start.from.index >= oldest {
        return None;
    }
    let full = span.records.saturating_add(span.keep / 10) >= span.keep;
    let own_record_gone = start.from.position > 0;
    if !full && !own_record_gone {
        return None;
    }
    Some(v1::WatchGap {
        asked_from: start.from.to_string(),
        oldest_held: oldest,
        detail: format!(
            "this node holds the history from log entry {oldest} on (it keeps the newest {} records); \
             records of entries {}..{oldest}, if there were any, are not sent",
            span.keep, start.from.index
        ),
    })
}

/// `GET /watch[?from_index=N][&kpis=false]` with an optional `Last-Event-ID` header.
pub async fn watch(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::WatchQuery>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request("bad_last_event_id", "Last-Event-ID is not text")
        })?),
    };
    let applied = node.store().with_applied_image(|_, applied| applied);
    let start = start_of(q.from_index, last_event_id, applied)?;
    let watchers = node.watchers();
    let permit = watchers.admit(caller.map(|c| c.0.0)).map_err(|e| {
        let detail = match e {
            TryAcquireError::Closed => "this node is stopping; watch another node",
            TryAcquireError::NoPermits => {
                "this node serves as many streams as it will; try again later or watch another node"
            }
        };
        ApiError::unavailable("too_many_watchers", detail).retry_after(5)
    })?;
    let gap = gap_of(start, node.store().history_span());
    let (tx, rx) = mpsc::channel(BUFFER);
    let (last_word_tx, last_word_rx) = oneshot::channel();
    let task = producer::Producer {
        node: node.clone(),
        next: start.from,
        kpis: q.kpis.unwrap_or(true),
        events: tx,
        last_word: Some(last_word_tx),
        stop: watchers.stop.subscribe(),
        _slot: permit,
    };
    tokio::spawn(task.run(gap));
    let keep_alive = KeepAlive::new().interval(HEARTBEAT).text("heartbeat");
    Ok(Sse::new(stream::Feed::new(rx, last_word_rx))
        .keep_alive(keep_alive)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(index: u64, position: u32) -> HistoryCursor {
        HistoryCursor { index, position }
    }

    #[test]
    fn a_stream_resumes_right_after_the_last_event_id_and_starts_at_from_index() {
        let at = |from_index, id| start_of(from_index, id, 40).unwrap().from;
        assert_eq!(at(None, Some("12.3")), cursor(12, 4), "after record 12.3");
        assert_eq!(at(None, Some("12")), cursor(13, 0), "after all of entry 12");
        assert_eq!(
            at(Some(5), Some("12.0")),
            cursor(12, 1),
            "the header wins: it is where a reconnecting browser left off"
        );
        assert_eq!(at(Some(5), None), cursor(5, 0), "entry 5 included");
        assert_eq!(at(None, None), cursor(41, 0), "after the applied entry");
        assert!(!start_of(None, None, 40).unwrap().asked);
        for bad in [
            "",
            "x",
            "1.2.3",
            "-1",
            "18446744073709551615",
            "1.4294967295",
        ] {
            let e = start_of(None, Some(bad), 40).unwrap_err();
            assert_eq!(e.kind, "bad_last_event_id", "{bad:?}");
        }
    }

    #[test]
    fn a_gap_is_announced_only_when_asked_for_records_that_may_have_been_dropped() {
        let span = |oldest, records| sonraft_storage::HistorySpan {
            oldest: Some(oldest),
            records,
            keep: 1000,
        };
        let asked = |index, position| Start {
            from: cursor(index, position),
            asked: true,
        };
        let g = gap_of(asked(10, 0), span(500, 1000)).expect("a full history was trimmed");
        assert_eq!((g.asked_from.as_str(), g.oldest_held), ("10.0", 500));
        assert!(
            gap_of(asked(10, 0), span(500, 20)).is_none(),
            "a young history: nothing before its first record"
        );
        assert!(
            gap_of(asked(10, 3), span(500, 20)).is_some(),
            "the client's own last record is gone"
        );
        assert!(gap_of(asked(500, 0), span(500, 1000)).is_none());
        let unasked = Start {
            from: cursor(10, 0),
            asked: false,
        };
        assert!(gap_of(unasked, span(500, 1000)).is_none());
    }

    #[test]
    fn read_only_streams_leave_room_for_operators() {
        let w = Watchers::default();
        let readers: Vec<Slot> = (0..MAX_READ_ONLY_WATCHERS)
            .map(|_| w.admit(Some(Role::ReadOnly)).expect("a read-only slot"))
            .collect();
        assert!(matches!(
            w.admit(Some(Role::ReadOnly)),
            Err(TryAcquireError::NoPermits)
        ));
        assert!(
            w.admit(None).is_err(),
            "an unknown caller counts as read-only"
        );
        let operators: Vec<Slot> = (MAX_READ_ONLY_WATCHERS..MAX_WATCHERS)
            .map(|_| w.admit(Some(Role::Operator)).expect("an operator's slot"))
            .collect();
        assert!(
            w.admit(Some(Role::Admin)).is_err(),
            "all {MAX_WATCHERS} taken"
        );
        drop(readers);
        assert!(w.admit(Some(Role::ReadOnly)).is_ok(), "a slot comes back");
        drop(operators);
        w.close();
        assert!(matches!(
            w.admit(Some(Role::Admin)),
            Err(TryAcquireError::Closed)
        ));
    }
}
