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
/// that variable (uhyve, bare metal) the status goes to the console. Booted by our loader
/// (bare metal), the machine then does what `ASTRID_ON_EXIT` says: the kernel's exit path
/// powers off, or the image halts or resets the machine here; uhyve ends the guest itself.
pub fn report_exit(status: u8) {
    use crate::settings::OnExit;
    let settings = crate::settings::current();
    if let Some(crate::settings::DebugPort(port)) = settings.debug_exit {
        let value = crate::exit::debug_exit_value(status);
        // SAFETY: Hermit applications run in ring 0; the port was named by the host that
        // attached the isa-debug-exit device, and writing it ends the virtual machine.
        unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value) };
        return;
    }
    if settings.boot.is_none() {
        // Not booted by our loader: uhyve, which ends the guest and passes the status on.
        println!("astrid: exit status {status}");
        return;
    }
    let then = match settings.on_exit {
        OnExit::Poweroff => "powering off",
        OnExit::Halt => "halted",
        OnExit::Reboot => "rebooting",
    };
    println!("astrid: exit status {status}; {then} ({}={})", crate::settings::ON_EXIT, settings.on_exit);
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    match settings.on_exit {
        OnExit::Poweroff => {}
        OnExit::Halt => halt(),
        OnExit::Reboot => reset(),
    }
}

/// Stops this CPU for good: interrupts off, then `hlt`. The other CPUs have nothing left
/// to run (every capsule ended) and idle in the kernel.
fn halt() -> ! {
    loop {
        // SAFETY: ring 0 may disable interrupts and halt; this only stops the CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Resets the machine: the PCI reset control register (0xcf9: system reset, then the reset
/// bit), then the keyboard controller's reset line (0x64 ← 0xfe), the two every PC-compatible
/// chipset has; a CPU that is still running after both halts.
fn reset() -> ! {
    // SAFETY: ring 0 port I/O on the chipset's reset registers; the writes reset the
    // machine, which is what was asked for.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") 0xcf9u16, in("al") 0x02u8, options(nomem, nostack));
        core::arch::asm!("out dx, al", in("dx") 0xcf9u16, in("al") 0x06u8, options(nomem, nostack));
        core::arch::asm!("out dx, al", in("dx") 0x64u16, in("al") 0xfeu8, options(nomem, nostack));
    }
    halt()
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

/// The kernel's priorities (`LOW_PRIO`, `NORMAL_PRIO`, `HIGH_PRIO`); every std thread
/// starts at the normal one.
const BACKGROUND_PRIORITY: u8 = 1;
const NORMAL_PRIORITY: u8 = 2;
const WATCHDOG_PRIORITY: u8 = 3;

/// Sets the calling thread's priority (one of the kernel's, never 0: the idle task's,
/// which the kernel refuses with a panic).
fn set_own_priority(prio: u8) {
    debug_assert!(prio > 0);
    // SAFETY: the call only changes the priority field of the calling task; `prio` is
    // one of the kernel's non-zero priorities.
    unsafe { sys_set_current_task_priority(prio) }
}

/// Raises the calling thread above every capsule thread: the kernel then switches to it
/// whenever its timer fires, even while capsules compute without pause. Only for a
/// thread that sleeps almost always (the epoch ticker) and never waits for a lock by
/// spinning or yielding: on one CPU a thread at this priority spinning on a lock that a
/// normal thread holds never lets the holder run again.
pub fn run_as_watchdog() {
    set_own_priority(WATCHDOG_PRIORITY);
}

/// Puts the calling thread below every capsule thread: on a CPU it shares with them it
/// runs only while none of them can (each waits, or has ended), and never takes the CPU
/// from one when its timer fires. For the audit log's drainer, whose work must not land
/// on a capsule's call. Such a thread must never hold a lock that a capsule thread
/// waits for by spinning or yielding (a yield only passes the CPU to an equal or higher
/// priority): only futex-sleeping locks, which let it run.
pub fn run_in_background() {
    set_own_priority(BACKGROUND_PRIORITY);
}

/// Back to the priority of every other thread (`run_in_background` undone).
pub fn run_normally() {
    set_own_priority(NORMAL_PRIORITY);
}

/// Wakes up to `count` sleepers on `word` (`u32::MAX`: all); returns how many woke.
/// A waiter sleeps at once in the image: on one vCPU (the default) nothing else runs
/// while it spins, and under TCG every spin iteration is emulated.
pub fn spin_before_sleep() -> Duration {
    Duration::ZERO
}

/// The kernel maps the heap up front: nothing to touch ahead of use.
pub const LAZY_PAGES: bool = false;

/// How long the audit log's drainer waits for more records before it seals what came.
/// On one vCPU it runs only when the capsule's thread waits anyway (nothing preempts an
/// equal-priority task), so its timer is kept rare: each wake-up is a timer interrupt
/// emulated under TCG.
pub fn audit_linger() -> Duration {
    Duration::from_millis(2)
}

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

/// The CPU's own entropy, used only where the host passed no seed (bare metal, a packed
/// image): RDSEED where the CPU has it, else RDRAND; `None` when it has neither, and
/// randomness is then refused. Kernel 0.11's entropy call is not used: without RDSEED it
/// falls back to a timestamp-seeded generator (and under TCG to zeros).
pub fn host_entropy() -> Option<[u8; 32]> {
    let source = cpu_entropy_source()?;
    let mut seed = [0u8; 32];
    for word in seed.chunks_exact_mut(8) {
        word.copy_from_slice(&cpu_random_u64(source)?.to_le_bytes());
    }
    Some(seed)
}

#[derive(Clone, Copy)]
enum CpuEntropy {
    Rdseed,
    Rdrand,
}

/// Which instruction this CPU offers (CPUID leaf 7 EBX bit 18, leaf 1 ECX bit 30).
fn cpu_entropy_source() -> Option<CpuEntropy> {
    use core::arch::x86_64::__cpuid_count;
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf >= 7 && __cpuid_count(7, 0).ebx & (1 << 18) != 0 {
        return Some(CpuEntropy::Rdseed);
    }
    (__cpuid_count(1, 0).ecx & (1 << 30) != 0).then_some(CpuEntropy::Rdrand)
}

/// One 64-bit value from `source`, retried as Intel's guide advises (RDSEED may run dry
/// for a while). All-zero and all-one values are discarded: some CPUs have returned them
/// with the carry flag set. `None` when the instruction never delivers.
fn cpu_random_u64(source: CpuEntropy) -> Option<u64> {
    for _ in 0..1024 {
        let value: u64;
        let ok: u8;
        // SAFETY: the CPU advertised the instruction (CPUID above); it only writes the
        // output register and the carry flag.
        unsafe {
            match source {
                CpuEntropy::Rdseed => core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack)),
                CpuEntropy::Rdrand => core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack)),
            }
        }
        if ok == 1 && value != 0 && value != u64::MAX {
            return Some(value);
        }
        core::hint::spin_loop();
    }
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
