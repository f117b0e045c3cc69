//! TLS client settings for a broker of its own: the daemon's `[broker] tls`
//! keys and the command-line clients' `--tls` flags both end here. The only
//! code in wasmpay that knows rustls; [`crate::mqtt`] and
//! [`crate::cli::client`] hand the result to rumqttc.
//!
//! Files are read and parsed in full before anything connects, so a wrong
//! path or a file that is not PEM is a configuration error naming its key,
//! not a reconnect loop. Certificates are checked against the CA bundle by
//! the handshake itself: a broker whose certificate the bundle does not
//! vouch for is refused on every attempt, and the daemon's `/health` says
//! why.
//!
//! The cryptography is rustls with ring, chosen explicitly rather than
//! rustls's process-wide default, so another crate enabling a second
//! provider cannot make the choice ambiguous. The `tls` cargo feature
//! (on by default) builds it; without it [`TlsFiles::load`] refuses.

use std::path::PathBuf;

/// Where a TLS client finds the certificates it trusts and, for a broker
/// that asks for one, its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of the CA certificates that may sign the broker's
    /// certificate. `None` trusts the platform's CA certificates.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain presented to a broker that requires client
    /// certificates (mutual TLS); set together with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

/// Which setting a [`TlsProblem`] is about, for the caller to name it in
/// its own terms (a config key, a command-line flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSetting {
    /// TLS as a whole: the switch itself.
    Enabled,
    Ca,
    ClientCert,
    ClientKey,
}

/// One thing wrong with the TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem {
    pub setting: TlsSetting,
    pub reason: String,
}

impl TlsProblem {
    fn new(setting: TlsSetting, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

/// Why [`TlsFiles::load`] refuses in a binary built without the `tls`
/// feature.
pub const BUILT_WITHOUT_TLS: &str =
    "this wasmpay was built without TLS (cargo feature `tls`): use a build with it, or plain TCP";

/// A TLS client configuration, loaded and checked, ready to connect with.
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct TlsClient(std::sync::Arc<rustls::ClientConfig>);

/// Without the `tls` feature no [`TlsClient`] can exist.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub enum TlsClient {}

#[cfg(feature = "tls")]
impl TlsClient {
    /// The rustls configuration, for the MQTT client's transport.
    pub(crate) fn rustls_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        self.0.clone()
    }
}

impl TlsFiles {
    /// Reads and checks every file, reporting every problem at once.
    pub fn load(&self) -> Result<TlsClient, Vec<TlsProblem>> {
        let mut problems = Vec::new();
        if self.client_cert.is_some() != self.client_key.is_some() {
            let (missing, present) = if self.client_cert.is_none() {
                (TlsSetting::ClientCert, "key")
            } else {
                (TlsSetting::ClientKey, "certificate")
            };
            problems.push(TlsProblem::new(
                missing,
                format!("missing: a client {present} is set, and the two go together"),
            ));
        }
        #[cfg(feature = "tls")]
        {
            let client = enabled::load(self, &mut problems);
            match client {
                Some(client) if problems.is_empty() => Ok(client),
                _ => Err(problems),
            }
        }
        #[cfg(not(feature = "tls"))]
        {
            problems.push(TlsProblem::new(TlsSetting::Enabled, BUILT_WITHOUT_TLS));
            Err(problems)
        }
    }
}

#[cfg(feature = "tls")]
mod enabled {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    use super::{TlsClient, TlsFiles, TlsProblem, TlsSetting};

    /// Builds the client configuration; `None` if a problem was recorded.
    pub(super) fn load(files: &TlsFiles, problems: &mut Vec<TlsProblem>) -> Option<TlsClient> {
        let mut report = |setting, reason| problems.push(TlsProblem::new(setting, reason));
        let roots = match &files.ca {
            Some(path) => ca_file(path),
            None => platform_roots(),
        }
        .map_err(|reason| report(TlsSetting::Ca, reason))
        .ok();
        let identity = match (&files.client_cert, &files.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)
                    .map_err(|reason| report(TlsSetting::ClientCert, reason))
                    .ok();
                let key = private_key(key)
                    .map_err(|reason| report(TlsSetting::ClientKey, reason))
                    .ok();
                chain.zip(key)
            }
            _ => None,
        };
        if !problems.is_empty() {
            return None;
        }
        let roots = roots?;

        // Ring, named here, whatever else in the build enables another
        // provider; rustls's safe defaults for protocol versions (1.2, 1.3).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots),
            Err(e) => {
                problems.push(TlsProblem::new(TlsSetting::Enabled, e.to_string()));
                return None;
            }
        };
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => match builder.with_client_auth_cert(chain, key) {
                Ok(config) => config,
                Err(e) => {
                    problems.push(TlsProblem::new(
                        TlsSetting::ClientKey,
                        format!("does not go with the client certificate: {e}"),
                    ));
                    return None;
                }
            },
        };
        Some(TlsClient(Arc::new(config)))
    }

    fn read(path: &Path) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("`{}`: {e}", path.display()))
    }

    /// Every certificate in a PEM file; at least one.
    fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = read(path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("`{}`: not valid PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "`{}`: no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)",
                path.display()
            ));
        }
        Ok(certs)
    }

    fn ca_file(path: &Path) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for (i, cert) in certificates(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| {
                format!(
                    "`{}`: certificate {} is not a usable CA certificate: {e}",
                    path.display(),
                    i + 1
                )
            })?;
        }
        Ok(roots)
    }

    fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
        let pem = read(path)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            format!(
                "`{}`: no private key in it (expected a PEM PKCS#8, PKCS#1 or SEC1 key): {e}",
                path.display()
            )
        })
    }

    /// The operating system's trusted CA certificates.
    fn platform_roots() -> Result<RootCertStore, String> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(String::new, |e| format!(" ({e})"));
            return Err(format!(
                "not set, and no CA certificates were found on this machine{why}: set it to the PEM bundle of the broker's CA"
            ));
        }
        Ok(roots)
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    fn problems(files: &TlsFiles) -> Vec<TlsProblem> {
        files.load().expect_err("refused")
    }

    #[test]
    fn a_missing_or_non_pem_file_is_refused_naming_its_setting() {
        let dir = tempfile::tempdir().expect("temp dir");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let files = TlsFiles {
            ca: Some(not_pem),
            client_cert: Some(dir.path().join("missing.pem")),
            client_key: Some(dir.path().join("missing.key")),
        };
        let found = problems(&files);
        let settings: Vec<TlsSetting> = found.iter().map(|p| p.setting).collect();
        assert_eq!(
            settings,
            [
                TlsSetting::Ca,
                TlsSetting::ClientCert,
                TlsSetting::ClientKey
            ],
            "{found:#?}"
        );
        assert!(found[0].reason.contains("no certificate"), "{found:#?}");
        assert!(found[1].reason.contains("missing.pem"), "{found:#?}");
    }

    /// A CA's certificate and a leaf it signed, with the leaf's key, as PEM.
    fn ca_and_leaf() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["wasmpay-host".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");
        (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
    }

    #[test]
    fn a_ca_file_and_a_matching_client_certificate_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, cert, key) = ca_and_leaf();
        let path = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).expect("write");
            Some(path)
        };
        let files = TlsFiles {
            ca: path("ca.pem", &ca),
            client_cert: path("client.pem", &cert),
            client_key: path("client.key", &key),
        };
        files.load().expect("loads");

        // Another key than the certificate's is refused, naming the key.
        let (_, _, other_key) = ca_and_leaf();
        let mismatched = TlsFiles {
            client_key: path("other.key", &other_key),
            ..files
        };
        let found = problems(&mismatched);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].setting, TlsSetting::ClientKey, "{found:#?}");
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() {
        let files = TlsFiles {
            client_cert: Some("client.pem".into()),
            ..TlsFiles::default()
        };
        let found = problems(&files);
        assert!(
            found
                .iter()
                .any(|p| p.setting == TlsSetting::ClientKey && p.reason.contains("missing")),
            "{found:#?}"
        );
    }
}
