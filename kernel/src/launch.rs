//! The application's start: find the capsules, load and check each one, report what
//! was loaded, and turn every failure into a clear message and an exit status.

use crate::capsule::{self, CapsuleSource, LoadError, SourceError};
use crate::exit::Status;
use crate::wasm::{self, HeaderError};

/// Runs the image's application and returns its exit status. `var` reads environment
/// variables (injected for tests); messages go to stdout (the console).
pub fn main(args: &[String], var: impl Fn(&str) -> Option<String>) -> Status {
    let sources = match capsule::discover(args, &var) {
        Ok(s) => s,
        Err(e @ SourceError::NoCapsule) => return fail(Status::Usage, &e),
        Err(e) => return fail(Status::Software, &e),
    };
    let max = match var("ASTRID_MAX_CAPSULE_BYTES") {
        None => capsule::DEFAULT_MAX_CAPSULE_BYTES,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let msg = format!("ASTRID_MAX_CAPSULE_BYTES={v:?} is not a byte count");
                return fail(Status::Usage, &msg);
            }
        },
    };
    for source in &sources {
        if let Err(status) = check(source, max) {
            return status;
        }
    }
    println!("astrid: {} capsule(s) ready", sources.len());
    Status::Ok
}

fn check(source: &CapsuleSource, max: u64) -> Result<(), Status> {
    let loaded = capsule::load(source, max).map_err(|e| {
        let status = match e {
            LoadError::NotFound { .. } | LoadError::CannotOpen { .. } | LoadError::Unreadable { .. } => {
                Status::NoInput
            }
            LoadError::TooLarge { .. } => Status::DataErr,
            LoadError::NoBootModules { .. } => Status::Software,
        };
        fail(status, &e)
    })?;
    let header = wasm::inspect(&loaded.bytes).map_err(|e: HeaderError| {
        fail(Status::DataErr, &format!("capsule {}: {e}", loaded.name))
    })?;
    let origin = match source {
        CapsuleSource::BootModule { addr, .. } => format!("boot module at {addr:#x}"),
        CapsuleSource::File(_) => "file".to_string(),
    };
    println!(
        "astrid: capsule {}: wasm {} (binary version {:#x}), {} bytes, from {origin}",
        loaded.name,
        header.kind,
        header.version,
        loaded.bytes.len(),
    );
    Ok(())
}

fn fail(status: Status, what: &dyn std::fmt::Display) -> Status {
    println!("astrid: error: {what}");
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn temp_file(name: &str, bytes: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("astrid-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    #[test]
    fn statuses_follow_the_kind_of_mistake() {
        assert_eq!(main(&[], no_env), Status::Usage);
        assert_eq!(main(&["/nonexistent/x.wasm".into()], no_env), Status::NoInput);
        assert_eq!(main(&[temp_file("empty.wasm", b"")], no_env), Status::DataErr);
        assert_eq!(main(&[temp_file("elf.wasm", b"\x7fELF\x02\x01\x01\0")], no_env), Status::DataErr);
        let component = temp_file("ok.wasm", &[0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0]);
        assert_eq!(main(&[component.clone()], no_env), Status::Ok);
        let tiny_limit = |k: &str| (k == "ASTRID_MAX_CAPSULE_BYTES").then(|| "4".to_string());
        assert_eq!(main(&[component.clone()], tiny_limit), Status::DataErr);
        let bad_limit = |k: &str| (k == "ASTRID_MAX_CAPSULE_BYTES").then(|| "lots".to_string());
        assert_eq!(main(&[component], bad_limit), Status::Usage);
    }

    #[test]
    fn a_boot_module_announcement_in_hosted_mode_is_an_internal_error() {
        let vars = |k: &str| match k {
            "ASTRID_CAPSULES" => Some("1".to_string()),
            "ASTRID_CAPSULE_0" => Some("0x100000,8,x.wasm".to_string()),
            _ => None,
        };
        assert_eq!(main(&[], vars), Status::Software);
    }
}
