//! TLS to the server, inside the guest: rustls with a pure-Rust crypto provider (no C
//! compiler is needed to build the plugins for wasm32-wasip2).
//!
//! - `require` encrypts and checks that the server holds the private key of the
//!   certificate it shows (the handshake signature), but accepts any certificate: it
//!   protects against eavesdropping, not against an active impostor. As libpq's
//!   `require` does.
//! - `verify-full` also checks the certificate chains to a CA in the PEM file
//!   `sslrootcert` names (read through the plugin's `fs` grant), is in date, and names the
//!   configured host.
//!
//! The connection asks with an SSLRequest and reads exactly the one-byte answer before the
//! handshake, so nothing the server sends in the clear is ever taken for protocol data.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};

use crate::error::PgError;

/// How the connection is protected, from the config's `sslmode`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Tls {
    /// Plain TCP (the default; for loopback and private links).
    #[default]
    Disable,
    /// Encrypted; any certificate is accepted.
    Require,
    /// Encrypted; the certificate must chain to a CA in this PEM file and name the host.
    VerifyFull { root_cert: String },
}

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The socket under rustls. rustls sends its records with `write_vectored`, which std on
/// wasm32-wasip2 implements by writing the first buffer only; the small writes that follow
/// each other then wait on Nagle's algorithm and delayed ACKs (about 40 ms; wasi:sockets
/// cannot set TCP_NODELAY). One joined write per call avoids that.
pub struct Socket(pub TcpStream);

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if bufs.len() == 1 {
            return self.0.write(&bufs[0]);
        }
        let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.0.write_all(&joined)?;
        Ok(joined.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The connection's byte stream: plain TCP or TLS over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, Socket>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

impl Transport {
    /// Make reads return `WouldBlock` instead of waiting when no data has arrived.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.set_nonblocking(on),
            Transport::Tls(s) => s.sock.0.set_nonblocking(on),
        }
    }

    /// Say goodbye at the TLS layer too (best effort).
    pub fn close_notify(&mut self) {
        if let Transport::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}

/// Ask the server for TLS on `tcp` and complete the handshake with `first` (the startup
/// message) queued, so that it leaves with the handshake's last flight.
pub fn handshake(
    mut tcp: TcpStream,
    tls: &Tls,
    host: &str,
    address: &str,
    first: &[u8],
) -> Result<Transport, PgError> {
    let failed = |what: String| PgError::Tls(format!("{address}: {what}"));
    let config = match tls {
        Tls::Disable => return Ok(Transport::Plain(tcp)),
        Tls::Require => require_config(),
        Tls::VerifyFull { root_cert } => verify_full_config(root_cert).map_err(failed)?,
    };
    tcp.write_all(&SSL_REQUEST)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)?;
    match answer[0] {
        b'S' => {}
        b'N' => {
            return Err(failed(
                "the server does not accept TLS connections (it answered the SSL request with N); \
                 turn `ssl` on in its postgresql.conf, or use `sslmode = \"disable\"` on a trusted network"
                    .into(),
            ))
        }
        other => {
            return Err(failed(format!(
                "the server answered the SSL request with {other:#04x}, not S or N"
            )))
        }
    }
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        failed(format!(
            "`{host}` is not a name a certificate can hold: {e}"
        ))
    })?;
    let conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| failed(format!("cannot start TLS: {e}")))?;
    let mut stream = StreamOwned::new(conn, Socket(tcp));
    stream.conn.writer().write_all(first)?;
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| {
            // rustls reports a refused certificate as an InvalidData I/O error holding its
            // own error; a reset or EOF stays an I/O failure.
            if e.kind() == io::ErrorKind::InvalidData {
                failed(format!("the TLS handshake failed: {e}"))
            } else {
                PgError::Io(e)
            }
        })?;
    }
    // The queued startup message may still sit in rustls' buffer.
    stream.flush()?;
    Ok(Transport::Tls(Box::new(stream)))
}

/// The pure-Rust provider, offering P-256 first: PostgreSQL's default `ssl_ecdh_curve`
/// (prime256v1) then needs no HelloRetryRequest round trip.
///
/// Its cipher suites are ChaCha20-Poly1305 first and AES-128-GCM after; AES-256-GCM is
/// not offered. Without AES instructions (none reach wasm32) AES runs bitsliced in
/// software, several times slower than ChaCha20, and the server, which picks by its own
/// preference (OpenSSL's puts AES-256-GCM first), then settles on ChaCha20.
fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite::*;
    let mut provider = rustls_rustcrypto::provider();
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
    let rank = |suite: rustls::CipherSuite| match suite {
        TLS13_CHACHA20_POLY1305_SHA256
        | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => Some(0),
        TLS13_AES_128_GCM_SHA256
        | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => Some(1),
        _ => None,
    };
    provider.cipher_suites.retain(|s| rank(s.suite()).is_some());
    provider.cipher_suites.sort_by_key(|s| rank(s.suite()));
    Arc::new(provider)
}

fn require_config() -> ClientConfig {
    let provider = provider();
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}

fn verify_full_config(root_cert: &str) -> Result<ClientConfig, String> {
    let pem = std::fs::read(root_cert).map_err(|e| {
        format!(
            "cannot read `sslrootcert` {root_cert:?} ({e}); grant its directory in the plugin's `fs`"
        )
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| format!("`sslrootcert` {root_cert:?} is not PEM certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("`sslrootcert` {root_cert:?} holds a bad certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("`sslrootcert` {root_cert:?} holds no certificate"));
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `require`: any certificate, but the handshake signature must verify with its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
