//! rustls client configurations for the three [`Trust`] modes.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use lapwing_proto::fingerprint::{parse_fingerprint, sha256_fingerprint};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{ClientCertificate, ClientError, Trust};

/// The QUIC client config for `trust`, with ALPN `lapwing/1`, presenting
/// `certificate` if given.
pub(crate) fn quic_client_config(
    trust: &Trust,
    certificate: Option<&ClientCertificate>,
) -> Result<quinn::ClientConfig, ClientError> {
    let identity = certificate.map(read_identity).transpose()?;
    let finish =
        move |b: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>| {
            match identity {
                Some((chain, key)) => b
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ClientError::Tls(format!("client certificate: {e}"))),
                None => Ok(b.with_no_client_auth()),
            }
        };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut tls = match trust {
        Trust::CaFile(path) => {
            let file = File::open(path).map_err(|source| ClientError::TrustFile {
                path: path.clone(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                let cert = cert.map_err(|source| ClientError::TrustFile {
                    path: path.clone(),
                    source,
                })?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ClientError::NoCertificate { path: path.clone() });
            }
            finish(builder.with_root_certificates(roots))?
        }
        Trust::Fingerprint(fp) => finish(builder.dangerous().with_custom_certificate_verifier(
            Arc::new(PinnedVerifier {
                fingerprint: Some(parse_fingerprint(fp)?),
                provider,
            }),
        ))?,
        Trust::Insecure => finish(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    fingerprint: None,
                    provider,
                })),
        )?,
    };
    tls.alpn_protocols = vec![lapwing_proto::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// A client certificate's chain and key, read from its PEM files.
fn read_identity(
    c: &ClientCertificate,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    let open = |path: &std::path::Path| {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| ClientError::TrustFile {
                path: path.to_owned(),
                source,
            })
    };
    let chain = rustls_pemfile::certs(&mut open(&c.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ClientError::TrustFile {
            path: c.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(ClientError::NoCertificate {
            path: c.cert.clone(),
        });
    }
    let key = rustls_pemfile::private_key(&mut open(&c.key)?)
        .map_err(|source| ClientError::TrustFile {
            path: c.key.clone(),
            source,
        })?
        .ok_or_else(|| ClientError::Tls(format!("{}: no PEM private key", c.key.display())))?;
    Ok((chain, key))
}

/// Accepts exactly the certificate with `fingerprint` (or, with `None`, any
/// certificate). Either way the handshake signature is still verified, so
/// the peer must hold the certificate's private key.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.fingerprint {
            None => Ok(ServerCertVerified::assertion()),
            Some(want) if *want == sha256_fingerprint(end_entity) => {
                Ok(ServerCertVerified::assertion())
            }
            Some(want) => Err(rustls::Error::General(format!(
                "server certificate fingerprint {} does not match the pinned {want}",
                sha256_fingerprint(end_entity)
            ))),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
