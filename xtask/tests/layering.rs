//! The kernel crate's layering, checked from its source text (no compilation).
//!
//! Every `kernel/src/**/*.rs` is tokenized by hand (comments, strings, char literals
//! and lifetimes skipped) and each path that names a kernel item is resolved to the
//! module holding it: `use` trees, `crate::a::b` and `$crate::a::b`, `self::` and
//! `super::` (relative to the module the text sits in, inline `mod x { }` included),
//! and bare paths that start with a name a `use` or `mod` bound in that module.
//! Items under `#[cfg(test)]` (test modules, test-only `use`s) are left out.
//!
//! Granularity: a unit is a top-level module (`wait`, `audit`, `launch`) or a module one
//! level below it (`net::addr`, `kv::store`, `audit::queue`); deeper modules count as
//! their second-level ancestor. A path counts against the deepest unit it names as
//! written (`crate::audit::AuditLog` is a use of `audit`, the facade that re-exports
//! it; re-exports are not followed); in code its last segment is taken for an item
//! (`wait::pipe()` calls `wait`'s function, not the private module `wait::pipe`). Importing a module itself (`use crate::net;`) is
//! no edge: the paths written through it are. `lib.rs` and `main.rs` are crate roots,
//! not units.
//!
//! The check fails, listing each problem with the file and line that causes it, when
//! - the top-level modules import each other in a cycle (`io -> engine -> io`);
//! - the units of one top-level module import each other in a cycle (`net::kernel ->
//!   net::local -> net::kernel`). A parent and its own children are exempt: a module
//!   that re-exports its children while they share its items (`wait` and `wait::event`)
//!   is the facade idiom, and a cycle through it shows up between top-level modules;
//! - a unit imports a layer above its own (see `LAYERS` and `Layer::may_use`): a
//!   provider imports `host`, `engine`, `launch` or `bench`, `host` imports `engine`, ...;
//! - a provider names `wasmtime` (directly or through the `crate::wasmtime` re-export);
//! - a unit that imports or is imported is in no layer: give it one in `LAYERS`.
//!
//! The providers form one layer: among them only cycles are forbidden (no order is
//! enforced between, say, `platform` and `exit`).
//!
//! A failure lists every problem, with the file, line and path that causes it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------
// The layers
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// Plain Rust services: no WIT, no wasmtime, no capsule state.
    Provider,
    /// In-image benchmarks: they drive providers directly.
    Bench,
    /// The WIT bindings over the providers (`astrid:*` host traits).
    Host,
    /// wasmtime: engine, linker, capsule state.
    Engine,
    /// The application's entry: everything may be used from here.
    Launch,
}

impl Layer {
    fn may_use(self, other: Layer) -> bool {
        use Layer::*;
        match self {
            Provider => other == Provider,
            Bench => matches!(other, Provider | Bench),
            Host => matches!(other, Provider | Host),
            Engine => matches!(other, Provider | Host | Engine),
            Launch => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Layer::Provider => "provider",
            Layer::Bench => "bench",
            Layer::Host => "host",
            Layer::Engine => "engine",
            Layer::Launch => "launch",
        }
    }
}

/// Module (prefix) to layer; the longest matching prefix wins, so `net` covers
/// `net::addr`, `net::link`, ... and `kv::store` does not make `kv` itself a provider.
const LAYERS: &[(&str, Layer)] = &[
    ("platform", Layer::Provider),
    ("wait", Layer::Provider),
    ("sources", Layer::Provider),
    ("audit", Layer::Provider),
    ("net", Layer::Provider),
    ("sys", Layer::Provider),
    ("kv", Layer::Provider),
    ("ipc", Layer::Provider),
    ("quota", Layer::Provider),
    ("manifest", Layer::Provider),
    ("wasm", Layer::Provider),
    ("capsule", Layer::Provider),
    ("exit", Layer::Provider),
    ("settings", Layer::Provider),
    ("bench", Layer::Bench),
    ("host", Layer::Host),
    ("engine", Layer::Engine),
    ("launch", Layer::Launch),
];

fn layer_of(unit: &str) -> Option<Layer> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| unit == *prefix || unit.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|&(_, layer)| layer)
}

// ---------------------------------------------------------------------------------
// The check on the real tree
// ---------------------------------------------------------------------------------

#[test]
fn kernel_layering() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/src");
    let files = read_tree(&src);
    assert!(files.len() > 10, "found only {} files under {}", files.len(), src.display());
    let problems = check(&files);
    if !problems.is_empty() {
        let report = format!(
            "kernel/src breaks its layering ({} problem(s)):\n\n{}",
            problems.len(),
            problems.join("\n\n")
        );
        panic!("{report}");
    }
}

/// Every `.rs` under `root`, as (path relative to `root` with `/` separators, text).
fn read_tree(root: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap();
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (rel, text)
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A literal, lifetime or label: only there to break paths apart.
    Lit,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let is_ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let is_ident = |ch: char| ch == '_' || ch.is_alphanumeric();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips a quoted body from just after its opening `"` to just after the closing
    // quote (followed by `hashes` `#`s for raw strings); escapes only when not raw.
    let skip_quoted = |i: &mut usize, line: &mut usize, raw: bool, hashes: usize| {
        while *i < c.len() {
            let ch = c[*i];
            if ch == '\n' {
                *line += 1;
            }
            if ch == '\\' && !raw {
                if at(*i + 1) == '\n' {
                    *line += 1;
                }
                *i += 2;
                continue;
            }
            *i += 1;
            if ch == '"' && (0..hashes).all(|k| at(*i + k) == '#') {
                *i += hashes;
                return;
            }
        }
    };
    while i < c.len() {
        let ch = c[i];
        let start_line = line;
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i += 1;
            skip_quoted(&mut i, &mut line, false, 0);
            out.push(Token { tok: Tok::Lit, line: start_line });
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // An escaped char literal: '\n', '\'', '\u{..}'.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                // A plain char literal, which may be any char: '{', '"', '/'.
                i += 3;
            } else {
                // A lifetime or a label.
                i += 1;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
            }
            out.push(Token { tok: Tok::Lit, line: start_line });
        } else if ch.is_ascii_digit() {
            while i < c.len() && (is_ident(c[i]) || (c[i] == '.' && at(i + 1).is_ascii_digit())) {
                i += 1;
            }
            out.push(Token { tok: Tok::Lit, line: start_line });
        } else if is_ident_start(ch) {
            let s = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            let word: String = c[s..i].iter().collect();
            let next = at(i);
            match word.as_str() {
                // Raw strings: r"..", r#".."#, br"..", cr#".."#.
                "r" | "br" | "cr" if next == '"' || (next == '#' && {
                    let mut k = i;
                    while at(k) == '#' {
                        k += 1;
                    }
                    at(k) == '"'
                }) =>
                {
                    let mut hashes = 0;
                    while at(i) == '#' {
                        hashes += 1;
                        i += 1;
                    }
                    i += 1;
                    skip_quoted(&mut i, &mut line, true, hashes);
                    out.push(Token { tok: Tok::Lit, line: start_line });
                }
                // A raw identifier: r#type.
                "r" if next == '#' && is_ident_start(at(i + 1)) => {
                    i += 1;
                    let s = i;
                    while i < c.len() && is_ident(c[i]) {
                        i += 1;
                    }
                    out.push(Token { tok: Tok::Ident(c[s..i].iter().collect()), line: start_line });
                }
                // Byte and C strings: b"..", c"..".
                "b" | "c" if next == '"' => {
                    i += 1;
                    skip_quoted(&mut i, &mut line, false, 0);
                    out.push(Token { tok: Tok::Lit, line: start_line });
                }
                // A byte literal: b'x', b'\n'.
                "b" if next == '\'' => {
                    i += if at(i + 1) == '\\' { 2 } else { 1 };
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                    out.push(Token { tok: Tok::Lit, line: start_line });
                }
                _ => out.push(Token { tok: Tok::Ident(word), line: start_line }),
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token { tok: Tok::PathSep, line });
            i += 2;
        } else {
            out.push(Token { tok: Tok::Punct(ch), line });
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// Paths in one file
// ---------------------------------------------------------------------------------

/// One path as written, before resolution.
#[derive(Clone, Debug)]
struct RawPath {
    /// The module the text sits in (from the crate root).
    scope: Vec<String>,
    /// Segments as written: they may start with `crate`, `$crate`, `self`, `super`.
    segs: Vec<String>,
    /// Written with a leading `::` (an extern crate).
    global: bool,
    kind: PathKind,
    line: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum PathKind {
    /// A path in code (types, calls, macros, attributes).
    Code,
    /// A `use` leaf binding `name` (`use a::b;`, `use a::b as name;`, `use a::{self}`).
    Use { name: Option<String> },
    /// A `use a::b::*;`.
    Glob,
}

#[derive(Debug, Default)]
struct FileScan {
    paths: Vec<RawPath>,
    /// Child modules declared in this file (`mod x;` or `mod x { }`), from the root.
    mods: Vec<Vec<String>>,
    /// Modules declared `#[cfg(test)] mod x;`: their files are left out.
    test_mods: Vec<Vec<String>>,
    /// `#![cfg(test)]` at the top: the whole file is test code.
    test_only: bool,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token { tok: Tok::Ident(s), .. }) => Some(s),
        _ => None,
    }
}

fn is(t: Option<&Token>, want: &Tok) -> bool {
    t.is_some_and(|t| &t.tok == want)
}

/// Whether the attribute whose `[` is at `open` is `cfg(test)` or `cfg(all(.., test, ..))`.
fn is_cfg_test(toks: &[Token], open: usize) -> bool {
    if ident(toks.get(open + 1)) != Some("cfg") || !is(toks.get(open + 2), &Tok::Punct('(')) {
        return false;
    }
    if ident(toks.get(open + 3)) == Some("test") && is(toks.get(open + 4), &Tok::Punct(')')) {
        return true;
    }
    if ident(toks.get(open + 3)) != Some("all") || !is(toks.get(open + 4), &Tok::Punct('(')) {
        return false;
    }
    // The arguments of `all(`, at their own nesting level.
    let mut depth = 0;
    let mut i = open + 5;
    while let Some(t) = toks.get(i) {
        match &t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') if depth == 0 => return false,
            Tok::Punct(')') => depth -= 1,
            Tok::Ident(s) if depth == 0 && s == "test" => {
                let before = &toks[i - 1].tok;
                let after = toks.get(i + 1).map(|t| &t.tok);
                if matches!(before, Tok::Punct('(') | Tok::Punct(','))
                    && matches!(after, Some(Tok::Punct(')')) | Some(Tok::Punct(',')))
                {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// The index just after the balanced group opened at `open` (`[`, `(` or `{`).
fn skip_group(toks: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(t) = toks.get(i) {
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    toks.len()
}

/// The index just after the item starting at `start` (its attributes included): after
/// its `;` or its closing `}` at the item's own level, or at the unmatched closer of
/// the enclosing group (a field or an expression at the end of a block).
fn skip_item(toks: &[Token], start: usize) -> usize {
    let mut i = start;
    while let Some(t) = toks.get(i) {
        match t.tok {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => return skip_group(toks, i),
            Tok::Punct('(' | '[') => i = skip_group(toks, i),
            Tok::Punct(')' | ']' | '}') => return i,
            _ => i += 1,
        }
    }
    toks.len()
}

/// Whether the item at `i` (after attributes and visibility) is `mod NAME;`; its name.
fn declared_mod(toks: &[Token], mut i: usize) -> Option<String> {
    loop {
        match (toks.get(i).map(|t| &t.tok), toks.get(i + 1).map(|t| &t.tok)) {
            (Some(Tok::Punct('#')), Some(Tok::Punct('['))) => i = skip_group(toks, i + 1),
            (Some(Tok::Ident(s)), Some(Tok::Punct('('))) if s == "pub" => i = skip_group(toks, i + 1),
            (Some(Tok::Ident(s)), _) if s == "pub" => i += 1,
            _ => break,
        }
    }
    if ident(toks.get(i)) == Some("mod") && is(toks.get(i + 2), &Tok::Punct(';')) {
        return ident(toks.get(i + 1)).map(str::to_string);
    }
    None
}

/// Collects the paths of one file whose module path is `module`.
fn scan_file(module: &[String], src: &str) -> FileScan {
    let toks = tokenize(src);
    let mut scan = FileScan::default();
    // Inline modules we are inside: (name, brace depth of their body).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let scope = |inline: &[(String, usize)]| -> Vec<String> {
        module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect()
    };
    let mut i = 0;
    while i < toks.len() {
        let prev = if i > 0 { Some(&toks[i - 1].tok) } else { None };
        match &toks[i].tok {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Punct('#') => {
                let inner = is(toks.get(i + 1), &Tok::Punct('!'));
                let open = if inner { i + 2 } else { i + 1 };
                if !is(toks.get(open), &Tok::Punct('[')) {
                    i += 1;
                    continue;
                }
                if !is_cfg_test(&toks, open) {
                    // Scan the attribute like code: it may name paths (`#[derive(..)]`).
                    i += 1;
                    continue;
                }
                if inner {
                    if depth == 0 {
                        scan.test_only = true;
                        return scan;
                    }
                    // The rest of the enclosing block is test code.
                    let mut d = 0usize;
                    while let Some(t) = toks.get(i) {
                        match t.tok {
                            Tok::Punct('{') => d += 1,
                            Tok::Punct('}') if d == 0 => break,
                            Tok::Punct('}') => d -= 1,
                            _ => {}
                        }
                        i += 1;
                    }
                    continue;
                }
                let after = skip_group(&toks, open);
                if let Some(name) = declared_mod(&toks, after) {
                    let mut m = scope(&inline);
                    m.push(name);
                    scan.test_mods.push(m);
                }
                i = skip_item(&toks, after);
            }
            Tok::Ident(kw) if kw == "mod" => {
                let Some(name) = ident(toks.get(i + 1)) else {
                    i += 1;
                    continue;
                };
                let mut m = scope(&inline);
                m.push(name.to_string());
                scan.mods.push(m);
                if is(toks.get(i + 2), &Tok::Punct('{')) {
                    depth += 1;
                    inline.push((name.to_string(), depth));
                    i += 3;
                } else {
                    i += 2;
                }
            }
            Tok::Ident(kw) if kw == "use" && !matches!(prev, Some(Tok::PathSep)) => {
                let line = toks[i].line;
                let mut j = i + 1;
                let global = is(toks.get(j), &Tok::PathSep);
                if global {
                    j += 1;
                }
                let here = scope(&inline);
                let mut leaves = Vec::new();
                let ok = parse_use_tree(&toks, &mut j, &[], &mut leaves);
                for (segs, kind) in leaves {
                    scan.paths.push(RawPath { scope: here.clone(), segs, global, kind, line });
                }
                // On anything unexpected, resume after the statement.
                i = if ok && is(toks.get(j), &Tok::Punct(';')) { j + 1 } else { skip_item(&toks, i) };
            }
            // `pub(in crate::a)` names where an item is visible, not something it uses.
            Tok::Ident(kw) if kw == "in" && matches!(prev, Some(Tok::Punct('('))) => {
                i += 1;
                while is(toks.get(i), &Tok::PathSep) || ident(toks.get(i)).is_some() {
                    i += 1;
                }
            }
            Tok::Ident(_) | Tok::PathSep if !matches!(prev, Some(Tok::PathSep)) => {
                let line = toks[i].line;
                let global = toks[i].tok == Tok::PathSep;
                // `$crate::a` is `crate::a` as far as this check goes.
                let mut j = if global { i + 1 } else { i };
                let mut segs = Vec::new();
                if let Some(first) = ident(toks.get(j)) {
                    segs.push(first.to_string());
                    j += 1;
                    while is(toks.get(j), &Tok::PathSep) {
                        let Some(seg) = ident(toks.get(j + 1)) else { break };
                        segs.push(seg.to_string());
                        j += 2;
                    }
                }
                if segs.len() >= 2 || (global && !segs.is_empty()) {
                    let here = scope(&inline);
                    scan.paths.push(RawPath { scope: here, segs, global, kind: PathKind::Code, line });
                }
                i = j.max(i + 1);
            }
            _ => i += 1,
        }
    }
    scan
}

/// Parses a use tree at `*i` under `prefix`, pushing its leaves; false on a syntax it
/// does not know (the caller then skips the statement).
fn parse_use_tree(toks: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<(Vec<String>, PathKind)>) -> bool {
    let mut segs = prefix.to_vec();
    loop {
        match toks.get(*i).map(|t| &t.tok) {
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    if is(toks.get(*i), &Tok::Punct('}')) {
                        *i += 1;
                        return true;
                    }
                    if !parse_use_tree(toks, i, &segs, out) {
                        return false;
                    }
                    if is(toks.get(*i), &Tok::Punct(',')) {
                        *i += 1;
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push((segs, PathKind::Glob));
                return true;
            }
            Some(Tok::Punct('$')) if ident(toks.get(*i + 1)) == Some("crate") => {
                segs.push("$crate".into());
                *i += 2;
            }
            Some(Tok::Ident(s)) => {
                segs.push(s.clone());
                *i += 1;
            }
            _ => return false,
        }
        if is(toks.get(*i), &Tok::PathSep) {
            *i += 1;
            continue;
        }
        // A leaf: `a::b`, `a::b as c`, `a::{self}`.
        let mut name = segs.last().cloned();
        if name.as_deref() == Some("self") {
            segs.pop();
            name = segs.last().cloned();
        }
        if ident(toks.get(*i)) == Some("as") {
            name = ident(toks.get(*i + 1)).filter(|n| *n != "_").map(str::to_string);
            if !matches!(toks.get(*i + 1).map(|t| &t.tok), Some(Tok::Ident(_)) | Some(Tok::Punct('_'))) {
                return false;
            }
            *i += 2;
        }
        out.push((segs, PathKind::Use { name }));
        return true;
    }
}

// ---------------------------------------------------------------------------------
// Resolution and the graph
// ---------------------------------------------------------------------------------

/// Where an edge comes from: "kernel/src/<file>:<line> <path as written>".
type Evidence = String;

#[derive(Debug, Default)]
struct Graph {
    /// Units that have a file (or a file below them).
    units: BTreeSet<String>,
    /// unit -> unit, with the first place that makes the edge.
    edges: BTreeMap<(String, String), Evidence>,
    /// Units that name wasmtime, with the first place they do.
    wasmtime: BTreeMap<String, Evidence>,
}

/// A file's module path from its path relative to `src/` (`net/mod.rs` -> `net`);
/// `None` for the crate roots.
fn module_of(rel: &str) -> Option<Vec<String>> {
    let rel = rel.strip_suffix(".rs")?;
    let mut segs: Vec<String> = rel.split('/').map(str::to_string).collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    if segs.is_empty() || (segs.len() == 1 && (segs[0] == "lib" || segs[0] == "main")) {
        return None;
    }
    Some(segs)
}

fn unit_name(module: &[String]) -> String {
    module[..module.len().min(2)].join("::")
}

enum Target {
    Crate(Vec<String>),
    Wasmtime,
}

fn build_graph(files: &[(String, String)]) -> Graph {
    let mut scans = Vec::new();
    for (rel, text) in files {
        let Some(module) = module_of(rel) else { continue };
        let scan = scan_file(&module, text);
        if !scan.test_only {
            scans.push((rel.clone(), module, scan));
        }
    }
    let test_mods: Vec<Vec<String>> = scans.iter().flat_map(|(_, _, s)| s.test_mods.clone()).collect();
    scans.retain(|(_, module, _)| !test_mods.iter().any(|t| module.starts_with(t)));

    let mut graph = Graph::default();
    let mut modules: BTreeSet<Vec<String>> = BTreeSet::new();
    for (_, module, scan) in &scans {
        graph.units.insert(unit_name(module));
        modules.insert(module.clone());
        modules.extend(scan.mods.iter().cloned());
    }
    let unit_for = |path: &[String]| -> Option<String> {
        (1..=path.len().min(2)).rev().map(|n| path[..n].join("::")).find(|u| graph.units.contains(u))
    };

    for (rel, module, scan) in &scans {
        let here = unit_name(module);
        // Names bound in each module of this file: `mod x` and `use` leaves.
        let mut aliases: BTreeMap<(Vec<String>, String), Target> = BTreeMap::new();
        for m in &scan.mods {
            let (name, parent) = m.split_last().unwrap();
            aliases.insert((parent.to_vec(), name.clone()), Target::Crate(m.clone()));
        }
        let resolve = |p: &RawPath, aliases: &BTreeMap<(Vec<String>, String), Target>| -> Option<Target> {
            if p.global {
                return (p.segs.first().map(String::as_str) == Some("wasmtime")).then_some(Target::Wasmtime);
            }
            let first = p.segs.first()?.as_str();
            let abs = match first {
                "crate" | "$crate" => p.segs[1..].to_vec(),
                "self" => p.scope.iter().chain(&p.segs[1..]).cloned().collect(),
                "super" => {
                    let ups = p.segs.iter().take_while(|s| *s == "super").count();
                    let base = p.scope.len().checked_sub(ups)?;
                    p.scope[..base].iter().chain(&p.segs[ups..]).cloned().collect()
                }
                _ => match aliases.get(&(p.scope.clone(), first.to_string())) {
                    Some(Target::Crate(to)) => to.iter().chain(&p.segs[1..]).cloned().collect(),
                    Some(Target::Wasmtime) => return Some(Target::Wasmtime),
                    None if first == "wasmtime" => return Some(Target::Wasmtime),
                    None => return None,
                },
            };
            if abs.first().map(String::as_str) == Some("wasmtime") {
                return Some(Target::Wasmtime);
            }
            Some(Target::Crate(abs))
        };
        // Bind the `use` names first (in order: a later `use` may go through an earlier
        // one), then resolve every path.
        for p in &scan.paths {
            if let PathKind::Use { name: Some(name) } = &p.kind
                && let Some(target) = resolve(p, &aliases)
            {
                aliases.insert((p.scope.clone(), name.clone()), target);
            }
        }
        for p in &scan.paths {
            let evidence = format!("kernel/src/{rel}:{} {}{}", p.line, if p.global { "::" } else { "" }, p.segs.join("::"));
            match resolve(p, &aliases) {
                Some(Target::Wasmtime) => {
                    graph.wasmtime.entry(here.clone()).or_insert(evidence);
                }
                Some(Target::Crate(abs)) => {
                    let named = match p.kind {
                        // Importing a module is no use of it: the paths through it are.
                        PathKind::Use { .. } if modules.contains(&abs) => continue,
                        PathKind::Use { .. } | PathKind::Glob => &abs[..],
                        // In code the last segment is an item, never a module, even
                        // where a private module has its name (`wait::pipe()`).
                        PathKind::Code => &abs[..abs.len().saturating_sub(1)],
                    };
                    if let Some(to) = unit_for(named)
                        && to != here
                    {
                        graph.edges.entry((here.clone(), to)).or_insert(evidence);
                    }
                }
                None => {}
            }
        }
    }
    graph
}

// ---------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------

fn family(unit: &str) -> &str {
    unit.split("::").next().unwrap()
}

/// Strongly connected components with more than one node, each sorted.
fn cycles(nodes: &BTreeSet<String>, edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability both ways is plenty for a graph of a few dozen nodes.
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([from.clone()]);
        while let Some(n) = queue.pop_front() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    queue.push_back(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        if done.contains(n) || !reaches[n].contains(n) {
            continue;
        }
        let scc: Vec<String> = nodes.iter().filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n)).cloned().collect();
        done.extend(scc.iter().cloned());
        if scc.len() > 1 {
            out.push(scc);
        }
    }
    out
}

/// A shortest cycle through `start` using only edges inside `within`.
fn shortest_cycle(start: &String, within: &[String], edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut back: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.clone()]);
    while let Some(n) = queue.pop_front() {
        for next in edges.get(&n).into_iter().flatten().filter(|m| within.contains(*m)) {
            if next == start {
                let mut path = vec![n.clone()];
                while let Some(p) = back.get(path.last().unwrap()) {
                    path.push(p.clone());
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !back.contains_key(next) {
                back.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
    }
    vec![start.clone()]
}

/// Describes each cycle of `edges` (a graph over `label`s, each edge with its evidence).
fn describe_cycles(what: &str, edges: &BTreeMap<(String, String), Evidence>, out: &mut Vec<String>) {
    let nodes: BTreeSet<String> = edges.keys().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
    let mut adj: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        adj.entry(a.clone()).or_default().insert(b.clone());
    }
    for scc in cycles(&nodes, &adj) {
        let cycle = shortest_cycle(&scc[0], &scc, &adj);
        let mut s = format!("{what} import cycle: {}", cycle.join(" -> "));
        if scc.len() > cycle.len() - 1 {
            let _ = write!(s, "\n  (all of {} reach each other)", scc.join(", "));
        }
        let _ = write!(s, "\n  edges inside:");
        for ((a, b), ev) in edges {
            if scc.contains(a) && scc.contains(b) {
                let _ = write!(s, "\n    {a} -> {b}: {ev}");
            }
        }
        out.push(s);
    }
}

fn problems(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();

    // (a) Cycles between top-level modules.
    let mut top: BTreeMap<(String, String), Evidence> = BTreeMap::new();
    for ((a, b), ev) in &graph.edges {
        let (fa, fb) = (family(a), family(b));
        if fa != fb {
            top.entry((fa.to_string(), fb.to_string())).or_insert_with(|| format!("({a} -> {b}) {ev}"));
        }
    }
    describe_cycles("top-level module", &top, &mut out);

    // (a) Cycles between the units of one top-level module, parents exempt.
    let families: BTreeSet<&str> = graph.units.iter().map(|u| family(u)).collect();
    for fam in families {
        let inner: BTreeMap<(String, String), Evidence> = graph
            .edges
            .iter()
            .filter(|((a, b), _)| a.contains("::") && b.contains("::") && family(a) == fam && family(b) == fam)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        describe_cycles(&format!("`{fam}`"), &inner, &mut out);
    }

    // (b) Layers.
    let mut unclassified: BTreeMap<&String, &Evidence> = BTreeMap::new();
    for ((a, b), ev) in &graph.edges {
        match (layer_of(a), layer_of(b)) {
            (Some(la), Some(lb)) if !la.may_use(lb) => out.push(format!(
                "layering: `{a}` ({}) imports `{b}` ({}), a layer it may not use\n  at {ev}",
                la.name(),
                lb.name()
            )),
            (la, lb) => {
                if la.is_none() {
                    unclassified.entry(a).or_insert(ev);
                }
                if lb.is_none() {
                    unclassified.entry(b).or_insert(ev);
                }
            }
        }
    }
    for (unit, ev) in &graph.wasmtime {
        if layer_of(unit) == Some(Layer::Provider) {
            out.push(format!("layering: provider `{unit}` names wasmtime\n  at {ev}"));
        }
    }
    if !unclassified.is_empty() {
        let mut s = "layering: modules in no layer (give each one in LAYERS, xtask/tests/layering.rs):".to_string();
        for (unit, ev) in unclassified {
            let _ = write!(s, "\n  `{unit}`, e.g. {ev}");
        }
        out.push(s);
    }
    out
}

fn check(files: &[(String, String)]) -> Vec<String> {
    problems(&build_graph(files))
}

// ---------------------------------------------------------------------------------
// The checker's own tests
// ---------------------------------------------------------------------------------

/// A table row: (name, files as (path under src/, text), what must come out).
type Case = (&'static str, &'static [(&'static str, &'static str)], &'static [&'static str]);

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
}

fn edges(list: &[(&str, &str)]) -> BTreeSet<String> {
    build_graph(&files(list)).edges.keys().map(|(a, b)| format!("{a} -> {b}")).collect()
}

#[test]
fn edges_come_from_every_kind_of_path() {
    let cases: &[Case] = &[
        ("use crate::", &[("audit.rs", "use crate::wait::Notifier;"), ("wait.rs", "")], &["audit -> wait"]),
        ("code path", &[("audit.rs", "fn f() { crate::wait::block(); }"), ("wait.rs", "")], &["audit -> wait"]),
        (
            "use tree with self and a rename",
            &[("audit.rs", "use crate::{wait::{self, Notifier as N}, exit};\nfn f() { exit::go() }"), ("wait.rs", ""), ("exit.rs", "")],
            &["audit -> exit", "audit -> wait"],
        ),
        (
            "a module import is no edge until used",
            &[("audit.rs", "use crate::wait;\nuse crate::exit;\nfn f() { exit::go() }"), ("wait.rs", ""), ("exit.rs", "")],
            &["audit -> exit"],
        ),
        (
            "second-level units, super and siblings",
            &[
                ("net/mod.rs", "pub mod addr;\npub mod link;\nuse addr::Pattern;"),
                ("net/addr.rs", "pub struct Pattern;"),
                ("net/link.rs", "use super::addr::Pattern;\nuse super::super::wait::Notifier;"),
                ("wait/mod.rs", "mod event;"),
                ("wait/event.rs", "use self::inner::X; mod inner { use super::super::Readiness; }"),
            ],
            &["net -> net::addr", "net::link -> net::addr", "net::link -> wait", "wait::event -> wait"],
        ),
        (
            "deeper files count as their second-level module",
            &[("kv/store/index.rs", "use crate::kv::journal::Entry;"), ("kv/store/mod.rs", "mod index;"), ("kv/journal.rs", "")],
            &["kv::store -> kv::journal"],
        ),
        (
            "in code the last segment is an item, not a module",
            &[
                ("wait/mod.rs", "mod pipe;\npub use pipe::pipe;"),
                ("wait/pipe.rs", "pub fn pipe() {}"),
                ("audit.rs", "use crate::wait;\nfn f() { wait::pipe(); crate::wait::pipe::Reader::new(); }"),
                ("exit.rs", "fn f() { crate::wait::pipe() }"),
            ],
            &["audit -> wait", "audit -> wait::pipe", "exit -> wait", "wait -> wait::pipe"],
        ),
        (
            "$crate in macros",
            &[("audit.rs", "macro_rules! m { () => { $crate::wait::block() }; }"), ("wait.rs", "")],
            &["audit -> wait"],
        ),
        (
            "comments, strings, chars and lifetimes are not code",
            &[
                (
                    "audit.rs",
                    "// use crate::host::A;\n/// [crate::host::B]\n/* crate::host::C /* nested */ crate::host::D */\n\
                     fn f<'a>(x: &'a str) -> char { let _ = \"crate::host::E\"; let _ = r#\"crate::host::\"F\"#; \
                     let _ = b\"crate::host::G\"; let _ = '{'; let _ = '\\''; '\"' }\n\
                     fn g() { crate::wait::block() }",
                ),
                ("wait.rs", ""),
                ("host.rs", ""),
            ],
            &["audit -> wait"],
        ),
        (
            "cfg(test) code is left out",
            &[
                (
                    "audit.rs",
                    "#[cfg(test)]\nmod tests { use crate::host::A; }\n#[cfg(test)]\nuse crate::host::B;\n\
                     #[cfg(all(test, unix))]\nfn t() { crate::host::c() }\n#[cfg(test)]\nmod more;\n\
                     #[cfg(any(test, feature = \"testing\"))]\nfn u() { crate::exit::go() }",
                ),
                ("audit/more.rs", "use crate::host::D;"),
                ("exit.rs", ""),
                ("host.rs", ""),
                ("wait.rs", "#![cfg(test)]\nuse crate::host::E;"),
            ],
            &["audit -> exit"],
        ),
        (
            "pub(in path) and pub(crate) name no dependency",
            &[("net/link.rs", "pub(in crate::net) fn f() {}\npub(crate) fn g() {}\npub(super) fn h() {}"), ("net/mod.rs", "mod link;")],
            &[],
        ),
        ("crate roots are not units", &[("lib.rs", "pub mod wait; pub use wait::X;"), ("main.rs", "fn main() { astrid_kernel::launch::run() }"), ("wait.rs", "")], &[]),
    ];
    for (name, list, want) in cases {
        let got = edges(list);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "case {name:?}");
    }
}

#[test]
fn problems_are_found_and_named() {
    let cases: &[Case] = &[
        (
            "a cycle between top-level modules",
            &[("io.rs", "use crate::engine::State;"), ("engine/mod.rs", "mod state;"), ("engine/state.rs", "use crate::io::Counts;")],
            &["top-level module import cycle: engine -> io -> engine", "kernel/src/io.rs:1 crate::engine::State"],
        ),
        (
            "a cycle between siblings",
            &[
                ("net/mod.rs", "mod kernel; mod local;"),
                ("net/kernel.rs", "use super::local::Conn;"),
                ("net/local.rs", "fn f() { super::kernel::publish() }"),
            ],
            &["`net` import cycle: net::kernel -> net::local -> net::kernel"],
        ),
        (
            "a provider importing host",
            &[("wait.rs", "use crate::host::Thing;"), ("host.rs", "")],
            &["layering: `wait` (provider) imports `host` (host)", "kernel/src/wait.rs:1 crate::host::Thing"],
        ),
        (
            "host importing engine",
            &[("host/mod.rs", "mod io;"), ("host/io.rs", "\n\nfn f(s: &crate::engine::State) {}"), ("engine.rs", "")],
            &["`host::io` (host) imports `engine` (engine)", "kernel/src/host/io.rs:3"],
        ),
        (
            "a provider naming wasmtime, directly or through the re-export",
            &[("net/mod.rs", "mod link; use wasmtime::component::Resource;"), ("net/link.rs", "fn f() -> crate::wasmtime::Result<()> { todo!() }")],
            &["provider `net` names wasmtime", "provider `net::link` names wasmtime"],
        ),
        (
            "a module in no layer",
            &[("io.rs", "use crate::wait::Notifier;"), ("wait.rs", "")],
            &["modules in no layer", "`io`, e.g. kernel/src/io.rs:1 crate::wait::Notifier"],
        ),
    ];
    for (name, list, want) in cases {
        let report = check(&files(list)).join("\n");
        for w in *want {
            assert!(report.contains(w), "case {name:?}: {w:?} missing from:\n{report}");
        }
    }
    // And a clean tree has nothing to say: the parent/child facade idiom included.
    let clean = files(&[
        ("wait/mod.rs", "mod event; pub use event::Notifier; pub trait Readiness {}"),
        ("wait/event.rs", "use super::Readiness;"),
        ("host/mod.rs", "use crate::wait::Notifier; use wasmtime::Engine;"),
        ("engine.rs", "use crate::host::X; use crate::wait::Y;"),
        ("launch.rs", "use crate::engine::Z; use crate::bench::W;"),
        ("bench.rs", "use crate::wait::V;"),
    ]);
    assert_eq!(check(&clean), Vec::<String>::new());
}

#[test]
fn tokenizer_keeps_lines_and_skips_literals() {
    let toks = tokenize("a\n/* x\n y */ b // c\n\"d\ne\" f r#\"g\n\"# h 'i' 'j k");
    let idents: Vec<(String, usize)> = toks
        .iter()
        .filter_map(|t| match &t.tok {
            Tok::Ident(s) => Some((s.clone(), t.line)),
            _ => None,
        })
        .collect();
    let want: Vec<(String, usize)> =
        [("a", 1), ("b", 3), ("f", 5), ("h", 6), ("k", 6)].iter().map(|(s, l)| (s.to_string(), *l)).collect();
    assert_eq!(idents, want);
}
