//! Reading a measurement file: a single pass of a pull parser over the bytes (no tree), the
//! structure checked element by element, the counters gathered per cell and checked whole at
//! the end. Anything the format does not allow is an error naming the line and what is wrong;
//! measurement types and object classes it does not know are skipped.

use std::collections::{HashMap, HashSet};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::time::{parse_date_time, parse_duration};
use super::{CELL_CLASSES, CellReport, MAX_FILE_BYTES, NAMESPACE, PmFile, RELATION_CLASSES};
use crate::{
    BASE_CELL_COUNTERS, CELL_COUNTERS, MAX_RELATIONS, RELATION_COUNTERS, RelationCounters, Report,
};

/// Longest id (cell, relation target) the antenna protocol carries.
const MAX_ID: usize = 64;

/// What is wrong with a measurement file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Fault {
    #[error("{bytes} bytes is over the {MAX_FILE_BYTES}-byte limit of a measurement file")]
    TooLarge { bytes: u64 },
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("{0}")]
    Structure(String),
    #[error("{0}")]
    Time(String),
    #[error("{object}: {counter} = `{value}` is not a non-negative whole number")]
    NotANumber {
        object: String,
        counter: String,
        value: String,
    },
    #[error("{object}: counter {counter} is missing")]
    MissingCounter { object: String, counter: String },
    #[error("{object} is listed twice in one measInfo")]
    DuplicateObject { object: String },
    #[error("{object}: counter {counter} is given twice")]
    DuplicateValue { object: String, counter: String },
    #[error("{0}")]
    PeriodMismatch(String),
    #[error("{0}")]
    Limit(String),
}

/// A refused measurement file: which, where, what.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}{}: {fault}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ParseError {
    pub file: String,
    /// 1-based; none for faults of the file as a whole (its size).
    pub line: Option<u64>,
    pub fault: Fault,
}

/// The elements of the format, by where they may stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum El {
    File,
    Header,
    Sender,
    BeginCollec,
    Data,
    ManagedElement,
    Info,
    Job,
    GranPeriod,
    RepPeriod,
    MeasType,
    Value,
    R,
    Suspect,
    Footer,
    EndCollec,
}

impl El {
    /// What an element named `name` is under `parent` (none at the root), if it may stand there.
    fn child(parent: Option<El>, name: &[u8]) -> Option<El> {
        Some(match (parent, name) {
            (None, b"measCollecFile") => El::File,
            (Some(El::File), b"fileHeader") => El::Header,
            (Some(El::File), b"measData") => El::Data,
            (Some(El::File), b"fileFooter") => El::Footer,
            (Some(El::Header), b"fileSender") => El::Sender,
            (Some(El::Header), b"measCollec") => El::BeginCollec,
            (Some(El::Data), b"managedElement") => El::ManagedElement,
            (Some(El::Data), b"measInfo") => El::Info,
            (Some(El::Info), b"job") => El::Job,
            (Some(El::Info), b"granPeriod") => El::GranPeriod,
            (Some(El::Info), b"repPeriod") => El::RepPeriod,
            (Some(El::Info), b"measType") => El::MeasType,
            (Some(El::Info), b"measValue") => El::Value,
            (Some(El::Value), b"r") => El::R,
            (Some(El::Value), b"suspect") => El::Suspect,
            (Some(El::Footer), b"measCollec") => El::EndCollec,
            _ => return None,
        })
    }

    /// Elements whose text is read.
    fn has_text(self) -> bool {
        matches!(self, El::MeasType | El::R | El::Suspect)
    }
}

/// What a measured object is, from its `measObjLdn`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Object {
    Cell(String),
    Relation(String, String),
    /// Another class (a PLMN, a QCI, a function): its values are skipped.
    Other,
}

/// Splits a local DN into its last two RDNs' (class, value) and classifies the object.
fn object(ldn: &str) -> Result<Object, String> {
    let rdns: Vec<(&str, &str)> = ldn
        .split(',')
        .map(|rdn| rdn.trim().split_once('=').ok_or(rdn))
        .collect::<Result<_, _>>()
        .map_err(|rdn| format!("measObjLdn `{ldn}`: `{rdn}` is not Class=value"))?;
    let id = |v: &str| -> Result<String, String> {
        if v.is_empty() || v.len() > MAX_ID {
            Err(format!(
                "measObjLdn `{ldn}`: id `{v}` is empty or over {MAX_ID} bytes"
            ))
        } else {
            Ok(v.to_string())
        }
    };
    match rdns.as_slice() {
        [.., (source, s), (rel, t)]
            if RELATION_CLASSES.contains(rel) && CELL_CLASSES.contains(source) =>
        {
            Ok(Object::Relation(id(s)?, id(t)?))
        }
        [.., (rel, _)] if RELATION_CLASSES.contains(rel) => Err(format!(
            "measObjLdn `{ldn}`: a relation must follow its cell (one of {CELL_CLASSES:?})"
        )),
        [.., (cell, c)] if CELL_CLASSES.contains(cell) => Ok(Object::Cell(id(c)?)),
        _ => Ok(Object::Other),
    }
}

/// Counters gathered for one object, with where it first appeared.
struct Gathered<const N: usize> {
    values: [Option<u64>; N],
    at: u64,
}

impl<const N: usize> Gathered<N> {
    fn new(at: u64) -> Self {
        Gathered {
            values: [None; N],
            at,
        }
    }
}

struct CellAcc {
    managed_element: String,
    counters: Gathered<{ CELL_COUNTERS.len() }>,
    relations: Vec<(String, Gathered<{ RELATION_COUNTERS.len() }>)>,
    relation_index: HashMap<String, usize>,
}

/// The `measInfo` being read.
#[derive(Default)]
struct Info {
    /// p → index into CELL_COUNTERS and RELATION_COUNTERS (none: a type not known here).
    types: HashMap<String, (String, Option<usize>, Option<usize>)>,
    gran_period: bool,
    objects: HashSet<String>,
}

/// The `measValue` being read.
struct Value {
    ldn: String,
    object: Object,
    ps: HashSet<String>,
}

fn attr(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, String> {
    for a in e.attributes() {
        let a = a.map_err(|x| format!("bad attribute: {x}"))?;
        if a.key.local_name().as_ref() == name {
            return a
                .unescape_value()
                .map(|v| Some(v.into_owned()))
                .map_err(|x| format!("bad attribute value: {x}"));
        }
    }
    Ok(None)
}

fn required(e: &BytesStart<'_>, el: &str, name: &str) -> Result<String, Fault> {
    attr(e, name.as_bytes())
        .map_err(Fault::Structure)?
        .ok_or_else(|| Fault::Structure(format!("<{el}> has no {name} attribute")))
}

struct Parser {
    stack: Vec<El>,
    seen_root: bool,
    header: bool,
    footer: bool,
    sender: Option<String>,
    begin_ms: Option<u64>,
    end_ms: Option<u64>,
    /// The first granPeriod: (duration, end, where).
    period: Option<(u64, u64, u64)>,
    managed_element: Option<String>,
    info: Option<Info>,
    value: Option<Value>,
    text: String,
    /// The `p` of the `r` being read, or the `measType`'s.
    p: Option<String>,
    cells: HashMap<String, CellAcc>,
    ignored_objects: u64,
}

impl Parser {
    fn start(&mut self, e: &BytesStart<'_>, at: u64) -> Result<El, Fault> {
        let name = e.local_name();
        let parent = self.stack.last().copied();
        let Some(el) = El::child(parent, name.as_ref()) else {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            return Err(Fault::Structure(match parent {
                None => format!("the root element is <{name}>, not <measCollecFile>"),
                Some(p) => format!("unexpected <{name}> in {p:?}"),
            }));
        };
        match el {
            El::File => {
                if self.seen_root {
                    return Err(Fault::Structure("a second root element".into()));
                }
                self.seen_root = true;
                if let Some(ns) = attr(e, b"xmlns").map_err(Fault::Structure)?
                    && ns != NAMESPACE
                {
                    return Err(Fault::Structure(format!(
                        "namespace `{ns}` is not TS 32.435's `{NAMESPACE}`"
                    )));
                }
            }
            El::Header => {
                if self.header {
                    return Err(Fault::Structure("a second <fileHeader>".into()));
                }
                self.header = true;
                let version = required(e, "fileHeader", "fileFormatVersion")?;
                if !version.starts_with("32.435") {
                    return Err(Fault::Structure(format!(
                        "fileFormatVersion `{version}` is not TS 32.435"
                    )));
                }
            }
            El::Sender => self.sender = attr(e, b"localDn").map_err(Fault::Structure)?,
            El::BeginCollec => {
                let t = required(e, "measCollec", "beginTime")?;
                self.begin_ms =
                    Some(parse_date_time(&t).map_err(|x| Fault::Time(format!("beginTime: {x}")))?);
            }
            El::Data => {
                if self.footer {
                    return Err(Fault::Structure("<measData> after <fileFooter>".into()));
                }
                self.managed_element = None;
            }
            El::ManagedElement => {
                if self.managed_element.is_some() {
                    return Err(Fault::Structure(
                        "a second <managedElement> in one <measData>".into(),
                    ));
                }
                self.managed_element = Some(
                    attr(e, b"localDn")
                        .map_err(Fault::Structure)?
                        .unwrap_or_default(),
                );
            }
            El::Info => {
                if self.managed_element.is_none() {
                    return Err(Fault::Structure(
                        "<measInfo> before its <managedElement>".into(),
                    ));
                }
                self.info = Some(Info::default());
            }
            El::GranPeriod => {
                let duration = required(e, "granPeriod", "duration")?;
                let duration = parse_duration(&duration)
                    .map_err(|x| Fault::Time(format!("granPeriod duration: {x}")))?;
                let end = required(e, "granPeriod", "endTime")?;
                let end = parse_date_time(&end)
                    .map_err(|x| Fault::Time(format!("granPeriod endTime: {x}")))?;
                match self.period {
                    None => self.period = Some((duration, end, at)),
                    Some((d, t, _)) if (d, t) != (duration, end) => {
                        return Err(Fault::PeriodMismatch(format!(
                            "this granPeriod ({duration} ms ending at {end}) differs from the file's first ({d} ms ending at {t})"
                        )));
                    }
                    Some(_) => {}
                }
                if let Some(info) = &mut self.info {
                    info.gran_period = true;
                }
            }
            El::RepPeriod => {
                if let Some(d) = attr(e, b"duration").map_err(Fault::Structure)? {
                    parse_duration(&d)
                        .map_err(|x| Fault::Time(format!("repPeriod duration: {x}")))?;
                }
            }
            El::MeasType | El::R => {
                let what = if el == El::R { "r" } else { "measType" };
                self.p = Some(required(e, what, "p")?);
                self.text.clear();
            }
            El::Value => {
                let info = self
                    .info
                    .as_mut()
                    .ok_or_else(|| Fault::Structure("<measValue> outside <measInfo>".into()))?;
                if !info.gran_period {
                    return Err(Fault::Structure(
                        "<measValue> before its <granPeriod>".into(),
                    ));
                }
                let ldn = required(e, "measValue", "measObjLdn")?;
                if !info.objects.insert(ldn.clone()) {
                    return Err(Fault::DuplicateObject { object: ldn });
                }
                let object = object(&ldn).map_err(Fault::Structure)?;
                self.value = Some(Value {
                    ldn,
                    object,
                    ps: HashSet::new(),
                });
            }
            El::Suspect => self.text.clear(),
            El::Footer => self.footer = true,
            El::EndCollec => {
                let t = required(e, "measCollec", "endTime")?;
                self.end_ms =
                    Some(parse_date_time(&t).map_err(|x| Fault::Time(format!("endTime: {x}")))?);
            }
            El::Job => {}
        }
        Ok(el)
    }

    fn end(&mut self, el: El, at: u64) -> Result<(), Fault> {
        match el {
            El::MeasType => {
                let p = self.p.take().unwrap_or_default();
                let name = self.text.trim().to_string();
                if name.is_empty() {
                    return Err(Fault::Structure(format!("measType p=\"{p}\" has no name")));
                }
                let info = self
                    .info
                    .as_mut()
                    .ok_or_else(|| Fault::Structure("<measType> outside <measInfo>".into()))?;
                let cell = CELL_COUNTERS.iter().position(|n| *n == name);
                let relation = RELATION_COUNTERS.iter().position(|n| *n == name);
                if info
                    .types
                    .insert(p.clone(), (name, cell, relation))
                    .is_some()
                {
                    return Err(Fault::Structure(format!(
                        "measType p=\"{p}\" is declared twice"
                    )));
                }
            }
            El::R => self.value_of_r(at)?,
            El::Value => {
                let other = self.value.take().is_some_and(|v| v.object == Object::Other);
                self.ignored_objects += u64::from(other);
            }
            El::Info => self.info = None,
            El::Data if self.managed_element.is_none() => {
                return Err(Fault::Structure(
                    "<measData> without <managedElement>".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn value_of_r(&mut self, at: u64) -> Result<(), Fault> {
        let p = self.p.take().unwrap_or_default();
        let (Some(info), Some(v)) = (&self.info, &mut self.value) else {
            return Err(Fault::Structure("<r> outside <measValue>".into()));
        };
        let Some((name, cell_k, rel_k)) = info.types.get(&p) else {
            return Err(Fault::Structure(format!("r p=\"{p}\" has no measType")));
        };
        if !v.ps.insert(p.clone()) {
            return Err(Fault::DuplicateValue {
                object: v.ldn.clone(),
                counter: name.clone(),
            });
        }
        let k = match &v.object {
            Object::Cell(_) => *cell_k,
            Object::Relation(..) => *rel_k,
            Object::Other => None,
        };
        let Some(k) = k else { return Ok(()) };
        let raw = self.text.trim();
        let n: u64 = raw
            .parse()
            .ok()
            .filter(|_| !raw.starts_with('+'))
            .ok_or_else(|| Fault::NotANumber {
                object: v.ldn.clone(),
                counter: name.clone(),
                value: raw.to_string(),
            })?;
        let me = self.managed_element.clone().unwrap_or_default();
        let (cell, target) = match &v.object {
            Object::Cell(c) => (c, None),
            Object::Relation(s, t) => (s, Some(t)),
            Object::Other => return Ok(()),
        };
        let acc = self.cells.entry(cell.clone()).or_insert_with(|| CellAcc {
            managed_element: me.clone(),
            counters: Gathered::new(at),
            relations: Vec::new(),
            relation_index: HashMap::new(),
        });
        if acc.managed_element != me {
            return Err(Fault::Structure(format!(
                "cell {cell} appears under `{}` and under `{me}`",
                acc.managed_element
            )));
        }
        let slot = match target {
            None => &mut acc.counters.values[k],
            Some(t) => {
                let i = match acc.relation_index.get(t) {
                    Some(i) => *i,
                    None => {
                        if acc.relations.len() >= MAX_RELATIONS {
                            return Err(Fault::Limit(format!(
                                "cell {cell} has more than {MAX_RELATIONS} relations"
                            )));
                        }
                        acc.relations.push((t.clone(), Gathered::new(at)));
                        acc.relation_index
                            .insert(t.clone(), acc.relations.len() - 1);
                        acc.relations.len() - 1
                    }
                };
                &mut acc.relations[i].1.values[k]
            }
        };
        if slot.replace(n).is_some() {
            return Err(Fault::DuplicateValue {
                object: v.ldn.clone(),
                counter: name.clone(),
            });
        }
        Ok(())
    }
}

fn line_of(bytes: &[u8], at: u64) -> u64 {
    let at = (at as usize).min(bytes.len());
    1 + bytes[..at].iter().filter(|b| **b == b'\n').count() as u64
}

/// Reads the measurement file `file` (its name, for errors) from `bytes`.
pub fn parse(file: &str, bytes: &[u8]) -> Result<PmFile, ParseError> {
    let fail = |at: Option<u64>, fault: Fault| ParseError {
        file: file.to_string(),
        line: at.map(|a| line_of(bytes, a)),
        fault,
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(
            None,
            Fault::TooLarge {
                bytes: bytes.len() as u64,
            },
        ));
    }
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(false);
    let mut p = Parser {
        stack: Vec::new(),
        seen_root: false,
        header: false,
        footer: false,
        sender: None,
        begin_ms: None,
        end_ms: None,
        period: None,
        managed_element: None,
        info: None,
        value: None,
        text: String::new(),
        p: None,
        cells: HashMap::new(),
        ignored_objects: 0,
    };
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| fail(Some(reader.error_position()), Fault::Xml(e.to_string())))?;
        let step = match event {
            Event::Start(e) => p.start(&e, at).map(|el| p.stack.push(el)),
            Event::Empty(e) => p.start(&e, at).and_then(|el| p.end(el, at)),
            Event::End(_) => match p.stack.pop() {
                Some(el) => p.end(el, at),
                None => Err(Fault::Structure("an end tag without its start".into())),
            },
            Event::Text(t) => {
                let t = t.decode().map_err(|e| Fault::Xml(e.to_string()));
                match (t, p.stack.last()) {
                    (Err(e), _) => Err(e),
                    (Ok(t), Some(el)) if el.has_text() => {
                        p.text.push_str(&t);
                        Ok(())
                    }
                    (Ok(t), _) if t.trim().is_empty() => Ok(()),
                    (Ok(t), el) => Err(Fault::Structure(format!(
                        "text `{}` where none belongs ({el:?})",
                        t.trim().chars().take(40).collect::<String>()
                    ))),
                }
            }
            Event::CData(_) | Event::GeneralRef(_) => Err(Fault::Structure(
                "CDATA and entity references are not used in measurement files".into(),
            )),
            Event::DocType(_) => Err(Fault::Structure("a DOCTYPE is not allowed".into())),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => Ok(()),
            Event::Eof => break,
        };
        step.map_err(|f| fail(Some(at), f))?;
        if p.text.len() > 256 {
            return Err(fail(
                Some(at),
                Fault::Limit("an element's text is over 256 bytes".into()),
            ));
        }
    }
    let end_at = Some(bytes.len() as u64);
    if let Some(el) = p.stack.last() {
        return Err(fail(
            end_at,
            Fault::Structure(format!("the file ends inside {el:?}: it is cut short")),
        ));
    }
    if !p.seen_root {
        return Err(fail(
            end_at,
            Fault::Structure("no <measCollecFile> element".into()),
        ));
    }
    let begin = p.begin_ms.ok_or_else(|| {
        fail(
            end_at,
            Fault::Structure("no <fileHeader><measCollec beginTime>".into()),
        )
    })?;
    let end = p.end_ms.ok_or_else(|| {
        fail(
            end_at,
            Fault::Structure(
                "no <fileFooter><measCollec endTime>: the file may be cut short".into(),
            ),
        )
    })?;
    let period_ms = end
        .checked_sub(begin)
        .and_then(|d| u32::try_from(d).ok())
        .filter(|d| *d > 0)
        .ok_or_else(|| {
            fail(
                end_at,
                Fault::PeriodMismatch(format!(
                    "the file's period from {begin} to {end} ms is empty, reversed or too long"
                )),
            )
        })?;
    if let Some((d, t, at)) = p.period
        && (d, t) != (u64::from(period_ms), end)
    {
        return Err(fail(
            Some(at),
            Fault::PeriodMismatch(format!(
                "granPeriod of {d} ms ending at {t} does not match the file's {period_ms} ms from beginTime to endTime {end}"
            )),
        ));
    }
    let mut reports = Vec::with_capacity(p.cells.len());
    let mut cells: Vec<(String, CellAcc)> = p.cells.into_iter().collect();
    cells.sort_by(|a, b| a.0.cmp(&b.0));
    for (cell, acc) in cells {
        let missing = |at: u64, object: String, counter: &str| {
            fail(
                Some(at),
                Fault::MissingCounter {
                    object,
                    counter: counter.to_string(),
                },
            )
        };
        let mut values = [0u64; CELL_COUNTERS.len()];
        for (k, v) in acc.counters.values.iter().enumerate() {
            // The coverage counters came later: a file of an older writer lacks them, and
            // they read as 0 (no samples), as in a `REPORT` frame.
            values[k] = match v {
                Some(v) => *v,
                None if k >= BASE_CELL_COUNTERS => 0,
                None => {
                    return Err(missing(
                        acc.counters.at,
                        format!("cell {cell}"),
                        CELL_COUNTERS[k],
                    ));
                }
            };
        }
        let mut relations = Vec::with_capacity(acc.relations.len());
        for (target, g) in acc.relations {
            let mut v = [0u64; RELATION_COUNTERS.len()];
            for (k, x) in g.values.iter().enumerate() {
                v[k] = x.ok_or_else(|| {
                    missing(
                        g.at,
                        format!("relation {cell} -> {target}"),
                        RELATION_COUNTERS[k],
                    )
                })?;
            }
            relations.push(RelationCounters { target, values: v });
        }
        reports.push(CellReport {
            cell,
            report: Report {
                period_end_ms: end,
                period_ms,
                cell: values,
                relations,
            },
        });
    }
    Ok(PmFile {
        sender: p.sender,
        begin_ms: begin,
        end_ms: end,
        period_ms,
        reports,
        ignored_objects: p.ignored_objects,
    })
}
