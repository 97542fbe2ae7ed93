//! `scripts/astrid pack -o OUT CAPSULE…`: one file that boots the capsules anywhere, its
//! kind chosen by OUT's extension.
//!
//! - `.hermit`: a Hermit image for uhyve (`uhyve OUT.hermit`): a gzip'd tar holding
//!   `hermit.toml` (hermit-entry's `config` format, version "1"), the image ELF and the
//!   capsules under `root/`, which uhyve maps at `/root` in the guest. The settings go in
//!   as the config's environment, the capsule paths as its application arguments.
//! - `.iso`: GRUB 2 (BIOS and UEFI) with our loader, the image and the capsules, made by
//!   `grub-mkrescue` (see `grub.rs`); `.img`: the same hybrid image, to write raw to a
//!   disk or USB stick.
//!
//! The run command's own steps prepare the capsules and settings (main.rs), so a packed
//! file boots what `scripts/run` would; this module only checks and writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use astrid_kernel::engine::{CodeTarget, engine_config};
use astrid_kernel::wasm::{self, WasmKind};

/// Where uhyve 0.10 (through kernel 0.11's file system) lets the guest see files: the
/// kernel mounts uhyve's file map at `/root` only.
pub const GUEST_DIR: &str = "/root";
/// The guest directory a `.hermit` image writes its audit log to when the user maps one
/// (`uhyve --file-mapping LOGS:/root/audit OUT.hermit`).
pub const HERMIT_AUDIT_DIR: &str = "/root/audit";
/// The image ELF's name inside a `.hermit` file (outside `root/`, so the guest cannot see
/// it).
pub const HERMIT_KERNEL: &str = "astrid.img";

/// What OUT's extension asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A Hermit image for uhyve.
    Hermit,
    /// A hybrid GRUB ISO (BIOS and UEFI; CD or USB).
    Iso,
    /// The same hybrid image, named as a raw disk image.
    Img,
}

impl Format {
    /// The format OUT's extension names, or a message listing the three.
    pub fn of(output: &Path) -> Result<Format, String> {
        match output.extension().and_then(|e| e.to_str()) {
            Some("hermit") => Ok(Format::Hermit),
            Some("iso") => Ok(Format::Iso),
            Some("img") => Ok(Format::Img),
            _ => Err(format!(
                "{}: the output's extension says what to make: .hermit (uhyve), .iso (GRUB, BIOS and UEFI) or .img (the same, a raw disk image for a USB stick)",
                output.display()
            )),
        }
    }

    /// Whether the file boots through GRUB and our loader (bare metal, QEMU).
    pub fn is_grub(self) -> bool {
        self != Format::Hermit
    }
}

/// Everything one packed file holds.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The application ELF (astrid.img or a variant).
    pub image: PathBuf,
    /// The flat multiboot loader (`.iso` and `.img` only).
    pub loader: PathBuf,
    /// The capsule files, as the run command prepared them.
    pub capsules: Vec<PathBuf>,
    /// The image settings baked in (`ASTRID_*`).
    pub env: Vec<(String, String)>,
    /// uhyve's guest-memory requirement, MiB (`.hermit`).
    pub memory_mib: u32,
    /// uhyve's CPU requirement (`.hermit`).
    pub cpus: u32,
    /// The loader writes failures to QEMU's isa-debug-exit port 0xf4 (`.iso`, `.img`).
    pub debug_exit: bool,
}

/// The guest name of each capsule: its file name, which must be usable and unique (the
/// names are the boot modules' names and the files under `/root`).
pub fn capsule_names(capsules: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for c in capsules {
        let name = c
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-+".contains(ch)))
            .ok_or_else(|| format!("capsule {}: its file name must be ASCII letters, digits and ._-+ only (it becomes the guest's file name) — rename it", c.display()))?;
        if names.iter().any(|n| n == name) {
            return Err(format!("two capsules are named {name}: each one's file name must be unique in a packed image — rename one"));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// Refuses a capsule the image would refuse, so a bad one fails now and not at boot: not
/// wasm, empty, an unsupported version, too large for the image, or (for `.wasm`) not
/// valid WebAssembly for the image's engine.
pub fn check_capsule(path: &Path, max_bytes: u64) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("capsule {}: cannot be read: {e}", path.display()))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "capsule {}: {} bytes is over the image's limit of {max_bytes} (ASTRID_MAX_CAPSULE_BYTES)",
            path.display(),
            bytes.len()
        ));
    }
    if astrid_kernel::wasmtime::Engine::detect_precompiled(&bytes).is_some() {
        // A host-precompiled artifact: the image checks it against its engine when it loads.
        return Ok(());
    }
    let header = wasm::inspect(&bytes).map_err(|e| format!("capsule {}: {e}", path.display()))?;
    let engine = engine_config(CodeTarget::HermitImage)
        .and_then(|c| astrid_kernel::wasmtime::Engine::new(&c))
        .map_err(|e| format!("the engine for the check cannot start: {e:#}"))?;
    let compiled = match header.kind {
        WasmKind::Component => engine.precompile_component(&bytes).map(drop),
        WasmKind::CoreModule => engine.precompile_module(&bytes).map(drop),
    };
    compiled.map_err(|e| format!("capsule {}: not valid for astrid.img's engine: {e:#}", path.display()))
}

/// Writes `bundle` to `output` in `format`.
pub fn write(bundle: &Bundle, format: Format, output: &Path, scratch: &Path) -> Result<()> {
    match format {
        Format::Hermit => write_hermit(bundle, output),
        Format::Iso | Format::Img => crate::grub::write_image(bundle, output, scratch),
    }
}

/// TOML's basic string: quotes and backslashes escaped, control characters refused
/// (nothing the settings or capsule names carry).
fn toml_string(s: &str) -> Result<String> {
    ensure!(!s.chars().any(char::is_control), "{s:?} holds a control character, which a packed image cannot carry");
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

fn toml_array(items: &[String]) -> Result<String> {
    let quoted = items.iter().map(|s| toml_string(s)).collect::<Result<Vec<_>>>()?;
    Ok(format!("[{}]", quoted.join(", ")))
}

/// The `hermit.toml` of a `.hermit` image.
pub fn hermit_toml(bundle: &Bundle, names: &[String]) -> Result<String> {
    let app_args: Vec<String> = names.iter().map(|n| format!("{GUEST_DIR}/{n}")).collect();
    let env: Vec<String> = bundle.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(format!(
        "# A Hermit image of astrid.img, written by `scripts/astrid pack`: run it with `uhyve FILE`.\n\
         version = \"1\"\n\
         kernel = {kernel}\n\
         \n\
         [input]\n\
         kernel_args = []\n\
         app_args = {app_args}\n\
         env_vars = {env}\n\
         \n\
         [requirements]\n\
         memory = \"{memory} MiB\"\n\
         cpus = {cpus}\n",
        kernel = toml_string(HERMIT_KERNEL)?,
        app_args = toml_array(&app_args)?,
        env = toml_array(&env)?,
        memory = bundle.memory_mib,
        cpus = bundle.cpus,
    ))
}

/// The `.hermit` file: gzip'd tar of `hermit.toml`, the kernel and `root/<capsule>`.
fn write_hermit(bundle: &Bundle, output: &Path) -> Result<()> {
    let names = capsule_names(&bundle.capsules).map_err(anyhow::Error::msg)?;
    let config = hermit_toml(bundle, &names)?;
    let partial = partial_path(output);
    let file = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut add = |name: &str, bytes: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, bytes).with_context(|| format!("adding {name} to {}", output.display()))
    };
    add("hermit.toml", config.as_bytes())?;
    let image = std::fs::read(&bundle.image).with_context(|| format!("reading {}", bundle.image.display()))?;
    add(HERMIT_KERNEL, &image)?;
    for (path, name) in bundle.capsules.iter().zip(&names) {
        let bytes = std::fs::read(path).with_context(|| format!("reading capsule {}", path.display()))?;
        add(&format!("{}/{name}", GUEST_DIR.trim_start_matches('/')), &bytes)?;
    }
    let mut gz = tar.into_inner().context("finishing the tar")?;
    gz.flush()?;
    gz.finish().context("finishing the gzip stream")?;
    std::fs::rename(&partial, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// Where a file is written before it is renamed into place, so a failed pack never leaves
/// a half-written OUT behind.
pub fn partial_path(output: &Path) -> PathBuf {
    let name = output.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// The settings a packed file must not carry: what has to be fresh on every boot.
pub fn refuse_baked(env: &[(String, String)]) -> Result<(), String> {
    use astrid_kernel::settings::{RUN_NONCE, SEED};
    for (k, _) in env {
        if k == SEED || k == RUN_NONCE {
            return Err(format!(
                "--env {k}: a packed image boots many times, and a {k} baked into it would repeat on every boot — leave it out (the image seeds itself from the CPU and makes its own nonce)"
            ));
        }
    }
    Ok(())
}

/// Reads a `.hermit` file back: its config text and its entries' names and sizes (for
/// tests and `pack`'s summary).
pub fn read_hermit(path: &Path) -> Result<(String, Vec<(String, u64)>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut config = None;
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.display().to_string();
        if name == "hermit.toml" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)?;
            config = Some(text);
        }
        entries.push((name, entry.size()));
    }
    match config {
        Some(c) => Ok((c, entries)),
        None => bail!("{}: no hermit.toml inside", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_picks_the_format() {
        assert_eq!(Format::of(Path::new("a/app.hermit")), Ok(Format::Hermit));
        assert_eq!(Format::of(Path::new("app.iso")), Ok(Format::Iso));
        assert_eq!(Format::of(Path::new("app.img")), Ok(Format::Img));
        for bad in ["app", "app.tar.gz", "app.ISO2"] {
            let e = Format::of(Path::new(bad)).unwrap_err();
            assert!(e.contains(".hermit") && e.contains(".iso") && e.contains(".img"), "{e}");
        }
    }

    #[test]
    fn capsule_names_are_unique_and_plain() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(capsule_names(&[p("a/x.wasm"), p("b/y.cwasm")]).unwrap(), ["x.wasm", "y.cwasm"]);
        assert!(capsule_names(&[p("a/x.wasm"), p("b/x.wasm")]).unwrap_err().contains("two capsules are named x.wasm"));
        assert!(capsule_names(&[p("a/it's.wasm")]).unwrap_err().contains("rename it"));
        assert!(capsule_names(&[p("a/with space.wasm")]).is_err());
    }

    #[test]
    fn seeds_and_nonces_are_never_baked_in() {
        let env = |k: &str| vec![(k.to_string(), "ab".repeat(32))];
        assert!(refuse_baked(&env("ASTRID_SEED")).unwrap_err().contains("repeat on every boot"));
        assert!(refuse_baked(&env("ASTRID_RUN_NONCE")).is_err());
        assert!(refuse_baked(&env("ASTRID_AUDIT_KEY")).is_ok());
    }

    /// `hermit.toml` and a kernel in a tar, parsed as uhyve parses an image.
    fn parse_config(text: &str, check: impl FnOnce(hermit_entry::config::Config<'_>)) {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, bytes) in [("hermit.toml", text.as_bytes()), (HERMIT_KERNEL, b"elf")] {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, name, bytes).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let handle = hermit_entry::config::parse_tar(&tar).unwrap_or_else(|e| panic!("{e}\n{text}"));
        check(handle.config)
    }

    #[test]
    fn hermit_toml_is_what_hermit_entry_parses() {
        use hermit_entry::config::Config;
        let bundle = Bundle {
            image: PathBuf::new(),
            loader: PathBuf::new(),
            capsules: vec![],
            env: vec![("ASTRID_CAPSULE_CONFIG".into(), "a=b;q=\"x\\y\"".into()), ("ASTRID_AUDIT_DIR".into(), "/root/audit".into())],
            memory_mib: 512,
            cpus: 2,
            debug_exit: false,
        };
        let text = hermit_toml(&bundle, &["hello.wasm".into(), "b.cwasm".into()]).unwrap();
        parse_config(&text, |config| {
            let Config::V1 { input, requirements, kernel } = config;
            assert_eq!(kernel, HERMIT_KERNEL);
            assert_eq!(input.app_args, ["/root/hello.wasm", "/root/b.cwasm"]);
            assert!(input.kernel_args.is_empty());
            assert_eq!(input.env_vars, ["ASTRID_CAPSULE_CONFIG=a=b;q=\"x\\y\"", "ASTRID_AUDIT_DIR=/root/audit"]);
            assert_eq!(requirements.cpus, 2);
            assert_eq!(requirements.memory.map(|m| m.as_u64()), Some(512 << 20));
        });
        assert!(hermit_toml(&Bundle { env: vec![("ASTRID_X".into(), "a\nb".into())], ..bundle }, &[]).is_err());
    }

    #[test]
    fn a_hermit_file_is_a_tar_hermit_entry_reads() {
        let dir = std::env::temp_dir().join(format!("astrid-pack-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("kernel.elf");
        let cap = dir.join("hello.wasm");
        std::fs::write(&image, b"\x7fELF pretend").unwrap();
        std::fs::write(&cap, b"\0asm\x01\0\0\0").unwrap();
        let bundle = Bundle {
            image: image.clone(),
            loader: PathBuf::new(),
            capsules: vec![cap],
            env: vec![("ASTRID_AUDIT_DIR".into(), HERMIT_AUDIT_DIR.into())],
            memory_mib: 64,
            cpus: 1,
            debug_exit: false,
        };
        let out = dir.join("app.hermit");
        write(&bundle, Format::Hermit, &out, &dir).unwrap();
        // What uhyve does with it: gunzip, then hermit-entry's parse_tar.
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap()), &mut tar).unwrap();
        let handle = hermit_entry::config::parse_tar(&tar).unwrap();
        assert_eq!(handle.raw_kernel, b"\x7fELF pretend");
        let (_, entries) = read_hermit(&out).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["hermit.toml", HERMIT_KERNEL, "root/hello.wasm"]);
        assert!(!dir.read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("partial")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
