//! A [`Loaded`] unit instance: its lifecycle hooks, state snapshots and calls, in process or
//! through its worker.

#![allow(unsafe_code)]

use std::path::Path;

use swarm_abi::{Buf, EVENT_LOAD, EVENT_UNLOAD, EVENT_UPGRADE, Event, UnitVTable};
use swarm_schemas::UnitManifest;

use super::{CallResult, Code, Loaded, Refusal, answer, refusal, take};
use crate::isolate::{Worker, wire};

impl Loaded {
    /// The unit's checked manifest.
    pub(crate) fn manifest(&self) -> &UnitManifest {
        &self.opened.manifest
    }

    /// SHA-256 digest of the file this was loaded from.
    pub(crate) fn hash(&self) -> [u8; 32] {
        self.opened.hash
    }

    /// The unit file this was loaded from.
    pub(crate) fn source(&self) -> &Path {
        &self.opened.source
    }

    /// The unit's worker, if it is isolated.
    pub(crate) fn worker(&self) -> Option<&Worker> {
        match &self.opened.code {
            Code::Worker(worker) => Some(worker),
            Code::Native { .. } => None,
        }
    }

    /// The native table, or the worker that answers for the unit.
    fn code(&self) -> Result<&UnitVTable, &Worker> {
        match &self.opened.code {
            Code::Native { vtable, .. } => Ok(vtable),
            Code::Worker(worker) => Err(worker),
        }
    }

    /// Sends a lifecycle event; a unit built before lifecycle events accepts every one.
    pub(crate) fn event(&self, event: Event, arg: &[u8]) -> Result<(), Refusal> {
        let vtable = match self.code() {
            Ok(vtable) => vtable,
            Err(worker) => return refusal(worker.request(wire::EVENT, event, arg)).map(drop),
        };
        let Some(lifecycle) = vtable.lifecycle else {
            return Ok(());
        };
        let mut out = Buf::EMPTY;
        // SAFETY: the instance is alive while `self` is; the argument and out-parameter are
        // valid for the call; the unit catches its own panics.
        let status = unsafe { lifecycle(self.instance, event, arg.as_ptr(), arg.len(), &mut out) };
        answer(vtable, status, out).map(drop)
    }

    /// Runs `on_load`: from now on the instance gets `on_unload` before it is destroyed.
    pub(crate) fn on_load(&mut self) -> Result<(), Refusal> {
        self.event(EVENT_LOAD, b"")?;
        self.hooked = true;
        Ok(())
    }

    /// Runs `on_upgrade` from the version it replaces.
    pub(crate) fn on_upgrade(&self, from: &semver::Version) -> Result<(), Refusal> {
        self.event(EVENT_UPGRADE, from.to_string().as_bytes())
    }

    /// Runs `on_enable` or `on_disable`.
    pub(crate) fn on_enabled(&self, enabled: bool) -> Result<(), Refusal> {
        self.event(
            if enabled {
                swarm_abi::EVENT_ENABLE
            } else {
                swarm_abi::EVENT_DISABLE
            },
            b"",
        )
    }

    /// The state to hand to the next version. The caller makes sure no call is running.
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>, Refusal> {
        let vtable = match self.code() {
            Ok(vtable) => vtable,
            Err(worker) => return refusal(worker.request(wire::SNAPSHOT, 0, &[])),
        };
        let Some(snapshot) = vtable.snapshot else {
            return Ok(Vec::new());
        };
        let mut out = Buf::EMPTY;
        // SAFETY: the instance is alive while `self` is; the out-parameter is valid.
        let status = unsafe { snapshot(self.instance, &mut out) };
        answer(vtable, status, out)
    }

    /// Hands the previous version's state to this instance, which nothing else can call yet
    /// (`&mut self`: it is not shared).
    pub(crate) fn restore(&mut self, state: &[u8]) -> Result<(), Refusal> {
        let vtable = match self.code() {
            Ok(vtable) => vtable,
            Err(worker) => return refusal(worker.request(wire::RESTORE, 0, state)).map(drop),
        };
        let Some(restore) = vtable.restore else {
            return Ok(());
        };
        let mut out = Buf::EMPTY;
        // SAFETY: the instance is alive and not shared; the state buffer and out-parameter
        // are valid for the call.
        let status = unsafe { restore(self.instance, state.as_ptr(), state.len(), &mut out) };
        answer(vtable, status, out).map(drop)
    }

    /// Hands a JSON signal to the unit. Blocking: call it off the async worker threads.
    pub(crate) fn call(&self, signal: &[u8]) -> CallResult {
        let vtable = match self.code() {
            Ok(vtable) => vtable,
            Err(worker) => return worker.request(wire::CALL, 0, signal),
        };
        let mut out = Buf::EMPTY;
        // SAFETY: the instance is alive while `self` is; the unit catches its own panics.
        let status =
            unsafe { (vtable.handle)(self.instance, signal.as_ptr(), signal.len(), &mut out) };
        CallResult {
            status,
            bytes: take(vtable, out),
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let vtable = match self.code() {
            Ok(vtable) => *vtable,
            // The worker unloads and destroys its instance when it is shut down (the
            // `Worker`'s drop).
            Err(_) => return,
        };
        if self.hooked {
            if let Err(refusal) = self.event(EVENT_UNLOAD, b"") {
                tracing::warn!(unit = %self.opened.manifest.name, what = refusal.what,
                    error = %refusal.message, "on_unload failed");
            }
        }
        // SAFETY: the instance came from this vtable's `create`; no call is running (calls hold
        // an `Arc` of the generation that owns `self`), and it is destroyed once. The library
        // is closed after this, when `opened` drops.
        unsafe { (vtable.destroy)(self.instance) };
    }
}
