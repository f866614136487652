//! What the simulator tests share: a simulator on loopback, and a controller's connection.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sonraft_protocol::{self as protocol, Frame, code, encode};
use sonraft_sim::server::{self, Sim, SimOptions};
use sonraft_sim::topology::Topology;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A simulator of a few cells listening on loopback (no period clock: no reports).
pub async fn antennas() -> (Arc<Sim>, std::net::SocketAddr) {
    antennas_reporting_every(60_000).await
}

/// A simulator of a few cells listening on loopback, its period clock running every
/// `period_ms`.
pub async fn reporting_antennas(period_ms: u32) -> (Arc<Sim>, std::net::SocketAddr) {
    let (sim, addr) = antennas_reporting_every(period_ms).await;
    tokio::spawn(server::clock(sim.clone()));
    (sim, addr)
}

async fn antennas_reporting_every(period_ms: u32) -> (Arc<Sim>, std::net::SocketAddr) {
    let topo = Topology::build(30, 1, &["site-a".to_string()]);
    let sim = Sim::new(
        topo,
        SimOptions {
            period_ms,
            seed: 1,
            faulty_every: 0,
            day_ms: 0,
            start_hour: 12.0,
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::accept(sim.clone(), listener));
    (sim, addr)
}

/// One controller's connection to an antenna.
pub struct Controller {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Controller {
    pub async fn connect(addr: std::net::SocketAddr) -> Controller {
        Controller {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connects and says `hello`; returns the antenna's first answer too.
    pub async fn hello(addr: std::net::SocketAddr, hello: Frame) -> (Controller, Option<Frame>) {
        let mut c = Controller::connect(addr).await;
        c.send(hello).await;
        let answer = c.next().await;
        (c, answer)
    }

    pub async fn send(&mut self, frame: Frame) {
        self.stream.write_all(&encode(&frame)).await.unwrap();
    }

    /// The next frame from the antenna, or `None` once it closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        let read = async {
            loop {
                if let Some(f) = protocol::split_frame(&mut self.buf).unwrap() {
                    return Some(f);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the antenna neither answered nor closed within 5 s")
    }

    /// The next frame body from the antenna, undecoded, or `None` once it closed.
    pub async fn next_body(&mut self) -> Option<Bytes> {
        let read = async {
            loop {
                if let Some(body) = protocol::split_body(&mut self.buf).unwrap() {
                    return Some(body);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the antenna neither sent nor closed within 5 s")
    }

    /// Expects `ERROR STALE_EPOCH` and then the end of the connection.
    pub async fn expect_refused_as_stale(&mut self) -> String {
        let message = match self.next().await {
            Some(Frame::Error { code, message }) if code == code::STALE_EPOCH => message,
            other => panic!("expected ERROR STALE_EPOCH, got {other:?}"),
        };
        assert_eq!(self.next().await, None, "the connection stayed open");
        message
    }

    /// Expects `ERROR` with `code` and then the end of the connection; the message.
    pub async fn expect_error(&mut self, want: u16) -> String {
        let message = match self.next().await {
            Some(Frame::Error { code, message }) if code == want => message,
            other => panic!("expected ERROR {want}, got {other:?}"),
        };
        assert_eq!(self.next().await, None, "the connection stayed open");
        message
    }
}
