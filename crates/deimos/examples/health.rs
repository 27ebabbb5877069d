//! A consumer runner's health over HTTP, for Kubernetes probes, and its control handle.
//!
//! - `GET /livez`: 200 while every listener's loop runs and polls its consumer, 503 otherwise
//!   (`livenessProbe`: restart the pod);
//! - `GET /readyz`: 200 while every listener is live and has no partition stopped on a message that can never
//!   finish, 503 otherwise (`readinessProbe`);
//! - `GET /health`: the snapshot, as text: per listener its partitions, messages in flight and buffered, the
//!   partitions waiting on a retry, stopped or paused.
//!
//! The runner consumes `dev.widgets` on librdkafka's mock cluster with `key` ordering; the example publishes a
//! few hundred widgets, pauses the listener for a second and resumes it through its [`ListenerControl`], asks its
//! own endpoints once, prints what they answer, and stops. Pass `--serve` to keep serving on 127.0.0.1:8080 until
//! ctrl-c (`curl -i localhost:8080/readyz`).
//!
//! Run it with `cargo run --example health`.
//!
//! [`ListenerControl`]: deimos::consumer::ListenerControl

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deimos::avro::SchemaStore;
use deimos::consumer::{ConsumerRunner, Handler, HandlerError, Listener, Message, ProcessingOrder, RunnerControl};
use deimos::keys::KeyConfig;
use deimos::producer::{KafkaBackend, Producer, ProducerSetup};
use deimos::registry::{MemoryRegistry, SchemaRegistry};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Takes 2 ms per widget, as a handler that writes to a database might.
struct SlowWidgets;

#[async_trait::async_trait]
impl Handler for SlowWidgets {
    type Payload = Json;

    async fn consume(&self, _message: Message<Json>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

/// Answers one HTTP request from the runner's health.
fn answer(control: &RunnerControl, path: &str) -> (u16, String) {
    let health = control.health();
    match path {
        "/livez" if health.is_live() => (200, "live\n".into()),
        "/livez" => (503, "not live\n".into()),
        "/readyz" if health.is_ready() => (200, "ready\n".into()),
        "/readyz" => (503, "not ready\n".into()),
        "/health" => {
            let status = if health.is_ready() { 200 } else { 503 };
            let mut body = String::new();
            for l in &health.listeners {
                body.push_str(&format!(
                    "{} ({}): running={} assigned={:?} in_flight={} buffered={} waiting={:?} stopped={:?} paused={:?} last_poll={:?} ago\n",
                    l.topic, l.group_id, l.running, l.assigned, l.in_flight, l.buffered, l.waiting, l.stopped, l.paused,
                    l.since_last_poll
                ));
            }
            (status, body)
        }
        _ => (404, "try /livez, /readyz or /health\n".into()),
    }
}

/// Serves `answer` on `listener`, one connection at a time (probes are small and rare).
async fn serve(listener: TcpListener, control: RunnerControl) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let mut request = [0u8; 1024];
        let n = stream.read(&mut request).await.unwrap_or(0);
        let text = String::from_utf8_lossy(&request[..n]);
        let path = text.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = answer(&control, path);
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            _ => "Service Unavailable",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }
}

/// A GET of `path` on `port`: the status line and the body.
async fn get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim_end()
        .to_string();
    Ok(format!("{status}: {body}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings and errors of the crates go to stderr; RUST_LOG=info (or debug) shows more.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let keep_serving = std::env::args().any(|a| a == "--serve");
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let store = Arc::new(SchemaStore::load_all(&schemas).context("loading schemas/")?);
    let registry: Arc<dyn SchemaRegistry> = Arc::new(MemoryRegistry::new());
    let mock = deimos::rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic("dev.widgets", 6, 1)?;

    let backend = KafkaBackend::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .build()?;
    let setup = ProducerSetup::builder(store, Arc::clone(&registry), backend).build();
    let producer = Producer::builder("WidgetProducer")
        .topic("dev.widgets")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .build(&setup)
        .await?;

    let listener = Listener::builder("dev.widgets", "widget-health")
        .schema("com.acme.Widget")
        .key_config(KeyConfig::field("id"))
        .ordering(ProcessingOrder::Key)
        .max_in_flight(32)
        .session_timeout(Duration::from_secs(6))
        .handler(SlowWidgets)
        .build()?;
    let runner = ConsumerRunner::builder()
        .bootstrap_servers(mock.bootstrap_servers())
        .registry(Arc::clone(&registry))
        .schema_store(SchemaStore::new(&schemas))
        .listener(listener)
        .build()?;
    let control = runner.control();
    let shutdown = runner.shutdown_handle();

    let address = if keep_serving { "127.0.0.1:8080" } else { "127.0.0.1:0" };
    let http = TcpListener::bind(address).await?;
    let port = http.local_addr()?.port();
    tokio::spawn(serve(http, control.clone()));
    println!("before the runner starts: /livez → {}", get(port, "/livez").await?);

    let running = tokio::spawn(runner.run());
    let widgets: Vec<Json> = (0..300)
        .map(|i| {
            json!({"id": i % 50, "message_id": format!("m-{i}"), "name": format!("w-{i}"), "description": "",
                   "price": 1.5, "quantity": 1, "status": "ACTIVE", "tags": [], "updated_at": 0, "parent_id": null})
        })
        .collect();
    producer.publish_list(widgets).await?;

    // Wait for the group to form and the first messages to flow, then pause and resume.
    let widgets_listener = control.listener("dev.widgets").context("the listener's control")?;
    for _ in 0..100 {
        if !widgets_listener.health().assigned.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    widgets_listener.pause();
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("paused:  /health → {}", get(port, "/health").await?);
    widgets_listener.resume();
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("resumed: /health → {}", get(port, "/health").await?);
    println!("/livez  → {}", get(port, "/livez").await?);
    println!("/readyz → {}", get(port, "/readyz").await?);

    if keep_serving {
        println!("serving on http://127.0.0.1:{port} (/livez, /readyz, /health) until ctrl-c");
        running.await??;
    } else {
        shutdown.shutdown();
        running.await??;
        println!("after shutdown: /livez → {}", get(port, "/livez").await?);
    }
    Ok(())
}
