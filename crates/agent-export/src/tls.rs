//! One rustls client configuration (ring provider) for both transports:
//! server roots from `--tls-ca` or the system store, an optional client
//! certificate for mutual TLS, and `--insecure-skip-verify`, which accepts
//! any server certificate (signatures of the handshake are still checked,
//! so the session is encrypted, but anyone on the path can impersonate the
//! server: test setups only).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// What the TLS configuration is built from.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub insecure_skip_verify: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client configuration; `alpn` is `h2` for gRPC, `http/1.1` for
/// OTLP/HTTP.
pub fn client_config(o: &TlsOptions, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if o.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match o.ca {
            Some(p) => {
                let certs = read_certs(p)?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| format!("tls-ca {}: {e}", p.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(
                        "no system CA certificates found: give --tls-ca with the collector's CA"
                            .into(),
                    );
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (o.cert, o.key) {
        (Some(c), Some(k)) => {
            let chain = read_certs(c)?;
            let key = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| format!("tls-key {}: {e}", k.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls-cert/tls-key: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("tls-cert and tls-key go together".into()),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", p.display()));
    }
    Ok(certs)
}

/// `--insecure-skip-verify`: any certificate, any name; handshake
/// signatures are still verified with the provider's algorithms.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("agent-export-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(
            &TlsOptions {
                ca: Some(&empty),
                ..TlsOptions::default()
            },
            &[b"h2"],
        )
        .unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let missing = dir.join("missing.pem");
        let e = client_config(
            &TlsOptions {
                ca: Some(&missing),
                ..TlsOptions::default()
            },
            &[b"h2"],
        )
        .unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let c = client_config(
            &TlsOptions {
                insecure_skip_verify: true,
                ..TlsOptions::default()
            },
            &[b"h2"],
        )
        .unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
