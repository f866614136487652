//! The load generator's view of etcd, through etcd's own gRPC API: a read is a (linearizable)
//! `Get` returning the key's `mod_revision`; a conditional write is a `Txn` comparing that
//! `mod_revision`, then `Put` — the same optimistic transaction as a sonraft change set. Like
//! the sonraft target, it talks to the leader directly.

use anyhow::{Context, bail};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::load::{Target, Written};
use super::sonraft_target::cell_id;

pub struct EtcdTarget {
    client: Client,
    endpoint: String,
}

fn key(i: usize) -> String {
    format!("cell/{}", cell_id(i))
}

/// A value of the size of a cell's configuration.
fn value(i: usize, hysteresis: i64) -> String {
    format!(
        r#"{{"id":"{}","site":"BENCH","rat":"LTE","pci":{},"arfcn":1300,"azimuth":0,"electrical_tilt":40,"max_tx_power_dbm":46,"hysteresis":{hysteresis},"time_to_trigger_ms":320,"a3_offset":6,"admin_state":"unlocked","energy_saving":"normal"}}"#,
        cell_id(i),
        i % 504
    )
}

impl EtcdTarget {
    /// Finds the leader among `endpoints` and connects to it.
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<Self> {
        for ep in endpoints {
            let Ok(mut c) = Client::connect([ep.as_str()], None).await else {
                continue;
            };
            let Ok(status) = c.status().await else {
                continue;
            };
            let me = status.header().map(|h| h.member_id());
            if me == Some(status.leader()) {
                return Ok(EtcdTarget {
                    client: c,
                    endpoint: ep.clone(),
                });
            }
        }
        bail!("no etcd endpoint of {endpoints:?} is the leader")
    }
}

impl Target for EtcdTarget {
    /// etcd's client multiplexes every client over one gRPC channel; each holds a handle.
    type Client = Client;

    fn name(&self) -> String {
        "etcd".into()
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    async fn preload(&self, cells: usize) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        for w in 0..64 {
            let mut c = self.client.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..cells).step_by(64) {
                    c.put(key(i), value(i, 4), None).await?;
                }
                Ok::<_, etcd_client::Error>(())
            }));
        }
        for t in tasks {
            t.await
                .context("preload task")?
                .with_context(|| format!("preload into {}", self.endpoint))?;
        }
        Ok(())
    }

    async fn read_version(&self, c: &mut Client, i: usize) -> anyhow::Result<u64> {
        let r = c.get(key(i), None).await?;
        let rev = r
            .kvs()
            .first()
            .map(|kv| kv.mod_revision())
            .context("key not found")?;
        Ok(rev as u64)
    }

    async fn write(
        &self,
        c: &mut Client,
        i: usize,
        read: Option<u64>,
        hysteresis: i64,
    ) -> anyhow::Result<Written> {
        match read {
            Some(rev) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key(i), CompareOp::Equal, rev as i64)])
                    .and_then([TxnOp::put(key(i), value(i, hysteresis), None)]);
                let r = c.txn(txn).await?;
                Ok(if r.succeeded() {
                    Written::Applied
                } else {
                    Written::Conflict
                })
            }
            None => {
                c.put(key(i), value(i, hysteresis), None).await?;
                Ok(Written::Applied)
            }
        }
    }
}
