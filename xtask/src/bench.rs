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
    astrid.kernel_args = vec![qemu::env_arg(astrid_kernel::settings::ARTIFACT_KEY, key)];
    let mut figures = BootFigures { hello: Vec::new(), astrid: Vec::new() };
    for i in 0..runs {
        // Interleave so drift on the shared machine hits both sides alike.
        for (boot, samples) in [(&hello, &mut figures.hello), (&astrid, &mut figures.astrid)] {
            let out = qemu::run(boot)?;
            ensure!(out.app_status() == Some(0), "benchmark boot {} failed: {}\n{}", i + 1, out.describe(), out.console);
            samples.push(out.elapsed);
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
            "| {} | {} | {:.2}{} | {} | {} |\n",
            g.what,
            g.side,
            g.value,
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
