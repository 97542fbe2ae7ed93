//! The kernel command line the loader writes (`cmdline::kernel_command_line`), read back
//! the way Hermit kernel 0.11 reads it (`env::Cli`: `shell_words::split`, then `-freq`,
//! `-ip`, `-mask`, `-gateway`, `-mount` with their values, `--`, `env=KEY=VALUE`) and the
//! way the image then reads its settings and capsules. Any app string and capsule names
//! get a command line or a failure code, never a panic.
//!
//! Input: the app module's string up to a NUL, then capsule module strings separated by
//! NULs; each capsule's address and length come from the bytes of its string's hash.
//! Holds: a line the loader writes is one the kernel splits and parses without
//! panicking; every capsule reaches the image as the loader announced it (address,
//! length, name), unless the app's own arguments set the boot path's variables.
#![no_main]

use std::collections::BTreeMap;

use astrid_boot::cmdline::{self, Capsule};
use astrid_fuzz::Reader;
use astrid_kernel::capsule::{self, CapsuleSource};
use astrid_kernel::settings::{self, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(data);
    let app = String::from_utf8_lossy(input.until_nul()).into_owned();
    let mut strings = Vec::new();
    while !input.is_empty() && strings.len() < 8 {
        strings.push(String::from_utf8_lossy(input.until_nul()).into_owned());
    }
    let capsules: Vec<Capsule<'_>> = strings
        .iter()
        .enumerate()
        .map(|(i, s)| Capsule {
            addr: 0x40_0000 + (i as u64) * 0x1_0000 + s.len() as u64,
            len: s.len() as u64 * 3,
            name: cmdline::basename(cmdline::split_module_string(s).0),
        })
        .collect();
    let _ = cmdline::describe_capsules(&capsules);
    let (path, rest) = cmdline::split_module_string(&app);
    assert!(!path.contains(char::is_whitespace) && rest.trim() == rest);
    let Ok(line) = cmdline::kernel_command_line(&app, &capsules, 512) else { return };
    assert!(!line.contains('\0'));
    let env = kernel_reads(&line);
    // The image's view: its settings, then its capsules, as the loader announced them.
    let boot_vars = |k: &String| k == settings::CAPSULES || settings::CAPSULE.index(k).is_some();
    if rest.contains(settings::CAPSULES) || rest.contains(settings::CAPSULE.prefix) {
        return; // the app's own arguments override the announcement (the operator's doing)
    }
    let pairs: Vec<(String, String)> = env.into_iter().filter(|(k, _)| boot_vars(k)).collect();
    let settings = Settings::from_env_pairs(pairs).expect("the loader's announcement is valid settings");
    let found = capsule::discover(&[], &settings);
    let expected: Vec<CapsuleSource> = capsules
        .iter()
        .map(|c| CapsuleSource::BootModule { addr: c.addr, len: c.len, name: c.name.to_string() })
        .collect();
    if expected.is_empty() {
        assert!(found.is_err());
    } else {
        assert_eq!(found.as_ref(), Ok(&expected), "the image reads other capsules than the loader announced in {line:?}");
    }
});

/// Hermit 0.11's `env::Cli::default()`, with its panics: the environment it builds.
fn kernel_reads(line: &str) -> BTreeMap<String, String> {
    let words = shell_words::split(line).expect("the kernel unwraps its split of the command line");
    let mut env = BTreeMap::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        if word.starts_with("virtio_mmio.device=") {
            continue;
        }
        match word.as_str() {
            "-freq" => {
                let value = words.next().expect("the kernel panics: '-freq' requires a value");
                let _: u16 = value.parse().expect("the kernel panics: '-freq' takes a number of MHz");
            }
            "-ip" | "-mask" | "-gateway" | "-mount" => {
                words.next().unwrap_or_else(|| panic!("the kernel panics: '{word}' requires a value"));
            }
            "--" => break,
            w if w.contains('=') => {
                let (arg, value) = w.split_once('=').unwrap();
                if arg == "env"
                    && let Some((k, v)) = value.split_once('=')
                {
                    env.insert(k.to_string(), v.to_string());
                }
            }
            _ => {}
        }
    }
    env
}
