//! The end-of-run checks: gather evidence from the healed cluster, then judge the history
//! against it.
//!
//! Gathering ([`collect`]) waits until every node has applied the same index and takes each
//! node's digest, the final history and each cell's final state; it is saved as
//! `evidence.json` so that judging ([`verify`], pure) can be re-run offline with
//! `sonraft-campaign check`. The final history is fetched in **one page** of the newest
//! 100 000 records (the node's cap per request): paging with `before` may skip records when
//! several change sets share a log entry (issue 18). When the page is full, what lies at or
//! below its oldest index (the horizon) is left to the linearizability check, which needs no
//! history: a lost acknowledged write contradicts the reads and writes after it.
//!
//! The judgements:
//! - every acknowledged change set is in the final history, as applied, with the version it
//!   was acknowledged with; none applied twice;
//! - no two acknowledgements name the same new version of one cell;
//! - each cell's applied change sets form the chain `initial + 1 ..= final` version, and the
//!   last one wrote the final value;
//! - each cell's history is linearizable (see `linearizability`), with writes whose answer
//!   was lost resolved by the final history where it knows them;
//! - all nodes hold the same image (equal digests at equal applied index).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::{Digest, HistoryRecord};
use crate::cluster::Cluster;
use crate::history::{Event, Outcome, Request};
use crate::linearizability::{Budget, Call, Micros, Operation, Register, Return, Verdict, check};
use crate::nemesis::FaultRecord;
use crate::report::Anomaly;
use crate::witness;

/// The largest history page the node serves.
pub const HISTORY_PAGE: usize = 100_000;

/// A cell's state read at a known time.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Observed {
    pub state: Register,
    pub invoke: Micros,
    pub complete: Micros,
}

/// Everything the judgement needs besides the client history.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// The run's token prefix: change sets whose reason starts with it are the campaign's.
    pub token_prefix: String,
    pub initial: BTreeMap<String, Observed>,
    pub finals: BTreeMap<String, Observed>,
    pub history: Vec<HistoryRecord>,
    /// Whether the final history could be read at all (if not, the checks that need it are
    /// skipped and `not_converged` says why).
    #[serde(default)]
    pub history_read: bool,
    /// When the history had been read: every change set it records as applied took effect
    /// before.
    #[serde(default)]
    pub history_at: Micros,
    /// Digest per node id.
    pub digests: BTreeMap<u64, Digest>,
    /// Why the nodes did not converge, if they did not.
    pub not_converged: Option<String>,
}

/// Waits until all nodes have applied the same index and collects the evidence.
pub async fn collect(
    cluster: &Cluster,
    token_prefix: &str,
    initial: BTreeMap<String, Observed>,
    clock: &crate::history::History,
    cells: &[String],
) -> Evidence {
    let mut evidence = Evidence {
        token_prefix: token_prefix.to_string(),
        initial,
        ..Evidence::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut digests = BTreeMap::new();
        let mut missing = Vec::new();
        for (i, s) in cluster.slots.iter().enumerate() {
            match cluster.api.digest(&cluster.addr(i)).await {
                Ok(d) => {
                    digests.insert(s.spec.id, d);
                }
                Err(e) => missing.push(format!("node {}: {e}", s.spec.id)),
            }
        }
        let indexes: Vec<u64> = digests.values().map(|d| d.applied_index).collect();
        let same = missing.is_empty() && indexes.windows(2).all(|w| w[0] == w[1]);
        if same || Instant::now() > deadline {
            if !same {
                evidence.not_converged = Some(format!(
                    "applied indexes {:?}; {}",
                    digests
                        .iter()
                        .map(|(id, d)| (*id, d.applied_index))
                        .collect::<Vec<_>>(),
                    missing.join("; ")
                ));
            }
            evidence.digests = digests;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = cluster.leader().await.map_or(0, |(l, _)| l);
    let addr = cluster.addr(leader);
    for attempt in 0..5 {
        match cluster.api.history(&addr, HISTORY_PAGE).await {
            Ok(h) => {
                evidence.history = h;
                evidence.history_read = true;
                evidence.history_at = clock.now();
                break;
            }
            Err(e) if attempt == 4 => {
                evidence.not_converged = Some(format!("cannot read the final history: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    for cell in cells {
        let invoke = clock.now();
        if let Ok(s) = cluster
            .api
            .read_cell(&addr, cell, Duration::from_secs(10))
            .await
        {
            evidence.finals.insert(
                cell.clone(),
                Observed {
                    state: Register {
                        version: s.version,
                        value: s.electrical_tilt,
                    },
                    invoke,
                    complete: clock.now(),
                },
            );
        }
    }
    evidence
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Verdicts {
    pub anomalies: Vec<Anomaly>,
    pub notes: Vec<String>,
    pub cells_checked: usize,
}

/// The written tilt of a history record, if it wrote `electrical_tilt`.
fn written_tilt(r: &HistoryRecord) -> Option<i64> {
    r.writes
        .iter()
        .find(|w| w.param == "electrical_tilt")
        .and_then(|w| w.value.as_i64())
}

/// The faults that overlap `[from, to]` (the fault in progress or healing at `from`
/// included), at most `most`, as report lines.
fn faults_between(faults: &[FaultRecord], from: Micros, to: Micros, most: usize) -> Vec<String> {
    faults
        .iter()
        .filter(|f| f.start_us <= to && f.healed_us >= from)
        .take(most)
        .map(FaultRecord::line)
        .collect()
}

/// One operation as a report line, with the client and node that made it.
fn render(op: &Operation, events: &BTreeMap<u64, &Event>) -> String {
    let who = events.get(&op.id).map_or_else(
        || "final read".to_string(),
        |e| format!("client {} via slot {}", e.client, e.slot),
    );
    let call = match op.call {
        Call::Read => "read".to_string(),
        Call::Cas { expect, value } => format!("write tilt {value} if v{expect}"),
    };
    let ret = match op.ret {
        Return::Read { version, value } => format!("v{version} tilt {value}"),
        Return::Applied { version } => format!("applied v{version}"),
        Return::Conflict { current } => format!("conflict, current v{current}"),
        Return::Unknown => "unknown".to_string(),
    };
    let done = op.complete.map_or_else(
        || "no answer".to_string(),
        |c| format!("{:.6} s", c as f64 / 1e6),
    );
    format!(
        "#{} {who} [{:.6} s -> {done}] {call} => {ret}",
        op.id,
        op.invoke as f64 / 1e6
    )
}

/// Judges the client history against the evidence and the faults injected; writes witnesses
/// into `run_dir`.
pub fn verify(
    events: &[Event],
    faults: &[FaultRecord],
    evidence: &Evidence,
    budget: Budget,
    run_dir: &Path,
) -> Verdicts {
    let mut v = Verdicts::default();
    if let Some(why) = &evidence.not_converged {
        v.anomalies.push(Anomaly::NotConverged {
            detail: why.clone(),
        });
    }
    digests_agree(evidence, &mut v);
    let horizon = horizon(evidence);
    if horizon > 0 {
        v.notes.push(format!(
            "the final history filled a whole page ({HISTORY_PAGE} records, down to index {horizon}): acknowledgements and version chains at or below that index are left to the linearizability check"
        ));
    }
    // The campaign's records in the final history, by token.
    let mut by_token: BTreeMap<&str, Vec<&HistoryRecord>> = BTreeMap::new();
    for r in &evidence.history {
        if r.reason.starts_with(&evidence.token_prefix) {
            by_token.entry(r.reason.as_str()).or_default().push(r);
        }
    }
    for (token, records) in &by_token {
        let applied: Vec<u64> = records
            .iter()
            .filter(|r| r.kind() == "applied")
            .map(|r| r.index)
            .collect();
        if applied.len() > 1 {
            v.anomalies.push(Anomaly::AppliedTwice {
                token: token.to_string(),
                indexes: applied,
            });
        }
    }
    if evidence.history_read {
        acknowledgements_kept(events, faults, &by_token, horizon, &mut v);
    } else {
        v.notes.push(
            "the final history could not be read: lost acknowledgements and version chains were not checked".into(),
        );
    }
    let judged = Judged {
        events,
        faults,
        evidence,
        by_token: &by_token,
        budget,
        run_dir,
    };
    for (cell, initial) in &evidence.initial {
        if evidence.history_read {
            version_chain(cell, initial, evidence, horizon, &mut v);
        }
        judged.linearizable(cell, initial, &mut v);
        v.cells_checked += 1;
    }
    v
}

fn digests_agree(evidence: &Evidence, v: &mut Verdicts) {
    let mut distinct: Vec<(&u64, &Digest)> = Vec::new();
    for (id, d) in &evidence.digests {
        if !distinct.iter().any(|(_, e)| *e == d) {
            distinct.push((id, d));
        }
    }
    let same_index = evidence
        .digests
        .values()
        .map(|d| d.applied_index)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        <= 1;
    if distinct.len() > 1 && same_index {
        v.anomalies.push(Anomaly::DivergedImages {
            digests: evidence.digests.clone(),
        });
    }
}

/// The index at or below which the fetched history may be incomplete: 0 if the page held
/// everything, else its oldest index (an entry of many change sets may straddle the page's
/// end).
fn horizon(evidence: &Evidence) -> u64 {
    if evidence.history.len() < HISTORY_PAGE {
        return 0;
    }
    evidence.history.iter().map(|r| r.index).min().unwrap_or(0)
}

fn acknowledgements_kept(
    events: &[Event],
    faults: &[FaultRecord],
    by_token: &BTreeMap<&str, Vec<&HistoryRecord>>,
    horizon: u64,
    v: &mut Verdicts,
) {
    let mut by_version: BTreeMap<(&str, u64), Vec<&str>> = BTreeMap::new();
    for e in events {
        let (Request::Write { token, .. }, Outcome::Applied { index, version }) =
            (&e.request, &e.outcome)
        else {
            continue;
        };
        by_version
            .entry((e.cell.as_str(), *version))
            .or_default()
            .push(token);
        let entity = format!("cell/{}", e.cell);
        let in_history = by_token
            .get(token.as_str())
            .and_then(|rs| rs.iter().find_map(|r| r.applied_version(&entity)));
        match in_history {
            None if *index <= horizon => {}
            None => v.anomalies.push(Anomaly::LostAcknowledgedWrite {
                cell: e.cell.clone(),
                token: token.clone(),
                index: *index,
                version: *version,
                acknowledged_at_us: e.complete,
                slot: e.slot,
                faults_around: faults_between(faults, e.invoke, Micros::MAX, 6),
            }),
            Some(h) if h != *version => v.anomalies.push(Anomaly::AcknowledgementDisagrees {
                cell: e.cell.clone(),
                token: token.clone(),
                acknowledged: *version,
                in_history: Some(h),
            }),
            Some(_) => {}
        }
    }
    for ((cell, version), tokens) in by_version {
        if tokens.len() > 1 {
            v.anomalies.push(Anomaly::VersionAcknowledgedTwice {
                cell: cell.to_string(),
                version,
                tokens: tokens.iter().map(|t| t.to_string()).collect(),
            });
        }
    }
}

/// Each cell's applied change sets above the horizon must carry consecutive versions ending
/// at the cell's final version (starting right after the initial one when the history is
/// complete), and the last one must have written the final value.
fn version_chain(
    cell: &str,
    initial: &Observed,
    evidence: &Evidence,
    horizon: u64,
    v: &mut Verdicts,
) {
    let entity = format!("cell/{cell}");
    let mut applied: Vec<(u64, u64, Option<i64>)> = evidence
        .history
        .iter()
        .filter(|r| r.index > horizon)
        .filter_map(|r| {
            r.applied_version(&entity)
                .map(|ver| (r.index, ver, written_tilt(r)))
        })
        .collect();
    applied.sort_unstable();
    let Some(last) = evidence.finals.get(cell) else {
        v.anomalies.push(Anomaly::BrokenVersionChain {
            cell: cell.to_string(),
            detail: "the final state of the cell could not be read".into(),
        });
        return;
    };
    let first = match (horizon, applied.first()) {
        (0, _) | (_, None) => initial.state.version + 1,
        (_, Some((_, ver, _))) => *ver,
    };
    let versions: Vec<u64> = applied.iter().map(|(_, ver, _)| *ver).collect();
    let expected: Vec<u64> = (first..=last.state.version).collect();
    if versions != expected {
        let at = versions
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(versions.len().min(expected.len()));
        v.anomalies.push(Anomaly::BrokenVersionChain {
            cell: cell.to_string(),
            detail: format!(
                "{} applied change sets in the history, expected versions {first}..={}; first difference at position {at}: history has version {:?} (log index {:?}), expected {:?}",
                versions.len(),
                last.state.version,
                versions.get(at),
                applied.get(at).map(|a| a.0),
                expected.get(at),
            ),
        });
    } else if let Some((index, _, Some(value))) = applied.last()
        && *value != last.state.value
    {
        v.anomalies.push(Anomaly::BrokenVersionChain {
            cell: cell.to_string(),
            detail: format!(
                "the last applied change set (index {index}) wrote {value}, the cell holds {}",
                last.state.value
            ),
        });
    }
}

/// The checker's operations of one cell.
pub fn operations(
    cell: &str,
    events: &[Event],
    evidence: &Evidence,
    by_token: &BTreeMap<&str, Vec<&HistoryRecord>>,
) -> Vec<Operation> {
    let entity = format!("cell/{cell}");
    let mut ops: Vec<Operation> = events
        .iter()
        .filter(|e| e.cell == cell)
        .filter_map(|e| {
            let (call, ret, complete) = match (&e.request, &e.outcome) {
                (Request::Read, Outcome::Read { version, value }) => (
                    Call::Read,
                    Return::Read {
                        version: *version,
                        value: *value,
                    },
                    Some(e.complete),
                ),
                (Request::Read, _) => return None,
                (
                    Request::Write {
                        expect,
                        value,
                        token,
                    },
                    outcome,
                ) => {
                    let call = Call::Cas {
                        expect: *expect,
                        value: *value,
                    };
                    match outcome {
                        Outcome::Applied { version, .. } => (
                            call,
                            Return::Applied { version: *version },
                            Some(e.complete),
                        ),
                        Outcome::Conflict {
                            current: Some(current),
                        } => (
                            call,
                            Return::Conflict { current: *current },
                            Some(e.complete),
                        ),
                        Outcome::Unknown { .. } => {
                            let records = by_token.get(token.as_str());
                            let applied = records
                                .and_then(|rs| rs.iter().find_map(|r| r.applied_version(&entity)));
                            match (applied, records) {
                                (Some(version), _) => (
                                    call,
                                    Return::Applied { version },
                                    Some(evidence.history_at).filter(|&t| t > e.invoke),
                                ),
                                // Known from the history to have been refused: no effect.
                                (None, Some(_)) => return None,
                                (None, None) => (call, Return::Unknown, None),
                            }
                        }
                        // A conflict without a version (entity gone), rejected, invalid,
                        // failed: no effect on the register.
                        _ => return None,
                    }
                }
            };
            Some(Operation {
                id: e.id,
                invoke: e.invoke,
                complete,
                call,
                ret,
            })
        })
        .collect();
    if let Some(f) = evidence.finals.get(cell) {
        ops.push(Operation {
            id: 0,
            invoke: f.invoke,
            complete: Some(f.complete),
            call: Call::Read,
            ret: Return::Read {
                version: f.state.version,
                value: f.state.value,
            },
        });
    }
    ops
}

/// What the linearizability judgement of every cell shares.
struct Judged<'a> {
    events: &'a [Event],
    faults: &'a [FaultRecord],
    evidence: &'a Evidence,
    by_token: &'a BTreeMap<&'a str, Vec<&'a HistoryRecord>>,
    budget: Budget,
    run_dir: &'a Path,
}

impl Judged<'_> {
    fn linearizable(&self, cell: &str, initial: &Observed, v: &mut Verdicts) {
        let ops = operations(cell, self.events, self.evidence, self.by_token);
        match check(initial.state, &ops, self.budget) {
            Verdict::Linearizable => {}
            Verdict::Undecided { steps } => v.anomalies.push(Anomaly::Undecided {
                cell: cell.to_string(),
                steps,
            }),
            Verdict::NotLinearizable(violation) => {
                let file = self.run_dir.join(format!("witness-{cell}.json"));
                let reduced = witness::reduce(initial.state, &ops, self.budget);
                let body = serde_json::json!({
                    "cell": cell,
                    "initial": initial.state,
                    "violation": violation,
                    "witness": reduced,
                });
                let _ = std::fs::write(
                    &file,
                    serde_json::to_string_pretty(&body).unwrap_or_default(),
                );
                let by_id: BTreeMap<u64, &Event> = self.events.iter().map(|e| (e.id, e)).collect();
                let (first_bad, at_us, excerpt) = match &reduced {
                    Some(w) => (w.first_bad, w.at, witness::excerpt(w, 1)),
                    None => (violation.stuck_on, 0, Vec::new()),
                };
                let from = excerpt.iter().map(|o| o.invoke).min().unwrap_or(0);
                v.anomalies.push(Anomaly::NotLinearizable {
                    cell: cell.to_string(),
                    first_bad,
                    at_us,
                    excerpt: excerpt.iter().map(|o| render(o, &by_id)).collect(),
                    faults_around: faults_between(self.faults, from, at_us, 8),
                    witness_file: file.display().to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PREFIX: &str = "campaign t ";

    fn record(index: u64, token: &str, outcome: serde_json::Value, value: i64) -> HistoryRecord {
        serde_json::from_value(json!({
            "index": index,
            "reason": format!("{PREFIX}{token}"),
            "writes": [{"entity": "cell/A", "param": "electrical_tilt", "value": value}],
            "outcome": outcome,
        }))
        .expect("a history record")
    }

    fn applied(index: u64, token: &str, version: u64, value: i64) -> HistoryRecord {
        record(
            index,
            token,
            json!({"outcome": "applied", "index": index, "versions": {"cell/A": version}}),
            value,
        )
    }

    fn write(
        id: u64,
        t: (Micros, Micros),
        token: &str,
        expect: u64,
        value: i64,
        outcome: Outcome,
    ) -> Event {
        Event {
            id,
            client: 0,
            cell: "A".into(),
            slot: 1,
            addr: "a".into(),
            invoke: t.0,
            complete: t.1,
            request: Request::Write {
                expect,
                value,
                token: format!("{PREFIX}{token}"),
            },
            outcome,
        }
    }

    fn observed(version: u64, value: i64, at: Micros) -> Observed {
        Observed {
            state: Register { version, value },
            invoke: at,
            complete: at + 1,
        }
    }

    fn evidence(history: Vec<HistoryRecord>, last: Observed) -> Evidence {
        Evidence {
            token_prefix: PREFIX.into(),
            initial: [("A".to_string(), observed(1, 40, 0))].into(),
            finals: [("A".to_string(), last)].into(),
            history,
            history_read: true,
            ..Evidence::default()
        }
    }

    fn kinds(events: &[Event], e: &Evidence) -> Vec<&'static str> {
        let dir = std::env::temp_dir();
        verify(events, &[], e, Budget::default(), &dir)
            .anomalies
            .iter()
            .map(Anomaly::kind)
            .collect()
    }

    #[test]
    fn a_run_whose_history_holds_every_acknowledgement_passes() {
        let events = [
            write(
                1,
                (10, 20),
                "w1",
                1,
                50,
                Outcome::Applied {
                    index: 7,
                    version: 2,
                },
            ),
            write(
                2,
                (30, 40),
                "w2",
                2,
                40,
                Outcome::Applied {
                    index: 8,
                    version: 3,
                },
            ),
        ];
        let e = evidence(
            vec![applied(8, "w2", 3, 40), applied(7, "w1", 2, 50)],
            observed(3, 40, 50),
        );
        assert!(kinds(&events, &e).is_empty());
    }

    #[test]
    fn an_acknowledged_change_set_missing_from_the_history_is_lost() {
        let events = [write(
            1,
            (10, 20),
            "w1",
            1,
            50,
            Outcome::Applied {
                index: 7,
                version: 2,
            },
        )];
        let e = evidence(Vec::new(), observed(2, 50, 50));
        assert!(kinds(&events, &e).contains(&"lost_acknowledged_write"));
    }

    #[test]
    fn two_acknowledgements_of_one_version_are_reported() {
        let events = [
            write(
                1,
                (10, 20),
                "w1",
                1,
                50,
                Outcome::Applied {
                    index: 7,
                    version: 2,
                },
            ),
            write(
                2,
                (10, 20),
                "w2",
                1,
                30,
                Outcome::Applied {
                    index: 8,
                    version: 2,
                },
            ),
        ];
        let e = evidence(
            vec![applied(8, "w2", 2, 30), applied(7, "w1", 2, 50)],
            observed(2, 30, 50),
        );
        let found = kinds(&events, &e);
        assert!(found.contains(&"version_acknowledged_twice"), "{found:?}");
        assert!(found.contains(&"broken_version_chain"), "{found:?}");
    }

    fn read(id: u64, t: (Micros, Micros), version: u64, value: i64) -> Event {
        let mut e = write(id, t, "", 0, 0, Outcome::Read { version, value });
        e.request = Request::Read;
        e
    }

    fn lost(id: u64, t: (Micros, Micros), token: &str, expect: u64, value: i64) -> Event {
        let outcome = Outcome::Unknown {
            detail: "timeout".into(),
        };
        write(id, t, token, expect, value, outcome)
    }

    #[test]
    fn a_lost_answer_the_history_records_as_refused_had_no_effect() {
        // Without the history, the lost write could explain the read of version 2.
        let events = [lost(1, (10, 20), "w1", 1, 50), read(2, (30, 40), 2, 50)];
        let refused = record(
            7,
            "w1",
            json!({"outcome": "conflict", "current": {"cell/A": 2}}),
            50,
        );
        let e = evidence(vec![refused], observed(2, 50, 80));
        assert!(kinds(&events, &e).contains(&"not_linearizable"));
    }

    #[test]
    fn a_lost_answer_the_history_records_as_applied_took_effect_before_it_was_read() {
        // Without the history, the lost write could simply never have happened.
        let events = [lost(1, (10, 20), "w1", 1, 50)];
        let mut e = evidence(vec![applied(7, "w1", 2, 50)], observed(1, 40, 80));
        e.history_at = 60;
        assert!(kinds(&events, &e).contains(&"not_linearizable"));
    }

    #[test]
    fn acknowledgements_older_than_a_full_history_page_are_not_called_lost() {
        let mut history: Vec<HistoryRecord> = (0..HISTORY_PAGE as u64)
            .map(|i| applied(1_000 + i, &format!("other {i}"), 2 + i, 40))
            .collect();
        history.reverse();
        let events = [write(
            1,
            (10, 20),
            "w1",
            1,
            50,
            Outcome::Applied {
                index: 7,
                version: 2,
            },
        )];
        let mut e = evidence(history, observed(1 + HISTORY_PAGE as u64, 40, 50));
        e.initial.clear();
        assert!(kinds(&events, &e).is_empty());
    }

    #[test]
    fn nodes_at_one_index_with_different_digests_have_diverged() {
        let d = |digest: &str| Digest {
            applied_index: 9,
            applied_term: 2,
            digest: digest.into(),
            cells: 1,
            relations: 0,
            history_records: 3,
        };
        let mut e = evidence(Vec::new(), observed(1, 40, 50));
        e.digests = [(1, d("aa")), (2, d("aa")), (3, d("bb"))].into();
        assert!(kinds(&[], &e).contains(&"diverged_images"));
    }
}
