//! `astrid:net@1.0.0` (and `astrid:request-context`, which asks about its streams).
//!
//! - Loopback (`localhost`, 127.0.0.0/8, ::1) belongs to the image (`local.rs`):
//!   listeners, connections and datagrams between capsules of one image are joined in
//!   memory and never reach the kernel's network stack.
//! - Everything else leaves through the kernel's TCP (`link.rs`) where the capsule's
//!   policy (its manifest's `net_connect`, `policy.rs`) allows it and the airlock
//!   (`addr.rs`) does not stop it. Listeners are loopback-only, as the WIT says; the
//!   run command's `--publish PORT` carries outside connections to a capsule listening
//!   on 127.0.0.1:PORT.
//! - Every call that can block waits on the wait primitive with the image's own
//!   deadline (read/write timeouts, a connect timeout) and the capsule's cancellation;
//!   a cancelled wait answers `closed`, and the audit record says `cancelled`.
//! - Per capsule: 8 TCP streams, 4 listeners, 4 UDP sockets (`quota` beyond).
//! - Unix-domain sockets do not exist in the image: `bind-unix` is `capability-denied`.
//!
//! Layout: `policy` decides, `socket` holds a capsule's sockets over `conn` (what the
//! loopback `local` and the kernel `link` share) and `codec` (frames); none of them
//! knows the WIT. The WIT's host functions are `host/net.rs`, each a call to those.

pub mod addr;
pub mod codec;
pub mod conn;
pub mod error;
pub mod link;
pub mod local;
pub mod policy;
pub mod socket;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use codec::MAX_FRAME;
pub use error::NetError;
pub use link::{DEFAULT_LINGER, sending};
pub use policy::{FRAME_BYTES, MAX_LISTENERS, MAX_POLL_ACCEPT, MAX_STREAMS, MAX_UDP, NetCounts, NetPolicy};
pub use socket::{TcpListener, TcpStream, UdpSocket};

/// `astrid:net/host.unix-listener`: the image has no Unix-domain sockets, so none is
/// ever handed out.
pub enum UnixListener {}

/// The network of one image: its loopback, and whether a NIC (or the host, in hosted
/// mode) is there for connections that leave.
#[derive(Default)]
pub struct Network {
    pub loopback: Arc<local::Loopback>,
    pub external: bool,
}

/// Waits up to `linger` for the connections leaving the image to finish sending what
/// capsules wrote; returns how many are still open. Prints nothing.
pub fn drain(linger: Duration) -> usize {
    link::wait_until_sent(Instant::now() + linger)
}
