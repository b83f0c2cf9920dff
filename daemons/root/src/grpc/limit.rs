//! Connections to the gRPC port, bounded: at most [`MAX_CONNECTIONS`] at once (capped by the
//! open-file limit; one more is closed at once), and a connection that sends nothing within
//! [`FIRST_BYTE_TIMEOUT`] is closed. Without this, anyone who can reach the port could hold
//! every file descriptor of the root with idle TCP connections and lock clusters (and users)
//! out. Clusters authenticate inside the session; these limits apply before that.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Cluster connections served at once (one per cluster, plus reconnects in flight).
pub const MAX_CONNECTIONS: usize = 1024;

/// Time a new connection has to send its first bytes (the HTTP/2 preface).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection holding one of the listener's slots until it is dropped.
#[derive(Debug)]
pub struct Limited {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    first_byte: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.first_byte = None,
            Poll::Pending => {
                if let Some(deadline) = self.first_byte.as_mut()
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no bytes within the first-byte timeout",
                    )));
                }
            }
            _ => {}
        }
        read
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts on `listener` with at most `max` connections at once and `first_byte` as the
/// first-byte timeout; the stream of accepted connections ends when its receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    first_byte: Duration,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Limited>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max));
    tokio::spawn(async move {
        let mut warned: Option<std::time::Instant> = None;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!("cluster gRPC: cannot accept a connection: {e}");
                        warned = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(
                        max,
                        "cluster gRPC: every connection slot is taken; refusing connections"
                    );
                    warned = Some(std::time::Instant::now());
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let conn = Limited {
                inner: stream,
                _slot: slot,
                first_byte: Some(Box::pin(tokio::time::sleep(first_byte))),
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn silent_connections_time_out_and_extra_ones_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = incoming(listener, 2, Duration::from_millis(200));
        let mut a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut served_a = conns.next().await.unwrap().unwrap();
        let _served_b = conns.next().await.unwrap().unwrap();
        // A third one finds no slot and is closed without being served.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut byte))
            .await
            .expect("the extra connection was held open")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // The served one that stays silent fails its first read after the timeout.
        let err = served_a.read(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(served_a);
        drop(a.read(&mut byte).await);
        // Its slot is free again: a new connection is served.
        let _d = TcpStream::connect(addr).await.unwrap();
        let served = tokio::time::timeout(Duration::from_secs(2), conns.next()).await;
        assert!(matches!(served, Ok(Some(Ok(_)))));
    }

    #[tokio::test]
    async fn a_connection_that_talks_keeps_its_slot_past_the_timeout() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = incoming(listener, 2, Duration::from_millis(100));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut served = conns.next().await.unwrap().unwrap();
        client.write_all(b"PRI").await.unwrap();
        let mut buf = [0u8; 3];
        served.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.write_all(b"!").await.unwrap();
        let mut one = [0u8; 1];
        served.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"!");
    }
}
