//! Every `ASTRID_*` environment variable, in one table ([`ALL`]), parsed once at launch
//! into [`Settings`].
//!
//! - **Image** settings are what the application reads: set with `scripts/run --env
//!   KEY=VALUE`, by one of the run command's flags, or by the run command itself.
//! - **Boot** variables are the boot protocol: the loader's capsule announcements and
//!   the manifests the run command sends along. They are listed so that none of them is
//!   "unknown"; their values are checked by their readers (`capsule::discover`,
//!   `Manifest::decode`), which keep their own exit statuses (70: the loader and the
//!   image disagree; 65: a corrupt manifest).
//! - **Host** variables are read on the host (xtask, the kernel crate's build script).
//!   Hosted mode inherits the host's environment, so the image accepts them and ignores
//!   them.
//!
//! Any other `ASTRID_*` name, and any value a setting's parser refuses, is a
//! [`SettingsError`] that names the variable and what it accepts; the image then exits
//! with status 64 (usage). Every value type parses with `FromStr` and prints back with
//! `Display`, so the run command writes the same names through the same types
//! ([`Settings::to_env_pairs`]) and checks `--env` with [`Settings::set`].
//! `ASTRID_KEY` is no setting: it only appears as the placeholder of `--env`'s usage text.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

/// Largest capsule the image accepts, unless `ASTRID_MAX_CAPSULE_BYTES` lowers it.
pub const DEFAULT_MAX_CAPSULE_BYTES: u64 = 256 << 20;

/// The native baselines, by the name `ASTRID_BENCH` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Benchmark {
    Futex,
    /// The futex ping-pong with a (never reached) deadline on every wait: what timed
    /// waits cost.
    FutexTimed,
    Wait,
    Memcpy,
    SinkSerial,
    /// The serial console's raw ceiling: framed lines the size of audit lines, written
    /// as the console sink writes them, with no sealing.
    SerialRaw,
    /// Needs `ASTRID_AUDIT_FILE`.
    SinkFile,
    /// What the host-side accounting costs: a quota charge and release against the ipc
    /// publish and take it guards.
    Quota,
    /// A TCP echo server on the kernel's own sockets (no capsule, no pipes, no pumps):
    /// the floor a capsule's TCP echo is measured against. Listens on the first
    /// `ASTRID_PUBLISH` port (else 7700) and serves two connections (a warm-up and the
    /// measured one).
    TcpEcho,
}

impl Benchmark {
    pub const ALL: [Benchmark; 9] = [
        Benchmark::Futex,
        Benchmark::FutexTimed,
        Benchmark::Wait,
        Benchmark::Memcpy,
        Benchmark::SinkSerial,
        Benchmark::SerialRaw,
        Benchmark::SinkFile,
        Benchmark::Quota,
        Benchmark::TcpEcho,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Futex => "futex",
            Benchmark::FutexTimed => "futex-timed",
            Benchmark::Wait => "wait",
            Benchmark::Memcpy => "memcpy",
            Benchmark::SinkSerial => "sink-serial",
            Benchmark::SerialRaw => "serial-raw",
            Benchmark::SinkFile => "sink-file",
            Benchmark::Quota => "quota",
            Benchmark::TcpEcho => "tcp-echo",
        }
    }
}

impl std::fmt::Display for Benchmark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Benchmark {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Benchmark::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| "no such benchmark".to_string())
    }
}

/// Lowercase hex of `bytes` (how the run command sends manifests and payloads).
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string.
pub fn hex_decode(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..hex.len()).step_by(2).map(|i| hex_byte(hex.get(i..i + 2)).ok_or_else(|| format!("bad hex at {i}"))).collect()
}

/// The byte two hex digits spell. Digits only: `from_str_radix` alone also takes a sign
/// (`+f` is 15), so one value would have several spellings.
fn hex_byte(digits: Option<&str>) -> Option<u8> {
    let digits = digits.filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))?;
    u8::from_str_radix(digits, 16).ok()
}


/// What every setting's name starts with; only such names are checked.
pub const PREFIX: &str = "ASTRID_";

/// Handles a capsule may hold unless `ASTRID_HANDLE_QUOTA` says otherwise (the engine's
/// own default; a test keeps the two equal).
pub const DEFAULT_HANDLE_QUOTA: u64 = 1024;
/// A capsule's kv store quota unless `ASTRID_KV_QUOTA_BYTES` says otherwise (the kv
/// module's own default; a test keeps the two equal).
pub const DEFAULT_KV_QUOTA_BYTES: u64 = 16 << 20;
/// Linear memory per capsule unless `ASTRID_MEMORY_MIB` says otherwise.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Guest RAM assumed when the run command passes none: conservative.
pub const DEFAULT_RAM_MIB: u64 = 256;

/// Who reads a variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The image's application.
    Image,
    /// The image, written by the boot path (loader, run command) rather than by users.
    Boot,
    /// The host (xtask, a build script); the image ignores it.
    Host,
}

impl Scope {
    pub fn describe(self) -> &'static str {
        match self {
            Scope::Image => "image",
            Scope::Boot => "image (boot path)",
            Scope::Host => "host (ignored by the image)",
        }
    }
}

/// One row of the settings table.
#[derive(Clone, Copy, Debug)]
pub struct SettingInfo {
    /// The variable, or for an indexed family its pattern (`ASTRID_CAPSULE_<i>`).
    pub name: &'static str,
    pub scope: Scope,
    /// The Rust type it parses into.
    pub ty: &'static str,
    /// The value when unset, as the variable would spell it (`unset`: none).
    pub default: &'static str,
    /// What the parser accepts, for humans.
    pub accepted: &'static str,
    /// One line on what it does.
    pub doc: &'static str,
    /// An indexed family (`<prefix><i>`, i = 0, 1, …) rather than one variable.
    pub indexed: bool,
}

/// An indexed family of variables: `<prefix>0`, `<prefix>1`, …
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub prefix: &'static str,
}

impl Family {
    /// Member `i`'s variable name.
    pub fn name(self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// The index of `name`, if it is a member (decimal, no leading zeros, so that every
    /// member has one spelling).
    pub fn index(self, name: &str) -> Option<usize> {
        let digits = name.strip_prefix(self.prefix)?;
        let i = digits.parse::<usize>().ok()?;
        (i.to_string() == digits).then_some(i)
    }
}

/// A setting's value type: `FromStr` to read it, `Display` to write it back the way the
/// parser reads it.
pub trait SettingValue: Sized {
    fn parse_value(raw: &str) -> Result<Self, String>;
    fn render_value(&self) -> String;
}

/// A field of [`Settings`]: a value, or an optional one (`None`: unset).
trait Field: Sized {
    fn parse_field(raw: &str) -> Result<Self, String>;
    /// What the variable would hold; `None` when unset.
    fn render_field(&self) -> Option<String>;
}

impl<T: SettingValue> Field for Option<T> {
    fn parse_field(raw: &str) -> Result<Self, String> {
        T::parse_value(raw).map(Some)
    }
    fn render_field(&self) -> Option<String> {
        self.as_ref().map(T::render_value)
    }
}

/// Value types that parse with their `FromStr` and print with their `Display`.
macro_rules! from_str_values {
    ($($t:ty),* $(,)?) => {$(
        impl SettingValue for $t {
            fn parse_value(raw: &str) -> Result<Self, String> {
                raw.parse::<$t>().map_err(|e| e.to_string())
            }
            fn render_value(&self) -> String {
                self.to_string()
            }
        }
        impl Field for $t {
            fn parse_field(raw: &str) -> Result<Self, String> {
                Self::parse_value(raw)
            }
            fn render_field(&self) -> Option<String> {
                Some(self.render_value())
            }
        }
    )*};
}

from_str_values!(Number, String, GuestPath, Switch, Flag, NetMode, Ports, ConfigPairs, HexBytes, HostSeed, AuditKey, ArtifactKey, DebugPort, BootPath, Benchmark, OnExit);

/// A path, as a setting holds it (not empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPath(pub PathBuf);

impl FromStr for GuestPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("an empty path".into());
        }
        Ok(GuestPath(PathBuf::from(s)))
    }
}

impl fmt::Display for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// A whole number (decimal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number(pub u64);

impl FromStr for Number {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<u64>().map(Number).map_err(|_| "not a whole number".into())
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `on` or `off`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Switch {
    #[default]
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

impl FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(Switch::On),
            "off" => Ok(Switch::Off),
            _ => Err("expected on or off".into()),
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_on() { "on" } else { "off" })
    }
}

/// `1` (set) or `0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl FromStr for Flag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1" => Ok(Flag(true)),
            "0" => Ok(Flag(false)),
            _ => Err("expected 1 or 0".into()),
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "1" } else { "0" })
    }
}

/// The guest's network: the one definition the image, the run command's `--net` and
/// its QEMU command line share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetMode {
    /// No NIC: capsules have the image's loopback only.
    None,
    /// A NIC that lets nothing out (QEMU `restrict=on`); published ports still come in.
    /// In hosted mode the same as `None`.
    #[default]
    Restricted,
    /// Capsules whose manifest allows it may connect out.
    Outbound,
}

impl NetMode {
    pub const ALL: [NetMode; 3] = [NetMode::None, NetMode::Restricted, NetMode::Outbound];

    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Restricted => "restricted",
            NetMode::Outbound => "outbound",
        }
    }

    /// Whether connections may leave the image at all: in the image whenever it has a
    /// NIC (`restricted` holds them at QEMU), in hosted mode only with `outbound`.
    pub fn external(self) -> bool {
        match self {
            NetMode::None => false,
            NetMode::Restricted => cfg!(target_os = "hermit"),
            NetMode::Outbound => true,
        }
    }
}

impl FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NetMode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| "expected none, restricted or outbound".into())
    }
}

impl fmt::Display for NetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Loopback ports (1 to 65535), separated by `,` or `;` (`;` where a comma cannot
/// travel: QEMU's module list). Written with `;`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

impl FromStr for Ports {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split([',', ';'])
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{p:?} is not a port from 1 to 65535")))
            .collect::<Result<_, _>>()
            .map(Ports)
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<String> = self.0.iter().map(u16::to_string).collect();
        f.write_str(&ports.join(";"))
    }
}

/// `key=value` pairs, separated by `;` or `,` (`;` where a comma cannot travel: QEMU's
/// module list). Written with `;`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigPairs(pub Vec<(String, String)>);

impl FromStr for ConfigPairs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split([',', ';'])
            .filter(|p| !p.is_empty())
            .map(|pair| {
                pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{pair:?} is not key=value"))
            })
            .collect::<Result<_, _>>()
            .map(ConfigPairs)
    }
}

impl fmt::Display for ConfigPairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(";"))
    }
}

/// Bytes as hex: how binary values travel on the kernel command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl FromStr for HexBytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        hex_decode(s).map(HexBytes).map_err(|e| format!("not hex ({e})"))
    }
}

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

/// Bytes in a randomness seed.
pub const SEED_BYTES: usize = 32;

/// The guest's randomness seed: 64 hex digits, not all zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSeed(pub [u8; SEED_BYTES]);

impl FromStr for HostSeed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const WHY: &str = "must be 64 hex digits, not all zero";
        let s = s.trim();
        if s.len() != 2 * SEED_BYTES {
            return Err(WHY.into());
        }
        let mut seed = [0u8; SEED_BYTES];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = hex_byte(s.get(2 * i..2 * i + 2)).ok_or(WHY)?;
        }
        if seed == [0; SEED_BYTES] {
            return Err(WHY.into());
        }
        Ok(HostSeed(seed))
    }
}

impl fmt::Display for HostSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

/// The deployment's audit signing key: an Ed25519 secret key, 64 hex digits. Its
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditKey(pub [u8; SEED_BYTES]);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<secret>)")
    }
}

impl FromStr for AuditKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<HostSeed>().map(|k| AuditKey(k.0)).map_err(|_| "must be 64 hex digits (an Ed25519 secret key), not all zero".into())
    }
}

impl fmt::Display for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

/// The deployment's artifact key: the BLAKE3 key that seals precompiled artifacts
/// (`wasm::artifact`), 64 hex digits. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtifactKey(pub [u8; SEED_BYTES]);

impl fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArtifactKey(<secret>)")
    }
}

impl FromStr for ArtifactKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<HostSeed>().map(|k| ArtifactKey(k.0)).map_err(|_| "must be 64 hex digits (a BLAKE3 key), not all zero".into())
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

/// Settings whose values are secrets: never echoed, not even malformed ones.
pub const SECRETS: &[&str] = &[AUDIT_KEY, ARTIFACT_KEY];

/// An x86 I/O port, in hex (`0xf4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugPort(pub u16);

impl FromStr for DebugPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("not an I/O port in hex".into());
        }
        u16::from_str_radix(digits, 16).map(DebugPort).map_err(|_| "not an I/O port in hex".into())
    }
}

impl fmt::Display for DebugPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// What the image does once it has reported its status, where no debug-exit port takes
/// the status (bare metal; uhyve ends the guest itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnExit {
    /// The kernel's own shutdown: ACPI power-off (a reset where the machine has none).
    #[default]
    Poweroff,
    /// Stop the CPU with the status on the console, for someone to read.
    Halt,
    /// Reset the machine (it boots the image again: a service that restarts).
    Reboot,
}

impl OnExit {
    pub const ALL: [OnExit; 3] = [OnExit::Poweroff, OnExit::Halt, OnExit::Reboot];

    pub fn name(self) -> &'static str {
        match self {
            OnExit::Poweroff => "poweroff",
            OnExit::Halt => "halt",
            OnExit::Reboot => "reboot",
        }
    }
}

impl FromStr for OnExit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OnExit::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| "expected poweroff, halt or reboot".into())
    }
}

impl fmt::Display for OnExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the image was booted, as the loader says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    /// Our multiboot loader (`boot/`).
    Multiboot,
}

impl FromStr for BootPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "multiboot" => Ok(BootPath::Multiboot),
            _ => Err("expected multiboot".into()),
        }
    }
}

impl fmt::Display for BootPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("multiboot")
    }
}

/// Declares the table, the name constants, the `Settings` fields and their parsing, from
/// one list.
macro_rules! settings {
    (
        settings { $(
            #[doc = $doc:literal]
            $scope:ident $konst:ident = $name:literal, $field:ident: $ty:ty = $default:expr,
                default $shown:literal, accepts $accepts:literal;
        )* }
        families { $(
            #[doc = $fdoc:literal]
            $fkonst:ident = $prefix:literal, $ffield:ident, accepts $faccepts:literal;
        )* }
        host { $(
            #[doc = $hdoc:literal]
            $hkonst:ident = $hname:literal, default $hshown:literal, accepts $haccepts:literal;
        )* }
    ) => {
        $(
            #[doc = concat!("`", $name, "`:", $doc)]
            pub const $konst: &str = $name;
        )*
        $(
            #[doc = concat!("`", $prefix, "<i>`:", $fdoc)]
            pub const $fkonst: Family = Family { prefix: $prefix };
        )*
        $(
            #[doc = concat!("`", $hname, "`:", $hdoc)]
            pub const $hkonst: &str = $hname;
        )*

        /// Every `ASTRID_*` variable: the image's settings, the boot protocol's
        /// variables, the host's.
        pub const ALL: &[SettingInfo] = &[
            $( SettingInfo {
                name: $name, scope: Scope::$scope, ty: stringify!($ty), default: $shown,
                accepted: $accepts, doc: $doc, indexed: false,
            }, )*
            $( SettingInfo {
                name: concat!($prefix, "<i>"), scope: Scope::Boot, ty: "BTreeMap<usize, String>",
                default: "unset", accepted: $faccepts, doc: $fdoc, indexed: true,
            }, )*
            $( SettingInfo {
                name: $hname, scope: Scope::Host, ty: "(host)", default: $hshown,
                accepted: $haccepts, doc: $hdoc, indexed: false,
            }, )*
        ];

        /// The image's settings, parsed once (see the module documentation).
        #[derive(Clone, Debug, PartialEq)]
        pub struct Settings {
            $( #[doc = concat!("`", $name, "`:", $doc)] pub $field: $ty, )*
            $( #[doc = concat!("`", $prefix, "<i>`:", $fdoc)] pub $ffield: BTreeMap<usize, String>, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $( $field: $default, )* $( $ffield: BTreeMap::new(), )* }
            }
        }

        impl Settings {
            /// Parses one `ASTRID_*` variable into its field.
            fn apply(&mut self, name: &str, value: &str) -> Result<(), Problem> {
                match name {
                    $( $name => {
                        self.$field = <$ty as Field>::parse_field(value)
                            .map_err(|why| Problem::Malformed { value: value.to_string(), why, accepted: $accepts })?;
                    } )*
                    $( $hname => {} )*
                    _ => {
                        $( if let Some(i) = $fkonst.index(name) {
                            self.$ffield.insert(i, value.to_string());
                            return Ok(());
                        } )*
                        return Err(Problem::Unknown);
                    }
                }
                Ok(())
            }

            /// The variables that say what these settings say: every setting that is
            /// not at its default, and every family member, in table order.
            pub fn to_env_pairs(&self) -> Vec<(String, String)> {
                let default = Settings::default();
                let mut pairs = Vec::new();
                $(
                    if self.$field != default.$field {
                        if let Some(v) = Field::render_field(&self.$field) {
                            pairs.push(($name.to_string(), v));
                        }
                    }
                )*
                $( pairs.extend(self.$ffield.iter().map(|(i, v)| ($fkonst.name(*i), v.clone()))); )*
                pairs
            }
        }
    };
}

settings! {
    settings {
        /// The audit log: `off` turns auditing off altogether.
        Image AUDIT = "ASTRID_AUDIT", audit: Switch = Switch::On,
            default "on", accepts "on, off";
        /// Audit records on the serial console; `off` keeps the file only (and then needs `ASTRID_AUDIT_FILE`).
        Image AUDIT_SERIAL = "ASTRID_AUDIT_SERIAL", audit_serial: Switch = Switch::On,
            default "on", accepts "on, off";
        /// Also writes the audit records to this file in the guest (`--audit-dir`: `/root/audit.log`).
        Image AUDIT_FILE = "ASTRID_AUDIT_FILE", audit_file: Option<GuestPath> = None,
            default "unset", accepts "a path";
        /// Also writes the audit records to `DIR/audit.log` when DIR exists in the guest (a directory mapped into a `pack`ed Hermit image: `/root/audit`); the console only otherwise.
        Image AUDIT_DIR = "ASTRID_AUDIT_DIR", audit_dir: Option<GuestPath> = None,
            default "unset", accepts "a path";
        /// The run's nonce, which the audit log's genesis record commits to (the run command makes one per run; without it the image makes its own).
        Image RUN_NONCE = "ASTRID_RUN_NONCE", run_nonce: Option<HostSeed> = None,
            default "unset", accepts "64 hex digits, not all zero";
        /// The deployment's Ed25519 secret key that signs the audit log's checkpoints (the run command passes it; without it the log is unsigned).
        Image AUDIT_KEY = "ASTRID_AUDIT_KEY", audit_key: Option<AuditKey> = None,
            default "unset", accepts "64 hex digits, not all zero";
        /// The deployment's key that seals precompiled artifacts (keyed BLAKE3): an artifact runs only if its seal verifies with it for this image's engine (the run command passes it; without it only `.wasm` runs).
        Image ARTIFACT_KEY = "ASTRID_ARTIFACT_KEY", artifact_key: Option<ArtifactKey> = None,
            default "unset", accepts "64 hex digits, not all zero";
        /// Linear memory cap per capsule in MiB (never above its share of guest RAM; a manifest can lower it).
        Image MEMORY_MIB = "ASTRID_MEMORY_MIB", memory_mib: Number = Number(DEFAULT_MEMORY_MIB),
            default "64", accepts "a number of MiB";
        /// Live resource handles (streams, pollables, errors) per capsule (a manifest can lower it).
        Image HANDLE_QUOTA = "ASTRID_HANDLE_QUOTA", handle_quota: Number = Number(DEFAULT_HANDLE_QUOTA),
            default "1024", accepts "a number";
        /// Byte quota of each capsule's astrid:kv store (16 MiB; a manifest's `[limits] kv_bytes` can lower it).
        Image KV_QUOTA_BYTES = "ASTRID_KV_QUOTA_BYTES", kv_quota_bytes: Number = Number(DEFAULT_KV_QUOTA_BYTES),
            default "16777216", accepts "a number of bytes";
        /// Keeps each capsule's astrid:kv store in this directory across runs (`--kv-dir`).
        Image KV_DIR = "ASTRID_KV_DIR", kv_dir: Option<GuestPath> = None,
            default "unset", accepts "a path";
        /// Cancels each capsule this many milliseconds after it starts (`--deadline-ms`).
        Image DEADLINE_MS = "ASTRID_DEADLINE_MS", deadline_ms: Option<Number> = None,
            default "unset", accepts "a number of milliseconds";
        /// What `get-config` answers every capsule (`--config`; a manifest's `[config]` wins).
        Image CAPSULE_CONFIG = "ASTRID_CAPSULE_CONFIG", capsule_config: ConfigPairs = ConfigPairs::default(),
            default "", accepts "key=value pairs separated by ; or ,";
        /// The network (`--net`): `none` has no NIC, `restricted` lets nothing out, `outbound` lets capsules connect out; hosted mode reaches outside only with `outbound`.
        Image NET = "ASTRID_NET", net: NetMode = NetMode::Restricted,
            default "restricted", accepts "none, restricted, outbound";
        /// Loopback ports that accept connections from outside the image (`--publish`); each goes to the capsule whose manifest binds it.
        Image PUBLISH = "ASTRID_PUBLISH", publish: Ports = Ports::default(),
            default "", accepts "ports 1-65535 separated by ; or ,";
        /// Calls each capsule's `astrid-hook-trigger` with this action instead of its `run` (`--hook`).
        Image HOOK = "ASTRID_HOOK", hook: Option<String> = None,
            default "unset", accepts "an action name";
        /// The hook's payload (`--payload`; only with `ASTRID_HOOK`).
        Image HOOK_PAYLOAD = "ASTRID_HOOK_PAYLOAD", hook_payload: HexBytes = HexBytes::default(),
            default "", accepts "hex";
        /// Largest capsule the image accepts, in bytes (256 MiB).
        Image MAX_CAPSULE_BYTES = "ASTRID_MAX_CAPSULE_BYTES", max_capsule_bytes: Number = Number(DEFAULT_MAX_CAPSULE_BYTES),
            default "268435456", accepts "a number of bytes";
        /// `1`: check the capsules, do not run them (the run command sets it for the soft-float image).
        Image CHECK_ONLY = "ASTRID_CHECK_ONLY", check_only: Flag = Flag(false),
            default "0", accepts "0, 1";
        /// `1`: when the run ends, print one line with when each start-up phase ended on the guest's clock (`scripts/bench --only boot` sets it).
        Image BOOT_PHASES = "ASTRID_BOOT_PHASES", boot_phases: Flag = Flag(false),
            default "0", accepts "0, 1";
        /// The randomness seed (the run command passes one from the host's entropy; without it the image refuses randomness).
        Image SEED = "ASTRID_SEED", seed: Option<HostSeed> = None,
            default "unset", accepts "64 hex digits, not all zero";
        /// Guest memory in MiB, which bounds what the engine may map (the run command passes it; the loader writes the machine's own first).
        Image RAM_MIB = "ASTRID_RAM_MIB", ram_mib: Number = Number(DEFAULT_RAM_MIB),
            default "256", accepts "a number of MiB";
        /// Runs a native baseline instead of capsules (the engine benchmarks use it).
        Image BENCH = "ASTRID_BENCH", bench: Option<Benchmark> = None,
            default "unset", accepts "futex, futex-timed, wait, memcpy, sink-serial, serial-raw, sink-file, quota, tcp-echo";
        /// What test capsules read with `test-argument` (`--test-arg`; the testing image only).
        Image TEST_ARG = "ASTRID_TEST_ARG", test_arg: String = String::new(),
            default "", accepts "any text";
        /// The isa-debug-exit port the exit status is written to (the run command passes it under QEMU).
        Image DEBUG_EXIT = "ASTRID_DEBUG_EXIT", debug_exit: Option<DebugPort> = None,
            default "unset", accepts "an I/O port in hex (0xf4)";
        /// Without a debug-exit port: after printing `astrid: exit status N` on the console, power off, halt, or reboot (bare metal).
        Image ON_EXIT = "ASTRID_ON_EXIT", on_exit: OnExit = OnExit::Poweroff,
            default "poweroff", accepts "poweroff, halt, reboot";
        /// Written by the loader: how the image was booted.
        Boot BOOT = "ASTRID_BOOT", boot: Option<BootPath> = None,
            default "unset", accepts "multiboot";
        /// Written by the loader: how many capsules it announces as `ASTRID_CAPSULE_<i>` (checked by the capsule loader).
        Boot CAPSULES = "ASTRID_CAPSULES", capsule_count: Option<String> = None,
            default "unset", accepts "a number";
    }
    families {
        /// Written by the loader: capsule `i` as a boot module (checked by the capsule loader).
        CAPSULE = "ASTRID_CAPSULE_", boot_modules, accepts "`0x<addr>,<len>,<name>`";
        /// Written by the run command: capsule `i`'s manifest, its TOML text in hex (checked when read).
        MANIFEST = "ASTRID_MANIFEST_", manifests, accepts "hex";
    }
    host {
        /// Read when xtask builds the Hermit kernel: its log level, fixed at build time.
        KERNEL_LOG = "ASTRID_KERNEL_LOG", default "warn", accepts "off, error, warn, info, debug, trace";
        /// Read by xtask: where the run command keeps the deployment's keys (`audit.key`, `audit.pub`, `artifact.key`).
        STATE_DIR = "ASTRID_STATE_DIR", default "$XDG_STATE_HOME/astrid-img or ~/.local/state/astrid-img", accepts "a directory";
        /// Read by xtask: where build outputs go instead of `target/astrid`.
        CACHE_DIR = "ASTRID_CACHE_DIR", default "unset", accepts "a directory";
        /// Read by the kernel crate's build script: the astrid-sys WIT for vendored builds.
        SYS_WIT_DIR = "ASTRID_SYS_WIT_DIR", default "unset", accepts "a directory";
        /// Read by `scripts/bench` (boot): print every astrid.img run's console, each line with when it arrived.
        BENCH_CONSOLE = "ASTRID_BENCH_CONSOLE", default "unset", accepts "1";
        /// Read by `scripts/bench` (boot): also boot this other astrid.img with the example, interleaved, for an A/B of two builds.
        BENCH_BOOT_AB = "ASTRID_BENCH_BOOT_AB", default "unset", accepts "an image file";
    }
}

/// What is wrong with one variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A known setting with a value its parser refuses.
    Malformed { value: String, why: String, accepted: &'static str },
    /// An `ASTRID_*` name that no setting has.
    Unknown,
}

/// A variable the image cannot accept: the image exits with status 64 (usage).
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsError {
    /// The variable at fault.
    pub name: String,
    pub problem: Problem,
    /// Every other variable as parsed (defaults where unset or refused): the exit path
    /// still needs `ASTRID_DEBUG_EXIT`.
    pub parsed: Box<Settings>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match &self.problem {
            // A secret is never echoed, not even a malformed one: it may be almost right.
            Problem::Malformed { why, accepted, .. } if SECRETS.contains(&name.as_str()) => {
                write!(f, "{name}=(hidden): {why} (accepted: {accepted})")
            }
            Problem::Malformed { value, why, accepted } => {
                write!(f, "{name}={value:?}: {why} (accepted: {accepted})")
            }
            Problem::Unknown => {
                let known: Vec<&str> = ALL.iter().map(|s| s.name).collect();
                write!(f, "{name} is not a setting of astrid.img (accepted names: {})", known.join(", "))
            }
        }
    }
}

impl std::error::Error for SettingsError {}

/// How many members of each indexed family [`Settings::from_vars`] looks up.
pub const LOOKUP_INDICES: usize = 64;

impl Settings {
    /// Parses this process's environment (non-`ASTRID_*` variables are not looked at).
    pub fn from_env() -> Result<Settings, SettingsError> {
        let mut not_utf8 = None;
        let pairs: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.to_string_lossy().into_owned();
                if !k.starts_with(PREFIX) {
                    return None;
                }
                let v = v.into_string().unwrap_or_else(|v| {
                    not_utf8.get_or_insert_with(|| (k.clone(), v.to_string_lossy().into_owned()));
                    String::new()
                });
                Some((k, v))
            })
            .collect();
        let settings = Settings::from_env_pairs(pairs)?;
        match not_utf8 {
            None => Ok(settings),
            Some((name, value)) => Err(SettingsError {
                name,
                problem: Problem::Malformed { value, why: "not UTF-8".into(), accepted: "UTF-8 text" },
                parsed: Box::new(settings),
            }),
        }
    }

    /// Parses every `ASTRID_*` pair (others are skipped). The first refused variable is
    /// the error; the rest are parsed all the same (`SettingsError::parsed`).
    pub fn from_env_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Settings, SettingsError> {
        let mut settings = Settings::default();
        let mut first = None;
        for (name, value) in pairs {
            if !name.starts_with(PREFIX) {
                continue;
            }
            if let Err(problem) = settings.apply(&name, &value) {
                first.get_or_insert((name, problem));
            }
        }
        match first {
            None => Ok(settings),
            Some((name, problem)) => Err(SettingsError { name, problem, parsed: Box::new(settings) }),
        }
    }

    /// Parses what a lookup function answers for every variable of the table (family
    /// members up to [`LOOKUP_INDICES`]). It cannot see names outside the table, so it
    /// finds no unknown ones: for tests and callers that only have a lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let mut names: Vec<String> = ALL.iter().filter(|s| !s.indexed).map(|s| s.name.to_string()).collect();
        for family in [CAPSULE, MANIFEST] {
            names.extend((0..LOOKUP_INDICES).map(|i| family.name(i)));
        }
        Settings::from_env_pairs(names.into_iter().filter_map(|n| var(&n).map(|v| (n, v))))
    }

    /// Sets one variable, as the environment would: a usage mistake names it and what
    /// it accepts. The run command checks `--env` with it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        let problem = if name.starts_with(PREFIX) { self.apply(name, value).err() } else { Some(Problem::Unknown) };
        match problem {
            None => Ok(()),
            Some(problem) => Err(SettingsError { name: name.to_string(), problem, parsed: Box::new(self.clone()) }),
        }
    }
}

/// The row of `name` (a variable or a family member), if the table has one.
pub fn info(name: &str) -> Option<&'static SettingInfo> {
    ALL.iter().find(|s| s.name == name).or_else(|| {
        let family = [CAPSULE, MANIFEST].into_iter().find(|f| f.index(name).is_some())?;
        ALL.iter().find(|s| s.indexed && s.name.strip_suffix("<i>") == Some(family.prefix))
    })
}

static CURRENT: OnceLock<Settings> = OnceLock::new();

/// Makes `settings` this run's (see [`current`]); the first call wins, and says so.
pub fn install(settings: Settings) -> bool {
    CURRENT.set(settings).is_ok()
}

/// This run's settings, for the places that cannot be handed them (the exit path): the
/// ones launch installed, else the process environment's, parsed once (what parses of
/// it when a value is bad: the bad value itself is launch's to report).
pub fn current() -> &'static Settings {
    CURRENT.get_or_init(|| Settings::from_env().unwrap_or_else(|e| *e.parsed))
}

/// The README's settings table sits between these lines.
pub const README_TABLE_START: &str = "<!-- settings table: generated by `cargo xtask settings-table` -->";
pub const README_TABLE_END: &str = "<!-- end of the settings table -->";

/// The table as markdown: what README.md shows under "Settings" (a test keeps them equal;
/// `cargo xtask settings-table` prints it).
pub fn markdown_table() -> String {
    let code = |s: &str| if s.is_empty() { "(empty)".to_string() } else { format!("`{s}`") };
    let mut out = String::from("| Variable | Accepted values | Default | Read by | What it does |\n|---|---|---|---|---|\n");
    for s in ALL {
        let default = if s.default == "unset" { "unset".to_string() } else { code(s.default) };
        out.push_str(&format!("| `{}` | {} | {default} | {} | {} |\n", s.name, s.accepted, s.scope.describe(), s.doc.trim()));
    }
    out
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_malformed_secret_is_not_echoed() {
        let leaked = "ab".repeat(31) + "zz";
        for secret in SECRETS {
            let e = Settings::from_vars(|k| (k == *secret).then(|| leaked.clone())).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(secret) && !shown.contains(&leaked) && !shown.contains("abab"), "{shown}");
            let good = "cd".repeat(32);
            let parsed = Settings::from_vars(|k| (k == *secret).then(|| good.clone())).unwrap();
            assert!(!format!("{parsed:?}").contains("cdcd"), "Debug shows {secret}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_env_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    /// Each variable with values it accepts and values it refuses.
    const CASES: &[(&str, &[&str], &[&str])] = &[
        (AUDIT, &["on", "off"], &["", "yes", "OFF"]),
        (AUDIT_SERIAL, &["on", "off"], &["0"]),
        (AUDIT_FILE, &["/root/audit.log"], &[""]),
        (MEMORY_MIB, &["0", "64", "4096"], &["", "lots", "-1", "1.5"]),
        (HANDLE_QUOTA, &["64"], &["x"]),
        (KV_QUOTA_BYTES, &["65536"], &["64k"]),
        (KV_DIR, &["/root"], &[""]),
        (DEADLINE_MS, &["300"], &["soon", "3s"]),
        (CAPSULE_CONFIG, &["", "a=b", "a=b;c=d", "a=b,c=", "k=v=w"], &["nokey", "a=b;c"]),
        (NET, &["none", "restricted", "outbound"], &["everywhere", ""]),
        (PUBLISH, &["", "8080", "80,443", "80;443"], &["0", "http", "65536", "80,,x"]),
        (HOOK, &["greet"], &[]),
        (HOOK_PAYLOAD, &["", "68690a"], &["zz", "abc", "+a"]),
        (MAX_CAPSULE_BYTES, &["4"], &["lots"]),
        (CHECK_ONLY, &["0", "1"], &["yes", "2"]),
        (BOOT_PHASES, &["0", "1"], &["on", "2"]),
        (SEED, &["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], &["", "00", ZERO_SEED, "zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]),
        (RAM_MIB, &["512"], &["512M"]),
        (RUN_NONCE, &["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], &["", ZERO_SEED, "01", "+123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]),
        (AUDIT_KEY, &["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], &["", ZERO_SEED, "01"]),
        (ARTIFACT_KEY, &["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], &["", ZERO_SEED, "01", "zz"]),
        (BENCH, &["futex", "futex-timed", "wait", "memcpy", "sink-serial", "serial-raw", "sink-file", "tcp-echo"], &["fast", ""]),
        (TEST_ARG, &["", "bench-read-4k"], &[]),
        (DEBUG_EXIT, &["0xf4", "f4"], &["", "port", "0x10000", "0x+f4"]),
        (ON_EXIT, &["poweroff", "halt", "reboot"], &["", "off", "Halt"]),
        (AUDIT_DIR, &["/root/audit"], &[""]),
        (BOOT, &["multiboot"], &["grub"]),
        (CAPSULES, &["2", "x"], &[]),
        ("ASTRID_CAPSULE_0", &["0x1200000,4096,hello.wasm", "bad"], &[]),
        ("ASTRID_MANIFEST_3", &["zz"], &[]),
        (KERNEL_LOG, &["info", "anything"], &[]),
        (CACHE_DIR, &["/tmp/cache"], &[]),
        (STATE_DIR, &["/var/lib/astrid"], &[]),
        (SYS_WIT_DIR, &["/vendor/wit"], &[]),
        (BENCH_CONSOLE, &["1"], &[]),
        (BENCH_BOOT_AB, &["/tmp/old-astrid.img"], &[]),
    ];

    const ZERO_SEED: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    /// Found by the `capsule` fuzz target: `from_str_radix` takes a sign, so `+a` decoded
    /// as the byte 0x0a and a manifest had several hex spellings (what the image decoded
    /// was not what the run command encodes).
    #[test]
    fn hex_has_one_spelling() {
        assert_eq!(hex_decode("0a"), Ok(vec![0x0a]));
        assert_eq!(hex_decode("0A"), Ok(vec![0x0a]));
        for bad in ["+a", "-a", " a", "0x", "+0a0"] {
            assert!(hex_decode(bad).is_err(), "{bad:?}");
        }
        let text = "name = \"x\"";
        assert_eq!(hex_decode(&hex_encode(text.as_bytes())).unwrap(), text.as_bytes());
    }

    #[test]
    fn every_variable_has_cases_and_every_case_is_a_variable() {
        for s in ALL {
            let covered = CASES.iter().any(|(name, ..)| info(name).is_some_and(|i| i.name == s.name));
            assert!(covered, "{} has no test cases", s.name);
        }
        for (name, ..) in CASES {
            assert!(info(name).is_some(), "{name} is not in the table");
        }
    }

    #[test]
    fn good_values_parse_and_write_back_the_same() {
        for (name, good, _) in CASES {
            for value in *good {
                let settings = parse(&[(name, value)]).unwrap_or_else(|e| panic!("{name}={value:?}: {e}"));
                // What the run command would send reads back as the same settings.
                let again = Settings::from_env_pairs(settings.to_env_pairs()).unwrap();
                assert_eq!(again, settings, "{name}={value:?}");
            }
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting_and_what_it_accepts() {
        for (name, _, bad) in CASES {
            for value in *bad {
                let e = parse(&[(name, value)]).expect_err(&format!("{name}={value:?} was accepted"));
                assert_eq!(e.name, *name);
                let accepted = info(name).unwrap().accepted;
                assert!(matches!(&e.problem, Problem::Malformed { accepted: a, .. } if *a == accepted), "{e:?}");
                let message = e.to_string();
                assert!(message.contains(name) && message.contains(accepted), "{message}");
            }
        }
    }

    #[test]
    fn unknown_names_are_refused_and_others_ignored() {
        for name in ["ASTRID_", "ASTRID_NETWORK", "ASTRID_audit", "ASTRID_CAPSULE_01", "ASTRID_CAPSULE_x", "ASTRID_MANIFEST_", "ASTRID_KEY"] {
            let e = parse(&[(name, "1")]).expect_err(name);
            assert_eq!((e.name.as_str(), &e.problem), (name, &Problem::Unknown));
            assert!(e.to_string().contains(NET), "the message lists the accepted names");
        }
        assert_eq!(parse(&[("PATH", "/bin"), ("HERMIT_LOG", "x")]).unwrap(), Settings::default());
        let mut s = Settings::default();
        assert_eq!(s.set("MEMORY_MIB", "1").unwrap_err().problem, Problem::Unknown);
    }

    #[test]
    fn defaults_are_what_the_table_says() {
        let default = Settings::default();
        assert!(default.to_env_pairs().is_empty());
        for s in ALL.iter().filter(|s| !s.indexed && s.scope != Scope::Host && s.default != "unset") {
            assert_eq!(parse(&[(s.name, s.default)]).unwrap(), default, "{}={:?}", s.name, s.default);
        }
        assert_eq!(default.net, NetMode::Restricted);
        assert_eq!(default.audit, Switch::On);
        assert_eq!(default.test_arg, "");
        assert_eq!(default.max_capsule_bytes, Number(DEFAULT_MAX_CAPSULE_BYTES));
    }

    #[cfg(feature = "engine")]
    #[test]
    fn quota_defaults_are_the_engines() {
        let limits = crate::host::CapsuleLimits::default();
        assert_eq!(limits.handles as u64, DEFAULT_HANDLE_QUOTA);
        assert_eq!(limits.kv_bytes as u64, DEFAULT_KV_QUOTA_BYTES);
        assert_eq!(limits.memory_bytes as u64, DEFAULT_MEMORY_MIB << 20);
    }

    #[test]
    fn families_are_indexed_and_kept_as_given() {
        let s = parse(&[(CAPSULES, "2"), ("ASTRID_CAPSULE_1", "b"), ("ASTRID_CAPSULE_0", "a"), ("ASTRID_MANIFEST_1", "00")]).unwrap();
        assert_eq!(s.capsule_count.as_deref(), Some("2"));
        assert_eq!(s.boot_modules.iter().collect::<Vec<_>>(), vec![(&0, &"a".to_string()), (&1, &"b".to_string())]);
        assert_eq!(s.manifests.get(&1).map(String::as_str), Some("00"));
        assert_eq!(CAPSULE.name(12), "ASTRID_CAPSULE_12");
        assert_eq!(CAPSULE.index("ASTRID_CAPSULE_12"), Some(12));
        assert_eq!(CAPSULE.index(CAPSULES), None);
        assert_eq!(CAPSULE.index(CAPSULE_CONFIG), None);
    }

    #[test]
    fn a_refusal_keeps_the_rest() {
        let e = parse(&[(DEBUG_EXIT, "0xf4"), (NET, "everywhere"), (RAM_MIB, "512")]).unwrap_err();
        assert_eq!(e.name, NET);
        assert_eq!(e.parsed.debug_exit, Some(DebugPort(0xf4)));
        assert_eq!(e.parsed.ram_mib, Number(512));
    }

    #[test]
    fn a_lookup_sees_the_table() {
        let s = Settings::from_vars(|k| match k {
            "ASTRID_NET" => Some("outbound".into()),
            "ASTRID_MANIFEST_5" => Some("00".into()),
            "ASTRID_UNKNOWN" => Some("x".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.net, NetMode::Outbound);
        assert_eq!(s.manifests.len(), 1);
        assert!(Settings::from_vars(|k| (k == PUBLISH).then(|| "0".into())).is_err());
    }

    #[test]
    fn the_table_is_well_formed() {
        for (i, s) in ALL.iter().enumerate() {
            assert!(s.name.starts_with(PREFIX), "{}", s.name);
            assert!(ALL[..i].iter().all(|t| t.name != s.name), "{} twice", s.name);
            assert!(!s.doc.trim().is_empty(), "{} has no doc", s.name);
            for cell in [s.accepted, s.default, s.doc] {
                assert!(!cell.contains('|') && !cell.contains('\n'), "{}: {cell:?} breaks the markdown table", s.name);
            }
        }
        for m in NetMode::ALL {
            assert_eq!(m.to_string().parse::<NetMode>(), Ok(m));
            assert!(info(NET).unwrap().accepted.contains(m.name()));
        }
        for b in Benchmark::ALL {
            assert!(info(BENCH).unwrap().accepted.contains(b.name()));
        }
    }

    #[test]
    fn the_readme_shows_the_table() {
        let readme = include_str!("../../README.md");
        let expected = markdown_table();
        let shown = readme
            .split_once(README_TABLE_START)
            .and_then(|(_, rest)| rest.split_once(README_TABLE_END))
            .map(|(table, _)| table.trim_start_matches('\n'));
        assert!(
            shown == Some(expected.as_str()),
            "README.md's settings table (between {README_TABLE_START} and {README_TABLE_END}) differs from settings::ALL; \
             replace it with the output of `cargo xtask settings-table`:\n\n{expected}"
        );
    }
}
