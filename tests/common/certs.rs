//! Test certificates, made fresh by each test with rcgen (no private key is ever committed):
//! a CA, a server certificate for `localhost` and 127.0.0.1 signed by it, two client
//! certificates signed by it (one named by a DNS name, one by its common name alone), and a
//! second, unrelated CA with a client certificate of its own, for the "foreign certificate"
//! cases; and a rotated server certificate, for reloads. The files go when the test's
//! `TestPki` does.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files written to a directory of the test's own.
pub struct TestPki {
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate from `ca`, whose subject has the DNS name `client_name`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_name: String,
    /// A client certificate from `ca` with no subject-alternative name, only the common
    /// name `cn_client_name`.
    pub cn_client_cert: PathBuf,
    pub cn_client_key: PathBuf,
    pub cn_client_name: String,
    /// Another CA, and a client certificate it signed.
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

impl Drop for TestPki {
    /// The keys live only as long as the test that made them.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed CA");
    Ca { cert, key }
}

fn leaf(ca: &Ca, names: &[&str], common_name: &str, client: bool) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("signed leaf");
    (cert.pem(), key.serialize_pem())
}

/// Writes a fresh PKI under the system's temp directory, in a directory named after `test`.
pub fn make_test_pki(test: &str) -> TestPki {
    let dir = std::env::temp_dir().join(format!("wharf-pki-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("PKI directory");
    let write = |name: &str, pem: &str| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    let root = ca("wharf test CA");
    let other = ca("some other CA");
    let (server_cert, server_key) = leaf(
        &root,
        &["localhost", "127.0.0.1", "::1"],
        "localhost",
        false,
    );
    let client_name = "client-alice".to_string();
    let (client_cert, client_key) = leaf(&root, &[&client_name], "alice", true);
    let cn_client_name = "bob-by-common-name".to_string();
    let (cn_cert, cn_key) = leaf(&root, &[], &cn_client_name, true);
    let (other_cert, other_key) = leaf(&other, &["client-mallory"], "mallory", true);
    TestPki {
        ca: write("ca.pem", &root.cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
        client_name,
        cn_client_cert: write("cn-client.pem", &cn_cert),
        cn_client_key: write("cn-client.key", &cn_key),
        cn_client_name,
        other_ca: write("other-ca.pem", &other.cert.pem()),
        other_client_cert: write("other-client.pem", &other_cert),
        other_client_key: write("other-client.key", &other_key),
        dir,
    }
}

/// Replaces the server certificate and key files with a new pair, for `localhost` and
/// 127.0.0.1, signed by a new CA; returns the path of that CA's certificate (`ca2.pem`).
/// Stands for a certificate rotation: the server sees the new files only when told to
/// reload them.
pub fn rotate_server_cert(pki: &TestPki) -> PathBuf {
    let root = ca("wharf test CA, rotated");
    let (cert, key) = leaf(
        &root,
        &["localhost", "127.0.0.1", "::1"],
        "localhost",
        false,
    );
    std::fs::write(&pki.server_key, key).expect("write the new server key");
    std::fs::write(&pki.server_cert, cert).expect("write the new server certificate");
    let path = pki.dir.join("ca2.pem");
    std::fs::write(&path, root.cert.pem()).expect("write the new CA");
    path
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
