//! The SDK capsule world end to end — astrid:net, astrid:ipc between capsules,
//! manifests, the refused packages — with the sdk-probe capsule (built with the
//! unmodified astrid-sdk 0.7.2): hosted (a Linux process) and in the production
//! astrid.img under QEMU TCG with user networking. Host-side peers are real sockets on this machine; every wait
//! is bounded; every run's audit log must verify.

mod common;

use common::Run;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use astrid_kernel::engine::CodeTarget;
use astrid_kernel::manifest::Manifest;
use xtask::paths::Paths;
use xtask::qemu::{Boot, NetMode};
use xtask::{artifacts, capsule, compile};

struct Fixtures {
    hosted: PathBuf,
    image: PathBuf,
    wasm: PathBuf,
    cwasm: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let paths = Paths::discover();
        let art = common::artifacts();
        let wasm = capsule::build(&paths, &paths.root.join("tests/capsules/sdk-probe")).expect("building sdk-probe");
        let cwasm = paths.out.join("precompiled/sdk-probe-test.cwasm");
        std::fs::create_dir_all(cwasm.parent().unwrap()).unwrap();
        compile::compile(&wasm, Some(&cwasm), CodeTarget::HermitImage, xtask::prepare::session_key()).expect("precompiling sdk-probe");
        Fixtures { hosted: artifacts::ensure_hosted(&paths, false).expect("building hosted astrid"), image: art.astrid_img.clone(), wasm, cwasm }
    })
}


/// How a test runs the capsules: copies named for their role, with an optional
/// manifest each, and the image-wide settings.
#[derive(Default)]
struct Setup<'a> {
    /// (name, manifest text) per capsule.
    capsules: Vec<(&'a str, Option<String>)>,
    env: Vec<(&'a str, String)>,
    net: Option<NetMode>,
    /// (host port, guest port)
    publish: Vec<(u16, u16)>,
    /// A directory for the kv stores (shared as /root in the image).
    kv_dir: Option<PathBuf>,
}

fn stage(setup: &Setup<'_>, source: &Path, ext: &str) -> Vec<PathBuf> {
    let dir = common::scratch().join(format!("net-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    setup
        .capsules
        .iter()
        .map(|(name, manifest)| {
            let to = dir.join(format!("{name}.{ext}"));
            std::fs::copy(source, &to).unwrap();
            if let Some(m) = manifest {
                std::fs::write(dir.join(format!("{name}.toml")), m).unwrap();
            }
            to
        })
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The capsules as a Linux process (manifests found beside them; published ports on
/// this machine's 127.0.0.1).
fn hosted(setup: &Setup<'_>) -> std::process::Child {
    let f = fixtures();
    let files = stage(setup, &f.wasm, "wasm");
    let mut cmd = Command::new("timeout");
    cmd.arg("90").arg(&f.hosted).args(&files).envs(setup.env.iter().map(|(k, v)| (*k, v.as_str())));
    if !setup.publish.is_empty() {
        let ports: Vec<String> = setup.publish.iter().map(|(_, g)| g.to_string()).collect();
        cmd.env("ASTRID_PUBLISH", ports.join(","));
    }
    if let Some(dir) = &setup.kv_dir {
        cmd.env("ASTRID_KV_DIR", dir);
    }
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
}

fn finish_hosted(child: std::process::Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        console: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    }
}

/// The capsules in one boot of astrid.img under QEMU (manifests sent along as the run
/// command sends them).
fn in_image(setup: &Setup<'_>) -> Run {
    let f = fixtures();
    let art = common::artifacts();
    let files = stage(setup, &f.cwasm, "cwasm");
    let mut boot = Boot::new(art.loader.clone(), f.image.clone());
    boot.capsules = files;
    boot.kernel_args = setup.env.iter().map(|(k, v)| format!("env={k}={v}")).collect();
    boot.kernel_args.push(common::artifact_key_arg());
    for (i, (_, manifest)) in setup.capsules.iter().enumerate() {
        if let Some(m) = manifest {
            boot.kernel_args.push(format!("env=ASTRID_MANIFEST_{i}={}", Manifest::encode(m)));
        }
    }
    boot.net = setup.net.unwrap_or(NetMode::None);
    if let Some(dir) = &setup.kv_dir {
        boot.shared_dir = Some((dir.clone(), xtask::setup::ensure_virtiofsd(&Paths::discover()).expect("virtiofsd")));
        boot.kernel_args.push("env=ASTRID_KV_DIR=/root".into());
    }
    boot.publish = setup.publish.clone();
    boot.timeout = Duration::from_secs(150);
    Run::boot(&boot)
}

fn config(scenario: &str, extra: &str) -> Option<String> {
    Some(format!("[config]\nscenario = \"{scenario}\"\n{extra}"))
}

fn one(scenario: &str) -> Setup<'static> {
    Setup { capsules: vec![("probe", None)], env: vec![("ASTRID_CAPSULE_CONFIG", format!("scenario={scenario}"))], ..Setup::default() }
}

/// A scenario that must pass, hosted and in the image.
fn both(setup: &Setup<'_>, expect: &[&str]) {
    for run in [finish_hosted(hosted(setup)), in_image(setup)] {
        run.assert_status(0);
        for e in expect {
            run.assert_says(e);
        }
        let summary = run.assert_audit_verifies();
        assert!(summary.io_records > 0, "no io records:\n{}", run.console);
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn two_capsules_talk_over_127_0_0_1_inside_the_image() {
    let mut setup = one("pair");
    setup.capsules.push(("second", None));
    both(&setup, &["sdk-probe server: answered the client", "sdk-probe client: the server answered"]);
}

#[test]
fn a_capsule_connects_to_its_own_listener() {
    both(&one("self-connect"), &["sdk-probe ok self-connect"]);
}

#[test]
fn udp_datagrams_travel_on_the_image_loopback() {
    both(&one("udp"), &["sdk-probe ok udp"]);
}

#[test]
fn without_a_manifest_a_capsule_stays_on_the_image_loopback() {
    both(&one("policy"), &["sdk-probe ok policy"]);
}

#[test]
fn every_refused_interface_returns_its_typed_error_and_is_audited() {
    let setup = one("refusals");
    for run in [finish_hosted(hosted(&setup)), in_image(&setup)] {
        run.assert_status(0).assert_says("sdk-probe ok refusals");
        run.assert_audit_verifies();
        for f in ["astrid:fs/host.read-file", "astrid:http/host.http-request", "astrid:process/host.spawn", "astrid:approval/host.request-approval"] {
            let line = run.console.lines().find(|l| l.contains(f)).unwrap_or_else(|| panic!("{f} not audited:\n{}", run.console));
            assert!(line.contains("\"outcome\":\"refused\""), "{f} audited without its refusal: {line}");
        }
    }
}

#[test]
fn cancellation_wakes_a_capsule_blocked_in_accept() {
    let mut setup = one("cancel-accept");
    setup.env.push(("ASTRID_DEADLINE_MS", "400".into()));
    both(&setup, &["sdk-probe accept ended by the cancellation", "shut down after its cancellation"]);
}

#[test]
fn cancellation_wakes_a_capsule_blocked_reading_a_socket() {
    let mut setup = one("cancel-read");
    setup.env.push(("ASTRID_DEADLINE_MS", "400".into()));
    both(&setup, &["sdk-probe blocking-read ended by the cancellation", "shut down after its cancellation"]);
}

/// The host side of the echo test: connects (retrying while the capsule starts),
/// sends `data`, half-closes, and returns what came back.
fn echo_client(port: u16, data: &[u8], until: Instant) -> Vec<u8> {
    loop {
        assert!(Instant::now() < until, "the capsule's echo server never answered on port {port}");
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let reader = {
            let mut s = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                got
            })
        };
        if s.write_all(data).is_err() || s.shutdown(Shutdown::Write).is_err() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let got = reader.join().unwrap();
        // QEMU's forwarder accepts before the guest listens, then drops the connection.
        if got.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        return got;
    }
}

#[test]
fn a_host_client_is_echoed_through_a_published_port_by_splice_and_by_read_write() {
    // 1 MiB each: enough that the last connection is still sending when its capsule
    // returns, so the image must wait for it before exiting (lossless close).
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + i / 251) as u8).collect();
    for image in [false, true] {
        let (host_port, guest_port) = if image { (free_port(), 7700) } else { let p = free_port(); (p, p) };
        let mut setup = one("echo-server");
        setup.env[0].1.push_str(&format!(";port={guest_port}"));
        setup.net = Some(NetMode::Restricted);
        setup.publish = vec![(host_port, guest_port)];
        let client = {
            let data = data.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(120);
                [echo_client(host_port, &data, until), echo_client(host_port, &data, until)]
            })
        };
        let run = if image { in_image(&setup) } else { finish_hosted(hosted(&setup)) };
        let echoed = client.join().expect("the host client failed");
        run.assert_status(0).assert_says("by splice").assert_says("by read-bytes/write-bytes");
        for e in &echoed {
            assert!(e == &data, "echo differs: {} bytes back of {}\n{}", e.len(), data.len(), run.console);
        }
        run.assert_audit_verifies();
    }
}

/// A one-connection server on this machine's 127.0.0.1 that answers a line upper-cased;
/// returns the port and a handle saying whether it served.
fn upper_server() -> (u16, std::thread::JoinHandle<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut line = Vec::new();
                    let mut b = [0u8; 1];
                    while !line.ends_with(b"\n") && s.read(&mut b).unwrap_or(0) == 1 {
                        line.push(b[0]);
                    }
                    let _ = s.write_all(&line.to_ascii_uppercase());
                    return true;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    });
    (port, handle)
}

/// Stops `upper_server` by connecting to it ourselves; says whether anyone else did.
fn served_someone_else(port: u16, handle: std::thread::JoinHandle<bool>) -> bool {
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.write_all(b"stop\n");
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        if reply == b"STOP\n" {
            handle.join().unwrap();
            return false;
        }
    }
    handle.join().unwrap()
}

fn client_manifest(port: u16, extra: &str) -> String {
    format!(
        "[package]\nname = \"client\"\n[capabilities]\nnet_connect = [\"10.0.2.2:{port}\"]\n[limits]\nconnect_timeout_ms = 4000\n[config]\nscenario = \"connect-out\"\nhost = \"10.0.2.2\"\nport = {port}\n{extra}"
    )
}

#[test]
fn a_capsule_connects_out_to_a_host_server_when_its_manifest_allows_it() {
    let (port, server) = upper_server();
    let setup = Setup { capsules: vec![("client", Some(client_manifest(port, "")))], net: Some(NetMode::Outbound), ..Setup::default() };
    let run = in_image(&setup);
    run.assert_status(0).assert_says("[client] info: sdk-probe the host answered \"HELLO FROM A CAPSULE\"");
    assert!(server.join().unwrap(), "the host server was never reached");
    let summary = run.assert_audit_verifies();
    assert!(run.console.contains("\"capsule\":\"client\""), "the manifest's name is not the audit identity:\n{}", run.console);
    assert!(summary.io_records > 0);
}

#[test]
fn restricted_networking_lets_no_capsule_out_even_with_a_manifest() {
    let (port, server) = upper_server();
    let setup = Setup { capsules: vec![("client", Some(client_manifest(port, "")))], net: Some(NetMode::Restricted), ..Setup::default() };
    let run = in_image(&setup);
    // QEMU's restricted networking resets the attempt (refused); a timeout would be as
    // good: what matters is that nothing reached the host.
    run.assert_status(1).assert_says("sdk-probe FAIL connect-out: connect to 10.0.2.2: ErrorCode::");
    assert!(
        run.console.contains("ErrorCode::ConnectionRefused") || run.console.contains("ErrorCode::Timeout"),
        "{}",
        run.console
    );
    run.assert_audit_verifies();
    assert!(!served_someone_else(port, server), "a capsule reached the host through restricted networking");
}

#[test]
fn a_capsule_cannot_reach_a_listener_on_the_host_loopback() {
    let (port, server) = upper_server();
    let mut setup = one("host-loopback");
    setup.env[0].1.push_str(&format!(";port={port}"));
    // Even with outbound networking and a manifest naming the address.
    setup.capsules[0].1 = Some(format!("[capabilities]\nnet_connect = [\"127.0.0.1:{port}\", \"localhost:{port}\", \"[::1]:{port}\"]\n"));
    setup.net = Some(NetMode::Outbound);
    for run in [finish_hosted(hosted(&setup)), in_image(&setup)] {
        run.assert_status(0).assert_says("sdk-probe ok host-loopback");
        run.assert_audit_verifies();
    }
    assert!(!served_someone_else(port, server), "a capsule reached a listener on the host's loopback");
}

#[test]
fn a_bad_manifest_is_refused_with_its_name_and_an_audit_record() {
    let setup = Setup { capsules: vec![("bad", Some("[capabilities]\nnet_connect = \"10.0.2.2:80\"\n".into()))], ..Setup::default() };
    for run in [finish_hosted(hosted(&setup)), in_image(&setup)] {
        run.assert_status(65).assert_says("manifest").assert_says("net_connect must be a list");
        run.assert_audit_verifies();
        run.assert_says("astrid:capsule/load");
    }
}

#[test]
fn two_capsules_ping_pong_over_ipc_while_a_third_waits_on_readiness_through_poll() {
    let grants = "[capabilities]\nipc_publish = [\"trio.**\"]\nipc_subscribe = [\"trio.**\"]\n";
    let setup = Setup {
        capsules: vec![
            ("ping", config("ipc-ping", grants)),
            ("pong", config("ipc-pong", grants)),
            ("watch", config("ipc-watch", grants)),
        ],
        env: vec![("ASTRID_DEADLINE_MS", "60000".into())],
        ..Setup::default()
    };
    both(&setup, &["info: sdk-probe ok ipc-ping", "info: sdk-probe pong: answered 50 pings", "info: sdk-probe watch: saw 50 pings and 50 pongs"]);
}

#[test]
fn a_manifest_grants_what_it_names_and_nothing_else() {
    let manifest = "[package]\nname = \"gated\"\n[capabilities]\nipc_publish = [\"allowed.*\"]\nipc_subscribe = [\"allowed.**\"]\nnet_bind = [\"127.0.0.1:7400\"]\nnet_connect = [\"93.184.216.34:443\", \"10.0.2.2:*\"]\n[config]\nscenario = \"manifest-gates\"\ngreeting = \"from the manifest\"\n";
    let setup = Setup { capsules: vec![("probe", Some(manifest.into()))], ..Setup::default() };
    for run in [finish_hosted(hosted(&setup)), in_image(&setup)] {
        run.assert_status(0).assert_says("[gated] info: sdk-probe the manifest's grants hold");
        run.assert_audit_verifies();
        assert!(run.console.contains("\"principal\":\"gated\""), "the manifest's name is not the principal:\n{}", run.console);
    }
}

#[test]
fn a_persisted_kv_store_survives_a_reboot() {
    for image in [false, true] {
        let dir = common::scratch().join(format!("kv-{image}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = "[package]\nname = \"counter\"\n[config]\nscenario = \"kv-boots\"\n";
        let setup = Setup { capsules: vec![("probe", Some(manifest.into()))], kv_dir: Some(dir.clone()), ..Setup::default() };
        for boot in 1..=2 {
            let run = if image { in_image(&setup) } else { finish_hosted(hosted(&setup)) };
            run.assert_status(0).assert_says(&format!("sdk-probe boot {boot}"));
            run.assert_audit_verifies();
        }
        assert!(dir.join("counter.kv0").is_file() && dir.join("counter.kv1").is_file(), "no journals named for the principal in {}", dir.display());
    }
}

#[test]
fn a_handle_from_one_capsule_cannot_be_used_by_another() {
    let setup = Setup {
        capsules: vec![("owner", config("handle-owner", "")), ("thief", config("handle-thief", ""))],
        env: vec![("ASTRID_DEADLINE_MS", "60000".into())],
        ..Setup::default()
    };
    for run in [finish_hosted(hosted(&setup)), in_image(&setup)] {
        // The thief traps on the foreign handle number; the owner's handle stays its own.
        run.assert_status(1).assert_says("sdk-probe thief: trying handle").assert_says("unknown handle index");
        run.assert_says("sdk-probe ok handle-owner");
        assert!(!run.console.contains("a foreign handle worked"), "{}", run.console);
        let summary = run.assert_audit_verifies();
        assert_eq!(summary.capsules_ended, 2);
    }
}

#[test]
fn a_capsule_exchanges_udp_with_the_host_when_its_manifest_allows_it() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let port = server.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            let mut buf = [0u8; 1500];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((len, from)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..len].to_ascii_uppercase(), from);
                    n += 1;
                }
            }
            n
        })
    };
    let manifest = format!(
        "[capabilities]\nnet_udp = [\"bind:0.0.0.0:*\", \"10.0.2.2:{port}\"]\n[config]\nscenario = \"udp-out\"\nhost = \"10.0.2.2\"\nport = {port}\n"
    );
    let setup = Setup { capsules: vec![("udp", Some(manifest))], net: Some(NetMode::Outbound), ..Setup::default() };
    let run = in_image(&setup);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    run.assert_status(0).assert_says("got the host's answer");
    run.assert_audit_verifies();
    assert!(answered.join().unwrap() > 0);
    // Without the grant the same capsule may not bind outside the image.
    let denied = Setup {
        capsules: vec![("udp", config("udp-out", &format!("host = \"10.0.2.2\"\nport = {port}\n")))],
        net: Some(NetMode::Outbound),
        ..Setup::default()
    };
    in_image(&denied).assert_status(1).assert_says("sdk-probe FAIL udp-out: bind: ErrorCode::CapabilityDenied");
}

#[test]
fn cancellation_wakes_a_capsule_blocked_in_recv_or_sleep() {
    for (scenario, says) in [("cancel-recv", "recv ended by the cancellation"), ("cancel-sleep", "sleep ended by the cancellation")] {
        let mut setup = one(scenario);
        setup.env.push(("ASTRID_DEADLINE_MS", "400".into()));
        both(&setup, &[says, "shut down after its cancellation"]);
    }
}

// ---- hostile text, identities and published ports (issue 12) ----

/// A line on the console that starts with the audit frame but is not a verified record
/// would break the verification; besides, no line any reader splits may start with the
/// frame unless it is one.
fn assert_no_forged_frame(run: &Run) {
    run.assert_audit_verifies();
    let mut text = run.console.clone();
    for breaker in ["\r", "\u{85}", "\u{2028}", "\u{2029}", "\u{b}", "\u{c}"] {
        text = text.replace(breaker, "\n");
    }
    for line in text.split('\n').filter(|l| l.starts_with("@@audit")) {
        assert!(line.starts_with("@@audit {\"seq\":") && line.ends_with("\"}"), "a forged frame: {line:?}\n{}", run.console);
    }
}

/// A manifest value and a log line carrying a newline and an audit frame: the manifest's
/// unknown key is listed labelled, the `[config]` value comes back to the capsule
/// whole, and what the capsule logs with it stays on its own labelled line.
#[test]
fn a_manifest_value_and_a_log_line_cannot_forge_an_audit_line() {
    let hostile = r#"x\n@@audit {\"seq\":0,\"forged\":true}\r\n@@audit \u2028@@audit"#;
    let manifest = format!("[package]\nname = \"hostile\"\n[config]\nscenario = \"{hostile}\"\n[extra]\n\"{hostile}\" = 1\n");
    let setup = Setup { capsules: vec![("probe", Some(manifest))], ..Setup::default() };
    for run in [finish_hosted(hosted(&setup)), in_image(&setup)] {
        // The scenario is unknown: sdk-probe logs it back and traps.
        run.assert_status(1);
        assert_no_forged_frame(&run);
        // The log line: labelled, the breaks shown escaped.
        run.assert_says(r#"[hostile] error: sdk-probe FAIL x\n@@audit {"seq":0,"forged":true}\r\n@@audit \u{2028}@@audit: unknown scenario"#);
        // The manifest's key: listed, quoted and escaped.
        run.assert_says(r#"not enforced here: "extra.x\n@@audit {\"seq\":0,\"forged\":true}\r\n@@audit \u{2028}@@audit""#);
    }
}

/// Two capsules whose manifests name one principal: refused before either runs (65),
/// naming both, audited.
#[test]
fn two_capsules_cannot_act_as_one_principal() {
    let twin = Some("[package]\nname = \"twin\"\n[config]\nscenario = \"policy\"\n".to_string());
    let setup = Setup { capsules: vec![("first", twin.clone()), ("second", twin)], ..Setup::default() };
    for run in [finish_hosted(hosted(&setup)), in_image(&setup)] {
        run.assert_status(65).assert_says("both act as principal \"twin\"").assert_says("first.").assert_says("second.");
        assert!(!run.console.contains("sdk-probe ok"), "a capsule ran:\n{}", run.console);
        run.assert_audit_verifies();
        run.assert_says("\"fn\":\"astrid:capsule/load\"");
    }
}

/// A published port goes to the capsule whose manifest binds it: another capsule
/// trying to listen there gets `address-in-use`, while the owner's own run goes on.
#[test]
fn a_published_port_goes_only_to_the_capsule_whose_manifest_binds_it() {
    for image in [false, true] {
        let (host_port, guest_port) = if image { (free_port(), 7700) } else { let p = free_port(); (p, p) };
        let owner = format!("[capabilities]\nnet_bind = [\"127.0.0.1:{guest_port}\"]\n[config]\nscenario = \"policy\"\n");
        let intruder = format!("[config]\nscenario = \"echo-server\"\nport = {guest_port}\n");
        let mut setup = Setup { capsules: vec![("owner", Some(owner)), ("intruder", Some(intruder))], ..Setup::default() };
        setup.net = Some(NetMode::Restricted);
        setup.publish = vec![(host_port, guest_port)];
        let run = if image { in_image(&setup) } else { finish_hosted(hosted(&setup)) };
        run.assert_status(1).assert_says("sdk-probe FAIL echo-server: bind: ErrorCode::AddressInUse").assert_says("sdk-probe ok policy");
        run.assert_audit_verifies();
    }
}

/// A kv store whose journal is damaged is refused with the file and the fix (65,
/// audited), and left exactly as it was: never replaced by an empty store.
#[test]
fn a_corrupt_kv_store_refuses_its_capsule_and_is_left_untouched() {
    for image in [false, true] {
        let dir = common::scratch().join(format!("kv-corrupt-{image}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let damaged = b"\x10\0\0\0not a journal header, nor any record at all".to_vec();
        std::fs::write(dir.join("counter.kv0"), &damaged).unwrap();
        let manifest = "[package]\nname = \"counter\"\n[config]\nscenario = \"kv-boots\"\n";
        let setup = Setup { capsules: vec![("probe", Some(manifest.into()))], kv_dir: Some(dir.clone()), ..Setup::default() };
        let run = if image { in_image(&setup) } else { finish_hosted(hosted(&setup)) };
        run.assert_status(65).assert_says("the kv store is damaged").assert_says("counter.kv0").assert_says("aside");
        assert!(!run.console.contains("sdk-probe boot"), "the capsule ran on an empty store:\n{}", run.console);
        run.assert_audit_verifies();
        run.assert_says("\"fn\":\"astrid:capsule/instantiate\"");
        assert_eq!(std::fs::read(dir.join("counter.kv0")).unwrap(), damaged, "the damaged journal was overwritten");
        assert!(!dir.join("counter.kv1").exists(), "a fresh journal was started beside the damaged one");
    }
}
