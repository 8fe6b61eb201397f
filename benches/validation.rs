//! Validation cost per configuration type (SPEC §11: p99 under 1 ms for a typical rule).
//!
//! Criterion gives the typical time; a second pass times single validations to report the
//! p50 and p99 the spec's target is stated in.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use edgeplane::model::{ConfigType, Timestamp};
use edgeplane::validate::{OtherConfiguration, Validator};
use serde_json::{Value, json};

fn typical_contents() -> Vec<(ConfigType, Value)> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["example.com".to_owned(), "*.example.com".to_owned()])
            .expect("params");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let certificate = params.self_signed(&key).expect("certificate");
    vec![
        (
            ConfigType::CacheRule,
            json!({
                "pathPattern": "/static/*", "ttl": 86400, "cacheControl": "public, max-age=86400",
                "cacheKey": ["$uri", "$args", "$http_accept_encoding"], "varyHeaders": ["Accept-Encoding"],
                "purgePatterns": ["/static/**"], "bypassConditions": {"cookies": ["session"], "queryParams": ["nocache"]}
            }),
        ),
        (
            ConfigType::RoutingRule,
            json!({
                "pathPattern": "/api/**",
                "origins": [
                    {"name": "primary", "endpoint": "https://origin-1.example.com", "weight": 70, "priority": 1},
                    {"name": "secondary", "endpoint": "https://origin-2.example.com", "weight": 30, "priority": 2}
                ],
                "failoverPolicy": {"retryAttempts": 3, "retryDelay": "500ms", "failoverThreshold": 5, "circuitBreakerTimeout": "30s"},
                "pathRewrite": {"from": "^/api/v1/(.*)$", "to": "/v1/$1"}
            }),
        ),
        (
            ConfigType::SecurityRule,
            json!({
                "pathPattern": "/**",
                "waf": {"enabled": true, "rules": ["OWASP-CRS-4.0"], "mode": "block"},
                "rateLimit": {"enabled": true, "limit": 1000, "window": "60s", "key": "ip"},
                "geoBlocking": {"enabled": true, "mode": "blocklist", "countries": ["KP", "IR", "SY"]},
                "ipFiltering": {"allowlist": ["10.0.0.0/8", "192.168.0.0/16"], "denylist": ["203.0.113.0/24", "2001:db8::/32"]}
            }),
        ),
        (
            ConfigType::SslCertificate,
            json!({
                "domains": ["example.com", "www.example.com"],
                "certificate": certificate.pem(),
                "privateKey": key.serialize_pem(),
                "autoRenew": true, "renewalDays": 30, "provider": "letsencrypt"
            }),
        ),
        (
            ConfigType::ResponseModification,
            json!({
                "pathPattern": "/**",
                "addHeaders": {"Strict-Transport-Security": "max-age=31536000", "X-Frame-Options": "DENY"},
                "removeHeaders": ["Server"],
                "compression": {"enabled": true, "algorithms": ["br", "gzip"], "minSize": 1024},
                "cors": {"enabled": true, "allowOrigins": ["https://app.example.com"], "allowMethods": ["GET", "POST"],
                         "allowHeaders": ["Content-Type"], "allowCredentials": true, "maxAge": 600}
            }),
        ),
    ]
}

/// 100 stored cache rules on distinct paths, for the cost of the conflict layer.
fn stored_cache_rules() -> Vec<(String, Value)> {
    (0..100)
        .map(|i| {
            (
                format!("config-{i}"),
                json!({"pathPattern": format!("/section-{i}/**"), "ttl": 60, "cacheControl": "public"}),
            )
        })
        .collect()
}

fn main() {
    let validator = Validator::new();
    let now = Timestamp::from_millis(1_767_225_600_000);
    let contents = typical_contents();
    let stored = stored_cache_rules();
    let others: Vec<OtherConfiguration<'_>> = stored
        .iter()
        .map(|(id, content)| OtherConfiguration {
            configuration_id: id,
            name: id,
            config_type: ConfigType::CacheRule,
            content,
        })
        .collect();
    for (config_type, content) in &contents {
        let report = validator.validate(*config_type, content, &[], now);
        assert!(report.is_valid(), "{config_type}: {report:?}");
    }

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = criterion.benchmark_group("validate");
    for (config_type, content) in &contents {
        group.bench_function(config_type.as_str(), |b| {
            b.iter(|| validator.validate(*config_type, black_box(content), &[], now))
        });
    }
    let cache_rule = &contents[0].1;
    group.bench_function("CacheRule/100-others", |b| {
        b.iter(|| validator.validate(ConfigType::CacheRule, black_box(cache_rule), &others, now))
    });
    group.finish();

    println!("\nsingle validations, 2000 runs each:");
    for (config_type, content) in &contents {
        let mut samples: Vec<Duration> = (0..2000)
            .map(|_| {
                let start = Instant::now();
                black_box(validator.validate(*config_type, black_box(content), &[], now));
                start.elapsed()
            })
            .collect();
        samples.sort();
        println!(
            "{:<22} p50 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
            config_type.as_str(),
            samples[samples.len() / 2],
            samples[samples.len() * 99 / 100],
            samples[samples.len() - 1]
        );
    }
    criterion.final_summary();
}
