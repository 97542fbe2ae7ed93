//! Hermit (unikernel) side of the platform seam. The application runs in ring 0 with
//! the loader's identity map still in place, so physical addresses of boot modules are
//! directly readable, and it may write an I/O port itself.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::FutexWait;

/// A boot module left in memory by the loader. The loader placed it below the kernel
/// image, where the kernel never allocates, and identity-mapped it.
pub fn boot_module(addr: u64, len: u64) -> Option<&'static [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    // SAFETY: the loader announced [addr, addr+len) as module data it left untouched
    // below the kernel image; the kernel only hands out memory above its own image and
    // keeps the loader's identity mapping of RAM.
    Some(unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len as usize) })
}

/// Under QEMU the run command passes `env=ASTRID_DEBUG_EXIT=0xf4`: write the status to
/// the isa-debug-exit port so QEMU's own exit status carries it (see `exit`). Without
/// that variable (uhyve, bare metal) the kernel's normal exit path reports the status.
pub fn report_exit(status: u8) {
    let Some(crate::settings::DebugPort(port)) = crate::settings::current().debug_exit else {
        return;
    };
    let value = crate::exit::debug_exit_value(status);
    // SAFETY: Hermit applications run in ring 0; the port was named by the host that
    // attached the isa-debug-exit device, and writing it ends the virtual machine.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value) };
}

/// The kernel's `struct timespec` (hermit-kernel 0.11 `src/time.rs`).
#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i32,
}

/// `sys_futex_wait` flag: the timeout is relative to now (else an absolute tick count).
const FUTEX_RELATIVE: u32 = 1;
const EAGAIN: i32 = 11;
const ETIMEDOUT: i32 = 110;

unsafe extern "C" {
    fn sys_futex_wait(addr: *mut u32, expected: u32, timeout: *const Timespec, flags: u32) -> i32;
    fn sys_futex_wake(addr: *mut u32, count: i32) -> i32;
}

/// Longest single futex sleep; the kernel converts the timeout to microseconds in an
/// i64 and rejects an overflow with EINVAL. A caller with a later deadline just loops.
const MAX_FUTEX_SLEEP_SECS: u64 = 1 << 32;

/// Sleeps while `word` holds `expected`, for at most `timeout` (`None`: until woken).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWait {
    // The kernel truncates the timeout to whole microseconds: round up so a waiter never
    // wakes before its deadline and spins on a zero-length sleep.
    let ts = timeout.map(|t| {
        let t = t.min(Duration::from_secs(MAX_FUTEX_SLEEP_SECS));
        let micros = t.as_nanos().div_ceil(1000);
        Timespec {
            tv_sec: (micros / 1_000_000) as i64,
            tv_nsec: ((micros % 1_000_000) * 1000) as i32,
        }
    });
    let ts_ptr = ts.as_ref().map_or(core::ptr::null(), |t| t as *const Timespec);
    // SAFETY: `word` is a live, aligned u32 for the whole call; the kernel reads it
    // atomically under its parking-lot lock and only reads the timespec.
    let rc = unsafe { sys_futex_wait(word.as_ptr(), expected, ts_ptr, FUTEX_RELATIVE) };
    match rc {
        0 => FutexWait::Woken,
        r if r == -ETIMEDOUT => FutexWait::TimedOut,
        r if r == -EAGAIN => FutexWait::Mismatch,
        // EINVAL is the only other answer (null address, bad timeout or flags): a bug
        // here, and retrying would spin.
        r => panic!("sys_futex_wait failed: {r}"),
    }
}

unsafe extern "C" {
    fn sys_set_current_task_priority(prio: u8);
}

/// The kernel's `HIGH_PRIO`; every std thread runs at `NORMAL_PRIO` (2).
const WATCHDOG_PRIORITY: u8 = 3;

/// Raises the calling thread above every capsule thread: the kernel then switches to it
/// whenever its timer fires, even while capsules compute without pause. Only for a
/// thread that sleeps almost always (the epoch ticker) and never waits for a lock by
/// spinning or yielding: on one CPU a thread at this priority spinning on a lock that a
/// normal thread holds never lets the holder run again.
pub fn run_as_watchdog() {
    // SAFETY: the call only changes the priority field of the calling task.
    unsafe { sys_set_current_task_priority(WATCHDOG_PRIORITY) }
}

/// Wakes up to `count` sleepers on `word` (`u32::MAX`: all); returns how many woke.
pub fn futex_wake(word: &AtomicU32, count: u32) -> u32 {
    // i32::MAX is the kernel's "wake everyone".
    let count = count.min(i32::MAX as u32) as i32;
    // SAFETY: the kernel uses the address only as a key.
    let rc = unsafe { sys_futex_wake(word.as_ptr(), count) };
    u32::try_from(rc).unwrap_or(0)
}

/// Tells the wasmtime glue how much memory the guest has, so mappings stay within what
/// the kernel can back (running out inside the kernel is a panic, not an error).
/// Returns the mapping budget in bytes.
#[cfg(feature = "engine")]
pub fn set_memory_budget(ram_bytes: u64, thread_stacks: usize) -> usize {
    let budget = super::wasmtime_glue::budget_for_guest_ram(ram_bytes, thread_stacks);
    super::wasmtime_glue::set_budget(budget);
    budget
}

/// The guest has no entropy worth the name under TCG (kernel 0.11 then returns zeros):
/// randomness comes only from the seed the host passes at boot.
pub fn host_entropy() -> Option<[u8; 32]> {
    None
}

/// The kernel's `struct pollfd` (hermit-kernel 0.11 `src/fd/mod.rs`, same layout as
/// Linux).
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

unsafe extern "C" {
    fn sys_poll(fds: *mut PollFd, nfds: usize, timeout: i32) -> i32;
}

/// Waits up to `timeout` for `events` (POLL_* bits) on the socket `fd` and returns the
/// events that are set (0: the timeout passed). The kernel parks the calling task until
/// the network stack wakes it (smoltcp socket wakers) or the timeout passes.
pub fn poll_fd(fd: i32, events: i16, timeout: Duration) -> std::io::Result<i16> {
    let mut pfd = PollFd { fd, events, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { sys_poll(&mut pfd, 1, ms) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(-rc));
    }
    Ok(if rc == 0 { 0 } else { pfd.revents })
}

/// Kernel 0.11's socket ABI (`src/syscalls/socket.rs`): its own family numbers, and a
/// length byte before the family.
const AF_INET: i32 = 3;
const AF_INET6: i32 = 1;
const SOCK_STREAM: i32 = 1;
const SOCK_NONBLOCK: i32 = 0o4000;
const EINPROGRESS: i32 = 115;

#[repr(C)]
struct SockaddrIn {
    sin_len: u8,
    sin_family: u8,
    sin_port: u16,
    sin_addr: [u8; 4],
    sin_zero: [u8; 8],
}

#[repr(C)]
struct SockaddrIn6 {
    sin6_len: u8,
    sin6_family: u8,
    sin6_port: u16,
    sin6_flowinfo: u32,
    sin6_addr: [u8; 16],
    sin6_scope_id: u32,
}

unsafe extern "C" {
    fn sys_socket(domain: i32, type_: i32, protocol: i32) -> i32;
    fn sys_connect(fd: i32, name: *const u8, namelen: u32) -> i32;
}

/// Starts a TCP connect to `addr` without waiting for it: the socket is non-blocking
/// (our kernel patch makes `connect` honour that), and `poll_fd` for `POLLOUT` tells
/// when the handshake ended (then `connect_outcome`). Dropping the stream closes the
/// socket, which abandons the connect.
pub fn connect_start(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let domain;
    let v4;
    let v6;
    let (name, len): (*const u8, usize) = match addr {
        std::net::SocketAddr::V4(a) => {
            domain = AF_INET;
            v4 = SockaddrIn { sin_len: size_of::<SockaddrIn>() as u8, sin_family: AF_INET as u8, sin_port: a.port().to_be(), sin_addr: a.ip().octets(), sin_zero: [0; 8] };
            ((&raw const v4).cast(), size_of::<SockaddrIn>())
        }
        std::net::SocketAddr::V6(a) => {
            domain = AF_INET6;
            v6 = SockaddrIn6 {
                sin6_len: size_of::<SockaddrIn6>() as u8,
                sin6_family: AF_INET6 as u8,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: a.ip().octets(),
                sin6_scope_id: a.scope_id(),
            };
            ((&raw const v6).cast(), size_of::<SockaddrIn6>())
        }
    };
    // SAFETY: plain socket creation; a negative result is an errno.
    let fd = unsafe { sys_socket(domain, SOCK_STREAM | SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: `fd` is a socket we just created and own; the stream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    // SAFETY: `name` points to a socket address of `len` bytes that lives across the call.
    let rc = unsafe { sys_connect(fd, name, len as u32) };
    if rc == 0 || rc == -EINPROGRESS {
        Ok(stream)
    } else {
        Err(std::io::Error::from_raw_os_error(-rc))
    }
}

/// After `poll_fd` reported a connecting socket writable or hung up: whether the
/// connect succeeded. Kernel 0.11 keeps no error for the socket: a handshake that
/// failed leaves it closed without a peer, which is what a refused connect looks like.
pub fn connect_outcome(stream: &std::net::TcpStream) -> std::io::Result<()> {
    match stream.peer_addr() {
        Ok(_) => Ok(()),
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
    }
}

/// Whether opening a file failed because there is no such file. Kernel 0.11's virtio-fs
/// client answers a failed lookup with EINVAL (as uhyve does for an unmapped path), not
/// ENOENT.
pub fn is_absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput)
}
