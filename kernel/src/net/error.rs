//! What a network operation of the image can fail with, in the providers' own terms;
//! the host layer turns it into the WIT's `error-code` (one variant each, `Cancelled`
//! answered as `closed`, the worded ones as `unknown`).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The stream or socket is closed (by the peer, or this side shut it).
    Closed,
    /// The capsule's policy does not allow it.
    CapabilityDenied,
    /// The address is in a range the airlock keeps capsules away from.
    AirlockRejected,
    ConnectionRefused,
    ConnectionReset,
    Timeout,
    AddressInUse,
    AddressNotAvailable,
    NameUnresolvable,
    /// The capsule holds as many of these as it may.
    Quota,
    /// The capsule's cancellation ended a wait.
    Cancelled,
    /// A connection would leave an image that has no NIC.
    NoInterface,
    /// A UDP socket outside the image was asked of an image that has no NIC.
    NoUdpInterface,
    /// Anything else, in words.
    Other(String),
}

impl NetError {
    pub fn other(text: impl Into<String>) -> NetError {
        NetError::Other(text.into())
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::NoInterface => f.write_str("this image has no network interface: run it with networking (scripts/run attaches one unless --net none)"),
            NetError::NoUdpInterface => f.write_str("this image has no network interface for UDP outside it (scripts/run --net)"),
            NetError::Other(text) => f.write_str(text),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for NetError {}
