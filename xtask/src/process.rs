//! Running child processes: a clean cargo for a pinned toolchain, and commands whose
//! failure names the command.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Variables that cargo and rustup set for the process running xtask and that would
/// leak into (and break) a nested build with another toolchain or target.
const LEAKY_VARS: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

/// `cargo +<toolchain>` with the environment of the outer cargo removed.
pub fn cargo(toolchain: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{toolchain}"));
    for var in LEAKY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Every build is a cargo run, and none may start before the pinned toolchains, their
/// components and targets are ensured (`toolchain::ensure_all`): a cargo command that
/// would is refused here, naming itself, whichever step forgot to ensure them first.
fn refuse_cargo_before_ensure(cmd: &Command) -> Result<()> {
    if cmd.get_program() == "cargo" {
        crate::toolchain::require_ensured(&show(cmd))?;
    }
    Ok(())
}

/// Runs `cmd` to completion, failing with the command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    refuse_cargo_before_ensure(cmd)?;
    let status = cmd.status().with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, failing with its stderr if it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    refuse_cargo_before_ensure(cmd)?;
    let out = cmd.output().with_context(|| format!("cannot start {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The command line, for messages: a secret setting's value (the audit and artifact
/// keys on QEMU's module list) shows as `(hidden)`.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    redact(&s)
}

/// `text` with the value of every `SECRET=value` of a secret setting hidden.
pub fn redact(text: &str) -> String {
    const HIDDEN: &str = "(hidden)";
    let mut out = text.to_string();
    for name in astrid_kernel::settings::SECRETS {
        let pattern = format!("{name}=");
        let mut from = 0;
        while let Some(at) = out[from..].find(&pattern) {
            let start = from + at + pattern.len();
            let end = out[start..].find(|c: char| !c.is_ascii_hexdigit()).map_or(out.len(), |n| start + n);
            out.replace_range(start..end, HIDDEN);
            from = start + HIDDEN.len();
        }
    }
    out
}

/// Waits up to `timeout` for `child`; past it, kills and reaps it. Returns its exit code
/// (`None` when killed or ended by a signal) and whether it timed out.
pub fn wait_or_kill(child: &mut std::process::Child, timeout: std::time::Duration) -> std::io::Result<(Option<i32>, bool)> {
    use wait_timeout::ChildExt;
    Ok(match child.wait_timeout(timeout)? {
        Some(status) => (status.code(), false),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            (None, true)
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_hidden_in_shown_command_lines() {
        let key = "ab".repeat(32);
        let mut cmd = std::process::Command::new("qemu");
        cmd.arg(format!("astrid.img env=ASTRID_AUDIT_KEY={key} env=ASTRID_ARTIFACT_KEY={key},cap.wasm")).arg("-m");
        let shown = super::show(&cmd);
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("ASTRID_AUDIT_KEY=(hidden) env=ASTRID_ARTIFACT_KEY=(hidden),cap.wasm -m"), "{shown}");
    }
}
