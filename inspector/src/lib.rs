//! The inspector: the HTTP API, the live websocket and the web page over a running swarm.
//!
//! Not built yet: this crate holds the place the design card gives it. It will depend on
//! `swarm-mesh`, `swarm-memory` and `swarm-schemas`, never on the reactor.
