//! Store benchmarks: a durable command commit (fsync included), a configuration read, and a
//! validated create (conflict candidates from the pattern index, validation, durable commit)
//! with 10 and with 10,000 configurations already stored: the catalogue must not slow a
//! create down (issue #12, goal 3: within 2x). The create is measured twice: as the steps
//! the use case takes, and through the use case itself (`service::Configurations::create`,
//! what `POST /configurations` calls once the body is parsed: secrets sealed, ids made,
//! the store's preconditions in the write transaction).

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use edgeplane::model::{ConfigStatus, ConfigType, Configuration, ConfigurationVersion, Timestamp};
use edgeplane::secrets::SecretBox;
use edgeplane::service::configurations::NewConfiguration;
use edgeplane::service::{Caller, Configurations};
use edgeplane::store::{Command, CommandEnvelope, Store};
use edgeplane::validate::{OtherConfiguration, Validator};
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

/// What the create use case does: candidates through the index, validation against them,
/// the durable command.
fn validated_create(store: &Store, validator: &Validator, n: u64) {
    let command = create_command(n);
    let Command::CreateConfiguration { configuration, .. } = &command.command else {
        unreachable!()
    };
    let candidates = store
        .reader()
        .expect("reader")
        .pattern_candidates(configuration.config_type, &configuration.content)
        .expect("candidates");
    let others: Vec<OtherConfiguration<'_>> = candidates
        .iter()
        .map(|c| OtherConfiguration {
            configuration_id: &c.configuration_id,
            name: &c.name,
            config_type: c.config_type,
            content: &c.content,
        })
        .collect();
    let report = validator.validate(
        configuration.config_type,
        &configuration.content,
        &others,
        Timestamp::now(),
    );
    assert!(report.is_valid(), "{report:?}");
    store.apply_blocking(command).expect("apply");
}

fn catalogue_benches(c: &mut Criterion) {
    let validator = Validator::new();
    let mut group = c.benchmark_group("store/validated_create");
    for stored in [10u64, 10_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let catalogue: Vec<CommandEnvelope> = (0..stored).map(create_command).collect();
        for result in store.apply_batch_blocking(&catalogue) {
            result.expect("stored");
        }
        let mut n = stored;
        group.bench_function(format!("{stored}-stored"), |b| {
            b.iter(|| {
                n += 1;
                validated_create(&store, &validator, n)
            })
        });
    }
    group.finish();
}

/// A cache rule of its own path, as a caller would send it.
fn new_configuration(n: u64) -> NewConfiguration {
    NewConfiguration {
        name: format!("use-case-{n}"),
        config_type: ConfigType::CacheRule,
        description: String::new(),
        content: json!({"pathPattern": format!("/use-case/{n}/*"), "ttl": 3600, "cacheControl": "public, max-age=3600"}),
        schema_version: "1.0".into(),
        tags: Vec::new(),
        metadata: BTreeMap::new(),
    }
}

fn use_case_benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let caller = Caller::new("bench", "");
    let mut group = c.benchmark_group("service/create_configuration");
    for stored in [10u64, 10_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let catalogue: Vec<CommandEnvelope> = (0..stored).map(create_command).collect();
        for result in store.apply_batch_blocking(&catalogue) {
            result.expect("stored");
        }
        let configurations = Configurations::new(
            store,
            SecretBox::new([7; 32]),
            std::sync::Arc::new(Validator::new()),
            false,
        );
        let mut n = stored;
        group.bench_function(format!("{stored}-stored"), |b| {
            b.iter(|| {
                n += 1;
                runtime
                    .block_on(configurations.create(&caller, new_configuration(n)))
                    .expect("created")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = store_benches, catalogue_benches, use_case_benches
}
criterion_main!(benches);
