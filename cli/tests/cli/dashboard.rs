//! The dashboard's forms over plain HTTP (its session cookie and CSRF token carried by hand),
//! for what a browser test would only repeat: bulk actions over many runs.

use serde_json::json;
use steadfast::reqwest;

use super::ops::{ids, json_of, prepared, work};
use super::serve::{Server, block_on};
use super::*;

/// The session cookie `response` sets, as a `Cookie` header value.
fn cookie_of(response: &reqwest::Response) -> String {
    let set = response.headers()[reqwest::header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token of the first form on `page`.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with its token") + 19;
    page[at..at + 64].to_owned()
}

/// "Everything this filter matches", with no state in the filter: the runs the action takes
/// are found however many newer runs in other states come first (here 1,001 waiting runs,
/// more than a page of the store's listing).
#[test]
fn a_bulk_replay_finds_every_run_it_takes_behind_a_thousand_others() {
    let dir = prepared();
    let dead = ids(dir.path(), "reader")[1..].to_vec(); // the first one succeeded
    let held = ids(dir.path(), "held");
    work(dir.path(), |rt| async move {
        for n in 100..1101 {
            rt.submit("gate", n).await.unwrap();
        }
    });
    let server = Server::start(dir.path(), &[]);
    block_on(async {
        let c = reqwest::Client::new();
        let page = c.get(format!("{}/ui/runs", server.url)).send().await.unwrap();
        let cookie = cookie_of(&page);
        let csrf = csrf_of(&page.text().await.unwrap());
        let bulk = format!("{}/ui/runs/bulk", server.url);
        // The form's fields are hex and plain words: nothing to percent-encode.
        let post = |form: String| {
            c.post(&bulk)
                .header(reqwest::header::COOKIE, &cookie)
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form)
                .send()
        };
        let form = format!("csrf={csrf}&action=replay");
        let confirm = post(form.clone()).await.unwrap().text().await.unwrap();
        assert!(confirm.contains("<strong>4</strong> runs"), "2 dead letters, 2 held: {confirm}");
        let done = post(format!("{form}&confirm=yes")).await.unwrap();
        assert_eq!(done.status().as_u16(), 200, "redirected to the runs page");
        assert!(done.text().await.unwrap().contains("4 runs replayed, 0 refused"));
    });
    drop(server);
    for id in dead.iter().chain(&held) {
        let shown = json_of(&steadfast(dir.path(), &["runs", "show", id, "--json"]));
        assert_eq!(shown["run"]["state"], json!("queued"), "{id}");
    }
}

/// A name at sign-in that cannot be recorded is refused, not replaced by a default.
#[test]
fn a_sign_in_name_that_cannot_be_recorded_is_refused() {
    let dir = prepared();
    let server = Server::start(dir.path(), &[]);
    block_on(async {
        let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build();
        let c = c.unwrap();
        let page = c.get(format!("{}/ui/login", server.url)).send().await.unwrap();
        let cookie = cookie_of(&page);
        let csrf = csrf_of(&page.text().await.unwrap());
        let login = |name: &'static str| {
            c.post(format!("{}/ui/login", server.url))
                .header(reqwest::header::COOKIE, &cookie)
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}&name={name}"))
                .send()
        };
        let refused = login("Jos%C3%A9").await.unwrap();
        assert_eq!(refused.status().as_u16(), 400);
        assert!(refused.text().await.unwrap().contains("printable ASCII"));
        let signed = login("Ada+Lovelace").await.unwrap();
        assert_eq!(signed.status().as_u16(), 303, "on to the overview");
        let overview = c.get(format!("{}/ui", server.url));
        let overview = overview.header(reqwest::header::COOKIE, cookie_of(&signed)).send().await;
        assert!(overview.unwrap().text().await.unwrap().contains("Ada Lovelace"));
    });
}

/// A signal's payload is shown on the run page as text: a hostile one renders escaped.
#[test]
fn a_signal_payload_is_shown_escaped_on_the_run_page() {
    let dir = prepared();
    let gate = ids(dir.path(), "gate")[0].clone();
    let server = Server::start(dir.path(), &[]);
    block_on(async {
        let c = reqwest::Client::new();
        let hostile = json!({"name": "go", "payload": {"note": "<script>alert(1)</script><img src=x onerror=alert(2)>"}});
        let signal = format!("{}/api/v1/runs/{gate}/signal", server.url);
        let sent = c.post(signal).json(&hostile).send().await.unwrap();
        assert_eq!(sent.status().as_u16(), 200, "{}", sent.text().await.unwrap());
        let page = c.get(format!("{}/ui/runs/{gate}", server.url)).send().await.unwrap();
        let page = page.text().await.unwrap();
        assert!(page.contains("Signal received"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{page}");
        assert!(!page.contains("<script>alert") && !page.contains("<img src=x"), "{page}");
    });
}

/// Every kind of dashboard answer carries the security headers, and the session cookie is
/// HttpOnly and SameSite=Strict: taking a header out fails this.
#[test]
fn every_page_kind_carries_the_security_headers() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let missing = steadfast::RunId::new();
    let server = Server::start(dir.path(), &[]);
    block_on(async {
        let c =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let first = c.get(format!("{}/ui", server.url)).send().await.unwrap();
        let set = first.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().to_owned();
        for part in ["steadfast_session=", "HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(set.contains(part), "{part} in {set}");
        }
        let cookie = set.split(';').next().unwrap().to_owned();
        let pages = [
            "/ui".to_owned(),
            "/ui/runs".to_owned(),
            format!("/ui/runs/{}", held[0]),
            format!("/ui/runs/{missing}"),
            "/ui/review".to_owned(),
            format!("/ui/review/{}", held[1]),
            "/ui/dlq".to_owned(),
            "/ui/agents".to_owned(),
            "/ui/graphs".to_owned(),
            "/ui/login".to_owned(),
            "/ui/nosuch".to_owned(),
        ];
        let mut answers = Vec::new();
        for page in &pages {
            let response = c
                .get(format!("{}{page}", server.url))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            answers.push((page.clone(), response));
        }
        // A refused form post (no CSRF token) is a page too.
        let refused = c
            .post(format!("{}/ui/agents/digest.2.reporter/pause", server.url))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("reason=x")
            .send()
            .await
            .unwrap();
        assert!(refused.status().is_client_error(), "{}", refused.status());
        answers.push(("POST without a CSRF token".to_owned(), refused));
        for (page, response) in answers {
            let h = response.headers();
            let csp = h.get("content-security-policy").map(|v| v.to_str().unwrap().to_owned());
            let csp = csp.unwrap_or_else(|| panic!("{page}: no Content-Security-Policy"));
            for directive in ["default-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
                assert!(csp.contains(directive), "{page}: {directive} in {csp}");
            }
            assert!(!csp.contains("unsafe-inline"), "{page}: {csp}");
            let header = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(header("x-frame-options").as_deref(), Some("DENY"), "{page}");
            assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{page}");
            assert_eq!(header("referrer-policy").as_deref(), Some("same-origin"), "{page}");
            assert_eq!(header("cache-control").as_deref(), Some("no-store"), "{page}");
        }
    });
}
