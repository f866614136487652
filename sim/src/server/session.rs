//! One antenna connection, as an antenna plays it: HELLO, WELCOME, then reports out each
//! period and configuration in, each hello and configuration fenced by its ownership epoch
//! (see [`super::fencing`] for the rules). A first frame `HELLO_STATION` makes the connection
//! a station session instead ([`super::station`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sonraft_protocol::{self as protocol, CellConfig, Frame, code, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::fencing::{Stale, Standing};
use super::{OpenSession, Sim, lock};

pub(super) async fn read_frame(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
) -> anyhow::Result<Option<Frame>> {
    loop {
        if let Some(f) = protocol::split_frame(buf)? {
            return Ok(Some(f));
        }
        buf.reserve(1024);
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// One antenna connection: HELLO (plain: epoch 0) or HELLO_FENCED, WELCOME, then reports out
/// and configuration in, until the peer leaves, errs, or a newer epoch supersedes it.
pub(super) async fn serve(sim: &Sim, stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::new();
    let hello = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd, &mut buf)).await;
    let (cell, controller, epoch) = match hello {
        Ok(Ok(Some(Frame::Hello { cell, controller }))) => (cell, controller, 0),
        Ok(Ok(Some(Frame::HelloFenced {
            cell,
            controller,
            epoch,
        }))) => (cell, controller, epoch),
        Ok(Ok(Some(Frame::HelloStation {
            station,
            controller,
            epoch,
        }))) => {
            let hello = super::station::Hello {
                station,
                controller,
                epoch,
            };
            return super::station::serve(sim, rd, wr, buf, hello).await;
        }
        Ok(Err(e)) => {
            sim.bad_frames.fetch_add(1, Ordering::Relaxed);
            let _ = wr
                .write_all(&encode(&Frame::Error {
                    code: code::BAD_FRAME,
                    message: e.to_string(),
                }))
                .await;
            anyhow::bail!("bad first frame: {e}");
        }
        _ => {
            let _ = wr
                .write_all(&encode(&Frame::Error {
                    code: code::NOT_EXPECTED,
                    message: "expected HELLO".into(),
                }))
                .await;
            anyhow::bail!("no HELLO");
        }
    };
    let Some(&idx) = sim.index.get(&cell) else {
        wr.write_all(&encode(&Frame::Error {
            code: code::UNKNOWN_CELL,
            message: format!("no cell {cell}"),
        }))
        .await?;
        anyhow::bail!("unknown cell {cell}");
    };
    if sim.is_out(idx) {
        // A cell in hard outage does not answer.
        anyhow::bail!("cell {cell} is in outage");
    }
    let mut standing = match sim.fences.hello(idx, controller, epoch) {
        Ok(s) => s,
        Err(stale) => return refuse_stale(&mut wr, stale, "hello").await,
    };
    let config = lock(&sim.state).configs[idx].clone();
    wr.write_all(&encode(&Frame::Welcome {
        cell,
        period_ms: sim.period_ms,
        config,
    }))
    .await?;
    let _open = OpenSession::open(&sim.sessions.cell);
    let mut rx = sim.latest.subscribe();
    rx.borrow_and_update();
    if buf.is_empty() {
        buf = BytesMut::new();
    }
    // Reports held back by a `late` fault, with when they go out.
    let mut delayed: std::collections::VecDeque<(tokio::time::Instant, Bytes)> =
        std::collections::VecDeque::new();
    let delay = Duration::from_millis(u64::from(sim.period_ms) * 4 / 5);
    loop {
        // Registered before the check, so a rise in between still wakes this session.
        let raised = sim.fences.raised(idx);
        if let Some(stale) = sim.fences.superseded(&standing) {
            sim.fences.count_superseded();
            return refuse_stale(&mut wr, stale, "session superseded").await;
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
                    if t > tokio::time::Instant::now() {
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
                if sim.is_out(idx) {
                    anyhow::bail!("the cell went into outage");
                }
                let frame = rx.borrow_and_update().frames.get(idx).cloned();
                if let Some(f) = frame {
                    if sim.late[idx].load(Ordering::Relaxed) {
                        // At most a few periods held: a slow link, not a growing queue.
                        if delayed.len() < 4 {
                            delayed.push_back((tokio::time::Instant::now() + delay, f));
                        }
                    } else {
                        wr.write_all(&f).await?;
                        sim.frames_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            read = rd.read_buf(&mut buf) => {
                if read? == 0 {
                    return Ok(());
                }
                loop {
                    match protocol::split_frame(&mut buf) {
                        Ok(None) => break,
                        Ok(Some(Frame::ConfigSet { txn, config })) => {
                            let epoch = standing.epoch;
                            configure(sim, &mut wr, &mut standing, txn, epoch, &config).await?;
                        }
                        Ok(Some(Frame::ConfigSetFenced { txn, epoch, config })) => {
                            configure(sim, &mut wr, &mut standing, txn, epoch, &config).await?;
                        }
                        Ok(Some(other)) => {
                            let msg = format!("unexpected {:?} frame", std::mem::discriminant(&other));
                            wr.write_all(&encode(&Frame::Error { code: code::NOT_EXPECTED, message: msg.clone() })).await?;
                            anyhow::bail!(msg);
                        }
                        Err(e) => {
                            sim.bad_frames.fetch_add(1, Ordering::Relaxed);
                            let _ = wr.write_all(&encode(&Frame::Error { code: code::BAD_FRAME, message: e.to_string() })).await;
                            anyhow::bail!("bad frame: {e}");
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

/// Applies a configuration at `epoch` and acknowledges it, or refuses it as stale (and ends
/// the session).
async fn configure(
    sim: &Sim,
    wr: &mut OwnedWriteHalf,
    standing: &mut Standing,
    txn: u64,
    epoch: u64,
    config: &CellConfig,
) -> anyhow::Result<()> {
    let cell = standing.cell;
    match sim
        .fences
        .apply(standing, epoch, || sim.apply(cell, config))
    {
        Ok(in_effect) => {
            wr.write_all(&encode(&Frame::ConfigAck {
                txn,
                config: in_effect,
            }))
            .await?;
            Ok(())
        }
        Err(stale) => refuse_stale(wr, stale, "configuration").await,
    }
}

/// Answers a stale hello, configuration or session with `ERROR STALE_EPOCH` and ends it.
pub(super) async fn refuse_stale(
    wr: &mut OwnedWriteHalf,
    stale: Stale,
    what: &str,
) -> anyhow::Result<()> {
    let _ = wr.write_all(&encode(&stale.frame())).await;
    anyhow::bail!(
        "{what} refused: epoch {} is older than epoch {}",
        stale.epoch,
        stale.newest
    )
}
