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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_sample_counts() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        assert_eq!(median(&ms(&[5, 1, 3])), Duration::from_millis(3));
        assert_eq!(median(&ms(&[4, 1, 3, 2])), Duration::from_micros(2500));
    }
}
