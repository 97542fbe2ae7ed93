//! A capsule's manifest: the subset of the SDK's `Capsule.toml` the image enforces. It
//! sits beside the capsule (`echo.wasm` → `echo.toml`, or `Capsule.toml` in a capsule
//! crate) and travels into the image with it. Without one a capsule gets the defaults:
//! the image's loopback only (bind, connect, UDP), every ipc topic, the image-wide
//! limits, no capabilities to enumerate.
//!
//! ```toml
//! [package]
//! name = "echo"                      # the capsule's identity in the audit log, and the
//!                                    # principal it acts for (unique in a boot)
//!
//! [capabilities]
//! net_bind = ["127.0.0.1:7700"]      # loopback listeners it may open (host:port, * for
//!                                    # any); a published port named here is this capsule's
//! net_connect = ["10.0.2.2:8080"]    # where it may connect; naming an address lets it
//!                                    # past the airlock to that address, on that entry's
//!                                    # ports only
//! net_udp = ["bind:127.0.0.1:*", "127.0.0.1:5353"]
//! ipc_publish = ["chat.**"]          # topic patterns it may publish to
//! ipc_subscribe = ["chat.**"]        # patterns its subscriptions must fall within
//!
//! [limits]                           # each only lowers the image's limit
//! memory_mib = 32
//! kv_bytes = 65536
//! handles = 512
//! connect_timeout_ms = 5000
//!
//! [config]                           # what astrid:sys get-config answers
//! greeting = "hello"
//! ```
//!
//! Keys the image does not know (the rest of a full `Capsule.toml`) are ignored and
//! listed, so a capsule's real manifest works unchanged; a known key with a wrong
//! shape is an error that names the key and the fix.

use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::audit::Untrusted;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub name: Option<String>,
    pub net_bind: Option<Vec<String>>,
    pub net_connect: Option<Vec<String>>,
    pub net_udp: Option<Vec<String>>,
    pub ipc_publish: Option<Vec<String>>,
    pub ipc_subscribe: Option<Vec<String>>,
    pub memory_mib: Option<u64>,
    pub kv_bytes: Option<u64>,
    pub handles: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub config: BTreeMap<String, String>,
    /// Keys present but not enforced by the image (`table.key`).
    pub ignored: Vec<String>,
    /// The text it was parsed from: the audit log records its BLAKE3 at load.
    pub text: String,
}

fn strings(key: &str, v: &Value) -> Result<Vec<String>, String> {
    let list = v.as_array().ok_or_else(|| format!("[capabilities] {key} must be a list of strings, like {key} = [\"127.0.0.1:*\"]"))?;
    list.iter()
        .map(|e| e.as_str().map(str::to_string).ok_or_else(|| format!("[capabilities] {key}: {e:?} is not a string")))
        .collect()
}

fn number(key: &str, v: &Value) -> Result<u64, String> {
    v.as_integer().and_then(|n| u64::try_from(n).ok()).ok_or_else(|| format!("[limits] {key} must be a non-negative whole number, not {v:?}"))
}

impl Manifest {
    /// Parses a manifest's text; the error says what is wrong and how to fix it.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message()))?;
        let mut m = Manifest { text: text.to_owned(), ..Manifest::default() };
        for (section, value) in &table {
            let Some(entries) = value.as_table() else {
                m.ignored.push(section.clone());
                continue;
            };
            for (key, v) in entries {
                match (section.as_str(), key.as_str()) {
                    ("package", "name") => {
                        let name = v.as_str().ok_or("[package] name must be a string")?;
                        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                            return Err(format!("[package] name {}: use 1 to 64 letters, digits, '-', '_' or '.'", Untrusted(name)));
                        }
                        m.name = Some(name.to_string());
                    }
                    ("capabilities", "net_bind") => m.net_bind = Some(strings(key, v)?),
                    ("capabilities", "net_connect") => m.net_connect = Some(strings(key, v)?),
                    ("capabilities", "net_udp") => m.net_udp = Some(strings(key, v)?),
                    ("capabilities", "ipc_publish") => m.ipc_publish = Some(strings(key, v)?),
                    ("capabilities", "ipc_subscribe") => m.ipc_subscribe = Some(strings(key, v)?),
                    ("limits", "memory_mib") => m.memory_mib = Some(number(key, v)?),
                    ("limits", "kv_bytes") => m.kv_bytes = Some(number(key, v)?),
                    ("limits", "handles") => m.handles = Some(number(key, v)?),
                    ("limits", "connect_timeout_ms") => m.connect_timeout_ms = Some(number(key, v)?),
                    ("config", _) => {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Integer(n) => n.to_string(),
                            Value::Float(f) => f.to_string(),
                            Value::Boolean(b) => b.to_string(),
                            _ => return Err(format!("[config] {} must be a string, number or boolean", Untrusted(key))),
                        };
                        m.config.insert(key.clone(), text);
                    }
                    _ => m.ignored.push(format!("{section}.{key}")),
                }
            }
        }
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), String> {
        // The engine's providers check these (and the fuzz targets, built with them).
        #[cfg(any(feature = "engine", fuzzing))]
        {
            for (key, list) in [("net_bind", &self.net_bind), ("net_connect", &self.net_connect)] {
                for p in list.iter().flatten() {
                    crate::net::addr::Pattern::parse(p).map_err(|e| format!("[capabilities] {key}: {e}"))?;
                }
            }
            for p in self.net_udp.iter().flatten() {
                crate::net::addr::Pattern::parse(p.strip_prefix("bind:").unwrap_or(p)).map_err(|e| format!("[capabilities] net_udp: {e}"))?;
            }
            for (key, list) in [("ipc_publish", &self.ipc_publish), ("ipc_subscribe", &self.ipc_subscribe)] {
                for p in list.iter().flatten() {
                    if !crate::ipc::bus::valid_pattern(p) {
                        return Err(format!("[capabilities] {key}: {} is not a topic pattern (dot-separated segments, `*` for one, a trailing `**` for the rest)", Untrusted(p)));
                    }
                }
            }
        }
        if self.memory_mib == Some(0) {
            return Err("[limits] memory_mib must be at least 1".into());
        }
        Ok(())
    }

    /// The capabilities `astrid:sys` enumerates: one `kind:entry` per allowlist entry.
    pub fn capabilities(&self) -> Vec<String> {
        let lists = [
            ("net_bind", &self.net_bind),
            ("net_connect", &self.net_connect),
            ("net_udp", &self.net_udp),
            ("ipc_publish", &self.ipc_publish),
            ("ipc_subscribe", &self.ipc_subscribe),
        ];
        lists.iter().flat_map(|(kind, list)| list.iter().flatten().map(move |e| format!("{kind}:{e}"))).collect()
    }

    /// The manifest as it travels on the kernel command line (hex of the TOML text: the
    /// command line cannot carry spaces, quotes or newlines).
    pub fn encode(text: &str) -> String {
        hex_encode(text.as_bytes())
    }

    pub fn decode(hex: &str) -> Result<String, String> {
        String::from_utf8(hex_decode(hex)?).map_err(|_| "not UTF-8".into())
    }
}

/// One capsule of a boot as the identity checks see it: how messages name it (its file
/// or module name), its id (the file name the image announces it by) and its manifest.
pub struct BootCapsule<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub manifest: Option<&'a Manifest>,
}

impl BootCapsule<'_> {
    /// The principal the capsule acts for: its manifest's `[package] name`, else its id.
    pub fn principal(&self) -> &str {
        self.manifest.and_then(|m| m.name.as_deref()).unwrap_or(self.id)
    }
}

/// Principals are unique in a boot: a principal is one identity in the audit log and
/// owns one kv store, so two capsules acting as one would share (and race on) its
/// journal and be indistinguishable in the log. The error names both capsules and the
/// fix. Checked by the run command before anything boots, and by the image. The error
/// carries the index of the capsule refused (the second of the two).
pub fn unique_principals(capsules: &[BootCapsule<'_>]) -> Result<(), (usize, String)> {
    for (i, b) in capsules.iter().enumerate() {
        if let Some(a) = capsules[..i].iter().find(|a| a.principal() == b.principal()) {
            return Err((i, format!(
                "capsules {} and {} both act as principal {}: a principal is one identity in the audit log and owns one kv store — give one of them another [package] name in its manifest, or rename its file",
                Untrusted(a.name),
                Untrusted(b.name),
                Untrusted(b.principal())
            )));
        }
    }
    Ok(())
}

/// Why published ports cannot be handed to capsules.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishError {
    /// Two manifests bind the same published port (a bad manifest: exit 65); the
    /// capsule refused is the second of them.
    Contested { capsule: usize, why: String },
    /// Several capsules run and no manifest binds the port (a usage error: exit 64).
    Unclaimed(String),
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Contested { why, .. } | PublishError::Unclaimed(why) => f.write_str(why),
        }
    }
}

/// Whether a manifest's `net_bind` names `port` itself (`127.0.0.1:7700`; `*` names no
/// port).
fn binds_port(m: &Manifest, port: u16) -> bool {
    m.net_bind.iter().flatten().any(|e| e.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()) == Some(port))
}

/// Who may listen on each published port (`ASTRID_PUBLISH`): outside connections reach
/// whatever listens there, so a port goes only to the capsule whose manifest's
/// `net_bind` names it; a boot of one capsule needs no manifest for that. Returns, per
/// capsule, the published ports it must not bind (it gets `address-in-use`).
pub fn published_port_owners(publish: &[u16], capsules: &[BootCapsule<'_>]) -> Result<Vec<Vec<u16>>, PublishError> {
    let mut foreign = vec![Vec::new(); capsules.len()];
    for &port in publish {
        let claims: Vec<usize> = (0..capsules.len()).filter(|&i| capsules[i].manifest.is_some_and(|m| binds_port(m, port))).collect();
        let owner = match claims.as_slice() {
            [one] => *one,
            [a, b, ..] => {
                return Err(PublishError::Contested {
                    capsule: *b,
                    why: format!(
                        "published port {port} is bound by the manifests of capsules {} and {}: only one capsule may serve a published port — remove it from the net_bind of the other",
                        Untrusted(capsules[*a].name),
                        Untrusted(capsules[*b].name)
                    ),
                });
            }
            [] if capsules.len() == 1 => 0,
            [] => {
                return Err(PublishError::Unclaimed(format!(
                    "published port {port}: {} capsules run and no manifest binds it — add net_bind = [\"127.0.0.1:{port}\"] to the manifest of the capsule that serves it",
                    capsules.len()
                )));
            }
        };
        for (i, ports) in foreign.iter_mut().enumerate() {
            if i != owner {
                ports.push(port);
            }
        }
    }
    Ok(foreign)
}

/// Bytes as lowercase hex: how binary values travel on the kernel command line.
pub use crate::settings::{hex_decode, hex_encode};

/// Where a capsule's manifest would be: `Capsule.toml` in a capsule crate directory,
/// else `<stem>.toml` beside the file.
pub fn path_for(capsule: &std::path::Path) -> Option<std::path::PathBuf> {
    if capsule.is_dir() {
        let p = capsule.join("Capsule.toml");
        return p.is_file().then_some(p);
    }
    let p = capsule.with_extension("toml");
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses_and_unknown_keys_are_listed() {
        let m = Manifest::parse(
            r#"
            [package]
            name = "echo"
            version = "1.0.0"
            [capabilities]
            net_bind = ["127.0.0.1:7700"]
            net_connect = ["10.0.2.2:8080", "example.org:*"]
            net_udp = ["bind:127.0.0.1:*"]
            ipc_publish = ["chat.**"]
            [limits]
            memory_mib = 32
            [config]
            greeting = "hi"
            port = 8080
            [[tools]]
            name = "x"
            "#,
        )
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("echo"));
        assert_eq!(m.net_connect.as_ref().unwrap().len(), 2);
        assert_eq!(m.memory_mib, Some(32));
        assert_eq!(m.config.get("port").map(String::as_str), Some("8080"));
        assert_eq!(m.ignored, vec!["package.version".to_string(), "tools".to_string()]);
        assert!(m.capabilities().contains(&"net_bind:127.0.0.1:7700".to_string()));
        let hex = Manifest::encode("[package]\nname = \"é\"\n");
        assert_eq!(Manifest::decode(&hex).unwrap(), "[package]\nname = \"é\"\n");
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("[capabilities]\nnet_connect = \"10.0.2.2:80\"", "must be a list"),
            ("[capabilities]\nnet_connect = [\"nohost\"]", "host:port"),
            ("[capabilities]\nipc_publish = [\"a..b\"]", "topic pattern"),
            ("[limits]\nmemory_mib = -1", "non-negative"),
            ("[limits]\nmemory_mib = 0", "at least 1"),
            ("[package]\nname = \"a b\"", "letters"),
            ("[package]\nname = \"x\\n@@audit {}\"", "name \"x\\n@@audit {}\""),
            ("[config]\n\"k\\n@@audit {}\" = [1]", "[config] \"k\\n@@audit {}\" must be"),
            ("[capabilities]\nipc_publish = [\"a\\n@@audit\"]", "\"a\\n@@audit\" is not a topic"),
            ("[package\nname=1", "not valid TOML"),
        ] {
            let e = Manifest::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
            // What a manifest says comes back labelled, never as a line of its own.
            assert!(!e.contains('\n'), "{text:?}: {e}");
        }
    }

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text).unwrap()
    }

    #[test]
    fn principals_are_unique_in_a_boot() {
        let named = |n: &str| manifest(&format!("[package]\nname = \"{n}\"\n"));
        let (alice, alice2, bob, xw) = (named("alice"), named("alice"), named("bob"), named("x.wasm"));
        fn boot(list: &[(&str, &str, Option<&Manifest>)]) -> Result<(), (usize, String)> {
            let capsules: Vec<BootCapsule<'_>> = list.iter().map(|(name, id, m)| BootCapsule { name, id, manifest: *m }).collect();
            unique_principals(&capsules)
        }
        type Case<'m> = (Vec<(&'static str, &'static str, Option<&'m Manifest>)>, Option<&'static str>);
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            (vec![("a/x.wasm", "x.wasm", None), ("b/y.wasm", "y.wasm", None)], None),
            (vec![("a/x.wasm", "x.wasm", Some(&alice)), ("b/y.wasm", "y.wasm", Some(&bob))], None),
            // The same file name twice: one id, one principal.
            (vec![("a/x.wasm", "x.wasm", None), ("b/x.wasm", "x.wasm", None)], Some("capsules \"a/x.wasm\" and \"b/x.wasm\" both act as principal \"x.wasm\"")),
            // Two manifests with one name.
            (vec![("a.wasm", "a.wasm", Some(&alice)), ("b.wasm", "b.wasm", None), ("c.wasm", "c.wasm", Some(&alice2))], Some("capsules \"a.wasm\" and \"c.wasm\" both act as principal \"alice\"")),
            // A manifest naming itself after another capsule's file.
            (vec![("x.wasm", "x.wasm", None), ("y.wasm", "y.wasm", Some(&xw))], Some("principal \"x.wasm\"")),
        ];
        for (list, want) in cases {
            match (boot(&list), want) {
                (Ok(()), None) => {}
                (Err((i, e)), Some(w)) => assert!(i == list.len() - 1 && e.contains(w) && e.contains("[package] name"), "{i}: {e}"),
                (got, want) => panic!("{list:?}: got {got:?}, want {want:?}", list = list.iter().map(|c| c.0).collect::<Vec<_>>()),
            }
        }
    }

    #[test]
    fn a_published_port_goes_only_to_the_capsule_whose_manifest_binds_it() {
        let server = manifest("[capabilities]\nnet_bind = [\"127.0.0.1:7700\", \"127.0.0.1:*\"]\n");
        let other = manifest("[capabilities]\nnet_bind = [\"127.0.0.1:*\"]\n");
        let rival = manifest("[capabilities]\nnet_bind = [\"localhost:7700\"]\n");
        let c = |name: &'static str, m: Option<&'static Manifest>| BootCapsule { name, id: name, manifest: m };
        let (server, other, rival): (&'static Manifest, &'static Manifest, &'static Manifest) =
            (Box::leak(Box::new(server)), Box::leak(Box::new(other)), Box::leak(Box::new(rival)));
        type Case = (Vec<u16>, Vec<BootCapsule<'static>>, Result<Vec<Vec<u16>>, &'static str>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // One capsule: it serves every published port, manifest or not.
            (vec![7700], vec![c("solo", None)], Ok(vec![vec![]])),
            (vec![7700, 8080], vec![c("solo", Some(other))], Ok(vec![vec![]])),
            // The manifest that names the port gets it; every other capsule is kept off.
            (vec![7700], vec![c("a", None), c("srv", Some(server)), c("b", Some(other))], Ok(vec![vec![7700], vec![], vec![7700]])),
            (vec![], vec![c("a", None), c("b", None)], Ok(vec![vec![], vec![]])),
            // `*` claims no port; two claims are a conflict; no claim among several is a mistake.
            (vec![7700], vec![c("srv", Some(server)), c("rival", Some(rival))], Err("bound by the manifests of capsules \"srv\" and \"rival\"")),
            (vec![7700], vec![c("a", Some(other)), c("b", None)], Err("2 capsules run and no manifest binds it")),
        ];
        for (publish, capsules, want) in cases {
            let got = published_port_owners(&publish, &capsules);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{publish:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
                _ => panic!("{publish:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(matches!(published_port_owners(&[7700], &[c("srv", Some(server)), c("rival", Some(rival))]), Err(PublishError::Contested { capsule: 1, .. })));
        assert!(matches!(published_port_owners(&[7700], &[c("a", None), c("b", None)]), Err(PublishError::Unclaimed(_))));
    }
}
