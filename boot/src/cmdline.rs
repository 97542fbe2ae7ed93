//! Command lines: the kernel command line the loader builds from the app module's string and
//! the capsule modules, and the loader's own options from its multiboot command line.
//! Kernel 0.11 splits its command line with `shell_words::split`, so we quote the same way.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;

use crate::{BootError, FailureCode};

/// A capsule module as announced to the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capsule<'a> {
    /// Physical address of the module's first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Basename of the first word of the module's string.
    pub name: &'a str,
}

/// Splits a module string `PATH [args…]` into the path and the (trimmed) rest.
pub fn split_module_string(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// The last `/`-separated component of `path`.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Builds the kernel command line: `env=ASTRID_BOOT=multiboot`, one
/// `env=ASTRID_CAPSULE_<i>=0x<addr>,<len>,<name>` per capsule, `env=ASTRID_CAPSULES=<n>`,
/// `env=ASTRID_RAM_MIB=<MiB>` (the RAM handed to the kernel, so the image sizes its engine by
/// the machine it runs on), then everything after the first word of the app module's string
/// (`[kernel args] [-- app args]`), whose own settings win because the kernel keeps the last.
pub fn kernel_command_line(
    app_string: &str,
    capsules: &[Capsule<'_>],
    ram_mib: u64,
) -> Result<String, BootError> {
    let (_, rest) = split_module_string(app_string);
    // The image refuses an announcement without a name (it is the capsule's identity):
    // say so here, where the module is known.
    if let Some(i) = capsules.iter().position(|c| c.name.is_empty()) {
        return Err(BootError::new(
            FailureCode::BadMultiboot,
            format!("capsule module {} has no file name in its string", i + 2),
            "give every capsule module its file's path as its string (QEMU: -initrd \"app.elf,capsule.wasm\")",
        ));
    }
    let mut line = String::from("env=ASTRID_BOOT=multiboot");
    for (i, c) in capsules.iter().enumerate() {
        let name: Cow<'_, str> = shell_words::quote(c.name);
        line.push_str(&format!(
            " env=ASTRID_CAPSULE_{i}={:#x},{},{name}",
            c.addr, c.len
        ));
    }
    line.push_str(&format!(" env=ASTRID_CAPSULES={}", capsules.len()));
    line.push_str(&format!(" env=ASTRID_RAM_MIB={ram_mib}"));
    if !rest.is_empty() {
        line.push(' ');
        line.push_str(rest);
    }
    // The kernel unwraps its split of the command line: reject what it would panic on, and NUL,
    // which cannot travel in the device tree's bootargs string.
    let words = match shell_words::split(&line) {
        Ok(words) if !line.contains('\0') => words,
        _ => {
            return Err(BootError::new(
                FailureCode::Other,
                format!("the app's command line has unbalanced quotes: {rest}"),
                "fix the quoting in the app module's string (the -initrd argument)",
            ));
        }
    };
    if let Some(why) = kernel_option_panic(&words) {
        return Err(BootError::new(
            FailureCode::Other,
            format!("the app's command line {why}: {rest}"),
            "fix the kernel arguments in the app module's string (before `--`)",
        ));
    }
    Ok(line)
}

/// What in `words` kernel 0.11 would panic on while reading its options (`env::Cli`): an
/// option that takes a value given none, or a `-freq` that is not a number of MHz. It reads
/// up to `--`.
fn kernel_option_panic(words: &[String]) -> Option<String> {
    let mut words = words.iter().take_while(|w| *w != "--");
    while let Some(word) = words.next() {
        match word.as_str() {
            "-freq" => match words.next() {
                Some(v) if v.parse::<u16>().is_ok() => {}
                Some(v) => return Some(format!("gives `-freq {v}`, not a number of MHz up to 65535")),
                None => return Some(String::from("ends in `-freq` without its value")),
            },
            "-ip" | "-mask" | "-gateway" | "-mount" if words.next().is_none() => {
                return Some(format!("ends in `{word}` without its value"));
            }
            _ => {}
        }
    }
    None
}

/// The capsules for the loader's success line: `0x<addr>+<len> <name>, …` or `none`.
pub fn describe_capsules(capsules: &[Capsule<'_>]) -> String {
    if capsules.is_empty() {
        return String::from("none");
    }
    let parts: alloc::vec::Vec<String> = capsules
        .iter()
        .map(|c| format!("{:#x}+{} {}", c.addr, c.len, c.name))
        .collect();
    parts.join(", ")
}

/// The I/O port of a `debug-exit=0x<port>` token in the loader's own command line; QEMU's
/// isa-debug-exit device is then expected there.
pub fn debug_exit_port(loader_cmdline: &str) -> Option<u16> {
    loader_cmdline.split_whitespace().find_map(|word| {
        let hex = word.strip_prefix("debug-exit=")?;
        let hex = hex.strip_prefix("0x").or_else(|| hex.strip_prefix("0X"))?;
        u16::from_str_radix(hex, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_module_strings() {
        assert_eq!(split_module_string("/a/app.elf"), ("/a/app.elf", ""));
        assert_eq!(
            split_module_string("  app.elf   -freq 2000 -- x y  "),
            ("app.elf", "-freq 2000 -- x y")
        );
        assert_eq!(split_module_string(""), ("", ""));
        assert_eq!(basename("/x/y/echo.wasm"), "echo.wasm");
        assert_eq!(basename("echo.wasm"), "echo.wasm");
        assert_eq!(basename("dir/"), "");
    }

    #[test]
    fn builds_the_kernel_command_line() {
        let caps = [
            Capsule {
                addr: 0x52_3000,
                len: 4660,
                name: "echo.wasm",
            },
            Capsule {
                addr: 0x60_0000,
                len: 1,
                name: "b.wasm",
            },
        ];
        let line =
            kernel_command_line("/img/hello.img -freq 2000 -- arg1 arg2", &caps, 511).unwrap();
        assert_eq!(
            line,
            "env=ASTRID_BOOT=multiboot env=ASTRID_CAPSULE_0=0x523000,4660,echo.wasm \
             env=ASTRID_CAPSULE_1=0x600000,1,b.wasm env=ASTRID_CAPSULES=2 env=ASTRID_RAM_MIB=511 \
             -freq 2000 -- arg1 arg2"
        );
        assert_eq!(
            kernel_command_line("hello.img", &[], 48).unwrap(),
            "env=ASTRID_BOOT=multiboot env=ASTRID_CAPSULES=0 env=ASTRID_RAM_MIB=48"
        );
    }

    #[test]
    fn describes_capsules() {
        assert_eq!(describe_capsules(&[]), "none");
        let caps = [
            Capsule {
                addr: 0x4af000,
                len: 13,
                name: "echo.wasm",
            },
            Capsule {
                addr: 0x500000,
                len: 2,
                name: "b.wasm",
            },
        ];
        assert_eq!(
            describe_capsules(&caps),
            "0x4af000+13 echo.wasm, 0x500000+2 b.wasm"
        );
    }

    #[test]
    fn kernel_splits_it_into_the_intended_words() {
        let caps = [Capsule {
            addr: 0x1000,
            len: 2,
            name: "it's #odd.wasm",
        }];
        let line =
            kernel_command_line("app env=ASTRID_RAM_MIB=256 -- 'a b' c", &caps, 511).unwrap();
        let words = shell_words::split(&line).unwrap();
        assert_eq!(
            words,
            [
                "env=ASTRID_BOOT=multiboot",
                "env=ASTRID_CAPSULE_0=0x1000,2,it's #odd.wasm",
                "env=ASTRID_CAPSULES=1",
                "env=ASTRID_RAM_MIB=511",
                // The module string's own setting comes later, so the kernel keeps it.
                "env=ASTRID_RAM_MIB=256",
                "--",
                "a b",
                "c"
            ]
        );
    }

    #[test]
    fn rejects_a_capsule_without_a_name() {
        // Found by the boot_cmdline fuzz target: a module string that is empty or ends in
        // `/` gave an announcement `0x…,<len>,` that the image refuses as a loader/app
        // mismatch. The loader now names the module instead.
        for string in ["", "/capsules/"] {
            let caps = [
                Capsule { addr: 0x1000, len: 2, name: "a.wasm" },
                Capsule { addr: 0x2000, len: 2, name: basename(split_module_string(string).0) },
            ];
            let err = kernel_command_line("app", &caps, 64).unwrap_err();
            assert_eq!(err.code, FailureCode::BadMultiboot);
            assert!(err.what.contains("capsule module 3"), "{}", err.what);
        }
    }

    /// The boot_cmdline fuzz target's input: the app module's string, then each capsule
    /// module's string, separated by NULs.
    #[test]
    fn fuzz_seeds_are_module_strings() {
        let seeds: [(&str, &[&str]); 2] = [
            (
                "/images/astrid.img -freq 2000 env=ASTRID_AUDIT=off -- 'a b' c",
                &["/capsules/hello.wasm", "echo.wasm x"],
            ),
            ("astrid.img", &["it's #odd,name.wasm"]),
        ];
        for (i, (app, capsules)) in seeds.iter().enumerate() {
            let mut input = alloc::vec::Vec::from(app.as_bytes());
            for c in *capsules {
                input.push(0);
                input.extend_from_slice(c.as_bytes());
            }
            crate::fuzz_seed::check(&format!("boot_cmdline/modules-{i}.txt"), &input);
        }
    }

    /// Found by the boot_cmdline fuzz target: kernel 0.11 unwraps the value of `-freq` (a
    /// u16) and panics when `-freq`, `-ip`, `-mask`, `-gateway` or `-mount` has none.
    #[test]
    fn rejects_kernel_options_the_kernel_would_panic_on() {
        for app in ["app -freq", "app -freq x", "app -freq 70000", "app -ip", "app -freq 2000 -mount"] {
            let err = kernel_command_line(app, &[], 64).unwrap_err();
            assert_eq!(err.code, FailureCode::Other, "{app}");
            assert!(err.what.contains("-freq") || err.what.contains("without its value"), "{app}: {}", err.what);
        }
        // Fine: values given, and the same words as the app's own arguments after `--`.
        for app in ["app -freq 2000 -ip 10.0.2.15", "app -- -freq", "app -- -ip"] {
            assert!(kernel_command_line(app, &[], 64).is_ok(), "{app}");
        }
    }

    #[test]
    fn rejects_what_the_kernel_cannot_split() {
        let err = kernel_command_line("app -- 'unterminated", &[], 64).unwrap_err();
        assert_eq!(err.code, FailureCode::Other);
    }

    #[test]
    fn finds_the_debug_exit_port() {
        assert_eq!(
            debug_exit_port("/boot/astrid-boot debug-exit=0xf4"),
            Some(0xf4)
        );
        assert_eq!(debug_exit_port("debug-exit=0x501 quiet"), Some(0x501));
        assert_eq!(debug_exit_port("/boot/astrid-boot"), None);
        assert_eq!(debug_exit_port("xdebug-exit=0xf4"), None);
        assert_eq!(debug_exit_port("debug-exit=f4"), None);
        assert_eq!(debug_exit_port("debug-exit=0xzz"), None);
    }
}
