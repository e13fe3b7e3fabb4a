//! Where a TLS listener's settings come from: PEM files (reloadable) or an embedder's own
//! `rustls::ServerConfig`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The TLS settings of a listener ([`crate::Reactor::add_tls_listener`]).
///
/// Built from PEM files, it can be reloaded ([`crate::Handle::reload_tls`], SIGHUP in the
/// binary): new handshakes use the new certificate, established connections keep theirs, and
/// a broken new pair is logged and the old one kept.
///
/// ```no_run
/// use wharf::TlsConfig;
///
/// // A certificate chain and its key; with a CA file, clients must present a certificate.
/// let tls = TlsConfig::from_pem_files("cert.pem", "key.pem", None)?;
/// # Ok::<(), wharf::TlsError>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    files: Option<PemFiles>,
    current: Arc<ServerConfig>,
}

#[derive(Clone, Debug)]
struct PemFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// Why TLS settings could not be built: the file and what is wrong with it.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Settings from a PEM certificate chain (leaf first) and its PEM private key; with
    /// `client_ca`, clients must present a certificate chained to that CA (mutual TLS), and
    /// its subject becomes the connection's identity ([`crate::Context::identity`]). TLS 1.2
    /// and 1.3, with the ring provider.
    pub fn from_pem_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<TlsConfig, TlsError> {
        let files = PemFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca,
        };
        let current = Arc::new(files.load()?);
        Ok(TlsConfig {
            files: Some(files),
            current,
        })
    }

    /// An embedder's own settings (protocol versions, ALPN, verifiers, resolvers...). They
    /// cannot be reloaded from files; build a new listener to change them.
    pub fn from_server_config(config: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig {
            files: None,
            current: config,
        }
    }

    /// The settings new handshakes use.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.current
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.as_ref().is_some_and(|f| f.client_ca.is_some())
    }

    /// Reads the files again. `Ok(false)`: not built from files, nothing to do. On an error
    /// the current settings stay.
    pub(crate) fn reload(&mut self) -> Result<bool, TlsError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        self.current = Arc::new(files.load()?);
        Ok(true)
    }
}

impl PemFiles {
    fn load(&self) -> Result<ServerConfig, TlsError> {
        let chain = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            TlsError(format!(
                "{}: no usable private key: {}",
                self.key.display(),
                pem_error(&e)
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS settings: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(|e| {
                        TlsError(format!(
                            "{}: not a usable CA certificate: {e}",
                            ca.display()
                        ))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        builder.with_single_cert(chain, key).map_err(|e| {
            TlsError(format!(
                "{} and {} do not make a usable pair: {e}",
                self.cert.display(),
                self.key.display()
            ))
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{}: {}", path.display(), pem_error(&e))))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// A PEM error as a user reads it.
fn pem_error(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => "no such file".to_string(),
        Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            "permission denied".to_string()
        }
        Error::NoItemsFound => "nothing of the expected kind in it".to_string(),
        other => other.to_string(),
    }
}
