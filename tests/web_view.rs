//! The live web view `/ui` in a real browser (issue 15): headless Chromium loads the page of a
//! three-node cluster running the demo network on the simulator, and the test reads the page
//! over the DevTools protocol. The page must show the network (every cell on the map, every
//! node in the health table, a live stream), and a change set proposed through the API must
//! appear in its feed within a second; KPI periods keep arriving; a pending proposal is rejected
//! and another approved with the page's buttons; a SON change verified before the page opened
//! is in its feed, and the verdict on the approved one arrives while it is open. A screenshot
//! is kept under the target directory.
//!
//! Chromium comes from Debian's `chromium` package (`.ci/run` installs it). Without it the
//! test says so and passes, unless `SONRAFT_REQUIRE_BROWSER` is set, as `.ci/run` sets it:
//! CI cannot skip it silently.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `SONRAFT_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SONRAFT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium, killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it took (and the browser's socket path) once it listens.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Browser {
            child,
            _profile: profile,
            port,
        }
    }
}

/// A DevTools protocol session with one page.
struct Page {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    async fn open(browser: &Browser) -> Page {
        let client = sonraft_client::ApiClient::new(None, Duration::from_secs(10));
        let list = client
            .get(&format!("127.0.0.1:{}", browser.port), "/json/list")
            .await
            .expect("DevTools target list");
        let targets: Vec<Value> = list.parse().expect("targets");
        let url = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tungstenite::connect(url).expect("DevTools websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
        }
        Page { ws, next_id: 1 }
    }

    /// Calls `method` and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("send to chromium");
        loop {
            let m = self.ws.read().expect("read from chromium");
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Polls `expression` every 10 ms until it is true; how long that took.
    fn wait_for(&mut self, expression: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(expression) == json!(true) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "not true within {within:?}: {expression}\npage text: {}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_the_demo_network_and_a_proposed_change_within_a_second() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("SONRAFT_REQUIRE_BROWSER").is_none(),
            "SONRAFT_REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)"
        );
        // Written to the process's stderr directly, past the test harness's capture, so that
        // the skip shows in a plain `cargo test`.
        let _ = writeln!(
            std::io::stderr(),
            "web_view: SKIPPED: chromium is not installed (apt-get install chromium to run this test)"
        );
        return;
    };

    // The demo network of the set-up script, on the simulator, one region per site.
    const CELLS: &str = "30";
    const REGIONS: &str = "site-1,site-2,site-3";
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = sonraft_testkit::local_cluster::SimProc::start(
        binary(),
        dir.path(),
        &[
            "--cells",
            CELLS,
            "--period-ms",
            "1000",
            "--regions",
            REGIONS,
        ],
    )
    .expect("simulator");
    let c = Cluster::start_with(3, &["--antennas", &sim.antennas.join(",")]).await;
    // Some functions open loop, so that proposals wait for the page's buttons.
    let open_loop = json!({"mode": "open_loop"});
    let policy = json!({"functions": {"anr_add": open_loop, "load_balancing": open_loop}});
    // Accepted once every voter advertised its release (a moment after the start).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .client
            .put(&c.nodes[0].api, "/son/policy", &policy)
            .await
            .expect("policy");
        if r.status.is_success() {
            break;
        }
        assert!(
            r.status == 409 && Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(binary())
        .args(["sim", "export", "--cells", CELLS, "--regions", REGIONS])
        .output()
        .expect("sim export");
    assert!(out.status.success());
    let image: Value = serde_json::from_slice(&out.stdout).expect("image JSON");
    let cells = image["cells"].as_array().map_or(0, Vec::len);
    c.import(&image).await;

    // A SON change's verification closes before the page opens: the page shows it from the
    // journal, not only the verdicts its stream sees close.
    let deadline = Instant::now() + Duration::from_secs(60);
    let closed_before = loop {
        let trials = c
            .client
            .get(&c.nodes[1].api, "/son/trials")
            .await
            .expect("trials")
            .json();
        let closed: Vec<u64> = trials["closed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["index"].as_u64())
            .collect();
        if !closed.is_empty() {
            break closed;
        }
        assert!(
            Instant::now() < deadline,
            "no SON change verified within 60 s: {trials}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // A follower's page, opened as a link with the token in its fragment.
    let browser = Browser::start(&chromium);
    let mut page = Page::open(&browser).await;
    let api = sonraft_client::base_url(&c.nodes[1].api);
    page.call(
        "Page.navigate",
        json!({"url": format!("{api}/ui#token={TOKEN}")}),
    );
    page.wait_for(
        &format!("document.querySelectorAll('#map path.cell').length === {cells}"),
        Duration::from_secs(30),
    );
    page.wait_for(
        "document.getElementById('live').textContent.startsWith('live')",
        Duration::from_secs(30),
    );
    page.wait_for(
        "document.querySelectorAll('#health tbody tr').length === 3",
        Duration::from_secs(30),
    );
    page.wait_for(
        &format!(
            "{}.every(i => document.querySelector(`#feed li[data-trial=\"${{i}}\"]`) !== null)",
            json!(closed_before)
        ),
        Duration::from_secs(10),
    );
    assert_eq!(
        page.eval("location.hash"),
        json!(""),
        "the token stays out of the address"
    );
    // The KPIs colour the map once the sites report.
    page.wait_for(
        "[...document.querySelectorAll('#map path.cell')].some(p => p.getAttribute('fill') !== '#cfd8dc')",
        Duration::from_secs(30),
    );

    // A change proposed through the API (at the leader, not the page's node).
    let cell = image["cells"][0]["id"]
        .as_str()
        .expect("a cell id")
        .to_string();
    let current = c.cell(&c.nodes[0], &cell, "linearizable").await;
    let version = current["version"].as_u64().expect("version");
    let tilt = current["electrical_tilt"].as_i64().expect("tilt");
    let reason = format!("web view test {}", std::process::id());
    let mut cs = tilt_change(&cell, version, tilt + 5);
    cs["reason"] = json!(reason);
    let proposed = Instant::now();
    let r = c
        .client
        .post(&c.nodes[0].api, "/image/changesets", &cs)
        .await
        .expect("propose");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let answered = proposed.elapsed();
    let shown = page.wait_for(
        &format!(
            "[...document.querySelectorAll('#feed li[data-kind=applied]')].some(li => li.textContent.includes({}))",
            json!(reason)
        ),
        Duration::from_secs(10),
    ) + answered;
    eprintln!(
        "feed latency: {} ms from proposing (the API answered after {} ms)",
        shown.as_millis(),
        answered.as_millis()
    );

    // The cell panel: its parameters with units, and its change in its history.
    page.eval(&format!(
        "document.querySelector('#map path.cell[data-cell=\"{cell}\"]').dispatchEvent(new MouseEvent('click'))"
    ));
    page.wait_for(
        &format!(
            "document.getElementById('cell-params').textContent.includes('°') && document.getElementById('cell-history').textContent.includes({})",
            json!(reason)
        ),
        Duration::from_secs(10),
    );

    // The KPI periods keep coming through the stream (one a second).
    page.wait_for(
        "[...S.kpis.values()].some(h => h.length >= 3)",
        Duration::from_secs(20),
    );

    // A proposal waiting for an operator, rejected with the page's button.
    page.wait_for(
        "document.querySelector('#pending button.reject') !== null",
        Duration::from_secs(30),
    );
    let id = page.eval("document.querySelector('#pending li[data-pending]').dataset.pending");
    page.eval("document.querySelector('#pending button.reject').click()");
    page.wait_for(
        &format!(
            "[...document.querySelectorAll('#feed li[data-kind=refused]')].some(li => li.textContent.includes('rejected by the operator: rejected in the web view')) && !document.querySelector('#pending li[data-pending=\"{}\"]')",
            id.as_str().expect("a pending id")
        ),
        Duration::from_secs(10),
    );

    // A proposal approved with the page's button: its change is verified while the page is
    // open, and the stream tells of the verdict. (One on another cell than the tilt changed
    // above, which the coordination's cool-down keeps other functions off.)
    let other = format!(
        "[...document.querySelectorAll('#pending li[data-pending]')].find(li => !li.textContent.includes({}))",
        json!(cell)
    );
    page.wait_for(&format!("{other} !== undefined"), Duration::from_secs(30));
    page.eval(&format!("{other}.querySelector('button.approve').click()"));
    page.wait_for(
        "document.getElementById('decision').textContent.includes('approved')",
        Duration::from_secs(10),
    );
    let decision = page.eval("document.getElementById('decision').textContent");
    assert!(
        !decision
            .as_str()
            .unwrap_or_default()
            .contains("not approved"),
        "{decision}"
    );
    let verdict = page.wait_for(
        &format!(
            "[...document.querySelectorAll('#feed li[data-trial]')].some(li => !{}.includes(Number(li.dataset.trial)))",
            json!(closed_before)
        ),
        Duration::from_secs(60),
    );
    eprintln!(
        "a verdict on the approved change in the feed after {} ms",
        verdict.as_millis()
    );

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64 screenshot");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-view.png");
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());

    assert!(
        shown < Duration::from_secs(1),
        "the change set took {shown:?} to reach the feed"
    );
    drop(sim);
}

/// An operator tilt change of one cell, reading `version`.
fn tilt_change(cell: &str, version: u64, tilt: i64) -> Value {
    json!({
        "origin": {"function": "operator"},
        "reason": "web view test",
        "read_set": [{"entity": format!("cell/{cell}"), "version": version}],
        "writes": [{"entity": format!("cell/{cell}"), "param": "electrical_tilt", "value": tilt}],
    })
}
