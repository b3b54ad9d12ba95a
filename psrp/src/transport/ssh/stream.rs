//! The subsystem channel as a byte stream, the connection's end signal, and the TCP stream wrapper
//! that lets a dropped [`SshSubsystem`] stop russh's connection task.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, Bytes};
use russh::{
    ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect,
    client::{self, Msg},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{Notify, oneshot},
};

use super::{SshError, connect::ClientHandler};

/// How long [`SshSubsystem::close`] waits for the server to close the channel and the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`SshSubsystem::close`] lets the subsystem take to exit after the end of its input.
const SUBSYSTEM_EXIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How a connection ended.
#[derive(Debug, Clone)]
pub(crate) enum End {
    /// This client closed it (or dropped the stream).
    Closed,
    Failed(SshError),
}

impl End {
    fn into_io(self) -> io::Error {
        match self {
            End::Closed => io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the SSH connection was closed by this client",
            ),
            End::Failed(e) => e.into_io(),
        }
    }
}

/// Shared by the stream, its [`SshStatus`] handles, russh's connection task (through the handler)
/// and the TCP wrapper: the first reason the connection ended wins.
#[derive(Default)]
pub(crate) struct EndSignal {
    state: Mutex<EndState>,
    notify: Notify,
}

#[derive(Default)]
struct EndState {
    end: Option<End>,
    /// The first failure the TCP wrapper saw (reset, EOF, timeout): russh reports some of these only
    /// as "disconnected", or not at all.
    observed: Option<SshError>,
    /// russh's connection task is gone (its handler was dropped).
    task_done: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

#[derive(Clone, Copy)]
enum Slot {
    Read,
    Write,
}

impl EndSignal {
    fn lock(&self) -> MutexGuard<'_, EndState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn finish(&self, end: End) {
        let wakers = {
            let mut state = self.lock();
            if state.end.is_none() {
                if let End::Failed(error) = &end {
                    tracing::debug!(reason = error.reason(), %error, "SSH connection ended");
                }
                state.end = Some(end);
            }
            [state.read_waker.take(), state.write_waker.take()]
        };
        self.notify.notify_waiters();
        wakers.into_iter().flatten().for_each(Waker::wake);
    }

    pub(crate) fn observe(&self, error: SshError) {
        self.lock().observed.get_or_insert(error);
    }

    pub(crate) fn observed(&self) -> Option<SshError> {
        self.lock().observed.clone()
    }

    /// Called when russh's task drops the handler: whatever happened, the connection is over.
    pub(crate) fn task_ended(&self) {
        let observed = {
            let mut state = self.lock();
            state.task_done = true;
            state.observed.clone()
        };
        let reason = "the connection closed".to_owned();
        self.finish(End::Failed(observed.unwrap_or(SshError::Disconnected { reason })));
    }

    pub(crate) fn ended(&self) -> Option<End> {
        self.lock().end.clone()
    }

    fn poll_end(&self, cx: &mut Context<'_>, slot: Slot) -> Poll<End> {
        let mut state = self.lock();
        if let Some(end) = &state.end {
            return Poll::Ready(end.clone());
        }
        let waker = match slot {
            Slot::Read => &mut state.read_waker,
            Slot::Write => &mut state.write_waker,
        };
        match waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) async fn wait_end(&self) -> End {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(end) = self.ended() {
                return end;
            }
            notified.await;
        }
    }

    pub(crate) async fn wait_task_end(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().task_done {
                return;
            }
            notified.await;
        }
    }
}

/// Watches a connection from elsewhere (e.g. while another task owns the stream). Cheap to clone.
#[derive(Clone)]
pub struct SshStatus {
    end: Arc<EndSignal>,
}

impl SshStatus {
    /// Whether the connection has ended (failed, or closed by this client).
    pub fn is_ended(&self) -> bool {
        self.end.ended().is_some()
    }

    /// Why the connection failed, if it did (`None` while it is up, or when this client closed it).
    pub fn error(&self) -> Option<SshError> {
        match self.end.ended() {
            Some(End::Failed(e)) => Some(e),
            _ => None,
        }
    }

    /// Waits until the connection ends; `Some` with the reason when it failed, `None` when this
    /// client closed it. Cancellation safe.
    pub async fn ended(&self) -> Option<SshError> {
        match self.end.wait_end().await {
            End::Failed(e) => Some(e),
            End::Closed => None,
        }
    }
}

impl std::fmt::Debug for SshStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshStatus")
            .field("ended", &self.end.ended())
            .finish()
    }
}

/// The TCP stream russh's connection task owns. It stops working as soon as the [`SshSubsystem`]
/// (or the opening future) is dropped, which ends the task: russh has no abort of its own, and a
/// task blocked writing to a dead peer would otherwise live until the kernel gives up.
pub(crate) struct Transport {
    tcp: TcpStream,
    kill: oneshot::Receiver<()>,
    killed: bool,
    end: Arc<EndSignal>,
    /// Bytes read from the socket that russh has not taken yet: `read_buf[read_pos..read_len]`.
    /// russh reads each SSH packet in two small reads (the length, then the rest), one `recvfrom`
    /// (and one `TCP_QUICKACK` `setsockopt`) each without this; with it, one read per arrival.
    read_buf: Box<[u8]>,
    read_pos: usize,
    read_len: usize,
}

/// The size of [`Transport`]'s read buffer: the replies of a pipeline's exchange fit; larger reads
/// with the buffer empty go straight to the caller's buffer.
const TRANSPORT_READ_BUFFER: usize = 4096;

impl Transport {
    pub(crate) fn new(tcp: TcpStream, kill: oneshot::Receiver<()>, end: Arc<EndSignal>) -> Self {
        Self {
            tcp,
            kill,
            killed: false,
            end,
            read_buf: vec![0; TRANSPORT_READ_BUFFER].into_boxed_slice(),
            read_pos: 0,
            read_len: 0,
        }
    }

    fn killed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if !self.killed && Pin::new(&mut self.kill).poll(cx).is_ready() {
            self.killed = true;
        }
        self.killed.then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the SSH connection was dropped by this client",
            )
        })
    }

    fn note<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result {
            self.end.observe(io_failure(e));
        }
        result
    }
}

/// What a socket error means for the connection.
pub(crate) fn io_failure(error: &io::Error) -> SshError {
    match error.kind() {
        // TCP_USER_TIMEOUT (data unacknowledged too long) or the kernel's own retransmission limit.
        io::ErrorKind::TimedOut => SshError::KeepaliveTimeout,
        io::ErrorKind::ConnectionReset => SshError::Disconnected {
            reason: "the connection was reset".to_owned(),
        },
        _ => SshError::Disconnected {
            reason: error.to_string(),
        },
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        let this = &mut *self;
        if this.read_pos == this.read_len && buf.remaining() >= this.read_buf.len() {
            // Nothing buffered and a big read: straight into the caller's buffer.
            let before = buf.filled().len();
            let result = Pin::new(&mut this.tcp).poll_read(cx, buf);
            if let Poll::Ready(Ok(())) = result {
                this.after_read(buf.filled().len() - before);
            }
            return this.note(result);
        }
        if this.read_pos == this.read_len {
            let mut inner = ReadBuf::new(&mut this.read_buf);
            let result = Pin::new(&mut this.tcp).poll_read(cx, &mut inner);
            let n = inner.filled().len();
            if let Poll::Ready(Ok(())) = result {
                this.read_pos = 0;
                this.read_len = n;
                this.after_read(n);
            }
            if n == 0 {
                return this.note(result);
            }
        }
        let available = &this.read_buf[this.read_pos..this.read_len];
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        this.read_pos += n;
        Poll::Ready(Ok(()))
    }
}

impl Transport {
    /// After a read from the socket that returned `n` bytes (zero: end of file).
    fn after_read(&self, n: usize) {
        if n > 0 {
            // sshd leaves Nagle on for sessions without a terminal, so a reply it writes in two
            // parts waits for our ACK of the first, which Linux delays up to 40 ms: one such stall
            // per channel open and per exchange of the out-of-process framing. Quick ACKs avoid
            // it. The kernel may fall back to delayed ACKs, so it is set again after every read.
            let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
        } else {
            let reason = "the server closed the TCP connection".to_owned();
            self.end.observe(SshError::Disconnected { reason });
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        let result = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.note(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        let result = Pin::new(&mut self.tcp).poll_flush(cx);
        self.note(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No kill check: shutting down is what a killed stream is for.
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

type NextMessage = Pin<Box<dyn Future<Output = (ChannelReadHalf, Option<ChannelMsg>)> + Send>>;

enum ReadState {
    Idle(ChannelReadHalf),
    Waiting(NextMessage),
    /// The channel is gone with the connection.
    Gone,
}

fn next_message(mut half: ChannelReadHalf) -> NextMessage {
    Box::pin(async move {
        let message = half.wait().await;
        (half, message)
    })
}

/// The subsystem's stdin and stdout as one duplex byte stream (`AsyncRead + AsyncWrite`).
///
/// Reading returns end of file when the server ends the channel (the subsystem exited), and an
/// `io::Error` holding an [`SshError`] ([`SshError::from_io`]) when the connection failed. russh
/// stops reading the network while this stream's unread data is piling up, so read it concurrently
/// with writing (e.g. `tokio::io::split`) rather than writing a lot while reading nothing.
///
/// Dropping it tears the connection down at once; [`SshSubsystem::close`] closes it politely.
pub struct SshSubsystem {
    state: ReadState,
    chunk: Bytes,
    eof: bool,
    writer: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    write_half: ChannelWriteHalf<Msg>,
    handle: client::Handle<ClientHandler>,
    end: Arc<EndSignal>,
    /// Dropped with the stream, which stops the connection task (see [`Transport`]).
    _kill: oneshot::Sender<()>,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
}

pub(crate) struct Parts {
    pub(crate) read_half: ChannelReadHalf,
    pub(crate) write_half: ChannelWriteHalf<Msg>,
    pub(crate) early_data: Bytes,
    pub(crate) handle: client::Handle<ClientHandler>,
    pub(crate) end: Arc<EndSignal>,
    pub(crate) kill: oneshot::Sender<()>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) peer_addr: SocketAddr,
}

impl SshSubsystem {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            writer: Some(Box::pin(parts.write_half.make_writer())),
            state: ReadState::Idle(parts.read_half),
            chunk: parts.early_data,
            eof: false,
            write_half: parts.write_half,
            handle: parts.handle,
            end: parts.end,
            _kill: parts.kill,
            local_addr: parts.local_addr,
            peer_addr: parts.peer_addr,
        }
    }

    /// A handle that learns when and why the connection ended.
    pub fn status(&self) -> SshStatus {
        SshStatus {
            end: Arc::clone(&self.end),
        }
    }

    /// Why the connection failed, if it has.
    pub fn error(&self) -> Option<SshError> {
        self.status().error()
    }

    /// The local address of the TCP connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's address the TCP connection went to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Closes cleanly: end of input and close on the channel, waits (bounded) for the server to close
    /// it too (the subsystem has exited then), and disconnects. Returns the connection's error if it
    /// had already failed.
    pub async fn close(mut self) -> Result<(), SshError> {
        let failed = self.error();
        if failed.is_none() {
            self.end.finish(End::Closed);
            let polite = async {
                self.writer = None;
                // End of input first, then wait for the server to close the channel (the subsystem
                // has exited then); russh answers that close itself. Only a client-initiated close
                // needs our own CHANNEL_CLOSE, and russh drops the server's reply to it, so it
                // comes last. Errors mean the connection is gone: nothing left to be polite to.
                let _ = self.write_half.eof().await;
                if tokio::time::timeout(SUBSYSTEM_EXIT_TIMEOUT, self.drain_until_closed())
                    .await
                    .is_err()
                {
                    let _ = self.write_half.close().await;
                }
                let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
                self.end.wait_task_end().await;
            };
            if tokio::time::timeout(CLOSE_TIMEOUT, polite).await.is_err() {
                tracing::debug!(peer = %self.peer_addr, "SSH close timed out; dropping the connection");
            }
        }
        // Drop stops whatever is left of the connection task.
        failed.map_or(Ok(()), Err)
    }

    /// Reads and discards until the server has closed the channel (or the connection is gone).
    async fn drain_until_closed(&mut self) {
        let mut half = match std::mem::replace(&mut self.state, ReadState::Gone) {
            ReadState::Idle(half) => half,
            ReadState::Waiting(next) => match next.await {
                (_, None | Some(ChannelMsg::Close)) => return,
                (half, Some(_)) => half,
            },
            ReadState::Gone => return,
        };
        while let Some(message) = half.wait().await {
            if matches!(message, ChannelMsg::Close) {
                return;
            }
        }
    }
}

impl Drop for SshSubsystem {
    fn drop(&mut self) {
        self.end.finish(End::Closed);
    }
}

impl std::fmt::Debug for SshSubsystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSubsystem")
            .field("local_addr", &self.local_addr)
            .field("peer_addr", &self.peer_addr)
            .field("eof", &self.eof)
            .field("ended", &self.end.ended())
            .finish()
    }
}

impl AsyncRead for SshSubsystem {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.chunk.is_empty() {
                let n = this.chunk.len().min(buf.remaining());
                buf.put_slice(&this.chunk[..n]);
                this.chunk.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut next = match std::mem::replace(&mut this.state, ReadState::Gone) {
                ReadState::Idle(half) => next_message(half),
                ReadState::Waiting(next) => next,
                ReadState::Gone => {
                    // The channel went away without an EOF: the connection ended; say why.
                    return match this.end.poll_end(cx, Slot::Read) {
                        Poll::Ready(End::Closed) => Poll::Ready(Ok(())),
                        Poll::Ready(end) => Poll::Ready(Err(end.into_io())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            };
            let (half, message) = match next.as_mut().poll(cx) {
                Poll::Ready(ready) => ready,
                Poll::Pending => {
                    this.state = ReadState::Waiting(next);
                    return Poll::Pending;
                }
            };
            match message {
                Some(ChannelMsg::Data { data }) => this.chunk = data,
                Some(ChannelMsg::Eof | ChannelMsg::Close) => this.eof = true,
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let text = String::from_utf8_lossy(&data[..data.len().min(512)]).into_owned();
                    tracing::debug!(peer = %this.peer_addr, stderr = %text.trim_end(), "subsystem wrote to stderr");
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    tracing::debug!(peer = %this.peer_addr, exit_status, "subsystem exited");
                }
                Some(_) => {}
                None => continue,
            }
            this.state = ReadState::Idle(half);
        }
    }
}

impl SshSubsystem {
    fn write_end(&self, cx: &mut Context<'_>) -> Option<io::Error> {
        match self.end.poll_end(cx, Slot::Write) {
            Poll::Ready(end) => Some(end.into_io()),
            Poll::Pending => None,
        }
    }

    /// An error from russh's channel writer, or the reason the connection ended if it did.
    fn write_error(&self, error: io::Error) -> io::Error {
        self.end.ended().map_or(error, End::into_io)
    }
}

impl AsyncWrite for SshSubsystem {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(writer) = this.writer.as_mut() else {
            let message = "the subsystem's input was shut down already";
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, message)));
        };
        match writer.as_mut().poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.write_error(e))),
            // Waiting for window space or queue room: also wake up if the connection dies meanwhile.
            Poll::Pending => this.write_end(cx).map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.writer.as_mut() {
            Some(writer) => writer.as_mut().poll_flush(cx).map_err(|e| this.write_error(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends EOF on the channel: the subsystem sees the end of its input.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(writer) = this.writer.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match writer.as_mut().poll_shutdown(cx) {
            Poll::Ready(Ok(())) => {
                this.writer = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.write_error(e))),
            Poll::Pending => this.write_end(cx).map_or(Poll::Pending, |e| Poll::Ready(Err(e))),
        }
    }
}
