//! The web chat in a real browser: headless Chromium, driven over the WebDriver protocol
//! (chromedriver), opens the customer page a real `usher serve` process serves, types into the
//! widget and sends; the agent answers through the API; the answer appears in the widget. A
//! screenshot of each stage is kept in `target/screenshots/` (CI keeps that folder).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs them); set
//! `USHER_CHROMEDRIVER` / `USHER_CHROMIUM` to use others.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "browser-test-bootstrap-0123456789";

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn find(var: &str, default: &str) -> PathBuf {
    let path = std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: install Debian's chromium and chromium-driver (scripts/test does), or set {var}",
        path.display()
    );
    path
}

fn screenshots() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Standard base64 (what WebDriver screenshots are), decoded.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

/// A WebDriver session on chromedriver.
struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: Reap,
}

impl Drop for Browser {
    /// Ends the session, which closes the browser (killing chromedriver alone would leave it
    /// running); plain blocking HTTP, since dropping cannot wait on the runtime.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(rest) = self.base.strip_prefix("http://") else { return };
        let Some((host, path)) = rest.split_once('/') else { return };
        let Ok(addr) = host.parse::<std::net::SocketAddr>() else { return };
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
        }
    }
}

impl Browser {
    async fn start(width: u32, height: u32) -> Browser {
        let driver = find("USHER_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = find("USHER_CHROMIUM", "/usr/bin/chromium");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let reap = Reap(child);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{root}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Headless windows are at least 500 pixels wide: narrower screens are emulated.
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}"), "--no-first-run", "--no-default-browser-check"],
            "mobileEmulation": { "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0 } }
        } } } });
        let r: Value =
            http.post(format!("{root}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session =
            r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        Browser { http, base: format!("{root}/session/{session}"), _driver: reap }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"].get("error").is_none(), "{path} {body:?}: {}", v["value"]["message"]);
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(id) = r["value"]["element-6066-11e4-a52e-4f735466cecf"].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An action on the element `css` finds; found again if the page re-rendered it meanwhile
    /// (the console re-renders on live updates).
    async fn on_element(&self, css: &str, action: &str, body: Value) {
        for _ in 0..20 {
            let id = self.element(css).await;
            let v: Value = self
                .http
                .post(format!("{}/element/{id}/{action}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match v["value"]["error"].as_str() {
                None => return,
                Some("stale element reference") => tokio::time::sleep(Duration::from_millis(100)).await,
                Some(_) => panic!("{action} on {css}: {}", v["value"]["message"]),
            }
        }
        panic!("{css} kept going stale");
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "value", json!({ "text": text })).await;
    }

    async fn click(&self, css: &str) {
        self.on_element(css, "click", json!({})).await;
    }

    async fn script(&self, js: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": js, "args": [] }))).await
    }

    /// Waits until `js` returns true.
    async fn until(&self, what: &str, js: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.script(js).await != json!(true) {
            let page = self.script("return document.body.innerText").await;
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the page says: {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let path = screenshots().join(format!("{name}.png"));
        std::fs::write(&path, base64(png.as_str().unwrap())).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

async fn api(http: &reqwest::Client, base: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let mut req = http.request(method, format!("{base}{path}")).bearer_auth(TOKEN);
    if !body.is_null() {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

/// A `usher serve` on a fresh data folder, removed when dropped.
struct Server {
    base: String,
    dir: PathBuf,
    _child: Reap,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn serve(tag: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("usher-browser-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--rate-per-second", "0", "--data"])
        .arg(dir.join("data"))
        .env("USHER_BOOTSTRAP_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start usher serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "usher serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { base, dir, _child: Reap(child) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_sends_a_message_and_shows_the_agents_answer_live() {
    let server = serve("widget").await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    use reqwest::Method;
    let team =
        api(&http, &base, Method::POST, "/v1/teams", json!({ "name": "Support", "strategy": "least_open" }))
            .await;
    let ana = api(
        &http,
        &base,
        Method::POST,
        "/v1/agents",
        json!({ "name": "Ana", "email": "ana@shop.test", "teams": [team["id"]], "status": "online", "max_open": 5 }),
    )
    .await;
    let w = api(
        &http,
        &base,
        Method::POST,
        "/v1/workflows",
        json!({ "template": "least_open_online_only", "team": team["id"] }),
    )
    .await;
    api(&http, &base, Method::POST, &format!("/v1/workflows/{}/publish", w["id"]), json!({})).await;
    let channel = api(
        &http,
        &base,
        Method::POST,
        "/v1/channels",
        json!({ "kind": "web_chat", "name": "Shop", "team": team["id"] }),
    )
    .await;
    let key = channel["public_key"].as_str().unwrap();

    for (width, height, tag) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        let browser = Browser::start(width, height).await;
        browser.goto(&format!("{base}/chat/{key}")).await;
        browser.until("the widget", "return !!document.querySelector('#usher-chat.open #usher-input')").await;
        browser.screenshot(&format!("widget-{tag}-open")).await;
        let text = format!("Hello from the {tag} browser");
        browser.type_into("#usher-input", &text).await;
        browser.click("#usher-send").await;
        browser
            .until(
                "the visitor's message and the workflow's greeting",
                &format!(
                    "const li = [...document.querySelectorAll('#usher-messages li')];\
                     return li.some(l => l.dataset.direction === 'inbound' && l.textContent === {text:?})\
                       && li.some(l => l.dataset.author === 'workflow');"
                ),
            )
            .await;
        // The conversation it opened, assigned to Ana; she answers through the API.
        let list = api(&http, &base, Method::GET, "/v1/conversations?status=assigned", json!(null)).await;
        let conversation = list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["message"] == text.as_str())
            .unwrap_or_else(|| panic!("no conversation for {text}: {list}"))
            .clone();
        assert_eq!(conversation["assignee"], ana["id"]);
        assert_eq!(conversation["channel"], "web_chat");
        let reply = format!("Hi! Ana here, how can I help? ({tag})");
        api(
            &http,
            &base,
            Method::POST,
            &format!("/v1/conversations/{}/messages", conversation["id"]),
            json!({ "text": reply, "agent": ana["id"] }),
        )
        .await;
        browser
            .until(
                "the agent's answer in the widget",
                &format!(
                    "return [...document.querySelectorAll('#usher-messages li[data-direction=outbound]')]\
                     .some(l => l.textContent === {reply:?});"
                ),
            )
            .await;
        let fits = browser
            .script("const p = document.querySelector('#usher-panel').getBoundingClientRect(); return p.right <= window.innerWidth && p.left >= 0;")
            .await;
        assert_eq!(fits, json!(true), "the chat fits a {width}-pixel window");
        let scrolls = browser.script("return document.documentElement.scrollWidth > window.innerWidth").await;
        assert_eq!(scrolls, json!(false), "no sideways scrolling at {width} pixels");
        assert_eq!(browser.script("return window.innerWidth").await, json!(width));
        browser.screenshot(&format!("widget-{tag}-answered")).await;
    }
}

impl Browser {
    async fn sign_in(&self, base: &str, email: &str) {
        self.sign_in_with(base, email, PASSWORD).await;
    }

    async fn sign_in_with(&self, base: &str, email: &str, password: &str) {
        self.goto(&format!("{base}/console")).await;
        // By keyboard: the e-mail, Tab to the password, Enter to sign in.
        self.type_into("#login-email", &format!("{email}\u{E004}")).await;
        let keys: Vec<Value> = password
            .chars()
            .map(String::from)
            .chain(["\u{E007}".to_string()])
            .flat_map(|k| [json!({ "type": "keyDown", "value": k }), json!({ "type": "keyUp", "value": k })])
            .collect();
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": keys }] })),
        )
        .await;
        self.until("the console after signing in", "return !!document.querySelector('#signout')").await;
    }
}

const PASSWORD: &str = "correct horse battery";

/// The console in Chromium: a wrong password is refused; an agent signs in, goes online with
/// the presence switch and sees a conversation arrive live (badge and list) without reloading;
/// opens it, reads the decision's explanation and answers; two agents press Join on one
/// unassigned conversation at once and exactly one gets it while the other is told; the
/// manager's board shows each agent's load and the queue. At 1280 and 390 pixels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_shows_work_live_and_settles_a_race_for_one_conversation() {
    use reqwest::Method;
    let server = serve("console").await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let team = api(
        &http,
        &base,
        Method::POST,
        "/v1/teams",
        json!({ "name": "Support", "strategy": "least_open", "when_nobody": "leave_unassigned" }),
    )
    .await;
    let sales =
        api(&http, &base, Method::POST, "/v1/teams", json!({ "name": "Sales", "strategy": "round_robin" }))
            .await;
    let mut agents = Vec::new();
    for name in ["Ana", "Bob"] {
        let a = api(&http, &base, Method::POST, "/v1/agents", json!({ "name": name, "email": format!("{}@shop.test", name.to_lowercase()), "teams": [team["id"]], "status": "offline", "max_open": 5 })).await;
        api(&http, &base, Method::POST, "/v1/logins", json!({ "email": format!("{}@shop.test", name.to_lowercase()), "password": PASSWORD, "role": "agent", "agent": a["id"] })).await;
        agents.push(a["id"].as_i64().unwrap());
    }
    api(
        &http,
        &base,
        Method::POST,
        "/v1/logins",
        json!({ "email": "lead@shop.test", "password": PASSWORD, "role": "manager" }),
    )
    .await;
    let (ana, bob) = (agents[0], agents[1]);
    let presence = |id: i64| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            api(&http, &base, Method::GET, &format!("/v1/agents/{id}"), json!(null)).await["status"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };

    for (width, height, tag) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        // Each round starts with both away from work and nothing open.
        for id in [ana, bob] {
            api(
                &http,
                &base,
                Method::PUT,
                &format!("/v1/agents/{id}/status"),
                json!({ "status": "offline" }),
            )
            .await;
        }
        let a = Browser::start(width, height).await;
        a.goto(&format!("{base}/console")).await;
        a.type_into("#login-email", "ana@shop.test").await;
        a.type_into("#login-password", "wrong password!").await;
        a.click("#login-submit").await;
        a.until("the refusal", "return document.querySelector('#login-error').textContent.includes('Wrong')")
            .await;
        a.sign_in(&base, "ana@shop.test").await;
        a.screenshot(&format!("console-{tag}-inbox-empty")).await;
        // Online with the switch.
        a.script("const s = document.querySelector('#presence'); s.value = 'online'; s.dispatchEvent(new Event('change')); return true;").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while presence(ana).await != "online" {
            assert!(Instant::now() < deadline, "the switch did not set Ana online");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Work arrives while she looks at Unassigned: the badge counts it, Mine lists it.
        a.click("#nav-unassigned").await;
        let c = api(&http, &base, Method::POST, "/v1/conversations", json!({ "channel": "whatsapp", "team": team["id"], "contact": { "external_id": format!("+1555{tag}"), "name": format!("Mia {tag}") }, "message": "Where is my order?" })).await;
        assert_eq!(c["assignee"], ana);
        a.until("the badge", "return document.querySelector('#mine-badge').textContent === '1'").await;
        a.click("#nav-mine").await;
        a.until(
            "the new conversation in Mine",
            &format!("return !!document.querySelector('#mine li[data-conversation=\"{}\"]')", c["id"]),
        )
        .await;
        a.screenshot(&format!("console-{tag}-inbox-assigned")).await;
        a.click(&format!("button[data-open=\"{}\"]", c["id"])).await;
        a.until(
            "the decision's explanation",
            "const t = document.querySelector('#trace'); return !!t && t.textContent.includes('least open')",
        )
        .await;
        a.type_into("#reply-text", "Let me check that for you.").await;
        a.click("#reply-send").await;
        a.until("the answer in the history", "return [...document.querySelectorAll('#messages li.outbound')].some(l => l.textContent === 'Let me check that for you.')").await;
        a.screenshot(&format!("console-{tag}-conversation")).await;
        let fits = a.script("return document.documentElement.scrollWidth <= window.innerWidth").await;
        assert_eq!(fits, json!(true), "no sideways scrolling at {width} pixels");
        api(&http, &base, Method::POST, &format!("/v1/conversations/{}/close", c["id"]), json!({})).await;
        // The race: one unassigned conversation, two agents pressing Join together.
        let b = Browser::start(width, height).await;
        b.sign_in(&base, "bob@shop.test").await;
        for id in [ana, bob] {
            api(
                &http,
                &base,
                Method::PUT,
                &format!("/v1/agents/{id}/status"),
                json!({ "status": "offline" }),
            )
            .await;
        }
        let pick = api(&http, &base, Method::POST, "/v1/conversations", json!({ "channel": "email", "team": team["id"], "contact": { "external_id": format!("race-{tag}") }, "message": "Anyone?" })).await;
        assert_eq!(pick["status"], "unassigned", "{pick}");
        for id in [ana, bob] {
            api(&http, &base, Method::PUT, &format!("/v1/agents/{id}/status"), json!({ "status": "online" }))
                .await;
        }
        let join = format!("button[data-join=\"{}\"]", pick["id"]);
        for browser in [&a, &b] {
            browser.click("#nav-unassigned").await;
            browser
                .until("the conversation to pick", &format!("return !!document.querySelector('{join}')"))
                .await;
        }
        // Found and pressed in one turn of the page's script, so a live re-render between
        // finding and pressing cannot lose the press.
        let press = format!(
            "const j = document.querySelector('{join}'); if (!j) return false; j.click(); return true;"
        );
        tokio::join!(a.until("Ana's press", &press), b.until("Bob's press", &press));
        let won = "return !!document.querySelector('#conversation')";
        let lost = "return !!document.querySelector('#claim-result') && document.querySelector('#claim-result').textContent.includes('Someone else')";
        let settled = format!("return ({}) || ({})", &won[7..], &lost[7..]);
        a.until("Ana's answer to the race", &settled).await;
        b.until("Bob's answer to the race", &settled).await;
        let (a_won, b_won) = (a.script(won).await == json!(true), b.script(won).await == json!(true));
        assert!(a_won ^ b_won, "exactly one agent gets it (Ana {a_won}, Bob {b_won})");
        let loser = if a_won { &b } else { &a };
        assert_eq!(loser.script(lost).await, json!(true), "the other is told");
        loser.screenshot(&format!("console-{tag}-race-lost")).await;
        let held =
            api(&http, &base, Method::GET, &format!("/v1/conversations/{}", pick["id"]), json!(null)).await;
        assert_eq!(held["assignee"], json!(if a_won { ana } else { bob }));
        // The winner hands it on to the other, from the conversation's view.
        let (winner, other) = if a_won { (&a, bob) } else { (&b, ana) };
        winner
            .until(
                "the transfer, chosen and sent",
                &format!(
                    "const s = document.querySelector('#transfer-to'); const go = document.querySelector('#transfer');\
                     if (!s || !go || ![...s.options].some(o => o.value === 'agent:{other}')) return false;\
                     s.value = 'agent:{other}'; go.click(); return true;"
                ),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while api(&http, &base, Method::GET, &format!("/v1/conversations/{}", pick["id"]), json!(null)).await
            ["assignee"]
            != other
        {
            assert!(Instant::now() < deadline, "the transfer did not happen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        api(&http, &base, Method::POST, &format!("/v1/conversations/{}/close", pick["id"]), json!({})).await;
        // The manager's board.
        let m = Browser::start(width, height).await;
        m.sign_in(&base, "lead@shop.test").await;
        m.until("the board", &format!("return !!document.querySelector('#board section[data-team=\"{}\"] tr[data-agent=\"{ana}\"]')", team["id"])).await;
        m.screenshot(&format!("console-{tag}-board")).await;
        let last_hour = m.script(&format!("return document.querySelector('td[data-last-hour=\"{ana}\"]') && document.querySelector('td[data-last-hour=\"{ana}\"]').textContent")).await;
        assert!(last_hour.as_str().is_some_and(|n| n.parse::<u32>().unwrap() >= 1), "{last_hour}");
        // Teams from the board: Ana joins Sales, then leaves it.
        for member in [true, false] {
            m.click(&format!("#member-{}-{ana}-{}", team["id"], sales["id"])).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let a = api(&http, &base, Method::GET, &format!("/v1/agents/{ana}"), json!(null)).await;
                if a["teams"].as_array().unwrap().contains(&sales["id"]) == member {
                    break;
                }
                assert!(Instant::now() < deadline, "Ana's teams are {}, expected Sales {member}", a["teams"]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            m.until(
                "the board again",
                &format!("return !!document.querySelector('#member-{}-{ana}-{}')", team["id"], sales["id"]),
            )
            .await;
        }
        // The reports: tables and the four charts, drawn by the server as SVG.
        m.click("#nav-reports").await;
        m.until("the report's charts", "const i = [...document.querySelectorAll('img[data-chart]')]; return i.length === 4 && i.every(x => x.complete && x.naturalWidth > 0)").await;
        let opened =
            m.script("return Number(document.querySelector('#report-counts tbody td').textContent)").await;
        assert!(opened.as_i64() >= Some(2), "{opened}");
        // The period's conversations as a trace for the simulator, through the session.
        let trace =
            m.script("return fetch(document.querySelector('#report-trace').href).then(r => r.text())").await;
        let rows: Vec<&str> = trace.as_str().unwrap_or_default().lines().collect();
        assert!(rows.first().is_some_and(|h| h.starts_with("arrived_at,channel,")), "{trace}");
        assert!(rows.len() as i64 > opened.as_i64().unwrap_or(0), "a row per conversation: {trace}");
        m.screenshot(&format!("console-{tag}-reports")).await;
        let fits = m.script("return document.documentElement.scrollWidth <= window.innerWidth").await;
        assert_eq!(fits, json!(true), "the reports fit {width} pixels");
        // Nothing was fetched from any host but the server itself.
        let local = m.script("return performance.getEntriesByType('resource').every(e => e.name.startsWith(location.origin))").await;
        assert_eq!(local, json!(true), "every request went to the server itself");
        // Every control can take the keyboard's focus.
        let unreachable = m
            .script("return [...document.querySelectorAll('button, input, select, textarea, a')].filter(e => e.tabIndex < 0).length")
            .await;
        assert_eq!(unreachable, json!(0));
    }
}

/// The workflow editor in Chromium: a manager makes a draft from a template, changes the
/// greeting in its form, makes a mistake (a step that leads nowhere) and sees it named at its
/// place, fixes it, publishes; the diagram is drawn; a dry run shows the steps; and the next
/// conversation follows the published workflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_editor_builds_checks_and_publishes_and_the_next_conversation_follows_it() {
    use reqwest::Method;
    let server = serve("editor").await;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let team =
        api(&http, &base, Method::POST, "/v1/teams", json!({ "name": "Support", "strategy": "round_robin" }))
            .await;
    let ana = api(&http, &base, Method::POST, "/v1/agents", json!({ "name": "Ana", "email": "ana@shop.test", "teams": [team["id"]], "status": "online", "max_open": 50 })).await;
    api(
        &http,
        &base,
        Method::POST,
        "/v1/logins",
        json!({ "email": "lead@shop.test", "password": PASSWORD, "role": "manager" }),
    )
    .await;
    for (width, height, tag) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        let m = Browser::start(width, height).await;
        m.sign_in(&base, "lead@shop.test").await;
        m.click("#nav-workflows").await;
        m.until(
            "the templates",
            "return !!document.querySelector('#template option[value=least_open_online_only]')",
        )
        .await;
        m.script(&format!(
            "document.querySelector('#template').value = 'least_open_online_only';\
             document.querySelector('#tpl-team').value = '{}'; return true;",
            team["id"]
        ))
        .await;
        if tag == "desktop" {
            // Business hours, edited here too.
            m.type_into("#cal-new-name", "Office").await;
            m.script("document.querySelector('#cal-new-zone').value = 'Europe/Paris'; return true;").await;
            m.type_into("#cal-new-mon", "09:00-12:30, 13:30-18:00").await;
            m.type_into("#cal-new-holidays", "2026-12-25 Christmas").await;
            m.click("#cal-new-save").await;
            m.until(
                "the saved calendar",
                "return !!document.querySelector('form[data-calendar]:not([data-calendar=new])')",
            )
            .await;
            let cals = api(&http, &base, Method::GET, "/v1/calendars", json!(null)).await;
            let office = &cals["calendars"][0];
            assert_eq!(
                office["spec"]["weekly"]["mon"],
                json!([["09:00", "12:30"], ["13:30", "18:00"]]),
                "{office}"
            );
            assert_eq!(office["spec"]["time_zone"], "Europe/Paris");
            assert_eq!(office["spec"]["holidays"][0]["name"], "Christmas");
            m.until(
                "the templates again",
                "return !!document.querySelector('#template option[value=least_open_online_only]')",
            )
            .await;
            m.script(&format!(
                "document.querySelector('#template').value = 'least_open_online_only';\
                 document.querySelector('#tpl-team').value = '{}'; return true;",
                team["id"]
            ))
            .await;
        }
        m.click("#create-workflow").await;
        m.until(
            "the editor",
            "return !!document.querySelector('#workflow-form fieldset[data-step=welcome]')",
        )
        .await;
        m.until(
            "the diagram",
            "const d = document.querySelector('#workflow-diagram'); return d.complete && d.naturalWidth > 0",
        )
        .await;
        // A greeting of our own, and a mistake: the greeting leads to a step that does not exist.
        let greeting = format!("Welcome to the shop ({tag}), {{{{contact.name}}}}!");
        m.script(&format!(
            "document.querySelector('#step-welcome-text').value = {greeting:?};\
             document.querySelector('#step-welcome-next').value = 'nowhere'; return true;"
        ))
        .await;
        m.click("#save-workflow").await;
        m.until("the problem named at its place", "return [...document.querySelectorAll('#workflow-problems li')].some(l => l.dataset.path.startsWith('steps.welcome'))").await;
        assert_eq!(
            m.script(
                "return document.querySelector('fieldset[data-step=welcome]').classList.contains('problem')"
            )
            .await,
            json!(true)
        );
        m.screenshot(&format!("console-{tag}-workflow-problem")).await;
        m.script("document.querySelector('#step-welcome-next').value = 'assign'; return true;").await;
        m.click("#save-workflow").await;
        m.until("a clean check", "return !!document.querySelector('#workflow-ok')").await;
        m.click("#dry-run-go").await;
        m.until("the dry run", "return document.querySelector('#dry-trace').children.length >= 2").await;
        m.click("#publish-workflow").await;
        m.until("the published state", "return !!document.querySelector('#toggle-workflow')").await;
        m.screenshot(&format!("console-{tag}-workflow-published")).await;
        let fits = m.script("return document.documentElement.scrollWidth <= window.innerWidth").await;
        assert_eq!(fits, json!(true), "the editor fits {width} pixels");
        // The next conversation follows it.
        let c = api(&http, &base, Method::POST, "/v1/conversations", json!({ "channel": "sms", "team": team["id"], "contact": { "external_id": format!("wf-{tag}"), "name": "Mia" }, "message": "hi" })).await;
        assert_eq!(c["assignee"], ana["id"]);
        let messages =
            api(&http, &base, Method::GET, &format!("/v1/conversations/{}/messages", c["id"]), json!(null))
                .await;
        let expected = greeting.replace("{{contact.name}}", "Mia");
        assert!(
            messages["messages"].as_array().unwrap().iter().any(|m| m["text"] == expected.as_str()),
            "{messages}"
        );
        // This round's workflow steps aside for the next round's.
        let list = api(&http, &base, Method::GET, "/v1/workflows", json!(null)).await;
        for w in list["workflows"].as_array().unwrap() {
            if w["enabled"] == true {
                api(&http, &base, Method::POST, &format!("/v1/workflows/{}/disable", w["id"]), json!({}))
                    .await;
            }
        }
    }
}

/// Not a check: makes the README's screenshots (`docs/screenshots/`) from a real
/// `usher serve --demo` after a minute of its traffic. Run it with
/// `cargo test -p usher --test browser -- --ignored screenshots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "makes the README's screenshots; run by hand"]
async fn screenshots_of_the_demo_for_the_readme() {
    let dir = std::env::temp_dir().join(format!("usher-demo-shots-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.join("data"))
        .env("USHER_BOOTSTRAP_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Reap(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&out).unwrap();
    async fn save(b: &Browser, out: &Path, name: &str) {
        let png = b.call(reqwest::Method::GET, "/screenshot", None).await;
        std::fs::write(out.join(format!("{name}.png")), base64(png.as_str().unwrap())).unwrap();
    }
    let m = Browser::start(1280, 800).await;
    m.sign_in_with(&base, "admin@demo.usher", "usher-demo").await;
    m.until("the board", "return !!document.querySelector('#board section')").await;
    save(&m, &out, "board").await;
    m.click("#nav-reports").await;
    m.until("the charts", "const i = [...document.querySelectorAll('img[data-chart]')]; return i.length === 4 && i.every(x => x.complete && x.naturalWidth > 0)").await;
    save(&m, &out, "reports").await;
    m.click("#nav-workflows").await;
    m.until("the list", "return !!document.querySelector('button[data-edit]')").await;
    m.click("button[data-edit]").await;
    m.until("the diagram", "const d = document.querySelector('#workflow-diagram'); return !!d && d.complete && d.naturalWidth > 0").await;
    save(&m, &out, "workflow-editor").await;
    let a = Browser::start(1280, 800).await;
    a.sign_in_with(&base, "ana@demo.usher", "usher-demo").await;
    a.until("the inbox", "return !!document.querySelector('#mine li')").await;
    save(&a, &out, "inbox").await;
    if a.script("return !!document.querySelector('button[data-open]')").await == json!(true) {
        a.click("button[data-open]").await;
        a.until("the conversation", "return !!document.querySelector('#messages')").await;
        save(&a, &out, "conversation").await;
    }
    let channels = api(&http, &base, reqwest::Method::GET, "/v1/channels", json!(null)).await;
    let key = channels["channels"][0]["public_key"].as_str().unwrap().to_string();
    let v = Browser::start(390, 760).await;
    v.goto(&format!("{base}/chat/{key}")).await;
    v.type_into("#usher-input", "Hi! Has my order shipped?").await;
    v.click("#usher-send").await;
    v.until("the greeting", "return [...document.querySelectorAll('#usher-messages li')].some(l => l.dataset.author === 'workflow')").await;
    save(&v, &out, "web-chat").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn base64_decodes_what_python_encodes() {
    // base64.b64encode(b"Usher \x00\xff!") == b"VXNoZXIgAP8h"
    assert_eq!(base64("VXNoZXIgAP8h"), b"Usher \x00\xff!".to_vec());
    assert_eq!(base64("aGk="), b"hi".to_vec());
}
