//! The engine benchmarks: each figure measured hosted (a Linux process) and in
//! astrid.img under QEMU TCG in one run, printed side by side with their ratios.
//! Capsule-side figures come from io-probe's `bench-*` scenarios timed by the image
//! ("completed in N us"); native baselines from the application's `ASTRID_BENCH` modes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use astrid_kernel::settings::{ARTIFACT_KEY, AUDIT, AUDIT_FILE, AUDIT_KEY, AUDIT_SERIAL, BENCH, TEST_ARG};

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

/// The audit log's signing key in every benchmark run: the run command always passes the
/// deployment's key, so an audited benchmark signs its checkpoints as a user's run does.
/// A fixed key: nothing is kept from a benchmark's logs.
pub const BENCH_AUDIT_KEY: &str = "62656e63682d6f6e6c792d61756469742d6b65792d6e6f742d612d7365637265";

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
        cmd.env(AUDIT_KEY, BENCH_AUDIT_KEY);
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
    boot.kernel_args.push(qemu::env_arg(AUDIT_KEY, BENCH_AUDIT_KEY));
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
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); 3];
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
            cells[1].push(format!(
                "audit off {splice:.0} MB/s, audited {audited:.0} MB/s vs {memcpy:.0} MB/s = {} and {}",
                fmt_ratio(splice, memcpy),
                fmt_ratio(audited, memcpy)
            ));
            goals.push(Goal::new("splice vs memcpy, 64 KiB chunks (audit off)", side.name, splice / memcpy, "×", Bound::AtLeast(0.5)));
            // 5. precompiled instantiate vs JIT compile + instantiate.
            let jit = measure(side, Some(&self.probe_wasm), &env(&[(TEST_ARG, "block-timer")]), "compiled component in ", runs)?;
            let pre = measure(side, Some(probe), &env(&[(TEST_ARG, "block-timer")]), "precompiled component in ", runs)?;
            cells[2].push(format!("{:.1} ms vs {:.1} ms = {}", jit / 1000.0, pre / 1000.0, fmt_ratio(jit, pre)));
        }
        let names = [
            "block→wake round trip through a capsule (audit off) vs raw futex ping-pong",
            "splice throughput (64 KiB a call; audit off, audited) vs memcpy",
            "load io-probe: JIT compile vs precompiled (deserialize)",
        ];
        for (what, c) in names.iter().zip(cells) {
            rows.push(Row { what: what.to_string(), hosted: c[0].clone(), image: c[1].clone() });
        }
        Ok((rows, goals))
    }
}

/// Checks that a console capture holds one whole, intact audit log with `io` io records
/// (the serial sink's benchmark: nothing lost or reordered at that rate).
fn check_console_log(console: &str, io: u64) -> Result<()> {
    let lines = astrid_kernel::audit::extract(console);
    let summary = astrid_kernel::audit::verify(lines.iter().copied()).map_err(|b| anyhow::anyhow!("the serial benchmark's log does not verify: {b}"))?;
    anyhow::ensure!(summary.io_records == io, "the serial benchmark's log holds {} io records, not {io}", summary.io_records);
    Ok(())
}

/// Records the image's `sink-serial` benchmark writes (kernel/src/bench.rs).
const SERIAL_RECORDS: u64 = 5000;

impl EngineBench<'_> {
    /// The audit figures, both sides: a 4 KiB op audited to each sink vs audit off
    /// (interleaved), the serial sink's bytes vs the raw serial ceiling (interleaved),
    /// and sealing into the file sink with the log read back and verified. Returns the
    /// rows and the goals.
    pub fn audit(&self) -> Result<(Vec<Row>, Vec<Goal>)> {
        let sides = [self.hosted(), self.image()];
        let runs = self.runs;
        let mut cells: Vec<Vec<String>> = vec![Vec::new(); 4];
        let mut goals = Vec::new();
        for side in &sides {
            eprintln!("  audit benchmarks: {} …", side.name);
            let probe = self.probe(side);
            let dir = self.scratch.join(format!("share-{}", side.name));
            let file_side = Side { share: Some((dir.clone(), self.virtiofsd.clone())), ..*side };
            // 1. a 4 KiB pipe write + read per round: audit off, to the file, to serial;
            // interleaved (the order turning each run) so that drift on a shared machine
            // hits all three alike; the ratios are medians of each run's own ratios.
            // Hosted, a run's window is ~1.5 ms on a shared machine, the noisiest figure
            // here, and a run costs a fraction of a second: three times the triples.
            let triples = if side.hosted.is_some() { 3 * runs } else { runs };
            let (mut off, mut on, mut on_file) = (Vec::new(), Vec::new(), Vec::new());
            let (mut serial_ratio, mut file_ratio) = (Vec::new(), Vec::new());
            for i in 0..triples {
                let per_round = |c: String| figure(&c, "completed in ").map(|us| us / READ_ROUNDS as f64);
                let mut this = [0.0f64; 3];
                for k in 0..3 {
                    let which = (i + k) % 3;
                    this[which] = per_round(match which {
                        0 => run_once(side, Some(probe), &env(&[(TEST_ARG, "bench-read-4k"), (AUDIT, "off")]))?,
                        1 => run_once(
                            &file_side,
                            Some(probe),
                            &env(&[(TEST_ARG, "bench-read-4k"), (AUDIT_SERIAL, "off"), (AUDIT_FILE, "/root/audit.log")]),
                        )?,
                        _ => run_once(side, Some(probe), &env(&[(TEST_ARG, "bench-read-4k")]))?,
                    })?;
                }
                off.push(this[0]);
                on_file.push(this[1]);
                on.push(this[2]);
                file_ratio.push(this[1] / this[0]);
                serial_ratio.push(this[2] / this[0]);
            }
            let file_ratio_min = file_ratio.iter().copied().fold(f64::INFINITY, f64::min);
            let (off, on, on_file, serial_ratio, file_ratio) =
                (median_f(off), median_f(on), median_f(on_file), median_f(serial_ratio), median_f(file_ratio));
            cells[0].push(format!(
                "serial sink {on:.1} µs, file sink {on_file:.1} µs, audit off {off:.1} µs (ratios {serial_ratio:.2} and {file_ratio:.2}; file, best run {file_ratio_min:.2})"
            ));
            goals.push(Goal::at_most("a 4 KiB op audited to the file sink vs audit off", side.name, file_ratio, 1.2));
            // 2. the serial sink's bytes against the raw serial ceiling (`serial-raw`'s
            // writes, measured just before and after the sink in the same boot); the sink's
            // console log is checked whole.
            let (mut rec, mut bytes, mut raw, mut ratio) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut in_sink = Vec::new();
            for _ in 0..runs.min(3) {
                let c = run_once(side, None, &env(&[(BENCH, "sink-serial")]))?;
                check_console_log(&c, SERIAL_RECORDS)?;
                let line = c.lines().find(|l| l.contains("bench sink-serial:")).context("no sink-serial figure")?;
                rec.push(figure(line, "records_per_s=")?);
                bytes.push(figure(line, " bytes_per_s=")?);
                raw.push(figure(line, "raw_bytes_per_s=")?);
                in_sink.push(figure(line, "in_sink_share=")?);
                ratio.push(bytes.last().copied().unwrap_or(0.0) / raw.last().copied().unwrap_or(1.0));
            }
            let (rec, bytes, raw, ratio, in_sink) = (median_f(rec), median_f(bytes), median_f(raw), median_f(ratio), median_f(in_sink));
            cells[1].push(format!(
                "{rec:.0} records/s, {:.0} kB/s vs raw {:.0} kB/s = {ratio:.2} (time in the console write: {:.0}%)",
                bytes / 1e3,
                raw / 1e3,
                in_sink * 100.0
            ));
            if side.image.is_some() {
                goals.push(Goal::at_least("the serial sink's bytes vs the raw serial ceiling (serial-raw, same run)", side.name, ratio, 0.8));
            }
            // 3. sealing into the file sink (virtio-fs in the image); the benchmark reads
            // the log back and verifies it (`verified=yes`, else it fails).
            let (mut file, mut seal, mut hash) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs.min(3) {
                let c = run_once(&file_side, None, &env(&[(BENCH, "sink-file"), (AUDIT_FILE, "/root/audit.log")]))?;
                anyhow::ensure!(c.contains("verified=yes"), "the file sink's benchmark did not verify its log:\n{c}");
                file.push(figure(&c, "records_per_s=")?);
                seal.push(figure(&c, "seal_only_ns=")?);
                hash.push(figure(&c, "hash_only_ns=")?);
            }
            let (file, seal, hash) = (median_f(file), median_f(seal), median_f(hash));
            cells[2].push(format!(
                "{file:.0} records/s, verified ({:.1} µs a record; the sealer alone {:.1} µs, of which BLAKE3 {:.1} µs)",
                1e6 / file,
                seal / 1e3,
                hash / 1e3
            ));
            cells[3].push(format!("{} × serial", fmt_ratio(file, rec)));
            let floor = if side.image.is_some() { 34_500.0 } else { 1e6 };
            goals.push(Goal::new("audit sealing into the file sink, the log read back and verified", side.name, file, " records/s", Bound::AtLeast(floor)));
        }
        let names = [
            "4 KiB pipe write+read per round: audited to serial, audited to file, audit off",
            "audit sink, serial console: records/s, bytes/s vs the raw serial ceiling (serial-raw)",
            "audit sink, file (virtio-fs in the image): sealing, log verified",
            "file sink vs serial sink, records/s",
        ];
        let rows = names.iter().zip(cells).map(|(what, c)| Row { what: what.to_string(), hosted: c[0].clone(), image: c[1].clone() }).collect();
        Ok((rows, goals))
    }
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
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
