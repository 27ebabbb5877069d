//! `Debug` of the configuration's sections: every field, with secrets passed through `deimos_core::redact`.
//! Each impl destructures its section, so a new field does not compile until it is listed here.

use std::fmt;

use deimos_core::redact;

use crate::model::{ConsumerConfig, ConsumersConfig, KafkaConfig, OutboxConfig, ProducersConfig, SchemaConfig};

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let KafkaConfig {
            brokers,
            client_id,
            settings,
        } = self;
        f.debug_struct("KafkaConfig")
            .field("brokers", brokers)
            .field("client_id", client_id)
            .field("settings", &redact::settings(settings))
            .finish()
    }
}

impl fmt::Debug for SchemaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SchemaConfig {
            registry_url,
            user,
            password,
            path,
            timeout,
        } = self;
        f.debug_struct("SchemaConfig")
            .field("registry_url", &registry_url.as_deref().map(redact::url))
            .field("user", user)
            .field("password", &password.as_ref().map(|_| redact::REDACTED))
            .field("path", path)
            .field("timeout", timeout)
            .finish()
    }
}

impl fmt::Debug for ProducersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ProducersConfig {
            topic_prefix,
            schema_namespace,
            disabled,
            max_batch_size,
            delivery,
            partitioner,
            payload_log,
            settings,
        } = self;
        f.debug_struct("ProducersConfig")
            .field("topic_prefix", topic_prefix)
            .field("schema_namespace", schema_namespace)
            .field("disabled", disabled)
            .field("max_batch_size", max_batch_size)
            .field("delivery", delivery)
            .field("partitioner", partitioner)
            .field("payload_log", payload_log)
            .field("settings", &redact::settings(settings))
            .finish()
    }
}

impl fmt::Debug for ConsumersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConsumersConfig {
            reraise_errors,
            report_lag,
            session_timeout,
            heartbeat_interval,
            backoff,
            offset_commit_interval,
            shutdown_timeout,
            payload_log,
            settings,
        } = self;
        f.debug_struct("ConsumersConfig")
            .field("reraise_errors", reraise_errors)
            .field("report_lag", report_lag)
            .field("session_timeout", session_timeout)
            .field("heartbeat_interval", heartbeat_interval)
            .field("backoff", backoff)
            .field("offset_commit_interval", offset_commit_interval)
            .field("shutdown_timeout", shutdown_timeout)
            .field("payload_log", payload_log)
            .field("settings", &redact::settings(settings))
            .finish()
    }
}

impl fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConsumerConfig {
            name,
            topic,
            group_id,
            schema,
            namespace,
            key_config,
            disabled,
            delivery,
            start_from_beginning,
            max_batch_size,
            max_wait_time,
            session_timeout,
            heartbeat_interval,
            backoff,
            offset_commit_interval,
            error_policy,
            max_attempts,
            dead_letter_topic,
            report_lag,
            payload_log,
            ordering,
            max_in_flight,
            max_concurrency,
            max_buffered_bytes,
            settings,
        } = self;
        f.debug_struct("ConsumerConfig")
            .field("name", name)
            .field("topic", topic)
            .field("group_id", group_id)
            .field("schema", schema)
            .field("namespace", namespace)
            .field("key_config", key_config)
            .field("disabled", disabled)
            .field("delivery", delivery)
            .field("start_from_beginning", start_from_beginning)
            .field("max_batch_size", max_batch_size)
            .field("max_wait_time", max_wait_time)
            .field("session_timeout", session_timeout)
            .field("heartbeat_interval", heartbeat_interval)
            .field("backoff", backoff)
            .field("offset_commit_interval", offset_commit_interval)
            .field("error_policy", error_policy)
            .field("max_attempts", max_attempts)
            .field("dead_letter_topic", dead_letter_topic)
            .field("report_lag", report_lag)
            .field("payload_log", payload_log)
            .field("ordering", ordering)
            .field("max_in_flight", max_in_flight)
            .field("max_concurrency", max_concurrency)
            .field("max_buffered_bytes", max_buffered_bytes)
            .field("settings", &redact::settings(settings))
            .finish()
    }
}

impl fmt::Debug for OutboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let OutboxConfig {
            database_url,
            batch_size,
            max_in_flight,
            max_workers,
            lease_ttl,
            poll_interval,
            delivery_timeout,
            connect_timeout,
            statement_timeout,
            pool_size,
            compact_topics,
            log_topics,
        } = self;
        f.debug_struct("OutboxConfig")
            .field("database_url", &database_url.as_deref().map(redact::url))
            .field("batch_size", batch_size)
            .field("max_in_flight", max_in_flight)
            .field("max_workers", max_workers)
            .field("lease_ttl", lease_ttl)
            .field("poll_interval", poll_interval)
            .field("delivery_timeout", delivery_timeout)
            .field("connect_timeout", connect_timeout)
            .field("statement_timeout", statement_timeout)
            .field("pool_size", pool_size)
            .field("compact_topics", compact_topics)
            .field("log_topics", log_topics)
            .finish()
    }
}
