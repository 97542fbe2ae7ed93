//! The SDK packages this image does not serve, each answering with its interface's
//! own typed refusal (never a trap, never a missing import), audited as `refused`:
//! - fs, http, process, uplink and identity: `capability-denied` (the image has no
//!   file system for capsules, no HTTP client, no processes, no uplinks or identities);
//! - approval: the decision `denied` (there is no human in the image to approve);
//! - elicit: `not-in-lifecycle` (the image runs no install or upgrade lifecycle).
//!
//! The only functions that cannot return an error are methods of resources (an fs
//! file handle, an http stream or upload, a process handle): the image never hands
//! one out, so a capsule cannot call them — a forged handle traps as any bad handle
//! does.

use std::time::Instant;

use crate::engine::state::CapsuleState;
use crate::io::astrid::{approval, elicit, fs, http1_1_0 as http, identity, process1_1_0 as process, uplink};
use crate::io::{Counts, audit};

/// Functions that refuse with one error value.
macro_rules! refuse_all {
    ($code:expr, $why:literal; $( $wit:literal fn $name:ident($($arg:ident : $ty:ty),*) -> $ok:ty; )*) => {
        $(
            fn $name(&mut self, $($arg: $ty),*) -> wasmtime::Result<Result<$ok, _ErrorCode>> {
                $(let _ = $arg;)*
                refused(self, $wit, Instant::now(), $why);
                Ok(Err($code))
            }
        )*
    };
}

/// Methods of resources the image never hands out.
macro_rules! never_handed_out {
    ($res:ty; $( fn $name:ident($($arg:ident : $ty:ty),*) -> $ret:ty; )*) => {
        $(
            fn $name(&mut self, _this: wasmtime::component::Resource<$res>, $($arg: $ty),*) -> wasmtime::Result<$ret> {
                $(let _ = $arg;)*
                wasmtime::bail!(concat!("no ", stringify!($res), " is ever handed out by astrid.img"))
            }
        )*
    };
}

fn refused(state: &CapsuleState, function: &str, started: Instant, why: &str) {
    audit(state, function, started, Counts::default(), Some(&format!("refused: {why}")));
}

impl uplink::host::Host for CapsuleState {
    fn uplink_register(&mut self, _name: String, _platform: String, _profile: uplink::host::UplinkProfile) -> wasmtime::Result<Result<String, uplink::host::ErrorCode>> {
        refused(self, "astrid:uplink/host.uplink-register", Instant::now(), "capability-denied");
        Ok(Err(uplink::host::ErrorCode::CapabilityDenied))
    }

    fn uplink_send(&mut self, _uplink_id: String, _user: String, _content: String) -> wasmtime::Result<Result<bool, uplink::host::ErrorCode>> {
        refused(self, "astrid:uplink/host.uplink-send", Instant::now(), "capability-denied");
        Ok(Err(uplink::host::ErrorCode::CapabilityDenied))
    }
}

impl identity::host::Host for CapsuleState {
    fn identity_resolve(&mut self, _r: identity::host::IdentityResolveRequest) -> wasmtime::Result<Result<identity::host::IdentityResolveResponse, identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-resolve", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_link(&mut self, _r: identity::host::IdentityLinkRequest) -> wasmtime::Result<Result<(), identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-link", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_unlink(&mut self, _r: identity::host::IdentityUnlinkRequest) -> wasmtime::Result<Result<(), identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-unlink", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_create_user(&mut self, _r: identity::host::IdentityCreateUserRequest) -> wasmtime::Result<Result<identity::host::IdentityCreateUserResponse, identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-create-user", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_list_links(&mut self, _user: String) -> wasmtime::Result<Result<Vec<identity::host::PlatformLink>, identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-list-links", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }
}

impl approval::host::Host for CapsuleState {
    fn request_approval(&mut self, _r: approval::host::ApprovalRequest) -> wasmtime::Result<Result<approval::host::ApprovalResponse, approval::host::ErrorCode>> {
        refused(self, "astrid:approval/host.request-approval", Instant::now(), "denied: no approver in the image");
        Ok(Ok(approval::host::ApprovalResponse { decision: approval::host::ApprovalDecision::Denied }))
    }
}

impl elicit::host::Host for CapsuleState {
    fn elicit(&mut self, _r: elicit::host::ElicitRequest) -> wasmtime::Result<Result<elicit::host::ElicitResponse, elicit::host::ErrorCode>> {
        refused(self, "astrid:elicit/host.elicit", Instant::now(), "not-in-lifecycle");
        Ok(Err(elicit::host::ErrorCode::NotInLifecycle))
    }

    fn has_secret(&mut self, _key: String) -> wasmtime::Result<Result<bool, elicit::host::ErrorCode>> {
        refused(self, "astrid:elicit/host.has-secret", Instant::now(), "not-in-lifecycle");
        Ok(Err(elicit::host::ErrorCode::NotInLifecycle))
    }
}

mod fs_refusals {
    use super::*;
    use fs::host::{ErrorCode as _ErrorCode, FileHandle, FileStat, OpenMode};
    use wasmtime::component::Resource;

    impl fs::host::Host for CapsuleState {
        refuse_all! { _ErrorCode::CapabilityDenied, "capability-denied: the image has no file system for capsules";
            "astrid:fs/host.fs-open" fn fs_open(path: String, mode: OpenMode) -> Resource<FileHandle>;
            "astrid:fs/host.fs-exists" fn fs_exists(path: String) -> bool;
            "astrid:fs/host.fs-mkdir" fn fs_mkdir(path: String) -> ();
            "astrid:fs/host.fs-mkdir-all" fn fs_mkdir_all(path: String) -> ();
            "astrid:fs/host.fs-readdir" fn fs_readdir(path: String) -> Vec<String>;
            "astrid:fs/host.fs-stat" fn fs_stat(path: String) -> FileStat;
            "astrid:fs/host.fs-stat-symlink" fn fs_stat_symlink(path: String) -> FileStat;
            "astrid:fs/host.fs-unlink" fn fs_unlink(path: String) -> ();
            "astrid:fs/host.read-file" fn read_file(path: String) -> Vec<u8>;
            "astrid:fs/host.write-file" fn write_file(path: String, content: Vec<u8>) -> ();
            "astrid:fs/host.fs-append" fn fs_append(path: String, content: Vec<u8>) -> ();
            "astrid:fs/host.fs-copy" fn fs_copy(src: String, dst: String) -> ();
            "astrid:fs/host.fs-rename" fn fs_rename(src: String, dst: String) -> ();
            "astrid:fs/host.fs-remove-dir-all" fn fs_remove_dir_all(path: String) -> u64;
            "astrid:fs/host.fs-canonicalize" fn fs_canonicalize(path: String) -> String;
            "astrid:fs/host.fs-read-link" fn fs_read_link(path: String) -> String;
            "astrid:fs/host.fs-hard-link" fn fs_hard_link(src: String, link_path: String) -> ();
        }
    }

    impl fs::host::HostFileHandle for CapsuleState {
        never_handed_out! { FileHandle;
            fn read_at(offset: u64, max_bytes: u32) -> Result<Vec<u8>, _ErrorCode>;
            fn write_at(offset: u64, data: Vec<u8>) -> Result<u32, _ErrorCode>;
            fn sync_data() -> Result<(), _ErrorCode>;
            fn sync_all() -> Result<(), _ErrorCode>;
            fn stat() -> Result<FileStat, _ErrorCode>;
            fn set_len(size: u64) -> Result<(), _ErrorCode>;
            fn drop() -> ();
        }
    }
}

mod http_refusals {
    use super::*;
    use http::host::{ErrorCode as _ErrorCode, HttpRequestData, HttpResponseData, HttpStream, HttpUpload, KeyValuePair, RequestOptions};
    use wasmtime::component::Resource;

    use crate::io::{InputStream, OutputStream, Pollable};

    impl http::host::Host for CapsuleState {
        refuse_all! { _ErrorCode::CapabilityDenied, "capability-denied: the image has no HTTP client";
            "astrid:http/host.http-request" fn http_request(request: HttpRequestData) -> HttpResponseData;
            "astrid:http/host.http-request-opts" fn http_request_opts(request: HttpRequestData, options: RequestOptions) -> HttpResponseData;
            "astrid:http/host.http-stream-start" fn http_stream_start(request: HttpRequestData) -> Resource<HttpStream>;
            "astrid:http/host.http-stream-start-opts" fn http_stream_start_opts(request: HttpRequestData, options: RequestOptions) -> Resource<HttpStream>;
            "astrid:http/host.http-upload-start" fn http_upload_start(request: HttpRequestData, options: RequestOptions) -> Resource<HttpUpload>;
        }
    }

    impl http::host::HostHttpStream for CapsuleState {
        never_handed_out! { HttpStream;
            fn status() -> u16;
            fn headers() -> Vec<KeyValuePair>;
            fn read_chunk() -> Result<Vec<u8>, _ErrorCode>;
            fn close() -> Result<(), _ErrorCode>;
            fn subscribe_readable() -> Resource<Pollable>;
            fn body_stream() -> Resource<InputStream>;
            fn trailers() -> Result<Option<Vec<KeyValuePair>>, _ErrorCode>;
            fn drop() -> ();
        }
    }

    impl http::host::HostHttpUpload for CapsuleState {
        never_handed_out! { HttpUpload;
            fn body_sink() -> Resource<OutputStream>;
            fn subscribe_writable() -> Resource<Pollable>;
            fn finish() -> Result<Resource<HttpStream>, _ErrorCode>;
            fn drop() -> ();
        }
    }
}

mod process_refusals {
    use super::*;
    use process::host::{ErrorCode as _ErrorCode, ExitInfo, KillResult, LogChunk, LogCursor, LogStream, ProcessHandle, ProcessId, ProcessInfo, ProcessResult, ProcessSignal, ReadLogsResult, SpawnRequest};
    use wasmtime::component::Resource;

    use crate::io::Pollable;

    impl process::host::Host for CapsuleState {
        refuse_all! { _ErrorCode::CapabilityDenied, "capability-denied: the image runs no processes";
            "astrid:process/host.spawn" fn spawn(request: SpawnRequest) -> ProcessResult;
            "astrid:process/host.spawn-background" fn spawn_background(request: SpawnRequest) -> Resource<ProcessHandle>;
            "astrid:process/host.spawn-persistent" fn spawn_persistent(request: SpawnRequest) -> ProcessId;
            "astrid:process/host.attach" fn attach(id: ProcessId) -> Resource<ProcessHandle>;
            "astrid:process/host.list-processes" fn list_processes(label_filter: Option<String>) -> Vec<ProcessInfo>;
            "astrid:process/host.status" fn status(id: ProcessId) -> ProcessInfo;
            "astrid:process/host.status-many" fn status_many(ids: Vec<ProcessId>) -> Vec<ProcessInfo>;
            "astrid:process/host.read-logs" fn read_logs(id: ProcessId) -> ReadLogsResult;
            "astrid:process/host.read-since" fn read_since(id: ProcessId, which_stream: LogStream, cursor: LogCursor, max_bytes: u32) -> LogChunk;
            "astrid:process/host.write-stdin" fn write_stdin(id: ProcessId, data: Vec<u8>) -> u32;
            "astrid:process/host.close-stdin" fn close_stdin(id: ProcessId) -> ();
            "astrid:process/host.signal" fn signal(id: ProcessId, sig: ProcessSignal) -> ();
            "astrid:process/host.wait" fn wait(id: ProcessId, timeout_ms: u64) -> ExitInfo;
            "astrid:process/host.stop" fn stop(id: ProcessId, grace_ms: Option<u64>) -> ExitInfo;
            "astrid:process/host.release-process" fn release_process(id: ProcessId) -> ();
            "astrid:process/host.watch" fn watch(id: ProcessId, suffix: Option<String>) -> ();
            "astrid:process/host.unwatch" fn unwatch(id: ProcessId) -> ();
        }
    }

    impl process::host::HostProcessHandle for CapsuleState {
        never_handed_out! { ProcessHandle;
            fn read_logs() -> Result<ReadLogsResult, _ErrorCode>;
            fn write_stdin(data: Vec<u8>) -> Result<u32, _ErrorCode>;
            fn close_stdin() -> Result<(), _ErrorCode>;
            fn signal(sig: ProcessSignal) -> Result<(), _ErrorCode>;
            fn kill() -> Result<KillResult, _ErrorCode>;
            fn wait(timeout_ms: Option<u64>) -> Result<ExitInfo, _ErrorCode>;
            fn wait_with_output(timeout_ms: Option<u64>) -> Result<ProcessResult, _ErrorCode>;
            fn os_pid() -> Result<u32, _ErrorCode>;
            fn subscribe_exit() -> Resource<Pollable>;
            fn subscribe_logs() -> Resource<Pollable>;
            fn drop() -> ();
        }
    }
}

/// Adds the refusing packages to a capsule's linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<CapsuleState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    uplink::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    identity::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    approval::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    elicit::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    fs::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    http::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    process::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}
