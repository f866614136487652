//! Writing a measurement file: one period of counters of many cells, grouped by managed
//! element (a cell site), as TS 32.435 XML.

use std::fmt::Write as _;

use super::time::{format_date_time, format_duration, name_date, name_time};
use super::{Cell, FILE_FORMAT_VERSION, NAMESPACE, VENDOR};
use crate::{CELL_COUNTERS, MAX_RELATIONS, RELATION_COUNTERS, Report};

/// Why counters cannot be written as a measurement file (the caller's data, not the disk).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// A cell's report is for another period than the file's.
    #[error(
        "cell {cell}: its report ends at {end_ms} ms over {period_ms} ms, the file's period ends at {file_end_ms} ms over {file_period_ms} ms"
    )]
    Period {
        cell: String,
        end_ms: u64,
        period_ms: u32,
        file_end_ms: u64,
        file_period_ms: u32,
    },
    /// An id that a distinguished name cannot carry (empty, over 64 bytes, or with `,` `=`
    /// `\` `"` `<` `>` `&`), or a period that starts before 1970.
    #[error("{0}")]
    Bad(String),
}

/// Whether `id` can stand in a distinguished name and in the antenna protocol as it is.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.contains([',', '=', '\\', '"', '<', '>', '&', '\''])
        && !id.chars().any(char::is_control)
}

fn check_id(what: &str, id: &str) -> Result<(), WriteError> {
    if plain_id(id) {
        Ok(())
    } else {
        Err(WriteError::Bad(format!(
            "{what} `{id}` cannot be written in a distinguished name"
        )))
    }
}

/// The TS 32.432 name of the file of `sender` for the period ending at `end_ms`:
/// `A20261202.2215+0000-2230+0000_site-a.xml`. The times are UTC; when the period does not
/// begin and end on whole minutes they carry seconds and milliseconds
/// (`A20261202.221500.000+0000-221501.000+0000_site-a.xml`), so that names stay unique and
/// sort by time. Characters of `sender` other than letters, digits, `-`, `_` and `.` become `-`.
pub fn file_name(sender: &str, end_ms: u64, period_ms: u32) -> String {
    let begin = end_ms.saturating_sub(u64::from(period_ms));
    let extended = !begin.is_multiple_of(60_000) || !end_ms.is_multiple_of(60_000);
    let sender: String = sender
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "A{}.{}-{}_{sender}.xml",
        name_date(begin),
        name_time(begin, extended),
        name_time(end_ms, extended)
    )
}

/// The `measInfo` blocks of one managed element: which object class, which counters.
struct Block<'a> {
    id: &'static str,
    counters: &'static [&'static str],
    /// (measObjLdn, values)
    objects: Vec<(String, &'a [u64])>,
}

fn block(out: &mut String, b: &Block<'_>, end: &str, duration: &str) {
    if b.objects.is_empty() {
        return;
    }
    let _ = writeln!(out, "    <measInfo measInfoId=\"{}\">", b.id);
    let _ = writeln!(
        out,
        "      <granPeriod duration=\"{duration}\" endTime=\"{end}\"/>"
    );
    let _ = writeln!(out, "      <repPeriod duration=\"{duration}\"/>");
    for (p, name) in b.counters.iter().enumerate() {
        let _ = writeln!(out, "      <measType p=\"{}\">{name}</measType>", p + 1);
    }
    for (ldn, values) in &b.objects {
        let _ = writeln!(out, "      <measValue measObjLdn=\"{ldn}\">");
        for (p, v) in values.iter().enumerate() {
            let _ = writeln!(out, "        <r p=\"{}\">{v}</r>", p + 1);
        }
        let _ = writeln!(out, "      </measValue>");
    }
    let _ = writeln!(out, "    </measInfo>");
}

/// Writes the period ending at `end_ms` (lasting `period_ms`) of `cells` as the measurement
/// file of `sender`. Cells are grouped by managed element in the order they first appear;
/// within one, the LTE cells' counters (`EUtranCellFDD`), the NR cells' (`NRCellDU`), then
/// the relations' (`EUtranRelation`, `NRCellRelation`). Every report must be of that period.
pub fn write(
    sender: &str,
    end_ms: u64,
    period_ms: u32,
    cells: &[Cell<'_>],
) -> Result<String, WriteError> {
    let begin = end_ms
        .checked_sub(u64::from(period_ms))
        .filter(|_| period_ms > 0)
        .ok_or_else(|| {
            WriteError::Bad(format!("a period of {period_ms} ms ending at {end_ms} ms"))
        })?;
    let mut elements: Vec<(&str, Vec<&Cell<'_>>)> = Vec::new();
    for c in cells {
        check_id("cell", c.id)?;
        check_id("managed element", c.managed_element)?;
        let r: &Report = c.report;
        if r.period_end_ms != end_ms || r.period_ms != period_ms {
            return Err(WriteError::Period {
                cell: c.id.to_string(),
                end_ms: r.period_end_ms,
                period_ms: r.period_ms,
                file_end_ms: end_ms,
                file_period_ms: period_ms,
            });
        }
        if r.relations.len() > MAX_RELATIONS {
            return Err(WriteError::Bad(format!(
                "cell {} has {} relations, over the {MAX_RELATIONS} a report carries",
                c.id,
                r.relations.len()
            )));
        }
        for rel in &r.relations {
            check_id("relation target", &rel.target)?;
        }
        match elements.iter_mut().find(|(me, _)| *me == c.managed_element) {
            Some((_, list)) => list.push(c),
            None => elements.push((c.managed_element, vec![c])),
        }
    }
    let (end, duration) = (
        format_date_time(end_ms),
        format_duration(u64::from(period_ms)),
    );
    let mut out = String::with_capacity(256 + cells.len() * 2048);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<measCollecFile xmlns=\"{NAMESPACE}\">");
    let sender_escaped = quick_xml::escape::escape(sender);
    let _ = writeln!(
        out,
        "  <fileHeader fileFormatVersion=\"{FILE_FORMAT_VERSION}\" vendorName=\"{VENDOR}\">"
    );
    let _ = writeln!(out, "    <fileSender localDn=\"{sender_escaped}\"/>");
    let _ = writeln!(
        out,
        "    <measCollec beginTime=\"{}\"/>",
        format_date_time(begin)
    );
    out.push_str("  </fileHeader>\n");
    for (me, list) in &elements {
        out.push_str("  <measData>\n");
        let _ = writeln!(out, "    <managedElement localDn=\"ManagedElement={me}\"/>");
        let mut blocks = [
            Block {
                id: "EUtranCellFDD",
                counters: &CELL_COUNTERS,
                objects: Vec::new(),
            },
            Block {
                id: "NRCellDU",
                counters: &CELL_COUNTERS,
                objects: Vec::new(),
            },
            Block {
                id: "EUtranRelation",
                counters: &RELATION_COUNTERS,
                objects: Vec::new(),
            },
            Block {
                id: "NRCellRelation",
                counters: &RELATION_COUNTERS,
                objects: Vec::new(),
            },
        ];
        for c in list {
            let (cell_class, k) = if c.nr {
                ("NRCellDU", 1)
            } else {
                ("EUtranCellFDD", 0)
            };
            blocks[k].objects.push((
                format!("ManagedElement={me},{cell_class}={}", c.id),
                &c.report.cell[..],
            ));
            let (source_class, rel_class, k) = if c.nr {
                ("NRCellCU", "NRCellRelation", 3)
            } else {
                ("EUtranCellFDD", "EUtranRelation", 2)
            };
            for rel in &c.report.relations {
                blocks[k].objects.push((
                    format!(
                        "ManagedElement={me},{source_class}={},{rel_class}={}",
                        c.id, rel.target
                    ),
                    &rel.values[..],
                ));
            }
        }
        for b in &blocks {
            block(&mut out, b, &end, &duration);
        }
        out.push_str("  </measData>\n");
    }
    out.push_str("  <fileFooter>\n");
    let _ = writeln!(out, "    <measCollec endTime=\"{end}\"/>");
    out.push_str("  </fileFooter>\n</measCollecFile>\n");
    Ok(out)
}
