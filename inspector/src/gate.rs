//! Admission by client address: a bound in all and one per address, each admission held by a
//! guard that gives its place back when dropped. Connections, reply waiters and live watchers
//! each have one.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use dashmap::DashMap;

use crate::error::ApiError;

/// Which bound refused an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// This client address holds its share.
    Client,
    /// Every place is taken.
    All,
}

impl Full {
    /// The metric label of the bound.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::All => "all",
        }
    }

    /// The answer to a refused request for `what` ("reply waiters", ...): 429 when the client
    /// holds its share, 503 when the server is full.
    pub(crate) fn error(self, what: &str) -> ApiError {
        match self {
            Self::Client => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_from_client",
                format!("this address already holds as many {what} as one client may"),
            ),
            Self::All => ApiError::unavailable(
                "server_full",
                format!("the server holds as many {what} as it takes; try again later"),
            ),
        }
        .retry_after(1)
    }
}

#[derive(Debug)]
struct Places {
    total: usize,
    per_client: usize,
    held: AtomicUsize,
    by_client: DashMap<IpAddr, usize>,
}

/// Places bounded in all and per client address.
#[derive(Debug, Clone)]
pub(crate) struct Gate(Arc<Places>);

/// One admitted place, given back on drop.
#[derive(Debug)]
pub(crate) struct Admitted {
    places: Arc<Places>,
    client: IpAddr,
}

impl Gate {
    /// At most `total` places, and `per_client` for one address.
    pub(crate) fn new(total: usize, per_client: usize) -> Self {
        Self(Arc::new(Places {
            total,
            per_client,
            held: AtomicUsize::new(0),
            by_client: DashMap::new(),
        }))
    }

    /// A place for `client`, or which bound refused it.
    pub(crate) fn admit(&self, client: IpAddr) -> Result<Admitted, Full> {
        let places = &self.0;
        let refused = {
            let mut mine = places.by_client.entry(client).or_insert(0);
            if *mine >= places.per_client {
                Full::Client
            } else if places
                .held
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                    (held < places.total).then_some(held + 1)
                })
                .is_ok()
            {
                *mine += 1;
                return Ok(Admitted {
                    places: Arc::clone(places),
                    client,
                });
            } else {
                Full::All
            }
        };
        places.by_client.remove_if(&client, |_, n| *n == 0);
        Err(refused)
    }

    /// Places held now.
    pub(crate) fn held(&self) -> usize {
        self.0.held.load(Ordering::Acquire)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.places.held.fetch_sub(1, Ordering::AcqRel);
        // An address holding nothing is forgotten, so the map stays as small as its clients.
        self.places.by_client.remove_if_mut(&self.client, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_client_and_in_all_and_given_back() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let a1 = gate.admit(a).expect("a's first");
        let _a2 = gate.admit(a).expect("a's second");
        assert_eq!(gate.admit(a).err(), Some(Full::Client));
        let _b1 = gate.admit(b).expect("b's first");
        assert_eq!(gate.admit(c).err(), Some(Full::All));
        assert_eq!(gate.held(), 3);
        drop(a1);
        assert_eq!(gate.held(), 2);
        let c1 = gate.admit(c).expect("c once a gave one back");
        drop((c1, _a2, _b1));
        assert_eq!(gate.held(), 0);
        // Addresses holding nothing are forgotten.
        assert!(gate.0.by_client.is_empty());
    }

    #[test]
    fn a_refused_address_leaves_nothing_behind() {
        let gate = Gate::new(1, 1);
        let _a = gate.admit([10, 0, 0, 1].into()).expect("the one place");
        assert_eq!(gate.admit([10, 0, 0, 2].into()).err(), Some(Full::All));
        assert_eq!(gate.0.by_client.len(), 1);
        drop(_a);
        assert!(gate.0.by_client.is_empty());
    }
}
