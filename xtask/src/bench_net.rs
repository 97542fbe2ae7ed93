//! The capsule-world benchmarks, hosted and in astrid.img under QEMU TCG in one run:
//! - the ipc round trip between two capsules (io-probe's ping/pong over the bus,
//!   auditing off) against the wait primitive's raw futex ping-pong;
//! - TCP echo throughput of an SDK capsule (sdk-probe's echo server) driven by a client
//!   on this machine through a published port, moving bytes with `splice` from the
//!   socket's `read-stream` to its `write-stream` against `read-bytes`/`write-bytes`
//!   round trips through the capsule (auditing off: this is the data path).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::settings::{ARTIFACT_KEY, AUDIT, BENCH, CAPSULE_CONFIG, PUBLISH, TEST_ARG};

use crate::artifacts::Artifacts;
use crate::bench_engine::{Row, figure, median_of as median};
use crate::qemu::{self, Boot, NetMode};

/// Bytes the client sends (and gets back) per echo connection.
pub const ECHO_BYTES: usize = 4 << 20;

pub struct NetBench<'a> {
    pub art: &'a Artifacts,
    /// The hosted binary and the image with the testing sources (io-probe's ping uses a
    /// timer guard from them).
    pub hosted_bin: PathBuf,
    pub testing_img: PathBuf,
    pub probe_native: PathBuf,
    pub probe_hermit: PathBuf,
    pub sdk_native: PathBuf,
    pub sdk_hermit: PathBuf,
    pub scratch: PathBuf,
    pub runs: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    Hosted,
    Image,
}

impl NetBench<'_> {
    /// Runs `capsules` once with `env` (and, for the echo, a published port) and returns
    /// the console.
    fn run(&self, at: Where, capsules: &[PathBuf], env: &[(&str, String)], publish: Option<(u16, u16)>) -> Result<String> {
        match at {
            Where::Hosted => {
                let mut cmd = Command::new("timeout");
                cmd.arg("300").arg(&self.hosted_bin).args(capsules).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
                cmd.env(ARTIFACT_KEY, crate::prepare::session_key().to_string());
                if let Some((_, port)) = publish {
                    cmd.env(PUBLISH, port.to_string());
                }
                let out = cmd.output()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                ensure!(out.status.success(), "hosted run failed ({}):\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr));
                Ok(text)
            }
            Where::Image => {
                let mut boot = Boot::new(self.art.loader.clone(), self.testing_img.clone());
                boot.capsules = capsules.to_vec();
                boot.kernel_args = env.iter().map(|(k, v)| qemu::env_arg(k, v)).collect();
                boot.kernel_args.push(qemu::env_arg(ARTIFACT_KEY, crate::prepare::session_key()));
                boot.timeout = Duration::from_secs(300);
                if let Some(p) = publish {
                    boot.net = NetMode::Restricted;
                    boot.publish = vec![p];
                }
                let out = qemu::run(&boot)?;
                ensure!(out.app_status() == Some(0), "guest run failed: {}\n{}", out.describe(), out.console);
                Ok(out.console)
            }
        }
    }

    /// ping.cwasm and pong.cwasm: the roles io-probe takes from its file name.
    fn pair(&self, at: Where) -> Result<Vec<PathBuf>> {
        let src = if at == Where::Hosted { &self.probe_native } else { &self.probe_hermit };
        let dir = self.scratch.join(if at == Where::Hosted { "ipc-hosted" } else { "ipc-image" });
        std::fs::create_dir_all(&dir)?;
        ["ping", "pong"]
            .iter()
            .map(|n| {
                let to = dir.join(format!("{n}.cwasm"));
                std::fs::copy(src, &to).with_context(|| format!("copying {}", src.display()))?;
                Ok(to)
            })
            .collect()
    }

    /// µs per ipc round trip and per raw futex round trip.
    fn ipc(&self, at: Where) -> Result<(f64, f64)> {
        let pair = self.pair(at)?;
        let env = [(TEST_ARG, "bench-ipc".to_string()), (AUDIT, "off".to_string())];
        let ipc = median(self.runs, || figure(&self.run(at, &pair, &env, None)?, "rtt_ns=").map(|ns| ns / 1000.0))?;
        let futex = median(self.runs, || figure(&self.run(at, &[], &[(BENCH, "futex".into())], None)?, "rtt_ns=").map(|ns| ns / 1000.0))?;
        Ok((ipc, futex))
    }

    /// MB/s echoed by splice and by read-bytes/write-bytes (one run: one connection each).
    fn echo_once(&self, at: Where, rw_first: bool) -> Result<(f64, f64)> {
        let host_port = free_port()?;
        let guest_port = if at == Where::Hosted { host_port } else { 7700 };
        let sdk = if at == Where::Hosted { self.sdk_native.clone() } else { self.sdk_hermit.clone() };
        let env = vec![
            (CAPSULE_CONFIG, format!("scenario=echo-server;port={guest_port};modes=rw+{}", if rw_first { "rw+splice" } else { "splice+rw" })),
            (AUDIT, "off".to_string()),
        ];
        std::thread::scope(|scope| -> Result<(f64, f64)> {
            let server = scope.spawn(|| self.run(at, std::slice::from_ref(&sdk), &env, Some((host_port, guest_port))));
            let data: Vec<u8> = (0..ECHO_BYTES).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();
            let until = Instant::now() + Duration::from_secs(240);
            // A small warm-up connection first: the first connection into a fresh guest
            // waits for DHCP and TCP's SYN retries (seconds), which is not throughput.
            echo(host_port, b"warm-up", until)?;
            let first = echo(host_port, &data, until);
            let second = first.as_ref().ok().map(|_| echo(host_port, &data, until));
            let (splice, rw) = if rw_first { (second.context("no second connection")?, Some(first)) } else { (first, second) };
            let console = server.join().map_err(|_| anyhow::anyhow!("the echo server thread panicked"))??;
            ensure!(console.contains("by splice") && console.contains("by read-bytes/write-bytes"), "the echo capsule did not finish:\n{console}");
            let mbps = |d: Duration| ECHO_BYTES as f64 / d.as_secs_f64() / 1e6;
            Ok((mbps(splice?), mbps(rw.context("no second connection")??)))
        })
    }

    /// Runs both groups on both sides; returns the rows, and the figures with a goal.
    pub fn run_all(&self) -> Result<(Vec<Row>, Vec<crate::bench::Goal>)> {
        let mut goals = Vec::new();
        let mut ipc_cells = Vec::new();
        let mut tcp_cells = Vec::new();
        for (at, name) in [(Where::Hosted, "hosted"), (Where::Image, "image")] {
            eprintln!("  capsule-world benchmarks: {name} …");
            let (ipc, futex) = self.ipc(at)?;
            ipc_cells.push(format!("{ipc:.1} µs vs {futex:.1} µs = {:.1}", ipc / futex));
            if at == Where::Hosted {
                let what = "ipc round trip between two capsules vs raw futex ping-pong";
                goals.push(crate::bench::Goal::new(what, name, ipc / futex, "×", crate::bench::Bound::AtMost(3.0)));
            }
            let mut splice = Vec::new();
            let mut rw = Vec::new();
            // Alternate which mode goes first, so neither pays for the first connection.
            for i in 0..self.runs.clamp(2, 4) {
                let (s, r) = self.echo_once(at, i % 2 == 1)?;
                splice.push(s);
                rw.push(r);
            }
            let (s, r) = (median(splice.len(), || Ok(splice.remove(0)))?, median(rw.len(), || Ok(rw.remove(0)))?);
            tcp_cells.push(format!("{s:.1} MB/s vs {r:.1} MB/s = {:.2}", s / r));
        }
        let rows = vec![
            Row { what: "ipc round trip between two capsules (audit off) vs raw futex ping-pong".into(), hosted: ipc_cells[0].clone(), image: ipc_cells[1].clone() },
            Row {
                what: format!("TCP echo of {} MiB from a host client: splice vs read-bytes/write-bytes (audit off)", ECHO_BYTES >> 20),
                hosted: tcp_cells[0].clone(),
                image: tcp_cells[1].clone(),
            },
        ];
        Ok((rows, goals))
    }
}

/// Sends `data` to the echo server on 127.0.0.1:`port` (retrying while it starts),
/// half-closes, reads it all back and checks it; returns the time from the first byte
/// sent to the last byte back.
fn echo(port: u16, data: &[u8], until: Instant) -> Result<Duration> {
    loop {
        if Instant::now() > until {
            bail!("the echo capsule never answered on port {port}");
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let started = Instant::now();
        let mut reader = s.try_clone()?;
        let back = std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = reader.read_to_end(&mut got);
            got
        });
        if s.write_all(data).is_err() || s.shutdown(Shutdown::Write).is_err() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let got = back.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
        if got.is_empty() {
            // QEMU's forwarder accepts before the guest listens, then drops the connection.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        ensure!(got == data, "the echo came back different ({} of {} bytes)", got.len(), data.len());
        return Ok(started.elapsed());
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

