//! What a capsule's store holds: its identity (for audit), its cancellation token, its
//! resource table with the handle quota, and its memory limits. Handles live in the
//! store's own table, so they can never cross capsule stores.

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};

use crate::wait::CancelToken;

/// Per-capsule limits (the hosted Astrid kernel's defaults where it has one).
#[derive(Clone, Debug)]
pub struct CapsuleLimits {
    /// Linear memory per capsule.
    pub memory_bytes: usize,
    /// Live resource handles (pollables, streams, errors) per capsule.
    pub handles: usize,
    /// Most pollables one `poll` may take (never above the contract's 256).
    pub poll_list: usize,
    /// Bytes of keys and values the capsule's kv store may hold.
    pub kv_bytes: usize,
}

impl Default for CapsuleLimits {
    fn default() -> Self {
        CapsuleLimits { memory_bytes: 64 << 20, handles: 1024, poll_list: MAX_POLL_LIST, kv_bytes: crate::kv::DEFAULT_QUOTA }
    }
}

/// The contract's hard cap on one `poll` call.
pub const MAX_POLL_LIST: usize = 256;

pub struct CapsuleState {
    pub capsule: String,
    pub principal: String,
    pub cancel: CancelToken,
    pub table: ResourceTable,
    pub limits: CapsuleLimits,
    /// `astrid:sys` `get-config` answers from here.
    pub config: std::collections::BTreeMap<String, String>,
    /// Capabilities the capsule holds (from its manifest; none without one).
    pub capabilities: Vec<String>,
    /// Whether the capsule called `signal-ready`.
    pub ready_signalled: bool,
    /// The capsule's `astrid:kv` store.
    pub kv: crate::kv::KvStore,
    /// Where its changes are persisted (`ASTRID_KV_DIR`), if anywhere.
    pub kv_journal: Option<crate::kv::journal::Journal>,
    /// The image's message bus, shared by every capsule.
    pub bus: std::sync::Arc<crate::ipc::bus::Bus>,
    /// Live `astrid:ipc` subscriptions (at most 128).
    pub ipc_subscriptions: usize,
    /// Topic patterns the capsule may publish to / subscribe within (`None`: all).
    pub ipc_publish: Option<Vec<String>>,
    pub ipc_subscribe: Option<Vec<String>>,
    /// The image's network (its loopback, and the NIC when there is one).
    pub network: std::sync::Arc<crate::net::Network>,
    /// What the capsule may do on the network.
    pub net_policy: crate::net::NetPolicy,
    /// Live sockets, against the per-capsule caps.
    pub net_counts: crate::net::NetCounts,
    /// Host calls the capsule made (what tells an empty SDK stub `run` apart).
    pub host_calls: std::cell::Cell<u64>,
    live_handles: usize,
    store_limits: StoreLimits,
}

/// A clean trap: the capsule asked for more than its quota allows.
#[derive(Debug)]
pub struct QuotaExceeded {
    pub what: &'static str,
    pub limit: usize,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} quota exceeded (limit {})", self.what, self.limit)
    }
}

impl std::error::Error for QuotaExceeded {}

impl CapsuleState {
    pub fn new(capsule: &str, principal: &str, cancel: CancelToken, limits: CapsuleLimits) -> Self {
        let store_limits = wasmtime::StoreLimitsBuilder::new().trap_on_grow_failure(true).build();
        CapsuleState {
            capsule: capsule.to_owned(),
            principal: principal.to_owned(),
            cancel,
            table: ResourceTable::new(),
            kv: crate::kv::KvStore::new(limits.kv_bytes),
            kv_journal: None,
            bus: Default::default(),
            ipc_subscriptions: 0,
            ipc_publish: None,
            ipc_subscribe: None,
            network: Default::default(),
            net_policy: Default::default(),
            net_counts: Default::default(),
            limits,
            config: Default::default(),
            capabilities: Vec::new(),
            ready_signalled: false,
            host_calls: std::cell::Cell::new(0),
            live_handles: 0,
            store_limits,
        }
    }

    /// Adds a handle to the table, within the capsule's quota.
    pub fn push<T: Send + 'static>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        self.reserve_handle()?;
        Ok(self.table.push(value)?)
    }

    /// Adds a handle that depends on `parent` (a stream's pollable): the parent cannot be
    /// dropped while it lives.
    pub fn push_child<T: Send + 'static, P: 'static>(
        &mut self,
        value: T,
        parent: &Resource<P>,
    ) -> wasmtime::Result<Resource<T>> {
        self.reserve_handle()?;
        Ok(self.table.push_child(value, parent)?)
    }

    /// Removes a handle; dropping a parent whose children live is a trap.
    pub fn delete<T: 'static>(&mut self, handle: Resource<T>) -> wasmtime::Result<T> {
        let value = self.table.delete(handle)?;
        self.live_handles -= 1;
        Ok(value)
    }

    pub fn live_handles(&self) -> usize {
        self.live_handles
    }

    fn reserve_handle(&mut self) -> wasmtime::Result<()> {
        if self.live_handles >= self.limits.handles {
            return Err(QuotaExceeded { what: "resource handle", limit: self.limits.handles }.into());
        }
        self.live_handles += 1;
        Ok(())
    }
}

/// A clean trap: a memory grew past the capsule's cap.
#[derive(Debug)]
pub struct MemoryCapReached {
    pub desired: usize,
    pub cap: usize,
}

impl std::fmt::Display for MemoryCapReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit reached: the capsule asked for {} bytes, its cap is {} bytes (ASTRID_MEMORY_MIB)",
            self.desired, self.cap
        )
    }
}

impl std::error::Error for MemoryCapReached {}

impl ResourceLimiter for CapsuleState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // A trap rather than `memory.grow` returning -1: a capsule that outgrows its cap
        // is stopped with a clear reason instead of limping on.
        if desired > self.limits.memory_bytes {
            return Err(MemoryCapReached { desired, cap: self.limits.memory_bytes }.into());
        }
        Ok(true)
    }
    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.store_limits.table_growing(current, desired, maximum)
    }
}
