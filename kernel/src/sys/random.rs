//! The image's CSPRNG: a BLAKE3 keyed XOF over a 256-bit seed the host provides at boot
//! (`ASTRID_SEED`, 64 hex digits), one fresh block counter per request. Without one the
//! image seeds itself from the CPU (RDSEED, else RDRAND: bare metal, a packed image) and
//! hosted mode from the operating system. With neither, randomness is refused rather
//! than faked.

use std::fmt;
use std::sync::Mutex;

/// A 256-bit seed.
#[derive(Clone)]
pub struct Seed([u8; 32]);

#[derive(Debug, PartialEq, Eq)]
pub enum SeedError {
    /// No seed was given (and the platform has no entropy of its own).
    Missing,
    /// `ASTRID_SEED` is not 64 hex digits, or is all zeros.
    Malformed,
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedError::Missing => {
                write!(f, "no entropy: the host passed no ASTRID_SEED (scripts/run does) and the CPU has neither RDSEED nor RDRAND")
            }
            SeedError::Malformed => write!(f, "ASTRID_SEED must be 64 hex digits, not all zero"),
        }
    }
}

impl Seed {
    pub fn from_hex(hex: &str) -> Result<Seed, SeedError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(SeedError::Malformed);
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            // `get`: a multi-byte character would make a byte slice panic; digits only:
            // `from_str_radix` also takes a sign.
            let digits = hex.get(2 * i..2 * i + 2).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
            *b = digits.and_then(|d| u8::from_str_radix(d, 16).ok()).ok_or(SeedError::Malformed)?;
        }
        if seed == [0; 32] {
            return Err(SeedError::Malformed);
        }
        Ok(Seed(seed))
    }
}

struct Generator {
    key: [u8; 32],
    counter: u64,
}

static GENERATOR: Mutex<Option<Result<Generator, SeedError>>> = Mutex::new(None);

/// Installs the seed (from the boot path); later requests draw from it.
pub fn seed(seed: Result<Seed, SeedError>) {
    let mut g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    *g = Some(seed.map(|s| Generator { key: s.0, counter: 0 }));
}

/// `len` bytes of keyed-XOF output for the next counter value.
pub fn bytes(len: usize) -> Result<Vec<u8>, SeedError> {
    let mut g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let generator = g.get_or_insert_with(default_seed).as_mut().map_err(|e| match e {
        SeedError::Missing => SeedError::Missing,
        SeedError::Malformed => SeedError::Malformed,
    })?;
    generator.counter += 1;
    let mut hasher = blake3::Hasher::new_keyed(&generator.key);
    hasher.update(&generator.counter.to_le_bytes());
    let mut out = vec![0u8; len];
    hasher.finalize_xof().fill(&mut out);
    Ok(out)
}

/// The seed when none was installed: the OS's entropy in hosted mode, the CPU's in the
/// image.
fn default_seed() -> Result<Generator, SeedError> {
    let seed = crate::platform::host_entropy().ok_or(SeedError::Missing)?;
    Ok(Generator { key: seed, counter: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_64_hex_digits_and_never_zero() {
        assert!(Seed::from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(Seed::from_hex("abcd").err(), Some(SeedError::Malformed));
        assert_eq!(Seed::from_hex(&"zz".repeat(32)).err(), Some(SeedError::Malformed));
        assert_eq!(Seed::from_hex(&"00".repeat(32)).err(), Some(SeedError::Malformed));
        // Found while fixing the same sign-acceptance in the settings' hex (capsule fuzz
        // target): a sign, and a character split by the byte slicing (a panic before).
        assert_eq!(Seed::from_hex(&format!("+1{}", "ab".repeat(31))).err(), Some(SeedError::Malformed));
        assert_eq!(Seed::from_hex(&format!("aé{}", "ab".repeat(30) + "a")).err(), Some(SeedError::Malformed));
    }

    #[test]
    fn successive_requests_differ_and_are_not_zero() {
        let a = bytes(32).unwrap();
        let b = bytes(32).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, vec![0; 32]);
    }
}
