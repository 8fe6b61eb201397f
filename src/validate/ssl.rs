//! Safety rules of `SSLCertificate` content (SPEC §3): the certificate parses, the key is its
//! key, it is valid now and covers every listed domain.
//!
//! Key matching derives the public key from the private key with the TLS stack's own crypto
//! provider (aws-lc, through rustls: RSA in PKCS#1 or PKCS#8, ECDSA P-256/P-384/P-521 in
//! SEC1 or PKCS#8, Ed25519 in PKCS#8) and compares its algorithm and key bits with the
//! certificate's SubjectPublicKeyInfo. A key the provider cannot load is an error: the edges
//! use the same provider and could not serve it either.

use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::{Pem, parse_x509_pem};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::ValidationReport;
use super::rules::{self, shorten, strings};
use crate::model::Timestamp;
use crate::secrets::SecretBox;

const DEFAULT_RENEWAL_DAYS: i64 = 30;
const SECONDS_PER_DAY: i64 = 86_400;

pub(crate) fn check(content: &Value, now: Timestamp, report: &mut ValidationReport) {
    check_domain_names(content, report);
    let renewal_days = match content.get("renewalDays").and_then(Value::as_i64) {
        Some(days) if !(1..=365).contains(&days) => {
            report.error(
                "content.renewalDays",
                "renewalDays must be between 1 and 365",
            );
            DEFAULT_RENEWAL_DAYS
        }
        Some(days) => days,
        None => DEFAULT_RENEWAL_DAYS,
    };
    check_chain(content.get("certificateChain"), report);

    let Some(text) = content.get("certificate").and_then(Value::as_str) else {
        return;
    };
    let pem = match parse_x509_pem(text.trim_start().as_bytes()) {
        Ok((_, pem)) if pem.label == "CERTIFICATE" => pem,
        Ok((_, pem)) => {
            report.error(
                "content.certificate",
                format!(
                    "Expected a PEM CERTIFICATE block, found '{}'",
                    shorten(&pem.label)
                ),
            );
            return;
        }
        Err(_) => {
            report.error("content.certificate", "Certificate is not valid PEM");
            return;
        }
    };
    let certificate = match pem.parse_x509() {
        Ok(certificate) => certificate,
        Err(error) => {
            report.error(
                "content.certificate",
                format!("Certificate could not be parsed: {error}"),
            );
            return;
        }
    };
    check_validity(&certificate, now, renewal_days, report);
    check_coverage(&certificate, content, report);
    check_key(&certificate, content.get("privateKey"), report);
}

/// When the certificate of `SSLCertificate` content expires (seconds since the epoch); `None`
/// when it does not parse.
pub fn expires_at(content: &Value) -> Option<i64> {
    let text = content.get("certificate").and_then(Value::as_str)?;
    let (_, pem) = parse_x509_pem(text.trim_start().as_bytes()).ok()?;
    let certificate = pem.parse_x509().ok()?;
    Some(certificate.validity().not_after.timestamp())
}

fn check_domain_names(content: &Value, report: &mut ValidationReport) {
    if content
        .get("domains")
        .and_then(Value::as_array)
        .is_some_and(|domains| domains.is_empty())
    {
        report.error("content.domains", "At least one domain is required");
    }
    for (index, domain) in strings(content.get("domains")) {
        if !is_domain(domain) {
            report.error(
                format!("content.domains.{index}"),
                format!("'{}' is not a valid domain name", shorten(domain)),
            );
        }
    }
}

/// A DNS name, or a wildcard over one label of one (`*.example.com`).
fn is_domain(domain: &str) -> bool {
    let bare = domain.strip_prefix("*.").unwrap_or(domain);
    rules::is_hostname(bare) && !bare.contains('*')
}

fn rfc3339(seconds: i64) -> String {
    Timestamp::from_millis(seconds.saturating_mul(1000)).to_rfc3339()
}

fn check_validity(
    certificate: &X509Certificate<'_>,
    now: Timestamp,
    renewal_days: i64,
    report: &mut ValidationReport,
) {
    let now_seconds = now.millis().div_euclid(1000);
    let validity = certificate.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    if not_after < now_seconds {
        report.error(
            "content.certificate",
            format!("Certificate expired on {}", rfc3339(not_after)),
        );
    } else if not_before > now_seconds {
        report.error(
            "content.certificate",
            format!("Certificate is not valid before {}", rfc3339(not_before)),
        );
    } else if not_after - now_seconds < renewal_days * SECONDS_PER_DAY {
        let days_left = (not_after - now_seconds) / SECONDS_PER_DAY;
        report.warning(
            "content.certificate",
            format!(
                "Certificate expires in {days_left} days (on {}), within the renewal window of {renewal_days} days",
                rfc3339(not_after)
            ),
        );
    }
}

/// The DNS names the certificate is valid for: its SAN DNS names, or its subject CN when it
/// has no SAN DNS name at all (RFC 6125 §6.4.4).
fn certificate_names(certificate: &X509Certificate<'_>) -> Vec<String> {
    let mut names: Vec<String> = match certificate.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(normalize(dns)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = certificate
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(normalize)
            .collect();
    }
    names
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether the certificate name covers `domain`; `*.example.com` covers exactly one label
/// (`a.example.com`, not `example.com` nor `a.b.example.com`), and a wildcard domain is
/// covered only by the same wildcard.
pub(crate) fn covers(name: &str, domain: &str) -> bool {
    if name == domain {
        return true;
    }
    match name.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && !domain.starts_with('*') => domain
            .strip_suffix(suffix)
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        _ => false,
    }
}

fn check_coverage(
    certificate: &X509Certificate<'_>,
    content: &Value,
    report: &mut ValidationReport,
) {
    let names = certificate_names(certificate);
    // Malformed names were reported already; saying they are not covered adds nothing.
    for (index, domain) in strings(content.get("domains")).filter(|(_, d)| is_domain(d)) {
        let domain_normalized = normalize(domain);
        if !names.iter().any(|name| covers(name, &domain_normalized)) {
            report.error(
                format!("content.domains.{index}"),
                format!(
                    "Domain '{}' is not covered by the certificate (names: {})",
                    shorten(domain),
                    shorten(&names.join(", "))
                ),
            );
        }
    }
}

fn check_key(
    certificate: &X509Certificate<'_>,
    key: Option<&Value>,
    report: &mut ValidationReport,
) {
    let Some(text) = key.and_then(Value::as_str) else {
        return;
    };
    if SecretBox::is_sealed(text) {
        // Sealed keys were checked before they were sealed.
        return;
    }
    if text == "[REDACTED]" {
        report.error(
            "content.privateKey",
            "Private key is redacted; submit the PEM private key",
        );
        return;
    }
    let Ok(der) = PrivateKeyDer::from_pem_slice(text.as_bytes()) else {
        report.error(
            "content.privateKey",
            "Private key is not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
        );
        return;
    };
    let Ok(signing_key) = any_supported_type(&der) else {
        report.error(
            "content.privateKey",
            "Private key could not be loaded (supported: RSA, ECDSA P-256/P-384/P-521, Ed25519)",
        );
        return;
    };
    let Some(spki) = signing_key.public_key() else {
        report.error(
            "content.privateKey",
            "The public key of this private key cannot be derived",
        );
        return;
    };
    let matches = SubjectPublicKeyInfo::from_der(spki.as_ref()).is_ok_and(|(_, derived)| {
        let expected = certificate.public_key();
        derived.algorithm.algorithm == expected.algorithm.algorithm
            && derived.subject_public_key.data == expected.subject_public_key.data
    });
    if !matches {
        report.error(
            "content.privateKey",
            "Private key does not match the certificate's public key",
        );
    }
}

fn check_chain(chain: Option<&Value>, report: &mut ValidationReport) {
    match chain {
        Some(Value::String(text)) => check_chain_text("content.certificateChain", text, report),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                if let Some(text) = item.as_str() {
                    check_chain_text(&format!("content.certificateChain.{index}"), text, report);
                }
            }
        }
        _ => {}
    }
}

fn check_chain_text(field: &str, text: &str, report: &mut ValidationReport) {
    if text.trim().is_empty() {
        return;
    }
    let mut blocks = 0usize;
    for (number, block) in Pem::iter_from_buffer(text.as_bytes()).enumerate() {
        blocks += 1;
        let parsed = block
            .ok()
            .filter(|pem| pem.label == "CERTIFICATE")
            .is_some_and(|pem| pem.parse_x509().is_ok());
        if !parsed {
            report.error(
                field,
                format!(
                    "Certificate chain block {} is not a valid PEM certificate",
                    number + 1
                ),
            );
            return;
        }
    }
    if blocks == 0 {
        report.error(field, "Certificate chain holds no PEM certificate");
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        CertificateParams, DnType, KeyPair, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
        SignatureAlgorithm, date_time_ymd,
    };
    use serde_json::{Value, json};

    use super::covers;
    use crate::model::ConfigType;
    use crate::validate::tests::{Expect, check, with};

    /// A self-signed certificate for `names` valid between the two dates, and its key.
    fn mint(
        names: &[&str],
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
        algorithm: Option<&'static SignatureAlgorithm>,
    ) -> (String, String) {
        let key = match algorithm {
            Some(algorithm) => KeyPair::generate_for(algorithm).unwrap(),
            None => KeyPair::generate().unwrap(),
        };
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn content(domains: &[&str], cert: &(String, String)) -> Value {
        json!({
            "domains": domains,
            "certificate": cert.0,
            "privateKey": cert.1,
            "autoRenew": true,
            "renewalDays": 30,
            "provider": "letsencrypt"
        })
    }

    const VALID_FROM: (i32, u8, u8) = (2025, 1, 1);
    const VALID_UNTIL: (i32, u8, u8) = (2027, 1, 1);

    #[test]
    fn ssl_certificates() {
        let good = mint(
            &["example.com", "*.example.com"],
            VALID_FROM,
            VALID_UNTIL,
            None,
        );
        let other = mint(&["example.com"], VALID_FROM, VALID_UNTIL, None);
        let expired = mint(&["example.com"], (2024, 1, 1), (2025, 12, 1), None);
        let future = mint(&["example.com"], (2026, 6, 1), VALID_UNTIL, None);
        let near = mint(&["example.com"], VALID_FROM, (2026, 1, 15), None);
        let ed25519 = mint(
            &["example.com"],
            VALID_FROM,
            VALID_UNTIL,
            Some(&PKCS_ED25519),
        );
        let p384 = mint(
            &["example.com"],
            VALID_FROM,
            VALID_UNTIL,
            Some(&PKCS_ECDSA_P384_SHA384),
        );
        let base = content(&["example.com", "www.example.com"], &good);
        let chain = format!("{}{}", other.0, good.0);

        let cases = [
            (base.clone(), Expect::Valid),
            (content(&["example.com"], &ed25519), Expect::Valid),
            (content(&["example.com"], &p384), Expect::Valid),
            (
                with(&base, "/certificateChain", json!(chain)),
                Expect::Valid,
            ),
            (
                with(&base, "/certificateChain", json!([other.0])),
                Expect::Valid,
            ),
            (
                with(&base, "/domains", json!(["*.example.com"])),
                Expect::Valid,
            ),
            (
                with(&base, "/domains", json!(["a.b.example.com"])),
                Expect::Error("content.domains.0", "not covered by the certificate"),
            ),
            (
                with(&base, "/domains/1", json!("example.org")),
                Expect::Error("content.domains.1", "'example.org' is not covered"),
            ),
            (
                with(&base, "/domains", json!([])),
                Expect::Error("content.domains", "At least one domain"),
            ),
            (
                with(&base, "/domains/1", json!("bad domain")),
                Expect::Error("content.domains.1", "not a valid domain name"),
            ),
            (
                with(&base, "/privateKey", json!(other.1)),
                Expect::Error("content.privateKey", "does not match the certificate"),
            ),
            (
                with(
                    &base,
                    "/privateKey",
                    json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                ),
                Expect::Error("content.privateKey", "could not be loaded"),
            ),
            (
                with(&base, "/privateKey", json!("not a key")),
                Expect::Error("content.privateKey", "not a PEM private key"),
            ),
            (
                with(&base, "/privateKey", json!("[REDACTED]")),
                Expect::Error("content.privateKey", "redacted"),
            ),
            (
                with(&base, "/certificate", json!("garbage")),
                Expect::Error("content.certificate", "not valid PEM"),
            ),
            (
                with(&base, "/certificate", json!(good.1)),
                Expect::Error("content.certificate", "Expected a PEM CERTIFICATE block"),
            ),
            (
                with(
                    &base,
                    "/certificate",
                    json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                ),
                Expect::Error("content.certificate", "could not be parsed"),
            ),
            (
                content(&["example.com"], &expired),
                Expect::Error("content.certificate", "Certificate expired on 2025-12-01"),
            ),
            (
                content(&["example.com"], &future),
                Expect::Error("content.certificate", "not valid before 2026-06-01"),
            ),
            (
                content(&["example.com"], &near),
                Expect::Warning("content.certificate", "expires in 14 days"),
            ),
            (
                with(&content(&["example.com"], &near), "/renewalDays", json!(7)),
                Expect::Valid,
            ),
            (
                with(&base, "/renewalDays", json!(0)),
                Expect::Error("content.renewalDays", "between 1 and 365"),
            ),
            (
                with(&base, "/certificateChain", json!("junk")),
                Expect::Error("content.certificateChain", "no PEM certificate"),
            ),
            (
                with(&base, "/certificateChain", json!([good.1])),
                Expect::Error(
                    "content.certificateChain.0",
                    "block 1 is not a valid PEM certificate",
                ),
            ),
            (
                with(&base, "/privateKey", Value::Null),
                Expect::Error("content.privateKey", "'privateKey' is required"),
            ),
        ];
        for (content, expected) in cases {
            check(ConfigType::SslCertificate, &content, expected);
        }
    }

    #[test]
    fn rsa_keys_and_common_names() {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "legacy.example.net");
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let rsa = (cert.pem(), key.serialize_pem());
        check(
            ConfigType::SslCertificate,
            &content(&["legacy.example.net"], &rsa),
            Expect::Valid,
        );
        check(
            ConfigType::SslCertificate,
            &content(&["other.example.net"], &rsa),
            Expect::Error("content.domains.0", "not covered"),
        );
    }

    #[test]
    fn expiry_is_read_from_the_certificate() {
        let cert = mint(&["example.com"], (2025, 1, 1), (2027, 1, 1), None);
        // 2027-01-01T00:00:00Z.
        assert_eq!(
            super::expires_at(&content(&["example.com"], &cert)),
            Some(1_798_761_600)
        );
        assert_eq!(
            super::expires_at(&json!({"certificate": "not a PEM"})),
            None
        );
        assert_eq!(super::expires_at(&json!({})), None);
    }

    #[test]
    fn sealed_keys_are_not_checked() {
        let good = mint(&["example.com"], VALID_FROM, VALID_UNTIL, None);
        let mut sealed = content(&["example.com"], &good);
        crate::validate::seal_secrets(
            ConfigType::SslCertificate,
            &mut sealed,
            &crate::secrets::SecretBox::new([1; 32]),
        );
        check(ConfigType::SslCertificate, &sealed, Expect::Valid);
    }

    #[test]
    fn wildcard_semantics() {
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "*.a.example.com"));
        assert!(!covers("a.example.com", "b.example.com"));
    }
}
