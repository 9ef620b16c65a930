//! The console's own TLS certificate: the operator's (`[console] cert/key`)
//! or one made at first start under the state dir.
//!
//! The made certificate is self-signed and not a CA (so a browser or client
//! can pin exactly it); the operator checks its SHA-256 fingerprint, which
//! `tlsinspect run` logs and `tlsinspect console info` prints, before
//! accepting it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Console;

/// Certificate file made at first start, inside `<state_dir>/console/`.
pub const CERT_FILE: &str = "console.crt";
/// Its private key (mode 0600).
pub const KEY_FILE: &str = "console.key";

/// `<state_dir>/console`, where the console keeps what it makes.
pub fn console_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("console")
}

/// The certificate chain and key the console serves.
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf, `AB:CD:...`.
    pub fingerprint: String,
    /// Where the certificate was read from.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish()
    }
}

/// SHA-256 of `der` as colon-separated upper-case hex, as browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Where the console certificate of `console` is (configured or made).
pub fn paths(console: &Console, state_dir: &Path) -> (PathBuf, PathBuf) {
    match &console.tls {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let dir = console_dir(state_dir);
            (dir.join(CERT_FILE), dir.join(KEY_FILE))
        }
    }
}

fn write_new(path: &Path, mode: u32, data: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("console: creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("console: writing {}", path.display()))
}

impl Identity {
    /// Reads the console certificate, making it first when it is the
    /// state-dir one and does not exist yet.
    pub fn load_or_create(console: &Console, state_dir: &Path) -> anyhow::Result<Identity> {
        let (cert_path, key_path) = paths(console, state_dir);
        if console.tls.is_none() && !cert_path.exists() {
            let dir = console_dir(state_dir);
            fs::create_dir_all(&dir)
                .with_context(|| format!("console: creating {}", dir.display()))?;
            let mut names = vec!["localhost".to_string()];
            let ip = console.listen.ip();
            if !ip.is_unspecified() {
                names.push(ip.to_string());
            }
            if !names.contains(&"127.0.0.1".to_string()) {
                names.push("127.0.0.1".into());
            }
            let made = rcgen::generate_simple_self_signed(names)
                .context("console: making its certificate")?;
            write_new(&key_path, 0o600, made.key_pair.serialize_pem().as_bytes())?;
            write_new(&cert_path, 0o644, made.cert.pem().as_bytes())?;
            log::info!("console: made its certificate {}", cert_path.display());
        }
        Self::load(&cert_path, &key_path)
    }

    /// Reads a PEM certificate chain and key.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Identity> {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
            .with_context(|| format!("console: reading {}", cert_path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!("console: {} is not a PEM certificate", cert_path.display())
            })?;
        let leaf = chain
            .first()
            .with_context(|| format!("console: {} holds no certificate", cert_path.display()))?;
        let fingerprint = fingerprint(leaf);
        let key = PrivateKeyDer::from_pem_file(key_path)
            .with_context(|| format!("console: {} is not a PEM private key", key_path.display()))?;
        Ok(Identity {
            chain,
            key,
            fingerprint,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// The rustls server configuration (HTTP/1.1 over TLS 1.2 or 1.3).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("console: TLS versions")?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("console: the certificate and key do not go together")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}
