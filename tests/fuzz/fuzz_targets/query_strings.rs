//! Query strings of the endpoints that take one: the first byte picks the endpoint, the rest
//! is the query, as a client could send it.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request, Uri, header};
use libfuzzer_sys::fuzz_target;
use swarm_fuzz::{Api, Auth, check_answer};

thread_local! {
    static API: Api = Api::new(Auth::Loopback);
}

/// The endpoints that read a query string, and the body a post among them carries.
const ENDPOINTS: &[(Method, &str, &str)] = &[
    (Method::GET, "/v1/executions/similar", ""),
    (
        Method::POST,
        "/v1/executions/similar",
        r#"{"text": "order placed"}"#,
    ),
    (Method::GET, "/v1/audit", ""),
    (Method::GET, "/v1/live", ""),
    (
        Method::POST,
        "/v1/signals",
        r#"{"kind": "fuzz.query", "payload": {}}"#,
    ),
    (Method::GET, "/v1/topology", ""),
    (Method::GET, "/v1/units", ""),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, query)) = data.split_first() else {
        return;
    };
    let (method, path, body) = &ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let mut target = path.as_bytes().to_vec();
    target.push(b'?');
    target.extend_from_slice(query);
    // What no HTTP parser would hand on never reaches the application.
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(*body))
        .expect("a request");
    let (status, body) = API.with(|api| api.answer(request));
    check_answer(status, &body);
});
