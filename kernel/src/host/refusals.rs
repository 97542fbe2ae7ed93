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

use super::bindings::astrid::{approval, elicit, fs, http1_1_0 as http, identity, process1_1_0 as process, uplink};
use super::context::{NoContext, View};
use super::envelope::host_fns;

pub type RefusalView<'a> = View<'a, NoContext>;

/// Host functions that refuse with one error value, each through the envelope.
macro_rules! refusing {
    (impl $($trait:ident)::+ as $iface:literal, $err:ty, $code:expr, $why:literal;
        $( fn $name:ident($($arg:ident : $ty:ty),*) -> $ok:ty; )*) => {
        host_fns! { impl $($trait)::+ for RefusalView<'_> as $iface {
            $(
                fn $name(cx $(, $arg: $ty)*) -> Result<$ok, $err> {
                    $(let _ = $arg;)*
                    cx.core.refused($why);
                    Ok(Err($code))
                }
            )*
        } }
    };
}

/// Methods of resources the image never hands out: a forged handle traps.
macro_rules! never_handed_out {
    (impl $($trait:ident)::+ as $iface:literal, $res:ty;
        $( fn $name:ident($($arg:ident : $ty:ty),*) -> $ret:ty; )*) => {
        host_fns! { impl $($trait)::+ for RefusalView<'_> as $iface {
            $(
                fn $name(cx, this: wasmtime::component::Resource<$res> $(, $arg: $ty)*) -> $ret {
                    $(let _ = $arg;)*
                    let _ = (cx, this);
                    wasmtime::bail!(concat!("no ", stringify!($res), " is ever handed out by astrid.img"))
                }
            )*
        } }
    };
}

refusing! { impl uplink::host::Host as "astrid:uplink/host", uplink::host::ErrorCode,
    uplink::host::ErrorCode::CapabilityDenied, "capability-denied: the image has no uplinks";
    fn uplink_register(name: String, platform: String, profile: uplink::host::UplinkProfile) -> String;
    fn uplink_send(uplink_id: String, user: String, content: String) -> bool;
}

mod identity_refusals {
    use super::*;
    use identity::host::{ErrorCode, IdentityCreateUserRequest, IdentityCreateUserResponse, IdentityLinkRequest, IdentityResolveRequest, IdentityResolveResponse, IdentityUnlinkRequest, PlatformLink};

    refusing! { impl identity::host::Host as "astrid:identity/host", ErrorCode,
        ErrorCode::CapabilityDenied, "capability-denied: the image has no identity store";
        fn identity_resolve(request: IdentityResolveRequest) -> IdentityResolveResponse;
        fn identity_link(request: IdentityLinkRequest) -> ();
        fn identity_unlink(request: IdentityUnlinkRequest) -> ();
        fn identity_create_user(request: IdentityCreateUserRequest) -> IdentityCreateUserResponse;
        fn identity_list_links(user: String) -> Vec<PlatformLink>;
    }
}

host_fns! { impl approval::host::Host for RefusalView<'_> as "astrid:approval/host" {
    fn request_approval(cx, request: approval::host::ApprovalRequest) -> Result<approval::host::ApprovalResponse, approval::host::ErrorCode> {
        let _ = request;
        cx.core.refused("denied: no approver in the image");
        Ok(Ok(approval::host::ApprovalResponse { decision: approval::host::ApprovalDecision::Denied }))
    }
} }

mod elicit_refusals {
    use super::*;
    use elicit::host::{ElicitRequest, ElicitResponse, ErrorCode};

    refusing! { impl elicit::host::Host as "astrid:elicit/host", ErrorCode,
        ErrorCode::NotInLifecycle, "not-in-lifecycle: the image runs no install or upgrade lifecycle";
        fn elicit(request: ElicitRequest) -> ElicitResponse;
        fn has_secret(key: String) -> bool;
    }
}

mod fs_refusals {
    use super::*;
    use fs::host::{ErrorCode, FileHandle, FileStat, OpenMode};
    use wasmtime::component::Resource;

    refusing! { impl fs::host::Host as "astrid:fs/host", ErrorCode,
        ErrorCode::CapabilityDenied, "capability-denied: the image has no file system for capsules";
        fn fs_open(path: String, mode: OpenMode) -> Resource<FileHandle>;
        fn fs_exists(path: String) -> bool;
        fn fs_mkdir(path: String) -> ();
        fn fs_mkdir_all(path: String) -> ();
        fn fs_readdir(path: String) -> Vec<String>;
        fn fs_stat(path: String) -> FileStat;
        fn fs_stat_symlink(path: String) -> FileStat;
        fn fs_unlink(path: String) -> ();
        fn read_file(path: String) -> Vec<u8>;
        fn write_file(path: String, content: Vec<u8>) -> ();
        fn fs_append(path: String, content: Vec<u8>) -> ();
        fn fs_copy(src: String, dst: String) -> ();
        fn fs_rename(src: String, dst: String) -> ();
        fn fs_remove_dir_all(path: String) -> u64;
        fn fs_canonicalize(path: String) -> String;
        fn fs_read_link(path: String) -> String;
        fn fs_hard_link(src: String, link_path: String) -> ();
    }

    never_handed_out! { impl fs::host::HostFileHandle as "astrid:fs/host.file-handle", FileHandle;
        fn read_at(offset: u64, max_bytes: u32) -> Result<Vec<u8>, ErrorCode>;
        fn write_at(offset: u64, data: Vec<u8>) -> Result<u32, ErrorCode>;
        fn sync_data() -> Result<(), ErrorCode>;
        fn sync_all() -> Result<(), ErrorCode>;
        fn stat() -> Result<FileStat, ErrorCode>;
        fn set_len(size: u64) -> Result<(), ErrorCode>;
        fn drop() -> ();
    }
}

mod http_refusals {
    use super::*;
    use http::host::{ErrorCode, HttpRequestData, HttpResponseData, HttpStream, HttpUpload, KeyValuePair, RequestOptions};
    use wasmtime::component::Resource;

    use crate::sources::{InputStream, OutputStream};
    use crate::wait::Pollable;

    refusing! { impl http::host::Host as "astrid:http/host", ErrorCode,
        ErrorCode::CapabilityDenied, "capability-denied: the image has no HTTP client";
        fn http_request(request: HttpRequestData) -> HttpResponseData;
        fn http_request_opts(request: HttpRequestData, options: RequestOptions) -> HttpResponseData;
        fn http_stream_start(request: HttpRequestData) -> Resource<HttpStream>;
        fn http_stream_start_opts(request: HttpRequestData, options: RequestOptions) -> Resource<HttpStream>;
        fn http_upload_start(request: HttpRequestData, options: RequestOptions) -> Resource<HttpUpload>;
    }

    never_handed_out! { impl http::host::HostHttpStream as "astrid:http/host.http-stream", HttpStream;
        fn status() -> u16;
        fn headers() -> Vec<KeyValuePair>;
        fn read_chunk() -> Result<Vec<u8>, ErrorCode>;
        fn close() -> Result<(), ErrorCode>;
        fn subscribe_readable() -> Resource<Pollable>;
        fn body_stream() -> Resource<InputStream>;
        fn trailers() -> Result<Option<Vec<KeyValuePair>>, ErrorCode>;
        fn drop() -> ();
    }

    never_handed_out! { impl http::host::HostHttpUpload as "astrid:http/host.http-upload", HttpUpload;
        fn body_sink() -> Resource<OutputStream>;
        fn subscribe_writable() -> Resource<Pollable>;
        fn finish() -> Result<Resource<HttpStream>, ErrorCode>;
        fn drop() -> ();
    }
}

mod process_refusals {
    use super::*;
    use process::host::{ErrorCode, ExitInfo, KillResult, LogChunk, LogCursor, LogStream, ProcessHandle, ProcessId, ProcessInfo, ProcessResult, ProcessSignal, ReadLogsResult, SpawnRequest};
    use wasmtime::component::Resource;

    use crate::wait::Pollable;

    refusing! { impl process::host::Host as "astrid:process/host", ErrorCode,
        ErrorCode::CapabilityDenied, "capability-denied: the image runs no processes";
        fn spawn(request: SpawnRequest) -> ProcessResult;
        fn spawn_background(request: SpawnRequest) -> Resource<ProcessHandle>;
        fn spawn_persistent(request: SpawnRequest) -> ProcessId;
        fn attach(id: ProcessId) -> Resource<ProcessHandle>;
        fn list_processes(label_filter: Option<String>) -> Vec<ProcessInfo>;
        fn status(id: ProcessId) -> ProcessInfo;
        fn status_many(ids: Vec<ProcessId>) -> Vec<ProcessInfo>;
        fn read_logs(id: ProcessId) -> ReadLogsResult;
        fn read_since(id: ProcessId, which_stream: LogStream, cursor: LogCursor, max_bytes: u32) -> LogChunk;
        fn write_stdin(id: ProcessId, data: Vec<u8>) -> u32;
        fn close_stdin(id: ProcessId) -> ();
        fn signal(id: ProcessId, sig: ProcessSignal) -> ();
        fn wait(id: ProcessId, timeout_ms: u64) -> ExitInfo;
        fn stop(id: ProcessId, grace_ms: Option<u64>) -> ExitInfo;
        fn release_process(id: ProcessId) -> ();
        fn watch(id: ProcessId, suffix: Option<String>) -> ();
        fn unwatch(id: ProcessId) -> ();
    }

    never_handed_out! { impl process::host::HostProcessHandle as "astrid:process/host.process-handle", ProcessHandle;
        fn read_logs() -> Result<ReadLogsResult, ErrorCode>;
        fn write_stdin(data: Vec<u8>) -> Result<u32, ErrorCode>;
        fn close_stdin() -> Result<(), ErrorCode>;
        fn signal(sig: ProcessSignal) -> Result<(), ErrorCode>;
        fn kill() -> Result<KillResult, ErrorCode>;
        fn wait(timeout_ms: Option<u64>) -> Result<ExitInfo, ErrorCode>;
        fn wait_with_output(timeout_ms: Option<u64>) -> Result<ProcessResult, ErrorCode>;
        fn os_pid() -> Result<u32, ErrorCode>;
        fn subscribe_exit() -> Resource<Pollable>;
        fn subscribe_logs() -> Resource<Pollable>;
        fn drop() -> ();
    }
}
