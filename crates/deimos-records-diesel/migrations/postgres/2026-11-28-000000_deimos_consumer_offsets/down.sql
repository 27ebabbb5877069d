DROP TABLE IF EXISTS deimos_consumer_offsets;
