//! One antenna connection, as an antenna plays it: HELLO, WELCOME, then reports out each
//! period and configuration in.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sonraft_protocol::{self as protocol, Frame, code, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Sim, lock};

async fn read_frame(
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

/// One antenna connection: HELLO, WELCOME, then reports out and configuration in.
pub(super) async fn serve(sim: &Sim, stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::new();
    let hello = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd, &mut buf)).await;
    let cell = match hello {
        Ok(Ok(Some(Frame::Hello { cell, .. }))) => cell,
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
    let config = lock(&sim.state).configs[idx].clone();
    wr.write_all(&encode(&Frame::Welcome {
        cell,
        period_ms: sim.period_ms,
        config,
    }))
    .await?;
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
        let next_due = delayed.front().map(|d| d.0);
        let due = async {
            match next_due {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
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
                            let in_effect = sim.apply(idx, &config);
                            wr.write_all(&encode(&Frame::ConfigAck { txn, config: in_effect })).await?;
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
