#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]
//! The framed codec: register once, encode synchronously, decode with the writer's schema resolved to the
//! reader's through a cached plan.

use std::sync::Arc;

use deimos_avro::{AvroSchema, DecodeError};
use deimos_registry::{CodecError, MemoryRegistry, RegistryError, SchemaCodec, SchemaRegistry};
use serde::{Deserialize, Serialize};
use serde_json::json;

const V1: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"User","namespace":"t","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"email","type":["null","string"],"default":null}]}"#;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct UserV2 {
    id: i64,
    name: String,
    email: Option<String>,
}

#[tokio::test]
async fn encodes_framed_bytes_with_the_registered_id_and_decodes_them() {
    let registry = Arc::new(MemoryRegistry::new());
    let codec = SchemaCodec::from_arc(registry.clone());
    let v1 = AvroSchema::parse(V1).unwrap();
    let w = codec.writer("users-value", &v1).await.unwrap();
    assert_eq!(w.id(), registry.lookup("users-value", &v1).await.unwrap().id);
    let bytes = w.encode_value(&json!({"id": "7", "name": "ann"})).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, w.id() as u8]);
    assert_eq!(bytes[5..], v1.encode_value(&json!({"id": 7, "name": "ann"})).unwrap());
    assert_eq!(
        codec.decode_value(&bytes, None).await.unwrap(),
        json!({"id": 7, "name": "ann"})
    );

    // A newer reader reads it, through a plan built once and then used without waiting.
    let v2 = AvroSchema::parse(V2).unwrap();
    assert!(codec.decode_cached::<UserV2>(&bytes, &v2).is_none());
    let u: UserV2 = codec.decode(&bytes, &v2).await.unwrap();
    assert_eq!(
        u,
        UserV2 {
            id: 7,
            name: "ann".into(),
            email: None
        }
    );
    assert_eq!(codec.decode_cached::<UserV2>(&bytes, &v2).unwrap().unwrap(), u);

    // Typed encode gives the same bytes as the dynamic path.
    #[derive(Serialize)]
    struct UserV1<'a> {
        id: i64,
        name: &'a str,
    }
    assert_eq!(
        codec
            .encode("users-value", &v1, &UserV1 { id: 7, name: "ann" })
            .await
            .unwrap(),
        bytes
    );
}

#[tokio::test]
async fn a_failed_encode_leaves_the_buffer_as_it_was() {
    let codec = SchemaCodec::new(MemoryRegistry::new());
    let w = codec
        .writer("users-value", &AvroSchema::parse(V1).unwrap())
        .await
        .unwrap();
    let mut out = vec![1, 2, 3];
    let e = w.encode_value_into(&json!({"id": 1}), &mut out).unwrap_err();
    assert!(e.to_string().contains("missing required field `name`"), "{e}");
    assert_eq!(out, vec![1, 2, 3]);
}

#[tokio::test]
async fn without_auto_register_the_schema_must_exist() {
    let registry = Arc::new(MemoryRegistry::new());
    let codec = SchemaCodec::from_arc(registry.clone()).auto_register(false);
    let v1 = AvroSchema::parse(V1).unwrap();
    let e = codec.writer("users-value", &v1).await.unwrap_err();
    assert!(
        matches!(e, CodecError::Registry(RegistryError::SubjectNotFound { .. })),
        "{e:?}"
    );
    registry.register("users-value", &v1).await.unwrap();
    assert!(codec.writer("users-value", &v1).await.is_ok());
}

#[tokio::test]
async fn undecodable_messages_say_why() {
    let codec = SchemaCodec::new(MemoryRegistry::new());
    let v1 = AvroSchema::parse(V1).unwrap();
    let e = codec.decode_value(&[1, 2, 3], Some(&v1)).await.unwrap_err();
    assert!(
        matches!(e, CodecError::Decode(DecodeError::BadMagic { found: 1 })),
        "{e:?}"
    );
    let e = codec.decode_value(&[0, 0, 0, 0, 99, 2], Some(&v1)).await.unwrap_err();
    assert!(
        matches!(e, CodecError::Registry(RegistryError::SchemaNotFound { .. })),
        "{e:?}"
    );
    let other = AvroSchema::parse(r#"{"type":"record","name":"Other","fields":[]}"#).unwrap();
    let bytes = codec.encode_value("o-value", &other, &json!({})).await.unwrap();
    let e = codec.decode_value(&bytes, Some(&v1)).await.unwrap_err();
    assert!(matches!(e, CodecError::Resolve(_)), "{e:?}");
}
