//! The harness drives a unit's lifecycle in the host's order: on_load when made, on_disable and
//! on_enable, a swap to another version (snapshot, restore, on_load, on_upgrade) and on_unload
//! when dropped; a refused hook returns the old version, which keeps its state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use swarm_sdk::{Emit, Harness, HarnessError, Manifest, Signal, Unit, UnitError, Version};

/// What every instance of the test units did, in order (tests in this file run one at a time
/// through `LOCK`).
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOCK: Mutex<()> = Mutex::new(());

fn event(text: String) {
    EVENTS.lock().unwrap_or_else(|p| p.into_inner()).push(text);
}

fn events() -> Vec<String> {
    std::mem::take(&mut *EVENTS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A counter; `V` is its major version, `REFUSE` the hook it refuses.
struct Counter<const V: u64, const STATE: bool> {
    count: AtomicU64,
    refuse: Option<String>,
}

impl<const V: u64, const STATE: bool> Counter<V, STATE> {
    fn hook(&self, name: &str) -> Result<(), UnitError> {
        event(format!("v{V} {name}"));
        if self.refuse.as_deref() == Some(name) {
            return Err(UnitError::new(format!("v{V} refuses {name}")));
        }
        Ok(())
    }
}

impl<const V: u64, const STATE: bool> Unit for Counter<V, STATE> {
    fn manifest() -> Manifest {
        let manifest = Manifest::new("counter", &format!("{V}.0.0"))
            .subscribes(["count"])
            .emits(["counted"]);
        if STATE {
            manifest.carries_state()
        } else {
            manifest
        }
    }
    fn new(config: &Value) -> Result<Self, UnitError> {
        Ok(Self {
            count: AtomicU64::new(0),
            refuse: config["refuse"].as_str().map(str::to_owned),
        })
    }
    fn handle(&self, _: &Signal) -> Result<Vec<Emit>, UnitError> {
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        Ok(vec![Emit::new(
            "counted",
            json!({ "count": count, "v": V }),
        )])
    }
    fn on_load(&self) -> Result<(), UnitError> {
        self.hook("on_load")
    }
    fn on_upgrade(&self, from: &Version) -> Result<(), UnitError> {
        self.hook(&format!("on_upgrade from {from}"))?;
        self.hook("on_upgrade")
    }
    fn on_enable(&self) -> Result<(), UnitError> {
        self.hook("on_enable")
    }
    fn on_disable(&self) -> Result<(), UnitError> {
        self.hook("on_disable")
    }
    fn on_unload(&self) -> Result<(), UnitError> {
        self.hook("on_unload")
    }
    fn snapshot(&self) -> Result<Vec<u8>, UnitError> {
        self.hook("snapshot")?;
        Ok(self.count.load(Ordering::Acquire).to_le_bytes().to_vec())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), UnitError> {
        self.hook("restore")?;
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| UnitError::new("state is not a u64"))?;
        self.count = AtomicU64::new(u64::from_le_bytes(bytes));
        Ok(())
    }
}

fn count<T: Unit>(unit: &Harness<T>) -> u64 {
    let emits = unit.send("count", json!({})).expect("counts");
    emits[0].payload["count"].as_u64().expect("a count")
}

#[test]
fn hooks_run_in_the_hosts_order_and_state_crosses_the_upgrade() {
    let _one = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    events();
    let v1 = Harness::<Counter<1, true>>::new(json!({})).expect("loads");
    assert_eq!(count(&v1), 1);
    assert_eq!(count(&v1), 2);
    v1.disable().expect("disable");
    v1.enable().expect("enable");
    let v2 = v1.upgrade::<Counter<2, true>>(json!({})).expect("upgrades");
    assert_eq!(count(&v2), 3, "the count came across");
    drop(v2);
    assert_eq!(
        events(),
        [
            "v1 on_load",
            "v1 on_disable",
            "v1 on_enable",
            "v1 snapshot",
            "v2 restore",
            "v2 on_load",
            "v2 on_upgrade from 1.0.0",
            "v2 on_upgrade",
            "v1 on_unload",
            "v2 on_unload",
        ]
    );
}

#[test]
fn without_carries_state_nothing_is_snapshot_or_restored() {
    let _one = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    events();
    let v1 = Harness::<Counter<1, false>>::new(json!({})).expect("loads");
    assert_eq!(count(&v1), 1);
    let v2 = v1.upgrade::<Counter<2, true>>(json!({})).expect("upgrades");
    assert_eq!(count(&v2), 1, "a fresh count");
    drop(v2);
    let events = events();
    assert!(
        !events
            .iter()
            .any(|e| e.ends_with("snapshot") || e.ends_with("restore")),
        "{events:?}"
    );
}

#[test]
fn a_refused_upgrade_returns_the_old_version_with_its_state() {
    let _one = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    events();
    let v1 = Harness::<Counter<1, true>>::new(json!({})).expect("loads");
    assert_eq!(count(&v1), 1);
    let refused = v1
        .upgrade::<Counter<2, true>>(json!({"refuse": "on_upgrade"}))
        .expect_err("refused");
    assert_eq!(
        refused.error,
        HarnessError::Error("v2 refuses on_upgrade".into())
    );
    let v1 = refused.old;
    assert_eq!(count(&v1), 2, "version 1 serves on, with its count");
    let events = events();
    assert!(
        events.contains(&"v2 on_unload".to_owned()),
        "the refused instance had loaded, so it unloads: {events:?}"
    );

    let refused = v1
        .upgrade::<Counter<2, true>>(json!({"refuse": "on_load"}))
        .expect_err("refused");
    assert_eq!(
        refused.error,
        HarnessError::Error("v2 refuses on_load".into())
    );
    assert!(
        !self::events().contains(&"v2 on_unload".to_owned()),
        "an instance whose on_load failed gets no on_unload"
    );
    let v1 = refused.old;
    assert_eq!(count(&v1), 3);
    assert!(Harness::<Counter<1, true>>::new(json!({"refuse": "on_load"})).is_err());
    assert!(matches!(
        Harness::<Counter<1, true>>::new(json!({"refuse": "on_enable"}))
            .expect("loads")
            .enable(),
        Err(HarnessError::Error(_))
    ));
}
