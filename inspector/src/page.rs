//! The inspector page and its assets, compiled into the binary.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;

/// (path under /assets/, content type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
    (
        "cytoscape.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor/cytoscape.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/vendor/uPlot.min.css"),
    ),
];

const INDEX: &str = include_str!("../web/index.html");

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = bytes.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { axum::response::Html(INDEX) }))
        .route(
            "/assets/{file}",
            get(
                |axum::extract::Path(file): axum::extract::Path<String>| async move {
                    ASSETS
                        .iter()
                        .find(|(name, _, _)| *name == file)
                        .map(|(_, content_type, bytes)| asset(content_type, bytes))
                        .ok_or_else(|| {
                            ApiError::not_found("not_found", format!("no asset `{file}`"))
                        })
                },
            ),
        )
}
