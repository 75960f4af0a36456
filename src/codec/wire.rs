//! The primitives of the wire format both directions share: a bounds-checked `Reader` over a
//! packet body for decoding; a `Sink` for encoding, which is the output buffer or a counter that
//! measures first, so every length is written before its contents; MQTT strings, binary data and
//! variable byte integers.

use bytes::{BufMut, Bytes, BytesMut};

use super::CodecError;

/// Largest value of a Variable Byte Integer, hence of a remaining length.
pub(super) const MAX_VARINT: usize = 268_435_455;

const TRUNCATED: CodecError = CodecError::Malformed("packet shorter than its contents");

/// A bounds-checked cursor over a packet body; every read fails with `Malformed` rather than
/// reading past `end`, and byte fields come out as zero-copy slices of the body.
pub(super) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(frame: &'a Bytes) -> Self {
        Self {
            frame,
            pos: 0,
            end: frame.len(),
        }
    }

    pub(super) fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    pub(super) fn expect_end(&self) -> Result<(), CodecError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed(
                "unexpected bytes at the end of the packet",
            ))
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.end)
            .ok_or(TRUNCATED)?;
        let slice = self.frame.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(slice)
    }

    /// A reader over the next `n` bytes, which this one skips.
    pub(super) fn sub(&mut self, n: usize) -> Result<Reader<'a>, CodecError> {
        let start = self.pos;
        self.take(n)?;
        Ok(Reader {
            frame: self.frame,
            pos: start,
            end: self.pos,
        })
    }

    pub(super) fn u8(&mut self) -> Result<u8, CodecError> {
        match self.take(1)? {
            &[b] => Ok(b),
            _ => Err(TRUNCATED),
        }
    }

    pub(super) fn u16(&mut self) -> Result<u16, CodecError> {
        match self.take(2)? {
            &[a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(TRUNCATED),
        }
    }

    pub(super) fn u32(&mut self) -> Result<u32, CodecError> {
        match self.take(4)? {
            &[a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(TRUNCATED),
        }
    }

    pub(super) fn varint(&mut self) -> Result<u32, CodecError> {
        let mut value = 0u32;
        for shift in [0, 7, 14, 21] {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    pub(super) fn packet_id(&mut self) -> Result<u16, CodecError> {
        match self.u16()? {
            0 => Err(CodecError::Protocol("packet identifier 0")),
            id => Ok(id),
        }
    }

    /// Two-byte length, then that many bytes.
    pub(super) fn prefixed(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    pub(super) fn binary(&mut self) -> Result<Bytes, CodecError> {
        let len = usize::from(self.u16()?);
        let start = self.pos;
        self.take(len)?;
        Ok(self.frame.slice(start..self.pos))
    }

    pub(super) fn string(&mut self) -> Result<String, CodecError> {
        utf8(self.prefixed()?).map(str::to_owned)
    }

    /// Everything left, zero-copy.
    pub(super) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.end);
        self.pos = self.end;
        self.frame.slice(start..self.end)
    }
}

/// An MQTT UTF-8 string: well-formed UTF-8 without U+0000.
fn utf8(raw: &[u8]) -> Result<&str, CodecError> {
    if raw.contains(&0) {
        return Err(CodecError::InvalidUtf8);
    }
    std::str::from_utf8(raw).map_err(|_| CodecError::InvalidUtf8)
}

/// A topic name: an MQTT string without wildcards; emptiness is the caller's call (topic aliases).
pub(super) fn topic_name(raw: &[u8]) -> Result<String, CodecError> {
    // One scan for U+0000 and both wildcards: all ASCII, so never inside a multi-byte sequence.
    match raw.iter().find(|&&b| matches!(b, 0 | b'+' | b'#')) {
        Some(0) => Err(CodecError::InvalidUtf8),
        Some(_) => Err(CodecError::Protocol("wildcard in a topic name")),
        None => std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| CodecError::InvalidUtf8),
    }
}

/// Where encoded bytes go: the output buffer, or a counter that measures the remaining length.
pub(super) trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, s: &[u8]);
}

pub(super) struct Counter(pub(super) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 = self.0.saturating_add(1);
    }
    fn put_u16(&mut self, _: u16) {
        self.0 = self.0.saturating_add(2);
    }
    fn put_u32(&mut self, _: u32) {
        self.0 = self.0.saturating_add(4);
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.0 = self.0.saturating_add(s.len());
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

pub(super) fn put_varint<W: Sink>(w: &mut W, mut v: usize) -> Result<(), CodecError> {
    if v > MAX_VARINT {
        return Err(CodecError::Encode(
            "variable byte integer exceeds 268,435,455",
        ));
    }
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        w.put_u8(b);
        if v == 0 {
            return Ok(());
        }
    }
}

pub(super) fn put_binary<W: Sink>(w: &mut W, b: &[u8]) -> Result<(), CodecError> {
    let len = u16::try_from(b.len())
        .map_err(|_| CodecError::Encode("string or binary field longer than 65,535 bytes"))?;
    w.put_u16(len);
    w.put_slice(b);
    Ok(())
}

pub(super) fn put_str<W: Sink>(w: &mut W, s: &str) -> Result<(), CodecError> {
    put_binary(w, s.as_bytes())
}

pub(super) fn put_packet_id<W: Sink>(w: &mut W, id: u16) -> Result<(), CodecError> {
    if id == 0 {
        return Err(CodecError::Encode("packet identifier 0"));
    }
    w.put_u16(id);
    Ok(())
}
