//! The antenna protocol: small length-prefixed binary frames over TCP.
//!
//! ```text
//! frame    = length:u32be  version:u8 (= 1)  kind:u8  payload      (length counts version..end)
//! string   = len:u16be  utf-8 bytes                                   (at most 64 bytes)
//! ```
//!
//! | kind | name | direction | payload |
//! | --- | --- | --- | --- |
//! | 1 | `HELLO` | controller → antenna | cell id (string), controller node id (u64) |
//! | 2 | `WELCOME` | antenna → controller | cell id, report period ms (u32), config in effect (`CONFIG`) |
//! | 3 | `REPORT` | antenna → controller | period end ms (u64), period ms (u32), cell counters (count:u8, u64 each), relations (count:u16, each: target string, count:u8, u64 each) |
//! | 4 | `CONFIG_SET` | controller → antenna | transaction id (u64), `CONFIG` |
//! | 5 | `CONFIG_ACK` | antenna → controller | transaction id (u64), `CONFIG` now in effect |
//! | 6 | `ERROR` | either | code (u16), message (string); the sender closes the connection |
//! | 7 | `HELLO_FENCED` | controller → antenna | cell id (string), controller node id (u64), ownership epoch (u64) |
//! | 8 | `CONFIG_SET_FENCED` | controller → antenna | transaction id (u64), ownership epoch (u64), `CONFIG`; answered by `CONFIG_ACK` |
//! | 9 | `HELLO_STATION` | controller → station | station id (string), controller node id (u64), ownership epoch (u64) |
//! | 10 | `WELCOME_STATION` | station → controller | station id (string), report period ms (u32), cells (count:u16, at most [`MAX_STATION_CELLS`], each: cell id string, `CONFIG` in effect) |
//! | 11 | `CELL_REPORT` | station → controller | cell id (string), then a complete `REPORT` body (version u8 = 1, kind u8 = 3, the `REPORT` payload) |
//! | 12 | `CELL_CONFIG_SET` | controller → station | transaction id (u64), ownership epoch (u64), cell id (string), `CONFIG`; answered by `CELL_CONFIG_ACK` |
//! | 13 | `CELL_CONFIG_ACK` | station → controller | transaction id (u64), cell id (string), `CONFIG` now in effect |
//!
//! `CONFIG` = pci:u16 electrical_tilt:i16 max_tx_power_dbm:i16 hysteresis:u8
//! time_to_trigger_ms:u16 a3_offset:i8 admin_state:u8 energy_saving:u8, then relations
//! (count:u16, each: target string, cio_db:i8, ho_allowed:u8). A `CONFIG_SET` carries the whole
//! desired configuration of the cell; a relation it does not list is removed.
//!
//! Fencing (kinds 7 and 8, added without a version change). Control of a cell moves between
//! nodes, and each move raises the cell's *ownership epoch* (from the replicated log; 0 is the
//! home node's control by default). The antenna remembers the newest epoch it has seen and
//! refuses, with `ERROR` [`code::STALE_EPOCH`], a hello or a configuration at an older one, so
//! two nodes never both control a cell: a plain `HELLO` counts as epoch 0, a plain `CONFIG_SET`
//! as its session's epoch. A newer epoch supersedes: the antenna sends `STALE_EPOCH` to the
//! sessions of older epochs and closes them. The version byte stays 1 because nothing an old
//! peer sends changed meaning: an antenna of the first release answers kind 7 with `ERROR`
//! [`code::BAD_FRAME`] ("unknown frame kind 7") and closes, which tells the controller to fall
//! back to plain `HELLO` (allowed only at epoch 0, where the two mean the same).
//!
//! Stations (kinds 9 to 13, added without a version change). A real base station (a gNB or
//! eNB, over O1/E2) holds one connection for all its cells, and so does a *station session*:
//! the controller says `HELLO_STATION` with the cell site's id (`S00017`), the station answers
//! `WELCOME_STATION` with every one of its cells and its configuration, then one `CELL_REPORT`
//! per reporting cell each period, and `CELL_CONFIG_SET`s name their cell. One session per
//! site instead of one per cell divides the controller's sockets by the cells per site. The
//! ownership epoch is the site's: a station hello or configuration is checked against, and
//! raises, the newest epoch of every cell of the station, so it supersedes (and is superseded
//! by) station and cell sessions of those cells alike. A `CELL_REPORT` embeds a whole `REPORT`
//! body so that a receiver keeps it as one (see [`split_cell_report`]) without copying. An
//! `ERROR` closes a station session as any other: [`code::UNKNOWN_CELL`] answers a station
//! id the peer does not have, or a `CELL_CONFIG_SET` naming a cell that is not the station's.
//! A `WELCOME_STATION` must fit in [`MAX_FRAME`], which 24 cells of a few dozen relations do
//! many times over. An antenna of an earlier release answers `HELLO_STATION` with `ERROR`
//! [`code::BAD_FRAME`] ("unknown frame kind 9") and closes, which tells the controller to
//! open a session per cell instead.
//!
//! Counters are in the order of [`CELL_COUNTERS`] and [`RELATION_COUNTERS`] (3GPP TS 28.552
//! names); a report may carry more values than a receiver knows (it ignores the rest) but not
//! fewer than [`BASE_CELL_COUNTERS`] cell values (the counters of the first release) and
//! [`RELATION_COUNTERS`] relation values. Cell counters appended later (the coverage counters
//! from [`BASE_CELL_COUNTERS`] on) read as 0 when an older antenna, or a stored period of one,
//! does not carry them: they are distributions, and one with no samples says nothing. So the
//! wire format did not change: old nodes ignore the appended values, new nodes accept old
//! reports. A frame longer than [`MAX_FRAME`], of another version or kind, or whose payload does
//! not parse exactly, is an error: the receiver sends `ERROR` and closes that connection only.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version carried in every frame.
pub const VERSION: u8 = 1;
/// Largest frame (after the length prefix).
pub const MAX_FRAME: usize = 256 * 1024;
/// Most relations one frame may list.
pub const MAX_RELATIONS: usize = 512;
/// Most cells one `WELCOME_STATION` may list (a base station has a handful of sectors on a
/// few carriers).
pub const MAX_STATION_CELLS: usize = 24;

/// Per-cell counters of a report, in order. The PRB counters are counts averaged over the
/// period, so a cell's downlink load is `RRU.PrbUsedDl / RRU.PrbAvailDl`; TS 28.552's
/// `RRU.PrbTotDl` (5.1.1.2.1) is a percentage of use and is not carried.
///
/// The coverage counters after the first [`BASE_CELL_COUNTERS`] feed coverage and capacity
/// optimisation. Neither TS 32.425 nor TS 28.552 has them per cell, so they keep plain
/// vendor-style names (like `HO.PingPong`): a timing-advance distribution (what vendors count
/// as `pmTaInit2Distr` or `L.RA.TA.UE.Index*`), here in four bins of distance from the mast
/// ([`TA_BIN_EDGES_M`]), as connected users averaged over the period; and the radio link
/// failures for coverage (`RLF.Coverage`): users whose RLF report (TS 36.331/38.331
/// `rlf-Report`) names the cell as the last serving one with its RSRP under the coverage
/// floor, averaged over the period like `RRC.ConnMean`.
pub const CELL_COUNTERS: [&str; 15] = [
    "RRU.PrbUsedDl",
    "RRU.PrbAvailDl",
    "RRU.PrbUsedUl",
    "RRU.PrbAvailUl",
    "RRC.ConnMean",
    "RRC.ConnMax",
    "DRB.UEThpDl",
    "DRB.UEThpUl",
    "HO.ExeAtt",
    "HO.ExeSucc",
    "TA.Distr.Bin0",
    "TA.Distr.Bin1",
    "TA.Distr.Bin2",
    "TA.Distr.Bin3",
    "RLF.Coverage",
];
/// Cell counters every report carries (the first release's): later ones may be missing.
pub const BASE_CELL_COUNTERS: usize = 10;
/// Upper edges of the timing-advance bins `TA.Distr.Bin0..2`, metres from the mast (one LTE
/// timing-advance step is 78 m); `TA.Distr.Bin3` is everything beyond the last.
pub const TA_BIN_EDGES_M: [u32; 3] = [500, 1000, 1500];
/// Per-relation counters of a report, in order: handover executions (TS 28.552 5.1.1.6) and
/// the mobility robustness counters of TS 32.425 (too early, too late, to the wrong cell);
/// ping-pongs have no 3GPP counter and keep a plain name.
pub const RELATION_COUNTERS: [&str; 6] = [
    "HO.ExeAtt",
    "HO.ExeSucc",
    "HO.IntraSys.TooEarly",
    "HO.IntraSys.TooLate",
    "HO.IntraSys.ToWrongCell",
    "HO.PingPong",
];

pub mod cell_counter {
    pub const PRB_USED_DL: usize = 0;
    pub const PRB_AVAIL_DL: usize = 1;
    pub const PRB_USED_UL: usize = 2;
    pub const PRB_AVAIL_UL: usize = 3;
    pub const CONN_MEAN: usize = 4;
    pub const CONN_MAX: usize = 5;
    pub const THP_DL: usize = 6;
    pub const THP_UL: usize = 7;
    pub const HO_ATT: usize = 8;
    pub const HO_SUCC: usize = 9;
    /// `TA.Distr.Bin0`; the bins follow in order.
    pub const TA_BIN0: usize = 10;
    /// Number of timing-advance bins.
    pub const TA_BINS: usize = 4;
    pub const RLF_COVERAGE: usize = 14;
}

pub mod relation_counter {
    pub const ATT: usize = 0;
    pub const SUCC: usize = 1;
    pub const TOO_EARLY: usize = 2;
    pub const TOO_LATE: usize = 3;
    pub const WRONG_CELL: usize = 4;
    pub const PING_PONG: usize = 5;
}

/// Error codes of `ERROR` frames.
pub mod code {
    pub const BAD_FRAME: u16 = 1;
    pub const UNKNOWN_CELL: u16 = 2;
    pub const NOT_EXPECTED: u16 = 3;
    /// The hello or configuration carries an ownership epoch older than one the antenna has
    /// seen: another controller has taken the cell over. Do not retry at the same epoch.
    pub const STALE_EPOCH: u16 = 4;
}

/// A relation's configuration as pushed to the antenna.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelationConfig {
    pub target: String,
    pub cio_db: i8,
    pub ho_allowed: bool,
}

/// The `ERROR` [`code::STALE_EPOCH`] an antenna answers a controller at `epoch` with, once it
/// has seen `newest`: one wording for every antenna, so operators see the same line.
pub fn stale_epoch(epoch: u64, newest: u64) -> Frame {
    Frame::Error {
        code: code::STALE_EPOCH,
        message: format!("epoch {epoch} is older than epoch {newest}, which this antenna has seen"),
    }
}

/// A cell's configuration as pushed to (and acknowledged by) the antenna.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct CellConfig {
    pub pci: u16,
    pub electrical_tilt: i16,
    pub max_tx_power_dbm: i16,
    pub hysteresis: u8,
    pub time_to_trigger_ms: u16,
    pub a3_offset: i8,
    /// 0 unlocked, 1 locked, 2 shutting down.
    pub admin_state: u8,
    /// 0 normal, 1 dormant.
    pub energy_saving: u8,
    pub relations: Vec<RelationConfig>,
}

/// One relation's counters in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationCounters {
    pub target: String,
    pub values: [u64; RELATION_COUNTERS.len()],
}

/// One period's counters of a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub period_end_ms: u64,
    pub period_ms: u32,
    pub cell: [u64; CELL_COUNTERS.len()],
    pub relations: Vec<RelationCounters>,
}

impl Report {
    /// Number of counter values carried.
    pub fn values(&self) -> usize {
        CELL_COUNTERS.len() + self.relations.len() * RELATION_COUNTERS.len()
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        cell: String,
        controller: u64,
    },
    Welcome {
        cell: String,
        period_ms: u32,
        config: CellConfig,
    },
    Report(Report),
    ConfigSet {
        txn: u64,
        config: CellConfig,
    },
    ConfigAck {
        txn: u64,
        config: CellConfig,
    },
    Error {
        code: u16,
        message: String,
    },
    /// `HELLO` of a controller that holds the cell at ownership epoch `epoch`.
    HelloFenced {
        cell: String,
        controller: u64,
        epoch: u64,
    },
    /// `CONFIG_SET` sent under ownership epoch `epoch`.
    ConfigSetFenced {
        txn: u64,
        epoch: u64,
        config: CellConfig,
    },
    /// `HELLO` to a whole base station (cell site), at ownership epoch `epoch` for all its
    /// cells.
    HelloStation {
        station: String,
        controller: u64,
        epoch: u64,
    },
    /// The station's answer: its cells (at most [`MAX_STATION_CELLS`]) and their
    /// configuration in effect.
    WelcomeStation {
        station: String,
        period_ms: u32,
        cells: Vec<(String, CellConfig)>,
    },
    /// One cell's `REPORT`, on a station session. (A receiver on the hot path uses
    /// [`split_cell_report`] instead, which keeps the embedded body as it came.)
    CellReport {
        cell: String,
        report: Report,
    },
    /// `CONFIG_SET` of one cell of the station, under ownership epoch `epoch`.
    CellConfigSet {
        txn: u64,
        epoch: u64,
        cell: String,
        config: CellConfig,
    },
    /// The answer to `CELL_CONFIG_SET`: what is now in effect at `cell`.
    CellConfigAck {
        txn: u64,
        cell: String,
        config: CellConfig,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLong(usize),
    #[error("frame of {0} bytes is too short")]
    TooShort(usize),
    #[error("protocol version {0} is not understood (this build speaks {VERSION})")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("bad {0}")]
    Bad(&'static str),
    #[error("{0} unexpected bytes after the payload")]
    Trailing(usize),
}

fn put_str(b: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(64)];
    b.put_u16(bytes.len() as u16);
    b.put_slice(bytes);
}

fn put_config(b: &mut BytesMut, c: &CellConfig) {
    b.put_u16(c.pci);
    b.put_i16(c.electrical_tilt);
    b.put_i16(c.max_tx_power_dbm);
    b.put_u8(c.hysteresis);
    b.put_u16(c.time_to_trigger_ms);
    b.put_i8(c.a3_offset);
    b.put_u8(c.admin_state);
    b.put_u8(c.energy_saving);
    let n = c.relations.len().min(MAX_RELATIONS);
    b.put_u16(n as u16);
    for r in &c.relations[..n] {
        put_str(b, &r.target);
        b.put_i8(r.cio_db);
        b.put_u8(u8::from(r.ho_allowed));
    }
}

/// The `REPORT` payload (what follows version and kind).
fn put_report(b: &mut BytesMut, r: &Report) {
    b.put_u64(r.period_end_ms);
    b.put_u32(r.period_ms);
    b.put_u8(r.cell.len() as u8);
    for v in r.cell {
        b.put_u64(v);
    }
    let n = r.relations.len().min(MAX_RELATIONS);
    b.put_u16(n as u16);
    for rel in &r.relations[..n] {
        put_str(b, &rel.target);
        b.put_u8(rel.values.len() as u8);
        for v in rel.values {
            b.put_u64(v);
        }
    }
}

/// Appends a complete `CELL_REPORT` frame (length prefix included) of `cell` to `out`,
/// wrapping `report_body`, an encoded `REPORT` body (version and kind included, no length
/// prefix): how a station forwards reports it encoded once, without decoding them.
pub fn put_cell_report(out: &mut BytesMut, cell: &str, report_body: &[u8]) {
    let cell = &cell.as_bytes()[..cell.len().min(64)];
    let len = 2 + 2 + cell.len() + report_body.len();
    out.reserve(4 + len);
    out.put_u32(len as u32);
    out.put_u8(VERSION);
    out.put_u8(KIND_CELL_REPORT);
    out.put_u16(cell.len() as u16);
    out.put_slice(cell);
    out.put_slice(report_body);
}

/// Encodes a frame, length prefix included.
pub fn encode(frame: &Frame) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u32(0);
    b.put_u8(VERSION);
    match frame {
        Frame::Hello { cell, controller } => {
            b.put_u8(1);
            put_str(&mut b, cell);
            b.put_u64(*controller);
        }
        Frame::Welcome {
            cell,
            period_ms,
            config,
        } => {
            b.put_u8(2);
            put_str(&mut b, cell);
            b.put_u32(*period_ms);
            put_config(&mut b, config);
        }
        Frame::Report(r) => {
            b.put_u8(KIND_REPORT);
            put_report(&mut b, r);
        }
        Frame::ConfigSet { txn, config } => {
            b.put_u8(4);
            b.put_u64(*txn);
            put_config(&mut b, config);
        }
        Frame::ConfigAck { txn, config } => {
            b.put_u8(5);
            b.put_u64(*txn);
            put_config(&mut b, config);
        }
        Frame::Error { code, message } => {
            b.put_u8(6);
            b.put_u16(*code);
            put_str(&mut b, message);
        }
        Frame::HelloFenced {
            cell,
            controller,
            epoch,
        } => {
            b.put_u8(7);
            put_str(&mut b, cell);
            b.put_u64(*controller);
            b.put_u64(*epoch);
        }
        Frame::ConfigSetFenced { txn, epoch, config } => {
            b.put_u8(8);
            b.put_u64(*txn);
            b.put_u64(*epoch);
            put_config(&mut b, config);
        }
        Frame::HelloStation {
            station,
            controller,
            epoch,
        } => {
            b.put_u8(9);
            put_str(&mut b, station);
            b.put_u64(*controller);
            b.put_u64(*epoch);
        }
        Frame::WelcomeStation {
            station,
            period_ms,
            cells,
        } => {
            b.put_u8(10);
            put_str(&mut b, station);
            b.put_u32(*period_ms);
            let n = cells.len().min(MAX_STATION_CELLS);
            b.put_u16(n as u16);
            for (cell, config) in &cells[..n] {
                put_str(&mut b, cell);
                put_config(&mut b, config);
            }
        }
        Frame::CellReport { cell, report } => {
            b.put_u8(KIND_CELL_REPORT);
            put_str(&mut b, cell);
            b.put_u8(VERSION);
            b.put_u8(KIND_REPORT);
            put_report(&mut b, report);
        }
        Frame::CellConfigSet {
            txn,
            epoch,
            cell,
            config,
        } => {
            b.put_u8(12);
            b.put_u64(*txn);
            b.put_u64(*epoch);
            put_str(&mut b, cell);
            put_config(&mut b, config);
        }
        Frame::CellConfigAck { txn, cell, config } => {
            b.put_u8(13);
            b.put_u64(*txn);
            put_str(&mut b, cell);
            put_config(&mut b, config);
        }
    }
    let len = (b.len() - 4) as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn need(&self, n: usize, what: &'static str) -> Result<(), FrameError> {
        if self.b.remaining() < n {
            Err(FrameError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        self.need(1, what)?;
        Ok(self.b.get_u8())
    }
    fn i8(&mut self, what: &'static str) -> Result<i8, FrameError> {
        self.need(1, what)?;
        Ok(self.b.get_i8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        self.need(2, what)?;
        Ok(self.b.get_u16())
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, FrameError> {
        self.need(2, what)?;
        Ok(self.b.get_i16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        self.need(4, what)?;
        Ok(self.b.get_u32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        self.need(8, what)?;
        Ok(self.b.get_u64())
    }
    fn string(&mut self, what: &'static str) -> Result<String, FrameError> {
        let n = self.u16(what)? as usize;
        if n > 64 {
            return Err(FrameError::Bad(what));
        }
        self.need(n, what)?;
        let s = std::str::from_utf8(&self.b[..n])
            .map_err(|_| FrameError::Bad(what))?
            .to_string();
        self.b.advance(n);
        Ok(s)
    }
    fn config(&mut self) -> Result<CellConfig, FrameError> {
        let mut c = CellConfig {
            pci: self.u16("pci")?,
            electrical_tilt: self.i16("tilt")?,
            max_tx_power_dbm: self.i16("power")?,
            hysteresis: self.u8("hysteresis")?,
            time_to_trigger_ms: self.u16("time to trigger")?,
            a3_offset: self.i8("a3 offset")?,
            admin_state: self.u8("admin state")?,
            energy_saving: self.u8("energy saving")?,
            relations: Vec::new(),
        };
        let n = self.u16("relation count")? as usize;
        if n > MAX_RELATIONS {
            return Err(FrameError::Bad("relation count"));
        }
        c.relations.reserve(n);
        for _ in 0..n {
            c.relations.push(RelationConfig {
                target: self.string("relation target")?,
                cio_db: self.i8("cio")?,
                ho_allowed: self.u8("ho allowed")? != 0,
            });
        }
        Ok(c)
    }
    /// The `REPORT` payload (what follows version and kind).
    fn report(&mut self) -> Result<Report, FrameError> {
        let period_end_ms = self.u64("period end")?;
        let period_ms = self.u32("period")?;
        let cell = self.counters::<{ CELL_COUNTERS.len() }>("cell counters", BASE_CELL_COUNTERS)?;
        let n = self.u16("relation count")? as usize;
        if n > MAX_RELATIONS {
            return Err(FrameError::Bad("relation count"));
        }
        let mut relations = Vec::with_capacity(n);
        for _ in 0..n {
            relations.push(RelationCounters {
                target: self.string("relation target")?,
                values: self.counters::<{ RELATION_COUNTERS.len() }>(
                    "relation counters",
                    RELATION_COUNTERS.len(),
                )?,
            });
        }
        Ok(Report {
            period_end_ms,
            period_ms,
            cell,
            relations,
        })
    }
    /// The version and kind bytes of the `REPORT` body a `CELL_REPORT` embeds: its own
    /// version and `REPORT`, nothing else (so a damaged frame cannot nest frames in frames).
    fn embedded_report_header(&mut self) -> Result<(), FrameError> {
        if self.u8("embedded report version")? != VERSION {
            return Err(FrameError::Bad("embedded report version"));
        }
        if self.u8("embedded report kind")? != KIND_REPORT {
            return Err(FrameError::Bad("embedded report kind"));
        }
        Ok(())
    }
    /// `N` counters from a count and the values; at least `min` must be present, the rest of
    /// the `N` read as 0 and values past `N` are skipped.
    fn counters<const N: usize>(
        &mut self,
        what: &'static str,
        min: usize,
    ) -> Result<[u64; N], FrameError> {
        let n = self.u8(what)? as usize;
        if n < min {
            return Err(FrameError::Bad(what));
        }
        let mut out = [0u64; N];
        for (i, v) in (0..n).map(|_| self.u64(what)).enumerate() {
            let v = v?;
            if i < N {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// Decodes the body of one frame (what follows the length prefix).
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLong(body.len()));
    }
    if body.len() < 2 {
        return Err(FrameError::TooShort(body.len()));
    }
    if body[0] != VERSION {
        return Err(FrameError::Version(body[0]));
    }
    let mut r = Reader { b: &body[2..] };
    let frame = match body[1] {
        1 => Frame::Hello {
            cell: r.string("cell id")?,
            controller: r.u64("controller id")?,
        },
        2 => Frame::Welcome {
            cell: r.string("cell id")?,
            period_ms: r.u32("period")?,
            config: r.config()?,
        },
        KIND_REPORT => Frame::Report(r.report()?),
        4 => Frame::ConfigSet {
            txn: r.u64("transaction")?,
            config: r.config()?,
        },
        5 => Frame::ConfigAck {
            txn: r.u64("transaction")?,
            config: r.config()?,
        },
        6 => Frame::Error {
            code: r.u16("error code")?,
            message: r.string("error message")?,
        },
        7 => Frame::HelloFenced {
            cell: r.string("cell id")?,
            controller: r.u64("controller id")?,
            epoch: r.u64("epoch")?,
        },
        8 => Frame::ConfigSetFenced {
            txn: r.u64("transaction")?,
            epoch: r.u64("epoch")?,
            config: r.config()?,
        },
        9 => Frame::HelloStation {
            station: r.string("station id")?,
            controller: r.u64("controller id")?,
            epoch: r.u64("epoch")?,
        },
        10 => {
            let station = r.string("station id")?;
            let period_ms = r.u32("period")?;
            let n = r.u16("cell count")? as usize;
            if n > MAX_STATION_CELLS {
                return Err(FrameError::Bad("cell count"));
            }
            let mut cells = Vec::with_capacity(n);
            for _ in 0..n {
                cells.push((r.string("cell id")?, r.config()?));
            }
            Frame::WelcomeStation {
                station,
                period_ms,
                cells,
            }
        }
        KIND_CELL_REPORT => {
            let cell = r.string("cell id")?;
            r.embedded_report_header()?;
            Frame::CellReport {
                cell,
                report: r.report()?,
            }
        }
        12 => Frame::CellConfigSet {
            txn: r.u64("transaction")?,
            epoch: r.u64("epoch")?,
            cell: r.string("cell id")?,
            config: r.config()?,
        },
        13 => Frame::CellConfigAck {
            txn: r.u64("transaction")?,
            cell: r.string("cell id")?,
            config: r.config()?,
        },
        k => return Err(FrameError::Kind(k)),
    };
    if !r.b.is_empty() {
        return Err(FrameError::Trailing(r.b.len()));
    }
    Ok(frame)
}

/// Frame kind of `REPORT`.
pub const KIND_REPORT: u8 = 3;
/// Frame kind of `CELL_REPORT`.
pub const KIND_CELL_REPORT: u8 = 11;

/// Splits a `CELL_REPORT` frame body into its cell id and the `REPORT` body it embeds, which
/// is validated (as [`ReportView::parse`] does) and returned as a slice of `body`, not a copy:
/// a receiver keeps it as it would a `REPORT` of a cell session.
pub fn split_cell_report(body: &Bytes) -> Result<(String, Bytes), FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLong(body.len()));
    }
    if body.len() < 2 {
        return Err(FrameError::TooShort(body.len()));
    }
    if body[0] != VERSION {
        return Err(FrameError::Version(body[0]));
    }
    if body[1] != KIND_CELL_REPORT {
        return Err(FrameError::Kind(body[1]));
    }
    let mut r = Reader { b: &body[2..] };
    let cell = r.string("cell id")?;
    let at = body.len() - r.b.len();
    r.embedded_report_header()?;
    ReportView::parse(&body[at..])?;
    Ok((cell, body.slice(at..)))
}

/// A validated `REPORT` body, read in place: no allocation per report or per relation.
#[derive(Debug, Clone, Copy)]
pub struct ReportView<'a> {
    pub period_end_ms: u64,
    pub period_ms: u32,
    pub cell: [u64; CELL_COUNTERS.len()],
    relation_count: usize,
    relations: &'a [u8],
}

impl<'a> ReportView<'a> {
    /// Validates a `REPORT` frame body (version, kind, every field) without allocating.
    pub fn parse(body: &'a [u8]) -> Result<ReportView<'a>, FrameError> {
        if body.len() > MAX_FRAME {
            return Err(FrameError::TooLong(body.len()));
        }
        if body.len() < 2 {
            return Err(FrameError::TooShort(body.len()));
        }
        if body[0] != VERSION {
            return Err(FrameError::Version(body[0]));
        }
        if body[1] != KIND_REPORT {
            return Err(FrameError::Kind(body[1]));
        }
        let mut r = Reader { b: &body[2..] };
        let period_end_ms = r.u64("period end")?;
        let period_ms = r.u32("period")?;
        let cell = r.counters::<{ CELL_COUNTERS.len() }>("cell counters", BASE_CELL_COUNTERS)?;
        let relation_count = r.u16("relation count")? as usize;
        if relation_count > MAX_RELATIONS {
            return Err(FrameError::Bad("relation count"));
        }
        let relations = r.b;
        for _ in 0..relation_count {
            let n = r.u16("relation target")? as usize;
            if n > 64 {
                return Err(FrameError::Bad("relation target"));
            }
            r.need(n, "relation target")?;
            std::str::from_utf8(&r.b[..n]).map_err(|_| FrameError::Bad("relation target"))?;
            r.b.advance(n);
            let k = r.u8("relation counters")? as usize;
            if k < RELATION_COUNTERS.len() {
                return Err(FrameError::Bad("relation counters"));
            }
            r.need(k * 8, "relation counters")?;
            r.b.advance(k * 8);
        }
        if !r.b.is_empty() {
            return Err(FrameError::Trailing(r.b.len()));
        }
        Ok(ReportView {
            period_end_ms,
            period_ms,
            cell,
            relation_count,
            relations,
        })
    }

    /// Number of counter values carried.
    pub fn values(&self) -> usize {
        CELL_COUNTERS.len() + self.relation_count * RELATION_COUNTERS.len()
    }

    /// The relations' targets and counters, in order. (The body was validated by `parse`;
    /// should it somehow end early, the iteration just stops.)
    pub fn relations(
        &self,
    ) -> impl Iterator<Item = (&'a str, [u64; RELATION_COUNTERS.len()])> + 'a {
        let mut r = Reader { b: self.relations };
        (0..self.relation_count).map_while(move |_| {
            let n = r.u16("").ok()? as usize;
            let target = std::str::from_utf8(r.b.get(..n)?).ok()?;
            r.b.advance(n);
            let k = r.u8("").ok()? as usize;
            let mut v = [0u64; RELATION_COUNTERS.len()];
            for i in 0..k {
                let x = r.u64("").ok()?;
                if let Some(slot) = v.get_mut(i) {
                    *slot = x;
                }
            }
            Some((target, v))
        })
    }
}

/// Takes the body of one complete frame off the front of `buf` (without decoding it).
pub fn split_body(buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    split_body(buf)?.map(|body| decode(&body)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> CellConfig {
        CellConfig {
            pci: 7,
            electrical_tilt: -12,
            max_tx_power_dbm: 46,
            hysteresis: 4,
            time_to_trigger_ms: 320,
            a3_offset: -3,
            admin_state: 0,
            energy_saving: 1,
            relations: vec![RelationConfig {
                target: "S1-2".into(),
                cio_db: -4,
                ho_allowed: true,
            }],
        }
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                cell: "S1-1".into(),
                controller: 3,
            },
            Frame::Welcome {
                cell: "S1-1".into(),
                period_ms: 1000,
                config: config(),
            },
            Frame::Report(report()),
            Frame::ConfigSet {
                txn: 9,
                config: config(),
            },
            Frame::ConfigAck {
                txn: 9,
                config: config(),
            },
            Frame::Error {
                code: 2,
                message: "no such cell".into(),
            },
            Frame::HelloFenced {
                cell: "S1-1".into(),
                controller: 3,
                epoch: 7,
            },
            Frame::ConfigSetFenced {
                txn: 9,
                epoch: 7,
                config: config(),
            },
            stale_epoch(3, 7),
            Frame::HelloStation {
                station: "S1".into(),
                controller: 3,
                epoch: 7,
            },
            Frame::WelcomeStation {
                station: "S1".into(),
                period_ms: 1000,
                cells: vec![
                    ("S1-1".into(), config()),
                    ("S1-2".into(), CellConfig::default()),
                ],
            },
            Frame::CellReport {
                cell: "S1-1".into(),
                report: report(),
            },
            Frame::CellConfigSet {
                txn: 9,
                epoch: 7,
                cell: "S1-1".into(),
                config: config(),
            },
            Frame::CellConfigAck {
                txn: 9,
                cell: "S1-1".into(),
                config: config(),
            },
        ]
    }

    fn report() -> Report {
        Report {
            period_end_ms: 123,
            period_ms: 1000,
            cell: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            relations: vec![RelationCounters {
                target: "S1-2".into(),
                values: [1, 2, 3, 4, 5, 6],
            }],
        }
    }

    #[test]
    fn every_frame_round_trips() {
        for f in frames() {
            let bytes = encode(&f);
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(split_frame(&mut buf).unwrap(), Some(f));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn the_in_place_report_view_reads_what_decode_reads() {
        let Frame::Report(r) = frames()[2].clone() else {
            unreachable!()
        };
        let bytes = encode(&Frame::Report(r.clone()));
        let v = ReportView::parse(&bytes[4..]).unwrap();
        assert_eq!(
            (v.period_end_ms, v.period_ms, v.cell),
            (r.period_end_ms, r.period_ms, r.cell)
        );
        let rels: Vec<_> = v.relations().map(|(t, c)| (t.to_string(), c)).collect();
        assert_eq!(
            rels,
            r.relations
                .iter()
                .map(|x| (x.target.clone(), x.values))
                .collect::<Vec<_>>()
        );
        assert_eq!(v.values(), r.values());
        assert!(
            ReportView::parse(&encode(&frames()[0])[4..]).is_err(),
            "not a report"
        );
    }

    /// A `REPORT` body as an antenna of the first release sends it: `cells` cell values.
    fn report_with(cells: &[u64]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(VERSION);
        b.put_u8(KIND_REPORT);
        b.put_u64(123);
        b.put_u32(1000);
        b.put_u8(cells.len() as u8);
        cells.iter().for_each(|v| b.put_u64(*v));
        b.put_u16(0);
        b.to_vec()
    }

    #[test]
    fn a_report_of_an_older_antenna_reads_its_missing_coverage_counters_as_zero() {
        let old: Vec<u64> = (1..=BASE_CELL_COUNTERS as u64).collect();
        let body = report_with(&old);
        let Ok(Frame::Report(r)) = decode(&body) else {
            panic!("an old report is refused")
        };
        assert_eq!(&r.cell[..BASE_CELL_COUNTERS], &old[..]);
        assert!(r.cell[BASE_CELL_COUNTERS..].iter().all(|v| *v == 0));
        assert_eq!(ReportView::parse(&body).unwrap().cell, r.cell);
        // Fewer than the first release's counters is still an error.
        assert!(decode(&report_with(&old[..BASE_CELL_COUNTERS - 1])).is_err());
        // A newer antenna's extra values are skipped.
        let newer: Vec<u64> = (1..=CELL_COUNTERS.len() as u64 + 2).collect();
        let Ok(Frame::Report(r)) = decode(&report_with(&newer)) else {
            panic!("a newer report is refused")
        };
        assert_eq!(&r.cell[..], &newer[..CELL_COUNTERS.len()]);
    }

    /// The fenced kinds byte for byte, as the module's table states them: a peer in another
    /// language is written from that table, so it must not drift from the code.
    #[test]
    fn the_fenced_frames_have_the_documented_layout() {
        let hello = encode(&Frame::HelloFenced {
            cell: "S1-1".into(),
            controller: 3,
            epoch: 0x0102,
        });
        let mut want = vec![0, 0, 0, 24, VERSION, 7, 0, 4];
        want.extend_from_slice(b"S1-1");
        want.extend_from_slice(&3u64.to_be_bytes());
        want.extend_from_slice(&0x0102u64.to_be_bytes());
        assert_eq!(&hello[..], &want[..]);

        let empty = CellConfig::default();
        let set = encode(&Frame::ConfigSetFenced {
            txn: 9,
            epoch: 5,
            config: empty.clone(),
        });
        let plain = encode(&Frame::ConfigSet {
            txn: 9,
            config: empty,
        });
        // The epoch sits between the transaction and the configuration, which is unchanged.
        assert_eq!(set[5], 8);
        assert_eq!(&set[6..14], &plain[6..14]);
        assert_eq!(&set[14..22], &5u64.to_be_bytes());
        assert_eq!(&set[22..], &plain[14..]);
        assert_eq!(set.len(), plain.len() + 8);
    }

    /// The station kinds byte for byte, as the module's table states them.
    #[test]
    fn the_station_frames_have_the_documented_layout() {
        let hello = encode(&Frame::HelloStation {
            station: "S1".into(),
            controller: 3,
            epoch: 0x0102,
        });
        let mut want = vec![0, 0, 0, 22, VERSION, 9, 0, 2];
        want.extend_from_slice(b"S1");
        want.extend_from_slice(&3u64.to_be_bytes());
        want.extend_from_slice(&0x0102u64.to_be_bytes());
        assert_eq!(&hello[..], &want[..]);

        let empty = CellConfig::default();
        let config_bytes = encode(&Frame::ConfigSet {
            txn: 0,
            config: empty.clone(),
        })[14..]
            .to_vec();
        let welcome = encode(&Frame::WelcomeStation {
            station: "S1".into(),
            period_ms: 1000,
            cells: vec![
                ("S1-1".into(), empty.clone()),
                ("S1-2".into(), empty.clone()),
            ],
        });
        let mut want = vec![VERSION, 10, 0, 2];
        want.extend_from_slice(b"S1");
        want.extend_from_slice(&1000u32.to_be_bytes());
        want.extend_from_slice(&[0, 2]);
        for cell in [b"S1-1", b"S1-2"] {
            want.extend_from_slice(&[0, 4]);
            want.extend_from_slice(cell);
            want.extend_from_slice(&config_bytes);
        }
        assert_eq!(&welcome[4..], &want[..]);

        // A cell report is the cell id, then the `REPORT` body exactly as a cell session's.
        let report_frame = encode(&Frame::Report(report()));
        let cell_report = encode(&Frame::CellReport {
            cell: "S1-1".into(),
            report: report(),
        });
        assert_eq!(
            &cell_report[4..10],
            &[VERSION, KIND_CELL_REPORT, 0, 4, b'S', b'1']
        );
        assert_eq!(&cell_report[10..12], b"-1");
        assert_eq!(&cell_report[12..], &report_frame[4..]);
        let mut put = BytesMut::new();
        put_cell_report(&mut put, "S1-1", &report_frame[4..]);
        assert_eq!(&put[..], &cell_report[..]);

        let set = encode(&Frame::CellConfigSet {
            txn: 9,
            epoch: 5,
            cell: "S1-1".into(),
            config: empty.clone(),
        });
        let mut want = vec![VERSION, 12];
        want.extend_from_slice(&9u64.to_be_bytes());
        want.extend_from_slice(&5u64.to_be_bytes());
        want.extend_from_slice(&[0, 4]);
        want.extend_from_slice(b"S1-1");
        want.extend_from_slice(&config_bytes);
        assert_eq!(&set[4..], &want[..]);

        let ack = encode(&Frame::CellConfigAck {
            txn: 9,
            cell: "S1-1".into(),
            config: empty,
        });
        let mut want = vec![VERSION, 13];
        want.extend_from_slice(&9u64.to_be_bytes());
        want.extend_from_slice(&[0, 4]);
        want.extend_from_slice(b"S1-1");
        want.extend_from_slice(&config_bytes);
        assert_eq!(&ack[4..], &want[..]);
    }

    #[test]
    fn a_cell_report_splits_into_its_cell_and_the_embedded_report_body_without_a_copy() {
        let frame = encode(&Frame::CellReport {
            cell: "S1-1".into(),
            report: report(),
        });
        let body = frame.slice(4..);

        let (cell, embedded) = split_cell_report(&body).unwrap();

        assert_eq!(cell, "S1-1");
        assert_eq!(&embedded[..], &encode(&Frame::Report(report()))[4..]);
        assert_eq!(
            embedded.as_ptr(),
            body[8..].as_ptr(),
            "the report was copied"
        );
        assert_eq!(decode(&embedded), Ok(Frame::Report(report())));
        assert_eq!(
            split_cell_report(&encode(&frames()[2]).slice(4..)),
            Err(FrameError::Kind(KIND_REPORT)),
            "a plain report is not a cell report"
        );
    }

    #[test]
    fn a_welcome_of_more_cells_than_a_station_may_have_is_refused() {
        let mut b = BytesMut::new();
        b.put_u8(VERSION);
        b.put_u8(10);
        put_str(&mut b, "S1");
        b.put_u32(1000);
        b.put_u16(MAX_STATION_CELLS as u16 + 1);
        assert_eq!(decode(&b), Err(FrameError::Bad("cell count")));
    }

    #[test]
    fn a_cell_report_embedding_anything_but_a_report_is_refused() {
        let hello = encode(&frames()[0]);
        let mut b = BytesMut::new();
        b.put_u8(VERSION);
        b.put_u8(KIND_CELL_REPORT);
        put_str(&mut b, "S1-1");
        b.put_slice(&hello[4..]);
        let body = b.freeze();
        assert_eq!(decode(&body), Err(FrameError::Bad("embedded report kind")));
        assert!(split_cell_report(&body).is_err());
    }

    #[test]
    fn a_stale_epoch_refusal_names_both_epochs() {
        assert_eq!(
            stale_epoch(3, 7),
            Frame::Error {
                code: code::STALE_EPOCH,
                message: "epoch 3 is older than epoch 7, which this antenna has seen".into(),
            }
        );
    }

    #[test]
    fn every_kind_refuses_a_byte_more_or_less_than_its_payload() {
        for f in frames() {
            let body = encode(&f)[4..].to_vec();
            let mut longer = body.clone();
            longer.push(0);
            assert_eq!(decode(&longer), Err(FrameError::Trailing(1)), "{f:?}");
            assert!(decode(&body[..body.len() - 1]).is_err(), "{f:?}");
        }
    }

    #[test]
    fn a_partial_frame_waits_for_more_bytes() {
        let bytes = encode(&frames()[2]);
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(split_frame(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversized_wrong_version_and_unknown_kinds_are_errors() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 1][..]);
        assert!(matches!(split_frame(&mut buf), Err(FrameError::TooLong(_))));
        assert_eq!(decode(&[9, 1]), Err(FrameError::Version(9)));
        assert_eq!(decode(&[1, 77]), Err(FrameError::Kind(77)));
        let mut trailing = encode(&frames()[0]).to_vec();
        trailing.push(0);
        assert!(matches!(
            decode(&trailing[4..]),
            Err(FrameError::Trailing(1))
        ));
    }

    /// Everything a receiver does with bytes from the wire, checked for agreement: `decode`
    /// and the in-place `ReportView` accept exactly the same reports and read the same values,
    /// and a frame that decodes re-encodes to one that decodes the same (so no field is
    /// misread). Then the bytes go through the stream splitter, twice in a row.
    fn receive(body: &[u8]) -> Result<(), String> {
        let frame = decode(body);
        let view = ReportView::parse(body);
        match (&frame, &view) {
            (Ok(Frame::Report(r)), Ok(v)) => {
                let rels: Vec<_> = v.relations().map(|(t, c)| (t.to_string(), c)).collect();
                let want: Vec<_> = r
                    .relations
                    .iter()
                    .map(|x| (x.target.clone(), x.values))
                    .collect();
                if (v.period_end_ms, v.period_ms, v.cell, rels)
                    != (r.period_end_ms, r.period_ms, r.cell, want)
                {
                    return Err(format!("the report view reads {v:?}, decode {r:?}"));
                }
            }
            (Ok(Frame::Report(r)), Err(e)) => {
                return Err(format!(
                    "decode took a report the view refused ({e}): {r:?}"
                ));
            }
            (Err(e), Ok(_)) if body.get(1) == Some(&KIND_REPORT) => {
                return Err(format!("the view took a report decode refused ({e})"));
            }
            _ => {}
        }
        // The cell report splitter and decode agree the same way, and the split-off body
        // reads as the report decode found.
        let split = split_cell_report(&Bytes::copy_from_slice(body));
        match (&frame, &split) {
            (Ok(Frame::CellReport { cell, report }), Ok((c, embedded)))
                if c != cell || decode(embedded).as_ref() != Ok(&Frame::Report(report.clone())) =>
            {
                return Err(format!(
                    "the splitter reads {c} {embedded:?}, decode {cell} {report:?}"
                ));
            }
            (Ok(Frame::CellReport { .. }), Ok(_)) => {}
            (Ok(Frame::CellReport { .. }), Err(e)) => {
                return Err(format!(
                    "decode took a cell report the splitter refused ({e})"
                ));
            }
            (_, Ok(_)) => {
                return Err(format!(
                    "the splitter took a cell report decode refused ({frame:?})"
                ));
            }
            _ => {}
        }
        if let Ok(f) = frame {
            let again = encode(&f);
            if decode(&again[4..]).as_ref() != Ok(&f) {
                return Err(format!("{f:?} does not survive re-encoding"));
            }
        }
        let mut framed = BytesMut::new();
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(body);
        framed.extend_from_slice(body);
        while let Ok(Some(_)) = split_frame(&mut framed) {}
        Ok(())
    }

    /// Every single-byte change of every sample frame, to a few values: each field of each
    /// payload is hit (bad lengths, counts, UTF-8, kinds), not just the version and kind bytes
    /// that uniformly random input rarely gets past.
    #[test]
    fn every_single_byte_change_of_a_real_frame_is_refused_or_read_consistently() {
        let mut parsed_payloads = 0;
        for f in frames() {
            let body = encode(&f)[4..].to_vec();
            for at in 0..body.len() {
                for value in [
                    0u8,
                    1,
                    0x7f,
                    0x80,
                    0xff,
                    body[at].wrapping_add(1),
                    body[at].wrapping_sub(1),
                ] {
                    let mut m = body.clone();
                    m[at] = value;
                    receive(&m).unwrap_or_else(|e| panic!("{f:?}, byte {at} = {value}: {e}"));
                    parsed_payloads += usize::from(at >= 2 && decode(&m).is_ok());
                }
            }
        }
        assert!(
            parsed_payloads > 200,
            "only {parsed_payloads} mutated payloads decoded"
        );
    }

    /// How a real frame is damaged: bytes changed, cut, inserted or appended.
    #[derive(Debug, Clone)]
    enum Damage {
        Set(usize, u8),
        Cut(usize),
        Insert(usize, Vec<u8>),
        Append(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            4 => (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Damage::Set(at, v)),
            2 => any::<usize>().prop_map(Damage::Cut),
            2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..80))
                .prop_map(|(at, b)| Damage::Insert(at, b)),
            1 => prop::collection::vec(any::<u8>(), 1..600).prop_map(Damage::Append),
        ]
    }

    proptest! {
        #[test]
        fn damaged_real_frames_are_refused_or_read_consistently_never_a_panic(
            which in 0..frames().len(),
            damages in prop::collection::vec(damage(), 1..5),
        ) {
            let mut body = encode(&frames()[which])[4..].to_vec();
            for d in damages {
                match d {
                    Damage::Set(at, v) => {
                        let n = body.len().max(1);
                        if let Some(b) = body.get_mut(at % n) {
                            *b = v;
                        }
                    }
                    Damage::Cut(at) => body.truncate(at % (body.len() + 1)),
                    Damage::Insert(at, bytes) => {
                        let at = at % (body.len() + 1);
                        body.splice(at..at, bytes);
                    }
                    Damage::Append(bytes) => body.extend(bytes),
                }
            }
            prop_assert!(receive(&body).is_ok(), "{:?}", receive(&body));
        }

        #[test]
        fn truncating_a_frame_is_an_error_not_a_panic(cut in 0usize..200) {
            for f in frames() {
                let bytes = encode(&f);
                let body = &bytes[4..];
                let cut = cut.min(body.len() - 1);
                prop_assert!(decode(&body[..cut]).is_err());
            }
        }
    }
}
