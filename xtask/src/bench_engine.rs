//! The engine benchmarks: each figure measured hosted (a Linux process) and in
//! astrid.img under QEMU TCG in one run, printed side by side with their ratios.
//! Capsule-side figures come from io-probe's `bench-*` scenarios timed by the image
//! ("completed in N us"); native baselines from the application's `ASTRID_BENCH` modes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use astrid_kernel::settings::{ARTIFACT_KEY, AUDIT, AUDIT_FILE, AUDIT_SERIAL, BENCH, TEST_ARG};

use crate::artifacts::Artifacts;
use crate::bench::{Bound, Goal, median};
use crate::qemu::{self, Boot};

/// Iteration counts, shared with io-probe's bench scenarios (keep in step).
pub const PINGPONG_ROUNDS: u64 = 500;
pub const READ_ROUNDS: u64 = 1000;
pub const SPLICE_BYTES: u64 = 64 << 20;

/// Where a measurement runs.
pub struct Side<'a> {
    pub name: &'static str,
    pub hosted: Option<&'a Path>,
    pub image: Option<(&'a Artifacts, &'a Path)>,
    pub share: Option<(PathBuf, PathBuf)>,
}

/// Runs the application once with `env` and the given capsule (if any); returns the
/// console text.
pub fn run_once(side: &Side, capsule: Option<&Path>, env: &[(&str, String)]) -> Result<String> {
    if let Some(bin) = side.hosted {
        let mut cmd = Command::new("timeout");
        cmd.arg("300").arg(bin);
        if let Some(c) = capsule {
            cmd.arg(c);
        }
        let mut env = env.to_vec();
        if let Some((dir, _)) = &side.share {
            std::fs::create_dir_all(dir)?;
            for (k, v) in env.iter_mut() {
                if *k == AUDIT_FILE {
                    *v = dir.join("audit.log").display().to_string();
                }
            }
        }
        // The capsules are sealed with this process's key (`main.rs`'s `precompiled`).
        cmd.env(ARTIFACT_KEY, crate::prepare::session_key().to_string());
        let out = cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("hosted run failed ({}):\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        return Ok(text);
    }
    let (art, image) = side.image.context("a side needs hosted or image")?;
    let mut boot = Boot::new(art.loader.clone(), image.to_path_buf());
    boot.capsules = capsule.map(|c| vec![c.to_path_buf()]).unwrap_or_default();
    boot.kernel_args = env.iter().map(|(k, v)| qemu::env_arg(k, v)).collect();
    boot.kernel_args.push(qemu::env_arg(ARTIFACT_KEY, crate::prepare::session_key()));
    boot.timeout = Duration::from_secs(300);
    boot.shared_dir = side.share.clone();
    let out = qemu::run(&boot)?;
    if out.app_status() != Some(0) && capsule.is_some() {
        bail!("guest run failed: {}\n{}", out.describe(), out.console);
    }
    Ok(out.console)
}

/// The number after `key` on the console (e.g. `completed in ` → microseconds).
pub fn figure(console: &str, key: &str) -> Result<f64> {
    let at = console.find(key).with_context(|| format!("console lacks {key:?}:\n{console}"))?;
    let rest = &console[at + key.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().with_context(|| format!("no number after {key:?}"))
}

/// Median of `runs` measurements of `key`.
pub fn measure(side: &Side, capsule: Option<&Path>, env: &[(&str, String)], key: &str, runs: usize) -> Result<f64> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let console = run_once(side, capsule, env)?;
        samples.push(Duration::from_secs_f64(figure(&console, key)? / 1e6));
    }
    Ok(median(&samples).as_secs_f64() * 1e6)
}

/// One row of the results: a name and the hosted and image values with their unit.
pub struct Row {
    pub what: String,
    pub hosted: String,
    pub image: String,
}

pub fn print(rows: &[Row]) {
    println!("engine benchmarks (medians; image = astrid.img under QEMU TCG)");
    println!("| figure | hosted (Linux process) | astrid.img (QEMU TCG) |");
    println!("|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.what, r.hosted, r.image);
    }
}

/// Everything the engine benchmarks need.
pub struct EngineBench<'a> {
    pub art: &'a Artifacts,
    pub hosted_bin: PathBuf,
    pub testing_img: PathBuf,
    pub probe_wasm: PathBuf,
    pub probe_native: PathBuf,
    pub probe_hermit: PathBuf,
    pub virtiofsd: PathBuf,
    pub scratch: PathBuf,
    pub runs: usize,
}

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn fmt_ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

impl EngineBench<'_> {
    fn hosted(&self) -> Side<'_> {
        Side { name: "hosted", hosted: Some(&self.hosted_bin), image: None, share: None }
    }

    fn image(&self) -> Side<'_> {
        Side { name: "image", hosted: None, image: Some((self.art, &self.testing_img)), share: None }
    }

    /// The capsule file each side runs precompiled.
    fn probe(&self, side: &Side) -> &Path {
        if side.hosted.is_some() { &self.probe_native } else { &self.probe_hermit }
    }

    /// Runs every engine benchmark on both sides and returns the rows, and the figures
    /// with a goal.
    pub fn run(&self) -> Result<(Vec<Row>, Vec<Goal>)> {
        let mut rows = Vec::new();
        let mut goals = Vec::new();
        let sides = [self.hosted(), self.image()];
        let runs = self.runs;
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); 6];
        for side in &sides {
            eprintln!("  engine benchmarks: {} …", side.name);
            // 1. block→wake latency through a capsule vs a raw futex ping-pong.
            let probe = self.probe(side);
            // Audit off: this row is the wait primitive's latency; the next rows price auditing.
            // The capsule times its own loop (its "completed in" counts instantiation too).
            let pingpong = measure(side, Some(probe), &env(&[(TEST_ARG, "bench-pingpong"), (AUDIT, "off")]), "bench-pingpong: rtt_ns=", runs)? / 1000.0;
            let futex = median_of(runs, || {
                let c = run_once(side, None, &env(&[(BENCH, "futex")]))?;
                figure(&c, "rtt_ns=").map(|ns| ns / 1000.0)
            })?;
            // What one near-empty host call costs (component glue and envelope), for the
            // breakdown: a round trip makes two.
            let call = measure(side, Some(probe), &env(&[(TEST_ARG, "bench-calls"), (AUDIT, "off")]), "bench-calls: call_ns=", runs)? / 1000.0;
            cells[0].push(format!("{pingpong:.1} µs vs {futex:.1} µs = {} (one host call {call:.2} µs)", fmt_ratio(pingpong, futex)));
            let block_goal = if side.hosted.is_some() { 2.0 } else { 3.0 };
            goals.push(Goal::new("block→wake round trip through a capsule vs raw futex ping-pong", side.name, pingpong / futex, "×", Bound::AtMost(block_goal)));
            // 2. audited vs audit-off 4 KiB read.
            let on = measure(side, Some(probe), &env(&[(TEST_ARG, "bench-read-4k")]), "completed in ", runs)?;
            let off = measure(side, Some(probe), &env(&[(TEST_ARG, "bench-read-4k"), (AUDIT, "off")]), "completed in ", runs)?;
            let dir = self.scratch.join(format!("share-{}", side.name));
            let file_side = Side { share: Some((dir.clone(), self.virtiofsd.clone())), ..*side };
            let on_file = measure(
                &file_side,
                Some(probe),
                &env(&[(TEST_ARG, "bench-read-4k"), (AUDIT_SERIAL, "off"), (AUDIT_FILE, "/root/audit.log")]),
                "completed in ",
                runs,
            )?;
            let per_on = on / READ_ROUNDS as f64;
            let per_file = on_file / READ_ROUNDS as f64;
            let per_off = off / READ_ROUNDS as f64;
            cells[1].push(format!(
                "serial sink {per_on:.1} µs, file sink {per_file:.1} µs, audit off {per_off:.1} µs (ratios {} and {})",
                fmt_ratio(per_on, per_off),
                fmt_ratio(per_file, per_off)
            ));
            // 3. sink throughput, serial and file (virtio-fs in the image).
            let serial = median_of(runs.min(3), || {
                let c = run_once(side, None, &env(&[(BENCH, "sink-serial")]))?;
                figure(&c, "records_per_s=")
            })?;
            let file = median_of(runs.min(3), || {
                let c = run_once(&file_side, None, &env(&[(BENCH, "sink-file"), (AUDIT_FILE, "/root/audit.log")]))?;
                figure(&c, "records_per_s=")
            })?;
            cells[2].push(format!("{serial:.0}/s"));
            cells[3].push(format!("{file:.0}/s = {} × serial", fmt_ratio(file, serial)));
            // 4. splice throughput vs memcpy, 64 KiB a call (the null sink's permit): the
            // data path with audit off (the goal), and audited (one record a call).
            let splice_mbs = |audit: &str| -> Result<f64> {
                let ns = measure(side, Some(probe), &env(&[(TEST_ARG, "bench-splice"), (AUDIT, audit)]), "bench-splice: total_ns=", runs)?;
                Ok(SPLICE_BYTES as f64 * 1000.0 / ns) // bytes per µs = MB/s
            };
            let (splice, audited) = (splice_mbs("off")?, splice_mbs("on")?);
            let memcpy = median_of(runs, || {
                let c = run_once(side, None, &env(&[(BENCH, "memcpy")]))?;
                figure(&c, "mb_per_s=")
            })?;
            cells[4].push(format!(
                "audit off {splice:.0} MB/s, audited {audited:.0} MB/s vs {memcpy:.0} MB/s = {} and {}",
                fmt_ratio(splice, memcpy),
                fmt_ratio(audited, memcpy)
            ));
            goals.push(Goal::new("splice vs memcpy, 64 KiB chunks (audit off)", side.name, splice / memcpy, "×", Bound::AtLeast(0.5)));
            // 5. precompiled instantiate vs JIT compile + instantiate.
            let jit = measure(side, Some(&self.probe_wasm), &env(&[(TEST_ARG, "block-timer")]), "compiled component in ", runs)?;
            let pre = measure(side, Some(probe), &env(&[(TEST_ARG, "block-timer")]), "precompiled component in ", runs)?;
            cells[5].push(format!("{:.1} ms vs {:.1} ms = {}", jit / 1000.0, pre / 1000.0, fmt_ratio(jit, pre)));
        }
        let names = [
            "block→wake round trip through a capsule (audit off) vs raw futex ping-pong",
            "4 KiB pipe write+read per round: audited to serial, audited to file, audit off",
            "audit sink throughput: serial console",
            "audit sink throughput: file (virtio-fs in the image)",
            "splice throughput (64 KiB a call; audit off, audited) vs memcpy",
            "load io-probe: JIT compile vs precompiled (deserialize)",
        ];
        for (what, c) in names.iter().zip(cells) {
            rows.push(Row { what: what.to_string(), hosted: c[0].clone(), image: c[1].clone() });
        }
        Ok((rows, goals))
    }
}

/// The median of `runs` calls of `f`.
pub fn median_of(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..runs.max(1) {
        v.push(f()?);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Ok(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}
