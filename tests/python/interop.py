"""Interoperability check against Confluent's Python client (confluent-kafka, fastavro).

Reads a JSON spec written by tests/tests/interop_python.rs: the embedded registry's URL, a topic, and
for the key and the value the schema, the payload and the bytes deimos-rs produced. Serializes the same
payloads with AvroSerializer, decodes deimos-rs's bytes with AvroDeserializer, exercises
SchemaRegistryClient against the embedded registry, and prints the results as JSON for the Rust test to
assert on.
"""

import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    topic = spec["topic"]
    client = SchemaRegistryClient({"url": spec["registry_url"]})
    out = {}
    for part, field in (("value", MessageField.VALUE), ("key", MessageField.KEY)):
        p = spec[part]
        ctx = SerializationContext(topic, field)
        serializer = AvroSerializer(client, p["schema"], conf={"auto.register.schemas": True})
        out[part + "_python_hex"] = serializer(p["payload"], ctx).hex()
        deserializer = AvroDeserializer(client)
        out[part + "_decoded"] = deserializer(bytes.fromhex(p["rust_hex"]), ctx)

    # A top-level "bytes" schema: Confluent writes and reads the bytes raw after the frame header.
    raw = spec["raw"]
    ctx = SerializationContext(raw["topic"], MessageField.VALUE)
    serializer = AvroSerializer(client, raw["schema"], conf={"auto.register.schemas": True})
    out["raw_python_hex"] = serializer(bytes.fromhex(raw["payload_hex"]), ctx).hex()
    out["raw_decoded_hex"] = AvroDeserializer(client)(bytes.fromhex(raw["rust_hex"]), ctx).hex()

    value_subject = topic + "-value"
    evolved = Schema(spec["evolved_value_schema"], "AVRO")
    broken = Schema(spec["incompatible_value_schema"], "AVRO")
    registry = {
        "subjects": sorted(client.get_subjects()),
        "latest_version": client.get_latest_version(value_subject).version,
        "latest_id": client.get_latest_version(value_subject).schema_id,
        "evolved_compatible": client.test_compatibility(value_subject, evolved),
        "broken_compatible": client.test_compatibility(value_subject, broken),
    }
    client.set_compatibility(subject_name=value_subject, level="FULL")
    registry["level"] = client.get_compatibility(value_subject)
    new_id = client.register_schema(value_subject, evolved)
    registry["evolved_id"] = new_id
    registry["lookup_version"] = client.lookup_schema(value_subject, evolved).version
    registry["by_id_has_email"] = "email" in client.get_schema(new_id).schema_str
    registry["versions"] = client.get_versions(value_subject)
    try:
        client.register_schema(value_subject, broken)
        registry["broken_register"] = "accepted"
    except Exception as e:  # SchemaRegistryError
        registry["broken_register"] = getattr(e, "error_code", str(e))
    registry["deleted_key_versions"] = client.delete_subject(topic + "-key")
    out["registry"] = registry
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
