//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`: generated (by aide)
//! from the routes as they are declared, with their handlers' extractors and answers, so it
//! cannot describe a call the server does not make or miss one it does.

use std::cell::RefCell;
use std::rc::Rc;

use aide::axum::ApiRouter;
use aide::openapi::{Info, OpenApi, ReferenceOr, SecurityScheme};
use axum::Router;
use axum::body::Bytes;
use axum::response::IntoResponse;

/// The name of the token's security scheme in the document.
const TOKEN_SCHEME: &str = "token";

/// The router `build` declares, and its document as JSON.
///
/// # Panics
/// In debug builds, when aide reports an error in the declarations (a response declared
/// twice, a schema it cannot turn into parameters): a mistake in this crate, caught by its
/// tests.
pub(super) fn document<S: Clone + Send + Sync + 'static>(
    build: impl FnOnce() -> ApiRouter<S>,
) -> (Router<S>, Bytes) {
    let errors = Rc::new(RefCell::new(Vec::new()));
    let seen = errors.clone();
    aide::generate::on_error(move |error| seen.borrow_mut().push(error.to_string()));
    aide::generate::extract_schemas(true);
    aide::generate::infer_responses(true);
    aide::generate::all_error_responses(false);
    let mut api = OpenApi {
        info: Info {
            title: "steadfast".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: Some(DESCRIPTION.into()),
            ..Info::default()
        },
        ..OpenApi::default()
    };
    let router = build().finish_api_with(&mut api, |api| {
        api.security_scheme(
            TOKEN_SCHEME,
            SecurityScheme::Http {
                scheme: "bearer".into(),
                bearer_format: None,
                description: Some(
                    "The server's token (`STEADFAST_TOKEN`), required on every `/api/v1` call when the server has one.".into(),
                ),
                extensions: Default::default(),
            },
        )
    });
    // The token guards the API and (unless the server makes them public) the probes;
    // `/healthz` and this document stay open.
    for (path, item) in api.paths.iter_mut().flat_map(|p| p.paths.iter_mut()) {
        let ReferenceOr::Item(item) = item else { continue };
        if !path.starts_with("/api/v1/") && !["/readyz", "/metrics", "/alarms"].contains(&&**path) {
            continue;
        }
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete];
        for operation in operations.into_iter().flatten() {
            operation.security.push([(TOKEN_SCHEME.to_owned(), Vec::new())].into_iter().collect());
        }
    }
    aide::generate::on_error(|_| {});
    let errors = errors.take();
    debug_assert!(errors.is_empty(), "the OpenAPI declarations have errors: {errors:#?}");
    for error in errors {
        tracing::warn!(%error, "the OpenAPI document may be incomplete");
    }
    let mut value = serde_json::to_value(&api).expect("an OpenAPI document is plain data");
    tuples_as_prefix_items(&mut value);
    let json = serde_json::to_vec(&value).expect("an OpenAPI document is plain data");
    (router, Bytes::from(json))
}

/// OpenAPI 3.1's schemas are JSON Schema 2020-12, where a tuple is `prefixItems` (with
/// `items: false`); the generator writes the draft-07 form (`items: [..]`), which validators
/// and client generators refuse. Rewrites every such schema in place.
fn tuples_as_prefix_items(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(items)) = map.get("items") {
                let items = serde_json::Value::Array(items.clone());
                map.insert("prefixItems".into(), items);
                map.insert("items".into(), serde_json::Value::Bool(false));
                map.remove("additionalItems");
            }
            map.values_mut().for_each(tuples_as_prefix_items);
        }
        serde_json::Value::Array(values) => values.iter_mut().for_each(tuples_as_prefix_items),
        _ => {}
    }
}

/// `GET /api/v1/openapi.json`.
pub(super) async fn serve(document: Bytes) -> axum::response::Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document).into_response()
}

const DESCRIPTION: &str = "\
Operate a running steadfast system: see runs, replay, cancel, signal and note them; approve, \
reject and resolve what waits for review; replay dead letters; pause and resume agents.

Every error is `{\"error\", \"code\"}`, the code being the CLI's exit code for the same (1 \
refused, 2 a malformed call, 3 the store unavailable). A call refused in a run's state is 409, \
its message naming the state and what is allowed. The operator a call acts for is the \
`X-Steadfast-Operator` header (default `api`), recorded in the run's history.

A call that changes something (any method but GET) must be sent as `Content-Type: \
application/json` (an empty body is taken as none), and an \
`Origin` it carries must be this server's: otherwise it is refused with 403 and nothing is done \
(a page of another site in the operator's browser cannot send such a call). Every request's \
`Host` must be an IP address, `localhost`, or a name the server was given (`--allow-host`): \
otherwise 421, against DNS rebinding.";

#[cfg(test)]
mod tests {
    #[test]
    fn tuples_become_prefix_items() {
        let mut schema = serde_json::json!({
            "properties": {"edges": {"type": "array", "items": {
                "type": "array",
                "items": [{"type": "string"}, {"type": "string"}],
                "minItems": 2, "maxItems": 2,
            }}}
        });
        super::tuples_as_prefix_items(&mut schema);
        let tuple = &schema["properties"]["edges"]["items"];
        assert_eq!(
            tuple["prefixItems"],
            serde_json::json!([{"type": "string"}, {"type": "string"}])
        );
        assert_eq!(tuple["items"], false);
        assert_eq!(schema["properties"]["edges"]["items"]["minItems"], 2);
    }
}
