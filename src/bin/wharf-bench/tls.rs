//! The client side of TLS for one run, built from the `--tls` flags: which versions to offer,
//! whom to trust (`--tls-ca`, or any certificate with `--insecure`), which name the
//! certificate must carry, and the client certificate for mTLS. One rustls `ClientConfig`,
//! with the ring provider as the server under test has, is shared by every connection.
//!
//! **Every handshake is a full one.** The client keeps no sessions (`Resumption::disabled`),
//! so TLS 1.2 session ids and TLS 1.3 tickets the server sends are dropped: `connect --tls`
//! counts full handshakes per second, and no connection of a run is cheaper for the server
//! because an earlier one taught the client something.
//!
//! **`--insecure` skips only the trust decision.** Its verifier accepts any certificate chain
//! and name, but still checks the server's signature over the handshake with the provider's
//! algorithms, so the server proves it holds the key and a run costs the server exactly what a
//! verifying client costs it.
//!
//! The per-connection side (the session driven over its socket) is `tls_stream.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
};

use crate::cli::{TlsArgs, TlsVersion};
use crate::error::BenchError;

/// What every TLS connection of a run starts from.
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// The client configuration `args` ask for, to reach the server at `addr`.
    pub fn from_args(args: &TlsArgs, addr: SocketAddr) -> Result<TlsClient, BenchError> {
        let provider = Arc::new(ring::default_provider());
        let versions: &[&SupportedProtocolVersion] = match args.tls_version {
            None => rustls::DEFAULT_VERSIONS,
            Some(TlsVersion::Tls12) => &[&rustls::version::TLS12],
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|error| BenchError::Usage(format!("--tls-version: {error}")))?;
        let builder = match &args.tls_ca {
            Some(path) => builder.with_root_certificates(trusted(path)?),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider })),
        };
        let mut config = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(chain(cert)?, private_key(key)?)
                .map_err(|error| {
                    BenchError::Usage(format!(
                        "--tls-cert {} and --tls-key {}: {error}",
                        cert.display(),
                        key.display()
                    ))
                })?,
            _ => builder.with_no_client_auth(),
        };
        config.resumption = Resumption::disabled();
        let server_name = match &args.tls_server_name {
            None => ServerName::IpAddress(addr.ip().into()),
            Some(name) => ServerName::try_from(name.clone()).map_err(|_| {
                BenchError::Usage(format!(
                    "--tls-server-name '{name}' is neither a DNS name nor an IP address"
                ))
            })?,
        };
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }

    /// A new client session: its ClientHello is ready to send.
    pub fn session(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
    }
}

/// The CAs of `--tls-ca`.
fn trusted(path: &Path) -> Result<RootCertStore, BenchError> {
    let mut roots = RootCertStore::empty();
    for cert in chain(path)? {
        roots.add(cert).map_err(|error| {
            BenchError::Usage(format!(
                "--tls-ca {}: not a usable CA certificate ({error})",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// Every certificate of a PEM file; at least one.
fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, BenchError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| unreadable(path, "certificates", error))?;
    if certs.is_empty() {
        return Err(BenchError::Usage(format!(
            "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, BenchError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| unreadable(path, "a private key", error))
}

fn unreadable(path: &Path, what: &str, error: rustls::pki_types::pem::Error) -> BenchError {
    BenchError::Usage(format!(
        "cannot read {what} from {}: {error}",
        path.display()
    ))
}

/// `--insecure`: trusts any certificate, but not a forged handshake signature.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
