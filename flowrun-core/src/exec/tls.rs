//! TLS for the providers' HTTP client: rustls (with the `ring` crypto provider) checking
//! servers against the system's root certificates, read on the first HTTPS handshake rather
//! than when the client is made.
//!
//! Making an OpenSSL-backed client parsed the whole system bundle up front, twice, which cost
//! 90 ms of CPU before the first request of every `flowrun run` or `flowrun test` even when
//! every provider is on plain HTTP (a local model server, a fake). Here the roots are read at
//! most once per client, when a server first presents a certificate, and rustls reads them in
//! a few milliseconds.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// The TLS settings of the providers' client.
pub(crate) fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = LazySystemRoots::new(provider.clone());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The platform verifier, made (reading the system's roots) on first use.
#[derive(Debug)]
struct LazySystemRoots {
    provider: Arc<CryptoProvider>,
    algorithms: WebPkiSupportedAlgorithms,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl LazySystemRoots {
    fn new(provider: Arc<CryptoProvider>) -> Self {
        LazySystemRoots {
            algorithms: provider.signature_verification_algorithms,
            provider,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| Verifier::new(self.provider.clone()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazySystemRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    // Signatures are checked against the certificate the server sent, which needs no roots.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lazy() -> LazySystemRoots {
        LazySystemRoots::new(Arc::new(rustls::crypto::ring::default_provider()))
    }

    #[test]
    fn roots_are_read_on_the_first_certificate_not_before() {
        let roots = lazy();
        assert!(roots.verifier.get().is_none());
        let _ = client_config().expect("a client config");
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let name = ServerName::try_from("api.openai.com").expect("a server name");
        let err = roots
            .verify_server_cert(&garbage, &[], &name, &[], UnixTime::now())
            .expect_err("a malformed certificate is refused");
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "refused as a bad certificate, not for lack of roots: {err:?}"
        );
        assert!(roots.verifier.get().is_some_and(Result::is_ok));
    }

    #[test]
    fn offers_the_provider_signature_schemes() {
        let schemes = lazy().supported_verify_schemes();
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
        assert!(schemes.contains(&SignatureScheme::RSA_PSS_SHA256));
    }
}
