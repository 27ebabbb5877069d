-- deimos-rs: the upgrade of Deimos's tables (the one migration an existing Deimos database needs).
-- See the PostgreSQL version for what each column is for.
ALTER TABLE kafka_messages ADD COLUMN "partition" INTEGER NOT NULL DEFAULT -1;
ALTER TABLE kafka_messages ADD COLUMN headers BLOB;
CREATE INDEX index_kafka_messages_on_topic_partition_and_id ON kafka_messages (topic, "partition", id);
DROP INDEX IF EXISTS index_kafka_messages_on_topic_and_id;

ALTER TABLE kafka_topic_info ADD COLUMN "partition" INTEGER NOT NULL DEFAULT -1;
ALTER TABLE kafka_topic_info ADD COLUMN lease_until BIGINT;
ALTER TABLE kafka_topic_info ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS index_kafka_topic_info_on_topic;
CREATE UNIQUE INDEX index_kafka_topic_info_on_topic_and_partition ON kafka_topic_info (topic, "partition");

CREATE TABLE kafka_messages_dead (
    id INTEGER PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    message BLOB,
    key BLOB,
    partition_key VARCHAR(255),
    "partition" INTEGER NOT NULL,
    headers BLOB,
    created_at DATETIME NOT NULL,
    failed_at DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    error TEXT NOT NULL
);
