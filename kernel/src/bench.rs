//! Native baselines the engine benchmarks divide by, measured inside the same
//! environment as the capsule figures (the image, or hosted mode): a raw futex
//! ping-pong between two threads, memcpy through reused buffers, and the audit sinks'
//! record throughput. Selected with `ASTRID_BENCH=<name>`; each prints one
//! `bench <name>: …` line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::audit::{AuditLog, ConsoleSink, FRAME_PREFIX, IoEvent, LinesSink, Sink};
use crate::platform::{self, FutexWait};

/// Round trips per ping-pong benchmark.
const PINGPONG_ROUNDS: u32 = 2000;
/// Bytes the memcpy benchmark moves.
const MEMCPY_BYTES: usize = 64 << 20;
/// Records through the serial sink (slow: every byte is a port write under QEMU).
const SERIAL_RECORDS: u64 = 5000;
/// Records through the file sink.
const FILE_RECORDS: u64 = 50_000;
/// The (never reached) deadline of `futex-timed`'s waits.
const NEVER: std::time::Duration = std::time::Duration::from_secs(30);

pub use crate::settings::Benchmark;

/// Runs a benchmark; `audit_file` is where `sink-file` writes, `chain` what the sink
/// benchmarks seal into (the one the image's own log would start with).
pub fn run(bench: Benchmark, audit_file: Option<&std::path::Path>, chain: crate::audit::Chain) -> Result<String, String> {
    match bench {
        Benchmark::Futex => Ok(futex_pingpong(PINGPONG_ROUNDS, None)),
        Benchmark::FutexTimed => Ok(futex_pingpong(PINGPONG_ROUNDS, Some(NEVER))),
        Benchmark::Wait => Ok(wait_pingpong(PINGPONG_ROUNDS)),
        Benchmark::Memcpy => Ok(memcpy(MEMCPY_BYTES)),
        Benchmark::SinkSerial => {
            // The console's raw ceiling just before and just after, in the same boot: the
            // ratio does not depend on how loaded the host was for one boot or another.
            let before = serial_raw_bytes_per_s(SERIAL_RECORDS / 2);
            let figure = sink(Box::new(ConsoleSink::stdout()), chain, SERIAL_RECORDS, "serial")?;
            let after = serial_raw_bytes_per_s(SERIAL_RECORDS / 2);
            Ok(format!("{figure} raw_bytes_per_s={:.0}", f64::midpoint(before, after)))
        }
        Benchmark::SerialRaw => Ok(format!("bench serial-raw: lines={SERIAL_RECORDS} bytes_per_s={:.0}", serial_raw_bytes_per_s(SERIAL_RECORDS))),
        Benchmark::SinkFile => match audit_file {
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let figure = sink(Box::new(LinesSink::new(file)), chain, FILE_RECORDS, "file")?;
                // Nothing lost or reordered at that rate: the log it wrote verifies whole.
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read back {}: {e}", path.display()))?;
                let summary = crate::audit::verify(text.lines()).map_err(|b| format!("the benchmark's own log does not verify: {b}"))?;
                if summary.io_records != FILE_RECORDS {
                    return Err(format!("the benchmark's log holds {} io records, not {FILE_RECORDS}", summary.io_records));
                }
                Ok(format!("{figure} verified=yes"))
            }
            None => Err(format!("sink-file needs {}", crate::settings::AUDIT_FILE)),
        },
        #[cfg(feature = "engine")]
        Benchmark::Quota => Ok(quota_cost(QUOTA_BATCHES)),
        #[cfg(not(feature = "engine"))]
        Benchmark::Quota => Err("quota needs the engine's providers (not in this image)".into()),
        Benchmark::TcpEcho => tcp_echo(crate::settings::current().publish.0.first().copied().unwrap_or(TCP_ECHO_PORT), TCP_ECHO_CONNECTIONS),
    }
}

/// Operations per timed batch of the `quota` benchmark, and its batches.
#[cfg(feature = "engine")]
const QUOTA_BATCH: u32 = 20_000;
#[cfg(feature = "engine")]
const QUOTA_BATCHES: usize = 7;

/// What the host-side accounting costs (issue #12: no more than noise): one charge and
/// release of a `quota::Account`, as each queued ipc message takes, against the
/// operation it guards, a publish and take of a 64-byte message with one subscription
/// on the image's bus. Interleaved batches, medians; `ratio` is the round trip over the
/// round trip less its charge.
#[cfg(feature = "engine")]
fn quota_cost(batches: usize) -> String {
    use crate::ipc::bus::{Attribution, Bus, Message};
    use std::hint::black_box;
    let account = crate::quota::Account::new("ipc queued bytes", crate::ipc::CAPSULE_QUEUE_BYTES);
    let bus = Bus::default();
    let sub = bus.subscribe("bench.quota", &account);
    let message = Message { topic: "bench.quota".into(), payload: "x".repeat(64), source: "bench".into(), principal: Attribution::System };
    let cost = message.cost();
    let per_op = |started: Instant| started.elapsed().as_nanos() as f64 / f64::from(QUOTA_BATCH);
    let (mut charges, mut trips) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        let started = Instant::now();
        for _ in 0..QUOTA_BATCH {
            drop(black_box(black_box(&account).charge(black_box(cost))));
        }
        charges.push(per_op(started));
        let started = Instant::now();
        for _ in 0..QUOTA_BATCH {
            bus.publish(black_box(message.clone()));
            black_box(sub.take(1, usize::MAX));
        }
        trips.push(per_op(started));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (charge, trip) = (median(charges), median(trips));
    let ratio = trip / (trip - charge).max(f64::MIN_POSITIVE);
    format!("bench quota: charge_ns={charge:.1} trip_ns={trip:.1} ratio={ratio:.3} left={}", account.used())
}

/// Where `tcp-echo` listens without a published port.
const TCP_ECHO_PORT: u16 = 7700;
/// Connections `tcp-echo` serves: the client's warm-up and the measured one.
const TCP_ECHO_CONNECTIONS: u32 = 2;
/// Bytes per kernel read and write of `tcp-echo` (the capsule's pumps move as much).
const TCP_ECHO_CHUNK: usize = 64 << 10;

/// The TCP floor: an echo server on the kernel's sockets, one blocking read and write
/// per chunk through one reused buffer, serving `connections` connections one after
/// the other, each until its peer half-closes. The client times it; the line says
/// what was echoed.
fn tcp_echo(port: u16, connections: u32) -> Result<String, String> {
    use std::io::{Read, Write};
    // The image's NIC (QEMU forwards the published port to it); the host's loopback
    // in hosted mode, as published ports there are.
    let ip = if cfg!(target_os = "hermit") { std::net::Ipv4Addr::UNSPECIFIED } else { std::net::Ipv4Addr::LOCALHOST };
    let listener = std::net::TcpListener::bind((ip, port)).map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    let mut buf = vec![0u8; TCP_ECHO_CHUNK];
    let mut total = 0u64;
    for _ in 0..connections {
        let (mut stream, _) = listener.accept().map_err(|e| format!("accept on port {port}: {e}"))?;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    stream.write_all(&buf[..n]).map_err(|e| format!("echo write: {e}"))?;
                    total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("echo read: {e}")),
            }
        }
        let _ = stream.flush();
    }
    Ok(format!("bench tcp-echo: connections={connections} bytes={total}"))
}

/// Round trips of two threads waking each other through a futex word.
fn futex_pingpong(rounds: u32, timeout: Option<std::time::Duration>) -> String {
    let word = Arc::new(AtomicU32::new(0));
    let other = Arc::clone(&word);
    // The word counts turns: odd values are the partner's to answer.
    let partner = std::thread::spawn(move || {
        for i in 0..rounds {
            let want = 2 * i + 1;
            loop {
                let v = other.load(Ordering::Acquire);
                if v == want {
                    break;
                }
                if platform::futex_wait(&other, v, timeout) == FutexWait::TimedOut {
                    unreachable!("the partner answers long before the timeout");
                }
            }
            other.store(want + 1, Ordering::Release);
            platform::futex_wake(&other, 1);
        }
    });
    let started = Instant::now();
    for i in 0..rounds {
        word.store(2 * i + 1, Ordering::Release);
        platform::futex_wake(&word, 1);
        let want = 2 * i + 2;
        loop {
            let v = word.load(Ordering::Acquire);
            if v == want {
                break;
            }
            platform::futex_wait(&word, v, timeout);
        }
    }
    let elapsed = started.elapsed();
    let _ = partner.join();
    let name = if timeout.is_some() { "futex-timed" } else { "futex" };
    format!("bench {name}: rtt_ns={}", elapsed.as_nanos() / u128::from(rounds))
}

/// Round trips of two threads through two pipes of the wait primitive (registration,
/// event words, notifiers and a deadline on every wait, as capsule waits have).
fn wait_pingpong(rounds: u32) -> String {
    use crate::wait::{CancelToken, byte_pipe};
    let (to_partner, partner_in) = byte_pipe(16);
    let (to_me, my_in) = byte_pipe(16);
    let deadline = || Some(Instant::now() + std::time::Duration::from_secs(30));
    let partner = std::thread::spawn(move || {
        let cancel = CancelToken::new();
        for _ in 0..rounds {
            if partner_in.read_blocking(1, &cancel, deadline()).is_err() {
                return;
            }
            let _ = to_me.write(b"o");
        }
    });
    let cancel = CancelToken::new();
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = to_partner.write(b"i");
        if my_in.read_blocking(1, &cancel, deadline()).is_err() {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = partner.join();
    format!("bench wait: rtt_ns={}", elapsed.as_nanos() / u128::from(rounds))
}

/// Copies `total` bytes in 64 KiB chunks between two reused buffers.
fn memcpy(total: usize) -> String {
    const CHUNK: usize = 64 << 10;
    let src = vec![0x5au8; CHUNK];
    let mut dst = vec![0u8; CHUNK];
    let started = Instant::now();
    let mut moved = 0;
    while moved < total {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        moved += CHUNK;
    }
    let secs = started.elapsed().as_secs_f64();
    format!("bench memcpy: mb_per_s={:.1}", moved as f64 / secs / 1e6)
}

/// A sink that counts the bytes its lines take on the console (frame and newline
/// included), for a figure in bytes per second, and the time spent in the sink itself
/// (what the rest of the run's time is not: sealing, the queue, the scheduler).
struct Counted {
    inner: Box<dyn Sink>,
    bytes: Arc<AtomicU64>,
    in_sink_ns: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl Counted {
    fn timed(&mut self, op: impl FnOnce(&mut dyn Sink) -> std::io::Result<()>) -> std::io::Result<()> {
        let started = Instant::now();
        let result = op(&mut *self.inner);
        self.in_sink_ns.fetch_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        result
    }
}

impl Sink for Counted {
    fn write_batch(&mut self, lines: &[String]) -> std::io::Result<()> {
        let bytes: usize = lines.iter().map(|l| FRAME_PREFIX.len() + l.len() + 1).sum();
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.timed(|s| s.write_batch(lines))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.timed(|s| s.flush())
    }
}

/// The console's ceiling: `n` framed lines the size of a sealed io record, written in
/// the console sink's largest writes, with nothing sealed. The lines say `@@raw`, not
/// `@@audit`, so no reader takes them for the log.
fn serial_raw_bytes_per_s(n: u64) -> f64 {
    use std::io::Write;
    let mut chain = crate::audit::Chain::new();
    let mut sample = IoEvent::ok("bench.wasm", "bench", "astrid:io/streams.input-stream.read", 12345);
    sample.op.bytes = Some(4096);
    let mut lines = chain.append(sample.clone()).expect("a fresh chain is open");
    lines.extend(chain.append(sample).expect("a fresh chain is open"));
    let line = format!("@@raw   {}\n", lines.last().expect("two lines"));
    let per_write = (ConsoleSink::<std::io::Stdout>::MAX_WRITE / line.len()).max(1);
    let chunk = line.repeat(per_write);
    // The console's ceiling is what is measured: raw writes on purpose. The lines are
    // framed `@@raw`, which no reader of the audit takes for its own.
    #[allow(clippy::disallowed_methods)]
    let mut out = std::io::stdout();
    let started = Instant::now();
    let mut written = 0u64;
    let mut left = n;
    while left > 0 {
        let k = left.min(per_write as u64) as usize;
        let _ = out.write_all(&chunk.as_bytes()[..k * line.len()]);
        let _ = out.flush();
        written += (k * line.len()) as u64;
        left -= k as u64;
    }
    written as f64 / started.elapsed().as_secs_f64()
}

/// Pushes `n` records through the audit queue into `sink`, until closed.
fn sink(sink: Box<dyn Sink>, chain: crate::audit::Chain, n: u64, label: &str) -> Result<String, String> {
    let (bytes, in_sink_ns, batches) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counted = Counted { inner: sink, bytes: bytes.clone(), in_sink_ns: in_sink_ns.clone(), batches: batches.clone() };
    let log = AuditLog::start_with(chain, counted, 4096);
    let handle = log.handle();
    // Shared names, as a capsule's calls hand them over.
    let (capsule, principal): (Arc<str>, Arc<str>) = ("bench.wasm".into(), "bench".into());
    let started = Instant::now();
    for i in 0..n {
        let mut event = IoEvent::ok(capsule.clone(), principal.clone(), "astrid:io/streams.input-stream.read", i);
        event.op.bytes = Some(4096);
        handle.record(event).map_err(|e| e.to_string())?;
    }
    let written = log.close().map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let in_sink = in_sink_ns.load(Ordering::Relaxed) as f64 / 1e9;
    // Where a record's time goes: the sealer alone, and BLAKE3 alone over one line.
    let mut sample = IoEvent::ok(capsule, principal, "astrid:io/streams.input-stream.read", 12345);
    sample.op.bytes = Some(4096);
    let (sealing, hashing) = crate::audit::seal_and_hash_only(&sample, 2000);
    Ok(format!(
        "bench sink-{label}: records={written} records_per_s={:.0} bytes_per_s={:.0} in_sink_share={:.2} batches={} seal_only_ns={} hash_only_ns={}",
        written as f64 / secs,
        bytes.load(Ordering::Relaxed) as f64 / secs,
        in_sink / secs,
        batches.load(Ordering::Relaxed),
        sealing.as_nanos() / 2000,
        hashing.as_nanos() / 2000
    ))
}
