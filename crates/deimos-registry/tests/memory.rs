//! MemoryRegistry semantics: ids, versions, dedupe, compatibility levels, deletes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use deimos_registry::{CompatibilityLevel, MemoryRegistry, RegistryError, SchemaRegistry, VersionRef};

#[tokio::test]
async fn ids_are_global_and_versions_per_subject() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    let v1 = widget(&[ID]);
    let v2 = widget(&[ID, NAME_DEFAULT]);
    let other = record("Gadget", &[ID]);

    assert_eq!(reg.register("widgets-value", &v1).await?, 1);
    assert_eq!(reg.register("widgets-value", &v2).await?, 2);
    // Same schema under another subject: same id, version 1 there.
    assert_eq!(reg.register("copies-value", &v2).await?, 2);
    assert_eq!(reg.register("gadgets-value", &other).await?, 3);

    assert_eq!(reg.versions("widgets-value").await?, vec![1, 2]);
    assert_eq!(reg.versions("copies-value").await?, vec![1]);
    let copy = reg.latest("copies-value").await?;
    assert_eq!((copy.id, copy.version), (2, 1));
    assert_eq!(
        reg.subjects().await?,
        vec!["copies-value", "gadgets-value", "widgets-value"]
    );
    assert_eq!(reg.schema_by_id(1).await?, v1);
    assert_eq!(reg.schema_by_id(3).await?, other);
    Ok(())
}

#[tokio::test]
async fn registering_again_is_idempotent() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    let v1 = widget(&[ID]);
    let v2 = widget(&[ID, NAME_DEFAULT]);
    assert_eq!(reg.register("w", &v1).await?, 1);
    assert_eq!(reg.register("w", &v2).await?, 2);
    // Re-registering an older version returns its id and creates no version, compatibility not re-checked.
    assert_eq!(reg.register("w", &v1).await?, 1);
    assert_eq!(reg.register("w", &v2).await?, 2);
    assert_eq!(reg.versions("w").await?, vec![1, 2]);
    // A textually different but equal schema (whitespace, key order) is the same schema.
    let spaced = deimos_registry::AvroSchema::parse(
        r#"{ "namespace": "com.acme", "name": "Widget", "type": "record", "fields": [ {"type": "long", "name": "id"} ] }"#,
    )?;
    assert_eq!(reg.register("w", &spaced).await?, 1);
    Ok(())
}

#[tokio::test]
async fn lookup_and_version_errors() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    let v1 = widget(&[ID]);
    let v2 = widget(&[ID, NAME_DEFAULT]);
    reg.register("w", &v1).await?;

    let found = reg.lookup("w", &v1).await?;
    assert_eq!((found.subject.as_str(), found.id, found.version), ("w", 1, 1));
    assert_eq!(found.schema, v1);

    match reg.lookup("w", &v2).await {
        Err(RegistryError::SchemaNotFound {
            id: None,
            subject: Some(s),
        }) => assert_eq!(s, "w"),
        other => panic!("expected SchemaNotFound, got {other:?}"),
    }
    assert!(matches!(
        reg.lookup("nope", &v1).await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    assert!(matches!(
        reg.latest("nope").await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    assert!(matches!(
        reg.versions("nope").await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    match reg.version("w", 9).await {
        Err(e @ RegistryError::VersionNotFound { .. }) => {
            assert_eq!(e.error_code(), Some(40402));
            assert!(e.to_string().contains("version 9 of subject `w`"), "{e}");
        }
        other => panic!("expected VersionNotFound, got {other:?}"),
    }
    match reg.schema_by_id(42).await {
        Err(e @ RegistryError::SchemaNotFound { id: Some(42), .. }) => {
            assert_eq!(e.error_code(), Some(40403));
            assert!(!e.is_retryable());
        }
        other => panic!("expected SchemaNotFound, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn default_level_is_backward_and_enforced() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    assert_eq!(reg.compatibility_level(None).await?, CompatibilityLevel::Backward);
    assert_eq!(reg.compatibility_level(Some("w")).await?, CompatibilityLevel::Backward);

    reg.register("w", &widget(&[ID])).await?;
    // A new field without default: the new schema cannot read old data.
    match reg.register("w", &widget(&[ID, SIZE])).await {
        Err(e @ RegistryError::Incompatible { .. }) => {
            assert_eq!(e.error_code(), Some(409));
            let RegistryError::Incompatible { subject, messages } = &e else {
                unreachable!()
            };
            assert_eq!(subject, "w");
            assert!(!messages.is_empty());
            assert!(messages[0].contains("version 1"), "{messages:?}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert_eq!(
        reg.versions("w").await?,
        vec![1],
        "a rejected schema creates no version"
    );
    reg.register("w", &widget(&[ID, NAME]))
        .await
        .expect_err("a field without default is incompatible");
    reg.register("w", &widget(&[ID, NAME_DEFAULT])).await?;
    reg.register("w", &widget(&[ID, NAME_DEFAULT, COLOR_DEFAULT])).await?;
    // Removing a field is backward compatible.
    reg.register("w", &widget(&[ID, COLOR_DEFAULT])).await?;
    assert_eq!(reg.versions("w").await?, vec![1, 2, 3, 4]);
    Ok(())
}

#[tokio::test]
async fn forward_and_full_levels() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    reg.set_compatibility_level(Some("f"), CompatibilityLevel::Forward)
        .await?;
    reg.register("f", &widget(&[ID, NAME])).await?;
    // Forward: old readers must read new data; dropping `name` (no default) breaks them.
    assert!(matches!(
        reg.register("f", &widget(&[ID])).await,
        Err(RegistryError::Incompatible { .. })
    ));
    // Adding a field without default is fine forward.
    reg.register("f", &widget(&[ID, NAME, SIZE])).await?;

    reg.set_compatibility_level(Some("full"), CompatibilityLevel::Full)
        .await?;
    reg.register("full", &widget(&[ID])).await?;
    assert!(
        reg.register("full", &widget(&[ID, SIZE])).await.is_err(),
        "not backward"
    );
    reg.register("full", &widget(&[ID, NAME_DEFAULT])).await?;

    // The subject level does not change the global one or other subjects.
    assert_eq!(reg.compatibility_level(None).await?, CompatibilityLevel::Backward);
    assert_eq!(reg.compatibility_level(Some("f")).await?, CompatibilityLevel::Forward);
    assert_eq!(reg.subject_compatibility_level("f"), Some(CompatibilityLevel::Forward));
    assert_eq!(reg.subject_compatibility_level("other"), None);
    Ok(())
}

#[tokio::test]
async fn none_level_accepts_anything_and_global_level_applies() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    reg.set_compatibility_level(None, CompatibilityLevel::None).await?;
    reg.register("w", &widget(&[ID])).await?;
    reg.register("w", &widget(&[SIZE])).await?;
    reg.set_compatibility_level(None, CompatibilityLevel::Full).await?;
    assert_eq!(reg.compatibility_level(Some("w")).await?, CompatibilityLevel::Full);
    assert!(reg.register("w", &widget(&[ID, NAME])).await.is_err());
    Ok(())
}

#[tokio::test]
async fn transitive_levels_check_every_version() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    // v1 {id}, v2 {id, size} (registered without checks), then v3 {id, size, color=red}.
    reg.set_compatibility_level(Some("t"), CompatibilityLevel::None).await?;
    reg.register("t", &widget(&[ID])).await?;
    reg.register("t", &widget(&[ID, SIZE])).await?;
    let v3 = widget(&[ID, SIZE, COLOR_DEFAULT]);

    // Against the latest version only, v3 is backward compatible ...
    reg.set_compatibility_level(Some("t"), CompatibilityLevel::Backward)
        .await?;
    let check = reg.test_compatibility_all("t", &v3)?;
    assert!(check.is_compatible, "{check:?}");
    // ... but not against version 1, which has no `size`.
    reg.set_compatibility_level(Some("t"), CompatibilityLevel::BackwardTransitive)
        .await?;
    match reg.register("t", &v3).await {
        Err(RegistryError::Incompatible { messages, .. }) => {
            assert_eq!(messages.len(), 1, "{messages:?}");
            assert!(messages[0].contains("version 1"), "{messages:?}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    reg.set_compatibility_level(Some("t"), CompatibilityLevel::Backward)
        .await?;
    assert_eq!(reg.register("t", &v3).await?, 3);

    // FULL_TRANSITIVE also names the right version when it is not the first.
    reg.set_compatibility_level(Some("t"), CompatibilityLevel::FullTransitive)
        .await?;
    match reg.register("t", &widget(&[ID, NAME])).await {
        Err(RegistryError::Incompatible { messages, .. }) => {
            assert!(messages.iter().any(|m| m.contains("version 3")), "{messages:?}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn test_compatibility_against_versions() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    let v1 = widget(&[ID]);
    let bad = widget(&[ID, SIZE]);
    // A subject without versions: anything is compatible with `latest`.
    let check = reg.test_compatibility("w", &bad, VersionRef::Latest).await?;
    assert!(check.is_compatible && check.messages.is_empty());
    assert!(matches!(
        reg.test_compatibility("w", &bad, VersionRef::Number(1)).await,
        Err(RegistryError::SubjectNotFound { .. })
    ));

    reg.register("w", &v1).await?;
    let check = reg.test_compatibility("w", &bad, VersionRef::Latest).await?;
    assert!(!check.is_compatible);
    assert!(!check.messages.is_empty());
    let check = reg
        .test_compatibility("w", &widget(&[ID, NAME_DEFAULT]), VersionRef::Number(1))
        .await?;
    assert!(check.is_compatible);
    assert!(matches!(
        reg.test_compatibility("w", &v1, VersionRef::Number(2)).await,
        Err(RegistryError::VersionNotFound {
            version: VersionRef::Number(2),
            ..
        })
    ));
    Ok(())
}

#[tokio::test]
async fn soft_and_permanent_delete() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    let v1 = widget(&[ID]);
    let v2 = widget(&[ID, NAME_DEFAULT]);
    reg.register("w", &v1).await?;
    reg.register("w", &v2).await?;
    reg.register("keep", &widget(&[ID, COLOR_DEFAULT])).await?;

    assert!(matches!(
        reg.delete_subject("w", true),
        Err(RegistryError::SubjectNotSoftDeleted { .. })
    ));
    assert_eq!(reg.delete_subject("w", false)?, vec![1, 2]);
    assert_eq!(reg.subjects().await?, vec!["keep"]);
    assert!(matches!(
        reg.latest("w").await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    assert!(matches!(
        reg.lookup("w", &v1).await,
        Err(RegistryError::SubjectNotFound { .. })
    ));
    assert!(matches!(
        reg.delete_subject("w", false),
        Err(RegistryError::SubjectNotFound { .. })
    ));
    // Ids of soft-deleted versions still resolve (consumers can read old data).
    assert_eq!(reg.schema_by_id(1).await?, v1);

    // Registering again continues the version numbering and reuses the id.
    assert_eq!(reg.register("w", &v2).await?, 2);
    assert_eq!(reg.versions("w").await?, vec![3]);
    // Compatibility is checked against live versions only: with none left, anything goes.
    assert_eq!(reg.delete_subject("w", false)?, vec![3]);
    assert_eq!(reg.register("w", &widget(&[ID, SIZE])).await?, 4);
    assert_eq!(reg.versions("w").await?, vec![4]);

    reg.delete_subject("w", false)?;
    assert_eq!(reg.delete_subject("w", true)?, vec![1, 2, 3, 4]);
    assert!(matches!(
        reg.schema_by_id(1).await,
        Err(RegistryError::SchemaNotFound { .. })
    ));
    assert!(reg.schema_by_id(3).await.is_ok(), "still used by `keep`");
    assert!(matches!(
        reg.delete_subject("nope", false),
        Err(RegistryError::SubjectNotFound { .. })
    ));
    // After a permanent delete the subject starts again at version 1; an id always means the same schema.
    assert_eq!(reg.register("w", &v1).await?, 1);
    assert_eq!(reg.versions("w").await?, vec![1]);
    assert_eq!(reg.register("w2", &widget(&[ID, SIZE, COLOR_DEFAULT])).await?, 5);
    Ok(())
}

#[tokio::test]
async fn works_as_a_trait_object_and_clones_share_state() -> anyhow::Result<()> {
    let reg = MemoryRegistry::new();
    let shared: Arc<dyn SchemaRegistry> = Arc::new(reg.clone());
    let by_ref: &dyn SchemaRegistry = &reg;
    assert_eq!(shared.register("w", &widget(&[ID])).await?, 1);
    assert_eq!(by_ref.latest("w").await?.id, 1);
    let boxed: Box<dyn SchemaRegistry> = Box::new(shared.clone());
    assert_eq!(boxed.versions("w").await?, vec![1]);
    Ok(())
}
