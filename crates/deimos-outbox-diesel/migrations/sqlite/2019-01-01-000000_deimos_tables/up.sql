-- Deimos's own tables (rails g deimos:db_backend), created only if they are not there yet: a database that
-- already ran Deimos keeps its tables and rows, and the next migration upgrades them.
CREATE TABLE IF NOT EXISTS kafka_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic VARCHAR(255) NOT NULL,
    message BLOB,
    key BLOB,
    partition_key VARCHAR(255),
    created_at DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    updated_at DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX IF NOT EXISTS index_kafka_messages_on_topic_and_id ON kafka_messages (topic, id);

CREATE TABLE IF NOT EXISTS kafka_topic_info (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic VARCHAR(255) NOT NULL,
    locked_by VARCHAR(255),
    locked_at DATETIME,
    error BOOLEAN NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    last_processed_at DATETIME
);
CREATE UNIQUE INDEX IF NOT EXISTS index_kafka_topic_info_on_topic ON kafka_topic_info (topic);
CREATE INDEX IF NOT EXISTS index_kafka_topic_info_on_locked_by_and_error ON kafka_topic_info (locked_by, error);
CREATE INDEX IF NOT EXISTS index_kafka_topic_info_on_locked_at ON kafka_topic_info (locked_at);
