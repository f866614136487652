//! `sonraft ctl watch`: the change stream of `GET /watch`, printed as `ctl history` prints the
//! history (oldest first, as the records commit), or with `--json` one JSON object per line.
//!
//! It follows the cluster rather than one node: when the stream breaks, the node stops or
//! drops it, it reconnects (to the next node of `--nodes`) with `Last-Event-ID`, so that no
//! record is lost or printed twice. It gives up (exit 4) only when no node answered for
//! [`GIVE_UP`]. A reader that goes away (`| head`) ends it quietly ([`super::output`]).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sonraft_client::sse::{EventStream, SseEvent};
use sonraft_client::v1;
use sonraft_client::{ApiClient, with_query};

use super::exit::{Exit, Failure};
use super::output::outln;

/// Longest silence (not even a heartbeat: the node sends one every 15 s) before the stream
/// counts as broken.
const IDLE: Duration = Duration::from_secs(40);
/// How long no node may answer before `watch` gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// What `ctl watch` was asked for.
pub(crate) struct WatchArgs {
    pub from_index: Option<u64>,
    /// The filters of `ctl history`, applied here to each record.
    pub filter: v1::HistoryQuery,
    pub kpis: bool,
    pub json: bool,
}

/// Where the next connection starts.
enum Resume {
    /// After the last record printed (or skipped by a filter): `Last-Event-ID`.
    After(String),
    /// At this log entry.
    From(u64),
    /// After whatever the node applied (no record seen, no start asked for).
    Now,
}

/// Runs the stream until interrupted, or until no node answered for [`GIVE_UP`].
pub(crate) async fn watch(
    client: &ApiClient,
    nodes: &[String],
    args: WatchArgs,
) -> anyhow::Result<()> {
    let mut resume = args.from_index.map_or(Resume::Now, Resume::From);
    let mut turn = 0usize;
    let mut unanswered_since: Option<Instant> = None;
    let mut pause = Duration::from_millis(100);
    loop {
        let node = &nodes[turn % nodes.len()];
        let base = client.base_url(node);
        let mut query = v1::WatchQuery {
            from_index: None,
            kpis: Some(args.kpis),
        };
        let last_id = match &resume {
            Resume::After(id) => Some(id.as_str()),
            Resume::From(i) => {
                query.from_index = Some(*i);
                None
            }
            Resume::Now => None,
        };
        let url = format!("{base}{}", with_query("/watch", &query));
        match client.open_stream(&url, last_id).await {
            Ok(stream) if stream.status.is_success() => {
                unanswered_since = None;
                pause = Duration::from_millis(100);
                let why = follow(stream, &args, &mut resume).await;
                eprintln!("sonraft ctl watch: {why}; reconnecting");
            }
            Ok(stream) => {
                let status = stream.status;
                let body = stream.error_body();
                // 503: this node is full or stopping; anything else is the same at every node.
                if status != hyper::StatusCode::SERVICE_UNAVAILABLE {
                    return Err(Failure::answer(status, &body));
                }
                eprintln!(
                    "sonraft ctl watch: {node} answered {status} {}",
                    String::from_utf8_lossy(&body)
                );
                unanswered_since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                if Exit::of_client_error(&e) == Exit::Usage {
                    return Err(Failure::no_answer(e));
                }
                eprintln!("sonraft ctl watch: {e}");
                unanswered_since.get_or_insert_with(Instant::now);
            }
        }
        if unanswered_since.is_some_and(|t| t.elapsed() > GIVE_UP) {
            return Err(Failure::of(
                Exit::Unreachable,
                format!("no node answered for {} s", GIVE_UP.as_secs()),
            ));
        }
        turn += 1;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Prints one connection's events until it ends; returns why it ended. Keeps `resume` at the
/// last record received.
async fn follow(mut stream: EventStream, args: &WatchArgs, resume: &mut Resume) -> String {
    loop {
        let event = match stream.next_event(IDLE).await {
            Ok(Some(e)) => e,
            Ok(None) => return "the node ended the stream".into(),
            Err(e) => return e.to_string(),
        };
        if let Some(why) = show(&event, args, resume) {
            return why;
        }
    }
}

/// Prints `event` (unless filtered out); `Some(why)` when it ends the stream.
fn show(event: &SseEvent, args: &WatchArgs, resume: &mut Resume) -> Option<String> {
    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
    match event.event.as_str() {
        v1::event::CHANGESET => {
            let Ok(record) = serde_json::from_value::<v1::HistoryRecord>(data) else {
                return Some(format!("a changeset event not understood: {}", event.data));
            };
            if let Some(id) = &event.id {
                *resume = Resume::After(id.clone());
            }
            if args.filter.admits(&record) {
                if args.json {
                    outln!("{}", serde_json::to_string(&record).unwrap_or_default());
                } else {
                    outln!("{}", super::history_line(&record));
                }
            }
        }
        v1::event::CAUGHT_UP => {
            if let (Resume::Now, Ok(c)) =
                (&resume, serde_json::from_value::<v1::WatchCaughtUp>(data))
            {
                *resume = Resume::From(c.applied_index.saturating_add(1));
            }
        }
        v1::event::CLOSED => {
            let closed: Option<v1::WatchClosed> = serde_json::from_value(data).ok();
            if let Some(id) = closed.as_ref().and_then(|c| c.resume_after.clone()) {
                *resume = Resume::After(id);
            }
            return Some(closed.map_or("the node closed the stream".into(), |c| {
                format!("the node closed the stream ({}): {}", c.reason, c.detail)
            }));
        }
        v1::event::GAP => {
            let detail = data["detail"].as_str().unwrap_or_default().to_string();
            if args.json {
                outln!("{}", tagged(&event.event, data));
            } else {
                eprintln!("sonraft ctl watch: records were dropped: {detail}");
            }
        }
        v1::event::CLUSTER => {
            if args.json {
                outln!("{}", tagged(&event.event, data));
            } else if let Ok(c) = serde_json::from_value::<v1::WatchCluster>(data) {
                outln!("{}", cluster_line(&c));
            }
        }
        v1::event::TRIAL => {
            if args.json {
                outln!("{}", tagged(&event.event, data));
            } else if let Ok(t) = serde_json::from_value::<v1::Trial>(data) {
                outln!("{}", trial_line(&t));
            }
        }
        v1::event::KPIS if args.kpis => {
            if args.json {
                outln!("{}", tagged(&event.event, data));
            } else if let Ok(k) = serde_json::from_value::<v1::WatchKpis>(data) {
                outln!("{}", kpis_line(&k));
            }
        }
        _ => {}
    }
    None
}

/// A state event as one JSON line: its fields, and `event` naming it.
fn tagged(name: &str, data: Value) -> Value {
    match data {
        Value::Object(mut fields) => {
            fields.insert("event".into(), json!(name));
            Value::Object(fields)
        }
        other => json!({"event": name, "data": other}),
    }
}

fn now_utc() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    sonraft_protocol::pm_xml::time::format_date_time(ms - ms % 1000)
        .replace('T', " ")
        .replace("+00:00", "Z")
}

/// `<time> cluster: leader 1, term 3, voters 1,2,3 (node 2: follower)`.
fn cluster_line(c: &v1::WatchCluster) -> String {
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let leader = c.leader_id.map_or("none".to_string(), |l| l.to_string());
    let mut line = format!(
        "{} {:>8} cluster: leader {leader}, term {}, voters {}",
        now_utc(),
        "-",
        c.term,
        ids(&c.voters)
    );
    if !c.learners.is_empty() {
        line.push_str(&format!(", learners {}", ids(&c.learners)));
    }
    line.push_str(&format!(
        " (node {}: {})",
        c.node,
        json!(c.role).as_str().unwrap_or("?")
    ));
    line
}

/// `<time> kpis: 30 cells, mean load 41.2 %, highest 93.0 % (S00002-1)`.
fn kpis_line(k: &v1::WatchKpis) -> String {
    let load = k.fields.iter().position(|f| f == "prb_dl_permille");
    let loads: Vec<(&String, u64)> = k
        .cells
        .iter()
        .filter_map(|(cell, row)| Some((cell, *row.get(load?)?)))
        .collect();
    let mean = loads.iter().map(|(_, l)| *l as f64).sum::<f64>() / loads.len().max(1) as f64;
    let top = loads.iter().max_by_key(|(_, l)| *l);
    let top = top.map_or(String::new(), |(cell, l)| {
        format!(", highest {:.1} % ({cell})", *l as f64 / 10.0)
    });
    format!(
        "{} {:>8} kpis: {} cells, mean load {:.1} %{top}",
        now_utc(),
        "-",
        k.cells.len(),
        mean / 10.0
    )
}

/// `<time>    index trial of load_balancing: undone (S00001-1 ho success ...)`.
fn trial_line(t: &v1::Trial) -> String {
    let why = t
        .reason
        .as_deref()
        .map_or(String::new(), |r| format!(": {r}"));
    format!(
        "{} {:>8} trial of {} on {}: {}{why}",
        now_utc(),
        t.index,
        t.function,
        t.cells.join(","),
        t.state
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpi_and_trial_lines_name_what_an_operator_acts_on() {
        let k = v1::WatchKpis {
            fields: v1::KPI_FIELDS.iter().map(|f| f.to_string()).collect(),
            cells: [
                ("A-1".to_string(), vec![1, 300, 0, 0, 0, 0]),
                ("B-2".to_string(), vec![1, 900, 0, 0, 0, 0]),
            ]
            .into_iter()
            .collect(),
        };
        let line = kpis_line(&k);
        assert!(
            line.ends_with("kpis: 2 cells, mean load 60.0 %, highest 90.0 % (B-2)"),
            "{line}"
        );
        let t = v1::Trial {
            index: 77,
            function: "load_balancing".into(),
            applied_at_ms: 0,
            cells: vec!["A-1".into()],
            writes: Vec::new(),
            removed: Vec::new(),
            state: "undone".into(),
            reason: Some("ho success fell".into()),
            restored: Some(1),
            kpis: Vec::new(),
            closed_at_ms: Some(5),
        };
        let line = trial_line(&t);
        assert!(
            line.ends_with("      77 trial of load_balancing on A-1: undone: ho success fell"),
            "{line}"
        );
    }

    #[test]
    fn a_record_moves_the_resume_point_even_when_a_filter_hides_it() {
        let args = WatchArgs {
            from_index: None,
            filter: v1::HistoryQuery {
                cell: Some("nowhere".into()),
                ..Default::default()
            },
            kpis: false,
            json: true,
        };
        let record = serde_json::json!({
            "index": 9, "log_time_ms": 0, "proposed_at_ms": 0,
            "origin": {"node": 1, "function": "operator"}, "reason": "r",
            "writes": [], "outcome": {"outcome": "invalid", "reason": "x"}, "cursor": "9.0"
        });
        let event = SseEvent {
            event: "changeset".into(),
            id: Some("9.0".into()),
            data: record.to_string(),
        };
        let mut resume = Resume::Now;
        assert!(show(&event, &args, &mut resume).is_none());
        assert!(matches!(resume, Resume::After(ref id) if id == "9.0"));
        let closed = SseEvent {
            event: "closed".into(),
            id: Some("9.0".into()),
            data: r#"{"reason":"slow_client","detail":"d","resume_after":"12.3"}"#.into(),
        };
        assert!(show(&closed, &args, &mut resume).is_some_and(|why| why.contains("slow_client")));
        assert!(matches!(resume, Resume::After(ref id) if id == "12.3"));
    }
}
