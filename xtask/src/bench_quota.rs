//! What the host-side accounting costs (#12: no more than noise): the image's
//! `ASTRID_BENCH=quota` baseline (a `quota::Account` charge and release, as each queued
//! ipc message takes, against the bus's publish and take it guards), hosted and in
//! astrid.img under QEMU TCG, and the same charges against what a capsule sees: an ipc
//! round trip between two capsules (hosted, audit off; two charges per round trip).
//! Medians of `runs`, printed with the goal.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::settings::{ARTIFACT_KEY, AUDIT, BENCH, TEST_ARG};

use crate::artifacts::Artifacts;
use crate::bench_engine::{Side, figure, run_once};

/// The goal: the round trip with its charge over the round trip without it.
pub const GOAL_RATIO: f64 = 1.05;

/// One side's medians: charge + release (ns), round trip (ns), their ratio.
pub struct QuotaFigures {
    pub charge_ns: f64,
    pub trip_ns: f64,
    pub ratio: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(side: &Side, runs: usize) -> Result<QuotaFigures> {
    let (mut charge, mut trip, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let console = run_once(side, None, &[(BENCH, "quota".to_string())])?;
        ensure!(figure(&console, "left=")? == 0.0, "the quota benchmark left a charge behind:\n{console}");
        charge.push(figure(&console, "charge_ns=")?);
        trip.push(figure(&console, "trip_ns=")?);
        ratio.push(figure(&console, "ratio=")?);
    }
    Ok(QuotaFigures { charge_ns: median(charge), trip_ns: median(trip), ratio: median(ratio) })
}

/// ns per ipc round trip between two capsules (io-probe's ping and pong), hosted, audit
/// off: the median of `runs`.
fn capsule_round_trip(hosted_bin: &Path, probe_native: &Path, scratch: &Path, runs: usize) -> Result<f64> {
    std::fs::create_dir_all(scratch)?;
    let pair: Vec<PathBuf> = ["ping", "pong"]
        .iter()
        .map(|name| {
            let to = scratch.join(format!("{name}.cwasm"));
            std::fs::copy(probe_native, &to).with_context(|| format!("copying {}", probe_native.display()))?;
            Ok(to)
        })
        .collect::<Result<_>>()?;
    let mut rtts = Vec::new();
    for _ in 0..runs.max(1) {
        let out = Command::new("timeout")
            .arg("300")
            .arg(hosted_bin)
            .args(&pair)
            .env(ARTIFACT_KEY, crate::prepare::session_key().to_string())
            .env(TEST_ARG, "bench-ipc")
            .env(AUDIT, "off")
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("the ipc pair failed ({}):\n{text}", out.status);
        }
        rtts.push(figure(&text, "rtt_ns=")?);
    }
    Ok(median(rtts))
}

/// Hosted with `hosted_bin`, then in `image`; and the capsules' ipc round trip (ns),
/// hosted.
pub fn run(art: &Artifacts, hosted_bin: &Path, image: &Path, probe_native: &Path, scratch: &Path, runs: usize) -> Result<(QuotaFigures, QuotaFigures, f64)> {
    let hosted = Side { name: "hosted", hosted: Some(hosted_bin), image: None, share: None };
    let guest = Side { name: "image", hosted: None, image: Some((art, image)), share: None };
    let rtt = capsule_round_trip(hosted_bin, probe_native, scratch, runs)?;
    Ok((measure(&hosted, runs)?, measure(&guest, runs)?, rtt))
}

/// A capsule's ipc round trip over the same less its two charges and releases.
pub fn capsule_ratio(rtt_ns: f64, charge_ns: f64) -> f64 {
    rtt_ns / (rtt_ns - 2.0 * charge_ns).max(f64::MIN_POSITIVE)
}

pub fn print(hosted: &QuotaFigures, image: &QuotaFigures, rtt_ns: f64, runs: usize) {
    let met = |r: f64| if r <= GOAL_RATIO { "met" } else { "not met" };
    println!("accounting cost (ASTRID_BENCH=quota, medians of {runs} runs; image = astrid.img under QEMU TCG)");
    println!("| figure | hosted (Linux process) | astrid.img (QEMU TCG) | goal | met (hosted / image) |");
    println!("|---|---|---|---|---|");
    println!("| quota charge + release | {:.1} ns | {:.1} ns | — | — |", hosted.charge_ns, image.charge_ns);
    println!("| ipc publish + take, 64 B, one subscription | {:.1} ns | {:.1} ns | — | — |", hosted.trip_ns, image.trip_ns);
    println!(
        "| round trip with its charge / without | {:.3}× | {:.3}× | ≤ {GOAL_RATIO:.2}× | {} / {} |",
        hosted.ratio,
        image.ratio,
        met(hosted.ratio),
        met(image.ratio)
    );
    let capsule = capsule_ratio(rtt_ns, hosted.charge_ns);
    println!("| ipc round trip between two capsules (audit off) | {:.1} µs | — | — | — |", rtt_ns / 1000.0);
    println!("| that round trip with its two charges / without | {capsule:.4}× | — | ≤ {GOAL_RATIO:.2}× | {} |", met(capsule));
}

/// The goals table's rows: what the charges add to a capsule-to-capsule ipc round trip
/// (the figure `scripts/bench` prints for ipc), and to the image's bus round trip. The
/// hosted bus figure (two atomic updates against a few hundred ns that swing with the
/// host's load) stays in the quota table only.
pub fn goals(image: &QuotaFigures, rtt_ns: f64, hosted: &QuotaFigures) -> Vec<crate::bench::Goal> {
    use crate::bench::Goal;
    vec![
        Goal::at_most("an ipc round trip between two capsules with its quota charges vs without", "hosted", capsule_ratio(rtt_ns, hosted.charge_ns), GOAL_RATIO),
        Goal::at_most("an ipc publish + take with its quota charge vs without", "image", image.ratio, GOAL_RATIO),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_charges_per_capsule_round_trip() {
        assert!((capsule_ratio(2100.0, 50.0) - 1.05).abs() < 1e-9);
    }
}
