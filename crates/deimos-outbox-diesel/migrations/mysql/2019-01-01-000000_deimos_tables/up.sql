-- Deimos's own tables (rails g deimos:db_backend), created only if they are not there yet: a database that
-- already ran Deimos keeps its tables and rows, and the next migration upgrades them.
CREATE TABLE IF NOT EXISTS kafka_messages (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    message MEDIUMBLOB,
    `key` BLOB,
    partition_key VARCHAR(255),
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    INDEX index_kafka_messages_on_topic_and_id (topic, id)
);

CREATE TABLE IF NOT EXISTS kafka_topic_info (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    locked_by VARCHAR(255),
    locked_at DATETIME(6),
    error BOOLEAN NOT NULL DEFAULT FALSE,
    retries INTEGER NOT NULL DEFAULT 0,
    last_processed_at DATETIME(6),
    UNIQUE INDEX index_kafka_topic_info_on_topic (topic),
    INDEX index_kafka_topic_info_on_locked_by_and_error (locked_by, error),
    INDEX index_kafka_topic_info_on_locked_at (locked_at)
);
