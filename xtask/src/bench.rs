//! The boot benchmark: QEMU start → exit for the bare Hermit hello image and for
//! astrid.img with the example capsule (precompiled and sealed, as the run command sends
//! it), interleaved in one run, medians side by side.

use std::time::Duration;

use anyhow::{Result, ensure};

use crate::artifacts::Artifacts;
use crate::qemu::{self, Boot, Firmware};

pub struct BootFigures {
    pub hello: Vec<Duration>,
    pub astrid: Vec<Duration>,
    /// Per astrid run: when each milestone's console line arrived (host clock, from
    /// QEMU's start), `None` where the line never came.
    pub milestones: Vec<Vec<Option<Duration>>>,
    /// Per hello run: when the loader's line and the application's line arrived.
    pub hello_lines: Vec<[Option<Duration>; 2]>,
    /// Per astrid run: the image's own start-up phases (`ASTRID_BOOT_PHASES`), each as
    /// its label and when it ended, ms on the guest's clock from `main`.
    pub phases: Vec<Vec<(String, f64)>>,
    /// With `ASTRID_BENCH_BOOT_AB`: that image and its runs (same example, interleaved).
    pub other: Option<(std::path::PathBuf, Vec<Duration>)>,
}

/// The console lines that mark where astrid.img's boot spends its time, in order: a
/// label and what the line contains.
pub const MILESTONES: &[(&str, &str)] = &[
    ("loader's line (QEMU start, image read, loader copies the ELF)", LOADER_LINE),
    ("application's first line (kernel init)", "astrid: astrid.img"),
    ("capsule checked (module read, manifest)", "capsule(s) ready"),
    ("capsule loaded (engine created, deserialize + seal check)", "precompiled component in"),
    ("capsule's first log line (store, linker, instantiate, audit start)", "hello: running in"),
    ("capsule's ipc round trip done", "hello: ipc"),
    ("capsule's sleep done (5 ms)", "hello: slept"),
    ("capsule completed", "completed in"),
    ("audit log closed", "audit log closed"),
];

/// What the loader's one line starts with (boot/src/main.rs).
const LOADER_LINE: &str = "astrid-boot: app";

/// When the first line containing `needle` arrived.
fn arrival(lines: &[(Duration, String)], needle: &str) -> Option<Duration> {
    lines.iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| *t)
}

/// When each milestone's line first arrived.
fn milestones(lines: &[(Duration, String)]) -> Vec<Option<Duration>> {
    MILESTONES.iter().map(|(_, needle)| arrival(lines, needle)).collect()
}

/// The boot goal: astrid.img to the example's exit within this factor of bare Hermit.
pub const BOOT_GOAL: f64 = 1.10;

/// The boot figures' goal.
pub fn boot_goal(f: &BootFigures) -> Goal {
    let ratio = median(&f.astrid).as_secs_f64() / median(&f.hello).as_secs_f64();
    Goal::at_most("boot → capsule exit vs bare Hermit hello", "image", ratio, BOOT_GOAL)
}

pub fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2 }
}

pub fn boot(art: &Artifacts, runs: usize) -> Result<BootFigures> {
    ensure!(runs >= 1, "--runs must be at least 1");
    let mut hello = Boot::new(art.loader.clone(), art.hello_img.clone());
    hello.firmware = Firmware::Qboot;
    // The example as the run command sends it by default: precompiled here and sealed.
    let key = crate::prepare::session_key();
    let mode = crate::prepare::Mode::Precompiled { target: astrid_kernel::engine::CodeTarget::HermitImage, key };
    let example = crate::prepare::prepare_capsule(&art.paths, &art.example_capsule, mode)?.file;
    let mut astrid = Boot::new(art.loader.clone(), art.astrid_img.clone());
    astrid.capsules = vec![example];
    // and with what the run command always adds: the deployment's audit key (the log
    // signs its checkpoints) and a run nonce.
    astrid.kernel_args = vec![
        qemu::env_arg(astrid_kernel::settings::ARTIFACT_KEY, key),
        qemu::env_arg(astrid_kernel::settings::AUDIT_KEY, crate::bench_engine::BENCH_AUDIT_KEY),
        qemu::env_arg(astrid_kernel::settings::RUN_NONCE, qemu::fresh_seed()?),
    ];
    // The image's own phase marks, printed as one line after the audit log's close.
    let other_args = astrid.kernel_args.clone();
    astrid.kernel_args.push(qemu::env_arg(astrid_kernel::settings::BOOT_PHASES, "1"));
    // An A/B of two builds: the other image boots the same example, in the same rounds.
    let other = std::env::var_os(astrid_kernel::settings::BENCH_BOOT_AB).map(std::path::PathBuf::from);
    // (An older image may not know that setting: it boots as before.)
    let other_boot = other.as_ref().map(|img| Boot { app: img.clone(), kernel_args: other_args, ..astrid.clone() });
    let mut figures =
        BootFigures { hello: Vec::new(), astrid: Vec::new(), milestones: Vec::new(), phases: Vec::new(), hello_lines: Vec::new(), other: other.map(|p| (p, Vec::new())) };
    for i in 0..runs {
        // Interleave so drift on the shared machine hits both sides alike.
        for (side, boot) in [(0, Some(&hello)), (1, Some(&astrid)), (2, other_boot.as_ref())] {
            let Some(boot) = boot else { continue };
            let out = qemu::run(boot)?;
            ensure!(out.app_status() == Some(0), "benchmark boot {} of {} failed: {}\n{}", i + 1, boot.app.display(), out.describe(), out.console);
            if side == 2 {
                if let Some((_, samples)) = figures.other.as_mut() {
                    samples.push(out.elapsed);
                }
            } else if side == 0 {
                figures.hello.push(out.elapsed);
                figures.hello_lines.push([arrival(&out.lines, LOADER_LINE), arrival(&out.lines, "hello from Hermit")]);
            } else {
                figures.astrid.push(out.elapsed);
                figures.milestones.push(milestones(&out.lines));
                figures.phases.push(out.lines.iter().find_map(|(_, l)| astrid_kernel::platform::phases::parse(l)).unwrap_or_default());
                if std::env::var_os(astrid_kernel::settings::BENCH_CONSOLE).is_some() {
                    for (t, l) in &out.lines {
                        eprintln!("{:8.1} ms  {l}", t.as_secs_f64() * 1e3);
                    }
                }
            }
        }
        eprint!("\r  boot benchmark: {}/{runs} runs", i + 1);
    }
    eprintln!();
    Ok(figures)
}

pub fn print_boot(f: &BootFigures) {
    let (h, a) = (median(&f.hello), median(&f.astrid));
    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!("boot benchmark (QEMU TCG, start -> exit, {} runs each, interleaved)", f.hello.len());
    println!("| image | median | min | max |");
    println!("|---|---|---|---|");
    println!("| (a) bare Hermit hello | {:.3} s | {:.3} s | {:.3} s |", h.as_secs_f64(), min(&f.hello).as_secs_f64(), max(&f.hello).as_secs_f64());
    println!("| (b) astrid.img + example capsule | {:.3} s | {:.3} s | {:.3} s |", a.as_secs_f64(), min(&f.astrid).as_secs_f64(), max(&f.astrid).as_secs_f64());
    println!("ratio b/a = {:.2}", a.as_secs_f64() / h.as_secs_f64());
    if let Some((img, o)) = &f.other {
        let m = median(o);
        println!("| (c) {} + example capsule | {:.3} s | {:.3} s | {:.3} s |", img.display(), m.as_secs_f64(), min(o).as_secs_f64(), max(o).as_secs_f64());
        println!("ratio b/c = {:.2}, c/a = {:.2}", a.as_secs_f64() / m.as_secs_f64(), m.as_secs_f64() / h.as_secs_f64());
    }
    print_breakdown(f);
}

/// Where astrid.img's boot goes: the median arrival of each milestone's console line
/// and the step from the one before, beside the hello image's line and exit.
fn print_breakdown(f: &BootFigures) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median_of = |v: Vec<Option<Duration>>| {
        let got: Vec<Duration> = v.into_iter().flatten().collect();
        (!got.is_empty()).then(|| median(&got))
    };
    println!("where the boot goes (host clock from QEMU's start, medians of {} runs)", f.astrid.len());
    println!("| step | at | step took |");
    println!("|---|---|---|");
    let mut before = Duration::ZERO;
    for (i, label) in ["loader's line", "application's line (kernel init)"].iter().enumerate() {
        if let Some(t) = median_of(f.hello_lines.iter().map(|h| h[i]).collect()) {
            println!("| (a) {label} | {:.0} ms | {:.0} ms |", ms(t), ms(t.saturating_sub(before)));
            before = t;
        }
    }
    let exit = median(&f.hello);
    println!("| (a) QEMU exits | {:.0} ms | {:.0} ms |", ms(exit), ms(exit.saturating_sub(before)));
    let mut before = Duration::ZERO;
    for (i, (label, _)) in MILESTONES.iter().enumerate() {
        match median_of(f.milestones.iter().map(|m| m[i]).collect()) {
            Some(t) => {
                println!("| (b) {label} | {:.0} ms | {:.0} ms |", ms(t), ms(t.saturating_sub(before)));
                before = t;
            }
            None => println!("| (b) {label} | not seen | |"),
        }
    }
    let exit = median(&f.astrid);
    println!("| (b) QEMU exits | {:.0} ms | {:.0} ms |", ms(exit), ms(exit.saturating_sub(before)));
    print_phases(f);
}

/// The image's own phase marks (guest clock, ms from `main`): the median of each and
/// the step from the one before, in the order the first run marked them.
fn print_phases(f: &BootFigures) {
    let Some(order) = f.phases.iter().find(|p| !p.is_empty()) else {
        println!("(no boot phases line: the image does not mark its phases)");
        return;
    };
    println!("inside the image (guest clock from main, medians of {} runs)", f.phases.iter().filter(|p| !p.is_empty()).count());
    println!("| phase ended | at | step took |");
    println!("|---|---|---|");
    let mut before = 0.0;
    for (label, _) in order {
        let mut at: Vec<f64> = f.phases.iter().filter_map(|p| p.iter().find(|(l, _)| l == label).map(|(_, t)| *t)).collect();
        at.sort_by(f64::total_cmp);
        let Some(&m) = at.get(at.len() / 2) else { continue };
        println!("| {label} | {m:.1} ms | {:.1} ms |", m - before);
        before = m;
    }
}

/// Which way a goal points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// The figure must not exceed this (a cost ratio).
    AtMost(f64),
    /// The figure must reach this (a throughput ratio).
    AtLeast(f64),
}

/// A figure an issue set a goal for, as this run measured it on one side.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    pub what: String,
    /// `hosted` or `image`.
    pub side: &'static str,
    pub value: f64,
    /// How `value` is written (`×` for ratios).
    pub unit: &'static str,
    pub bound: Bound,
}

impl Goal {
    pub fn new(what: impl Into<String>, side: &'static str, value: f64, unit: &'static str, bound: Bound) -> Goal {
        Goal { what: what.into(), side, value, unit, bound }
    }

    /// A cost ratio that must not exceed `limit`.
    pub fn at_most(what: &str, side: &'static str, ratio: f64, limit: f64) -> Goal {
        Goal::new(what, side, ratio, "×", Bound::AtMost(limit))
    }

    /// A throughput ratio that must reach `floor`.
    pub fn at_least(what: &str, side: &'static str, ratio: f64, floor: f64) -> Goal {
        Goal::new(what, side, ratio, "×", Bound::AtLeast(floor))
    }

    /// Whether this run met the goal (a figure that is not a number never does).
    pub fn met(&self) -> bool {
        match self.bound {
            Bound::AtMost(b) => self.value <= b,
            Bound::AtLeast(b) => self.value >= b,
        }
    }

    fn bound_text(&self) -> String {
        match self.bound {
            Bound::AtMost(b) => format!("≤ {b}{}", self.unit),
            Bound::AtLeast(b) => format!("≥ {b}{}", self.unit),
        }
    }
}

/// The goals table: every figure with its goal and whether this run met it, then
/// `N of M goals met`.
pub fn goals_table(goals: &[Goal]) -> String {
    let mut out = String::from("goals (this run)\n| figure | side | measured | goal | met |\n|---|---|---|---|---|\n");
    for g in goals {
        out.push_str(&format!(
            "| {} | {} | {}{} | {} | {} |\n",
            g.what,
            g.side,
            // Throughputs whole, ratios to two places.
            if g.value.abs() >= 100.0 { format!("{:.0}", g.value) } else { format!("{:.2}", g.value) },
            g.unit,
            g.bound_text(),
            if g.met() { "met" } else { "NOT met" }
        ));
    }
    let met = goals.iter().filter(|g| g.met()).count();
    out.push_str(&format!("{met} of {} goals met\n", goals.len()));
    out
}

pub fn print_goals(goals: &[Goal]) {
    print!("{}", goals_table(goals));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_say_whether_they_were_met() {
        let goals = [
            Goal::new("block→wake vs futex", "hosted", 1.85, "×", Bound::AtMost(2.0)),
            Goal::new("block→wake vs futex", "image", 20.0, "×", Bound::AtMost(3.0)),
            Goal::new("splice vs memcpy", "hosted", 0.5, "×", Bound::AtLeast(0.5)),
            Goal::new("splice vs memcpy", "image", f64::NAN, "×", Bound::AtLeast(0.5)),
        ];
        assert_eq!(goals.iter().map(Goal::met).collect::<Vec<_>>(), [true, false, true, false]);
        let table = goals_table(&goals);
        assert!(table.contains("| block→wake vs futex | hosted | 1.85× | ≤ 2× | met |"), "{table}");
        assert!(table.contains("| splice vs memcpy | image | NaN× | ≥ 0.5× | NOT met |"), "{table}");
        assert!(table.ends_with("2 of 4 goals met\n"), "{table}");
    }

    #[test]
    fn median_of_odd_and_even_sample_counts() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        assert_eq!(median(&ms(&[5, 1, 3])), Duration::from_millis(3));
        assert_eq!(median(&ms(&[4, 1, 3, 2])), Duration::from_micros(2500));
    }
}
