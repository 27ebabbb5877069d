DROP TABLE IF EXISTS kafka_topic_info;
DROP TABLE IF EXISTS kafka_messages;
