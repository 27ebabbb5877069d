//! CachedRegistry: what is cached, for how long, failures not cached, and the on-disk cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use deimos_registry::{
    CachedRegistry, CodecError, CompatibilityLevel, EmbeddedRegistry, MemoryRegistry, RegistryError, SchemaCodec,
    SchemaRegistry, VersionRef,
};

#[tokio::test]
async fn immutable_answers_are_cached_for_good() -> anyhow::Result<()> {
    let cached = CachedRegistry::new(Counting::new(MemoryRegistry::new()));
    let v1 = widget(&[ID]);

    assert_eq!(cached.register("w", &v1).await?, 1);
    assert_eq!(cached.register("w", &v1).await?, 1);
    assert_eq!(cached.inner().calls(), 1, "second register served from the cache");
    // The id learnt from register resolves without a call.
    assert_eq!(cached.schema_by_id(1).await?, v1);
    assert_eq!(cached.inner().calls(), 1);

    let found = cached.lookup("w", &v1).await?;
    assert_eq!(cached.lookup("w", &v1).await?, found);
    assert_eq!(cached.inner().calls(), 2);

    assert_eq!(cached.version("w", 1).await?.id, 1);
    assert_eq!(cached.inner().calls(), 2, "version 1 was learnt from lookup");

    // Ids registered elsewhere are fetched once.
    cached.inner().inner.register("x", &widget(&[ID, NAME_DEFAULT])).await?;
    cached.schema_by_id(2).await?;
    cached.schema_by_id(2).await?;
    assert_eq!(cached.inner().calls(), 3);

    // Listings, compatibility and levels always go through.
    cached.subjects().await?;
    cached.versions("w").await?;
    cached.test_compatibility("w", &v1, VersionRef::Latest).await?;
    cached.compatibility_level(Some("w")).await?;
    cached.set_compatibility_level(None, CompatibilityLevel::Full).await?;
    assert_eq!(cached.inner().calls(), 8);

    cached.clear();
    cached.schema_by_id(2).await?;
    assert_eq!(cached.inner().calls(), 9, "cleared");
    Ok(())
}

#[tokio::test]
async fn latest_is_cached_for_the_ttl() -> anyhow::Result<()> {
    let cached = CachedRegistry::builder(Counting::new(MemoryRegistry::new()))
        .latest_ttl(Duration::from_millis(150))
        .build()?;
    cached.inner().inner.register("w", &widget(&[ID])).await?;

    assert_eq!(cached.latest("w").await?.version, 1);
    assert_eq!(cached.latest("w").await?.version, 1);
    assert_eq!(cached.inner().calls(), 1);

    // A new version registered elsewhere shows up once the TTL expires.
    cached.inner().inner.register("w", &widget(&[ID, NAME_DEFAULT])).await?;
    assert_eq!(cached.latest("w").await?.version, 1, "still cached");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cached.latest("w").await?.version, 2);
    assert_eq!(cached.inner().calls(), 2);

    // Registering through the cache forgets the subject's latest at once.
    cached
        .register("w", &widget(&[ID, NAME_DEFAULT, COLOR_DEFAULT]))
        .await?;
    assert_eq!(cached.latest("w").await?.version, 3);
    Ok(())
}

#[tokio::test]
async fn zero_ttl_disables_latest_caching() -> anyhow::Result<()> {
    let cached = CachedRegistry::builder(Counting::new(MemoryRegistry::new()))
        .latest_ttl(Duration::ZERO)
        .build()?;
    cached.inner().inner.register("w", &widget(&[ID])).await?;
    cached.latest("w").await?;
    cached.latest("w").await?;
    assert_eq!(cached.inner().calls(), 2);
    Ok(())
}

#[tokio::test]
async fn failures_are_not_cached() -> anyhow::Result<()> {
    // Unknown ids are remembered for a while unless told otherwise (see the tests below).
    let cached = CachedRegistry::builder(Counting::new(MemoryRegistry::new()))
        .not_found_ttl(Duration::ZERO)
        .build()?;
    let v1 = widget(&[ID]);

    assert!(matches!(
        cached.schema_by_id(1).await,
        Err(RegistryError::SchemaNotFound { .. })
    ));
    assert!(matches!(
        cached.latest("w").await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    assert!(matches!(
        cached.lookup("w", &v1).await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    cached.inner().set_failing(true);
    assert!(cached.register("w", &v1).await.unwrap_err().is_retryable());
    cached.inner().set_failing(false);

    // Everything now exists: the earlier failures were not remembered.
    cached.inner().inner.register("w", &v1).await?;
    assert_eq!(cached.schema_by_id(1).await?, v1);
    assert_eq!(cached.latest("w").await?.id, 1);
    assert_eq!(cached.lookup("w", &v1).await?.id, 1);
    assert_eq!(cached.register("w", &v1).await?, 1);
    // 4 failed calls, then schema_by_id and latest; lookup and register were answered from what latest taught.
    assert_eq!(cached.inner().calls(), 6);
    Ok(())
}

#[tokio::test]
async fn an_expired_latest_is_served_while_the_registry_is_down() -> anyhow::Result<()> {
    let cached = CachedRegistry::builder(Counting::new(MemoryRegistry::new()))
        .latest_ttl(Duration::from_millis(20))
        .build()?;
    cached.inner().inner.register("w", &widget(&[ID])).await?;
    cached.latest("w").await?;
    tokio::time::sleep(Duration::from_millis(40)).await;
    cached.inner().set_failing(true);
    assert_eq!(cached.latest("w").await?.version, 1);
    // But not a not-found: only unavailability falls back.
    assert!(cached.latest("other").await.is_err());
    Ok(())
}

#[tokio::test]
async fn http_registry_behind_the_cache() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let cached = fast_client(server.url()).build_cached()?;
    let shared: Arc<dyn SchemaRegistry> = Arc::new(cached);
    let v1 = widget(&[ID]);
    assert_eq!(shared.register("w", &v1).await?, 1);
    let after_register = server.request_count();
    for _ in 0..5 {
        assert_eq!(shared.register("w", &v1).await?, 1);
        assert_eq!(shared.schema_by_id(1).await?, v1);
    }
    assert_eq!(server.request_count(), after_register);
    Ok(())
}

#[tokio::test]
async fn disk_cache_survives_a_restart_with_the_registry_down() -> anyhow::Result<()> {
    let dir = TempDir::new("disk");
    let v1 = widget(&[ID]);
    let v2 = widget(&[ID, NAME_DEFAULT]);
    let other = record("Gadget", &[ID]);

    // First life: the registry is up; the service learns ids.
    let server = EmbeddedRegistry::start().await?;
    let url = server.url().to_string();
    server.registry().register("gadgets-value", &other).await?; // id 1, registered by someone else
    {
        let cached = CachedRegistry::builder(fast_client(&url).build()?)
            .disk_cache(&dir.0)
            .build()?;
        assert_eq!(cached.register("w-value", &v1).await?, 2);
        assert_eq!(cached.register("w-value", &v2).await?, 3);
        assert_eq!(cached.lookup("w-value", &v2).await?.version, 2);
        assert_eq!(cached.schema_by_id(1).await?, other);
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir.0)?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["1.json", "2.json", "3.json"],
        "one file per id, no temp files left"
    );
    server.shutdown().await;

    // Second life: the registry is down.
    let cached = CachedRegistry::builder(fast_client(&url).max_retries(0).build()?)
        .disk_cache(&dir.0)
        .build()?;
    assert_eq!(cached.schema_by_id(1).await?, other);
    assert_eq!(cached.schema_by_id(3).await?, v2);
    assert_eq!(cached.register("w-value", &v1).await?, 2);
    let found = cached.lookup("w-value", &v2).await?;
    assert_eq!((found.id, found.version), (3, 2));
    let version = cached.version("w-value", 2).await?;
    assert_eq!((version.id, version.schema), (3, v2.clone()));

    // What it never knew still fails, with the registry's (retryable) error.
    assert!(matches!(
        cached.schema_by_id(4).await,
        Err(RegistryError::Transport { .. })
    ));
    assert!(matches!(
        cached.register("other-value", &v1).await,
        Err(RegistryError::Transport { .. })
    ));
    assert!(
        matches!(
            cached.lookup("w-value", &v1).await,
            Err(RegistryError::Transport { .. })
        ),
        "version unknown"
    );
    Ok(())
}

#[tokio::test]
async fn disk_cache_ignores_corrupt_files_and_bad_directories_fail_early() -> anyhow::Result<()> {
    let dir = TempDir::new("corrupt");
    std::fs::write(dir.0.join("1.json"), b"{ not json")?;
    std::fs::write(dir.0.join("notes.txt"), b"hello")?;
    let mem = MemoryRegistry::new();
    mem.register("w", &widget(&[ID])).await?;
    let cached = CachedRegistry::builder(Counting::new(mem)).disk_cache(&dir.0).build()?;
    // The corrupt file is skipped, the inner registry answers, and the file is rewritten.
    assert_eq!(cached.schema_by_id(1).await?, widget(&[ID]));
    assert_eq!(cached.inner().calls(), 1);
    let text = std::fs::read_to_string(dir.0.join("1.json"))?;
    assert!(text.contains("\"id\": 1"), "{text}");

    let file = dir.0.join("a-file");
    std::fs::write(&file, b"x")?;
    match CachedRegistry::builder(MemoryRegistry::new()).disk_cache(&file).build() {
        Err(e @ RegistryError::DiskCache { .. }) => assert!(e.to_string().contains("schema cache directory")),
        other => panic!("expected DiskCache error, got {other:?}"),
    }
    Ok(())
}

/// A message whose schema id the registry does not know: id 999, then one byte of data.
const UNKNOWN_ID_MESSAGE: [u8; 6] = [0, 0, 0, 0x03, 0xe7, 0];

#[tokio::test]
async fn a_stream_of_messages_with_an_unknown_id_makes_one_registry_call() -> anyhow::Result<()> {
    let cached = Arc::new(CachedRegistry::new(Counting::new(MemoryRegistry::new())));
    let codec = SchemaCodec::from_arc(cached.clone());
    let reader = widget(&[ID]);
    for _ in 0..50 {
        match codec.decode_value(&UNKNOWN_ID_MESSAGE, None).await {
            Err(CodecError::Registry(RegistryError::SchemaNotFound { id: Some(999), .. })) => {}
            other => panic!("expected SchemaNotFound, got {other:?}"),
        }
        assert!(codec.decode_value(&UNKNOWN_ID_MESSAGE, Some(&reader)).await.is_err());
    }
    assert_eq!(cached.inner().calls(), 1, "one call, then the answer was remembered");
    Ok(())
}

#[tokio::test]
async fn an_unknown_id_is_asked_again_after_the_not_found_ttl() -> anyhow::Result<()> {
    let cached = CachedRegistry::builder(Counting::new(MemoryRegistry::new()))
        .not_found_ttl(Duration::from_millis(100))
        .build()?;
    for _ in 0..5 {
        assert!(matches!(
            cached.schema_by_id(1).await,
            Err(RegistryError::SchemaNotFound { id: Some(1), .. })
        ));
    }
    assert_eq!(cached.inner().calls(), 1);
    // Registered elsewhere meanwhile: found once the TTL is over.
    let v1 = widget(&[ID]);
    cached.inner().inner.register("w", &v1).await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(cached.schema_by_id(1).await?, v1);
    assert_eq!(cached.inner().calls(), 2);

    // Learning the id through the cache forgets the not-found at once.
    assert!(cached.schema_by_id(2).await.is_err());
    assert_eq!(cached.register("x", &widget(&[ID, NAME_DEFAULT])).await?, 2);
    assert_eq!(cached.schema_by_id(2).await?, widget(&[ID, NAME_DEFAULT]));

    // A zero TTL remembers nothing.
    let uncached = CachedRegistry::builder(Counting::new(MemoryRegistry::new()))
        .not_found_ttl(Duration::ZERO)
        .build()?;
    for _ in 0..3 {
        assert!(uncached.schema_by_id(1).await.is_err());
    }
    assert_eq!(uncached.inner().calls(), 3);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_registry_is_not_remembered_as_not_found() -> anyhow::Result<()> {
    let cached = CachedRegistry::new(Counting::new(MemoryRegistry::new()));
    cached.inner().set_failing(true);
    for _ in 0..3 {
        assert!(cached.schema_by_id(1).await.unwrap_err().is_retryable());
    }
    assert_eq!(cached.inner().calls(), 3, "every call went through");
    cached.inner().set_failing(false);
    let v1 = widget(&[ID]);
    cached.inner().inner.register("w", &v1).await?;
    assert_eq!(cached.schema_by_id(1).await?, v1);

    // Over HTTP: a 503 is retryable and not remembered; a 404 with 40403 is.
    let server = EmbeddedRegistry::start().await?;
    let cached = fast_client(server.url()).max_retries(0).build_cached()?;
    server.fail_next(2);
    assert!(cached.schema_by_id(1).await.unwrap_err().is_retryable());
    assert!(cached.schema_by_id(1).await.unwrap_err().is_retryable());
    assert!(matches!(
        cached.schema_by_id(1).await,
        Err(RegistryError::SchemaNotFound { .. })
    ));
    let before = server.request_count();
    assert!(cached.schema_by_id(1).await.is_err());
    assert_eq!(server.request_count(), before);
    Ok(())
}

#[tokio::test]
async fn the_id_cache_is_bounded() -> anyhow::Result<()> {
    let memory = MemoryRegistry::new();
    for i in 0..5 {
        memory
            .register(&format!("s{i}"), &record(&format!("R{i}"), &[ID]))
            .await?;
    }
    let cached = CachedRegistry::builder(Counting::new(memory))
        .max_cached_ids(3)
        .build()?;
    for id in 1..=5 {
        cached.schema_by_id(id).await?;
    }
    assert_eq!(cached.inner().calls(), 5);
    assert_eq!(cached.cached_ids(), 3);
    // The most recently used stay; the least recently used were evicted.
    cached.schema_by_id(5).await?;
    cached.schema_by_id(4).await?;
    assert_eq!(cached.inner().calls(), 5);
    cached.schema_by_id(1).await?;
    assert_eq!(cached.inner().calls(), 6);
    assert_eq!(cached.cached_ids(), 3);

    // Unknown ids are remembered apart: a stream of them does not push the known ones out.
    for id in 100..200 {
        assert!(cached.schema_by_id(id).await.is_err());
    }
    assert_eq!(cached.inner().calls(), 106);
    for id in [5, 4, 1] {
        cached.schema_by_id(id).await?;
    }
    assert_eq!(cached.inner().calls(), 106);
    Ok(())
}
