//! Whole requests to the application with API tokens configured: a request line
//! (`METHOD /target`), header lines (`Name: value`), a blank line and the body. Methods,
//! paths, path parameters, headers (tokens, content types, origins, hosts) and bodies all
//! come from the input.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;
use swarm_fuzz::{Api, Auth, check_answer};

thread_local! {
    static API: Api = Api::new(Auth::Tokens);
}

/// The request in `data`, or `None` for what an HTTP parser would refuse.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let uri = Uri::try_from(&first[space + 1..]).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let value = line[colon + 1..].trim_ascii_start();
        builder = builder.header(&line[..colon], value);
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    let (status, body) = API.with(|api| api.answer(request));
    check_answer(status, &body);
});
