//! io-probe: exercises astrid:io from inside a capsule. `run` plays the scenario named by
//! the harness (`test-argument`), says `ok <scenario>` on the console when every check
//! held, and otherwise says `FAIL <scenario>: why` and traps.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "astrid-unikernel:image/test-capsule",
    generate_all,
});

use astrid::io::poll::{ErrorCode, Pollable, poll};
use astrid::io::streams::{InputStream, OutputStream, StreamError};
use astrid::ipc::host as ipc;
use astrid::kv::host as kv;
use astrid::net::host as net;
use astrid::{approval, elicit, identity, uplink};
use astrid::sys::host as sys;
use astrid_unikernel::testing::sources as host;

struct Probe;

export!(Probe);

const MS: u64 = 1_000_000;

fn say(text: &str) {
    let console = host::console();
    let _ = console.blocking_write_and_flush(format!("{text}\n").as_bytes());
}

fn fail(scenario: &str, why: &str) -> ! {
    say(&format!("FAIL {scenario}: {why}"));
    core::arch::wasm32::unreachable()
}

macro_rules! check {
    ($scenario:expr, $cond:expr, $($why:tt)+) => {
        if !$cond {
            fail($scenario, &format!($($why)+));
        }
    };
}

impl Guest for Probe {
    fn run() {
        let arg = host::test_argument();
        // The ipc pair picks its role from its own name (ping.* / pong.*).
        let me = sys::get_caller().map(|c| c.source_id).unwrap_or_default();
        let arg = match arg.as_str() {
            "ipc-pair" if me.starts_with("ping") => "ping".to_string(),
            "ipc-pair" => "pong".to_string(),
            "bench-ipc" if me.starts_with("ping") => "bench-ipc-ping".to_string(),
            "bench-ipc" => "pong".to_string(),
            // Hostile scenarios: `victim*` capsules do ordinary work beside the attacker.
            a if a.starts_with("hostile-") && me.starts_with("victim") => "victim".to_string(),
            _ => arg,
        };
        let scenario = if arg.is_empty() { "demo" } else { arg.as_str() };
        match scenario {
            "demo" => demo(),
            "poll-many" => poll_many(),
            "block-timer" => block_timer(),
            "block-host-write" => block_host_write(),
            "cancel-block" => cancel_block(),
            "cancel-poll" => cancel_poll(),
            "cancel-blocking-read" => cancel_blocking_read(),
            "cancel-blocking-splice" => cancel_blocking_splice(),
            "poll-errors" => poll_errors(),
            "streams" => streams(),
            "big-writes" => big_writes(),
            "write-past-permit" => write_past_permit(),
            "drop-parent" => drop_parent(),
            "quota" => quota(),
            "sys" => sys_calls(),
            "kv" => kv_calls(),
            "refusals" => refusals(),
            "ipc" => ipc_self(),
            "ping" => ping(ROUNDS),
            "bench-ipc-ping" => ping(BENCH_ROUNDS),
            "pong" => pong(),
            "random" => random(),
            "cancel-sleep" => cancel_sleep(),
            "bench-pingpong" => bench_pingpong(),
            "bench-calls" => bench_calls(),
            "bench-read-4k" => bench_read_4k(),
            "audit-flood" => audit_flood(),
            "bench-splice" => bench_splice(),
            "hostile-ipc" => hostile_ipc(),
            "hostile-net" => hostile_net(),
            "hostile-heap" => hostile_heap(),
            "tick" => tick(),
            "victim" => victim(),
            other => fail(other, "unknown scenario"),
        }
        say(&format!("ok {scenario}"));
    }
}

/// The README's demo: waits on several pollables at once, moves bytes through streams
/// (a host-fed stream spliced into a pipe, read back and echoed), then waits on
/// something that never happens until the host cancels it, and shuts down gracefully.
fn demo() {
    say("demo: waiting on a timer, a host-fed stream and an idle pipe at once");
    let timer = host::timer(5_000 * MS);
    let fed = host::fed_by_host(b"hello from the host side of the image", 20 * MS);
    let (_idle_out, idle_in) = host::pipe(64);
    let fed_ready = fed.subscribe();
    let idle_ready = idle_in.subscribe();
    let ready = poll(&[&timer, &fed_ready, &idle_ready]).unwrap_or_else(|e| fail("demo", &format!("poll: {e:?}")));
    // The host-fed stream fires first; the idle pipe never does (the timer only under
    // extreme load).
    check!("demo", ready.contains(&1) && !ready.contains(&2), "expected the host-fed stream ready, got {ready:?}");
    say(&format!("demo: poll returned {ready:?} (the host-fed stream)"));
    drop(fed_ready);

    let (pipe_out, pipe_in) = host::pipe(4096);
    let mut moved = 0;
    loop {
        match pipe_out.blocking_splice(&fed, 4096) {
            Ok(n) => moved += n,
            Err(StreamError::Closed) => break,
            Err(e) => fail("demo", &format!("splice: {e:?}")),
        }
    }
    let text = pipe_in.read(4096).unwrap_or_else(|e| fail("demo", &format!("read: {e:?}")));
    say(&format!("demo: spliced {moved} bytes through a pipe: {:?}", String::from_utf8_lossy(&text)));

    say("demo: blocking on an idle pipe; the host cancels this capsule in 100 ms");
    host::cancel_self_after(100 * MS);
    let idle = idle_in.subscribe();
    match idle.block() {
        Err(ErrorCode::Cancelled) => say("demo: the wait was cancelled; shutting down cleanly"),
        other => fail("demo", &format!("expected cancelled, got {other:?}")),
    }
}

fn poll_many() {
    let s = "poll-many";
    // Three timers already due fire together with two pipes holding bytes; the rest stay idle.
    let mut pollables: Vec<Pollable> = Vec::new();
    let mut keep: Vec<(OutputStream, InputStream)> = Vec::new();
    for i in 0..40u64 {
        if i % 10 == 3 {
            pollables.push(host::timer(0));
        } else if i == 17 || i == 38 {
            let (o, r) = host::pipe(16);
            o.check_write().unwrap();
            o.write(b"x").unwrap();
            pollables.push(r.subscribe());
            keep.push((o, r));
        } else {
            pollables.push(host::timer(3_600_000 * MS));
        }
    }
    let refs: Vec<&Pollable> = pollables.iter().collect();
    let ready = poll(&refs).unwrap_or_else(|e| fail(s, &format!("{e:?}")));
    check!(s, ready == vec![3, 13, 17, 23, 33, 38], "ready {ready:?}");
    // Every pollable index appears at most once, ascending: ready() agrees.
    for (i, p) in pollables.iter().enumerate() {
        check!(s, p.ready() == ready.contains(&(i as u32)), "ready() of {i} disagrees");
    }
    drop(pollables);
    drop(keep);
}

fn block_timer() {
    let t = host::timer(300 * MS);
    check!("block-timer", !t.ready(), "a 300 ms timer is ready at once");
    t.block().unwrap_or_else(|e| fail("block-timer", &format!("{e:?}")));
    check!("block-timer", t.ready(), "not ready after block");
}

fn block_host_write() {
    let fed = host::fed_by_host(b"ping", 300 * MS);
    let p = fed.subscribe();
    check!("block-host-write", !p.ready(), "ready before the host wrote");
    p.block().unwrap_or_else(|e| fail("block-host-write", &format!("{e:?}")));
    let got = fed.read(16).unwrap_or_else(|e| fail("block-host-write", &format!("{e:?}")));
    check!("block-host-write", got == b"ping", "read {got:?}");
}

fn cancel_block() {
    let (_o, r) = host::pipe(8);
    let p = r.subscribe();
    host::cancel_self_after(50 * MS);
    check!("cancel-block", matches!(p.block(), Err(ErrorCode::Cancelled)), "block was not cancelled");
}

fn cancel_poll() {
    let (_o, r) = host::pipe(8);
    let p = r.subscribe();
    let t = host::timer(3_600_000 * MS);
    host::cancel_self_after(50 * MS);
    check!("cancel-poll", matches!(poll(&[&p, &t]), Err(ErrorCode::Cancelled)), "poll was not cancelled");
}

fn cancel_blocking_read() {
    let (_o, r) = host::pipe(8);
    host::cancel_self_after(50 * MS);
    // Streams report a cancelled wait as `closed` (the audit log says `cancelled`).
    check!("cancel-blocking-read", matches!(r.blocking_read(8), Err(StreamError::Closed)), "read not ended");
}

fn cancel_blocking_splice() {
    let (_o, r) = host::pipe(8);
    let (o2, _r2) = host::pipe(8);
    host::cancel_self_after(50 * MS);
    check!("cancel-blocking-splice", matches!(o2.blocking_splice(&r, 8), Err(StreamError::Closed)), "splice not ended");
}

fn poll_errors() {
    let s = "poll-errors";
    check!(s, matches!(poll(&[]), Err(ErrorCode::InvalidInput)), "empty list accepted");
    let many: Vec<Pollable> = (0..257).map(|_| host::timer(0)).collect();
    let refs: Vec<&Pollable> = many.iter().collect();
    check!(s, matches!(poll(&refs), Err(ErrorCode::TooLarge)), "257 pollables accepted");
    let ok: Vec<u32> = poll(&refs[..256]).unwrap_or_else(|e| fail(s, &format!("256: {e:?}")));
    check!(s, ok.len() == 256 && ok.windows(2).all(|w| w[0] < w[1]), "256 ready timers: {}", ok.len());
}

fn streams() {
    let s = "streams";
    // Non-blocking read of an empty pipe is empty, not EOF; EOF shows as closed.
    let (o, r) = host::pipe(16);
    check!(s, matches!(r.read(8).map(|b| b.is_empty()), Ok(true)), "empty read");
    let permit = o.check_write().unwrap_or_else(|e| fail(s, &format!("{e:?}")));
    check!(s, permit == 16, "permit {permit}");
    o.write(b"abcdef").unwrap();
    o.write_zeroes(2).unwrap();
    check!(s, matches!(r.skip(2), Ok(2)), "skip");
    check!(s, r.read(100).unwrap() == b"cdef\0\0", "read back");
    drop(o);
    check!(s, matches!(r.read(1), Err(StreamError::Closed)), "EOF not closed");
    check!(s, matches!(r.read(1), Err(StreamError::Closed)), "closed is not for good");
    // A reader gone: writes fail with closed.
    let (o, r) = host::pipe(16);
    drop(r);
    check!(s, matches!(o.check_write(), Err(StreamError::Closed)), "write to a dropped reader");
    // The read ceiling: at most 1 MiB per call, whatever is asked.
    let fed = host::fed_by_host(&vec![7u8; 1_200_000], 0);
    fed.subscribe().block().unwrap();
    let mut total = 0;
    let first = fed.blocking_read(u32::MAX as u64).unwrap();
    check!(s, first.len() <= 1 << 20, "read {} bytes at once", first.len());
    total += first.len();
    loop {
        match fed.blocking_read(1 << 20) {
            Ok(b) => total += b.len(),
            Err(StreamError::Closed) => break,
            Err(e) => fail(s, &format!("{e:?}")),
        }
    }
    check!(s, total == 1_200_000, "read {total} of 1200000 bytes");
    // Splice moves bytes in the host; a blocking skip of a fed stream.
    let fed = host::fed_by_host(b"0123456789", 5 * MS);
    let (o, r) = host::pipe(64);
    let n = o.blocking_splice(&fed, 4).unwrap();
    check!(s, n >= 1 && n <= 4, "spliced {n}");
    check!(s, fed.blocking_skip(3).unwrap() >= 1, "blocking skip");
    let got = r.read(64).unwrap();
    check!(s, got.len() as u64 == n && got[..] == b"0123"[..n as usize], "spliced bytes {got:?}");
}

fn big_writes() {
    let s = "big-writes";
    let sink = host::null_sink();
    sink.blocking_write_and_flush(&vec![1u8; 3 << 20]).unwrap_or_else(|e| fail(s, &format!("{e:?}")));
    sink.blocking_write_zeroes_and_flush(5 << 20).unwrap_or_else(|e| fail(s, &format!("{e:?}")));
    sink.blocking_flush().unwrap();
}

fn write_past_permit() {
    let (o, _r) = host::pipe(8);
    let permit = o.check_write().unwrap();
    say(&format!("write-past-permit: permit {permit}, writing {}", permit + 1));
    let _ = o.write(&vec![0u8; permit as usize + 1]);
    fail("write-past-permit", "the host accepted a write past the permit");
}

fn drop_parent() {
    let (_o, r) = host::pipe(8);
    let p = r.subscribe();
    say("drop-parent: dropping a stream whose pollable lives");
    drop(r);
    drop(p);
    fail("drop-parent", "the host let a stream go while its pollable lived");
}

fn quota() {
    let mut held = Vec::new();
    for i in 0..100_000 {
        held.push(host::timer(0));
        if i % 256 == 0 {
            say(&format!("quota: {} handles", held.len()));
        }
    }
    fail("quota", "100000 handles without reaching the quota");
}

// ---- benchmark scenarios (timed by the image; counts shared with xtask/src/bench_engine.rs) ----

/// 500 one-byte round trips through a host echo thread: one blocking write (which
/// wakes the echo thread), then one blocking read (which sleeps until the reply wakes
/// it): two host calls a round, as a futex ping-pong has one wake and one wait a side.
///
/// Each benchmark times its own loop and says the figure: the image's "completed in"
/// also counts the capsule's instantiation (about 0.1 s under TCG, a large share of
/// every figure read from it before).
fn bench_pingpong() {
    let (o, i) = host::echo_by_host(64);
    let t0 = sys::clock_monotonic_ns();
    for _ in 0..500 {
        o.blocking_write_and_flush(&[1]).unwrap_or_else(|e| fail("bench-pingpong", &format!("{e:?}")));
        let b = i.blocking_read(1).unwrap_or_else(|e| fail("bench-pingpong", &format!("{e:?}")));
        check!("bench-pingpong", b.len() == 1, "echo returned {} bytes", b.len());
    }
    say(&format!("bench-pingpong: rtt_ns={}", (sys::clock_monotonic_ns() - t0) / 500));
}

/// 10,000 host calls that do next to nothing, more than a capsule may have unwritten in
/// the audit queue (4,096): a log whose sink fails stops it before the end, however far
/// behind the capsule its drainer runs.
fn audit_flood() {
    let far = host::timer(3_600_000 * MS);
    for _ in 0..10_000 {
        check!("audit-flood", !far.ready(), "a timer an hour away is ready");
    }
}

/// 1000 host calls that do next to nothing (`ready` on a timer far away): what the
/// component glue and the envelope cost per call, for the round trip's breakdown.
fn bench_calls() {
    let far = host::timer(3_600_000 * MS);
    let t0 = sys::clock_monotonic_ns();
    for _ in 0..1000 {
        check!("bench-calls", !far.ready(), "a timer an hour away is ready");
    }
    say(&format!("bench-calls: call_ns={}", (sys::clock_monotonic_ns() - t0) / 1000));
}

/// 1000 rounds of a 4 KiB write and a 4 KiB read through a pipe.
fn bench_read_4k() {
    let (o, i) = host::pipe(64 << 10);
    let block = vec![7u8; 4096];
    for _ in 0..1000 {
        o.check_write().unwrap();
        o.write(&block).unwrap();
        let got = i.read(4096).unwrap();
        check!("bench-read-4k", got.len() == 4096, "read {} bytes", got.len());
    }
}

/// 64 MiB spliced in the host from a zero source into a null sink.
fn bench_splice() {
    let zeroes = host::zeroes_by_host(64 << 20);
    let sink = host::null_sink();
    let mut moved = 0u64;
    let t0 = sys::clock_monotonic_ns();
    loop {
        match sink.blocking_splice(&zeroes, 1 << 20) {
            Ok(n) => moved += n,
            Err(StreamError::Closed) => break,
            Err(e) => fail("bench-splice", &format!("{e:?}")),
        }
    }
    let ns = sys::clock_monotonic_ns() - t0;
    check!("bench-splice", moved == 64 << 20, "moved {moved} bytes");
    say(&format!("bench-splice: total_ns={ns}"));
}

// ---- astrid:sys ----

fn sys_calls() {
    let s = "sys";
    let t0 = sys::clock_monotonic_ns();
    sys::sleep_ns(20 * MS).unwrap_or_else(|e| fail(s, &format!("sleep: {e:?}")));
    let t1 = sys::clock_monotonic_ns();
    check!(s, t1 - t0 >= 20 * MS, "slept only {} ns", t1 - t0);
    check!(s, sys::clock_ms() > 1_700_000_000_000, "wall clock {} is before 2023", sys::clock_ms());
    check!(s, matches!(sys::sleep_ns(61_000 * MS), Err(sys::ErrorCode::TooLarge)), "a 61 s sleep was accepted");
    check!(s, matches!(sys::random_bytes(4097), Err(sys::ErrorCode::TooLarge)), "4097 random bytes were given");
    let a = sys::random_bytes(32).unwrap_or_else(|e| fail(s, &format!("random: {e:?}")));
    let b = sys::random_bytes(32).unwrap();
    check!(s, a.len() == 32 && a != b && a.iter().any(|&x| x != 0), "random bytes {a:?} / {b:?}");
    check!(s, matches!(sys::get_config("greeting"), Ok(Some(ref v)) if v == "hello"), "config greeting");
    check!(s, matches!(sys::get_config("absent"), Ok(None)), "config absent");
    check!(s, matches!(sys::get_config("astrid.secret"), Err(sys::ErrorCode::ConfigKeyReserved)), "reserved key");
    let caller = sys::get_caller().unwrap();
    check!(s, caller.principal.is_some() && !caller.source_id.is_empty(), "caller {:?}", caller.source_id);
    check!(s, sys::enumerate_capabilities().is_empty(), "capabilities without a manifest");
    sys::log(sys::LogLevel::Info, "hello from astrid:sys\n@@audit not an audit line");
    sys::signal_ready();
}

fn random() {
    let bytes = sys::random_bytes(16).unwrap_or_else(|e| fail("random", &format!("{e:?}")));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    say(&format!("random: {hex}"));
}

fn cancel_sleep() {
    host::cancel_self_after(50 * MS);
    check!("cancel-sleep", matches!(sys::sleep_ns(30_000 * MS), Err(sys::ErrorCode::Cancelled)), "sleep not cancelled");
}

// ---- astrid:kv ----

fn kv_calls() {
    let s = "kv";
    check!(s, matches!(kv::kv_get("missing"), Ok(None)), "a missing key has a value");
    kv::kv_set("app/1", b"one").unwrap();
    kv::kv_set("app/2", b"two").unwrap();
    kv::kv_set("app/3", b"three").unwrap();
    kv::kv_set("other", b"x").unwrap();
    check!(s, matches!(kv::kv_get("app/2"), Ok(Some(ref v)) if v == b"two"), "get app/2");
    let keys = kv::kv_list_keys("app/").unwrap();
    check!(s, keys == ["app/1", "app/2", "app/3"], "list {keys:?}");
    let page = kv::kv_list_keys_page("app/", None, 2).unwrap();
    check!(s, page.keys == ["app/1", "app/2"] && page.next_cursor.as_deref() == Some("app/2"), "page 1 {:?}", page.keys);
    let page = kv::kv_list_keys_page("app/", page.next_cursor.as_deref(), 2).unwrap();
    check!(s, page.keys == ["app/3"] && page.next_cursor.is_none(), "page 2 {:?}", page.keys);
    check!(s, matches!(kv::kv_cas("app/1", Some(b"nope"), b"1"), Err(kv::ErrorCode::CasMismatch)), "cas mismatch");
    kv::kv_cas("app/1", Some(b"one"), b"uno").unwrap();
    kv::kv_cas("fresh", None, b"new").unwrap();
    check!(s, matches!(kv::kv_set("", b""), Err(kv::ErrorCode::InvalidKey)), "empty key");
    check!(s, matches!(kv::kv_set("big", &vec![0u8; (1 << 20) + 1]), Err(kv::ErrorCode::TooLarge)), "1 MiB + 1 value");
    check!(s, matches!(kv::kv_set("q", &vec![0u8; 70_000]), Err(kv::ErrorCode::Quota)), "quota (64 KiB in this test)");
    check!(s, kv::kv_clear_prefix("app/").unwrap() == 3, "clear-prefix");
    kv::kv_delete("other").unwrap();
    let left = kv::kv_list_keys("").unwrap();
    check!(s, left == ["fresh"], "left {left:?}");
}

// ---- packages the image refuses with their own typed errors ----

fn refusals() {
    let s = "refusals";
    check!(
        s,
        matches!(uplink::host::uplink_register("u", "p", uplink::host::UplinkProfile::Chat), Err(uplink::host::ErrorCode::CapabilityDenied)),
        "uplink-register"
    );
    check!(s, matches!(uplink::host::uplink_send("u", "x", "hi"), Err(uplink::host::ErrorCode::CapabilityDenied)), "uplink-send");
    let req = identity::host::IdentityResolveRequest { platform: "p".into(), platform_user_id: "x".into() };
    check!(s, matches!(identity::host::identity_resolve(&req), Err(identity::host::ErrorCode::CapabilityDenied)), "identity-resolve");
    check!(s, matches!(identity::host::identity_list_links("u"), Err(identity::host::ErrorCode::CapabilityDenied)), "identity-list-links");
    let ask = approval::host::ApprovalRequest { action: "delete".into(), target_resource: "/".into() };
    check!(
        s,
        matches!(approval::host::request_approval(&ask), Ok(approval::host::ApprovalResponse { decision: approval::host::ApprovalDecision::Denied })),
        "request-approval"
    );
    check!(s, matches!(elicit::host::has_secret("k"), Err(elicit::host::ErrorCode::NotInLifecycle)), "has-secret");
}

// ---- astrid:ipc ----

fn ipc_self() {
    let s = "ipc";
    let sub = ipc::subscribe("demo.*").unwrap_or_else(|e| fail(s, &format!("subscribe: {e:?}")));
    let ready = sub.subscribe_readiness();
    check!(s, !ready.ready(), "ready before any message");
    ipc::publish("demo.a", "hi").unwrap();
    ipc::publish("other.x", "not for us").unwrap();
    check!(s, ready.ready(), "not ready after a publish");
    let env = sub.poll().unwrap();
    check!(s, env.messages.len() == 1, "{} messages", env.messages.len());
    let m = &env.messages[0];
    check!(s, m.topic == "demo.a" && m.payload == "hi" && !m.source_id.is_empty(), "message {:?}", m.topic);
    check!(s, matches!(m.principal, ipc::PrincipalAttribution::Verified(_)), "principal not verified");
    check!(s, matches!(sub.recv(50), Err(ipc::ErrorCode::Timeout)), "recv did not time out");
    check!(s, matches!(ipc::publish("bad topic", "x"), Err(ipc::ErrorCode::InvalidInput)), "bad topic accepted");
    check!(s, matches!(ipc::publish("demo.big", &"x".repeat((1 << 20) + 1)), Err(ipc::ErrorCode::InvalidInput)), "oversized payload");
    check!(s, matches!(ipc::publish_as("demo.a", "x", "root"), Err(ipc::ErrorCode::CapabilityDenied)), "publish-as");
    drop(ready);
    let mut many = Vec::new();
    for _ in 0..127 {
        many.push(ipc::subscribe("q.*").unwrap());
    }
    check!(s, matches!(ipc::subscribe("q.*"), Err(ipc::ErrorCode::Quota)), "129th subscription");
}

const ROUNDS: u32 = 20;
const BENCH_ROUNDS: u32 = 200;

/// Sends `rounds` pings and waits for each pong (the test through astrid:io `poll` on
/// the subscription's readiness pollable, the benchmark with `recv`); says the mean
/// round trip (`rtt_ns=`).
fn ping(rounds: u32) {
    let s = if rounds == ROUNDS { "ping" } else { "bench-ipc-ping" };
    let sub = ipc::subscribe("pp.pong").unwrap();
    let ready = sub.subscribe_readiness();
    let timer_guard = host::timer(30_000 * MS);
    // The partner may not be listening yet: repeat the first ping until it answers.
    let mut answered = false;
    for _ in 0..100 {
        ipc::publish("pp.ping", "0").unwrap();
        if sub.recv(100).is_ok() {
            answered = true;
            break;
        }
    }
    check!(s, answered, "no pong to the first ping");
    let t0 = sys::clock_monotonic_ns();
    for i in 1..rounds {
        ipc::publish("pp.ping", &i.to_string()).unwrap();
        let env = if rounds == ROUNDS {
            // The test's way: wait on the subscription's pollable, then take.
            let fired = poll(&[&ready, &timer_guard]).unwrap_or_else(|e| fail(s, &format!("poll: {e:?}")));
            check!(s, fired == vec![0], "round {i}: poll returned {fired:?}");
            sub.poll().unwrap()
        } else {
            // The benchmark's: one blocking receive, as the pong side answers (a round
            // trip is then one publish and one receive a side).
            sub.recv(30_000).unwrap_or_else(|e| fail(s, &format!("recv: {e:?}")))
        };
        check!(s, env.messages.iter().any(|m| m.payload == i.to_string()), "round {i}: wrong pong");
    }
    let rtt = (sys::clock_monotonic_ns() - t0) / u64::from(rounds - 1);
    say(&format!("ipc round trip: rtt_ns={rtt}"));
    ipc::publish("pp.ping", "stop").unwrap();
}

/// Answers every ping with a pong of the same payload until told to stop.
fn pong() {
    let s = "pong";
    let sub = ipc::subscribe("pp.ping").unwrap();
    loop {
        let env = sub.recv(30_000).unwrap_or_else(|e| fail(s, &format!("recv: {e:?}")));
        for m in env.messages {
            if m.payload == "stop" {
                return;
            }
            ipc::publish("pp.pong", &m.payload).unwrap();
        }
    }
}

/// Ordinary work beside an attacker: a timer, pipes, kv, and an ipc round trip to itself
/// while holding a `**` subscription the attacker's flood reaches.
fn victim() {
    let s = "victim";
    let _everything = ipc::subscribe("**").unwrap_or_else(|e| fail(s, &format!("subscribe **: {e:?}")));
    let own = ipc::subscribe("victim.*").unwrap_or_else(|e| fail(s, &format!("subscribe: {e:?}")));
    block_timer();
    streams();
    kv::kv_set("victim", b"still here").unwrap_or_else(|e| fail(s, &format!("kv set: {e:?}")));
    check!(s, kv::kv_get("victim").ok().flatten().as_deref() == Some(&b"still here"[..]), "kv get");
    for i in 0..20 {
        ipc::publish("victim.self", &i.to_string()).unwrap_or_else(|e| fail(s, &format!("publish: {e:?}")));
        let env = own.recv(10_000).unwrap_or_else(|e| fail(s, &format!("recv {i}: {e:?}")));
        check!(s, env.messages.iter().any(|m| m.payload == i.to_string()), "round {i}: own message lost");
    }
    say("ok victim");
}

/// The fan-out attack: 128 subscriptions to `**` and 1 MiB payloads. Every publish is
/// accepted; what the subscriptions hold stays within the capsule's 16 MiB of queue.
fn hostile_ipc() {
    let s = "hostile-ipc";
    let subs: Vec<_> = (0..128).map(|i| ipc::subscribe("**").unwrap_or_else(|e| fail(s, &format!("subscription {i}: {e:?}")))).collect();
    let payload = "x".repeat(1 << 20);
    for i in 0..40 {
        ipc::publish("flood.x", &payload).unwrap_or_else(|e| fail(s, &format!("publish {i}: {e:?}")));
    }
    let (mut held, mut dropped) = (0usize, 0u64);
    for sub in &subs {
        let env = sub.poll().unwrap_or_else(|e| fail(s, &format!("poll: {e:?}")));
        held += env.messages.iter().filter(|m| m.payload.len() == 1 << 20).count();
        dropped += env.dropped;
    }
    check!(s, held > 0 && held <= 16, "the subscriptions held {held} MiB of flood");
    check!(s, dropped > 0, "no loss was reported");
    say(&format!("ok hostile-ipc: held {held} MiB, {dropped} dropped"));
}

/// Connection churn. Streams whose halves are kept still count after the stream
/// handles are dropped, so the ninth is `quota`; once everything is dropped the
/// connections are free again, however many come and go.
fn hostile_net() {
    let s = "hostile-net";
    let listener = net::bind_tcp("127.0.0.1", 0).unwrap_or_else(|e| fail(s, &format!("bind: {e:?}")));
    let addr = listener.local_addr().unwrap();
    let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| fail(s, &format!("address {addr}")));
    let pair = |what: &str| {
        let client = net::connect_tcp("127.0.0.1", port).unwrap_or_else(|e| fail(s, &format!("{what}: connect: {e:?}")));
        let server = listener.accept().unwrap_or_else(|e| fail(s, &format!("{what}: accept: {e:?}")));
        (client, server)
    };
    // Four connections (eight streams: both ends are this capsule's), halves kept.
    let mut kept = Vec::new();
    for i in 0..4 {
        let (client, server) = pair(&format!("kept {i}"));
        kept.push((client.read_stream(), client.write_stream(), server.subscribe_readable(), server.read_stream()));
    }
    check!(s, matches!(net::connect_tcp("127.0.0.1", port), Err(net::ErrorCode::Quota)), "a connection past the quota while halves live");
    // A UDP socket's pollable keeps it counted too.
    let udp: Vec<_> = (0..4).map(|_| net::udp_bind("127.0.0.1", 0).unwrap().subscribe_readable()).collect();
    check!(s, matches!(net::udp_bind("127.0.0.1", 0), Err(net::ErrorCode::Quota)), "a fifth UDP socket while pollables live");
    drop(udp);
    drop(kept);
    for i in 0..200 {
        let (client, server) = pair(&format!("churn {i}"));
        let (w, r) = (client.write_stream(), server.read_stream());
        w.blocking_write_and_flush(b"ping").unwrap_or_else(|e| fail(s, &format!("churn {i}: write: {e:?}")));
        let got = r.blocking_read(4).unwrap_or_else(|e| fail(s, &format!("churn {i}: read: {e:?}")));
        check!(s, got == b"ping", "churn {i}: read {got:?}");
        if i % 2 == 0 {
            // Half the time the stream handles go first, the halves after.
            drop((client, server));
        }
    }
    check!(s, net::udp_bind("127.0.0.1", 0).is_ok(), "UDP after its pollables were dropped");
    say("ok hostile-net");
}

/// Every scalable host-side budget pushed at once: kv filled to `quota`, 16 `**`
/// subscriptions under a flood of 1 MiB payloads, and four streams each assembling a
/// 10 MB frame. Where the image's heap cannot hold every capsule's worst case, each
/// stops at the share the image gave it; the frames never all fit (two at most).
fn hostile_heap() {
    let s = "hostile-heap";
    let chunk = vec![7u8; 64 << 10];
    let mut stored = 0usize;
    loop {
        match kv::kv_set(&format!("k{stored}"), &chunk) {
            Ok(()) => stored += 1,
            Err(kv::ErrorCode::Quota) => break,
            Err(e) => fail(s, &format!("kv set {stored}: {e:?}")),
        }
        check!(s, stored < 1024, "kv took 64 MiB without a quota");
    }
    let subs: Vec<_> = (0..16).map(|i| ipc::subscribe("**").unwrap_or_else(|e| fail(s, &format!("subscription {i}: {e:?}")))).collect();
    let payload = "x".repeat(1 << 20);
    for i in 0..24 {
        ipc::publish("flood.heap", &payload).unwrap_or_else(|e| fail(s, &format!("publish {i}: {e:?}")));
    }
    let listener = net::bind_tcp("127.0.0.1", 0).unwrap_or_else(|e| fail(s, &format!("bind: {e:?}")));
    let addr = listener.local_addr().unwrap();
    let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| fail(s, &format!("address {addr}")));
    let mut head = 10_000_000u32.to_be_bytes().to_vec();
    head.extend(vec![1u8; 128 << 10]);
    let (mut kept, mut refused) = (Vec::new(), 0);
    for i in 0..4 {
        let client = net::connect_tcp("127.0.0.1", port).unwrap_or_else(|e| fail(s, &format!("connect {i}: {e:?}")));
        let server = listener.accept().unwrap_or_else(|e| fail(s, &format!("accept {i}: {e:?}")));
        let w = client.write_stream();
        for piece in head.chunks(4096) {
            w.blocking_write_and_flush(piece).unwrap_or_else(|e| fail(s, &format!("frame {i}: write: {e:?}")));
        }
        match server.read() {
            Ok(net::NetReadStatus::Pending) => {}
            Err(net::ErrorCode::Quota) => refused += 1,
            Ok(other) => fail(s, &format!("frame {i}: read {:?}", matches!(other, net::NetReadStatus::Closed))),
            Err(e) => fail(s, &format!("frame {i}: read: {e:?}")),
        }
        kept.push((w, client, server));
    }
    check!(s, refused >= 2, "{} of four 10 MB frames were assembled at once", 4 - refused);
    let held: usize = subs.iter().map(|sub| sub.poll().map(|e| e.messages.len()).unwrap_or(0)).sum();
    say(&format!("ok hostile-heap: kv {} KiB, ipc held {held} MiB, {refused} of 4 frames refused", stored * 64));
}

/// A steady trickle of host calls (a 10 ms sleep each) for up to a minute: something
/// for the audit log to record while a test breaks its sink.
fn tick() {
    for i in 0..6000 {
        sys::sleep_ns(10 * MS).unwrap_or_else(|e| fail("tick", &format!("sleep {i}: {e:?}")));
    }
}
