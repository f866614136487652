//! TS 32.435 measurement files: what the writer writes the parser reads back unchanged, and
//! every way a file can be wrong is refused with the file, the line and the reason.

use proptest::prelude::*;
use sonraft_protocol::pm_xml::{self, Cell, Fault, ParseError};
use sonraft_protocol::{CELL_COUNTERS, RelationCounters, Report};

const END: u64 = 1_764_713_700_000; // 2025-12-02T22:15:00Z

fn report(end_ms: u64, period_ms: u32, seed: u64, relations: usize) -> Report {
    Report {
        period_end_ms: end_ms,
        period_ms,
        cell: std::array::from_fn(|k| seed * 100 + k as u64),
        relations: (0..relations)
            .map(|i| RelationCounters {
                target: format!("S{:05}-{}", seed + i as u64 + 1, i % 3 + 1),
                values: std::array::from_fn(|k| seed + (i * 10 + k) as u64),
            })
            .collect(),
    }
}

/// A file of two sites: S00001 with an LTE and an NR cell, S00002 with one LTE cell.
fn sample() -> String {
    let (a, b, c) = (
        report(END, 900_000, 1, 2),
        report(END, 900_000, 2, 1),
        report(END, 900_000, 3, 0),
    );
    pm_xml::write(
        "site-a",
        END,
        900_000,
        &[
            Cell {
                id: "S00001-1",
                managed_element: "S00001",
                nr: false,
                report: &a,
            },
            Cell {
                id: "S00001-3",
                managed_element: "S00001",
                nr: true,
                report: &b,
            },
            Cell {
                id: "S00002-1",
                managed_element: "S00002",
                nr: false,
                report: &c,
            },
        ],
    )
    .unwrap()
}

fn refused(xml: &str) -> ParseError {
    match pm_xml::parse("A.xml", xml.as_bytes()) {
        Ok(f) => panic!("accepted: {f:?}\n{xml}"),
        Err(e) => e,
    }
}

/// `sample()` with the first occurrence of `from` replaced.
fn changed(from: &str, to: &str) -> String {
    let s = sample();
    assert!(s.contains(from), "{from} not in the sample");
    s.replacen(from, to, 1)
}

fn line_of(xml: &str, needle: &str) -> u64 {
    let at = xml.find(needle).unwrap();
    1 + xml[..at].matches('\n').count() as u64
}

/// Removes every `<r p="{p}">…</r>` (they are on lines of their own in written files).
fn without_r(xml: &str, p: &str) -> String {
    let open = format!("<r p=\"{p}\">");
    xml.lines()
        .filter(|l| !l.trim_start().starts_with(&open))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_sample_file_reads_back_with_the_standard_structure() {
    let xml = sample();
    assert!(xml.contains("fileFormatVersion=\"32.435 V10.0\""));
    assert!(
        xml.contains("<granPeriod duration=\"PT900S\" endTime=\"2025-12-02T22:15:00+00:00\"/>")
    );
    assert!(xml.contains(
        "measObjLdn=\"ManagedElement=S00001,EUtranCellFDD=S00001-1,EUtranRelation=S00002-1\""
    ));
    assert!(xml.contains("measObjLdn=\"ManagedElement=S00001,NRCellDU=S00001-3\""));
    assert!(xml.contains(
        "measObjLdn=\"ManagedElement=S00001,NRCellCU=S00001-3,NRCellRelation=S00003-1\""
    ));
    let f = pm_xml::parse("A.xml", xml.as_bytes()).unwrap();
    assert_eq!(
        (f.begin_ms, f.end_ms, f.period_ms),
        (END - 900_000, END, 900_000)
    );
    assert_eq!(f.sender.as_deref(), Some("site-a"));
    let cells: Vec<&str> = f.reports.iter().map(|r| r.cell.as_str()).collect();
    assert_eq!(cells, ["S00001-1", "S00001-3", "S00002-1"]);
    assert_eq!(f.reports[0].report, report(END, 900_000, 1, 2));
}

#[test]
fn file_names_follow_ts_32_432_and_sort_by_time() {
    assert_eq!(
        pm_xml::file_name("site-a", END, 900_000),
        "A20251202.2200+0000-2215+0000_site-a.xml"
    );
    let sub_minute: Vec<String> = (0..5)
        .map(|k| pm_xml::file_name("site/a", END + 59_000 + k * 500, 500))
        .collect();
    assert_eq!(
        sub_minute[0],
        "A20251202.221558.500+0000-221559.000+0000_site-a.xml"
    );
    let mut sorted = sub_minute.clone();
    sorted.sort();
    assert_eq!(sorted, sub_minute);
    assert!(sub_minute.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn unknown_measurement_types_and_object_classes_are_skipped() {
    let xml = changed(
        "<measType p=\"1\">RRU.PrbUsedDl</measType>",
        "<measType p=\"1\">RRU.PrbUsedDl</measType>\n      <measType p=\"99\">VS.Vendor.Thing</measType>",
    )
    .replacen("<r p=\"1\">", "<r p=\"99\">not even a number</r><r p=\"1\">", 1)
    .replacen(
        "  </measData>",
        "    <measInfo measInfoId=\"x\"><granPeriod duration=\"PT900S\" endTime=\"2025-12-02T22:15:00Z\"/><measType p=\"1\">RRU.PrbUsedDl</measType><measValue measObjLdn=\"ManagedElement=S00001,GNBDUFunction=1\"><r p=\"1\">5</r></measValue></measInfo>\n  </measData>",
        1,
    );
    let f = pm_xml::parse("A.xml", xml.as_bytes()).unwrap();
    let plain = pm_xml::parse("A.xml", sample().as_bytes()).unwrap();
    assert_eq!(f.reports, plain.reports);
    assert_eq!(f.ignored_objects, 1);
}

#[test]
fn a_cells_counters_may_be_split_over_measinfo_blocks() {
    let r = report(END, 60_000, 7, 0);
    let mut xml = String::from(
        "<?xml version=\"1.0\"?><measCollecFile xmlns=\"http://www.3gpp.org/ftp/specs/archive/32_series/32.435#measCollec\"><fileHeader fileFormatVersion=\"32.435 V10.0\"><measCollec beginTime=\"2025-12-02T22:14:00Z\"/></fileHeader><measData><managedElement localDn=\"ManagedElement=S7\"/>",
    );
    for (k, name) in CELL_COUNTERS.iter().enumerate() {
        xml.push_str(&format!(
            "<measInfo><granPeriod duration=\"PT1M\" endTime=\"2025-12-02T22:15:00Z\"/><measType p=\"{k}\">{name}</measType><measValue measObjLdn=\"EUtranCellFDD=S7-1\"><r p=\"{k}\">{}</r><suspect>false</suspect></measValue></measInfo>",
            r.cell[k]
        ));
    }
    xml.push_str(
        "</measData><fileFooter><measCollec endTime=\"2025-12-02T22:15:00Z\"/></fileFooter></measCollecFile>",
    );
    let f = pm_xml::parse("A.xml", xml.as_bytes()).unwrap();
    assert_eq!(f.reports[0].cell, "S7-1");
    assert_eq!(f.reports[0].report, r);
}

#[test]
fn malformed_xml_is_refused_with_its_line() {
    let xml = changed("</measValue>", "</measValu>");
    let e = refused(&xml);
    assert!(matches!(e.fault, Fault::Xml(_)), "{e}");
    let line = line_of(&xml, "</measValu>");
    assert_eq!(e.line, Some(line));
    assert!(
        e.to_string()
            .starts_with(&format!("A.xml line {line}: not well-formed XML")),
        "{e}"
    );
}

#[test]
fn a_file_cut_short_is_refused() {
    let s = sample();
    for cut in [s.len() / 3, s.len() / 2, s.len() - 20] {
        let e = refused(&s[..cut]);
        assert!(
            matches!(e.fault, Fault::Structure(_) | Fault::Xml(_)),
            "{e}"
        );
    }
    assert!(matches!(refused("").fault, Fault::Structure(_)));
}

#[test]
fn unknown_structure_is_refused() {
    for (from, to) in [
        ("<measCollecFile xmlns", "<measCollecFil xmlns"),
        ("<fileSender", "<fileSenders"),
        ("<r p=\"1\">", "<x/><r p=\"1\">"),
        ("<measValue measObjLdn", "<measValue measObj"),
        (
            "32_series/32.435#measCollec\"",
            "32_series/32.999#measCollec\"",
        ),
        (
            "fileFormatVersion=\"32.435 V10.0\"",
            "fileFormatVersion=\"32.401 V5\"",
        ),
        (
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]>",
        ),
        ("<r p=\"1\">", "<r p=\"77\">1</r><r p=\"1\">"),
        ("  <fileFooter>", "  stray text\n  <fileFooter>"),
        ("EUtranCellFDD=S00001-1,EUtranRelation", "EUtranRelation"),
        ("<managedElement localDn=\"ManagedElement=S00002\"/>", ""),
        (
            "<measType p=\"2\">RRU.PrbAvailDl</measType>",
            "<measType p=\"1\">RRU.PrbAvailDl</measType>",
        ),
        ("<r p=\"1\">100</r>", "<r p=\"1\">1&#48;0</r>"),
    ] {
        let e = refused(&changed(from, to));
        assert!(
            matches!(e.fault, Fault::Structure(_) | Fault::Xml(_)),
            "{from} -> {to}: {e}"
        );
        assert!(e.line.is_some(), "{e}");
    }
}

#[test]
fn a_missing_counter_is_refused_naming_the_object_and_counter() {
    let e = refused(&without_r(&sample(), "5"));
    assert_eq!(
        e.fault,
        Fault::MissingCounter {
            object: "cell S00001-1".into(),
            counter: "RRC.ConnMean".into()
        },
        "{e}"
    );
    // The relations' ping-pong count under a name this reader does not know.
    let e = refused(&changed(
        "<measType p=\"6\">HO.PingPong</measType>",
        "<measType p=\"6\">VS.PingPong</measType>",
    ));
    assert_eq!(
        e.fault,
        Fault::MissingCounter {
            object: "relation S00001-1 -> S00002-1".into(),
            counter: "HO.PingPong".into()
        },
        "{e}"
    );
}

#[test]
fn non_numeric_and_negative_values_are_refused() {
    for bad in ["-3", "1.5", "", "x", "+4", "18446744073709551616", "NIL"] {
        let xml = changed("<r p=\"1\">100</r>", &format!("<r p=\"1\">{bad}</r>"));
        let e = refused(&xml);
        assert_eq!(
            e.fault,
            Fault::NotANumber {
                object: "ManagedElement=S00001,EUtranCellFDD=S00001-1".into(),
                counter: "RRU.PrbUsedDl".into(),
                value: bad.into()
            },
            "{bad}: {e}"
        );
        assert_eq!(
            e.line,
            Some(line_of(&xml, &format!("<r p=\"1\">{bad}</r>")))
        );
    }
}

#[test]
fn duplicate_objects_and_values_are_refused() {
    let s = sample();
    let start = s
        .find("      <measValue measObjLdn=\"ManagedElement=S00001,EUtranCellFDD=S00001-1\">")
        .unwrap();
    let end = start + s[start..].find("</measValue>\n").unwrap() + "</measValue>\n".len();
    let twice = format!("{}{}{}", &s[..end], &s[start..end], &s[end..]);
    assert_eq!(
        refused(&twice).fault,
        Fault::DuplicateObject {
            object: "ManagedElement=S00001,EUtranCellFDD=S00001-1".into()
        }
    );
    let e = refused(&changed("<r p=\"2\">", "<r p=\"1\">0</r><r p=\"2\">"));
    assert_eq!(
        e.fault,
        Fault::DuplicateValue {
            object: "ManagedElement=S00001,EUtranCellFDD=S00001-1".into(),
            counter: "RRU.PrbUsedDl".into()
        }
    );
}

#[test]
fn a_period_mismatch_is_refused() {
    for (from, to) in [
        (
            "<granPeriod duration=\"PT900S\"",
            "<granPeriod duration=\"PT600S\"",
        ),
        (
            "endTime=\"2025-12-02T22:15:00+00:00\"/>\n      <repPeriod",
            "endTime=\"2025-12-02T22:30:00+00:00\"/>\n      <repPeriod",
        ),
        (
            "beginTime=\"2025-12-02T22:00:00+00:00\"",
            "beginTime=\"2025-12-02T22:05:00+00:00\"",
        ),
        (
            "beginTime=\"2025-12-02T22:00:00+00:00\"",
            "beginTime=\"2025-12-02T23:00:00+00:00\"",
        ),
    ] {
        let e = refused(&changed(from, to));
        assert!(
            matches!(e.fault, Fault::PeriodMismatch(_)),
            "{from} -> {to}: {e}"
        );
    }
    let s = sample();
    let last = s.rfind("<granPeriod duration=\"PT900S\"").unwrap();
    let second_info = format!(
        "{}<granPeriod duration=\"PT300S\"{}",
        &s[..last],
        &s[last + "<granPeriod duration=\"PT900S\"".len()..]
    );
    assert!(matches!(
        refused(&second_info).fault,
        Fault::PeriodMismatch(_)
    ));
    for bad in ["yesterday", "2025-12-02T22:15:00"] {
        let e = refused(&changed(
            "endTime=\"2025-12-02T22:15:00+00:00\"/>\n  </fileFooter>",
            &format!("endTime=\"{bad}\"/>\n  </fileFooter>"),
        ));
        assert!(matches!(e.fault, Fault::Time(_)), "{e}");
    }
}

#[test]
fn too_large_files_and_ids_are_refused() {
    let huge = vec![b' '; pm_xml::MAX_FILE_BYTES as usize + 1];
    let e = pm_xml::parse("big.xml", &huge).unwrap_err();
    assert!(matches!(e.fault, Fault::TooLarge { .. }));
    assert!(e.to_string().starts_with("big.xml: "), "{e}");
    let long = "x".repeat(65);
    let e = refused(&changed(
        "EUtranCellFDD=S00002-1\"",
        &format!("EUtranCellFDD={long}\""),
    ));
    assert!(matches!(e.fault, Fault::Structure(_)), "{e}");
}

#[test]
fn the_writer_refuses_what_a_file_cannot_carry() {
    let r = report(END, 900_000, 1, 0);
    let other = report(END - 1, 900_000, 1, 0);
    let cell = |id, report| Cell {
        id,
        managed_element: "S1",
        nr: false,
        report,
    };
    assert!(pm_xml::write("a", END, 900_000, &[cell("S1,1", &r)]).is_err());
    assert!(matches!(
        pm_xml::write("a", END, 900_000, &[cell("S1-1", &other)]),
        Err(pm_xml::WriteError::Period { .. })
    ));
}

#[test]
fn a_thousand_cell_file_parses() {
    let reports: Vec<Report> = (0..1000).map(|i| report(END, 900_000, i, 12)).collect();
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("S{:05}-{}", i / 3, i % 3 + 1))
        .collect();
    let sites: Vec<String> = (0..1000).map(|i| format!("S{:05}", i / 3)).collect();
    let cells: Vec<Cell<'_>> = (0..1000)
        .map(|i| Cell {
            id: &ids[i],
            managed_element: &sites[i],
            nr: i % 15 == 2,
            report: &reports[i],
        })
        .collect();
    let started = std::time::Instant::now();
    let xml = pm_xml::write("site-a", END, 900_000, &cells).unwrap();
    let written = started.elapsed();
    let started = std::time::Instant::now();
    let f = pm_xml::parse("A.xml", xml.as_bytes()).unwrap();
    // A measurement, not an assertion: run with --nocapture to see it.
    println!(
        "1000 cells, 12 relations each: {} bytes written in {written:?}, parsed in {:?}",
        xml.len(),
        started.elapsed()
    );
    assert_eq!(f.reports.len(), 1000);
}

/// A report of the given period with arbitrary counters and up to 8 relations to distinct,
/// arbitrary (legal) targets.
fn any_report(end_ms: u64, period_ms: u32) -> impl Strategy<Value = Report> {
    (
        prop::array::uniform15(any::<u64>()),
        prop::collection::btree_map(
            "[A-Za-z0-9_.-]{1,64}",
            prop::array::uniform6(any::<u64>()),
            0..8,
        ),
    )
        .prop_map(move |(cell, rels)| Report {
            period_end_ms: end_ms,
            period_ms,
            cell,
            relations: rels
                .into_iter()
                .map(|(target, values)| RelationCounters { target, values })
                .collect(),
        })
}

fn any_period() -> impl Strategy<Value = (u64, u32)> {
    (86_400_000u64..4_000_000_000_000, 1u32..=86_400_000)
}

fn any_cells(
    end_ms: u64,
    period_ms: u32,
) -> impl Strategy<Value = Vec<(String, u8, bool, Report)>> {
    prop::collection::btree_map(
        "[A-Za-z0-9_.-]{1,64}",
        (0u8..4, any::<bool>(), any_report(end_ms, period_ms)),
        0..12,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(id, (s, nr, r))| (id, s, nr, r))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the writer writes, the parser gives back the same reports, per cell.
    #[test]
    fn written_files_read_back_as_the_same_reports(
        (end_ms, period_ms, cells) in any_period()
            .prop_flat_map(|(e, p)| (Just(e), Just(p), any_cells(e, p))),
    ) {
        let sites: Vec<String> = cells.iter().map(|c| format!("S{}", c.1)).collect();
        let list: Vec<Cell<'_>> = cells
            .iter()
            .zip(&sites)
            .map(|((id, _, nr, report), site)| Cell { id, managed_element: site, nr: *nr, report })
            .collect();
        let xml = pm_xml::write("site-a", end_ms, period_ms, &list).unwrap();
        let f = pm_xml::parse("A.xml", xml.as_bytes()).unwrap();
        prop_assert_eq!((f.end_ms, f.period_ms), (end_ms, period_ms));
        let got: Vec<(String, Report)> = f.reports.into_iter().map(|r| (r.cell, r.report)).collect();
        let want: Vec<(String, Report)> = cells.into_iter().map(|(id, _, _, r)| (id, r)).collect();
        prop_assert_eq!(got, want);
    }

    /// Damaged files are refused or read, never a panic.
    #[test]
    fn damaged_files_are_refused_or_read_never_a_panic(at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut b = sample().into_bytes();
        let n = b.len();
        b[at % n] = byte;
        b.truncate(cut % (n + 1));
        let _ = pm_xml::parse("A.xml", &b);
    }
}

#[test]
fn a_file_of_an_older_writer_without_the_coverage_counters_reads_them_as_zero() {
    use sonraft_protocol::BASE_CELL_COUNTERS;
    let mut xml = sample();
    for p in BASE_CELL_COUNTERS + 1..=CELL_COUNTERS.len() {
        xml = without_r(&xml, &p.to_string());
    }
    let old = pm_xml::parse("A.xml", xml.as_bytes()).unwrap();
    let new = pm_xml::parse("A.xml", sample().as_bytes()).unwrap();
    assert_eq!(old.reports.len(), new.reports.len());
    for (o, n) in old.reports.iter().zip(&new.reports) {
        assert_eq!(
            o.report.cell[..BASE_CELL_COUNTERS],
            n.report.cell[..BASE_CELL_COUNTERS]
        );
        assert!(o.report.cell[BASE_CELL_COUNTERS..].iter().all(|v| *v == 0));
        assert!(n.report.cell[BASE_CELL_COUNTERS..].iter().any(|v| *v != 0));
        assert_eq!(o.report.relations, n.report.relations);
    }
}
