//! The body of `POST /v1/signals`, checked and published by the inspector's application.
#![no_main]

use axum::body::Body;
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use swarm_fuzz::{Api, Auth, check_answer};

thread_local! {
    static API: Api = Api::new(Auth::Loopback);
}

fuzz_target!(|data: &[u8]| {
    let request = Request::post("/v1/signals")
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(data.to_vec()))
        .expect("a request");
    let (status, body) = API.with(|api| api.answer(request));
    check_answer(status, &body);
});
