//! Connections to upstreams: a connector that honours a destination's `connect_to` override
//! and originates TLS (verified, ALPN h2/http1.1); the pools that reuse them are
//! [`super::pool`]. Without `connect_to` the client chose the host, so every address is
//! checked by the target rules ([`super::target`]) before and after connecting.

use super::target::{dial, DialError, TargetRules};
use hyper::Uri;
use rustls::pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Why a connection to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP or TLS connect did not finish within `timeouts.connect_seconds`.
    #[error("connect timed out")]
    Timeout,
    /// TCP connect failed.
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    /// The TLS handshake failed (e.g. the certificate did not verify).
    #[error("TLS handshake with upstream failed: {0}")]
    Tls(io::Error),
    /// The URI has no host.
    #[error("no host in the upstream URI")]
    NoHost,
    /// The target rules refuse every address of the host.
    #[error("forbidden target")]
    Forbidden,
}

/// Connects to the URI's host (or the `connect_to` override) and, for `https` URIs, runs a TLS
/// handshake that verifies the certificate against the URI's host name.
#[derive(Clone)]
pub struct UpstreamConnector {
    connect_to: Option<Arc<str>>,
    rules: Option<Arc<TargetRules>>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl UpstreamConnector {
    /// A connector; `connect_to` replaces the address (not the TLS name) of every connection.
    /// Without it, `rules` check every address the host resolves to.
    pub fn new(
        connect_to: Option<&str>,
        rules: Arc<TargetRules>,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Self {
        UpstreamConnector {
            connect_to: connect_to.map(Arc::from),
            rules: if connect_to.is_some() {
                None
            } else {
                Some(rules)
            },
            tls,
            timeout,
        }
    }

    /// A connection to `uri`'s host (TLS for `https`), within the connect timeout.
    ///
    /// # Errors
    /// [`ConnectError`]: no host, forbidden target, timeout, TCP or TLS failure.
    pub async fn connect(&self, uri: &Uri) -> Result<UpstreamStream, ConnectError> {
        let host = uri
            .host()
            .ok_or(ConnectError::NoHost)?
            .trim_matches(['[', ']'])
            .to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let fut = async {
            let tcp = match &self.connect_to {
                Some(addr) => TcpStream::connect(addr.as_ref()).await?,
                None => match dial(&host, port, self.rules.as_deref()).await {
                    Ok(s) => s,
                    Err(DialError::Forbidden) => return Err(ConnectError::Forbidden),
                    Err(DialError::Io(e)) => return Err(ConnectError::Io(e)),
                },
            };
            tcp.set_nodelay(true)?;
            if !https {
                return Ok(UpstreamStream::Plain(tcp));
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|e| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Ok(UpstreamStream::Tls(Box::new(tls)))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }
}

/// A plain or TLS connection to an upstream.
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
