//! The OpenAPI document `steadfast serve` serves: open without the token, listing every call
//! the server makes (and no other), the token required on the API's, and the answers of the
//! calls it lists valid against its own schemas (schemathesis, in `.ci/run`, goes further).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use steadfast::reqwest;

use super::ops::{ids, prepared};
use super::serve::{Server, block_on, call};

/// Every call of the API, as `METHOD path`.
const OPERATIONS: [&str; 24] = [
    "GET /api/v1/runs",
    "POST /api/v1/runs",
    "GET /api/v1/runs/{id}",
    "POST /api/v1/runs/{id}/replay",
    "POST /api/v1/runs/{id}/cancel",
    "POST /api/v1/runs/{id}/signal",
    "POST /api/v1/runs/{id}/notes",
    "GET /api/v1/review",
    "GET /api/v1/review/{id}",
    "POST /api/v1/review/{id}/approve",
    "POST /api/v1/review/{id}/reject",
    "POST /api/v1/review/{id}/resolve",
    "GET /api/v1/dlq",
    "POST /api/v1/dlq/replay",
    "POST /api/v1/prune",
    "GET /api/v1/stats",
    "GET /api/v1/agents",
    "POST /api/v1/agents/{name}/pause",
    "POST /api/v1/agents/{name}/resume",
    "GET /api/v1/graph/{target}",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /alarms",
];

/// Checks `body` against the document's schema for `status` of `METHOD path`.
fn conforms(document: &Value, operation: &str, status: u16, body: &Value) {
    let (method, path) = operation.split_once(' ').unwrap();
    let response = &document["paths"][path][method.to_lowercase()]["responses"][status.to_string()];
    assert!(response.is_object(), "{operation}: status {status} is not documented ({body})");
    let schema = &response["content"]["application/json"]["schema"];
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": document["components"],
    });
    let validator = jsonschema::validator_for(&root).expect("the document's schemas compile");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{operation} {status}: {errors:#?}\n{body:#}");
}

#[test]
fn the_openapi_document_lists_every_call_and_the_answers_fit_it() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let token = "a-token-for-the-openapi-test-0123456789abcdef";
    let server = Server::start(dir.path(), &[("STEADFAST_TOKEN", token)]);
    let get = reqwest::Method::GET;
    block_on(async {
        let c = reqwest::Client::new();
        let url = |path: &str| format!("{}{path}", server.url);
        let (status, document) =
            call(&c, get.clone(), url("/api/v1/openapi.json"), None, None).await;
        assert_eq!(status, 200, "the document is served without the token: {document}");
        assert_eq!(document["openapi"], "3.1.0");
        // 3.1 is JSON Schema 2020-12: a tuple is `prefixItems`, never draft-07's `items: [..]`,
        // which validators and client generators refuse.
        fn draft07_tuples(value: &Value, at: &str, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if map.get("items").is_some_and(Value::is_array) {
                        found.push(at.to_owned());
                    }
                    for (k, v) in map {
                        draft07_tuples(v, &format!("{at}/{k}"), found);
                    }
                }
                Value::Array(values) => {
                    for (i, v) in values.iter().enumerate() {
                        draft07_tuples(v, &format!("{at}/{i}"), found);
                    }
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        draft07_tuples(&document, "", &mut found);
        assert!(found.is_empty(), "draft-07 tuples at {found:?}");
        assert_eq!(document["info"]["title"], "steadfast");

        let mut listed = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let name = format!("{} {path}", method.to_uppercase());
                let secured = operation["security"] == json!([{"token": []}]);
                let guarded = path.starts_with("/api/v1/")
                    || ["/readyz", "/metrics", "/alarms"].contains(&path.as_str());
                assert_eq!(secured, guarded, "{name}: {operation}");
                assert!(operation["summary"].is_string(), "{name} has a summary");
                listed.insert(name);
            }
        }
        let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
        assert_eq!(listed, expected, "the document lists exactly the server's calls");

        // Answers, with the token, fit the schemas of their statuses.
        let calls = [
            ("GET /api/v1/runs", "/api/v1/runs?limit=100".to_owned()),
            ("GET /api/v1/runs/{id}", format!("/api/v1/runs/{}", held[0])),
            ("GET /api/v1/runs/{id}", format!("/api/v1/runs/{}", steadfast::RunId::new())),
            ("GET /api/v1/runs/{id}", "/api/v1/runs/not-an-id".to_owned()),
            ("GET /api/v1/review", "/api/v1/review".to_owned()),
            ("GET /api/v1/review/{id}", format!("/api/v1/review/{}", held[0])),
            ("GET /api/v1/dlq", "/api/v1/dlq".to_owned()),
            ("GET /api/v1/stats", "/api/v1/stats?window=7d".to_owned()),
            ("GET /api/v1/agents", "/api/v1/agents".to_owned()),
            ("GET /api/v1/graph/{target}", "/api/v1/graph/lifecycle".to_owned()),
            ("GET /api/v1/graph/{target}", "/api/v1/graph/nothing".to_owned()),
            ("GET /healthz", "/healthz".to_owned()),
            ("GET /readyz", "/readyz".to_owned()),
            ("GET /alarms", "/alarms".to_owned()),
        ];
        for (operation, path) in calls {
            let (status, body) = call(&c, get.clone(), url(&path), None, Some(token)).await;
            conforms(&document, operation, status, &body);
        }
        let (status, body) = call(&c, get.clone(), url("/api/v1/runs"), None, None).await;
        assert_eq!(status, 401);
        conforms(&document, "GET /api/v1/runs", status, &body);
        let resolve = format!("/api/v1/review/{}/resolve", held[0]);
        let bad = json!({"output": {"approved": "yes"}});
        let post = reqwest::Method::POST;
        let (status, body) = call(&c, post, url(&resolve), Some(bad), Some(token)).await;
        assert_eq!(status, 422, "{body}");
        conforms(&document, "POST /api/v1/review/{id}/resolve", status, &body);
    });
}

/// Who acts is recorded from `X-Steadfast-Operator`: a name the document does not allow is
/// refused (nothing is done as someone else), and the CLI says so before it calls.
#[test]
fn an_operator_name_outside_the_document_is_refused_not_replaced() {
    let dir = prepared();
    let held = ids(dir.path(), "held");
    let server = Server::start(dir.path(), &[]);
    block_on(async {
        let c = reqwest::Client::new();
        let approve = format!("{}/api/v1/review/{}/approve", server.url, held[0]);
        let long = "x".repeat(65);
        for name in [long.as_str(), " "] {
            let response = c
                .post(&approve)
                .header("content-type", "application/json")
                .header("x-steadfast-operator", name)
                .send()
                .await;
            let response = response.unwrap();
            assert_eq!(response.status().as_u16(), 400, "{name:?}");
        }
        let (status, run) = call(
            &c,
            reqwest::Method::GET,
            format!("{}/api/v1/runs/{}", server.url, held[0]),
            None,
            None,
        )
        .await;
        assert_eq!((status, &run["run"]["state"]), (200, &json!("needs_review")), "unchanged");
    });
    let refused = std::process::Command::new(super::BIN)
        .args(["review", "approve", &held[0], "--data"])
        .arg(dir.path())
        .env("STEADFAST_OPERATOR", "José")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", super::text(&refused));
    assert!(super::text(&refused).contains("printable ASCII"), "{}", super::text(&refused));
    let approved = std::process::Command::new(super::BIN)
        .args(["review", "approve", &held[0], "--data"])
        .arg(dir.path())
        .env("STEADFAST_OPERATOR", "Ada Lovelace")
        .output()
        .unwrap();
    assert!(approved.status.success(), "{}", super::text(&approved));
    let shown =
        super::ops::json_of(&super::steadfast(dir.path(), &["runs", "show", &held[0], "--json"]));
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["actor"], "operator:Ada Lovelace");
}
