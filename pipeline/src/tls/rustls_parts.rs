//! The rustls pieces an inspected connection is made of: the crypto
//! provider, the server leg's shared settings ([`UpstreamTls`]), a verifier
//! that records a failed verification instead of aborting (so `untrusted`
//! can forge with the untrusted issuer), a client-certificate resolver that
//! only notes the request (mTLS servers are bypassed), the one-chain server
//! resolver and the fixed clock of a handshake. The two-leg machine that
//! uses them is [`super::pair`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};

use super::pair::{InvalidCertPolicy, TlsPairError};

/// Shared per-appliance settings of the server leg, built once from config.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) verifier: Arc<WebPkiServerVerifier>,
    pub(super) invalid_certificate: InvalidCertPolicy,
    /// Per-policy TLS secret logs (NSS key log format), both legs.
    pub(super) keylogs: std::collections::HashMap<Arc<str>, Arc<dyn rustls::KeyLog>>,
}

impl UpstreamTls {
    /// Creates the settings from the trusted roots and the invalid-certificate policy.
    pub fn new(
        roots: Arc<RootCertStore>,
        invalid_certificate: InvalidCertPolicy,
    ) -> Result<UpstreamTls, TlsPairError> {
        Self::with_crls(roots, Vec::new(), invalid_certificate)
    }

    /// Like [`new`](Self::new), also checking upstream chains against `crls`
    /// (`[upstream] crls`): a certificate a CRL revokes fails verification
    /// as any other invalid certificate does. Certificates whose issuer has
    /// no CRL here are not judged on revocation (rustls' "unknown status
    /// allowed"), as a browser without that CRL would not.
    pub fn with_crls(
        roots: Arc<RootCertStore>,
        crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
        invalid_certificate: InvalidCertPolicy,
    ) -> Result<UpstreamTls, TlsPairError> {
        let provider = Arc::new(provider());
        let mut builder = WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
        if !crls.is_empty() {
            builder = builder.with_crls(crls).allow_unknown_revocation_status();
        }
        let verifier = builder
            .build()
            .map_err(|e| TlsPairError::Config(TlsError::General(e.to_string())))?;
        Ok(UpstreamTls {
            provider,
            verifier,
            invalid_certificate,
            keylogs: Default::default(),
        })
    }

    /// Logs the TLS secrets of both legs of `policy_id`'s inspected
    /// connections to `keylog` (what SSLKEYLOGFILE holds), so that a capture
    /// of either leg can be decrypted.
    pub fn with_keylog(mut self, policy_id: Arc<str>, keylog: Arc<dyn rustls::KeyLog>) -> Self {
        self.keylogs.insert(policy_id, keylog);
        self
    }

    /// The crypto provider used on both legs (AES-GCM first).
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }
}

/// The aws-lc-rs provider with AES-128-GCM, then AES-256-GCM, then the rest.
///
/// AES-GCM is what the CPU accelerates; ChaCha20 stays available for
/// clients and servers that offer nothing else.
pub(super) fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        let name = s.suite().as_str().unwrap_or("");
        if name.contains("AES_128_GCM") {
            0
        } else if name.contains("AES_256_GCM") {
            1
        } else {
            2
        }
    });
    p
}

/// The time rustls checks certificates against: the `now` passed in.
#[derive(Debug)]
pub(super) struct FixedTime(pub(super) UnixTime);

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

/// Wraps webpki verification, recording the outcome instead of aborting.
///
/// Under `untrusted` a failure is recorded and the handshake continues, so
/// the minter can forge with the untrusted issuer; under `block` it aborts.
#[derive(Debug)]
pub(super) struct RecordingVerifier {
    pub(super) inner: Arc<WebPkiServerVerifier>,
    pub(super) block: bool,
    /// Without SNI the client never named the server, so only the chain is
    /// judged here; the forged leaf carries the upstream names and the
    /// client's own name check fails or passes as it would without us.
    pub(super) ignore_name: bool,
    pub(super) outcome: Mutex<Option<Result<(), TlsError>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let mut res = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        if self.ignore_name {
            if let Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) = res
            {
                res = Ok(());
            }
        }
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(res.clone());
        match res {
            Err(e) if self.block => Err(e),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client-certificate resolver that only notes that one was requested.
#[derive(Debug, Default)]
pub(super) struct ClientAuthRecorder {
    pub(super) requested: AtomicBool,
}

impl ResolvesClientCert for ClientAuthRecorder {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// Serves the one forged chain of this connection.
#[derive(Debug)]
pub(super) struct FixedCert(pub(super) Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
