//! TLS: PEM loading, the server and upstream-client configurations, and the self-signed
//! development certificate made on first start.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("cannot read private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("cannot write development certificate to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate development certificate: {0}")]
    Generate(String),
    #[error("certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
}

/// Installs aws-lc-rs as the process's crypto provider; later calls are no-ops.
pub fn install_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The listener's configuration: TLS 1.3 and 1.2 only, ALPN h2 then http/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_provider();
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let mut config = rustls::ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Makes a self-signed certificate for localhost at `cert`/`key` unless both exist.
/// Returns true when it made one.
pub fn ensure_dev_certificate(cert: &Path, key: &Path) -> Result<bool, TlsError> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    for path in [cert, key] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    write_private(key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, generated.cert.pem()).map_err(|source| TlsError::Write {
        path: cert.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// The configuration for `https://` upstreams: webpki roots plus any extra CA file.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(TlsError::Config)?;
        }
    }
    // ALPN stays empty here: the connector sets it from the protocols it enables (http/1.1).
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("certs/dev-cert.pem");
        let key = dir.path().join("certs/dev-key.pem");
        assert!(ensure_dev_certificate(&cert, &key).unwrap());
        let first = std::fs::read(&cert).unwrap();
        assert!(!ensure_dev_certificate(&cert, &key).unwrap());
        assert_eq!(std::fs::read(&cert).unwrap(), first, "reused, not remade");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn missing_certificate_is_a_clear_error() {
        let e = server_config(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        );
        assert!(matches!(e, Err(TlsError::Cert { .. })));
    }
}
