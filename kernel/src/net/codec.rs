//! The length-prefixed frames of `tcp-stream.read` / `tcp-stream.write`: a 4-byte
//! big-endian length, then that many bytes. Frames are assembled from whatever has
//! arrived, a piece at a time, and never allocated from the prefix alone (a hostile
//! prefix costs nothing: it is refused before a byte of its body is read). A frame being
//! assembled is charged to its capsule's frame account (`NetCounts`) at the length its
//! prefix announces, so all of a capsule's streams together assemble at most its budget.

use std::fmt;
use std::sync::Arc;

use crate::quota::{Account, Charge};

/// Largest frame (the WIT's 10 MB).
pub const MAX_FRAME: usize = 10 * 1024 * 1024;
/// Bytes of the length prefix.
const PREFIX: usize = 4;

/// What a read of frames found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole frame's body.
    Data(Vec<u8>),
    /// Not a whole frame yet: what arrived is kept for the next read.
    Pending,
    /// The stream ended between frames.
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// An arriving prefix announced a frame over [`MAX_FRAME`] (what was assembled is
    /// dropped).
    TooLarge(usize),
    /// The stream ended in the middle of a frame.
    Truncated,
    /// A frame to send is over [`MAX_FRAME`].
    TooLargeToSend,
    /// The frame announced does not fit what the capsule's streams may assemble at once
    /// (the limit in bytes); it is dropped.
    Quota(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(len) => write!(f, "frame of {len} bytes is over the 10 MB limit"),
            FrameError::Truncated => f.write_str("the peer closed the stream in the middle of a frame"),
            FrameError::TooLargeToSend => f.write_str("frame over the 10 MB limit"),
            FrameError::Quota(limit) => write!(f, "frame does not fit the {limit} bytes this capsule's streams may assemble at once"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for super::NetError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Quota(_) => super::NetError::Quota,
            e => super::NetError::Other(e.to_string()),
        }
    }
}

/// A frame being assembled from a stream's pieces.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// The charge for the frame being assembled (none: not charged to anyone).
    held: Option<Charge>,
}

impl FrameReader {
    /// A reader whose frames are charged to `account`.
    pub fn charged_to(account: &Arc<Account>) -> FrameReader {
        FrameReader { buf: Vec::new(), held: account.charge(0).ok() }
    }

    /// Charges what is assembled now, or the whole frame its prefix announced.
    fn charge(&mut self, bytes: usize) -> Result<(), FrameError> {
        match &mut self.held {
            Some(held) => held.resize(bytes).map_err(|e| FrameError::Quota(e.limit)),
            None => Ok(()),
        }
    }

    /// Assembles what `read` has without waiting. `read(n)` gives at most `n` bytes of
    /// the stream: none when nothing has arrived yet, `Err` at its end.
    pub fn poll<E>(&mut self, mut read: impl FnMut(usize) -> Result<Vec<u8>, E>) -> Result<Frame, FrameError> {
        loop {
            let need = if self.buf.len() < PREFIX {
                PREFIX - self.buf.len()
            } else {
                let mut prefix = [0u8; PREFIX];
                prefix.copy_from_slice(&self.buf[..PREFIX]);
                let len = u32::from_be_bytes(prefix) as usize;
                if len > MAX_FRAME {
                    self.buf.clear();
                    self.charge(0)?;
                    return Err(FrameError::TooLarge(len));
                }
                if self.buf.len() >= PREFIX + len {
                    // A reader that gave more than asked keeps the rest for the next frame.
                    let rest = self.buf.split_off(PREFIX + len);
                    let data = self.buf.split_off(PREFIX);
                    self.buf = rest;
                    self.charge(self.buf.len())?;
                    return Ok(Frame::Data(data));
                }
                if let Err(e) = self.charge(PREFIX + len) {
                    self.buf.clear();
                    self.charge(0)?;
                    return Err(e);
                }
                PREFIX + len - self.buf.len()
            };
            match read(need) {
                Ok(bytes) if bytes.is_empty() => return Ok(Frame::Pending),
                Ok(bytes) => self.buf.extend_from_slice(&bytes),
                Err(_) if self.buf.is_empty() => return Ok(Frame::Closed),
                Err(_) => return Err(FrameError::Truncated),
            }
        }
    }
}

/// The prefix of `data`'s frame.
pub fn prefix(data: &[u8]) -> Result<[u8; PREFIX], FrameError> {
    if data.len() > MAX_FRAME {
        return Err(FrameError::TooLargeToSend);
    }
    Ok((data.len() as u32).to_be_bytes())
}

/// `data` as one frame (prefix and body).
pub fn encode(data: &[u8]) -> Result<Vec<u8>, FrameError> {
    if data.len() > MAX_FRAME {
        return Err(FrameError::TooLargeToSend);
    }
    let mut framed = Vec::with_capacity(PREFIX + data.len());
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(data);
    Ok(framed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A stream that hands out `pieces` one per read (cut to what is asked), then
    /// nothing (`open`) or its end.
    struct Pieces {
        pieces: VecDeque<Vec<u8>>,
        open: bool,
    }

    impl Pieces {
        fn new(pieces: &[&[u8]], open: bool) -> Pieces {
            Pieces { pieces: pieces.iter().map(|p| p.to_vec()).collect(), open }
        }

        fn read(&mut self, max: usize) -> Result<Vec<u8>, ()> {
            match self.pieces.pop_front() {
                Some(mut p) => {
                    if p.len() > max {
                        self.pieces.push_front(p.split_off(max));
                    }
                    Ok(p)
                }
                None if self.open => Ok(Vec::new()),
                None => Err(()),
            }
        }
    }

    #[test]
    fn encode_prefixes_the_length() {
        assert_eq!(encode(b"abc").unwrap(), [0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(encode(b"").unwrap(), [0, 0, 0, 0]);
        assert_eq!(encode(&vec![0; MAX_FRAME + 1]), Err(FrameError::TooLargeToSend));
    }

    #[test]
    fn whole_frames_in_one_read_each() {
        let mut bytes = encode(b"one").unwrap();
        bytes.extend(encode(b"").unwrap());
        bytes.extend(encode(b"three").unwrap());
        let mut s = Pieces::new(&[&bytes], false);
        let mut r = FrameReader::default();
        assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Data(b"one".to_vec())));
        assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Data(Vec::new())));
        assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Data(b"three".to_vec())));
        assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Closed));
    }

    #[test]
    fn a_frame_split_over_many_reads() {
        let body: Vec<u8> = (0..=255).collect();
        let bytes = encode(&body).unwrap();
        let mut r = FrameReader::default();
        // One byte arrives per poll; every poll but the last finds the frame unfinished.
        for (i, b) in bytes.iter().enumerate() {
            let mut s = Pieces::new(&[&[*b]], true);
            let got = r.poll(|n| s.read(n));
            if i + 1 < bytes.len() {
                assert_eq!(got, Ok(Frame::Pending), "byte {i}");
            } else {
                assert_eq!(got, Ok(Frame::Data(body.clone())));
            }
        }
    }

    #[test]
    fn a_prefix_split_from_its_body() {
        let mut s = Pieces::new(&[&[0, 0], &[0, 2, b'h'], b"i"], true);
        let mut r = FrameReader::default();
        assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Data(b"hi".to_vec())));
        assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Pending));
    }

    #[test]
    fn hostile_length_prefix_is_refused_before_its_body() {
        for len in [MAX_FRAME as u32 + 1, u32::MAX] {
            let mut asked = Vec::new();
            let mut s = Pieces::new(&[&len.to_be_bytes(), b"ok"], true);
            let mut r = FrameReader::default();
            let got = r.poll(|n| {
                asked.push(n);
                s.read(n)
            });
            assert_eq!(got, Err(FrameError::TooLarge(len as usize)));
            assert_eq!(asked, [4], "only the prefix was read");
            assert_eq!(got.unwrap_err().to_string(), format!("frame of {len} bytes is over the 10 MB limit"));
            // What was assembled is dropped: the next bytes start a new prefix.
            assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Pending));
        }
    }

    #[test]
    fn a_frame_of_exactly_the_limit_is_awaited() {
        let mut s = Pieces::new(&[&(MAX_FRAME as u32).to_be_bytes()], true);
        let mut r = FrameReader::default();
        assert_eq!(r.poll(|n| s.read(n)), Ok(Frame::Pending));
        assert!(r.buf.capacity() < MAX_FRAME, "nothing allocated from the prefix");
    }

    #[test]
    fn end_of_stream_between_and_within_frames() {
        let mut s = Pieces::new(&[], false);
        assert_eq!(FrameReader::default().poll(|n| s.read(n)), Ok(Frame::Closed));
        let mut s = Pieces::new(&[&[0, 0, 0, 9, 1, 2]], false);
        let mut r = FrameReader::default();
        assert_eq!(r.poll(|n| s.read(n)), Err(FrameError::Truncated));
        assert_eq!(FrameError::Truncated.to_string(), "the peer closed the stream in the middle of a frame");
    }

    #[test]
    fn a_reader_that_gives_more_than_asked_keeps_the_rest() {
        let mut bytes = encode(b"ab").unwrap();
        bytes.extend(encode(b"c").unwrap());
        let mut once = Some(bytes);
        let mut r = FrameReader::default();
        let mut greedy = |_: usize| -> Result<Vec<u8>, ()> { Ok(once.take().unwrap_or_default()) };
        assert_eq!(r.poll(&mut greedy), Ok(Frame::Data(b"ab".to_vec())));
        assert_eq!(r.poll(&mut greedy), Ok(Frame::Data(b"c".to_vec())));
        assert_eq!(r.poll(&mut greedy), Ok(Frame::Pending));
    }

    #[test]
    fn frames_being_assembled_share_their_capsules_budget() {
        let account = Account::new("tcp frame bytes", 10);
        let (mut a, mut b) = (FrameReader::charged_to(&account), FrameReader::charged_to(&account));
        // A's prefix announces 6 bytes: 10 charged before any of its body arrives.
        let mut sa = Pieces::new(&[&[0, 0, 0, 6], b"abc"], true);
        assert_eq!(a.poll(|n| sa.read(n)), Ok(Frame::Pending));
        assert_eq!(account.used(), 10);
        // B's frame does not fit beside it: `quota`, and its prefix is dropped.
        let mut sb = Pieces::new(&[&[0, 0, 0, 1], b"x"], true);
        let got = b.poll(|n| sb.read(n));
        assert_eq!(got, Err(FrameError::Quota(10)));
        assert!(matches!(super::super::NetError::from(got.unwrap_err()), super::super::NetError::Quota));
        assert_eq!(account.used(), 10, "the refused frame took nothing");
        // A's frame ends: its charge comes back, and B's next frame fits.
        let mut sa = Pieces::new(&[b"def"], true);
        assert_eq!(a.poll(|n| sa.read(n)), Ok(Frame::Data(b"abcdef".to_vec())));
        assert_eq!(account.used(), 0);
        let mut sb = Pieces::new(&[&encode(b"yz").unwrap()], true);
        assert_eq!(b.poll(|n| sb.read(n)), Ok(Frame::Data(b"yz".to_vec())));
        drop((a, b));
        assert_eq!(account.used(), 0);
    }
}
