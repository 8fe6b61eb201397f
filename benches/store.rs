//! Store benchmarks: a durable command commit (fsync included) and a configuration read.

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use edgeplane::model::{ConfigStatus, ConfigType, Configuration, ConfigurationVersion, Timestamp};
use edgeplane::store::{Command, CommandEnvelope, Store};
use serde_json::json;

fn create_command(n: u64) -> CommandEnvelope {
    let id = format!("config-bench-{n}");
    let now = Timestamp::now();
    let content = json!({"pathPattern": format!("/assets/{n}/*"), "ttl": 3600, "cacheControl": "public, max-age=3600"});
    let configuration = Configuration {
        configuration_id: id.clone(),
        name: format!("bench-{n}"),
        config_type: ConfigType::CacheRule,
        description: String::new(),
        content: content.clone(),
        schema_version: "1.0".into(),
        version: "1.0.0".into(),
        tags: Vec::new(),
        status: ConfigStatus::Draft,
        created_by: "bench".into(),
        created_at: now,
        updated_at: now,
        approved_by: None,
        approved_at: None,
        is_deployed: false,
        deployed_locations: Vec::new(),
        metadata: BTreeMap::new(),
    };
    let version = ConfigurationVersion {
        version_id: format!("ver-bench-{n}"),
        configuration_id: id,
        version: "1.0.0".into(),
        content,
        schema_version: "1.0".into(),
        change_description: "bench".into(),
        created_by: "bench".into(),
        created_at: now,
        status: ConfigStatus::Draft,
        approved_by: None,
        approved_at: None,
        approval_notes: None,
        is_deployed: false,
        metadata: BTreeMap::new(),
        tags: Vec::new(),
    };
    CommandEnvelope::new(
        "bench",
        "",
        Command::CreateConfiguration {
            configuration,
            version,
        },
    )
}

fn store_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    let mut n = 0u64;
    c.bench_function("store/durable_create_configuration", |b| {
        b.iter(|| {
            n += 1;
            store.apply_blocking(create_command(n)).expect("apply")
        })
    });
    c.bench_function("store/read_configuration", |b| {
        b.iter(|| {
            store
                .reader()
                .expect("reader")
                .configuration("config-bench-1")
                .expect("read")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = store_benches
}
criterion_main!(benches);
