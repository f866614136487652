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

/// Splits an import into log-entry-sized commands, sites and policy first.
fn chunks(import: ImageImport) -> Vec<ImageImport> {
    let mut out = vec![ImageImport {
        sites: import.sites,
        policy: import.policy,
        ..Default::default()
    }];
    for c in import.cells.chunks(CELLS_PER_ENTRY) {
        out.push(ImageImport {
            cells: c.to_vec(),
            ..Default::default()
        });
    }
    for r in import.relations.chunks(RELATIONS_PER_ENTRY) {
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
pub async fn import(
    State(node): State<Arc<Node>>,
    Params(q): Params<v1::ImportQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, node.config().max_import_bytes).await?;
    let mut import: ImageImport = parse_json(&bytes)?;
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
    let origin_node = headers
        .get(forward::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(node.id());
    let parts = chunks(import);
    let count = parts.len();
    let import_id = rand::random::<u64>();
    for (n, data) in parts.into_iter().enumerate() {
        let part = ImportPart {
            import_id,
            part: n as u32,
            last: n + 1 == count,
            origin: Origin {
                node: origin_node,
                function: Function::Operator,
            },
            reason: q.reason.clone().unwrap_or_else(|| "import".into()),
            data,
        };
        match node.propose(&Command::ImportPart(part)).await {
            Ok((_, Applied::Import(ImportOutcome::Staged { .. }))) => {}
            Ok((_, Applied::Import(ImportOutcome::Applied { index, diff }))) => {
                tracing::info!(index, parts = count, summary = %diff.summary(), "imported");
                return Ok(Json(v1::Imported {
                    imported: imported(&diff.counts()),
                    index,
                    changed: Some(changes(&diff, false)),
                })
                .into_response());
            }
            Ok((_, Applied::Import(ImportOutcome::Refused { reason }))) => {
                return Err(ApiError::unprocessable(format!(
                    "nothing imported: {reason}"
                )));
            }
            Ok((_, other)) => {
                return Err(ApiError::internal(format!("unexpected answer {other:?}")));
            }
            Err(ProposeError::NotLeader(_)) if n == 0 => {
                return Ok(
                    forward::to_leader(&node, Method::POST, &uri, &headers, Some(bytes)).await,
                );
            }
            Err(e) => {
                let e = ApiError::from(e);
                return Err(ApiError {
                    detail: format!(
                        "nothing imported (stopped at part {} of {count}; the parts sent are dropped by the next import): {}",
                        n + 1,
                        e.detail
                    ),
                    ..e
                });
            }
        }
    }
    Err(ApiError::internal("the import had no last part"))
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
