//! Hosted (Linux process) side of the platform seam.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::FutexWait;

/// A Linux process has no boot modules.
pub fn boot_module(_addr: u64, _len: u64) -> Option<&'static [u8]> {
    None
}

/// The process exit status already carries everything.
pub fn report_exit(_status: u8) {}

/// Linux preempts a busy thread on its own: the watchdog threads need no help.
pub fn run_as_watchdog() {}

/// Puts the calling thread in Linux's idle scheduling class: where it shares a CPU with
/// a capsule's thread the capsule always runs first, and Linux moves it to an idle CPU
/// rather than preempt the capsule. Measured: at the usual priority the audit drainer,
/// woken by a capsule's first records, took the capsule's CPU for ~0.6 ms while the
/// other CPU stood idle. It still gets the CPU when nothing else wants it, and a capsule
/// that waits for its log (its share full, `MAX_LAG`, its end) gives it that.
pub fn run_in_background() {
    // SAFETY: a plain system call on the calling thread (pid 0) with a valid parameter
    // block; a failure (none is expected: moving to SCHED_IDLE needs no privilege)
    // leaves the thread as it was.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// Linux's spin locks and yields do not depend on priority (unlike Hermit's, see the
/// image's side), and leaving the idle class may need a privilege: nothing to do.
pub fn run_normally() {}

/// Longest single futex sleep: far beyond any deadline a capsule can ask for, and small
/// enough that the seconds never overflow `time_t`. A caller with a later deadline just
/// loops.
const MAX_FUTEX_SLEEP_SECS: u64 = 1 << 32;

/// Sleeps while `word` holds `expected`, for at most `timeout` (`None`: until woken).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWait {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(MAX_FUTEX_SLEEP_SECS) as libc::time_t,
        tv_nsec: t.subsec_nanos() as _,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the whole call; FUTEX_WAIT reads it
    // atomically and takes a relative timeout (CLOCK_MONOTONIC) or null for none.
    // PRIVATE: the word is never shared with another process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        )
    };
    if rc == 0 {
        return FutexWait::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => FutexWait::TimedOut,
        Some(libc::EAGAIN) => FutexWait::Mismatch,
        Some(libc::EINTR) => FutexWait::Interrupted,
        // EFAULT/EINVAL/ENOSYS mean a broken argument or kernel: retrying would spin.
        other => panic!("futex wait failed: {other:?}"),
    }
}

/// Wakes up to `count` sleepers on `word` (`u32::MAX`: all); returns how many woke.
/// How long a waiter spins on its event word before it sleeps: 20 µs where the process
/// may use more than one CPU, none on one. Measured on this project's hosts (2 vCPUs):
/// a futex wake that must reach a thread asleep on the other CPU costs 20–60 µs (the
/// wake-up interrupt and the idle vCPU coming back), so a capsule's block→wake round
/// trip ran at 2 µs when both threads shared a CPU and at 18–63 µs when they did not.
/// A partner that answers within the spin is seen without any system call on either
/// side (the word's sleeping bit stays clear); a longer wait costs 20 µs of one CPU.
pub fn spin_before_sleep() -> Duration {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    if cpus > 1 { Duration::from_micros(20) } else { Duration::ZERO }
}

/// Linux maps a process's memory on first touch: a buffer that must not fault while it
/// is in use is touched once up front (the audit queue's ring).
pub const LAZY_PAGES: bool = true;

/// How long the audit log's drainer waits for more records before it seals what came:
/// 100 µs where the process has more than one CPU, 2 ms on one. The drainer wakes
/// itself on that timer while records keep coming, so a capsule's thread never pays a
/// wake-up for it: on this project's hosts (2 vCPUs) a futex wake that must reach a
/// thread asleep on the other CPU costs the waker 20–60 µs (measured: every such wake
/// stalled the capsule's 4 KiB benchmark for ~40 µs).
pub fn audit_linger() -> Duration {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    if cpus > 1 { Duration::from_micros(100) } else { Duration::from_millis(2) }
}

pub fn futex_wake(word: &AtomicU32, count: u32) -> u32 {
    let count = count.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: FUTEX_WAKE uses the address only as a key; it never dereferences it.
    let rc = unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count)
    };
    u32::try_from(rc).unwrap_or(0)
}

/// A Linux process maps memory through the host kernel: no budget of our own.
pub fn set_memory_budget(_ram_bytes: u64, _thread_stacks: usize) -> usize {
    usize::MAX
}

/// 32 bytes from the operating system's entropy source.
pub fn host_entropy() -> Option<[u8; 32]> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom").ok()?.read_exact(&mut seed).ok()?;
    Some(seed)
}

/// Waits up to `timeout` for `events` (POLL_* bits) on the socket `fd` and returns the
/// events that are set (0: the timeout passed). Interrupted waits count as a timeout:
/// callers loop.
pub fn poll_fd(fd: i32, events: i16, timeout: Duration) -> std::io::Result<i16> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
    }
    Ok(if rc == 0 { 0 } else { pfd.revents })
}

/// Starts a TCP connect to `addr` without waiting for it: the socket is non-blocking,
/// and `poll_fd` for `POLLOUT` tells when the handshake ended (then
/// `connect_outcome`). Dropping the stream abandons the connect.
pub fn connect_start(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (empty) value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let (family, len) = match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            (libc::AF_INET, std::mem::size_of::<libc::sockaddr_in>())
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            (libc::AF_INET6, std::mem::size_of::<libc::sockaddr_in6>())
        }
    };
    // SAFETY: plain socket creation; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just created and own; the stream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    // SAFETY: `storage` holds a socket address of `len` bytes for the whole call.
    let rc = unsafe { libc::connect(fd, (&raw const storage).cast::<libc::sockaddr>(), len as libc::socklen_t) };
    if rc == 0 {
        return Ok(stream);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINPROGRESS) { Ok(stream) } else { Err(e) }
}

/// After `poll_fd` reported a connecting socket writable or hung up: whether the
/// connect succeeded, or why not.
pub fn connect_outcome(stream: &std::net::TcpStream) -> std::io::Result<()> {
    match stream.take_error()? {
        Some(e) => Err(e),
        None => stream.peer_addr().map(|_| ()),
    }
}

/// Whether opening a file failed because there is no such file.
pub fn is_absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}
