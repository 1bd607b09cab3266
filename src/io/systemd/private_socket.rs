//! systemd's private socket (`$XDG_RUNTIME_DIR/systemd/private`) as a zbus socket.
//!
//! On that peer-to-peer connection systemd stamps its messages with the sender
//! `org.freedesktop.systemd1`, a well-known name where D-Bus puts unique names; zbus rejects such
//! a header ("Invalid unique name"). The read half therefore rewrites that one header field to a
//! unique name of the same length, so nothing else in the message moves. Bodies are untouched.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use zbus::connection::socket::{ReadHalf, Socket, Split, WriteHalf};
use zbus::connection::AuthMechanism;

const SYSTEMD_SENDER: &[u8] = b"org.freedesktop.systemd1";
/// Same length as [`SYSTEMD_SENDER`], and a valid unique name.
const STAND_IN: &[u8] = b":1.systemd1-private-peer";
const SENDER_FIELD: u8 = 7;

/// A connected private socket.
#[derive(Debug)]
pub struct PrivateSocket(UnixStream);

impl PrivateSocket {
    pub async fn connect(path: &Path) -> io::Result<PrivateSocket> {
        UnixStream::connect(path).await.map(PrivateSocket)
    }
}

impl Socket for PrivateSocket {
    type ReadHalf = Reader;
    type WriteHalf = Writer;

    fn split(self) -> Split<Reader, Writer> {
        let (r, w) = self.0.into_split();
        Split::new(Reader { sock: r, raw: Vec::new(), sent: 0, framed: 0, authenticated: false }, Writer(w))
    }
}

/// Reads bytes, passing the auth lines through and each message through [`patch_sender`]. The
/// bytes are read into one buffer and handed over from it: `raw[..sent]` went to zbus,
/// `raw[sent..framed]` is framed (auth lines, whole messages patched), the rest awaits its end.
#[derive(Debug)]
pub struct Reader {
    sock: OwnedReadHalf,
    raw: Vec<u8>,
    sent: usize,
    framed: usize,
    authenticated: bool,
}

/// Bytes asked of the socket at once (more when a message is known to be longer).
const READ_AT_LEAST: usize = 16 * 1024;
/// A buffer grown beyond this for a long message is given back once that message is out.
const LONG: usize = 256 * 1024;

#[zbus::export::async_trait::async_trait]
impl ReadHalf for Reader {
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        loop {
            if self.sent < self.framed {
                let n = buf.len().min(self.framed - self.sent);
                buf[..n].copy_from_slice(&self.raw[self.sent..self.sent + n]);
                self.sent += n;
                if self.sent == self.framed {
                    // Keep only what is not framed yet (the start of the next message, if any),
                    // and not the room a long message took (a `watch` lives on).
                    self.raw.drain(..self.sent);
                    if self.raw.capacity() > LONG {
                        self.raw.shrink_to(READ_AT_LEAST);
                    }
                    self.framed = 0;
                    self.sent = 0;
                }
                return Ok((n, Vec::new()));
            }
            let want = match message_len(&self.raw[self.framed..]) {
                Some(len) if self.authenticated => (self.framed + len).saturating_sub(self.raw.len()),
                _ => 0,
            };
            // A length from a header is not trusted with an allocation: at most 1 MiB at a time.
            self.raw.reserve(want.clamp(READ_AT_LEAST, 1 << 20));
            let n = self.sock.read_buf(&mut self.raw).await?;
            if n == 0 {
                // End of stream: hand over whatever is left, as it is.
                self.framed = self.raw.len();
                if self.sent == self.framed {
                    return Ok((0, Vec::new()));
                }
                continue;
            }
            self.frame();
        }
    }

    fn auth_mechanism(&self) -> AuthMechanism {
        AuthMechanism::External
    }
}

impl Reader {
    /// Frames complete auth lines, then complete messages (patched in place), after `framed`.
    fn frame(&mut self) {
        while !self.authenticated {
            let rest = &self.raw[self.framed..];
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else { return };
            // Without fd passing, `OK <guid>` is the server's last line before messages.
            self.authenticated = rest.starts_with(b"OK ");
            self.framed += end + 2;
        }
        while let Some(len) = message_len(&self.raw[self.framed..]) {
            if self.raw.len() - self.framed < len {
                return;
            }
            patch_sender(&mut self.raw[self.framed..self.framed + len]);
            self.framed += len;
        }
    }
}

/// Total length of the message `bytes` starts with, once its fixed header is in.
fn message_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 16 {
        return None;
    }
    let le = bytes[0] == b'l';
    let u32_at = |i: usize| {
        let b = [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let body = u32_at(4) as usize;
    let fields = u32_at(12) as usize;
    let header = 16 + fields;
    Some(header.div_ceil(8) * 8 + body)
}

/// Rewrites a `SENDER` header field equal to `org.freedesktop.systemd1` in place.
pub(crate) fn patch_sender(msg: &mut [u8]) {
    let le = msg.first() == Some(&b'l');
    let u32_at = |m: &[u8], i: usize| -> Option<usize> {
        let b: [u8; 4] = m.get(i..i + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) } as usize)
    };
    let Some(fields_len) = u32_at(msg, 12) else { return };
    let end = (16 + fields_len).min(msg.len());
    let mut pos = 16;
    while pos < end {
        pos = pos.div_ceil(8) * 8;
        let (Some(&code), Some(&sig_len)) = (msg.get(pos), msg.get(pos + 1)) else { return };
        let Some(&sig) = msg.get(pos + 2) else { return };
        if sig_len != 1 {
            return;
        }
        pos += 4;
        match sig {
            b's' | b'o' => {
                pos = pos.div_ceil(4) * 4;
                let Some(len) = u32_at(msg, pos) else { return };
                let start = pos + 4;
                if code == SENDER_FIELD && msg.get(start..start + len) == Some(SYSTEMD_SENDER) {
                    msg[start..start + len].copy_from_slice(STAND_IN);
                }
                pos = start + len + 1;
            }
            b'g' => {
                let Some(&len) = msg.get(pos) else { return };
                pos += 1 + len as usize + 1;
            }
            b'u' | b'h' => pos = pos.div_ceil(4) * 4 + 4,
            _ => return,
        }
    }
}

/// Writes bytes as they come.
#[derive(Debug)]
pub struct Writer(OwnedWriteHalf);

#[zbus::export::async_trait::async_trait]
impl WriteHalf for Writer {
    async fn sendmsg(&mut self, buffer: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "fd passing is not supported here"));
        }
        self.0.write(buffer).await
    }

    async fn close(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply header as systemd sends it on the private socket: REPLY_SERIAL, SENDER, SIGNATURE.
    fn reply_from_systemd() -> Vec<u8> {
        let mut fields = Vec::new();
        fields.extend_from_slice(&[5, 1, b'u', 0, 7, 0, 0, 0]); // REPLY_SERIAL = 7
        fields.extend_from_slice(&[7, 1, b's', 0]);
        fields.extend_from_slice(&(SYSTEMD_SENDER.len() as u32).to_le_bytes());
        fields.extend_from_slice(SYSTEMD_SENDER);
        fields.push(0);
        while fields.len() % 8 != 0 {
            fields.push(0);
        }
        fields.extend_from_slice(&[8, 1, b'g', 0, 1, b's', 0]);
        let mut msg = vec![b'l', 2, 1, 1];
        msg.extend_from_slice(&9u32.to_le_bytes());
        msg.extend_from_slice(&3u32.to_le_bytes());
        msg.extend_from_slice(&(fields.len() as u32).to_le_bytes());
        msg.extend_from_slice(&fields);
        while msg.len() % 8 != 0 {
            msg.push(0);
        }
        msg.extend_from_slice(&4u32.to_le_bytes());
        msg.extend_from_slice(b"org\0\0");
        msg
    }

    #[test]
    fn rewrites_only_the_sender_field() {
        let mut msg = reply_from_systemd();
        assert_eq!(message_len(&msg), Some(msg.len()));
        let before = msg.clone();
        patch_sender(&mut msg);
        assert_eq!(msg.len(), before.len());
        let pos = msg.windows(STAND_IN.len()).position(|w| w == STAND_IN).expect("sender rewritten");
        assert_eq!(&before[pos..pos + SYSTEMD_SENDER.len()], SYSTEMD_SENDER);
        let diff = msg.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert!(diff <= STAND_IN.len());
        assert!(msg.ends_with(b"org\0\0"), "body untouched");
    }

    /// A stream of auth lines and messages, written in chunks of every size, comes out of the
    /// reader byte for byte (the senders patched), however zbus asks for it; a long message (a
    /// listing of 2000 units is 600 KB) in one piece.
    #[tokio::test]
    async fn hands_over_lines_and_messages_whole_whatever_the_chunks() {
        let mut long = reply_from_systemd();
        let body_len = 700_000usize;
        long[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
        let header_len = long.len() - 9;
        long.truncate(header_len);
        long.extend((0..body_len).map(|i| (i % 251) as u8));
        let mut stream = b"DATA\r\nOK 0123456789abcdef\r\n".to_vec();
        let mut want = stream.clone();
        for m in [reply_from_systemd(), long, reply_from_systemd(), reply_from_systemd()] {
            stream.extend_from_slice(&m);
            let mut patched = m.clone();
            patch_sender(&mut patched);
            want.extend_from_slice(&patched);
        }
        for (chunk, ask) in [(1, 1), (7, 16), (4096, 3), (65536, 100_000), (1 << 20, 1 << 20)] {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let (mut reader, _) = PrivateSocket(ours).split().take();
            let sent = stream.clone();
            let writer = tokio::spawn(async move {
                let mut theirs = theirs;
                for c in sent.chunks(chunk) {
                    theirs.write_all(c).await.unwrap();
                }
            });
            let mut got = Vec::new();
            let mut buf = vec![0u8; ask];
            while got.len() < want.len() {
                let (n, _) = reader.recvmsg(&mut buf).await.unwrap();
                assert!(n > 0, "end of stream after {} of {} bytes", got.len(), want.len());
                got.extend_from_slice(&buf[..n]);
            }
            writer.await.unwrap();
            assert!(got == want, "chunks of {chunk}, reads of {ask}: the bytes differ");
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        for n in 0..64 {
            let mut m: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            patch_sender(&mut m);
            let _ = message_len(&m);
        }
    }
}
