//! Reads of the image (`/image/sites`, `/image/cells`, `/image/cells/{id}`,
//! `/image/relations`, `/image/kpis`) with a chosen consistency, and `POST /image/import`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use sonraft_client::v1;
use sonraft_raft::changeset::{Function, Origin};
use sonraft_raft::command::{Command, ImageImport, ImportCounts, Response as Applied};
use sonraft_raft::model::import::{ImportDiff, ImportOutcome, ImportPart, KindCounts};

use super::error::{ApiError, Params, parse_json, read_body};
use super::forward;
use crate::Node;
use crate::propose::ProposeError;
use crate::reads::ReadAt;

/// Makes this node fit to answer a read of the given consistency, or forwards the read to the
/// leader (`Some(response)`).
pub async fn prepare_read(
    node: &Node,
    c: v1::Consistency,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<Response>, ApiError> {
    match node.ready_to_read(c).await? {
        ReadAt::Here => Ok(None),
        ReadAt::Leader => Ok(Some(
            forward::to_leader(node, Method::GET, uri, headers, None).await,
        )),
    }
}

/// `GET /image/digest`: this node's last-applied entry and a digest of its whole applied state,
/// always local (it is how replicas are compared: equal entries must give equal digests).
pub async fn digest(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let store = node.store().clone();
    let d = tokio::task::spawn_blocking(move || store.digest())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(v1::Digest {
        applied_index: d.applied.map_or(0, |l| l.index),
        applied_term: d.applied.map_or(0, |l| l.leader_id.term),
        digest: format!("{:016x}", d.digest),
        cells: d.cells as u64,
        relations: d.relations as u64,
        history_records: d.history_records as u64,
    })
    .into_response())
}

/// `GET /image/sites`.
pub async fn sites(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ReadQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = q.consistency.unwrap_or_default();
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let sites: Vec<v1::Site> = node
        .store()
        .with_image(|image| image.sites.values().cloned().collect());
    Ok(Json(sites).into_response())
}

/// `GET /image/cells[?site=S][&limit=N]`.
pub async fn cells(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::CellsQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = q.limit.map_or(usize::MAX, count);
    let consistency = q.consistency.unwrap_or_default();
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let site = q.site;
    // Serialized in place: a large image's cells are not copied first.
    let body = node.store().with_image(|image| {
        let cells: Vec<&v1::Cell> = image
            .cells
            .values()
            .filter(|c| site.as_ref().is_none_or(|s| &c.site == s))
            .take(limit)
            .collect();
        serde_json::to_vec(&cells)
    });
    json_bytes(body)
}

/// `GET /image/kpis[?site=S][&limit=N]`: the replicated KPI summaries, each cell's latest
/// period, by cell (only the cells of cell site `S`).
pub async fn kpis(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::CellsQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = q.limit.map_or(usize::MAX, count);
    let consistency = q.consistency.unwrap_or_default();
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let site = q.site;
    let body = node.store().with_image(|image| {
        let kpis: Vec<&v1::KpiSummary> = image
            .kpis
            .values()
            .filter(|k| {
                site.as_ref()
                    .is_none_or(|s| image.cells.get(&k.cell).is_some_and(|c| &c.site == s))
            })
            .take(limit)
            .collect();
        serde_json::to_vec(&kpis)
    });
    json_bytes(body)
}

/// `GET /image/cells/{id}`.
pub async fn cell(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Params(q): Params<v1::ReadQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = q.consistency.unwrap_or_default();
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    match node.store().cell(&id) {
        Some(c) => Ok(Json::<v1::Cell>(c).into_response()),
        None => Err(ApiError::not_found(format!("no cell {id:?} in the image"))),
    }
}

/// `GET /image/relations[?source=CELL][&limit=N]`.
pub async fn relations(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::RelationsQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let limit = q.limit.map_or(usize::MAX, count);
    let consistency = q.consistency.unwrap_or_default();
    if let Some(r) = prepare_read(&node, consistency, &uri, &headers).await? {
        return Ok(r);
    }
    let body = node.store().with_image(|image| {
        let rels: Vec<&v1::Relation> = match &q.source {
            Some(s) => image.relations_from(s).take(limit).collect(),
            None => image.relations.values().take(limit).collect(),
        };
        serde_json::to_vec(&rels)
    });
    json_bytes(body)
}

/// A JSON body serialized in place (under the image's lock, without copying the entities).
fn json_bytes(body: serde_json::Result<Vec<u8>>) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Cells per import command: keeps each log entry around a megabyte.
const CELLS_PER_ENTRY: usize = 4000;
const RELATIONS_PER_ENTRY: usize = 16000;

/// Cells and relations per part of an import in parts: each part's log entry and staged value
/// stay under sled's inline limit (a value over `segment_size / 4`, ~128 KiB, is a file of
/// its own: a megabyte part was two files, fsynced one by one, and the last part's removal of
/// the staged ones unlinked hundreds of files inside one sled flush, which every Raft log sync
/// of the node waited for: 300-550 ms, right after every national import).
const CELLS_PER_PART: usize = 600;
const RELATIONS_PER_PART: usize = 2000;

/// Splits an import into log-entry-sized commands, policy and sites first.
fn chunks(import: ImageImport) -> Vec<ImageImport> {
    let mut sites = import.sites.chunks(CELLS_PER_PART);
    let mut out = vec![ImageImport {
        sites: sites.next().map(<[_]>::to_vec).unwrap_or_default(),
        policy: import.policy,
        ..Default::default()
    }];
    for s in sites {
        out.push(ImageImport {
            sites: s.to_vec(),
            ..Default::default()
        });
    }
    for c in import.cells.chunks(CELLS_PER_PART) {
        out.push(ImageImport {
            cells: c.to_vec(),
            ..Default::default()
        });
    }
    for r in import.relations.chunks(RELATIONS_PER_PART) {
        out.push(ImageImport {
            relations: r.to_vec(),
            ..Default::default()
        });
    }
    out
}

/// A count from a query (`limit`), as far as this machine can count.
pub fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn counts(k: &KindCounts) -> v1::KindCounts {
    v1::KindCounts {
        created: k.created,
        updated: k.updated,
        unchanged: k.unchanged,
    }
}

/// The answer's view of what an import changes (with the listed changes for a dry run).
fn changes(diff: &ImportDiff, with_changes: bool) -> v1::ImportChanges {
    let listed = with_changes.then(|| {
        diff.changes
            .iter()
            .map(|c| v1::ParamChange {
                entity: c.entity.to_string(),
                param: c.param.name().to_string(),
                from: super::json::param_value(&c.from),
                to: super::json::param_value(&c.to),
            })
            .collect::<Vec<_>>()
    });
    v1::ImportChanges {
        sites: counts(&diff.sites),
        cells: counts(&diff.cells),
        relations: counts(&diff.relations),
        policy_changed: diff.policy_changed,
        changed_params: diff.changed_params,
        changes_listed: listed.as_ref().map(|l| l.len() as u64),
        changes: listed,
    }
}

fn imported(c: &ImportCounts) -> v1::ImportCounts {
    v1::ImportCounts {
        sites: c.sites,
        cells: c.cells,
        relations: c.relations,
    }
}

/// `POST /image/import[?dry_run=true][&reason=...]`: bulk upsert of sites, cells and relations,
/// checked whole and applied in one step or not at all, and recorded in the history with what it
/// changed. `dry_run` answers what it would change in the leader's image, applying nothing.
///
/// The body is one JSON [`ImageImport`] (at most `max_import_bytes`), or JSON lines
/// ([`v1::IMPORT_LINES`], one [`v1::ImportLine`] each) of any size: the leader stages each part
/// as soon as its lines are in, holding one part at a time. A follower, and a dry run, read the
/// lines whole (at most `max_import_bytes`): the follower forwards them to the leader.
pub async fn import(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ImportQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let lines = is_lines(&headers);
    if lines && !q.dry_run && node.is_leader() {
        return import_lines(&node, &q, &headers, body).await;
    }
    let bytes = read_body(&headers, body, node.config().max_import_bytes).await?;
    let mut import: ImageImport = if lines {
        parse_lines(&bytes)?
    } else {
        parse_json(&bytes)?
    };
    import.strip_stamps();
    if !node.is_leader() {
        return Ok(forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await);
    }
    if q.dry_run {
        if let Some(r) = prepare_read(&node, v1::Consistency::Linearizable, &uri, &headers).await? {
            return Ok(r);
        }
        let answer = node
            .store
            .with_image(|image| match image.check_import(&import) {
                Ok(()) => v1::ImportDryRun {
                    dry_run: true,
                    valid: true,
                    would_change: Some(changes(&image.import_diff(&import), true)),
                    reason: None,
                },
                Err(reason) => v1::ImportDryRun {
                    dry_run: true,
                    valid: false,
                    would_change: None,
                    reason: Some(reason),
                },
            });
        return Ok(Json(answer).into_response());
    }
    let effective = node.effective_format(Duration::from_secs(5)).await;
    if effective < ImportPart::FORMAT {
        return import_v1(&node, import, &uri, &headers, bytes).await;
    }
    let mut staging = Staging::new(&node, &q, &headers);
    let parts = chunks(import);
    let count = parts.len();
    for (n, data) in parts.into_iter().enumerate() {
        match staging.stage(data, n + 1 == count).await {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            Err(ProposeError::NotLeader(_)) if n == 0 => {
                return Ok(
                    forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await,
                );
            }
            Err(e) => return Err(staging.stopped(e, Some(count))),
        }
    }
    Err(ApiError::internal("the import had no last part"))
}

/// Whether the body is JSON lines ([`v1::IMPORT_LINES`]).
fn is_lines(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(v1::IMPORT_LINES))
}

/// Longest line of a streamed import: a cell with its every field is well under 2 KiB.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Splits a body arriving in chunks into lines, each at most [`MAX_LINE_BYTES`].
#[derive(Default)]
struct LineSplitter {
    buf: Vec<u8>,
    /// Lines handed out so far (for errors: "line N").
    line: u64,
}

impl LineSplitter {
    /// Adds `chunk`; calls `f` with each line it completes (numbered from 1, without its end).
    fn push(
        &mut self,
        chunk: &[u8],
        mut f: impl FnMut(u64, &[u8]) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let mut rest = chunk;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            let line = if self.buf.is_empty() {
                &rest[..at]
            } else {
                self.buf.extend_from_slice(&rest[..at]);
                &self.buf[..]
            };
            if line.len() > MAX_LINE_BYTES {
                return Err(self.too_long());
            }
            self.line += 1;
            f(self.line, line)?;
            self.buf.clear();
            rest = &rest[at + 1..];
        }
        self.buf.extend_from_slice(rest);
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(self.too_long());
        }
        Ok(())
    }

    /// The body ended: the last line, if it had no end of line.
    fn finish(
        &mut self,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.line += 1;
        let line = std::mem::take(&mut self.buf);
        f(self.line, &line)
    }

    fn too_long(&self) -> ApiError {
        ApiError::bad_request(
            "malformed_line",
            format!(
                "line {} is longer than {MAX_LINE_BYTES} bytes; nothing imported",
                self.line + 1
            ),
        )
    }
}

/// Adds line `n` (blank lines are skipped) to `import`.
fn add_line(import: &mut ImageImport, n: u64, line: &[u8]) -> Result<(), ApiError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let parsed: v1::ImportLine = serde_json::from_slice(line).map_err(|e| {
        ApiError::bad_request(
            "malformed_line",
            format!(
                "line {n} is not an import line ({{\"site\"|\"cell\"|\"relation\"|\"policy\": {{...}}}}): {e}; nothing imported"
            ),
        )
    })?;
    parsed.add_to(import);
    Ok(())
}

/// A whole body of JSON lines as one import.
fn parse_lines(bytes: &[u8]) -> Result<ImageImport, ApiError> {
    let mut import = ImageImport::default();
    let mut split = LineSplitter::default();
    split.push(bytes, |n, l| add_line(&mut import, n, l))?;
    split.finish(|n, l| add_line(&mut import, n, l))?;
    Ok(import)
}

/// Whether `part` holds as much as one log entry should.
fn part_full(part: &ImageImport) -> bool {
    part.cells.len() >= CELLS_PER_PART
        || part.relations.len() >= RELATIONS_PER_PART
        || part.sites.len() >= CELLS_PER_PART
}

/// A streamed import on the leader: each part is staged once its lines are in.
async fn import_lines(
    node: &Arc<Node>,
    q: &v1::ImportQuery,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<Response, ApiError> {
    use http_body_util::BodyExt;
    let effective = node.effective_format(Duration::from_secs(5)).await;
    if effective < ImportPart::FORMAT {
        return Err(ApiError::conflict(
            "cluster_version",
            "a streamed import is applied in parts, which needs every voter on command format 3; finish upgrading the cluster first",
        ));
    }
    let mut staging = Staging::new(node, q, headers);
    let mut split = LineSplitter::default();
    let mut part = ImageImport::default();
    let mut full = Vec::new();
    loop {
        let chunk = match body.frame().await {
            None => None,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Some(data),
                Err(_) => continue, // trailers
            },
            Some(Err(e)) => {
                return Err(ApiError::bad_request(
                    "body_broken",
                    format!(
                        "the body broke off after line {}: {e}; nothing imported (the parts staged are dropped by the next import)",
                        split.line
                    ),
                ));
            }
        };
        let add = |n: u64, l: &[u8]| {
            add_line(&mut part, n, l)?;
            if part_full(&part) {
                full.push(std::mem::take(&mut part));
            }
            Ok(())
        };
        let end = match &chunk {
            Some(data) => {
                split.push(data, add)?;
                false
            }
            None => {
                split.finish(add)?;
                true
            }
        };
        for data in full.drain(..) {
            if let Err(e) = staging.stage(data, false).await {
                return Err(staging.stopped(e, None));
            }
        }
        if end {
            break;
        }
    }
    match staging.stage(std::mem::take(&mut part), true).await {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(ApiError::internal("the import's last part was only staged")),
        Err(e) => Err(staging.stopped(e, None)),
    }
}

/// The parts of one import as they are proposed.
struct Staging<'a> {
    node: &'a Node,
    import_id: u64,
    origin: Origin,
    reason: String,
    /// Parts proposed so far.
    sent: u32,
}

impl<'a> Staging<'a> {
    fn new(node: &'a Node, q: &v1::ImportQuery, headers: &HeaderMap) -> Self {
        let origin_node = headers
            .get(forward::FORWARDED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(node.id());
        Staging {
            node,
            import_id: rand::random::<u64>(),
            origin: Origin {
                node: origin_node,
                function: Function::Operator,
            },
            reason: q.reason.clone().unwrap_or_else(|| "import".into()),
            sent: 0,
        }
    }

    /// Proposes the next part; with the last, the answer to the import.
    async fn stage(
        &mut self,
        mut data: ImageImport,
        last: bool,
    ) -> Result<Option<Response>, ProposeError> {
        data.strip_stamps();
        let part = ImportPart {
            import_id: self.import_id,
            part: self.sent,
            last,
            origin: self.origin.clone(),
            reason: self.reason.clone(),
            data,
        };
        let answer = self.node.propose(&Command::ImportPart(part)).await?;
        self.sent += 1;
        Ok(match answer {
            (_, Applied::Import(ImportOutcome::Staged { .. })) if !last => None,
            (_, Applied::Import(ImportOutcome::Applied { index, diff })) => {
                tracing::info!(index, parts = self.sent, summary = %diff.summary(), "imported");
                Some(
                    Json(v1::Imported {
                        imported: imported(&diff.counts()),
                        index,
                        changed: Some(changes(&diff, false)),
                    })
                    .into_response(),
                )
            }
            (_, Applied::Import(ImportOutcome::Refused { reason })) => {
                Some(ApiError::unprocessable(format!("nothing imported: {reason}")).into_response())
            }
            (_, other) => {
                Some(ApiError::internal(format!("unexpected answer {other:?}")).into_response())
            }
        })
    }

    /// The error of an import that stopped at its next part (of `count`, when known).
    fn stopped(&self, e: ProposeError, count: Option<usize>) -> ApiError {
        let e = ApiError::from(e);
        let of = count.map(|c| format!(" of {c}")).unwrap_or_default();
        ApiError {
            detail: format!(
                "nothing imported (stopped at part {}{of}; the parts sent are dropped by the next import): {}",
                self.sent + 1,
                e.detail
            ),
            ..e
        }
    }
}

/// An import while some voter runs a release before command format 3 (a rolling upgrade): one
/// entry of command format 1, which is atomic, or a refusal when it does not fit one.
async fn import_v1(
    node: &Node,
    import: ImageImport,
    uri: &Uri,
    headers: &HeaderMap,
    bytes: bytes::Bytes,
) -> Result<Response, ApiError> {
    if import.cells.len() > CELLS_PER_ENTRY || import.relations.len() > RELATIONS_PER_ENTRY {
        return Err(ApiError::conflict(
            "cluster_version",
            "an import this large is applied in parts, which needs every voter on command format 3; finish upgrading the cluster first",
        ));
    }
    match node.propose(&Command::Import(import)).await {
        Ok((index, Applied::Imported(Ok(c)))) => Ok(Json(v1::Imported {
            imported: imported(&c),
            index,
            changed: None,
        })
        .into_response()),
        Ok((_, Applied::Imported(Err(reason)))) => Err(ApiError::unprocessable(reason)),
        Ok((_, other)) => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
        Err(ProposeError::NotLeader(_)) => {
            Ok(forward::to_leader(node, Method::POST, uri, headers, Some(bytes)).await)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts of a national image, with ids as long as operators' (`ENB-123456-CELL-3`), stay
    /// under sled's inline limit as staged values: `segment_size / 4` less a header, 131,052
    /// bytes for sled's 512 KiB segments (larger values are files of their own, see
    /// [`RELATIONS_PER_PART`]).
    #[test]
    fn each_part_of_a_large_import_is_a_value_sled_keeps_inline() {
        let site = |n: usize| format!("SITE-{n:06}-NORTH");
        let cell = |n: usize| format!("ENB-{n:06}-CELL-{}", n % 3);
        fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
            serde_json::from_value(v).unwrap()
        }
        let import = ImageImport {
            sites: (0..1_300)
                .map(|n| from(serde_json::json!({"id": site(n), "name": site(n), "lat": 59.3, "lon": 18.1, "region": "north"})))
                .collect(),
            cells: (0..1_300)
                .map(|n| from(serde_json::json!({"id": cell(n), "site": site(n), "rat": "NR", "pci": n % 1000, "arfcn": 632628, "azimuth": 120})))
                .collect(),
            relations: (0..4_100)
                .map(|n| from(serde_json::json!({"source": cell(n), "target": cell(n + 7), "cio_db": -2})))
                .collect(),
            policy: None,
        };
        let parts = chunks(import);
        assert!(parts.len() >= 3 + 3 + 3, "{} parts", parts.len());
        for part in &parts {
            assert!(part.sites.len() <= CELLS_PER_PART && part.cells.len() <= CELLS_PER_PART);
            assert!(part.relations.len() <= RELATIONS_PER_PART);
            let staged = sonraft_raft::codec::encode(part).unwrap();
            assert!(staged.len() < 120_000, "a part of {} bytes", staged.len());
        }
    }

    fn lines_of(chunks: &[&[u8]]) -> Result<Vec<(u64, String)>, ApiError> {
        let mut out = Vec::new();
        let mut split = LineSplitter::default();
        for c in chunks {
            split.push(c, |n, l| {
                out.push((n, String::from_utf8_lossy(l).into_owned()));
                Ok(())
            })?;
        }
        split.finish(|n, l| {
            out.push((n, String::from_utf8_lossy(l).into_owned()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn lines_split_across_chunks_are_put_back_together() {
        let got = lines_of(&[b"ab", b"c\nd", b"", b"e\n\nf"]).unwrap();
        assert_eq!(
            got,
            [
                (1, "abc".to_string()),
                (2, "de".to_string()),
                (3, String::new()),
                (4, "f".to_string())
            ]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_refused_before_it_is_held_whole() {
        let big = vec![b'x'; MAX_LINE_BYTES / 2 + 1];
        let e = lines_of(&[&big, &big]).unwrap_err();
        assert!(e.detail.contains("line 1 is longer"), "{}", e.detail);
        // Also when the long line arrives whole, and after shorter ones.
        let mut whole = b"{}\n".to_vec();
        whole.extend(vec![b'x'; MAX_LINE_BYTES + 1]);
        whole.push(b'\n');
        let e = lines_of(&[&whole]).unwrap_err();
        assert!(e.detail.contains("line 2 is longer"), "{}", e.detail);
    }

    #[test]
    fn import_lines_are_sites_cells_relations_and_the_policy_in_any_order_and_a_bad_one_is_named() {
        let body = concat!(
            r#"{"relation":{"source":"C1","target":"C2"}}"#,
            "\r\n\n",
            r#"{"cell":{"id":"C1","site":"S1","rat":"NR","pci":1,"arfcn":632628,"azimuth":0}}"#,
            "\n",
            r#"{"site":{"id":"S1","name":"one","lat":52.0,"lon":13.0}}"#,
            "\n",
            r#"{"policy":{"cooldown_ms":5}}"#
        );
        let import = parse_lines(body.as_bytes()).unwrap();
        assert_eq!(
            (
                import.sites.len(),
                import.cells.len(),
                import.relations.len()
            ),
            (1, 1, 1)
        );
        assert_eq!(import.policy.map(|p| p.cooldown_ms), Some(5));

        let e = parse_lines(
            b"{\"site\":{\"id\":\"S1\",\"name\":\"s\",\"lat\":1,\"lon\":2}}\n{\"cel\":{}}\n",
        )
        .unwrap_err();
        assert!(
            e.detail.starts_with("line 2 is not an import line"),
            "{}",
            e.detail
        );
        assert!(parse_lines(b"{\"cell\":{\"id\":\"C1\"}").is_err());
    }
}
