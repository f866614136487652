//! TS 32.435 measurement files: one counter period of many cells as XML, the way operators'
//! OSSs deliver PM, written by the simulator and read by a node (`--pm-dir`) as an
//! alternative to the antenna session's `REPORT` frames.
//!
//! ```xml
//! <measCollecFile xmlns="http://www.3gpp.org/ftp/specs/archive/32_series/32.435#measCollec">
//!   <fileHeader fileFormatVersion="32.435 V10.0" vendorName="sonraft">
//!     <fileSender localDn="site-a"/>
//!     <measCollec beginTime="2026-12-02T22:00:00+00:00"/>
//!   </fileHeader>
//!   <measData>
//!     <managedElement localDn="ManagedElement=S00001"/>
//!     <measInfo measInfoId="EUtranCellFDD">
//!       <granPeriod duration="PT900S" endTime="2026-12-02T22:15:00+00:00"/>
//!       <repPeriod duration="PT900S"/>
//!       <measType p="1">RRU.PrbUsedDl</measType> …
//!       <measValue measObjLdn="ManagedElement=S00001,EUtranCellFDD=S00001-1">
//!         <r p="1">37</r> …
//!       </measValue>
//!     </measInfo>
//!     <measInfo measInfoId="EUtranRelation"> … measObjLdn="ManagedElement=S00001,
//!       EUtranCellFDD=S00001-1,EUtranRelation=S00002-3" …
//!   </measData>
//!   <fileFooter><measCollec endTime="2026-12-02T22:15:00+00:00"/></fileFooter>
//! </measCollecFile>
//! ```
//!
//! **Objects.** A cell's counters ([`CELL_COUNTERS`](crate::CELL_COUNTERS)) are on the object
//! whose last RDN is a cell: `EUtranCellFDD` (LTE; `EUtranCellTDD` is read too) or `NRCellDU`
//! (NR; `NRCellCU` is read too), its value the sonraft cell id. A relation's counters
//! ([`RELATION_COUNTERS`](crate::RELATION_COUNTERS)) are on `EUtranRelation` or
//! `NRCellRelation` right below its source cell (`NRCellCU` for NR, as in TS 28.541), and —
//! sonraft's convention, where the NRM would carry a relation id — the RDN's value is the
//! target cell's id. Objects of other classes are skipped (counted in
//! [`PmFile::ignored_objects`]), as are measurement types of names not in those lists; a
//! cell's counters may be split over several `measInfo` blocks.
//!
//! **Refused** (a [`ParseError`] naming the file, the line and what): a file over
//! [`MAX_FILE_BYTES`]; XML that is not well-formed or is cut short; elements out of place, a
//! DOCTYPE, CDATA or entity references in text; a missing header, footer, `granPeriod`,
//! `measType` for an `r`, or required attribute; a known counter missing from a cell or
//! relation; a value that is not a non-negative whole number; an object listed twice in one
//! `measInfo` or a counter given twice; a `granPeriod` that differs from the file's
//! (`beginTime` to `endTime`) or from another's; ids over 64 bytes; more than
//! [`MAX_RELATIONS`](crate::MAX_RELATIONS) relations of a cell; text over 256 bytes.
//!
//! **Names** ([`file_name`]): TS 32.432's `A<YYYYMMDD>.<HHMM><+0000>-<HHMM><+0000>_<sender>.xml`
//! in UTC; a period not on whole minutes writes `HHMMSS.mmm` instead of `HHMM`, so names stay
//! unique and, within one sender, sort by time.

mod parse;
pub mod time;
mod write;

pub use parse::{Fault, ParseError, parse};
pub use write::{WriteError, file_name, write};

use crate::Report;

/// The namespace of `measCollecFile`.
pub const NAMESPACE: &str = "http://www.3gpp.org/ftp/specs/archive/32_series/32.435#measCollec";
/// The `fileFormatVersion` written (any `32.435…` is read).
pub const FILE_FORMAT_VERSION: &str = "32.435 V10.0";
/// The `vendorName` written.
pub const VENDOR: &str = "sonraft";
/// Largest file read: about 30,000 cells with ten relations each.
pub const MAX_FILE_BYTES: u64 = 128 * 1024 * 1024;
/// RDN classes of a cell's counters.
pub const CELL_CLASSES: [&str; 4] = ["EUtranCellFDD", "EUtranCellTDD", "NRCellDU", "NRCellCU"];
/// RDN classes of a relation's counters (below its source cell).
pub const RELATION_CLASSES: [&str; 2] = ["EUtranRelation", "NRCellRelation"];

/// One cell of a file to write: its id, its cell site (the managed element), whether it is NR,
/// and its period's report.
#[derive(Debug, Clone, Copy)]
pub struct Cell<'a> {
    pub id: &'a str,
    pub managed_element: &'a str,
    pub nr: bool,
    pub report: &'a Report,
}

/// One cell's counters read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellReport {
    pub cell: String,
    /// The file's period, the cell's counters, its relations in the order first listed.
    pub report: Report,
}

/// A measurement file read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmFile {
    /// `fileSender localDn`, when given.
    pub sender: Option<String>,
    pub begin_ms: u64,
    pub end_ms: u64,
    pub period_ms: u32,
    /// Per cell, by cell id.
    pub reports: Vec<CellReport>,
    /// Objects of classes other than cells and relations, whose values were skipped.
    pub ignored_objects: u64,
}
