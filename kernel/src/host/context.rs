//! What a capsule's store holds: a small core every package uses (identity, handle
//! table with its quota, cancellation, limits, audit handle) and one context per
//! package, each built once by `CapsuleState::new` and handed to that package's host
//! file only, as a borrowed view. Handles live in the store's own table, so they can
//! never cross capsule stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::ResourceLimiter;

use crate::audit::{AuditHandle, Lane};
use crate::ipc::bus::Bus;
use crate::kv::Kv;
use crate::quota::Account;
use crate::net::{NetCounts, NetPolicy, Network};
use crate::wait::CancelToken;

/// Per-capsule limits (the hosted Astrid kernel's defaults where it has one).
#[derive(Clone, Debug)]
pub struct CapsuleLimits {
    /// Linear memory per capsule.
    pub memory_bytes: usize,
    /// Live resource handles (pollables, streams, errors, sockets) per capsule.
    pub handles: usize,
    /// Bytes of keys and values the capsule's kv store may hold.
    pub kv_bytes: usize,
    /// Bytes its ipc subscriptions may hold queued together.
    pub ipc_queue_bytes: usize,
    /// Bytes of frames its TCP streams may assemble at once.
    pub frame_bytes: usize,
}

/// The settings' defaults (`ASTRID_MEMORY_MIB`, `ASTRID_HANDLE_QUOTA`,
/// `ASTRID_KV_QUOTA_BYTES`): one source for both.
impl Default for CapsuleLimits {
    fn default() -> Self {
        use crate::settings::{DEFAULT_HANDLE_QUOTA, DEFAULT_KV_QUOTA_BYTES, DEFAULT_MEMORY_MIB};
        CapsuleLimits {
            memory_bytes: (DEFAULT_MEMORY_MIB << 20) as usize,
            handles: DEFAULT_HANDLE_QUOTA as usize,
            kv_bytes: DEFAULT_KV_QUOTA_BYTES as usize,
            ipc_queue_bytes: crate::ipc::CAPSULE_QUEUE_BYTES,
            frame_bytes: crate::net::FRAME_BYTES,
        }
    }
}

/// What the body of a call noted for its record.
#[derive(Default, Clone, Debug)]
pub struct Note {
    pub bytes: Option<u64>,
    pub pollable_count: Option<u32>,
    pub ready_count: Option<u32>,
    /// The call's wait was ended by the capsule's cancellation.
    pub cancelled: bool,
    /// The image does not serve what was asked: the typed refusal's reason.
    pub refused: Option<&'static str>,
    /// What went wrong, beyond the error's case (a stream's failure message).
    pub detail: Option<String>,
}

/// Who a capsule is, in every record it causes.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The capsule's id (its manifest name, else its file stem).
    pub capsule: Arc<str>,
    /// The principal it acts for.
    pub principal: Arc<str>,
}

/// What every package's host file may use.
pub struct Core {
    pub identity: Identity,
    pub cancel: CancelToken,
    /// The capsule's lane into the audit log (its records in its own order, most without
    /// the queue's lock).
    pub(super) audit: Option<Lane>,
    pub(super) note: Note,
    pub(super) calls: u64,
    table: ResourceTable,
    live_handles: usize,
    handle_quota: usize,
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

impl Core {
    /// Host calls the capsule has made (what tells an empty SDK stub `run` apart).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Notes what the current call moved, for its record.
    pub fn moved(&mut self, bytes: u64) {
        self.note.bytes = Some(bytes);
    }

    /// Notes that the current call's wait was ended by the capsule's cancellation.
    pub fn cancelled(&mut self) {
        self.note.cancelled = true;
    }

    /// Notes that the image refuses the current call, and why.
    pub fn refused(&mut self, why: &'static str) {
        self.note.refused = Some(why);
    }

    /// Notes what went wrong beyond the error's case; kept escaped in the record.
    pub fn detail(&mut self, text: String) {
        self.note.detail = Some(text);
    }

    /// Notes the pollables of a `poll` and how many were ready.
    pub fn polled(&mut self, pollables: u32, ready: Option<u32>) {
        self.note.pollable_count = Some(pollables);
        self.note.ready_count = ready;
    }

    pub fn get<T: 'static>(&self, handle: &Resource<T>) -> wasmtime::Result<&T> {
        Ok(self.table.get(handle)?)
    }

    pub fn get_mut<T: 'static>(&mut self, handle: &Resource<T>) -> wasmtime::Result<&mut T> {
        Ok(self.table.get_mut(handle)?)
    }

    /// Adds a handle to the table, within the capsule's quota.
    pub fn push<T: Send + 'static>(&mut self, value: T) -> wasmtime::Result<Resource<T>> {
        self.reserve_handle()?;
        Ok(self.table.push(value)?)
    }

    /// Adds a handle that depends on `parent` (a stream's pollable): the parent cannot be
    /// dropped while it lives.
    pub fn push_child<T: Send + 'static, P: 'static>(&mut self, value: T, parent: &Resource<P>) -> wasmtime::Result<Resource<T>> {
        self.reserve_handle()?;
        Ok(self.table.push_child(value, parent)?)
    }

    /// Removes a handle; dropping a parent whose children live is a trap.
    pub fn delete<T: 'static>(&mut self, handle: Resource<T>) -> wasmtime::Result<T> {
        let value = self.table.delete(handle)?;
        self.live_handles -= 1;
        Ok(value)
    }

    fn reserve_handle(&mut self) -> wasmtime::Result<()> {
        if self.live_handles >= self.handle_quota {
            return Err(QuotaExceeded { what: "resource handle", limit: self.handle_quota }.into());
        }
        self.live_handles += 1;
        Ok(())
    }
}

/// `astrid:sys`: what `get-config` and the capability queries answer.
pub struct SysCtx {
    pub config: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
}

/// `astrid:ipc`: the image's bus and what this capsule may do on it.
pub struct IpcCtx {
    pub bus: Arc<Bus>,
    /// Topic patterns the capsule may publish to / subscribe within (`None`: all).
    pub publish: Option<Vec<String>>,
    pub subscribe: Option<Vec<String>>,
    /// Live subscriptions.
    pub subscriptions: usize,
    /// What this capsule's subscriptions hold queued (`CapsuleLimits::ipc_queue_bytes`).
    pub queued: Arc<Account>,
}

/// `astrid:net`: the image's network, what this capsule may do on it, and its sockets.
pub struct NetCtx {
    pub network: Arc<Network>,
    pub policy: NetPolicy,
    pub counts: NetCounts,
}

/// `astrid-unikernel:testing`: the argument test capsules read.
pub struct TestingCtx {
    pub argument: String,
}

/// A package's borrowed view of the state: the core and its own context, nothing else.
pub struct View<'a, P> {
    pub core: &'a mut Core,
    pub pkg: &'a mut P,
}

/// The views of packages without a context of their own (io, the refusals).
pub struct NoContext;

/// What the image shares between its capsules.
#[derive(Clone, Default)]
pub struct Shared {
    pub bus: Arc<Bus>,
    pub network: Arc<Network>,
}

/// How a capsule's state is built: everything decided before it runs.
pub struct Spec<'a> {
    pub identity: Identity,
    pub cancel: CancelToken,
    pub limits: &'a CapsuleLimits,
    pub audit: Option<AuditHandle>,
    pub config: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub ipc_publish: Option<Vec<String>>,
    pub ipc_subscribe: Option<Vec<String>>,
    pub net_policy: NetPolicy,
    /// Where the kv store persists (`ASTRID_KV_DIR`), if anywhere.
    pub kv_dir: Option<&'a std::path::Path>,
    pub test_argument: String,
}

/// The store's data: one capsule's whole host-side state.
pub struct CapsuleState {
    pub core: Core,
    pub io: NoContext,
    pub sys: SysCtx,
    pub kv: Kv,
    pub ipc: IpcCtx,
    pub net: NetCtx,
    pub testing: TestingCtx,
    memory: MemoryBudget,
}

/// Core instances a capsule's store may create (a component from the SDK makes a few).
pub const MAX_INSTANCES: usize = 64;
/// Tables and linear memories a capsule's store may create.
pub const MAX_TABLES: usize = 64;
pub const MAX_MEMORIES: usize = 8;
/// What one table element is charged against the memory cap (a function reference
/// and its bookkeeping in the engine).
pub const TABLE_ELEMENT_BYTES: usize = 16;
/// What a capsule's tables may take of its memory cap at most (262,144 elements): tables
/// live on the image's heap, linear memories outside it, so this bounds the capsule's
/// share of the heap whatever its memory cap.
pub const MAX_TABLE_BYTES: usize = 4 << 20;

/// What a capsule's linear memories and tables take together, against its one memory
/// cap (`ASTRID_MEMORY_MIB`): many memories or a huge table cannot add up past it.
#[derive(Debug)]
struct MemoryBudget {
    cap: usize,
    used: usize,
    /// What its tables take of `used`.
    tables: usize,
}

impl MemoryBudget {
    /// Charges growing by `more` bytes; a clean trap past the cap.
    fn grow(&mut self, more: usize) -> wasmtime::Result<()> {
        let desired = self.used.saturating_add(more);
        if desired > self.cap {
            return Err(MemoryCapReached { desired, cap: self.cap, tables: false }.into());
        }
        self.used = desired;
        Ok(())
    }

    /// Charges a table growing by `more` bytes: against the cap, and its tables together
    /// against `MAX_TABLE_BYTES`.
    fn grow_table(&mut self, more: usize) -> wasmtime::Result<()> {
        let tables = self.tables.saturating_add(more);
        if tables > MAX_TABLE_BYTES {
            return Err(MemoryCapReached { desired: tables, cap: MAX_TABLE_BYTES, tables: true }.into());
        }
        self.grow(more)?;
        self.tables = tables;
        Ok(())
    }
}

impl CapsuleState {
    /// Builds every context once; the kv store is loaded (and its journal opened) here.
    pub fn new(spec: Spec<'_>, shared: &Shared) -> Result<Self, String> {
        let kv = match spec.kv_dir {
            Some(dir) => Kv::persisted(dir, &spec.identity.principal, spec.limits.kv_bytes)
                .map_err(|e| format!("its kv store cannot be loaded: {e}"))?,
            None => Kv::in_memory(spec.limits.kv_bytes),
        };
        let audit = spec.audit.map(|a| a.lane(&spec.identity.capsule, &spec.identity.principal));
        Ok(CapsuleState {
            core: Core {
                identity: spec.identity,
                cancel: spec.cancel,
                audit,
                note: Note::default(),
                calls: 0,
                table: ResourceTable::new(),
                live_handles: 0,
                handle_quota: spec.limits.handles,
            },
            io: NoContext,
            sys: SysCtx { config: spec.config, capabilities: spec.capabilities },
            kv,
            ipc: IpcCtx {
                bus: shared.bus.clone(),
                publish: spec.ipc_publish,
                subscribe: spec.ipc_subscribe,
                subscriptions: 0,
                queued: crate::ipc::queue_account(spec.limits.ipc_queue_bytes),
            },
            net: NetCtx { network: shared.network.clone(), policy: spec.net_policy, counts: NetCounts::new(spec.limits.frame_bytes) },
            testing: TestingCtx { argument: spec.test_argument },
            memory: MemoryBudget { cap: spec.limits.memory_bytes, used: 0, tables: 0 },
        })
    }
}

/// A clean trap: a memory grew past the capsule's cap.
#[derive(Debug)]
pub struct MemoryCapReached {
    pub desired: usize,
    pub cap: usize,
    /// The tables' own bound (`MAX_TABLE_BYTES`) was reached, not the memory cap.
    pub tables: bool,
}

impl std::fmt::Display for MemoryCapReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tables {
            return write!(
                f,
                "memory limit reached: the capsule asked for {} bytes of tables, their bound is {} bytes ({} elements)",
                self.desired,
                self.cap,
                self.cap / TABLE_ELEMENT_BYTES
            );
        }
        write!(
            f,
            "memory limit reached: the capsule asked for {} bytes of memories and tables together, its cap is {} bytes (ASTRID_MEMORY_MIB)",
            self.desired, self.cap
        )
    }
}

impl std::error::Error for MemoryCapReached {}

// A trap rather than `memory.grow` returning -1: a capsule that outgrows its cap is
// stopped with a clear reason instead of limping on. Growth past a memory's or table's
// own maximum fails as the WebAssembly spec says and is not charged.
impl ResourceLimiter for CapsuleState {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.memory.grow(desired.saturating_sub(current))?;
        Ok(true)
    }
    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.memory.grow_table(desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES))?;
        Ok(true)
    }
    fn instances(&self) -> usize {
        MAX_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_TABLES
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        const MIB: usize = 1 << 20;
        // (cap, growths in order, which succeed)
        let cases: &[(usize, &[usize], &[bool])] = &[
            (4 * MIB, &[2 * MIB, 2 * MIB, 1], &[true, true, false]),
            (4 * MIB, &[5 * MIB], &[false]),
            (4 * MIB, &[usize::MAX], &[false]),
            (4 * MIB, &[MIB, usize::MAX, MIB], &[true, false, true]),
        ];
        for (cap, growths, want) in cases {
            let mut budget = MemoryBudget { cap: *cap, used: 0, tables: 0 };
            for (more, ok) in growths.iter().zip(want.iter()) {
                let before = budget.used;
                let got = budget.grow(*more);
                assert_eq!(got.is_ok(), *ok, "cap {cap}: growing by {more}");
                if let Err(e) = got {
                    assert!(e.to_string().starts_with("memory limit reached"), "{e}");
                    assert_eq!(budget.used, before, "a refused growth is not charged");
                }
            }
            assert!(budget.used <= *cap);
        }
        // Tables stop at their own bound, far below a large cap; memories go on.
        let mut budget = MemoryBudget { cap: 64 * MIB, used: 0, tables: 0 };
        budget.grow_table(MAX_TABLE_BYTES).unwrap();
        assert!(budget.grow_table(TABLE_ELEMENT_BYTES).unwrap_err().to_string().starts_with("memory limit reached"));
        assert_eq!((budget.used, budget.tables), (MAX_TABLE_BYTES, MAX_TABLE_BYTES));
        budget.grow(32 * MIB).unwrap();
    }
}
