"""Kafka interoperability with Confluent's Python client, on the same librdkafka mock cluster.

Reads a JSON spec written by tests/tests/kafka_python.rs and, by its "mode":
- "consume": a DeserializingConsumer with AvroDeserializer for keys and values reads "count" messages of
  "topic" from the beginning and prints them as JSON (key, value, partition, offset, headers);
- "produce": a SerializingProducer with AvroSerializer for keys ("key_schema") and values ("value_schema")
  sends "messages" (each {"key": ..., "value": ...}) to "topic", flushes, and prints how many were delivered.
"""

import json
import sys
import time

from confluent_kafka import DeserializingConsumer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer


def consume(spec, client):
    consumer = DeserializingConsumer({
        "bootstrap.servers": spec["bootstrap"],
        "group.id": spec["group"],
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "key.deserializer": AvroDeserializer(client),
        "value.deserializer": AvroDeserializer(client),
    })
    consumer.subscribe([spec["topic"]])
    out = []
    deadline = time.time() + 60
    while len(out) < spec["count"] and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise RuntimeError(str(msg.error()))
        headers = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
        out.append({"key": msg.key(), "value": msg.value(), "partition": msg.partition(),
                    "offset": msg.offset(), "headers": headers})
    consumer.close()
    return out


def produce(spec, client):
    delivered = []
    producer = SerializingProducer({
        "bootstrap.servers": spec["bootstrap"],
        "key.serializer": AvroSerializer(client, spec["key_schema"]),
        "value.serializer": AvroSerializer(client, spec["value_schema"]),
    })
    for m in spec["messages"]:
        producer.produce(spec["topic"], key=m["key"], value=m["value"],
                         on_delivery=lambda err, msg: delivered.append(err is None))
    producer.flush(30)
    return {"delivered": sum(delivered), "failed": len(delivered) - sum(delivered)}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    client = SchemaRegistryClient({"url": spec["registry_url"]})
    result = consume(spec, client) if spec["mode"] == "consume" else produce(spec, client)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
