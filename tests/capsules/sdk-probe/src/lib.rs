//! sdk-probe: an Astrid SDK 0.7.2 capsule whose background `run` plays the scenario named
//! by its `scenario` config key (ASTRID_CAPSULE_CONFIG or its manifest's `[config]`).
//! It uses the SDK's wrappers where they exist and the SDK's raw `astrid_sys` bindings
//! for what the wrappers do not expose (stream halves, pollables, splice). Every check
//! that fails logs `sdk-probe FAIL <scenario>: <why>` and traps; success logs
//! `sdk-probe ok <scenario>`.

use astrid_sdk::astrid_sys::astrid::io::poll;
use astrid_sdk::astrid_sys::astrid::io::streams::StreamError;
use astrid_sdk::astrid_sys::astrid::net::host::{self as net, ErrorCode, NetReadStatus, ShutdownHow};
use astrid_sdk::prelude::*;

#[derive(Default)]
pub struct SdkNet;

fn say(text: &str) {
    log::info(format!("sdk-probe {text}"));
}

fn fail(scenario: &str, why: &str) -> ! {
    log::error(format!("sdk-probe FAIL {scenario}: {why}"));
    panic!("sdk-probe FAIL {scenario}: {why}");
}

macro_rules! check {
    ($s:expr, $cond:expr, $($why:tt)+) => {
        if !$cond {
            fail($s, &format!($($why)+));
        }
    };
}

fn config(key: &str) -> String {
    astrid_sdk::env::var(key).unwrap_or_default()
}

fn port(key: &str, default: u16) -> u16 {
    config(key).parse().unwrap_or(default)
}

#[capsule]
impl SdkNet {
    #[astrid::run]
    fn run(&self) -> Result<(), SysError> {
        let scenario = config("scenario");
        match scenario.as_str() {
            "echo-server" => echo_server(&scenario),
            "connect-out" => connect_out(&scenario),
            "host-loopback" => host_loopback(&scenario),
            "pair" => pair(&scenario),
            "self-connect" => self_connect(&scenario),
            "cancel-accept" => cancel_accept(&scenario),
            "cancel-read" => cancel_read(&scenario),
            "udp" => udp(&scenario),
            "refusals" => refusals(&scenario),
            "policy" => policy(&scenario),
            "ipc-ping" => ipc_ping(&scenario),
            "ipc-pong" => ipc_pong(&scenario),
            "ipc-watch" => ipc_watch(&scenario),
            "manifest-gates" => manifest_gates(&scenario),
            "kv-boots" => kv_boots(&scenario),
            "handle-owner" => handle_owner(&scenario),
            "udp-out" => udp_out(&scenario),
            "cancel-recv" => cancel_recv(&scenario),
            "cancel-sleep" => cancel_sleep(&scenario),
            "handle-thief" => handle_thief(&scenario),
            other => fail(other, "unknown scenario (set the `scenario` config key)"),
        }
        say(&format!("ok {scenario}"));
        Ok(())
    }
}

/// Accepts connections on 127.0.0.1:`port` (published to the host by the run command)
/// and echoes each until the client's end of file: the first through `splice` from
/// `read-stream` to `write-stream` (bytes move in the host), the second through
/// `read-bytes`/`write-bytes`; `modes` (e.g. `rw+splice+rw`) chooses otherwise.
fn echo_server(s: &str) {
    let listener = net::bind_tcp("127.0.0.1", port("port", 7700)).unwrap_or_else(|e| fail(s, &format!("bind: {e:?}")));
    let addr = listener.local_addr().unwrap_or_else(|e| fail(s, &format!("local-addr: {e:?}")));
    say(&format!("listening on {addr}"));
    // One echo mode per connection, in order (`modes=rw;splice` is not possible: the
    // config list separator; use `modes=rw+splice`).
    let modes = config("modes");
    let modes: Vec<&str> = if modes.is_empty() { vec!["splice", "rw"] } else { modes.split('+').collect() };
    for mode in modes {
        let stream = listener.accept().unwrap_or_else(|e| fail(s, &format!("accept: {e:?}")));
        let peer = stream.peer_addr().unwrap_or_else(|e| fail(s, &format!("peer-addr: {e:?}")));
        let moved = if mode == "splice" {
            let (input, output) = (stream.read_stream(), stream.write_stream());
            let mut moved = 0u64;
            loop {
                match output.blocking_splice(&input, 1 << 20) {
                    Ok(n) => moved += n,
                    Err(StreamError::Closed) => break,
                    Err(e) => fail(s, &format!("splice: {e:?}")),
                }
            }
            output.blocking_flush().unwrap_or_else(|e| fail(s, &format!("flush: {e:?}")));
            say(&format!("echoed {moved} bytes to {peer} by splice"));
            moved
        } else {
            let mut moved = 0u64;
            loop {
                match stream.read_bytes(64 << 10) {
                    Ok(bytes) => {
                        let mut rest = &bytes[..];
                        while !rest.is_empty() {
                            let n = stream.write_bytes(rest).unwrap_or_else(|e| fail(s, &format!("write-bytes: {e:?}")));
                            rest = &rest[n as usize..];
                        }
                        moved += bytes.len() as u64;
                    }
                    Err(ErrorCode::Closed) => break,
                    Err(e) => fail(s, &format!("read-bytes: {e:?}")),
                }
            }
            say(&format!("echoed {moved} bytes to {peer} by read-bytes/write-bytes"));
            moved
        };
        let _ = moved;
    }
}

/// Connects to `host`:`port` outside the image (allowed by the manifest), sends a line
/// and expects the server to answer with it upper-cased.
fn connect_out(s: &str) {
    let host = config("host");
    let stream = net::connect_tcp(&host, port("port", 0)).unwrap_or_else(|e| fail(s, &format!("connect to {host}: {e:?}")));
    let sent = b"hello from a capsule\n";
    let mut rest = &sent[..];
    while !rest.is_empty() {
        let n = stream.write_bytes(rest).unwrap_or_else(|e| fail(s, &format!("write: {e:?}")));
        rest = &rest[n as usize..];
    }
    stream.set_read_timeout(Some(20_000)).unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match stream.read_bytes(1024) {
            Ok(b) if b.is_empty() => fail(s, "no answer within 20 s"),
            Ok(b) => got.extend(b),
            Err(e) => fail(s, &format!("read: {e:?} after {got:?}")),
        }
    }
    check!(s, got == sent.to_ascii_uppercase(), "answer {:?}", String::from_utf8_lossy(&got));
    say(&format!("the host answered {:?}", String::from_utf8_lossy(&got).trim()));
}

/// A listener on the host's 127.0.0.1:`port` must be out of reach: loopback is the
/// image's own, so the connect is refused inside the image.
fn host_loopback(s: &str) {
    let p = port("port", 0);
    for host in ["127.0.0.1", "localhost", "::1"] {
        match net::connect_tcp(host, p) {
            Err(ErrorCode::ConnectionRefused) => {}
            other => fail(s, &format!("connect {host}:{p}: expected connection-refused, got {:?}", other.map(|_| "a stream"))),
        }
    }
    say(&format!("127.0.0.1:{p} is the image's own: connection refused"));
}

/// The next length-prefixed frame: `read` does not wait, so wait for the stream to be
/// readable through astrid:io `poll` until a whole frame is there.
fn read_frame(s: &str, stream: &net::TcpStream) -> Vec<u8> {
    loop {
        match stream.read() {
            Ok(NetReadStatus::Data(d)) => return d,
            Ok(NetReadStatus::Pending) => {
                let p = stream.subscribe_readable();
                if let Err(e) = poll::poll(&[&p]) {
                    fail(s, &format!("poll: {e:?}"));
                }
            }
            other => fail(s, &format!("read: {other:?}")),
        }
    }
}

/// Two capsules over 127.0.0.1: whoever binds port 7300 first serves, the other
/// connects (retrying until the server is up) and they exchange framed messages.
fn pair(s: &str) {
    match net::bind_tcp("127.0.0.1", 7300) {
        Ok(listener) => {
            let stream = match listener.poll_accept(30_000) {
                Ok(Some(stream)) => stream,
                other => fail(s, &format!("accept: {:?}", other.map(|o| o.is_some()))),
            };
            let frame = read_frame(s, &stream);
            check!(s, frame == b"ping over loopback", "server got {frame:?}");
            stream.write(b"pong over loopback").unwrap_or_else(|e| fail(s, &format!("write: {e:?}")));
            say("server: answered the client");
        }
        Err(ErrorCode::AddressInUse) => {
            let started = astrid_sdk::time::monotonic();
            let stream = loop {
                match net::connect_tcp("localhost", 7300) {
                    Ok(stream) => break stream,
                    Err(ErrorCode::ConnectionRefused) if (astrid_sdk::time::monotonic() - started).as_secs() < 30 => {
                        let _ = astrid_sdk::time::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => fail(s, &format!("connect: {e:?}")),
                }
            };
            check!(s, stream.peer_addr().ok().as_deref() == Some("127.0.0.1:7300"), "peer {:?}", stream.peer_addr());
            stream.write(b"ping over loopback").unwrap_or_else(|e| fail(s, &format!("write: {e:?}")));
            stream.set_read_timeout(Some(30_000)).unwrap();
            let reply = read_frame(s, &stream);
            check!(s, reply == b"pong over loopback", "client got {reply:?}");
            say("client: the server answered");
        }
        Err(e) => fail(s, &format!("bind: {e:?}")),
    }
}

/// One capsule connects to its own listener (port 0: the image picks a port).
fn self_connect(s: &str) {
    let listener = net::bind_tcp("127.0.0.1", 0).unwrap_or_else(|e| fail(s, &format!("bind: {e:?}")));
    let addr = listener.local_addr().unwrap();
    let port: u16 = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| fail(s, &addr));
    check!(s, port >= 49152, "ephemeral port {port}");
    let ready = listener.subscribe_readiness();
    check!(s, !ready.ready(), "listener ready before any connect");
    let client = net::connect_tcp("127.0.0.1", port).unwrap_or_else(|e| fail(s, &format!("connect: {e:?}")));
    check!(s, ready.ready(), "the readiness pollable did not fire on a connect");
    let server = listener.accept().unwrap_or_else(|e| fail(s, &format!("accept: {e:?}")));
    check!(s, server.peer_addr().ok() == client.local_addr().ok(), "addresses {:?} {:?}", server.peer_addr(), client.local_addr());
    check!(s, client.write_bytes(b"abc").ok() == Some(3), "write");
    check!(s, server.peek(16).unwrap() == b"abc", "peek");
    check!(s, server.read_bytes(16).unwrap() == b"abc", "read after peek");
    // Options are kept; a read with a timeout and nothing there answers empty.
    server.set_read_timeout(Some(30)).unwrap();
    check!(s, server.read_timeout().unwrap() == Some(30), "read-timeout");
    check!(s, server.read_bytes(16).unwrap().is_empty(), "a timed-out read is empty");
    server.set_nodelay(true).unwrap();
    check!(s, server.nodelay().ok() == Some(true), "nodelay");
    check!(s, client.set_hop_limit(0).is_err(), "hop limit 0 accepted");
    // A half-close: the server sees end of file after the bytes before it.
    client.write_bytes(b"last").unwrap();
    client.shutdown(ShutdownHow::Send).unwrap();
    server.set_read_timeout(None).unwrap();
    check!(s, server.read_bytes(16).unwrap() == b"last", "bytes before the close");
    check!(s, matches!(server.read_bytes(16), Err(ErrorCode::Closed)), "end of file after shutdown(send)");
    check!(s, matches!(client.write_bytes(b"x"), Err(ErrorCode::Closed)), "write after shutdown(send)");
    // Four listeners per capsule, then `quota`.
    let more: Vec<_> = (0..3).map(|_| net::bind_tcp("localhost", 0).unwrap()).collect();
    check!(s, matches!(net::bind_tcp("localhost", 0), Err(ErrorCode::Quota)), "a fifth listener");
    drop(more);
    check!(s, matches!(net::bind_tcp("127.0.0.1", port), Err(ErrorCode::AddressInUse)), "the same port twice");
    check!(s, matches!(net::bind_tcp("0.0.0.0", 8080), Err(ErrorCode::AddressNotAvailable)), "a wildcard bind");
    drop(listener);
    check!(s, matches!(net::connect_tcp("127.0.0.1", port), Err(ErrorCode::ConnectionRefused)), "connect after the listener is gone");
    say(&format!("connected to itself on port {port}"));
}

/// Blocks in `accept` with nobody connecting until the run's deadline cancels it.
fn cancel_accept(s: &str) {
    let listener = net::bind_tcp("127.0.0.1", 0).unwrap();
    say("waiting in accept");
    match listener.accept() {
        Err(ErrorCode::Closed) => say("accept ended by the cancellation"),
        other => fail(s, &format!("accept: {:?}", other.map(|_| "a stream"))),
    }
}

/// Blocks in `blocking-read` on a socket's `read-stream` until the deadline cancels it.
fn cancel_read(s: &str) {
    let listener = net::bind_tcp("127.0.0.1", 0).unwrap();
    let addr = listener.local_addr().unwrap();
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let _client = net::connect_tcp("127.0.0.1", port).unwrap();
    let server = listener.accept().unwrap();
    let input = server.read_stream();
    say("waiting in blocking-read");
    match input.blocking_read(16) {
        Err(StreamError::Closed) => say("blocking-read ended by the cancellation"),
        other => fail(s, &format!("blocking-read: {other:?}")),
    }
}

/// UDP on the image's loopback: datagrams keep their boundaries and sender; a
/// connected socket filters other peers.
fn udp(s: &str) {
    let a = net::udp_bind("127.0.0.1", 0).unwrap_or_else(|e| fail(s, &format!("bind: {e:?}")));
    let b = net::udp_bind("127.0.0.1", 0).unwrap();
    let port_of = |sock: &net::UdpSocket| -> u16 { sock.local_addr().unwrap().rsplit_once(':').unwrap().1.parse().unwrap() };
    let (pa, pb) = (port_of(&a), port_of(&b));
    check!(s, a.send_to(b"one", "127.0.0.1", pb).ok() == Some(3), "send-to");
    check!(s, a.send_to(b"two", "localhost", pb).ok() == Some(3), "send-to localhost");
    b.set_read_timeout(Some(5_000)).unwrap();
    let d = b.recv_from(100).unwrap().unwrap_or_else(|| fail(s, "no datagram"));
    check!(s, d.data == b"one" && d.peer_port == pa, "first datagram {:?} from {}", d.data, d.peer_port);
    check!(s, b.recv_from(100).unwrap().map(|d| d.data) == Some(b"two".to_vec()), "second datagram");
    b.set_read_timeout(Some(20)).unwrap();
    check!(s, b.recv_from(100).unwrap().is_none(), "a timed-out recv is none");
    b.connect("127.0.0.1", pa).unwrap();
    check!(s, b.peer_addr().ok() == Some(Some(format!("127.0.0.1:{pa}"))), "peer-addr");
    let c = net::udp_bind("127.0.0.1", 0).unwrap();
    c.send_to(b"stranger", "127.0.0.1", pb).unwrap();
    a.send_to(b"friend", "127.0.0.1", pb).unwrap();
    check!(s, b.recv(100).unwrap() == Some(b"friend".to_vec()), "connected recv filters strangers");
    check!(s, matches!(a.send_to(&vec![0u8; 70_000], "127.0.0.1", pb), Err(ErrorCode::Unknown(_))), "an oversized datagram");
    say(&format!("datagrams between ports {pa} and {pb}"));
}

/// What the default policy (no manifest) forbids, each with its typed error.
fn policy(s: &str) {
    check!(s, matches!(net::connect_tcp("93.184.216.34", 80), Err(ErrorCode::CapabilityDenied)), "outbound without a manifest");
    check!(s, matches!(net::connect_tcp("example.org", 80), Err(ErrorCode::CapabilityDenied)), "a name without a manifest");
    check!(s, matches!(net::lookup_host("example.org"), Err(ErrorCode::CapabilityDenied)), "lookup without a manifest");
    check!(s, matches!(net::connect_tcp("not a host", 80), Err(ErrorCode::AddressNotAvailable)), "a malformed host");
    check!(s, matches!(net::bind_unix(), Err(ErrorCode::CapabilityDenied)), "bind-unix");
    check!(s, net::lookup_host("localhost").ok() == Some(Vec::new()), "lookup strips loopback");
    say("the default policy keeps capsules on the image's loopback");
}

/// Every package the image does not serve answers with its own typed refusal.
fn refusals(s: &str) {
    use astrid_sdk::astrid_sys::astrid::{fs, http1_1_0 as http, process1_1_0 as process};
    check!(s, matches!(fs::host::read_file("/etc/passwd"), Err(fs::host::ErrorCode::CapabilityDenied)), "fs read-file");
    check!(s, matches!(fs::host::fs_open("/x", fs::host::OpenMode::Read), Err(fs::host::ErrorCode::CapabilityDenied)), "fs open");
    check!(s, matches!(fs::host::fs_mkdir_all("/x/y"), Err(fs::host::ErrorCode::CapabilityDenied)), "fs mkdir-all");
    let request = http::host::HttpRequestData { url: "http://10.0.2.2/".into(), method: http::host::HttpMethod::Get, headers: vec![], body: None };
    check!(s, matches!(http::host::http_request(&request), Err(http::host::ErrorCode::CapabilityDenied)), "http request");
    check!(s, matches!(http::host::http_stream_start(&request), Err(http::host::ErrorCode::CapabilityDenied)), "http stream");
    let spawn = process::host::SpawnRequest {
        cmd: "/bin/sh".into(),
        args: vec![],
        stdin: None,
        env: vec![],
        cwd: None,
        limits: None,
        file_injections: vec![],
        label: None,
        keep_stdin_open: None,
        overflow: None,
        log_ring_bytes: None,
        max_lifetime_ms: None,
        idle_timeout_ms: None,
        exit_retention_ms: None,
    };
    check!(s, matches!(process::host::spawn(&spawn), Err(process::host::ErrorCode::CapabilityDenied)), "process spawn");
    check!(s, matches!(process::host::list_processes(None), Err(process::host::ErrorCode::CapabilityDenied)), "process list");
    // Through the SDK's own wrappers too.
    check!(s, astrid_sdk::fs::exists("/").is_err(), "sdk fs");
    check!(s, !astrid_sdk::approval::request("deploy", "prod").unwrap_or(true), "approval");
    // request-context: no stream in the image is authenticated.
    let listener = net::bind_tcp("127.0.0.1", 0).unwrap();
    let port: u16 = listener.local_addr().unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
    let client = net::connect_tcp("127.0.0.1", port).unwrap();
    use astrid_sdk::astrid_sys::astrid::request_context::host as rc;
    check!(s, matches!(rc::connection_owner(&client), Ok(None)), "connection-owner");
    check!(s, matches!(rc::connection_principal(&client), Ok(None)), "connection-principal");
    say("fs, http, process, approval and bind-unix refused with their typed errors");
}

// ---- three capsules on the ipc bus: ping and pong play, a watcher waits through
// astrid:io `poll` on its subscription's readiness pollable ----

use astrid_sdk::astrid_sys::astrid::ipc::host as bus;

/// Rounds of the ping-pong.
const ROUNDS: u32 = 50;

fn sub(s: &str, pattern: &str) -> bus::Subscription {
    bus::subscribe(pattern).unwrap_or_else(|e| fail(s, &format!("subscribe {pattern}: {e:?}")))
}

fn publish(s: &str, topic: &str, payload: &str) {
    bus::publish(topic, payload).unwrap_or_else(|e| fail(s, &format!("publish {topic}: {e:?}")));
}

/// Announces `who` as ready every 50 ms until `trio.start` arrives; returns the messages
/// that came after it in the same delivery (they are the game's first moves). The
/// announcements come back to a capsule subscribed to them: they do not end a wait.
fn announce_until_start(s: &str, inbox: &bus::Subscription, who: &str) -> Vec<bus::IpcMessage> {
    let now = astrid_sdk::time::monotonic;
    let until = now() + std::time::Duration::from_secs(30);
    while now() < until {
        publish(s, &format!("trio.ready.{who}"), who);
        let next = now() + std::time::Duration::from_millis(50);
        while now() < next {
            let left = next.saturating_sub(now()).as_millis() as u64;
            match inbox.recv(left.max(1)) {
                Ok(env) => {
                    if let Some(i) = env.messages.iter().position(|m| m.topic == "trio.start") {
                        return env.messages.into_iter().skip(i + 1).collect();
                    }
                }
                Err(bus::ErrorCode::Timeout) => {}
                Err(e) => fail(s, &format!("recv: {e:?}")),
            }
        }
    }
    fail(s, "no trio.start within 30 s");
}

fn ipc_ping(s: &str) {
    let inbox = sub(s, "trio.**");
    let mut ready = (false, false);
    let started = astrid_sdk::time::monotonic();
    while !(ready.0 && ready.1) {
        check!(s, (astrid_sdk::time::monotonic() - started).as_secs() < 30, "pong and watcher never got ready");
        if let Ok(env) = inbox.recv(1000) {
            for m in &env.messages {
                ready.0 |= m.topic == "trio.ready.pong";
                ready.1 |= m.topic == "trio.ready.watch";
            }
        }
    }
    publish(s, "trio.start", "go");
    let t0 = astrid_sdk::time::monotonic();
    for round in 0..ROUNDS {
        publish(s, "trio.ping", &round.to_string());
        'wait: loop {
            let env = inbox.recv(30_000).unwrap_or_else(|e| fail(s, &format!("round {round}: recv: {e:?}")));
            for m in &env.messages {
                if m.topic == "trio.pong" {
                    check!(s, m.payload == round.to_string(), "round {round}: pong {:?}", m.payload);
                    check!(s, m.source_id != "", "a message without its source");
                    break 'wait;
                }
            }
        }
    }
    let took = astrid_sdk::time::monotonic() - t0;
    publish(s, "trio.done", &ROUNDS.to_string());
    say(&format!("ping: {ROUNDS} rounds, {} us per round trip", took.as_micros() / u128::from(ROUNDS)));
}

fn ipc_pong(s: &str) {
    let inbox = sub(s, "trio.*");
    let mut pending = announce_until_start(s, &inbox, "pong");
    let mut answered = 0;
    while answered < ROUNDS {
        if pending.is_empty() {
            pending = inbox.recv(30_000).unwrap_or_else(|e| fail(s, &format!("recv: {e:?}"))).messages;
        }
        for m in std::mem::take(&mut pending).iter().filter(|m| m.topic == "trio.ping") {
            publish(s, "trio.pong", &m.payload);
            answered += 1;
        }
    }
    say(&format!("pong: answered {answered} pings"));
}

fn ipc_watch(s: &str) {
    let inbox = sub(s, "trio.**");
    let mut pending = announce_until_start(s, &inbox, "watch");
    let readiness = inbox.subscribe_readiness();
    let (mut pings, mut pongs, mut wakes) = (0u32, 0u32, 0u32);
    loop {
        if pending.is_empty() {
            // Wait for delivery through astrid:io poll, then drain without waiting.
            let ready = poll::poll(&[&readiness]).unwrap_or_else(|e| fail(s, &format!("poll: {e:?}")));
            check!(s, ready == vec![0], "poll answered {ready:?}");
            wakes += 1;
            let env = inbox.poll().unwrap_or_else(|e| fail(s, &format!("subscription poll: {e:?}")));
            check!(s, env.dropped == 0, "{} messages dropped", env.dropped);
            pending = env.messages;
        }
        for m in &std::mem::take(&mut pending) {
            match m.topic.as_str() {
                "trio.ping" => pings += 1,
                "trio.pong" => pongs += 1,
                "trio.done" => {
                    check!(s, pings == ROUNDS && pongs == ROUNDS, "saw {pings} pings and {pongs} pongs of {ROUNDS}");
                    say(&format!("watch: saw {pings} pings and {pongs} pongs in {wakes} wake-ups"));
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Run with a manifest granting `ipc_publish = ["allowed.*"]`, `ipc_subscribe =
/// ["allowed.**"]` and `net_bind = ["127.0.0.1:7400"]`: what it grants works, the rest
/// is `capability-denied`, and the capability queries answer from it.
fn manifest_gates(s: &str) {
    check!(s, bus::publish("allowed.x", "ok").is_ok(), "publish inside the grant");
    check!(s, matches!(bus::publish("other.x", "no"), Err(bus::ErrorCode::CapabilityDenied)), "publish outside the grant");
    check!(s, bus::subscribe("allowed.*").is_ok(), "a subscription within the grant");
    check!(s, matches!(bus::subscribe("**"), Err(bus::ErrorCode::CapabilityDenied)), "a subscription wider than the grant");
    check!(s, net::bind_tcp("127.0.0.1", 7400).is_ok(), "the granted bind");
    check!(s, matches!(net::bind_tcp("127.0.0.1", 7401), Err(ErrorCode::CapabilityDenied)), "a bind outside the grant");
    // lookup-host answers for what net_connect names, with the port given, and the
    // airlock strips private addresses.
    let found = net::lookup_host("93.184.216.34:443").unwrap_or_else(|e| fail(s, &format!("lookup: {e:?}")));
    check!(s, found == vec!["93.184.216.34:443".to_string()], "lookup answered {found:?}");
    check!(s, net::lookup_host("10.0.2.2").map(|v| v.is_empty()).unwrap_or(false), "a private address was not stripped");
    check!(s, matches!(net::lookup_host("1.1.1.1"), Err(ErrorCode::CapabilityDenied)), "a lookup the manifest does not name");
    let caps = astrid_sdk::capabilities::enumerate();
    check!(s, caps.iter().any(|c| c == "ipc_publish:allowed.*"), "capabilities {caps:?}");
    check!(s, caps.iter().any(|c| c == "net_bind:127.0.0.1:7400"), "capabilities {caps:?}");
    check!(s, astrid_sdk::env::var("greeting").unwrap_or_default() == "from the manifest", "manifest [config]");
    say(&format!("the manifest's grants hold ({} capabilities)", caps.len()));
}

/// Counts its runs in astrid:kv: with the store persisted (`--kv-dir`) the count goes
/// up across boots; what it deletes stays deleted.
fn kv_boots(s: &str) {
    use astrid_sdk::astrid_sys::astrid::kv::host as kv;
    let before = kv::kv_get("boots").unwrap_or_else(|e| fail(s, &format!("get: {e:?}")));
    let n: u32 = before.map(|b| String::from_utf8_lossy(&b).parse().unwrap_or(0)).unwrap_or(0) + 1;
    check!(s, kv::kv_get("scratch.gone").unwrap().is_none(), "a cleared key came back");
    check!(s, kv::kv_get("deleted").unwrap().is_none(), "a deleted key came back");
    kv::kv_set("boots", n.to_string().as_bytes()).unwrap_or_else(|e| fail(s, &format!("set: {e:?}")));
    kv::kv_set("big", &vec![n as u8; 200_000]).unwrap();
    kv::kv_set("deleted", b"x").unwrap();
    kv::kv_delete("deleted").unwrap();
    kv::kv_set("scratch.gone", b"y").unwrap();
    check!(s, kv::kv_clear_prefix("scratch.").unwrap() == 1, "clear-prefix");
    check!(s, kv::kv_cas("boots", Some(n.to_string().as_bytes()), n.to_string().as_bytes()).is_ok(), "cas");
    if n > 1 {
        let big = kv::kv_get("big").unwrap().unwrap_or_default();
        check!(s, big.len() == 200_000 && big.iter().all(|b| *b == n as u8), "the big value");
    }
    say(&format!("boot {n}"));
}

/// Owns a listener and tells the bus its handle number; its own use of the handle keeps
/// working whatever another capsule does with that number.
fn handle_owner(s: &str) {
    let keep: Vec<net::TcpListener> = (0..3).map(|_| net::bind_tcp("127.0.0.1", 0).unwrap()).collect();
    let handle = keep[2].handle();
    let inbox = sub(s, "handles.ack");
    for _ in 0..100 {
        publish(s, "handles.listener", &handle.to_string());
        if inbox.recv(100).is_ok() {
            break;
        }
    }
    // Give the other capsule time to try (and trap).
    let _ = astrid_sdk::time::sleep(std::time::Duration::from_millis(500));
    let addr = keep[2].local_addr().unwrap_or_else(|e| fail(s, &format!("own handle after the attempt: {e:?}")));
    say(&format!("owner: handle {handle} still mine ({addr})"));
}

/// Takes the handle number another capsule announced and uses it as its own: the image
/// must stop it (a trap), never reach the other capsule's listener.
fn handle_thief(s: &str) {
    let inbox = sub(s, "handles.listener");
    let env = inbox.recv(30_000).unwrap_or_else(|e| fail(s, &format!("recv: {e:?}")));
    let n: u32 = env.messages[0].payload.parse().unwrap();
    publish(s, "handles.ack", "got it");
    say(&format!("thief: trying handle {n}"));
    // SAFETY: deliberately not ours — the point of the test.
    let stolen = unsafe { net::TcpListener::from_handle(n) };
    let got = stolen.local_addr();
    fail(s, &format!("a foreign handle worked: {got:?}"));
}

/// UDP outside the image (manifest: `bind:0.0.0.0:*` and the server): sends a line to a
/// server on the host until it answers it upper-cased.
fn udp_out(s: &str) {
    let host = config("host");
    let p = port("port", 0);
    let sock = net::udp_bind("0.0.0.0", 0).unwrap_or_else(|e| fail(s, &format!("bind: {e:?}")));
    let local = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(500)).unwrap();
    for attempt in 0..40 {
        // The first sends may go before DHCP has finished: they fail or get lost.
        let _ = sock.send_to(b"hello over udp", &host, p);
        if let Ok(Some(d)) = sock.recv_from(1500) {
            check!(s, d.data == b"HELLO OVER UDP", "reply {:?}", String::from_utf8_lossy(&d.data));
            check!(s, d.peer_port == p, "reply from port {}", d.peer_port);
            say(&format!("udp: {local} got the host's answer after {} send(s)", attempt + 1));
            return;
        }
    }
    fail(s, "no UDP answer from the host");
}

/// Blocks in an ipc `recv` until the run's deadline cancels it.
fn cancel_recv(s: &str) {
    let inbox = sub(s, "nobody.sends.this");
    say("waiting in recv");
    match inbox.recv(60_000) {
        Err(bus::ErrorCode::Closed) => say("recv ended by the cancellation"),
        other => fail(s, &format!("recv: {:?}", other.map(|e| e.messages.len()))),
    }
}

/// Blocks in `sleep-ns` until the run's deadline cancels it.
fn cancel_sleep(s: &str) {
    use astrid_sdk::astrid_sys::astrid::sys::host as sys;
    say("sleeping");
    match sys::sleep_ns(60_000_000_000) {
        Err(sys::ErrorCode::Cancelled) => say("sleep ended by the cancellation"),
        other => fail(s, &format!("sleep: {other:?}")),
    }
}
