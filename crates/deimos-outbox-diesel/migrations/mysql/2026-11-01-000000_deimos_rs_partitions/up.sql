-- deimos-rs: the upgrade of Deimos's tables (the one migration an existing Deimos database needs).
-- See the PostgreSQL version for what each column is for.
ALTER TABLE kafka_messages ADD COLUMN `partition` INTEGER NOT NULL DEFAULT -1, ADD COLUMN headers BLOB NULL;
CREATE INDEX index_kafka_messages_on_topic_partition_and_id ON kafka_messages (topic, `partition`, id);
DROP INDEX index_kafka_messages_on_topic_and_id ON kafka_messages;

ALTER TABLE kafka_topic_info
    ADD COLUMN `partition` INTEGER NOT NULL DEFAULT -1,
    ADD COLUMN lease_until BIGINT NULL,
    ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
DROP INDEX index_kafka_topic_info_on_topic ON kafka_topic_info;
CREATE UNIQUE INDEX index_kafka_topic_info_on_topic_and_partition ON kafka_topic_info (topic, `partition`);

CREATE TABLE kafka_messages_dead (
    id BIGINT NOT NULL PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    message MEDIUMBLOB,
    `key` BLOB,
    partition_key VARCHAR(255),
    `partition` INTEGER NOT NULL,
    headers BLOB,
    created_at DATETIME(6) NOT NULL,
    failed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    error TEXT NOT NULL
);
