-- deimos-rs: the upgrade of Deimos's tables (the one migration an existing Deimos database needs).
-- kafka_messages: the target partition, computed when the row is written (-1: the relay computes it before
-- sending the row, as for rows Deimos wrote), and the message's headers.
ALTER TABLE kafka_messages ADD COLUMN "partition" INTEGER NOT NULL DEFAULT -1;
ALTER TABLE kafka_messages ADD COLUMN headers BYTEA;
CREATE INDEX index_kafka_messages_on_topic_partition_and_id ON kafka_messages (topic, "partition", id);
DROP INDEX IF EXISTS index_kafka_messages_on_topic_and_id;

-- kafka_topic_info: one lease per (topic, partition) instead of one lock per topic (partition -1: the rows
-- without one). lease_until is in milliseconds since the epoch, by the database's
-- clock; fence grows by one with every new lease, so a relay that lost its lease is refused.
ALTER TABLE kafka_topic_info ADD COLUMN "partition" INTEGER NOT NULL DEFAULT -1;
ALTER TABLE kafka_topic_info ADD COLUMN lease_until BIGINT;
ALTER TABLE kafka_topic_info ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS index_kafka_topic_info_on_topic;
CREATE UNIQUE INDEX index_kafka_topic_info_on_topic_and_partition ON kafka_topic_info (topic, "partition");

-- Rows the broker refused (too large), moved aside with the reason instead of deleted.
CREATE TABLE kafka_messages_dead (
    id BIGINT PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    message BYTEA,
    key BYTEA,
    partition_key VARCHAR(255),
    "partition" INTEGER NOT NULL,
    headers BYTEA,
    created_at TIMESTAMP NOT NULL,
    failed_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    error TEXT NOT NULL
);
