//! One base station connection, as a gNB/eNB plays it over O1/E2: one session for every cell
//! of a cell site. `HELLO_STATION`, `WELCOME_STATION` with each cell and its configuration,
//! then each period one `CELL_REPORT` per reporting cell out, and `CELL_CONFIG_SET` in.
//!
//! The station's epoch is its site's: the hello and each configuration are fenced over all
//! its cells at once ([`super::fencing`]), and the session closes with `STALE_EPOCH` when any
//! of its cells sees a newer epoch. A cell in hard outage only falls silent (its
//! configuration is still taken, as a base station takes one for a cell that is down): the
//! station, and its other cells, go on. The report path takes no global lock, as a cell session's:
//! the period's pre-encoded `REPORT` bodies are wrapped (not decoded) into `CELL_REPORT`s,
//! and a period's reports of the station leave in one write.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sonraft_protocol::{
    self as protocol, CellConfig, Frame, MAX_FRAME, MAX_STATION_CELLS, code, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use super::fencing::StationStanding;
use super::session::refuse_stale;
use super::{OpenSession, Sim, lock};

/// What a controller's `HELLO_STATION` said.
pub(super) struct Hello {
    pub station: String,
    pub controller: u64,
    pub epoch: u64,
}

/// Sends `ERROR` with `code` and ends the session with `message`.
async fn refuse(wr: &mut OwnedWriteHalf, code: u16, message: String) -> anyhow::Result<()> {
    let _ = wr
        .write_all(&encode(&Frame::Error {
            code,
            message: message.clone(),
        }))
        .await;
    anyhow::bail!(message)
}

/// A station session, from its hello (already read) until the peer leaves, errs, or a newer
/// epoch at one of its cells supersedes it.
pub(super) async fn serve(
    sim: &Sim,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    mut buf: BytesMut,
    hello: Hello,
) -> anyhow::Result<()> {
    let Hello {
        station,
        controller,
        epoch,
    } = hello;
    let Some(&site) = sim.station_index.get(&station) else {
        return refuse(&mut wr, code::UNKNOWN_CELL, format!("no station {station}")).await;
    };
    let cells = &sim.cells_of_site[site];
    if cells.len() > MAX_STATION_CELLS {
        let message = format!(
            "station {station} has {} cells, more than the {MAX_STATION_CELLS} a station session carries",
            cells.len()
        );
        return refuse(&mut wr, code::NOT_EXPECTED, message).await;
    }
    let mut standing = match sim.fences.hello_station(site, cells, controller, epoch) {
        Ok(s) => s,
        Err(stale) => return refuse_stale(&mut wr, stale, "station hello").await,
    };
    let welcome = {
        let s = lock(&sim.state);
        encode(&Frame::WelcomeStation {
            station: station.clone(),
            period_ms: sim.period_ms,
            cells: standing
                .cells()
                .iter()
                .map(|&c| (sim.topo.cells[c].id.clone(), s.configs[c].clone()))
                .collect(),
        })
    };
    if welcome.len() - 4 > MAX_FRAME {
        let message = format!("station {station}'s configurations do not fit in one frame");
        return refuse(&mut wr, code::NOT_EXPECTED, message).await;
    }
    wr.write_all(&welcome).await?;
    let _open = OpenSession::open(&sim.sessions.station);
    tracing::debug!(
        %station,
        controller,
        epoch,
        cells = standing.cells().len(),
        "station session opened"
    );
    let mut rx = sim.latest.subscribe();
    rx.borrow_and_update();
    if buf.is_empty() {
        buf = BytesMut::new();
    }
    // Reports of `late` cells held back, with when they go out: at most a few periods' worth.
    let mut delayed: VecDeque<(Instant, Bytes)> = VecDeque::new();
    let max_delayed = 4 * standing.cells().len();
    let delay = Duration::from_millis(u64::from(sim.period_ms) * 4 / 5);
    loop {
        // Registered before the check, so a rise in between still wakes this session.
        let raised = sim.fences.station_raised(site);
        if let Some(stale) = sim.fences.station_superseded(&standing) {
            sim.fences.count_superseded();
            return refuse_stale(&mut wr, stale, "station session superseded").await;
        }
        let next_due = delayed.front().map(|d| d.0);
        let due = async {
            match next_due {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The check at the top of the loop closes the session if it is now stale.
            () = raised => {}
            () = due => {
                while let Some((t, f)) = delayed.pop_front() {
                    if t > Instant::now() {
                        delayed.push_front((t, f));
                        break;
                    }
                    wr.write_all(&f).await?;
                    sim.frames_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let period = rx.borrow_and_update().clone();
                let mut out = BytesMut::new();
                let mut sent = 0;
                for &c in standing.cells() {
                    // A cell in hard outage is silent; the station is not.
                    if sim.is_out(c) {
                        continue;
                    }
                    let Some(report) = period.frames.get(c) else {
                        continue;
                    };
                    let body = report.get(4..).unwrap_or_default();
                    let cell = &sim.topo.cells[c].id;
                    if sim.late[c].load(Ordering::Relaxed) {
                        if delayed.len() < max_delayed {
                            let mut f = BytesMut::new();
                            protocol::put_cell_report(&mut f, cell, body);
                            delayed.push_back((Instant::now() + delay, f.freeze()));
                        }
                    } else {
                        protocol::put_cell_report(&mut out, cell, body);
                        sent += 1;
                    }
                }
                if !out.is_empty() {
                    wr.write_all(&out).await?;
                    sim.frames_sent.fetch_add(sent, Ordering::Relaxed);
                }
            }
            read = rd.read_buf(&mut buf) => {
                if read? == 0 {
                    return Ok(());
                }
                loop {
                    match protocol::split_frame(&mut buf) {
                        Ok(None) => break,
                        Ok(Some(Frame::CellConfigSet { txn, epoch, cell, config })) => {
                            configure(sim, &mut wr, &mut standing, txn, epoch, cell, &config).await?;
                        }
                        Ok(Some(other)) => {
                            let message = format!(
                                "unexpected {:?} frame on a station session",
                                std::mem::discriminant(&other)
                            );
                            return refuse(&mut wr, code::NOT_EXPECTED, message).await;
                        }
                        Err(e) => {
                            sim.bad_frames.fetch_add(1, Ordering::Relaxed);
                            return refuse(&mut wr, code::BAD_FRAME, format!("bad frame: {e}")).await;
                        }
                    }
                }
                if buf.is_empty() {
                    // Idle connections hold no buffer.
                    buf = BytesMut::new();
                }
            }
        }
    }
}

/// Applies a configuration of one of the station's cells at `epoch` and acknowledges it;
/// refuses a cell that is not the station's (`UNKNOWN_CELL`) or a stale epoch, and ends the
/// session.
async fn configure(
    sim: &Sim,
    wr: &mut OwnedWriteHalf,
    standing: &mut StationStanding,
    txn: u64,
    epoch: u64,
    cell: String,
    config: &CellConfig,
) -> anyhow::Result<()> {
    let ours = sim
        .index
        .get(&cell)
        .copied()
        .filter(|c| standing.cells().contains(c));
    let Some(idx) = ours else {
        let station = &sim.topo.sites[standing.site].id;
        return refuse(
            wr,
            code::UNKNOWN_CELL,
            format!("no cell {cell} at station {station}"),
        )
        .await;
    };
    match sim
        .fences
        .apply_station(standing, idx, epoch, || sim.apply(idx, config))
    {
        Ok(in_effect) => {
            wr.write_all(&encode(&Frame::CellConfigAck {
                txn,
                cell,
                config: in_effect,
            }))
            .await?;
            Ok(())
        }
        Err(stale) => refuse_stale(wr, stale, "cell configuration").await,
    }
}
