//! A private CA for https peers on loopback: the CA's certificate and one for `localhost` it
//! signed, as PEM files in a folder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub struct PrivateCa {
    /// The CA certificate, to trust.
    pub ca: PathBuf,
    /// `localhost`'s certificate and key, to serve.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.pem`, `localhost-cert.pem` and `localhost-key.pem` into `dir`.
pub fn private_ca(dir: &Path) -> PrivateCa {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let files = PrivateCa {
        ca: dir.join("ca.pem"),
        cert: dir.join("localhost-cert.pem"),
        key: dir.join("localhost-key.pem"),
    };
    std::fs::write(&files.ca, ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}
