//! The dashboard in a real browser: Debian's chromium, driven through its chromium-driver
//! (WebDriver) with fantoccini, against `steadfast serve` as a process. Clicks, forms,
//! hostile text, cross-origin forms, and screenshots kept under `target/screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` of the same version
//! (`scripts/peers.sh browser`); without them the tests are skipped, or fail under
//! `STEADFAST_REQUIRE_PEERS=1`.

use fantoccini::Locator;
use serde_json::{Value, json};

use super::driver::{Browser, runtime};
use super::ops::{ids, prepared};
use super::serve::Server;
use super::*;

#[test]
fn an_operator_approves_resolves_replays_and_pauses_by_clicking() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let dead = ids(dir.path(), "reader");
    let shown = super::ops::json_of(&steadfast(dir.path(), &["runs", "show", &dead[0], "--json"]));
    let key = shown["run"]["idempotency_key"].as_str().unwrap().to_owned();
    let server = Server::start(dir.path(), &[]);
    let clicked = runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return false };
        let c = browser.client();
        let ui = |path: &str| format!("{}{path}", server.url);

        // Approve the first held run from the inbox, with a note.
        browser.visit(&ui("/ui/review")).await;
        assert!(browser.text().await.contains("a person must decide"));
        let row = c.find(Locator::Id(&format!("review-{}", held[0]))).await.unwrap();
        row.find(Locator::Css("input[name=note]"))
            .await
            .unwrap()
            .send_keys("yes, checked")
            .await
            .unwrap();
        browser.submit(row.find(Locator::Css("button.approve")).await.unwrap()).await;
        let text = browser.text().await;
        assert!(text.contains(&format!("approved run {}: now queued", held[0])), "{text}");
        assert!(
            c.find(Locator::Id(&format!("review-{}", held[0]))).await.is_err(),
            "it left the inbox"
        );
        browser.visit(&ui(&format!("/ui/runs/{}", held[0]))).await;
        let text = browser.text().await;
        assert!(text.contains("needs_review → queued"), "its run moved on: {text}");
        assert!(text.contains("operator:dashboard"), "{text}");

        // Resolve the other with an output that does not fit, then with one that does.
        browser.visit(&ui(&format!("/ui/review/{}", held[1]))).await;
        let editor = c.find(Locator::Css("textarea[name=output]")).await.unwrap();
        assert!(editor.prop("value").await.unwrap().unwrap().contains("approved"), "pre-filled");
        editor.clear().await.unwrap();
        editor.send_keys(r#"{"approved": "maybe", "extra": 1}"#).await.unwrap();
        browser.submit(c.find(Locator::Css("form.stack button")).await.unwrap()).await;
        let text = browser.text().await;
        assert!(text.contains("does not fit the schema"), "{text}");
        let violations = c.find_all(Locator::Css("ul.violations li")).await.unwrap();
        assert_eq!(violations.len(), 2, "{text}");
        let editor = c.find(Locator::Css("textarea[name=output]")).await.unwrap();
        editor.clear().await.unwrap();
        editor.send_keys(r#"{"approved": true}"#).await.unwrap();
        browser.submit(c.find(Locator::Css("form.stack button")).await.unwrap()).await;
        let text = browser.text().await;
        assert!(text.contains(&format!("resolved run {}", held[1])), "{text}");
        assert!(text.contains("Nothing waits for review"), "{text}");

        // Find a run by its idempotency key.
        browser.visit(&ui("/ui/runs")).await;
        c.find(Locator::Css("input[name=q]")).await.unwrap().send_keys(&key).await.unwrap();
        browser
            .submit(
                c.find(Locator::Css("input[name=q] ~ button, form:has(input[name=q]) button"))
                    .await
                    .unwrap(),
            )
            .await;
        assert!(
            c.current_url().await.unwrap().path().ends_with(&dead[0]),
            "the key leads to its run"
        );

        // Bulk-replay the dead letters of `reader`: confirm the count, see it fall.
        browser.visit(&ui("/ui/dlq")).await;
        assert!(browser.text().await.contains(&dead[1]));
        let select = c.find(Locator::Css("select[name=agent]")).await.unwrap();
        select.select_by_value("reader").await.unwrap();
        browser.submit(c.find(Locator::Css("form.filters button")).await.unwrap()).await;
        let text = browser.text().await;
        assert!(text.contains("Replay 2 runs"), "the confirmation counts them: {text}");
        browser.submit(c.find(Locator::Css("main form button")).await.unwrap()).await;
        let text = browser.text().await;
        assert!(text.contains("2 dead letters replayed, 0 refused"), "{text}");
        assert!(text.contains("The dead letter queue is empty"), "{text}");

        // Pause an agent, see it paused (its runs would stay queued), resume it.
        browser.visit(&ui("/ui/agents")).await;
        let row = c.find(Locator::Id("agent-digest.1.classifier")).await.unwrap();
        row.find(Locator::Css("input[name=reason]"))
            .await
            .unwrap()
            .send_keys("model outage")
            .await
            .unwrap();
        browser
            .submit(row.find(Locator::Css("form[action$='/pause'] button")).await.unwrap())
            .await;
        let text = browser.text().await;
        assert!(text.contains("paused `digest.1.classifier`"), "{text}");
        let row = c.find(Locator::Id("agent-digest.1.classifier")).await.unwrap();
        assert!(row.text().await.unwrap().contains("paused by operator:dashboard: model outage"));
        browser
            .submit(row.find(Locator::Css("form[action$='/resume'] button")).await.unwrap())
            .await;
        let row = c.find(Locator::Id("agent-digest.1.classifier")).await.unwrap();
        assert!(row.text().await.unwrap().contains("running"));
        browser.close().await;
        true
    });
    if !clicked {
        return; // skipped: no browser
    }
    // What the browser did is what the CLI sees.
    let shown = super::ops::json_of(&steadfast(dir.path(), &["runs", "show", &held[1], "--json"]));
    assert_eq!(shown["run"]["state"], "succeeded");
    assert_eq!(shown["run"]["output"], json!({"approved": true}));
    drop(server);
}

/// What a page's markup holds that could run: scripts, images (an `onerror`), `javascript:`
/// links, inline handlers.
async fn active_content(browser: &Browser) -> Value {
    let script = "return [Array.from(document.scripts).filter(s => s.getAttribute('src') !== '/ui/static/app.js').length, document.images.length, \
        document.querySelectorAll('a[href^=\"javascript:\"]').length, \
        document.querySelectorAll('[onerror],[onclick],[onload]').length];";
    browser.client().execute(script, vec![]).await.unwrap()
}

#[test]
fn hostile_text_renders_as_text_and_the_pages_are_kept_as_screenshots() {
    let dir = tempfile::tempdir().unwrap();
    let demo = steadfast(dir.path(), &["demo"]);
    assert!(demo.status.success(), "{}", text(&demo));
    let server = Server::start(dir.path(), &[]);
    let img = "<img src=x onerror=alert(1)>"; // a feed item's title in the demo's data
    let script = "<script>alert('note')</script>";
    let link = "<a href=\"javascript:alert(3)\">click me</a>";
    let operator = "<img src=y onerror=alert(4)>";
    runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return };
        let api = steadfast::reqwest::Client::new();
        let runs: Value = api
            .get(format!("{}/api/v1/runs?agent=digest.1.classifier&limit=100", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let hostile = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["input"]["title"].as_str().is_some_and(|t| t.contains(img)))
            .expect("the demo's hostile item")["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for text in [script, link] {
            let note = api
                .post(format!("{}/api/v1/runs/{hostile}/notes", server.url))
                .header("x-steadfast-operator", operator)
                .json(&json!({"text": text}))
                .send()
                .await
                .unwrap();
            assert_eq!(note.status().as_u16(), 200);
        }
        let pause = api
            .post(format!("{}/api/v1/agents/digest.2.reporter/pause", server.url))
            .header("x-steadfast-operator", operator)
            .json(&json!({"reason": script}))
            .send()
            .await
            .unwrap();
        assert_eq!(pause.status().as_u16(), 200);

        let ui = |path: &str| format!("{}{path}", server.url);
        for (path, shows) in [
            (format!("/ui/runs/{hostile}"), vec![img, script, link, operator]),
            ("/ui/agents".to_owned(), vec![script, operator]),
            ("/ui/runs?agent=digest.1.classifier".to_owned(), vec![]),
            ("/ui".to_owned(), vec![]),
            ("/ui/review".to_owned(), vec![]),
            ("/ui/dlq".to_owned(), vec![]),
            ("/ui/graphs".to_owned(), vec!["needs_review", "digest.1.classifier ×8"]),
        ] {
            browser.visit(&ui(&path)).await;
            let text = browser.text().await;
            for hostile in shows {
                assert!(text.contains(hostile), "{path} shows {hostile:?} as text: {text}");
            }
            assert_eq!(active_content(&browser).await, json!([0, 0, 0, 0]), "{path}");
            browser.no_dialog().await;
        }

        // The pages a new user sees first, kept as test artifacts (and, with
        // STEADFAST_UPDATE_SCREENSHOTS=1, as the README's images).
        let held = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["state"] == "needs_review")
            .expect("the demo holds runs for review")["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let resume = api
            .post(format!("{}/api/v1/agents/digest.2.reporter/resume", server.url))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resume.status().as_u16(), 200);
        for (name, path) in [
            ("overview", "/ui".to_owned()),
            ("run", format!("/ui/runs/{held}")),
            ("review", "/ui/review".to_owned()),
        ] {
            browser.visit(&ui(&path)).await;
            let shot = browser.screenshot(name).await;
            assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "{name}: a real page");
            if std::env::var_os("STEADFAST_UPDATE_SCREENSHOTS").is_some() {
                let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
                std::fs::create_dir_all(&docs).unwrap();
                std::fs::copy(&shot, docs.join(format!("{name}.png"))).unwrap();
            }
        }
        browser.close().await;
    });
}

#[test]
fn forms_from_another_origin_or_without_their_csrf_token_are_refused() {
    let dir = prepared();
    let server = Server::start(dir.path(), &[]);
    let agent = "digest.1.classifier";
    let paused = || {
        let listed = super::ops::json_of(&steadfast(dir.path(), &["agents", "list", "--json"]));
        listed.to_string().contains("\"paused\":true")
    };
    runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return };
        let c = browser.client();
        // The operator has a dashboard session (its cookie is SameSite=Strict, but another
        // port of 127.0.0.1 is the same site, so the browser sends it).
        browser.visit(&format!("{}/ui/agents", server.url)).await;
        let target = format!("{}/ui/agents/{agent}/pause", server.url);
        let page = format!(
            "<!doctype html><form method=post action=\"{target}\">\
             <input type=hidden name=csrf value=guessed><input name=reason value=pwned>\
             <button id=go>win a prize</button></form>"
        );
        let attacker = peers::HttpServer::start(move |_| {
            peers::Reply::ok("text/html; charset=utf-8", page.clone())
        })
        .await;
        browser.visit(&attacker.url("/")).await;
        browser.submit(c.find(Locator::Id("go")).await.unwrap()).await;
        let text = browser.text().await;
        assert!(text.contains("was not sent from this dashboard's own pages"), "{text}");

        // The dashboard's own form with its CSRF token taken out.
        browser.visit(&format!("{}/ui/agents", server.url)).await;
        let form = format!("form[action='/ui/agents/{agent}/pause']");
        let strip = format!(
            "const f = document.querySelector(\"{form}\"); f.querySelector('[name=csrf]').remove(); f.submit();"
        );
        let old = c.find(Locator::Css("html")).await.unwrap();
        c.execute(&strip, vec![]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while old.tag_name().await.is_ok() {
            assert!(Instant::now() < deadline, "the form did not lead to a new page");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = browser.text().await;
        assert!(text.contains("CSRF token is missing or stale"), "{text}");
        browser.close().await;
    });
    assert!(!paused(), "neither form paused the agent");
}

#[test]
fn a_server_with_a_token_signs_in_into_an_http_only_session() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let token = "a-dashboard-token-that-is-long-enough-0123456789";
    let server = Server::start(dir.path(), &[("STEADFAST_TOKEN", token)]);
    runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return };
        let c = browser.client();
        browser.visit(&format!("{}/ui/review", server.url)).await;
        assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"), "a sign-in first");
        c.find(Locator::Css("input[name=token]")).await.unwrap().send_keys("wrong").await.unwrap();
        browser.submit(c.find(Locator::Css("form button")).await.unwrap()).await;
        assert!(browser.text().await.contains("That is not this server's token."));
        c.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(token).await.unwrap();
        c.find(Locator::Css("input[name=name]")).await.unwrap().send_keys("ada").await.unwrap();
        browser.submit(c.find(Locator::Css("form button")).await.unwrap()).await;
        assert!(browser.text().await.contains("Runs by agent and state"));
        let cookies: Value = c.execute("return document.cookie;", vec![]).await.unwrap();
        assert!(!cookies.to_string().contains("steadfast_session"), "HttpOnly: {cookies}");
        assert!(!c.source().await.unwrap().contains(token), "the token is never in a page");

        browser.visit(&format!("{}/ui/review", server.url)).await;
        let row = c.find(Locator::Id(&format!("review-{}", held[0]))).await.unwrap();
        browser.submit(row.find(Locator::Css("button.approve")).await.unwrap()).await;
        browser.visit(&format!("{}/ui/runs/{}", server.url, held[0])).await;
        assert!(browser.text().await.contains("operator:ada"), "the name is recorded");
        browser.submit(c.find(Locator::Css("header form button")).await.unwrap()).await;
        assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"), "signed out");
        browser.visit(&format!("{}/ui/review", server.url)).await;
        assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
        browser.close().await;
    });
}

#[test]
fn the_overview_follows_the_counts_live_until_paused() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let server = Server::start(dir.path(), &[]);
    runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return };
        let c = browser.client();
        let approve = |id: String| {
            let url = format!("{}/api/v1/review/{id}/approve", server.url);
            async move {
                let response = steadfast::reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 200);
            }
        };
        let cell = "[data-count='held|needs_review']";
        let read = |selector: &'static str| async move {
            c.find(Locator::Css(selector)).await.unwrap().text().await.unwrap()
        };
        let until = |selector: &'static str, want: &'static str| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let now = read(selector).await;
                if now == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{selector} shows {now:?}, not {want:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        browser.visit(&format!("{}/ui", server.url)).await;
        assert_eq!(read(cell).await, "2");
        until("[data-badge=review]", "2").await;
        approve(held[0].clone()).await;
        until(cell, "1").await;
        until("[data-badge=review]", "1").await;

        c.find(Locator::Css("button.live")).await.unwrap().click().await.unwrap();
        approve(held[1].clone()).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(read(cell).await, "1", "paused: the page keeps what it showed");
        c.find(Locator::Css("button.live")).await.unwrap().click().await.unwrap();
        until(cell, "·").await;
        until("[data-count='held|queued']", "2").await;
        browser.close().await;
    });
}

/// Waits for the signal its input names, and answers with the signal's payload.
struct Waiter;

#[async_trait::async_trait]
impl steadfast::Agent for Waiter {
    type Input = String;
    type Output = Value;
    fn name(&self) -> &str {
        "waiter"
    }
    async fn run(
        &self,
        ctx: &mut steadfast::Context,
        signal: String,
    ) -> Result<steadfast::Outcome<Value>, steadfast::AgentError> {
        Ok(match ctx.signal() {
            Some(payload) => steadfast::Outcome::Done(payload.clone()),
            None => steadfast::Outcome::Wait(steadfast::WaitFor::signal(signal)),
        })
    }
}

/// A signal's name (what a run waits for) and its payload, chosen by whoever writes the agent
/// or sends the signal, render as text.
#[test]
fn a_hostile_signal_name_and_payload_render_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let (waits, woken) = ("<svg onload=alert(5)>", "<img src=z onerror=alert(6)>");
    let payload = "<script>alert(7)</script>";
    let runs = runtime().block_on(async {
        let store = steadfast::SledStore::open(dir.path().join("db")).unwrap();
        let rt = steadfast::Runtime::builder().store(store).register(Waiter).build().unwrap();
        let first = rt.submit("waiter", waits.to_owned()).await.unwrap().id;
        let second = rt.submit("waiter", woken.to_owned()).await.unwrap().id;
        rt.run_until_idle().await.unwrap();
        (first, second)
    });
    let server = Server::start(dir.path(), &[]);
    runtime().block_on(async {
        let Some(browser) = Browser::start().await else { return };
        let signal = json!({"name": woken, "payload": {"text": payload}});
        let sent = steadfast::reqwest::Client::new()
            .post(format!("{}/api/v1/runs/{}/signal", server.url, runs.1))
            .json(&signal)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status().as_u16(), 200);
        for (run, shows) in [(runs.0, vec![waits]), (runs.1, vec![woken, payload])] {
            browser.visit(&format!("{}/ui/runs/{run}", server.url)).await;
            let text = browser.text().await;
            for hostile in shows {
                assert!(text.contains(hostile), "run {run} shows {hostile:?} as text: {text}");
            }
            assert_eq!(active_content(&browser).await, json!([0, 0, 0, 0]), "run {run}");
        }
        browser.visit(&format!("{}/ui/runs?agent=waiter", server.url)).await;
        assert_eq!(active_content(&browser).await, json!([0, 0, 0, 0]));
        browser.close().await;
    });
}
