-- deimos-rs: the offsets of record consumers that apply messages exactly once, written in the same transaction
-- as the rows they change.
CREATE TABLE IF NOT EXISTS deimos_consumer_offsets (
  group_id VARCHAR(255) NOT NULL,
  topic VARCHAR(255) NOT NULL,
  kafka_partition INTEGER NOT NULL,
  next_offset BIGINT NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (group_id, topic, kafka_partition)
) CHARACTER SET utf8mb4;
