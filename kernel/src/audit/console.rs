//! The serial console: audit lines framed so they separate from everything else written
//! there (the kernel's log, the image's own messages, what capsules say), and the one
//! path every other console line takes.
//!
//! Contract for the rest of the image: an audit line starts with `FRAME_PREFIX`, and
//! nothing else can. Every other line is printed with [`say!`](crate::say), which passes
//! the whole line through [`escape`]: a line break, a carriage return, any other control
//! character, a Unicode line or paragraph separator or a bidirectional override becomes
//! a visible escape, so text that came from a capsule or its files (names, error
//! chains, log lines, manifest keys) can neither start a line of its own nor disguise
//! one. A line that would still begin with the frame is prefixed. `println!` and friends
//! are disallowed in the kernel crate (`kernel/clippy.toml`); the few writers that need
//! stdout itself (the audit sink, the testing console stream) are marked where they do.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{self, Write};

use super::sink::{Sink, write_lines};

pub const FRAME_PREFIX: &str = "@@audit ";

/// The console line for one audit line (without the newline).
pub fn frame(line: &str) -> String {
    format!("{FRAME_PREFIX}{line}")
}

/// The audit lines in a console capture, in order, with the frame taken off. Only lines
/// that start with the frame count; a `\r` before the newline (serial terminals) is
/// dropped.
pub fn extract(console_text: &str) -> Vec<&str> {
    console_text
        .split('\n')
        .filter_map(|l| l.strip_suffix('\r').unwrap_or(l).strip_prefix(FRAME_PREFIX))
        .collect()
}

/// Whether `c` must not reach the console as itself: it breaks a line (`\n`, `\r`, NEL,
/// U+2028/9 — some readers split on them), moves the terminal (other C0/C1 controls,
/// DEL), or changes what a line looks like without showing itself (bidirectional
/// overrides and isolates, zero-width characters).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

fn escape_char(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

/// The escaping every console line goes through: each character of [`needs_escape`]
/// becomes `\n`, `\r`, `\t` or `\u{…}`; everything else is kept. Idempotent: its output
/// has nothing left to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = escape_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Text that came from a capsule or its files, labelled where it sits in a message:
/// quoted, with `"` and `\` escaped besides [`escape`]'s characters, so a reader sees
/// exactly where it starts and ends (`manifest key "a\n@@audit"`).
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if needs_escape(c) => escape_char(f, c)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One console line of the image (not an audit line), as [`say!`](crate::say) prints
/// it: escaped, and never starting with the audit frame.
pub fn console_line(args: fmt::Arguments<'_>) -> String {
    let text = match args.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(args.to_string()),
    };
    let line = escape(&text);
    if line.starts_with(FRAME_PREFIX.trim_end()) {
        format!("astrid: (unframed) {line}")
    } else {
        line.into_owned()
    }
}

/// Prints one line on the console (stdout: the serial port under QEMU). A console that
/// cannot be written is not a reason to stop: the error is dropped, as a panic in the
/// middle of a capsule's call would be worse.
pub fn say_line(args: fmt::Arguments<'_>) {
    let mut line = console_line(args);
    line.push('\n');
    #[allow(clippy::disallowed_methods)] // the one writer of the image's console lines
    let _ = io::stdout().lock().write_all(line.as_bytes());
}

/// Prints a line on the image's console through [`console_line`]: the only way the
/// kernel crate prints (`println!` is disallowed there).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::audit::say_line(::core::format_args!($($arg)*))
    };
}

/// A panic's report through the same path: the default hook prints the message as it
/// is, and a panic's message can carry a capsule's text. Returns the line.
pub fn panic_line(info: &std::panic::PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let message = match (info.payload().downcast_ref::<&str>(), info.payload().downcast_ref::<String>()) {
        (Some(s), _) => *s,
        (_, Some(s)) => s.as_str(),
        _ => "(no message)",
    };
    let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
    console_line(format_args!("astrid: thread {} panicked{at}: {message}", Untrusted(thread.name().unwrap_or("unnamed"))))
}

/// Framed lines to a console. Writes stay at or under 4 KiB: the Hermit kernel writes
/// the console byte by byte with interrupts off for the whole call, so a large write
/// stalls the machine (a 64 KiB write blocks interrupts for ~120 ms under QEMU).
pub struct ConsoleSink<W> {
    out: W,
    buf: Vec<u8>,
}

impl ConsoleSink<io::Stdout> {
    /// The image's console. Going through std's stdout keeps audit lines whole between
    /// the image's other prints, which take the same lock.
    #[allow(clippy::disallowed_methods)] // audit lines: sealed records, printable ASCII
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write + Send> ConsoleSink<W> {
    pub const MAX_WRITE: usize = 4 << 10;

    pub fn new(out: W) -> Self {
        ConsoleSink { out, buf: Vec::new() }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for ConsoleSink<W> {
    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        write_lines(&mut self.out, &mut self.buf, lines, FRAME_PREFIX, Self::MAX_WRITE)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::chain::Chain;
    use super::super::record::IoEvent;
    use super::super::verify::verify;
    use super::*;

    #[test]
    fn audit_lines_separate_from_kernel_log_lines() {
        let mut chain = Chain::new();
        // The genesis record comes with the first.
        let lines = [
            chain.append(IoEvent::ok("c", "p", "astrid:io/poll.poll", 3)).unwrap(),
            chain.append(IoEvent::ok("c", "p", "astrid:io/poll.poll", 4)).unwrap(),
            chain.close().unwrap(),
        ]
        .concat();
        assert_eq!(lines.len(), 4);
        let mut sink = ConsoleSink::new(Vec::new());
        sink.write_batch(&lines[..3]).unwrap();
        let mut console = sink.into_inner();
        // The kernel and the image talk in between; a serial capture may add `\r`.
        console.extend_from_slice(b"[0][INFO] hermit kernel says hi\r\n");
        console.extend_from_slice(b"astrid: capsule hello exited 0\n");
        console.extend_from_slice(b"text mentioning @@audit mid-line\n");
        let mut sink = ConsoleSink::new(console);
        sink.write_batch(&lines[3..]).unwrap();
        let mut console = String::from_utf8(sink.into_inner()).unwrap();
        console = console.replacen("\n", "\r\n", 1);
        let extracted = extract(&console);
        assert_eq!(extracted, lines.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(verify(extracted).is_ok());
        assert_eq!(frame("{}"), "@@audit {}");
    }

    #[test]
    fn console_writes_stay_small() {
        #[derive(Default)]
        struct Sizes(Vec<usize>);
        impl Write for Sizes {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.push(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let lines: Vec<String> = (0..200).map(|i| format!("{{\"n\":{i:0>150}}}")).collect();
        let mut sink = ConsoleSink::new(Sizes::default());
        sink.write_batch(&lines).unwrap();
        let sizes = sink.into_inner().0;
        assert!(sizes.len() > 1);
        assert!(sizes.iter().all(|&s| s <= 4096), "{sizes:?}");
    }

    /// Every way a line could be split by some reader: `\n`, `\r`, `\r\n`, NEL, the
    /// Unicode separators, vertical tab and form feed (Python's `splitlines` splits on
    /// all of them), plus what moves or hides text.
    const BREAKERS: &[&str] = &["\n", "\r", "\r\n", "\u{85}", "\u{2028}", "\u{2029}", "\u{b}", "\u{c}", "\u{1c}", "\u{1e}"];

    /// Whether `console` holds a line, by any reader's idea of lines, that starts with
    /// the audit frame.
    fn forged(console: &str) -> bool {
        let mut text = console.to_string();
        for b in BREAKERS {
            text = text.replace(b, "\n");
        }
        text.split('\n').any(|l| l.trim_start_matches(|c: char| needs_escape(c) || c == ' ').starts_with(FRAME_PREFIX.trim_end()))
    }

    #[test]
    fn no_escaped_text_starts_an_audit_line() {
        for b in BREAKERS {
            let hostile = format!("x{b}@@audit {{\"seq\":0}}");
            assert!(forged(&hostile), "the check itself must see {b:?}");
            let line = console_line(format_args!("astrid: capsule a.wasm: cannot be instantiated: {hostile}"));
            assert!(!forged(&line), "{b:?}: {line}");
            assert!(line.contains("@@audit"), "the text is kept, escaped: {line}");
            assert!(extract(&(line.clone() + "\n")).is_empty(), "{line}");
        }
        // A line that would begin with the frame itself is prefixed.
        let line = console_line(format_args!("{}", "@@audit {}"));
        assert!(line.starts_with("astrid: "), "{line}");
        assert!(!forged(&line));
    }

    #[test]
    fn escaping_is_visible_and_idempotent() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("plain text, é ü 漢字", "plain text, é ü 漢字"),
            ("two\nlines", "two\\nlines"),
            ("cr\r\n@@audit {}", "cr\\r\\n@@audit {}"),
            ("tab\tesc\u{1b}[2J", "tab\\tesc\\u{1b}[2J"),
            ("nel\u{85}ls\u{2028}ps\u{2029}", "nel\\u{85}ls\\u{2028}ps\\u{2029}"),
            ("rlo\u{202e}txt.exe", "rlo\\u{202e}txt.exe"),
            ("zw\u{200b}j\u{feff}", "zw\\u{200b}j\\u{feff}"),
            ("del\u{7f}nul\u{0}", "del\\u{7f}nul\\u{0}"),
            ("a backslash \\n stays", "a backslash \\n stays"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), *want, "{input:?}");
            assert_eq!(escape(&escape(input)), *want, "idempotent: {input:?}");
        }
        assert!(matches!(escape("nothing to do"), Cow::Borrowed(_)));
    }

    #[test]
    fn untrusted_text_is_quoted_and_unambiguous() {
        assert_eq!(Untrusted("a\"b\\c\nd").to_string(), r#""a\"b\\c\nd""#);
        assert_eq!(Untrusted("x\u{2028}@@audit").to_string(), r#""x\u{2028}@@audit""#);
        // A quote cannot end the label early and a backslash cannot fake an escape.
        assert_ne!(Untrusted("\\n").to_string(), Untrusted("\n").to_string());
    }
}
