//! The outbox tables, for diesel.

diesel::table! {
    /// Messages waiting to be sent: Deimos's `kafka_messages` plus `partition` and `headers`.
    kafka_messages (id) {
        /// Insertion order; the relay sends a partition's rows in this order.
        id -> BigInt,
        /// Destination topic, with the prefix applied.
        topic -> Varchar,
        /// The encoded value (Confluent wire format); NULL for a tombstone.
        message -> Nullable<Binary>,
        /// The encoded key, if any.
        key -> Nullable<Binary>,
        /// The partition key as text (Deimos's column), for people reading the table.
        partition_key -> Nullable<Varchar>,
        /// The partition computed when the row was written; -1 when it was not (no key, or no known partition
        /// count, or written by Deimos): the producer partitions it when the relay sends it.
        partition -> Integer,
        /// The message's headers (see [`crate::headers`]).
        headers -> Nullable<Binary>,
        /// When the row was written.
        created_at -> Timestamp,
        /// When the row was written (Deimos's column; never changed).
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Leases: Deimos's `kafka_topic_info`, one row per (topic, partition).
    kafka_topic_info (id) {
        /// Row id.
        id -> BigInt,
        /// The topic.
        topic -> Varchar,
        /// The partition; -1 for rows written without one.
        partition -> Integer,
        /// The relay worker holding the lease.
        locked_by -> Nullable<Varchar>,
        /// When the lease was taken or last renewed.
        locked_at -> Nullable<Timestamp>,
        /// Deimos's error flag (deimos-rs leaves it false).
        error -> Bool,
        /// Deimos's retry count (deimos-rs leaves it 0).
        retries -> Integer,
        /// When the partition was last drained.
        last_processed_at -> Nullable<Timestamp>,
        /// End of the lease, milliseconds since the epoch by the database's clock.
        lease_until -> Nullable<BigInt>,
        /// Grows by one with each new lease.
        fence -> BigInt,
    }
}

diesel::table! {
    /// Rows the broker refused (too large), moved aside instead of deleted.
    kafka_messages_dead (id) {
        /// The row's id in `kafka_messages`.
        id -> BigInt,
        /// Destination topic.
        topic -> Varchar,
        /// The encoded value.
        message -> Nullable<Binary>,
        /// The encoded key.
        key -> Nullable<Binary>,
        /// The partition key as text.
        partition_key -> Nullable<Varchar>,
        /// The partition (-1: none).
        partition -> Integer,
        /// The headers.
        headers -> Nullable<Binary>,
        /// When the row was first written.
        created_at -> Timestamp,
        /// When it was moved aside.
        failed_at -> Timestamp,
        /// Why the broker refused it.
        error -> Text,
    }
}
