DROP TABLE IF EXISTS kafka_messages_dead;
DROP INDEX index_kafka_topic_info_on_topic_and_partition ON kafka_topic_info;
DELETE FROM kafka_topic_info WHERE `partition` <> -1;
CREATE UNIQUE INDEX index_kafka_topic_info_on_topic ON kafka_topic_info (topic);
ALTER TABLE kafka_topic_info DROP COLUMN fence, DROP COLUMN lease_until, DROP COLUMN `partition`;
CREATE INDEX index_kafka_messages_on_topic_and_id ON kafka_messages (topic, id);
DROP INDEX index_kafka_messages_on_topic_partition_and_id ON kafka_messages;
ALTER TABLE kafka_messages DROP COLUMN headers, DROP COLUMN `partition`;
