//! `tlsinspect ca export`: the files an operator installs in clients' trust stores.
//!
//! One certificate per `.crt` file, because Windows' certificate import
//! wizard (and `certutil -addstore`) takes only the first certificate of a
//! bundle; `bundle.pem` holds them all for tools that take a bundle
//! (Debian's `update-ca-certificates` wants one per file too, hence `.crt`).

use std::fs;
use std::path::{Path, PathBuf};

use super::{PkiError, PolicyCa};

/// File name of the bundle written next to the per-certificate files.
pub const BUNDLE_FILE: &str = "bundle.pem";

fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Writes the issuing CA and every chain certificate (root included) to `out`.
///
/// Files: `00-issuing-ca.crt`, then `NN-intermediate.crt` / `NN-root.crt` in chain order, then
/// `bundle.pem`. Refuses to overwrite any existing file (checked before
/// anything is written). Returns the paths written, the bundle last.
pub fn export_chain(ca: &PolicyCa, out: &Path) -> Result<Vec<PathBuf>, PkiError> {
    let files: Vec<(PathBuf, String)> = chain_files(ca)
        .into_iter()
        .map(|(name, pem)| (out.join(name), pem))
        .collect();
    for (p, _) in &files {
        if p.symlink_metadata().is_ok() {
            return Err(PkiError::AlreadyExists { path: p.clone() });
        }
    }
    fs::create_dir_all(out).map_err(|source| PkiError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(files.len());
    for (p, pem) in files {
        fs::write(&p, pem).map_err(|source| PkiError::Write {
            path: p.clone(),
            source,
        })?;
        written.push(p);
    }
    Ok(written)
}

/// The files of [`export_chain`] as (file name, PEM text), the bundle last;
/// also what the console's certificate download zips.
pub fn chain_files(ca: &PolicyCa) -> Vec<(String, String)> {
    let certs: Vec<&[u8]> = std::iter::once(ca.certificate().as_ref())
        .chain(ca.chain().iter().map(|c| c.as_ref()))
        .collect();
    let mut files: Vec<(String, String)> = certs
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let self_signed = x509_parser::parse_x509_certificate(der)
                .is_ok_and(|(_, x)| super::ca::is_self_signed(&x));
            let name = match (i, self_signed) {
                (0, _) => "00-issuing-ca.crt".to_string(),
                (_, true) => format!("{i:02}-root.crt"),
                (_, false) => format!("{i:02}-intermediate.crt"),
            };
            (name, pem_of(der))
        })
        .collect();
    let bundle: String = files.iter().map(|(_, pem)| pem.as_str()).collect();
    files.push((BUNDLE_FILE.to_string(), bundle));
    files
}
