//! Shared by the integration tests: the built artifacts (built once per test binary)
//! and small helpers for scratch files.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use xtask::artifacts::{self, Artifacts};
use xtask::paths::Paths;

/// The kernel argument that gives the image this test process's artifact key, which
/// seals what the tests precompile (`xtask::prepare::session_key`).
pub fn artifact_key_arg() -> String {
    xtask::qemu::env_arg(astrid_kernel::settings::ARTIFACT_KEY, xtask::prepare::session_key())
}

pub fn artifacts() -> &'static Artifacts {
    static ART: OnceLock<Artifacts> = OnceLock::new();
    ART.get_or_init(|| artifacts::ensure(&Paths::discover()).expect("building the images failed"))
}

/// astrid-jit.img (the image with Cranelift), for tests that boot a plain `.wasm`.
pub fn jit_img() -> &'static PathBuf {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| artifacts::ensure_jit(&Paths::discover()).expect("building astrid-jit.img failed"))
}

/// A scratch directory unique to this test process.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("astrid-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// What one boot or hosted run printed and how it ended.
pub struct Run {
    pub status: i32,
    pub console: String,
}

impl Run {
    /// Boots `boot` under QEMU: the guest must end by itself (not at the timeout) with an
    /// application status.
    pub fn boot(boot: &xtask::qemu::Boot) -> Run {
        Run::of_guest(xtask::qemu::run(boot).expect("starting QEMU"))
    }

    /// The run a finished guest was: it ended by itself with an application status.
    pub fn of_guest(out: xtask::qemu::Outcome) -> Run {
        assert!(!out.timed_out, "guest hung; console:\n{}", out.console);
        match out.exit {
            astrid_kernel::exit::GuestExit::App(status) => Run { status: i32::from(status), console: out.console },
            other => panic!("no application status ({other:?}); console:\n{}", out.console),
        }
    }

    pub fn assert_status(&self, status: i32) -> &Self {
        assert_eq!(self.status, status, "console:\n{}", self.console);
        self
    }

    pub fn assert_says(&self, needle: &str) -> &Self {
        assert!(self.console.contains(needle), "console lacks {needle:?}:\n{}", self.console);
        self
    }

    /// The run's audit log verifies, and closes with the count of what came before.
    pub fn assert_audit_verifies(&self) -> astrid_kernel::audit::Summary {
        let lines = astrid_kernel::audit::extract(&self.console);
        match astrid_kernel::audit::verify(lines.iter().copied()) {
            Ok(summary) => summary,
            Err(b) => panic!("audit log broken: {b}\nconsole:\n{}", self.console),
        }
    }
}

/// `scripts/run` as a user types it (`xtask run --timeout SECS ARGS…`, with `env` set):
/// its exit status and everything it printed.
pub fn run_command(timeout_secs: u32, env: &[(&str, &std::path::Path)], args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .args(["run", "--timeout", &timeout_secs.to_string()])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}
