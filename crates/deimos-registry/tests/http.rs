//! HttpRegistry against the EmbeddedRegistry: every route, the error mapping, and Confluent's JSON shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use deimos_registry::{
    CodecError, CompatibilityLevel, DEFAULT_MAX_RESPONSE_BYTES, EmbeddedRegistry, MEDIA_TYPE, RegistryError,
    SchemaCodec, SchemaRegistry, VersionRef,
};
use serde_json::{Value, json};

#[tokio::test]
async fn every_route_through_the_client() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    // A trailing slash on the base URL is fine.
    let reg = fast_client(&format!("{}/", server.url())).build()?;
    let v1 = widget(&[ID]);
    let v2 = widget(&[ID, NAME_DEFAULT]);

    assert_eq!(reg.subjects().await?, Vec::<String>::new());
    assert_eq!(reg.register("widgets-value", &v1).await?, 1);
    assert_eq!(reg.register("widgets-value", &v1).await?, 1);
    assert_eq!(reg.register("widgets-value", &v2).await?, 2);
    assert_eq!(reg.register("other-value", &v2).await?, 2);

    let found = reg.lookup("widgets-value", &v1).await?;
    assert_eq!(
        (found.subject.as_str(), found.id, found.version),
        ("widgets-value", 1, 1)
    );
    assert_eq!(found.schema, v1);
    assert_eq!(reg.schema_by_id(2).await?, v2);
    let latest = reg.latest("widgets-value").await?;
    assert_eq!((latest.id, latest.version), (2, 2));
    assert_eq!(latest.schema, v2);
    let first = reg.version("widgets-value", 1).await?;
    assert_eq!((first.id, first.version, first.schema), (1, 1, v1.clone()));
    assert_eq!(reg.subjects().await?, vec!["other-value", "widgets-value"]);
    assert_eq!(reg.versions("widgets-value").await?, vec![1, 2]);

    // Compatibility tests, with the reasons.
    let bad = widget(&[ID, SIZE]);
    let check = reg
        .test_compatibility("widgets-value", &bad, VersionRef::Latest)
        .await?;
    assert!(!check.is_compatible);
    assert!(!check.messages.is_empty());
    let check = reg
        .test_compatibility("widgets-value", &widget(&[ID, COLOR_DEFAULT]), VersionRef::Number(1))
        .await?;
    assert!(check.is_compatible, "{check:?}");
    assert!(
        reg.test_compatibility("new-value", &bad, VersionRef::Latest)
            .await?
            .is_compatible
    );

    // Levels: global, subject with fallback to global, set both.
    assert_eq!(reg.compatibility_level(None).await?, CompatibilityLevel::Backward);
    assert_eq!(
        reg.compatibility_level(Some("widgets-value")).await?,
        CompatibilityLevel::Backward
    );
    reg.set_compatibility_level(Some("widgets-value"), CompatibilityLevel::None)
        .await?;
    assert_eq!(
        reg.compatibility_level(Some("widgets-value")).await?,
        CompatibilityLevel::None
    );
    reg.set_compatibility_level(None, CompatibilityLevel::FullTransitive)
        .await?;
    assert_eq!(reg.compatibility_level(None).await?, CompatibilityLevel::FullTransitive);
    assert_eq!(
        reg.compatibility_level(Some("other-value")).await?,
        CompatibilityLevel::FullTransitive
    );
    assert_eq!(
        server.registry().compatibility_level(Some("widgets-value")).await?,
        CompatibilityLevel::None
    );
    // With NONE, the incompatible schema registers.
    assert_eq!(reg.register("widgets-value", &bad).await?, 3);

    // Deletes.
    assert_eq!(reg.delete_subject("widgets-value", false).await?, vec![1, 2, 3]);
    assert_eq!(reg.subjects().await?, vec!["other-value"]);
    assert_eq!(reg.delete_subject("widgets-value", true).await?, vec![1, 2, 3]);
    assert!(matches!(
        reg.delete_subject("other-value", true).await,
        Err(RegistryError::SubjectNotSoftDeleted { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn errors_are_mapped() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let reg = fast_client(server.url()).build()?;
    let v1 = widget(&[ID]);
    reg.register("w", &v1).await?;

    match reg.latest("nope").await {
        Err(RegistryError::SubjectNotFound { subject }) => assert_eq!(subject, "nope"),
        other => panic!("expected SubjectNotFound, got {other:?}"),
    }
    match reg.version("w", 7).await {
        Err(RegistryError::VersionNotFound { subject, version }) => {
            assert_eq!((subject.as_str(), version), ("w", VersionRef::Number(7)));
        }
        other => panic!("expected VersionNotFound, got {other:?}"),
    }
    assert!(matches!(
        reg.schema_by_id(99).await,
        Err(RegistryError::SchemaNotFound {
            id: Some(99),
            subject: None
        })
    ));
    match reg.lookup("w", &widget(&[ID, NAME_DEFAULT])).await {
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
    match reg.register("w", &widget(&[ID, SIZE])).await {
        Err(e @ RegistryError::Incompatible { .. }) => {
            assert!(!e.is_retryable());
            let RegistryError::Incompatible { subject, messages } = e else {
                unreachable!()
            };
            assert_eq!(subject, "w");
            assert!(messages.iter().any(|m| m.contains("size")), "{messages:?}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert!(matches!(
        reg.test_compatibility("w", &v1, VersionRef::Number(5)).await,
        Err(RegistryError::VersionNotFound { .. })
    ));
    // A URL that is not a registry at all.
    let wrong = fast_client(&format!("{}/not/a/registry", server.url())).build()?;
    match wrong.subjects().await {
        Err(e @ RegistryError::Http { status: 404, .. }) => assert!(e.to_string().contains("check the registry URL")),
        other => panic!("expected Http 404, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn subjects_with_special_characters_round_trip() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let reg = fast_client(server.url()).build()?;
    let subject = "team a/widgets?x=1#frag-value";
    assert_eq!(reg.register(subject, &widget(&[ID])).await?, 1);
    assert_eq!(reg.latest(subject).await?.subject, subject);
    assert_eq!(server.registry().subjects().await?, vec![subject]);
    Ok(())
}

/// Raw HTTP, to pin Confluent's JSON shapes, status codes and content types.
struct Raw {
    client: reqwest::Client,
    base: String,
}

impl Raw {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<(&str, Value)>) -> (u16, String, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some((content_type, body)) = body {
            if !content_type.is_empty() {
                req = req.header("Content-Type", content_type);
            }
            req = req.body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        (status, ct, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, ct, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(ct, MEDIA_TYPE, "content type of GET {path}");
        (s, v)
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, ct, v) = self.call(reqwest::Method::POST, path, Some((MEDIA_TYPE, body))).await;
        assert_eq!(ct, MEDIA_TYPE, "content type of POST {path}");
        (s, v)
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, v) = self.call(reqwest::Method::PUT, path, Some((MEDIA_TYPE, body))).await;
        (s, v)
    }
}

#[tokio::test]
async fn confluent_json_shapes() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let raw = Raw {
        client: reqwest::Client::builder().no_proxy().build()?,
        base: server.url().to_string(),
    };
    let v1 = widget(&[ID]);
    let v1_text = v1.canonical_json().to_string();

    // Register: any of the accepted content types (or none), unknown fields and query params ignored.
    let body = json!({ "schema": v1_text, "schemaType": "AVRO", "metadata": null });
    assert_eq!(
        raw.post("/subjects/w-value/versions?normalize=false", body.clone())
            .await,
        (200, json!({"id": 1}))
    );
    let (s, _, v) = raw
        .call(
            reqwest::Method::POST,
            "/subjects/w-value/versions",
            Some(("application/json", body.clone())),
        )
        .await;
    assert_eq!((s, v), (200, json!({"id": 1})));
    let (s, _, v) = raw
        .call(reqwest::Method::POST, "/subjects/w-value/versions", Some(("", body)))
        .await;
    assert_eq!((s, v), (200, json!({"id": 1})));

    let registered = json!({"subject": "w-value", "id": 1, "version": 1, "schema": v1_text});
    assert_eq!(
        raw.post(
            "/subjects/w-value?normalize=false&deleted=false",
            json!({"schema": v1_text})
        )
        .await,
        (200, registered.clone())
    );
    assert_eq!(
        raw.get("/subjects/w-value/versions/latest").await,
        (200, registered.clone())
    );
    assert_eq!(raw.get("/subjects/w-value/versions/1").await, (200, registered.clone()));
    assert_eq!(raw.get("/subjects/w-value/versions/-1").await, (200, registered));
    assert_eq!(
        raw.get("/subjects/w-value/versions/1/schema").await,
        (200, serde_json::from_str::<Value>(&v1_text)?)
    );
    assert_eq!(
        raw.get("/schemas/ids/1?subject=w-value&fetchMaxId=false").await,
        (200, json!({"schema": v1_text}))
    );
    assert_eq!(
        raw.get("/schemas/ids/1/schema").await,
        (200, serde_json::from_str::<Value>(&v1_text)?)
    );
    assert_eq!(raw.get("/schemas/types").await, (200, json!(["AVRO"])));
    assert_eq!(raw.get("/subjects").await, (200, json!(["w-value"])));
    assert_eq!(raw.get("/subjects/w-value/versions").await, (200, json!([1])));

    // Compatibility: messages only with verbose=true.
    let bad = widget(&[ID, SIZE]);
    let bad_body = json!({"schema": bad.canonical_json()});
    assert_eq!(
        raw.post("/compatibility/subjects/w-value/versions/latest", bad_body.clone())
            .await,
        (200, json!({"is_compatible": false}))
    );
    let (s, v) = raw
        .post(
            "/compatibility/subjects/w-value/versions/1?verbose=true",
            bad_body.clone(),
        )
        .await;
    assert_eq!((s, &v["is_compatible"]), (200, &json!(false)));
    assert!(!v["messages"].as_array().unwrap().is_empty());
    let (s, v) = raw
        .post("/compatibility/subjects/w-value/versions", bad_body.clone())
        .await;
    assert_eq!((s, v), (200, json!({"is_compatible": false})));

    // Config.
    assert_eq!(
        raw.get("/config").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        raw.put("/config", json!({"compatibility": "FULL"})).await,
        (200, json!({"compatibility": "FULL"}))
    );
    assert_eq!(raw.get("/config").await, (200, json!({"compatibilityLevel": "FULL"})));
    let (s, v) = raw.get("/config/w-value").await;
    assert_eq!((s, &v["error_code"]), (404, &json!(40408)));
    assert_eq!(
        raw.get("/config/w-value?defaultToGlobal=true").await,
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    assert_eq!(
        raw.put("/config/w-value", json!({"compatibility": "none"})).await,
        (200, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        raw.get("/config/w-value").await,
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    let (s, v) = raw.put("/config", json!({"compatibility": "SIDEWAYS"})).await;
    assert_eq!((s, &v["error_code"]), (422, &json!(42203)));

    // Errors.
    let code = |v: &Value| v["error_code"].as_u64().unwrap();
    let (s, v) = raw.get("/subjects/nope/versions").await;
    assert_eq!((s, code(&v)), (404, 40401));
    assert!(v["message"].is_string());
    let (s, v) = raw.get("/subjects/w-value/versions/5").await;
    assert_eq!((s, code(&v)), (404, 40402));
    let (s, v) = raw.get("/subjects/w-value/versions/abc").await;
    assert_eq!((s, code(&v)), (422, 42202));
    let (s, v) = raw.get("/schemas/ids/42").await;
    assert_eq!((s, code(&v)), (404, 40403));
    let (s, v) = raw
        .post("/subjects/w-value", json!({"schema": bad.canonical_json()}))
        .await;
    assert_eq!((s, code(&v)), (404, 40403));
    let (s, v) = raw
        .post("/subjects/w-value/versions", json!({"schema": "{\"type\": \"nope\"}"}))
        .await;
    assert_eq!((s, code(&v)), (422, 42201));
    let (s, v) = raw
        .post(
            "/subjects/w-value/versions",
            json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!((s, code(&v)), (422, 42201));
    raw.put("/config/w-value", json!({"compatibility": "BACKWARD"})).await;
    let (s, v) = raw.post("/subjects/w-value/versions", bad_body).await;
    assert_eq!((s, code(&v)), (409, 409));
    assert!(v["message"].as_str().unwrap().contains("incompatible"));
    let (s, v) = raw.get("/no/such/route").await;
    assert_eq!((s, code(&v)), (404, 404));

    // Delete.
    let (s, _, v) = raw.call(reqwest::Method::DELETE, "/subjects/w-value", None).await;
    assert_eq!((s, v), (200, json!([1])));
    let (s, _, v) = raw
        .call(reqwest::Method::DELETE, "/subjects/w-value?permanent=true", None)
        .await;
    assert_eq!((s, v), (200, json!([1])));
    Ok(())
}

#[tokio::test]
async fn schema_references_are_resolved_and_other_types_refused() -> anyhow::Result<()> {
    let inner = widget(&[ID]);
    let outer = r#"{"type":"record","name":"Outer","namespace":"com.acme","fields":[{"name":"w","type":"Widget"}]}"#;
    let (url, task) = fake_registry(vec![
        ("/schemas/ids/5".into(), json!({"schema": outer, "references": [{"name": "com.acme.Widget", "subject": "widget-value", "version": 1}]})),
        ("/subjects/widget-value/versions/1".into(), json!({"subject": "widget-value", "id": 1, "version": 1, "schema": inner.canonical_json()})),
        ("/schemas/ids/6".into(), json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"})),
        ("/schemas/ids/7".into(), json!({"schema": "{\"type\": \"nope\"}"})),
        ("/subjects".into(), json!({"unexpected": true})),
    ])
    .await?;
    let reg = fast_client(&url).build()?;

    let resolved = reg.schema_by_id(5).await?;
    assert_eq!(resolved.name(), Some("com.acme.Outer"));
    assert!(
        resolved.canonical_json().contains("\"id\""),
        "Widget inlined: {resolved}"
    );
    match reg.schema_by_id(6).await {
        Err(RegistryError::UnsupportedSchemaType {
            id: Some(6),
            schema_type,
        }) => assert_eq!(schema_type, "PROTOBUF"),
        other => panic!("expected UnsupportedSchemaType, got {other:?}"),
    }
    assert!(matches!(
        reg.schema_by_id(7).await,
        Err(RegistryError::InvalidResponse { .. })
    ));
    assert!(matches!(
        reg.subjects().await,
        Err(RegistryError::InvalidResponse { .. })
    ));
    task.abort();
    Ok(())
}

/// The schemas of a decimal of precision and scale 10^12, which the decoder once turned into a terabyte string.
const ABSURD_DECIMAL: &str = r#"{"type":"record","name":"Price","namespace":"com.acme","fields":[{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":1000000000000,"scale":1000000000000}}]}"#;

#[tokio::test]
async fn the_embedded_registry_refuses_a_decimal_beyond_the_precision_limit() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let raw = Raw {
        client: reqwest::Client::new(),
        base: server.url().to_string(),
    };
    let (status, v) = raw
        .post("/subjects/prices-value/versions", json!({ "schema": ABSURD_DECIMAL }))
        .await;
    assert_eq!((status, v["error_code"].as_u64()), (422, Some(42201)), "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("precision 1000000000000") && message.contains("38"),
        "{message}"
    );
    assert!(server.registry().subjects().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_writer_schema_with_an_absurd_decimal_is_an_error_not_an_abort() -> anyhow::Result<()> {
    let (url, task) = fake_registry(vec![("/schemas/ids/9".into(), json!({ "schema": ABSURD_DECIMAL }))]).await?;
    let codec = SchemaCodec::new(fast_client(&url).build()?);
    // Schema id 9, then the decimal as bytes of length 1 holding 1.
    let message = [0u8, 0, 0, 0, 9, 2, 1];
    match codec.decode_value(&message, None).await {
        Err(CodecError::Registry(e @ RegistryError::InvalidResponse { .. })) => {
            assert!(e.to_string().contains("precision 1000000000000"), "{e}");
        }
        other => panic!("expected the schema to be refused, got {other:?}"),
    }
    task.abort();
    Ok(())
}

/// A server that answers every request with `head` and then up to `body_bytes` bytes of JSON-ish filler,
/// 1 MiB every 10 ms, and then holds the connection open.
async fn streaming_server(head: String, body_bytes: usize) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let head = head.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = sock.read(&mut request).await;
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 1 << 20];
                let mut sent = 0;
                while sent < body_bytes {
                    if sock.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    Ok((url, task))
}

#[tokio::test]
async fn response_bodies_are_capped_while_they_are_read() -> anyhow::Result<()> {
    // No length announced: 64 MiB of body arrive a MiB at a time; reading stops at the limit.
    let (url, task) = streaming_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[".into(),
        64 << 20,
    )
    .await?;
    let reg = fast_client(&url)
        .timeout(Duration::from_secs(20))
        .max_retries(0)
        .build()?;
    let started = std::time::Instant::now();
    match reg.subjects().await {
        Err(e @ RegistryError::ResponseTooLarge { .. }) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains(&DEFAULT_MAX_RESPONSE_BYTES.to_string()), "{e}");
        }
        other => panic!("expected ResponseTooLarge, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    task.abort();

    // An announced length above the limit is refused before reading the body.
    let (url, task) = streaming_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n".into(),
        0,
    )
    .await?;
    let reg = fast_client(&url)
        .timeout(Duration::from_secs(20))
        .max_retries(0)
        .build()?;
    let started = std::time::Instant::now();
    assert!(matches!(
        reg.schema_by_id(1).await,
        Err(RegistryError::ResponseTooLarge { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    task.abort();
    Ok(())
}

#[tokio::test]
async fn the_response_limit_is_a_setting() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    for i in 0..40 {
        server
            .registry()
            .register(&format!("subject-number-{i}-value"), &widget(&[ID]))
            .await?;
    }
    let reg = fast_client(server.url()).max_response_bytes(512).build()?;
    match reg.subjects().await {
        Err(e @ RegistryError::ResponseTooLarge { limit: 512, .. }) => {
            assert!(e.to_string().contains("max_response_bytes"), "{e}");
        }
        other => panic!("expected ResponseTooLarge, got {other:?}"),
    }
    // Small answers are fine.
    assert_eq!(reg.schema_by_id(1).await?, widget(&[ID]));
    Ok(())
}

fn referring(name: &str, to: &str, subject: &str) -> Value {
    let schema =
        json!({"type": "record", "name": name, "namespace": "com.acme", "fields": [{"name": "next", "type": to}]});
    json!({"schema": schema.to_string(), "references": [{"name": format!("com.acme.{to}"), "subject": subject, "version": 1}]})
}

#[tokio::test]
async fn schema_reference_cycles_are_refused() -> anyhow::Result<()> {
    let mut a = referring("A", "B", "b-value");
    a["subject"] = json!("a-value");
    a["id"] = json!(1);
    a["version"] = json!(1);
    let mut b = referring("B", "A", "a-value");
    b["subject"] = json!("b-value");
    b["id"] = json!(2);
    b["version"] = json!(1);
    let (url, task) = fake_registry(vec![
        ("/schemas/ids/5".into(), referring("Top", "A", "a-value")),
        ("/subjects/a-value/versions/1".into(), a),
        ("/subjects/b-value/versions/1".into(), b),
    ])
    .await?;
    let reg = fast_client(&url).build()?;
    let answer = tokio::time::timeout(Duration::from_secs(10), reg.schema_by_id(5))
        .await
        .expect("resolving a reference cycle must end");
    match answer {
        Err(e @ RegistryError::InvalidReferences { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("cycle") && msg.contains("a-value") && msg.contains("b-value"),
                "{msg}"
            );
        }
        other => panic!("expected InvalidReferences, got {other:?}"),
    }
    task.abort();
    Ok(())
}

#[tokio::test]
async fn schema_references_nest_only_so_deep() -> anyhow::Result<()> {
    let levels = 40;
    let mut routes = vec![("/schemas/ids/5".to_string(), referring("R0", "R1", "r1-value"))];
    for i in 1..levels {
        let mut v = referring(&format!("R{i}"), &format!("R{}", i + 1), &format!("r{}-value", i + 1));
        v["subject"] = json!(format!("r{i}-value"));
        v["id"] = json!(100 + i);
        v["version"] = json!(1);
        routes.push((format!("/subjects/r{i}-value/versions/1"), v));
    }
    let last = json!({"type": "record", "name": format!("R{levels}"), "namespace": "com.acme", "fields": []});
    routes.push((
        format!("/subjects/r{levels}-value/versions/1"),
        json!({"subject": format!("r{levels}-value"), "id": 100 + levels, "version": 1, "schema": last.to_string()}),
    ));
    let (url, task) = fake_registry(routes).await?;
    let reg = fast_client(&url).build()?;
    match reg.schema_by_id(5).await {
        Err(e @ RegistryError::InvalidReferences { .. }) => {
            assert!(e.to_string().contains("deeper than"), "{e}");
        }
        other => panic!("expected InvalidReferences, got {other:?}"),
    }
    // A shallow chain resolves.
    assert_eq!(reg.version("r38-value", 1).await?.schema.name(), Some("com.acme.R38"));
    task.abort();
    Ok(())
}

#[tokio::test]
async fn the_embedded_registry_takes_what_java_and_fastavro_take_and_keeps_doubles_exact() -> anyhow::Result<()> {
    let server = EmbeddedRegistry::start().await?;
    let raw = Raw {
        client: reqwest::Client::new(),
        base: server.url().to_string(),
    };
    // A record default leaving out a nested field that has a default of its own (Schema.isValidDefault takes it),
    // and a double default that needs 17 digits.
    let schema = r#"{"type":"record","name":"Parity","fields":[
        {"name":"r","type":{"type":"record","name":"ND","fields":[
            {"name":"a","type":"int"},{"name":"z","type":"string","default":"zz"}]},"default":{"a":1}},
        {"name":"d","type":"double","default":90.28571428571429}]}"#;
    let (status, v) = raw
        .post("/subjects/parity-value/versions", json!({ "schema": schema }))
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_u64().unwrap_or_default();
    let (status, v) = raw.get(&format!("/schemas/ids/{id}")).await;
    assert_eq!(status, 200, "{v}");
    let back: serde_json::Value = serde_json::from_str(v["schema"].as_str().unwrap_or_default())?;
    let d = back["fields"][1]["default"].as_f64().unwrap_or_default();
    assert_eq!(
        d.to_bits(),
        90.28571428571429f64.to_bits(),
        "the default handed back: {back}"
    );
    Ok(())
}
