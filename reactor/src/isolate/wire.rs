//! The frames between the reactor and an isolated unit's worker: `[u32 length][u8 tag][u32
//! code][body]`, little-endian, `length` counting tag, code and body. Each channel carries one
//! request at a time, so frames need no ids: the reactor sends a request, serves the
//! capability calls the unit makes meanwhile, and reads the reply.

use std::io::{self, Read, Write};

/// Reactor to worker: the unit's manifest (JSON). Reply: `STATUS_OK` and the manifest, or
/// the library's refusal.
pub(crate) const MANIFEST: u8 = 1;
/// Reactor to worker: create the instance; body: the configuration (JSON).
pub(crate) const CREATE: u8 = 2;
/// Reactor to worker: a lifecycle event; code: the event, body: its argument.
pub(crate) const EVENT: u8 = 3;
/// Reactor to worker: the instance's state, for a swap.
pub(crate) const SNAPSHOT: u8 = 4;
/// Reactor to worker: give the new instance the old one's state (the body).
pub(crate) const RESTORE: u8 = 5;
/// Reactor to worker: handle a signal (the body, JSON).
pub(crate) const CALL: u8 = 6;
/// Reactor to worker: the answer to a capability call; code: its status.
pub(crate) const HOST_REPLY: u8 = 7;
/// Reactor to worker: unload the instance (its `on_unload`, then destroy it) and exit.
pub(crate) const SHUTDOWN: u8 = 8;
/// Worker to reactor: the answer to a request; code: its status.
pub(crate) const REPLY: u8 = 16;
/// Worker to reactor: a capability call of the unit; code: the operation, body: the request.
pub(crate) const HOST_CALL: u8 = 17;

/// Largest frame either side accepts: a unit's reply or state, or a signal.
const MAX_FRAME: usize = 1 << 30;

/// One frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub tag: u8,
    pub code: u32,
    pub body: Vec<u8>,
}

/// Writes one frame with a single write.
pub(crate) fn write(to: &mut impl Write, tag: u8, code: u32, body: &[u8]) -> io::Result<()> {
    let length = u32::try_from(body.len() + 5)
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = Vec::with_capacity(body.len() + 9);
    frame.extend_from_slice(&length.to_le_bytes());
    frame.push(tag);
    frame.extend_from_slice(&code.to_le_bytes());
    frame.extend_from_slice(body);
    to.write_all(&frame)
}

/// Reads one frame.
pub(crate) fn read(from: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    from.read_exact(&mut head)?;
    let [l0, l1, l2, l3, tag, c0, c1, c2, c3] = head;
    let length = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if !(5..=MAX_FRAME).contains(&length) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {length}"),
        ));
    }
    let mut body = vec![0u8; length - 5];
    from.read_exact(&mut body)?;
    Ok(Frame {
        tag,
        code: u32::from_le_bytes([c0, c1, c2, c3]),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_lengths_are_refused() {
        let mut bytes = Vec::new();
        write(&mut bytes, CALL, 7, b"{\"kind\":\"a\"}").expect("write");
        write(&mut bytes, REPLY, 0, b"").expect("write");
        let mut reader = &bytes[..];
        assert_eq!(
            read(&mut reader).expect("first"),
            Frame {
                tag: CALL,
                code: 7,
                body: b"{\"kind\":\"a\"}".to_vec()
            }
        );
        assert_eq!(read(&mut reader).expect("second").body, b"");
        assert!(read(&mut reader).is_err(), "end of stream");
        let short = [2u8, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(read(&mut &short[..]).is_err());
        let truncated = [20u8, 0, 0, 0, 6, 0, 0, 0, 0, 1, 2];
        assert!(read(&mut &truncated[..]).is_err());
    }
}
