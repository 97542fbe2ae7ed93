//! Native baselines the engine benchmarks divide by, measured inside the same
//! environment as the capsule figures (the image, or hosted mode): a raw futex
//! ping-pong between two threads, memcpy through reused buffers, and the audit sinks'
//! record throughput. Selected with `ASTRID_BENCH=<name>`; each prints one
//! `bench <name>: …` line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::audit::{AuditLog, ConsoleSink, IoEvent, LinesSink, Sink};
use crate::platform::{self, FutexWait};

/// Runs the named benchmark; `None` if there is no such benchmark.
pub fn run(name: &str, var: &impl Fn(&str) -> Option<String>) -> Option<Result<String, String>> {
    Some(match name {
        "futex" => Ok(futex_pingpong(2000)),
        "memcpy" => Ok(memcpy(64 << 20)),
        "sink-serial" => sink(Box::new(ConsoleSink::stdout()), 5000, "serial"),
        "sink-file" => match var("ASTRID_AUDIT_FILE") {
            Some(path) => std::fs::File::create(&path)
                .map_err(|e| format!("cannot create {path}: {e}"))
                .and_then(|f| sink(Box::new(LinesSink::new(f)), 50_000, "file")),
            None => Err("sink-file needs ASTRID_AUDIT_FILE".into()),
        },
        _ => return None,
    })
}

/// Round trips of two threads waking each other through a futex word.
fn futex_pingpong(rounds: u32) -> String {
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
                if platform::futex_wait(&other, v, None) == FutexWait::TimedOut {
                    unreachable!("no timeout given");
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
            platform::futex_wait(&word, v, None);
        }
    }
    let elapsed = started.elapsed();
    let _ = partner.join();
    format!("bench futex: rtt_ns={}", elapsed.as_nanos() / u128::from(rounds))
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

/// Pushes `n` records through the audit queue into `sink`, until closed.
fn sink(sink: Box<dyn Sink>, n: u64, label: &str) -> Result<String, String> {
    let log = AuditLog::start(sink, 4096);
    let handle = log.handle();
    let started = Instant::now();
    for i in 0..n {
        let mut event = IoEvent::ok("bench.wasm", "bench", "astrid:io/streams.input-stream.read", i);
        event.bytes = Some(4096);
        handle.record(event).map_err(|e| e.to_string())?;
    }
    let written = log.close().map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    Ok(format!("bench sink-{label}: records={written} records_per_s={:.0}", written as f64 / secs))
}
