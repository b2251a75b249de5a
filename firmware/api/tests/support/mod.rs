//! The test PKI: a CA, certificates it signs for the device (server) or an
//! operator (client), and the files the API reads them from.

#![allow(dead_code, clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    Ca { cert: p.self_signed(&key).unwrap(), key }
}

/// A certificate signed by `ca` (PEM cert, PEM key): for the device (server)
/// or an operator (client), for `localhost` and 127.0.0.1.
pub fn leaf(ca: &Ca, name: &str, server: bool, expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.extended_key_usages =
        vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An API configuration on 127.0.0.1 (any port) for a device certificate
/// from `ca`, which also signs the operators, with the files in `dir`;
/// small upload limits and no mDNS.
pub fn api_config(dir: &Path, ca: &Ca) -> trellis_api::ApiConfig {
    let (cert, key) = leaf(ca, "trellis-twin", true, false);
    let mut config = trellis_api::ApiConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        write(dir, "ca.pem", &ca.cert.pem()),
        write(dir, "device.pem", &cert),
        write(dir, "device.key", &key),
    );
    config.max_app_bytes = 1 << 20;
    config.max_bundle_bytes = 1 << 20;
    config.announce = false;
    config
}
